//! Who may do what, walked whole: the README's table of actions against
//! key scopes and operator roles, each action tried with a key of each
//! scope and by an operator of each role, allowed or refused as the table
//! says, nothing changed by a refusal, and every allowed change in the
//! audit log with its actor.

use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use assay::access::{Action, Role, Scope};

use crate::dashboard::{ADMIN_TOKEN, csrf_of};
use crate::support::{Backend, TestServer, on_both_backends, subscription_created};

/// The README's table: each action with its key scope and operator role.
fn readme_table() -> Vec<(Action, Scope, Option<Role>)> {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("### Who may do what")
        .expect("the README's access section");
    let section = &readme[start..];
    let section = &section[..section[4..]
        .find("\n#")
        .map_or(section.len(), |end| end + 4)];
    let name = |cell: &str| cell.trim().trim_matches('`').to_owned();
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
            assert_eq!(cells.len(), 5, "{line}");
            let role = name(cells[4]);
            (
                name(cells[0]).parse().expect("an action"),
                name(cells[3]).parse().expect("a scope"),
                (!role.is_empty()).then(|| role.parse().expect("a role")),
            )
        })
        .collect()
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

const OPERATORS: [(&str, Role); 3] = [
    ("vera", Role::Viewer),
    ("rosa", Role::Responder),
    ("ada", Role::Admin),
];

fn token(name: &str) -> String {
    format!("{name}-token-for-the-access-walk")
}

/// What a refusal must leave as it was: the customers' runs, the two
/// walked runs' timelines and incidents (the runs the walk opens go on to
/// fail in the background), the drills, the keys, and the audit log (but
/// for what a drill's own runner appends in the background).
async fn fingerprint(server: &TestServer) -> Vec<i64> {
    let mut state = Vec::new();
    for sql in [
        "SELECT COUNT(*) FROM runs WHERE drill_id IS NULL",
        "SELECT COUNT(*) FROM run_timeline t JOIN runs r ON r.id = t.run_id WHERE r.event_id IN ('evt_api', 'evt_page')",
        "SELECT COUNT(*) FROM incidents i JOIN runs r ON r.id = i.run_id WHERE r.event_id IN ('evt_api', 'evt_page') AND i.status = 'open'",
        "SELECT COUNT(*) FROM incidents i JOIN runs r ON r.id = i.run_id WHERE r.event_id IN ('evt_api', 'evt_page') AND i.status = 'acknowledged'",
        "SELECT COUNT(*) FROM incidents i JOIN runs r ON r.id = i.run_id WHERE r.event_id IN ('evt_api', 'evt_page') AND i.status = 'resolved'",
        "SELECT COUNT(*) FROM drills",
        "SELECT COUNT(*) FROM api_keys",
        "SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NOT NULL",
        "SELECT COUNT(*) FROM audit_log WHERE actor_kind <> 'system'",
    ] {
        state.push(server.db.scalar(sql).await);
    }
    state
}

fn client() -> reqwest::Client {
    assay::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// One try of `action` through the API with `key`: its status and body.
async fn by_key(
    server: &TestServer,
    key: &str,
    action: Action,
    ids: &Ids,
    attempt: usize,
) -> (StatusCode, Value) {
    let (method, path, body) = match action {
        Action::OpenRun => (
            Method::POST,
            "/v1/runs".to_owned(),
            Some(json!({
                "event_id": format!("evt_walk_{attempt}"),
                "event_type": "customer.subscription.created",
                "customer_id": "cus_walk",
            })),
        ),
        Action::ReportStage => (
            Method::POST,
            "/v1/runs/evt_api/stages/reconciled".to_owned(),
            Some(json!({})),
        ),
        Action::ReadRuns => (Method::GET, "/v1/runs/evt_api".to_owned(), None),
        Action::ReadIncidents => (
            Method::GET,
            format!("/v1/incidents/{}", ids.api_incident),
            None,
        ),
        Action::AcknowledgeIncident => (
            Method::POST,
            format!("/v1/incidents/{}/acknowledge", ids.api_incident),
            None,
        ),
        Action::ResolveIncident => (
            Method::POST,
            format!("/v1/incidents/{}/resolve", ids.api_incident),
            Some(json!({"resolution": "walked"})),
        ),
        Action::ReadDrills => (Method::GET, "/v1/drills".to_owned(), None),
        Action::StartDrill => (Method::POST, "/v1/drills".to_owned(), None),
        Action::ManageKeys => (
            Method::POST,
            "/v1/keys".to_owned(),
            Some(json!({"name": format!("made-{attempt}"), "scopes": ["read"]})),
        ),
        Action::ReadAudit => (Method::GET, "/v1/audit".to_owned(), None),
    };
    server.api_as(key, method, &path, body).await
}

/// One try of `action` on the dashboard by a signed-in operator: its
/// status; `None` for an action the dashboard does not offer.
async fn by_operator(
    server: &TestServer,
    cookie: &str,
    csrf: &str,
    action: Action,
    ids: &Ids,
) -> Option<StatusCode> {
    let client = client();
    let get = |path: String| client.get(server.url(&path)).header(COOKIE, cookie).send();
    let post = |path: String, form: Vec<(&'static str, String)>| {
        let mut form = form;
        form.push(("csrf", csrf.to_owned()));
        client
            .post(server.url(&path))
            .header(COOKIE, cookie)
            .form(&form)
            .send()
    };
    let response = match action {
        Action::OpenRun | Action::ReportStage => return None,
        Action::ReadRuns => get("/runs/default/evt_page".into()).await,
        Action::ReadIncidents => get(format!("/incidents/{}", ids.page_incident)).await,
        Action::AcknowledgeIncident => {
            post(
                format!("/incidents/{}/acknowledge", ids.page_incident),
                vec![],
            )
            .await
        }
        Action::ResolveIncident => {
            post(
                format!("/incidents/{}/resolve", ids.page_incident),
                vec![("resolution", "walked".into())],
            )
            .await
        }
        Action::ReadDrills => get("/drills".into()).await,
        Action::StartDrill => post("/drills".into(), vec![("project", "default".into())]).await,
        Action::ManageKeys => {
            post(
                "/keys".into(),
                vec![
                    ("project", "default".into()),
                    ("name", "from-the-page".into()),
                    ("scope", "read".into()),
                ],
            )
            .await
        }
        Action::ReadAudit => get("/audit".into()).await,
    };
    Some(response.unwrap().status())
}

struct Ids {
    api_incident: String,
    page_incident: String,
}

async fn sign_in(server: &TestServer, token: &str) -> (String, String) {
    let response = client()
        .post(server.url("/signin"))
        .form(&[("token", token), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = page_text(server, &cookie, "/").await;
    (cookie.clone(), csrf_of(&html))
}

/// A dashboard page's body, for the session `cookie`.
async fn page_text(server: &TestServer, cookie: &str, path: &str) -> String {
    client()
        .get(server.url(path))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// An export's JSON lines.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn every_action_is_allowed_or_refused_as_the_readme_says(backend: Backend) {
    let table = readme_table();
    let listed: Vec<Action> = table.iter().map(|(action, _, _)| *action).collect();
    assert_eq!(
        listed,
        Action::ALL,
        "the README lists every action, in order"
    );
    for (action, scope, role) in &table {
        assert_eq!(action.scope(), *scope, "{action}: the README's scope");
        assert_eq!(action.role(), *role, "{action}: the README's role");
    }

    let mut toml = String::new();
    for (name, role) in OPERATORS {
        toml.push_str(&format!(
            "[[operators]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\nrole = \"{role}\"\n",
            sha256(&token(name))
        ));
    }
    let settings = [
        ("ASSAY_ADMIN_TOKEN", ADMIN_TOKEN),
        ("ASSAY_DEADLINE_RECONCILED", "1s"),
        ("ASSAY_DEADLINE_ACCESS_ASSERTED", "2s"),
    ];
    let Some(server) = TestServer::start_with_toml(backend, &toml, &settings).await else {
        return;
    };
    for (event, customer, subscription) in [
        ("evt_api", "cus_api", "sub_api"),
        ("evt_page", "cus_page", "sub_page"),
    ] {
        let (status, _) = server
            .deliver(&subscription_created(
                event,
                customer,
                subscription,
                "price_pro",
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let incidents = server.wait_for_incidents(2).await;
    let incident_of = |event: &str| {
        incidents
            .iter()
            .find(|i| i["evidence"]["event_id"] == event)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let ids = Ids {
        api_incident: incident_of("evt_api"),
        page_incident: incident_of("evt_page"),
    };

    // A key of each single scope, made by the configured key (every scope).
    let mut keys = Vec::new();
    for scope in Scope::ALL {
        let (status, made) = server
            .api(
                Method::POST,
                "/v1/keys",
                Some(json!({"name": format!("only-{scope}"), "scopes": [scope]})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{made}");
        assert!(made["secret"].as_str().unwrap().starts_with("ak_live_"));
        keys.push((
            *scope,
            made["secret"].as_str().unwrap().to_owned(),
            made["key"]["prefix"].as_str().unwrap().to_owned(),
        ));
    }

    let mut attempt = 0;
    for (action, needed, _) in &table {
        // The allowed try last, so that each refused one meets the state
        // it would change (an incident still open, say).
        let mut tries: Vec<&(Scope, String, String)> = keys.iter().collect();
        tries.sort_by_key(|(scope, _, _)| scope == needed);
        for (scope, secret, _) in tries {
            attempt += 1;
            let before = fingerprint(&server).await;
            let (status, body) = by_key(&server, secret, *action, &ids, attempt).await;
            if scope == needed {
                assert!(
                    status.is_success(),
                    "{action} with `{scope}`: {status} {body}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{action} with `{scope}`: {body}"
                );
                assert_eq!(body["error"]["code"], "missing_scope");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains(&format!("`{needed}` scope")), "{message}");
                assert_eq!(
                    fingerprint(&server).await,
                    before,
                    "{action} refused with `{scope}` changed something"
                );
            }
        }
    }

    for (name, role) in OPERATORS {
        let (cookie, csrf) = sign_in(&server, &token(name)).await;
        for (action, _, needed) in &table {
            let before = fingerprint(&server).await;
            let Some(status) = by_operator(&server, &cookie, &csrf, *action, &ids).await else {
                continue;
            };
            let allowed = needed.is_some_and(|needed| role >= needed);
            if allowed {
                assert!(
                    status.is_success() || status.is_redirection(),
                    "{action} by a {role}: {status}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{action} by a {role}");
                assert_eq!(
                    fingerprint(&server).await,
                    before,
                    "{action} refused to a {role} changed something"
                );
            }
        }
    }

    // A revocation is an allowed change too; the revoked key opens nothing.
    let (_, report_secret, report_prefix) = &keys[0];
    let listed = server.api(Method::GET, "/v1/keys", None).await.1;
    let report_id = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["prefix"] == report_prefix.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, revoked) = server
        .api(Method::DELETE, &format!("/v1/keys/{report_id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    let (status, refused) = by_key(&server, report_secret, Action::OpenRun, &ids, 0).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{refused}"
    );

    // Every allowed change is in the audit log with who made it.
    let (_, _, operate_prefix) = &keys[2];
    let export = server
        .client
        .get(server.url("/v1/audit?format=jsonl"))
        .bearer_auth(crate::support::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), StatusCode::OK);
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    let text = export.text().await.unwrap();
    let mut entries = json_lines(&text);
    assert!(
        entries.iter().all(|e| e["project"] == "default"),
        "a key reads its project's entries, not the sign-ins"
    );
    // The sign-ins, which belong to no project, are for an admin of every
    // project: the admin token's operator, from the Audit page's export.
    let (admin, _) = sign_in(&server, ADMIN_TOKEN).await;
    let sign_ins = json_lines(&page_text(&server, &admin, "/audit?format=jsonl").await);
    entries.extend(sign_ins.into_iter().filter(|e| e["project"].is_null()));
    let by = |action: &str, actor: &str| {
        entries
            .iter()
            .any(|e| e["action"] == action && e["actor"]["name"] == actor)
    };
    for (action, actor) in [
        ("incident_acknowledged", operate_prefix.as_str()),
        ("incident_resolved", operate_prefix.as_str()),
        ("drill_started", operate_prefix.as_str()),
        ("incident_acknowledged", "rosa"),
        ("incident_resolved", "rosa"),
        ("drill_started", "rosa"),
        ("key_created", "ada"),
        ("key_created", "the configured API key"),
        ("key_revoked", "the configured API key"),
        ("signed_in", "vera"),
        ("signed_in", "rosa"),
    ] {
        assert!(by(action, actor), "no {action} by {actor} in:\n{text}");
    }
    assert!(
        entries
            .iter()
            .filter(|e| e["actor"]["name"] == "vera")
            .all(|e| e["action"] == "signed_in"),
        "a viewer's only entries are their sign-ins:\n{text}"
    );
    let acknowledged = entries
        .iter()
        .find(|e| e["action"] == "incident_acknowledged" && e["actor"]["name"] == "rosa")
        .unwrap();
    assert_eq!(acknowledged["before"]["status"], "open");
    assert_eq!(acknowledged["after"]["status"], "acknowledged");
    assert!(
        acknowledged["actor"]["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1")
    );
    server.stop().await;
}

/// The audit log is append-only below the application too: the database
/// refuses to change or delete an entry.
async fn the_database_refuses_to_change_the_audit_log(backend: Backend) {
    let Some(server) = TestServer::start(backend, &[("ASSAY_ADMIN_TOKEN", ADMIN_TOKEN)]).await
    else {
        return;
    };
    let (status, _) = server
        .api(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "one", "scopes": ["read"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(server.db.scalar("SELECT COUNT(*) FROM audit_log").await, 1);
    assert!(
        server
            .db
            .try_execute("UPDATE audit_log SET actor = 'someone else'")
            .await
            .is_err()
    );
    assert!(
        server
            .db
            .try_execute("DELETE FROM audit_log")
            .await
            .is_err()
    );
    assert_eq!(server.db.scalar("SELECT COUNT(*) FROM audit_log").await, 1);
    server.stop().await;
}

on_both_backends!(
    every_action_is_allowed_or_refused_as_the_readme_says,
    the_database_refuses_to_change_the_audit_log,
);
