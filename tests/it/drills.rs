//! Failure drills end to end over HTTP: a healthy drill passes with its
//! alert received by a real receiver on loopback; each broken link (a wrong
//! webhook secret, a sweeper that is off or too slow, a channel that is
//! down, a template that drops a field) fails the drill and is named; a
//! scheduled drill fires on its schedule, once across replicas; and drill
//! events never count as a real customer's.

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::alerts::Receiver;
use crate::support::{
    Backend, NO_SETTINGS, Peer, SECRET, TestDb, TestServer, now, on_both_backends, sign, wait_for,
};

/// The messages `receiver` took on `path`, as text.
fn messages(receiver: &Receiver, path: &str) -> Vec<String> {
    receiver
        .accepted(path)
        .iter()
        .map(Value::to_string)
        .collect()
}

/// The app's access endpoint: answers plan `pro` for anyone, and keeps the
/// `Assay-Drill` header of each request.
struct App {
    base: String,
    drill_headers: Arc<Mutex<Vec<String>>>,
    _peer: Peer,
}

impl App {
    async fn start() -> App {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        let router = axum::Router::new().route(
            "/access/{customer}",
            axum::routing::get(move |headers: HeaderMap| {
                let kept = kept.clone();
                async move {
                    if let Some(drill) = headers.get("assay-drill") {
                        kept.lock()
                            .unwrap()
                            .push(drill.to_str().unwrap_or_default().to_owned());
                    }
                    (
                        [("x-deploy-sha", "sha-app-7")],
                        axum::Json(json!({"plan": "pro"})),
                    )
                }
            }),
        );
        let peer = Peer::serve(router).await;
        App {
            base: peer.base(),
            drill_headers: seen,
            _peer: peer,
        }
    }
}

/// Quick drills: a 1 s deadline, quick alerts.
fn quick(extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = [
        ("ASSAY_DRILL_DEADLINE", "1s"),
        ("ASSAY_DRILL_SWEEP_GRACE", "8s"),
        ("ASSAY_DRILL_ALERT_TIMEOUT", "8s"),
        ("ASSAY_ALERT_POLL_INTERVAL", "50ms"),
        ("ASSAY_ALERT_RETRY_INITIAL", "100ms"),
        ("ASSAY_ALERT_RETRY_MAX", "300ms"),
        ("ASSAY_ALERT_TIMEOUT", "2s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    settings.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    settings
}

/// Starts a drill over the API and waits for it to finish.
async fn drill(server: &TestServer) -> Value {
    let (status, started) = server
        .api(Method::POST, "/v1/drills", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["status"], "running");
    let id = started["id"].as_str().unwrap().to_owned();
    finished(server, &id).await
}

async fn finished(server: &TestServer, id: &str) -> Value {
    wait_for(&format!("drill {id} to finish"), async || {
        let drill = server.get(&format!("/v1/drills/{id}")).await;
        (drill["status"] != "running").then_some(drill)
    })
    .await
}

fn step_names(drill: &Value) -> Vec<String> {
    drill["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_drill_passes_end_to_end_and_alerts_only_the_drill_channel(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = App::start().await;
    let toml = format!(
        "[[projects.default.channels]]\nname = \"drills\"\nkind = \"slack\"\nurl = \"{}\"\ndrill = true\n",
        receiver.url("drills")
    );
    let settings = quick(&[
        ("ASSAY_SLACK_WEBHOOK_URL", receiver.url("real")),
        (
            "ASSAY_PROBE_URL",
            format!("{}/access/{{{{customer_id}}}}", app.base),
        ),
    ]);
    let Some(server) = TestServer::start_with_toml(backend, &toml, &settings).await else {
        return;
    };
    let report = drill(&server).await;
    assert_eq!(report["status"], "passed", "{report:#}");
    assert_eq!(report["broken_link"], Value::Null);
    assert_eq!(
        step_names(&report),
        [
            "ingest",
            "run_opened",
            "reconciled",
            "access_failed",
            "incident_opened",
            "incident_complete",
            "alert_delivered",
            "resolved"
        ]
    );
    assert!(
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["passed"] == true && s["at"].is_string())
    );
    let id = report["id"].as_str().unwrap();
    let event_id = report["event_id"].as_str().unwrap();
    let customer = report["customer_id"].as_str().unwrap();
    assert!(event_id.starts_with("evt_assaydrill_"));

    // The probe carried the drill's header; the app's `pro` still counted
    // as access that did not change.
    assert_eq!(*app.drill_headers.lock().unwrap(), vec![id.to_owned()]);
    let run = server.get(&format!("/v1/runs/{event_id}")).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["drill_id"], id);
    assert_eq!(run["observed_plan"], "pro");
    assert_eq!(run["livemode"], false);
    let incident = &run["incidents"][0];
    assert_eq!(incident["drill"], true);
    assert_eq!(incident["status"], "resolved");
    assert_eq!(
        incident["title"],
        "Customer access did not change after Stripe event"
    );
    for key in [
        "event_id",
        "customer_id",
        "subscription_id",
        "expected_plan",
        "observed_plan",
        "deploy_sha",
    ] {
        assert!(incident["evidence"][key].is_string(), "{key}: {incident:#}");
    }
    assert_eq!(incident["evidence"]["deploy_sha"], "sha-app-7");

    // The drill channel got the alert, marked DRILL, and its resolution;
    // the real channel got nothing.
    let sent = wait_for("the drill's resolve alert", async || {
        let got = messages(&receiver, "drills");
        (got.len() >= 2).then_some(got)
    })
    .await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[0].contains(customer), "{}", sent[0]);
    // Both say DRILL first: in the notification and in the header.
    for (message, title) in receiver.accepted("drills").iter().zip([
        "DRILL: Customer access did not change after Stripe event",
        "DRILL: Resolved: Customer access did not change after Stripe event",
    ]) {
        assert_eq!(message["text"], title, "{message}");
        assert_eq!(message["blocks"][0]["text"]["text"], title, "{message}");
    }
    assert!(messages(&receiver, "real").is_empty());

    // Not counted with real customers, anywhere.
    let runs = server.get("/v1/runs").await;
    assert_eq!(runs["data"].as_array().unwrap().len(), 0, "{runs}");
    let drill_runs = server.get("/v1/runs?drill=true").await;
    assert_eq!(drill_runs["data"][0]["event_id"], event_id);
    let incidents = server.get("/v1/incidents").await;
    assert_eq!(incidents["data"].as_array().unwrap().len(), 0);
    let drill_incidents = server.get("/v1/incidents?drill=true&status=resolved").await;
    assert_eq!(drill_incidents["data"].as_array().unwrap().len(), 1);
    let listed = server.get("/v1/drills").await;
    assert_eq!(listed["data"][0]["id"], id);
    server.stop().await;
}

/// Runs one drill on a server with `settings` (and `toml`), and returns
/// its report, failed.
async fn failing_drill(
    backend: Backend,
    toml: &str,
    settings: &[(String, String)],
) -> Option<(TestServer, Value)> {
    let server = TestServer::start_with_toml(backend, toml, settings).await?;
    let report = drill(&server).await;
    assert_eq!(report["status"], "failed", "{report:#}");
    Some((server, report))
}

async fn a_wrong_webhook_secret_breaks_the_ingest_link(backend: Backend) {
    // The drill posts through an ingress that reaches an Assay whose secret
    // differs (a replica left behind by a rotation).
    let Some(other) = TestServer::start(
        backend,
        &[("ASSAY_STRIPE_WEBHOOK_SECRET", "whsec_rotated_elsewhere")],
    )
    .await
    else {
        return;
    };
    let receiver = Receiver::start().await;
    let settings = quick(&[
        ("ASSAY_SLACK_WEBHOOK_URL", receiver.url("slack")),
        ("ASSAY_DRILL_INGEST_URL", other.base.clone()),
    ]);
    let Some((server, report)) = failing_drill(backend, "", &settings).await else {
        return;
    };
    let broken = &report["broken_link"];
    assert_eq!(broken["link"], "ingest_refused", "{report:#}");
    assert!(
        broken["detail"]
            .as_str()
            .unwrap()
            .contains("signature_mismatch"),
        "{broken}"
    );
    assert!(
        broken["fix"]
            .as_str()
            .unwrap()
            .contains("ASSAY_STRIPE_WEBHOOK_SECRET"),
        "{broken}"
    );
    assert_eq!(step_names(&report), ["ingest", "resolved"]);
    assert_eq!(
        other.count("stripe_events").await,
        0,
        "refused means stored nowhere"
    );
    assert_eq!(server.count("runs").await, 0);
    server.stop().await;
}

async fn a_webhook_stored_behind_a_failing_ingress_is_cleaned_up(backend: Backend) {
    // An ingress that passes the webhook on to Assay, which stores it, but
    // answers 502 (a proxy timing out): the drill fails at ingest, and its
    // clean-up still finds and ends the run, so no incident fires later.
    let target = Arc::new(Mutex::new(String::new()));
    let forward_to = target.clone();
    let ingress = Peer::serve(axum::Router::new().route(
        "/hooks/stripe/default",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let target = forward_to.lock().unwrap().clone();
            async move {
                let passed = crate::support::http_client()
                    .post(target)
                    .header("content-type", "application/json")
                    .header("stripe-signature", headers["stripe-signature"].clone())
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(passed.status(), StatusCode::OK);
                axum::http::StatusCode::BAD_GATEWAY
            }
        }),
    ))
    .await;
    // A password in the URL, which no report may show.
    let ingest_url = format!("http://drill:s3cret-pass@{}", ingress.addr);
    let Some(server) =
        TestServer::start(backend, &quick(&[("ASSAY_DRILL_INGEST_URL", ingest_url)])).await
    else {
        return;
    };
    *target.lock().unwrap() = server.url("/hooks/stripe/default");
    let report = drill(&server).await;
    assert_eq!(report["status"], "failed");
    let broken = &report["broken_link"];
    assert_eq!(broken["link"], "ingest_refused", "{report:#}");
    assert!(broken["detail"].as_str().unwrap().contains("HTTP 502"));
    assert!(!report.to_string().contains("s3cret"), "{report:#}");
    assert_eq!(report["steps"][1]["step"], "resolved");
    let event_id = report["event_id"].as_str().unwrap();
    let run = server.get(&format!("/v1/runs/{event_id}")).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(run["deadline_at"], Value::Null, "the sweeper never sees it");
    server.stop().await;
}

async fn an_unreadable_drill_does_not_hold_up_the_others(backend: Backend) {
    let receiver = Receiver::start().await;
    let Some(server) = TestServer::start(
        backend,
        &quick(&[("ASSAY_SLACK_WEBHOOK_URL", receiver.url("slack"))]),
    )
    .await
    else {
        return;
    };
    server
        .db
        .execute(
            "INSERT INTO drills (id, project, workflow, trigger, status, step, event_id, started_at, \
             report, next_step_at) VALUES ('00000000-0000-7000-8000-000000000001', 'default', 'billing', \
             'api', 'running', 'ingest', 'evt_assaydrill_x', 0, 'not json', 0)",
        )
        .await;
    let report = drill(&server).await;
    assert_eq!(report["status"], "passed", "{report:#}");
    let status = server
        .db
        .scalar("SELECT COUNT(*) FROM drills WHERE status = 'failed' AND next_step_at IS NULL")
        .await;
    assert_eq!(status, 1, "the unreadable drill ended");
    server.stop().await;
}

async fn a_sweeper_that_is_off_or_too_slow_breaks_the_sweeper_link(backend: Backend) {
    let receiver = Receiver::start().await;
    // Off on the only replica; then once an hour, far slower than the
    // drill's 1 s grace.
    for schedule in ["off", "0 0 * * * *"] {
        let settings = quick(&[
            ("ASSAY_SLACK_WEBHOOK_URL", receiver.url("slack")),
            ("ASSAY_SWEEP_SCHEDULE", schedule.to_owned()),
            ("ASSAY_DRILL_SWEEP_GRACE", "1s".to_owned()),
        ]);
        let Some((server, report)) = failing_drill(backend, "", &settings).await else {
            return;
        };
        let broken = &report["broken_link"];
        assert_eq!(broken["link"], "sweeper_late", "{schedule}: {report:#}");
        assert!(
            broken["fix"]
                .as_str()
                .unwrap()
                .contains("ASSAY_SWEEP_SCHEDULE"),
            "{broken}"
        );
        // The drill ended its run, so no incident can fire later.
        let event_id = report["event_id"].as_str().unwrap();
        let run = server.get(&format!("/v1/runs/{event_id}")).await;
        assert_eq!(run["status"], "failed");
        assert_eq!(run["deadline_at"], Value::Null);
        assert_eq!(server.count("incidents").await, 0);
        server.stop().await;
    }
    assert!(messages(&receiver, "slack").is_empty());
}

async fn a_channel_that_is_down_breaks_the_alert_link(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver
        .state
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let settings = quick(&[
        ("ASSAY_SLACK_WEBHOOK_URL", receiver.url("slack")),
        ("ASSAY_DRILL_ALERT_TIMEOUT", "2s".to_owned()),
    ]);
    let Some((server, report)) = failing_drill(backend, "", &settings).await else {
        return;
    };
    let broken = &report["broken_link"];
    assert_eq!(broken["link"], "alert_not_delivered", "{report:#}");
    let detail = broken["detail"].as_str().unwrap();
    assert!(
        detail.contains("slack") && detail.contains("HTTP 500"),
        "{detail}"
    );
    // The checks before it passed, and the clean-up ran.
    let passed: Vec<bool> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["passed"].as_bool().unwrap())
        .collect();
    assert_eq!(passed, [true, true, true, true, true, true, false, true]);
    let event_id = report["event_id"].as_str().unwrap();
    let run = server.get(&format!("/v1/runs/{event_id}")).await;
    assert_eq!(run["incidents"][0]["status"], "resolved");
    server.stop().await;
}

async fn a_template_that_drops_a_field_breaks_the_incident_link(backend: Backend) {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The customer and the event also appear in the summary and the
    // guidance; the deploy SHA only in its own field.
    let slack = include_str!("../../templates/alerts/slack.json.hbs")
        .replace("{{incident.deploy_sha}}", "see the app");
    std::fs::write(dir.path().join("slack.json.hbs"), slack).unwrap();
    let settings = quick(&[
        ("ASSAY_SLACK_WEBHOOK_URL", receiver.url("slack")),
        (
            "ASSAY_ALERT_TEMPLATES_DIR",
            dir.path().display().to_string(),
        ),
    ]);
    let Some((server, report)) = failing_drill(backend, "", &settings).await else {
        return;
    };
    let broken = &report["broken_link"];
    assert_eq!(broken["link"], "incident_incomplete", "{report:#}");
    assert!(
        broken["detail"]
            .as_str()
            .unwrap()
            .contains("slack.json.hbs does not show the deploy SHA"),
        "{broken}"
    );
    assert!(
        broken["fix"]
            .as_str()
            .unwrap()
            .contains("ASSAY_ALERT_TEMPLATES_DIR")
    );
    // The alert itself still went out; only the field is missing.
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps[6]["step"], "alert_delivered");
    assert_eq!(steps[6]["passed"], true);
    server.stop().await;
}

async fn a_scheduled_drill_fires_on_its_schedule_once_across_replicas(backend: Backend) {
    let receiver = Receiver::start().await;
    let settings = quick(&[
        ("ASSAY_SLACK_WEBHOOK_URL", receiver.url("slack")),
        ("ASSAY_DRILL_SCHEDULE", "*/2 * * * * *".to_owned()),
    ]);
    let Some(first) = TestServer::start(backend, &settings).await else {
        return;
    };
    let second = first.replica(&settings).await;
    let passed = wait_for("a scheduled drill to pass", async || {
        let drills = first.get("/v1/drills").await;
        drills["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["status"] == "passed")
            .cloned()
    })
    .await;
    wait_for("the drill's opened and resolved alerts", async || {
        (messages_about(&passed, &receiver) >= 2).then_some(())
    })
    .await;
    first.stop().await;
    second.stop().await;
    assert_eq!(passed["trigger"], "schedule");
    let scheduled_for = passed["scheduled_for"].as_str().unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(scheduled_for).unwrap();
    assert_eq!(
        at.timestamp() % 2,
        0,
        "on the schedule's times: {scheduled_for}"
    );
    // Both replicas ran the scheduler and the drill runner: the drill sent
    // one alert per event (opened, resolved), not one per replica.
    assert_eq!(
        messages_about(&passed, &receiver),
        2,
        "{:?}",
        messages(&receiver, "slack")
    );
}

/// How many messages the receiver got about `drill`'s customer.
fn messages_about(drill: &Value, receiver: &Receiver) -> usize {
    let customer = drill["customer_id"].as_str().unwrap();
    messages(receiver, "slack")
        .iter()
        .filter(|m| m.contains(customer))
        .count()
}

async fn scheduled_drills_are_not_doubled_by_replicas(backend: Backend) {
    // Two replicas whose schedulers fire on the same times: the drills
    // table holds one drill per time.
    let settings = quick(&[("ASSAY_DRILL_SCHEDULE", "* * * * * *".to_owned())]);
    let Some(first) = TestServer::start(backend, &settings).await else {
        return;
    };
    let second = first.replica(&settings).await;
    wait_for("a few scheduled drills", async || {
        let count = first.db.scalar("SELECT COUNT(*) FROM drills").await;
        (count >= 2).then_some(())
    })
    .await;
    let db = first.db.clone();
    first.stop().await;
    second.stop().await;
    let drills = db.scalar("SELECT COUNT(*) FROM drills").await;
    let times = db
        .scalar("SELECT COUNT(DISTINCT scheduled_for) FROM drills")
        .await;
    assert_eq!(drills, times, "one drill per schedule time");
}

async fn drill_events_never_count_as_a_real_customer(backend: Backend) {
    let Some(server) = TestServer::start(backend, NO_SETTINGS).await else {
        return;
    };
    let tag = uuid::Uuid::now_v7();
    let drill_event = |livemode: bool, metadata: Value| {
        json!({
            "id": format!("evt_assaydrill_{}", tag.simple()),
            "object": "event",
            "type": "customer.subscription.updated",
            "created": now(),
            "livemode": livemode,
            "data": {"object": {
                "id": "sub_1", "object": "subscription", "customer": "cus_1",
                "status": "active", "metadata": metadata,
                "items": {"data": [{"price": {"id": "price_pro"}}]},
            }},
        })
    };
    let before = server.counts().await;
    for (event, why) in [
        (
            drill_event(true, json!({"assay_drill": tag.to_string()})),
            "live",
        ),
        (drill_event(false, json!({})), "only the id marked"),
        (
            drill_event(
                false,
                json!({"assay_drill": uuid::Uuid::now_v7().to_string()}),
            ),
            "another drill's metadata",
        ),
    ] {
        let body = event.to_string();
        let (status, answer) = server
            .deliver_raw("default", body.clone(), Some(sign(&body, SECRET, now())))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {answer}");
        assert_eq!(answer["error"]["code"], "malformed_event");
    }
    let (status, answer) = server
        .api(
            Method::POST,
            "/v1/runs",
            Some(json!({
                "event_id": format!("evt_assaydrill_{}", tag.simple()),
                "event_type": "customer.subscription.updated",
                "customer_id": "cus_1",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["code"], "reserved_event_id");
    assert_eq!(server.counts().await, before, "nothing stored");

    // A well-marked drill event opens a drill run, never a real one.
    let (status, _) = server
        .deliver(&drill_event(false, json!({"assay_drill": tag.to_string()})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let run = server
        .get(&format!("/v1/runs/evt_assaydrill_{}", tag.simple()))
        .await;
    assert_eq!(run["drill_id"], tag.to_string());
    assert_eq!(server.get("/v1/runs").await["data"], json!([]));
    server.stop().await;
}

async fn the_drills_api_refuses_bad_requests(backend: Backend) {
    let Some(server) = TestServer::start(backend, NO_SETTINGS).await else {
        return;
    };
    let response = server
        .client
        .post(server.url("/v1/drills"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, answer) = server
        .api(
            Method::POST,
            "/v1/drills",
            Some(json!({"workflow": "shipping"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["code"], "unknown_workflow");
    let (status, answer) = server
        .api(Method::POST, "/v1/drills", Some(json!({"project": "x"})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let response = server
        .client
        .post(server.url("/v1/drills"))
        .bearer_auth(crate::support::API_KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.db.scalar("SELECT COUNT(*) FROM drills").await, 0);

    let (status, started) = server.api(Method::POST, "/v1/drills", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = started["id"].as_str().unwrap();
    let (status, _) = server
        .api_as(
            crate::support::OTHER_API_KEY,
            Method::GET,
            &format!("/v1/drills/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another project's drill");
    let (status, _) = server.api(Method::GET, "/v1/drills/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

async fn the_dashboard_starts_drills_and_shows_their_reports(backend: Backend) {
    use crate::dashboard::{ADMIN_TOKEN, csrf_of, page, post_form, sign_in};
    let receiver = Receiver::start().await;
    let settings = quick(&[
        ("ASSAY_SLACK_WEBHOOK_URL", receiver.url("slack")),
        ("ASSAY_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
    ]);
    let Some(server) = TestServer::start(backend, &settings).await else {
        return;
    };
    let cookie = sign_in(&server).await;
    let (status, html) = page(&server, &cookie, "/drills").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("No drill has run"), "{html}");
    assert_eq!(
        post_form(&server, &cookie, "/drills", &[("project", "default")]).await,
        StatusCode::FORBIDDEN,
        "no CSRF token, no drill"
    );
    let csrf = csrf_of(&html);
    assert_eq!(
        post_form(
            &server,
            &cookie,
            "/drills",
            &[("csrf", csrf.as_str()), ("project", "default")]
        )
        .await,
        StatusCode::SEE_OTHER
    );
    let listed = server.get("/v1/drills").await;
    let id = listed["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed["data"][0]["trigger"], "dashboard");
    finished(&server, &id).await;
    let (_, html) = page(&server, &cookie, "/drills").await;
    assert!(html.contains(&format!("drill-{id}")), "{html}");
    assert!(html.contains("passed") && html.contains("alert_delivered"));
    // The real customers' pages do not show it.
    let (_, runs) = page(&server, &cookie, "/?status=").await;
    assert!(!runs.contains("assaydrill"), "{runs}");
    server.stop().await;
}

on_both_backends!(
    a_drill_passes_end_to_end_and_alerts_only_the_drill_channel,
    a_wrong_webhook_secret_breaks_the_ingest_link,
    a_webhook_stored_behind_a_failing_ingress_is_cleaned_up,
    an_unreadable_drill_does_not_hold_up_the_others,
    a_sweeper_that_is_off_or_too_slow_breaks_the_sweeper_link,
    a_channel_that_is_down_breaks_the_alert_link,
    a_template_that_drops_a_field_breaks_the_incident_link,
    a_scheduled_drill_fires_on_its_schedule_once_across_replicas,
    scheduled_drills_are_not_doubled_by_replicas,
    drill_events_never_count_as_a_real_customer,
    the_drills_api_refuses_bad_requests,
    the_dashboard_starts_drills_and_shows_their_reports,
);

/// The `assay` binary with only the given variables.
fn assay(args: &[&str], env: &[(String, String)]) -> std::process::Command {
    let mut cmd = crate::support::assay_command();
    cmd.args(args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd
}

async fn output(mut cmd: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assay_drill_run_in_process_passes_and_exits_zero() {
    let receiver = Receiver::start().await;
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let mut env = quick(&[
        ("ASSAY_DATABASE_URL", db.url.clone()),
        ("ASSAY_STRIPE_WEBHOOK_SECRET", SECRET.to_owned()),
        ("ASSAY_SWEEP_SCHEDULE", "* * * * * *".to_owned()),
        ("ASSAY_SLACK_WEBHOOK_URL", receiver.url("slack")),
        ("ASSAY_LOG", "warn".to_owned()),
    ]);
    let out = output(assay(&["drill", "run"], &env)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASSED"), "{stdout}");
    assert!(stdout.contains("alert_delivered"), "{stdout}");
    // Both alerts, the resolve alert too, went out before the command
    // exited: nothing is left to go out, stale, when Assay next serves.
    let sent = messages(&receiver, "slack");
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|m| m.contains("DRILL")), "{sent:?}");
    assert!(sent[1].contains("Resolved"), "{}", sent[1]);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM alert_deliveries WHERE status <> 'sent'")
            .await,
        0
    );

    // A channel that never answers: the drill fails on it, and its alerts
    // are skipped when the command ends instead of waiting in the outbox.
    let dead = Receiver::start().await;
    dead.state
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut down = env.clone();
    down.retain(|(key, _)| key != "ASSAY_SLACK_WEBHOOK_URL" && key != "ASSAY_DRILL_ALERT_TIMEOUT");
    down.push(("ASSAY_SLACK_WEBHOOK_URL".to_owned(), dead.url("slack")));
    down.push(("ASSAY_DRILL_ALERT_TIMEOUT".to_owned(), "2s".to_owned()));
    let out = output(assay(&["drill", "run", "--json"], &down)).await;
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["broken_link"]["link"], "alert_not_delivered",
        "{report:#}"
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM alert_deliveries WHERE status = 'pending'")
            .await,
        0
    );
    assert!(
        db.scalar("SELECT COUNT(*) FROM alert_deliveries WHERE status = 'skipped'")
            .await
            >= 1
    );

    // Without a channel the alarm reaches nobody: exit 1, the link named.
    env.retain(|(key, _)| key != "ASSAY_SLACK_WEBHOOK_URL");
    let out = output(assay(&["drill", "run", "--json"], &env)).await;
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "failed");
    assert_eq!(report["trigger"], "cli");
    assert_eq!(report["broken_link"]["link"], "alert_not_delivered");

    let out = output(assay(&["drill", "run", "--project", "nope"], &env)).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no project `nope`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assay_drill_run_drills_a_running_assay_over_its_api() {
    let receiver = Receiver::start().await;
    let settings = quick(&[("ASSAY_SLACK_WEBHOOK_URL", receiver.url("slack"))]);
    let Some(server) = TestServer::start(Backend::Sqlite, &settings).await else {
        return;
    };
    let env = [(
        "ASSAY_API_KEY".to_owned(),
        crate::support::API_KEY.to_owned(),
    )];
    let out = output(assay(
        &["drill", "run", "--json", "--url", &server.base],
        &env,
    ))
    .await;
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "passed");
    assert_eq!(report["trigger"], "api");

    let wrong = [(
        "ASSAY_API_KEY".to_owned(),
        "not-the-key-0123456789".to_owned(),
    )];
    let out = output(assay(&["drill", "run", "--url", &server.base], &wrong)).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HTTP 401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;
}
