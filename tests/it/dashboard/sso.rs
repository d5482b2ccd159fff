//! Single sign-on end to end against a real OpenID provider
//! (`oidc-provider`, started by the test on loopback): the code flow with
//! PKCE signs in a configured operator and a group member with their roles,
//! and refuses an unmapped account, a tampered ID token, a wrong audience,
//! an expired token, a replayed `state` and a `state` from another
//! browser; each refusal leaves no session and an audit entry with why.
//! Beginning sign-ins is paced per client.

use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use super::{ADMIN_TOKEN, page, sign_in};
use crate::support::{
    Backend, OidcProvider, TestServer, free_port, oidc_provider_available, on_both_backends,
};

const CLIENT_SECRET: &str = "assay-client-secret-for-the-sso-tests";

/// Operators: `ana` by email (a viewer); the provider's `oncall` group are
/// responders and its `leads` admins.
const TOML: &str = r#"
[sso]
client_id = "assay"
client_secret = "${TEST_OIDC_CLIENT_SECRET}"
provider_name = "Test IdP"
scopes = ["email", "groups"]
[[sso.groups]]
group = "oncall"
role = "responder"
[[sso.groups]]
group = "leads"
role = "admin"
[[operators]]
name = "ana"
email = "ana@example.com"
role = "viewer"
"#;

fn account(sub: &str, email: &str, groups: &[&str], spoil: Option<&str>) -> Value {
    json!({"sub": sub, "email": email, "email_verified": true, "groups": groups, "spoil": spoil})
}

struct Sso {
    server: TestServer,
    provider: OidcProvider,
}

async fn start(backend: Backend) -> Option<Sso> {
    if !oidc_provider_available() {
        return None;
    }
    let port = free_port();
    let provider = OidcProvider::start(&json!({
        "client": {
            "client_id": "assay",
            "client_secret": CLIENT_SECRET,
            "redirect_uri": format!("http://127.0.0.1:{port}/signin/sso/callback"),
        },
        "accounts": [
            account("ana-1", "ana@example.com", &[], None),
            account("ben-1", "ben@example.com", &["oncall"], None),
            account("dee-1", "dee@example.com", &["oncall", "leads"], None),
            account("eve-1", "eve@example.com", &["marketing"], None),
            account("tampered-1", "ana@example.com", &[], Some("signature")),
            account("audience-1", "ana@example.com", &[], Some("audience")),            account("expired-1", "ana@example.com", &[], Some("expired")),
            account("nonce-1", "ana@example.com", &[], Some("nonce")),
            json!({"sub": "unverified-1", "email": "ana@example.com", "email_verified": false}),
            json!({"sub": "silent-1", "email": "ana@example.com", "email_verified": null}),
            account("ops-1", "admin", &["leads"], None),
        ],
    }))
    .await;
    let public_url = format!("http://127.0.0.1:{port}");
    let server = TestServer::start_on_port_with_toml(
        backend,
        port,
        TOML,
        &[
            ("ASSAY_ADMIN_TOKEN", ADMIN_TOKEN),
            ("ASSAY_PUBLIC_URL", public_url.as_str()),
            ("ASSAY_SSO_ISSUER", provider.issuer.as_str()),
            ("TEST_OIDC_CLIENT_SECRET", CLIENT_SECRET),
        ],
    )
    .await?;
    Some(Sso { server, provider })
}

/// A browser: its own cookies, redirects shown rather than followed.
fn browser() -> (reqwest::Client, Arc<reqwest::cookie::Jar>) {
    assay::install_crypto_provider();
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_provider(jar.clone())
        .build()
        .unwrap();
    (client, jar)
}

/// Begins a sign-in as the provider's account `sub` and follows it through
/// the provider; the address the provider sends the browser back to.
async fn to_callback(
    sso: &Sso,
    client: &reqwest::Client,
    jar: &reqwest::cookie::Jar,
    sub: &str,
) -> String {
    to_callback_from(sso, client, jar, sub, "/signin/sso?next=/incidents").await
}

/// As [`to_callback`], beginning at `begin`.
async fn to_callback_from(
    sso: &Sso,
    client: &reqwest::Client,
    jar: &reqwest::cookie::Jar,
    sub: &str,
    begin: &str,
) -> String {
    let issuer: reqwest::Url = sso.provider.issuer.parse().unwrap();
    jar.add_cookie_str(&format!("login_as={sub}; Path=/"), &issuer);
    let mut url = sso.server.url(begin);
    for _ in 0..10 {
        let response = client.get(&url).send().await.unwrap();
        assert!(
            response.status().is_redirection(),
            "{url} answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        let location = response.headers()[LOCATION].to_str().unwrap();
        let next = reqwest::Url::parse(&url).unwrap().join(location).unwrap();
        if next.path() == "/signin/sso/callback" {
            return next.to_string();
        }
        url = next.to_string();
    }
    panic!("the sign-in never came back to Assay");
}

/// The callback's answer: its status, the session cookie it set (if any),
/// where it sends the browser, and its page.
async fn finish(
    client: &reqwest::Client,
    callback: &str,
) -> (StatusCode, Option<String>, Option<String>, String) {
    let response = client.get(callback).send().await.unwrap();
    let status = response.status();
    let session = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("assay_session=") && !v.starts_with("assay_session=;"))
        .map(|v| v.split(';').next().unwrap().to_owned());
    let location = response
        .headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    (status, session, location, response.text().await.unwrap())
}

async fn sign_in_as(sso: &Sso, sub: &str) -> (StatusCode, Option<String>, Option<String>, String) {
    let (client, jar) = browser();
    let callback = to_callback(sso, &client, &jar, sub).await;
    finish(&client, &callback).await
}

/// Starts a drill from the dashboard as the session `cookie`; the status.
async fn start_drill(server: &TestServer, cookie: &str) -> StatusCode {
    let (status, drills) = page(server, cookie, "/drills").await;
    assert_eq!(status, StatusCode::OK);
    let csrf = super::csrf_of(&drills);
    super::post_form(
        server,
        cookie,
        "/drills",
        &[("project", "default"), ("csrf", &csrf)],
    )
    .await
}

async fn sessions(server: &TestServer) -> i64 {
    server
        .db
        .scalar("SELECT COUNT(*) FROM dashboard_sessions")
        .await
}

/// The sign-in entries of the audit log, newest first.
async fn sign_ins(server: &TestServer) -> Vec<Value> {
    let admin = sign_in(server).await;
    let (status, text) = page(server, &admin, "/audit?format=jsonl").await;
    assert_eq!(status, StatusCode::OK);
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["project"].is_null() && e["actor"]["name"] != "admin")
        .collect()
}

async fn mapped_operators_sign_in_with_their_roles(backend: Backend) {
    let Some(sso) = start(backend).await else {
        return;
    };
    let server = &sso.server;

    // The sign-in page offers the provider beside the token.
    let (status, signin) = page(server, "", "/signin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(signin.contains("Sign in with Test IdP"), "{signin}");
    assert!(signin.contains("name=\"token\""), "{signin}");

    // A configured operator by email: their configured role (viewer).
    let (status, ana, location, _) = sign_in_as(&sso, "ana-1").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location.as_deref(),
        Some("/incidents"),
        "back where they were going"
    );
    let ana = ana.expect("a session for ana");
    let (status, incidents) = page(server, &ana, "/incidents").await;
    assert_eq!(status, StatusCode::OK);
    assert!(incidents.contains("Sign out ana<"), "{incidents}");
    assert_eq!(page(server, &ana, "/keys").await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        start_drill(server, &ana).await,
        StatusCode::FORBIDDEN,
        "a viewer"
    );

    // Group members: responder from `oncall`, admin from `leads`.
    let (status, ben, _, _) = sign_in_as(&sso, "ben-1").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let ben = ben.expect("a session for ben");
    let (_, incidents) = page(server, &ben, "/incidents").await;
    assert!(
        incidents.contains("Sign out ben@example.com<"),
        "{incidents}"
    );
    assert_eq!(page(server, &ben, "/keys").await.0, StatusCode::FORBIDDEN);
    assert_ne!(
        start_drill(server, &ben).await,
        StatusCode::FORBIDDEN,
        "a responder"
    );
    let (_, dee, _, _) = sign_in_as(&sso, "dee-1").await;
    let dee = dee.expect("a session for dee");
    assert_eq!(page(server, &dee, "/keys").await.0, StatusCode::OK);
    assert_eq!(page(server, &dee, "/audit").await.0, StatusCode::OK); // The return address is a path on this site, through the provider too.
    let (client, jar) = browser();
    let callback = to_callback_from(
        &sso,
        &client,
        &jar,
        "dee-1",
        "/signin/sso?next=//evil.example/",
    )
    .await;
    let (status, _, location, _) = finish(&client, &callback).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/"));

    // A group member may not take a configured operator's name.
    let (status, taken, _, body) = sign_in_as(&sso, "ops-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(taken.is_none());

    // Someone the provider knows but Assay does not: refused, no session.
    let before = sessions(server).await;
    let (status, eve, _, body) = sign_in_as(&sso, "eve-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(eve.is_none());
    assert!(body.contains("is not an Assay operator"), "{body}");
    assert_eq!(sessions(server).await, before);

    let entries = sign_ins(server).await;
    let find = |name: &str, action: &str| {
        entries
            .iter()
            .find(|e| e["actor"]["name"] == name && e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} by {name} in {entries:#?}"))
            .clone()
    };
    let ana_in = find("ana", "signed_in");
    assert_eq!(ana_in["after"]["via"], "sso");
    assert_eq!(ana_in["after"]["subject"], "ana-1");
    assert!(ana_in["actor"]["address"].is_string());
    assert_eq!(
        find("ben@example.com", "signed_in")["after"]["roles"]["everywhere"],
        "responder"
    );
    let eve_refused = find("eve@example.com", "sign_in_failed");
    assert!(
        eve_refused["after"]["reason"]
            .as_str()
            .unwrap()
            .contains("not an Assay operator"),
        "{eve_refused}"
    );
}

async fn bad_tokens_and_replayed_states_are_refused(backend: Backend) {
    let Some(sso) = start(backend).await else {
        return;
    };
    let server = &sso.server;
    let count = || sessions(server);

    for (sub, reason) in [
        ("tampered-1", "Signature verification failed"),
        ("audience-1", "Invalid audiences"),
        ("expired-1", "Expired"),
        ("nonce-1", "Invalid nonce"),
    ] {
        let before = count().await;
        let (status, session, _, body) = sign_in_as(&sso, sub).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{sub}: {body}");
        assert!(session.is_none(), "{sub}");
        assert!(body.contains("did not prove who you are"), "{sub}: {body}");
        assert_eq!(count().await, before, "{sub}");
        let entries = sign_ins(server).await;
        assert!(
            entries.iter().any(|e| e["action"] == "sign_in_failed"
                && e["after"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(reason))),
            "{sub}: no failure naming {reason:?} in {entries:#?}"
        );
    } // An email the provider does not mark verified names nobody, whether
    // it says `false` or nothing.
    for sub in ["unverified-1", "silent-1"] {
        let before = count().await;
        let (status, session, _, body) = sign_in_as(&sso, sub).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{sub}: {body}");
        assert!(session.is_none(), "{sub}");
        assert!(body.contains("is not verified"), "{sub}: {body}");
        assert_eq!(count().await, before, "{sub}");
    }
    let refused_as: Vec<String> = sign_ins(server)
        .await
        .iter()
        .filter(|e| e["after"]["identity"]["email"] == "ana@example.com")
        .map(|e| e["actor"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        refused_as,
        ["silent-1", "unverified-1"],
        "an untrusted email does not name whom the log blames"
    );

    // A `state` is good once: the second time it finds nothing.
    let (client, jar) = browser();
    let callback = to_callback(&sso, &client, &jar, "ana-1").await;
    let (status, first, _, _) = finish(&client, &callback).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(first.is_some());
    let before = count().await;
    let (status, again, _, body) = finish(&client, &callback).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(again.is_none());
    assert!(body.contains("was already used"), "{body}");
    assert_eq!(count().await, before);

    // A `state` begun in one browser does not sign in another, nor spoil
    // the sign-in for the browser that began it.
    let (client, jar) = browser();
    let callback = to_callback(&sso, &client, &jar, "ana-1").await;
    let (other, _) = browser();
    let (status, stolen, _, body) = finish(&other, &callback).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(stolen.is_none());
    assert!(body.contains("another browser"), "{body}");
    let (status, mine, _, _) = finish(&client, &callback).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(mine.is_some());

    // Two sign-ins begun in one browser (two tabs) both finish.
    let (client, jar) = browser();
    let first = to_callback(&sso, &client, &jar, "ana-1").await;
    let second = to_callback(&sso, &client, &jar, "ana-1").await;
    assert_eq!(finish(&client, &second).await.0, StatusCode::SEE_OTHER);
    assert_eq!(finish(&client, &first).await.0, StatusCode::SEE_OTHER);

    // A made-up `state` is refused, and, as anyone can send one, is not
    // recorded: the audit log is not a stranger's to fill.
    let entries = sign_ins(server).await.len();
    let (client, _) = browser();
    let forged = server.url("/signin/sso/callback?state=forged&code=whatever");
    assert_eq!(finish(&client, &forged).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        finish(&client, &callback).await.0,
        StatusCode::BAD_REQUEST,
        "replayed"
    );
    assert_eq!(sign_ins(server).await.len(), entries);
    assert_eq!(
        page(server, "", "/signin/sso/callback").await.0,
        StatusCode::BAD_REQUEST,
        "no state at all"
    );

    // Beginning sign-ins is paced per client: each stores a row and asks
    // the provider.
    let (client, _) = browser();
    let mut refused = None;
    for attempt in 0..=10 {
        let response = client.get(server.url("/signin/sso")).send().await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(attempt);
            break;
        }
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
    }
    assert!(
        refused.is_some(),
        "11 sign-ins begun at once were all let through"
    );
    let pending = server.db.scalar("SELECT COUNT(*) FROM sso_sign_ins").await;
    let response = client.get(server.url("/signin/sso")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        server.db.scalar("SELECT COUNT(*) FROM sso_sign_ins").await,
        pending
    );
}

on_both_backends!(
    mapped_operators_sign_in_with_their_roles,
    bad_tokens_and_replayed_states_are_refused
);
