//! The dashboard over real HTTP: sign-in and sessions, CSRF on every form,
//! the lock-out, hostile data rendered as text, and the pages an operator
//! follows from an open run to its incident; [`browser`] drives it in
//! headless Chromium, and [`sso`] signs in through a real OpenID provider.

mod browser;
mod sso;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::support::{Backend, TestServer, on_both_backends, subscription_created};

pub const ADMIN_TOKEN: &str = "admin-token-for-the-dashboard-tests";

pub const SETTINGS: &[(&str, &str)] = &[
    ("ASSAY_ADMIN_TOKEN", ADMIN_TOKEN),
    ("ASSAY_DEADLINE_RECONCILED", "1s"),
    ("ASSAY_DEADLINE_ACCESS_ASSERTED", "2s"),
];

/// A client that shows redirects instead of following them.
fn browser() -> reqwest::Client {
    assay::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in; returns the `Cookie` header value for the session.
pub(crate) async fn sign_in(server: &TestServer) -> String {
    let response = browser()
        .post(server.url("/signin"))
        .form(&[("token", ADMIN_TOKEN), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    cookie.split(';').next().unwrap().to_owned()
}

pub(crate) async fn page(server: &TestServer, cookie: &str, path: &str) -> (StatusCode, String) {
    let response = browser()
        .get(server.url(path))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// Posts a dashboard form with the session `cookie`; returns the status.
pub(crate) async fn post_form(
    server: &TestServer,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> StatusCode {
    browser()
        .post(server.url(path))
        .header(COOKIE, cookie)
        .form(form)
        .send()
        .await
        .unwrap()
        .status()
}

/// The CSRF token a page's forms carry.
pub(crate) fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

async fn every_page_asks_for_a_session(backend: Backend) {
    let Some(server) = TestServer::start(backend, SETTINGS).await else {
        return;
    };
    for path in [
        "/",
        "/incidents?status=open",
        "/runs/default/evt_1",
        "/incidents/00000000-0000-0000-0000-000000000000",
        "/drills",
    ] {
        let response = browser().get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        let location = response.headers()[LOCATION].to_str().unwrap();
        assert!(
            location.starts_with("/signin?next=%2F"),
            "{path}: {location}"
        );
    }
    // A forged or expired cookie is no session either.
    let (status, _) = page(&server, "assay_session=forged", "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    server.stop().await;
}

async fn sessions_are_http_only_and_forms_need_their_csrf_token(backend: Backend) {
    let Some(server) = TestServer::start(backend, SETTINGS).await else {
        return;
    };
    let wrong = browser()
        .post(server.url("/signin"))
        .form(&[("token", "not-the-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());

    let response = browser()
        .post(server.url("/signin"))
        .form(&[("token", ADMIN_TOKEN), ("next", "/incidents")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/incidents");
    let set = response.headers()[SET_COOKIE].to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(set.contains(attribute), "{attribute}: {set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    assert_eq!(
        server
            .db
            .scalar("SELECT COUNT(*) FROM dashboard_sessions")
            .await,
        1
    );
    assert!(
        !server
            .db
            .holds(cookie.trim_start_matches("assay_session="))
            .await,
        "only a hash of the cookie is stored"
    );

    // An incident to act on.
    server
        .deliver(&subscription_created(
            "evt_d",
            "cus_d",
            "sub_d",
            "price_pro",
        ))
        .await;
    let id = server.wait_for_incidents(1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A customer search that no id could match is refused, never a 500.
    let (status, html) = page(&server, &cookie, "/?customer_id=cus%00x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    let (status, html) = page(&server, &cookie, &format!("/incidents/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !html.contains("<dt>drill") && !html.contains("DRILL"),
        "a real incident shows no drill marks"
    );
    let csrf = csrf_of(&html);

    // Without the token, or with another, the form is refused and nothing
    // changes.
    let acknowledge = format!("/incidents/{id}/acknowledge");
    for form in [vec![], vec![("csrf", "forged")]] {
        assert_eq!(
            post_form(&server, &cookie, &acknowledge, &form).await,
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(
        server.get(&format!("/v1/incidents/{id}")).await["status"],
        "open"
    );

    let form = [("csrf", csrf.as_str())];
    assert_eq!(
        post_form(&server, &cookie, &acknowledge, &form).await,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        server.get(&format!("/v1/incidents/{id}")).await["status"],
        "acknowledged"
    );

    // Signing out ends the session on the server, not only in the browser.
    assert_eq!(
        post_form(&server, &cookie, "/signout", &form).await,
        StatusCode::SEE_OTHER
    );
    let (status, _) = page(&server, &cookie, "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    server.stop().await;
}

async fn repeated_failed_sign_ins_lock_the_address_out(backend: Backend) {
    let Some(server) = TestServer::start(backend, SETTINGS).await else {
        return;
    };
    for _ in 0..5 {
        let response = browser()
            .post(server.url("/signin"))
            .form(&[("token", "guess")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // Even the right token is refused now.
    let response = browser()
        .post(server.url("/signin"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Too many failed sign-ins")
    );
    server.stop().await;
}

async fn hostile_data_renders_as_text(backend: Backend) {
    let Some(server) = TestServer::start(backend, SETTINGS).await else {
        return;
    };
    let script = "<script>alert(1)</script>";
    let attribute = "\"><img src=x onerror=alert(2)>";
    let mut event = subscription_created("evt_x", script, "sub_x", "price_pro");
    event["data"]["object"]["metadata"] = json!({"note": attribute});
    let (status, _) = server.deliver(&event).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .report(
            "evt_x",
            "access_asserted",
            json!({"observed_plan": attribute, "deploy_sha": script}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = server.wait_for_incidents(1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cookie = sign_in(&server).await;
    let run = server.get("/v1/runs/evt_x").await;
    let pages = [
        "/?status=failed".to_owned(),
        format!("/runs/default/{}", run["id"].as_str().unwrap()),
        "/incidents?status=open".to_owned(),
        format!("/incidents/{id}"),
    ];
    // A run or incident that cannot exist is a 404 page, never a 500.
    for path in [
        "/runs/default/evt%00nul",
        "/runs/nope/evt_x",
        "/incidents/not-a-uuid",
    ] {
        let (status, _) = page(&server, &cookie, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    for path in pages {
        let (status, html) = page(&server, &cookie, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!html.contains("<script>alert"), "{path} runs a script");
        assert!(!html.contains("<img src=x"), "{path} makes an element");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2F;script&gt;")
                || html.contains("&lt;script&gt;"),
            "{path} does not show the value"
        );
    }
    server.stop().await;
}

/// The security headers on every dashboard answer: pages, the sign-in
/// page, redirects, refusals and error pages alike.
async fn every_dashboard_answer_carries_the_security_headers(backend: Backend) {
    let Some(server) = TestServer::start(backend, SETTINGS).await else {
        return;
    };
    let cookie = sign_in(&server).await;
    let get = |path: &'static str, cookie: Option<String>| {
        let mut request = browser().get(server.url(path));
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send()
    };
    let answers = [
        ("a page", get("/", Some(cookie.clone())).await.unwrap()),
        ("the sign-in page", get("/signin", None).await.unwrap()),
        (
            "a redirect to sign in",
            get("/incidents", None).await.unwrap(),
        ),
        (
            "a 404 page",
            get("/incidents/not-a-uuid", Some(cookie.clone()))
                .await
                .unwrap(),
        ),
        (
            "a 400 page",
            get("/?customer_id=%01", Some(cookie.clone()))
                .await
                .unwrap(),
        ),
        (
            "a refused form",
            browser()
                .post(server.url("/drills"))
                .header(COOKIE, &cookie)
                .form(&[("csrf", "wrong")])
                .send()
                .await
                .unwrap(),
        ),
        (
            "a failed sign-in",
            browser()
                .post(server.url("/signin"))
                .form(&[("token", "wrong")])
                .send()
                .await
                .unwrap(),
        ),
    ];
    let mut statuses = Vec::new();
    for (what, response) in &answers {
        statuses.push(response.status().as_u16());
        let headers = response.headers();
        for (name, value) in [
            ("cache-control", "no-store"),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "same-origin"),
        ] {
            assert_eq!(
                headers.get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "{what}: {name}"
            );
        }
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{what}: {policy}"
        );
    }
    assert_eq!(statuses, [200, 200, 303, 404, 400, 403, 401]);
    server.stop().await;
}

/// A return address that is not plainly a path on this site goes to `/`,
/// and none of them makes a 500.
async fn hostile_return_addresses_go_home(backend: Backend) {
    let Some(server) = TestServer::start(backend, SETTINGS).await else {
        return;
    };
    for next in [
        "//evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\nSet-Cookie: stolen=1",
        "https://evil.example/",
        "/\u{0}",
        "/ /evil.example",
        "/caf\u{e9}",
        "\u{7f}/x",
    ] {
        let response = browser()
            .post(server.url("/signin"))
            .form(&[("token", ADMIN_TOKEN), ("next", next)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(response.headers()[LOCATION], "/", "{next:?}");
        assert!(
            response
                .headers()
                .get_all(SET_COOKIE)
                .iter()
                .all(|v| !v.to_str().unwrap_or_default().contains("stolen")),
            "{next:?} split a header"
        );
    }
    let response = browser()
        .post(server.url("/signin"))
        .form(&[("token", ADMIN_TOKEN), ("next", "/incidents?status=open")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()[LOCATION], "/incidents?status=open");
    server.stop().await;
}

/// Behind a trusted proxy the lock-out goes by the client the proxy names:
/// one guessing client does not lock out the others, and a client that is
/// not behind the proxy cannot dodge it by writing the header itself.
async fn the_lock_out_goes_by_the_client_behind_a_trusted_proxy(backend: Backend) {
    let settings = [SETTINGS, &[("ASSAY_TRUSTED_PROXIES", "127.0.0.1/32")]].concat();
    let Some(server) = TestServer::start(backend, &settings).await else {
        return;
    };
    let sign_in_as = |client: &'static str, token: &'static str| {
        browser()
            .post(server.url("/signin"))
            .header("x-forwarded-for", client)
            .form(&[("token", token)])
            .send()
    };
    for _ in 0..5 {
        let response = sign_in_as("203.0.113.7", "guess").await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let guesser = sign_in_as("203.0.113.7", ADMIN_TOKEN).await.unwrap();
    assert_eq!(guesser.status(), StatusCode::TOO_MANY_REQUESTS);
    let colleague = sign_in_as("203.0.113.8", ADMIN_TOKEN).await.unwrap();
    assert_eq!(
        colleague.status(),
        StatusCode::SEE_OTHER,
        "another client signs in"
    );
    // A client may prepend anything; the proxy's own entry is believed.
    let spoofed = sign_in_as("198.51.100.1, 203.0.113.7", ADMIN_TOKEN)
        .await
        .unwrap();
    assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS);
    server.stop().await;

    // Without a trusted proxy the header is not believed at all.
    let Some(server) = TestServer::start(backend, SETTINGS).await else {
        return;
    };
    for i in 0..5 {
        let response = browser()
            .post(server.url("/signin"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .form(&[("token", "guess")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = browser()
        .post(server.url("/signin"))
        .header("x-forwarded-for", "203.0.113.99")
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    server.stop().await;
}

on_both_backends!(
    every_dashboard_answer_carries_the_security_headers,
    hostile_return_addresses_go_home,
    the_lock_out_goes_by_the_client_behind_a_trusted_proxy,
    every_page_asks_for_a_session,
    sessions_are_http_only_and_forms_need_their_csrf_token,
    repeated_failed_sign_ins_lock_the_address_out,
    hostile_data_renders_as_text,
);
