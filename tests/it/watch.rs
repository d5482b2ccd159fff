//! The monitor watches its own input: refused deliveries and silence open
//! one project incident each, alerted once, which resolves itself when the
//! condition clears; nothing is stored per refused request beyond a
//! bounded counter.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use std::time::Duration;

use assay::incident::{
    Condition, IncidentKind, IncidentScope, IncidentStatus, NewIncident, ProjectCause,
    ProjectFinding,
};
use assay::run::{BILLING_WORKFLOW, Deadlines, Expectation, Run, RunSpec, Source};
use assay::store::{DatabaseSettings, connect};

use crate::alerts::Receiver;
use crate::support::{
    Backend, SECRET, TestDb, TestServer, now, on_both_backends, sign, subscription_created,
    wait_for,
};

/// The first migration of project incidents.
const PROJECT_INCIDENTS: i64 = 20261204000014;

fn settings(db: &TestDb) -> DatabaseSettings {
    DatabaseSettings {
        url: db.url.clone(),
        max_connections: 4,
        statement_timeout: Duration::from_secs(10),
        lease: Duration::from_secs(30),
    }
}

fn t0() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis()).unwrap()
}

async fn incidents_from_before_project_incidents_survive_the_upgrade(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    db.migrate_before(PROJECT_INCIDENTS).await;
    // A failed run with its incident and a sent alert, as the release
    // before wrote them.
    let now = t0();
    let spec = RunSpec {
        project: "default".into(),
        workflow: BILLING_WORKFLOW.into(),
        event_id: "evt_old".into(),
        event_type: "customer.subscription.created".into(),
        customer_id: Some("cus_old".into()),
        subscription_id: Some("sub_old".into()),
        expectation: Expectation::Plan("pro".into()),
        livemode: Some(false),
        event_created_at: None,
        deadlines: Deadlines {
            reconciled: Duration::from_secs(60),
            access_asserted: Duration::from_secs(120),
        },
        source: Source::Stripe,
        probe_start: None,
        drill_id: None,
    };
    let (mut run, _) = Run::open(spec, now);
    let (missed, _) = run.expire(now + chrono::Duration::minutes(5)).unwrap();
    let new = NewIncident::for_missed(&run, &missed, None, now);
    let evidence = serde_json::to_string(&new.evidence).unwrap();
    let (run_id, incident_id) = (run.id.to_string(), new.id.to_string());
    let delivery_id = uuid::Uuid::now_v7().to_string();
    for (sql, args) in [
        (
            "INSERT INTO runs (id, project, workflow, event_id, event_type, stage, status, \
             opened_at, reconciled_due_at, access_due_at, event_created_at) VALUES \
             ($1, 'default', 'billing', 'evt_old', 'customer.subscription.created', 'received', \
             'failed', 1000, 2000, 3000, 1000)",
            vec![run_id.as_str()],
        ),
        (
            "INSERT INTO incidents (id, run_id, project, workflow, kind, title, status, evidence, \
             opened_at, drill) VALUES ($1, $2, 'default', 'billing', 'reconciliation_missing', \
             'Subscription state was not reconciled after Stripe event', 'open', $3, 4000, FALSE)",
            vec![incident_id.as_str(), run_id.as_str(), evidence.as_str()],
        ),
        (
            "INSERT INTO alert_deliveries (id, project, channel, event, status, attempts, \
             created_at) VALUES ($1, 'default', 'slack', 'opened', 'sent', 1, 4000)",
            vec![delivery_id.as_str()],
        ),
        (
            "INSERT INTO alert_delivery_incidents (delivery_id, incident_id, position) \
             VALUES ($1, $2, 0)",
            vec![delivery_id.as_str(), incident_id.as_str()],
        ),
    ] {
        db.execute_with(sql, &args).await.unwrap();
    }

    let store = connect(&settings(&db)).await.unwrap();
    let detail = store.incident("default", new.id).await.unwrap();
    assert_eq!(detail.incident.scope, IncidentScope::Run);
    assert_eq!(detail.incident.run_id, Some(run.id));
    assert_eq!(detail.incident.evidence, new.evidence);
    assert_eq!(detail.deliveries.len(), 1);
    // Still one incident per run and kind.
    let twice = db
        .execute_with(
            "INSERT INTO incidents (id, run_id, project, workflow, kind, title, status, evidence, \
             opened_at) VALUES ('again', $1, 'default', 'billing', 'reconciliation_missing', 't', \
             'open', '{}', 5000)",
            &[run_id.as_str()],
        )
        .await;
    assert!(twice.is_err(), "a second incident of one run and kind");
    if backend == Backend::Sqlite {
        // References are still checked after the rebuild.
        let dangling = db
            .execute_with(
                "INSERT INTO alert_delivery_incidents (delivery_id, incident_id, position) \
                 VALUES ($1, 'no-such-incident', 1)",
                &[delivery_id.as_str()],
            )
            .await;
        assert!(dangling.is_err(), "a delivery about no incident");
        assert_eq!(
            db.scalar("SELECT COUNT(*) FROM pragma_foreign_key_check")
                .await,
            0
        );
    }
}

fn finding(kind: IncidentKind, seen: &str) -> ProjectFinding {
    let now = t0();
    ProjectFinding {
        project: "default".into(),
        workflow: BILLING_WORKFLOW.into(),
        kind,
        subject: String::new(),
        title: format!("title: {seen}"),
        summary: "summary".into(),
        seen: seen.into(),
        since: now,
        usual: None,
        details: Condition::Silence {
            last_accepted_at: now,
            silent_secs: 10,
            usual_gap_secs: 1.0,
            threshold_secs: 5,
            learnt_from: 50,
        },
        guidance: vec!["check".into()],
    }
}

async fn one_project_incident_is_open_per_cause_whatever_races(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    // Replicas share a PostgreSQL database; SQLite serves one replica, whose
    // workers race on its one store.
    let settings = settings(&db);
    let stores = match backend {
        Backend::Postgres => {
            let stores = futures::future::join_all((0..4).map(|_| connect(&settings))).await;
            stores.into_iter().map(Result::unwrap).collect::<Vec<_>>()
        }
        Backend::Sqlite => vec![connect(&settings).await.unwrap(); 4],
    };
    let now = t0();
    // Four replicas find the same condition at once: one opens it.
    let opened = futures::future::join_all(stores.iter().enumerate().map(|(i, store)| {
        let new = NewIncident::for_project(
            finding(IncidentKind::StripeEventsSilent, &format!("replica {i}")),
            now,
        );
        store.keep_project_incident(new, now)
    }))
    .await;
    let opened: Vec<_> = opened.into_iter().filter_map(Result::unwrap).collect();
    assert_eq!(opened.len(), 1, "one replica opens it");
    assert_eq!(opened[0].run_id, None);
    let open = stores[0].open_project_incidents().await.unwrap();
    assert_eq!(open.len(), 1);
    // Another cause is another incident.
    let other = NewIncident::for_project(finding(IncidentKind::StripeDeliveriesRefused, "x"), now);
    assert!(
        stores[1]
            .keep_project_incident(other, now)
            .await
            .unwrap()
            .is_some()
    );
    // The open one's evidence moves on; it is still the one incident.
    let later = NewIncident::for_project(finding(IncidentKind::StripeEventsSilent, "later"), now);
    assert!(
        stores[2]
            .keep_project_incident(later, now)
            .await
            .unwrap()
            .is_none()
    );
    let detail = stores[0].incident("default", opened[0].id).await.unwrap();
    assert_eq!(detail.incident.title, "title: later");
    // Cleared once, however many replicas clear it.
    let cause = ProjectCause::of(&opened[0]);
    let cleared = futures::future::join_all(
        stores
            .iter()
            .map(|store| store.clear_project_incident(&cause, "cleared", now)),
    )
    .await;
    let cleared: Vec<_> = cleared.into_iter().filter_map(Result::unwrap).collect();
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].status, IncidentStatus::Resolved);
    // Once resolved, the cause may open again: a new incident.
    let again = NewIncident::for_project(finding(IncidentKind::StripeEventsSilent, "again"), now);
    let reopened = stores[3]
        .keep_project_incident(again, now)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(reopened.id, opened[0].id);
}

/// The open (or, with `resolved`, resolved) project incidents of `project`
/// of `kind`, as the API lists them.
async fn project_incidents(server: &TestServer, key: &str, kind: &str, status: &str) -> Vec<Value> {
    let (code, page) = server
        .api_as(
            key,
            Method::GET,
            &format!("/v1/incidents?status={status}&limit=200"),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{page}");
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["scope"] == "project" && i["kind"] == kind)
        .cloned()
        .collect()
}

async fn refused_deliveries_open_one_project_incident_that_resolves_when_one_is_accepted(
    backend: Backend,
) {
    let receiver = Receiver::start().await;
    let settings = [
        ("ASSAY_WATCH_INTERVAL", "100ms".to_owned()),
        ("ASSAY_SLACK_WEBHOOK_URL", receiver.url("slack")),
        ("ASSAY_ALERT_POLL_INTERVAL", "50ms".to_owned()),
    ];
    let Some(server) = TestServer::start(backend, &settings).await else {
        return;
    };
    // The webhook secret was rotated in Stripe only: 200 deliveries signed
    // with the new one.
    let rotated = "whsec_rotated_in_stripe_only";
    let mut signatures = Vec::new();
    for i in 0..200 {
        let event =
            subscription_created(&format!("evt_refused_{i}"), "cus_1", "sub_1", "price_pro");
        let body = event.to_string();
        let signature = sign(&body, rotated, now());
        signatures.push(signature.clone());
        let (status, answer) = server.deliver_raw("default", body, Some(signature)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], "signature_mismatch");
    }
    let incident = wait_for("one refusals incident about all 200", async || {
        let open = project_incidents(
            &server,
            crate::support::API_KEY,
            "stripe_deliveries_refused",
            "open",
        )
        .await;
        assert!(open.len() <= 1, "at most one open: {open:?}");
        open.into_iter()
            .find(|i| i["evidence"]["details"]["refused"] == 200)
    })
    .await;
    assert_eq!(
        incident["title"],
        "Stripe deliveries are being refused: signature mismatch"
    );
    assert!(incident["run_id"].is_null());
    let evidence = &incident["evidence"];
    assert_eq!(
        evidence["details"]["reasons"]["signature_mismatch"], 200,
        "{evidence}"
    );
    assert!(
        evidence["guidance"][0]
            .as_str()
            .unwrap()
            .contains("rotated on one side only")
    );
    // No secret and no signature in what an operator (or a log) is shown.
    let shown = incident.to_string();
    for secret in [rotated, SECRET] {
        assert!(!shown.contains(secret), "the incident shows a secret");
    }
    assert!(!shown.contains("v1="), "the incident shows a signature");
    assert!(!server.db.holds(rotated).await, "a secret was stored");
    assert!(
        !server.db.holds(&signatures[0]).await,
        "a signature was stored"
    );
    // Nothing per request: no event, no run, and a counter per minute.
    assert_eq!(server.count("stripe_events").await, 0);
    assert_eq!(server.count("runs").await, 0);
    let tally_rows = server
        .db
        .scalar("SELECT COUNT(*) FROM ingest_tallies")
        .await;
    assert!((1..=3).contains(&tally_rows), "{tally_rows} tally rows");
    // One message for the whole storm.
    wait_for("the alert", async || {
        (receiver.accepted("slack").len() == 1).then_some(())
    })
    .await;
    let message = &receiver.accepted("slack")[0];
    assert!(
        message["text"]
            .as_str()
            .unwrap()
            .contains("Stripe deliveries are being refused"),
        "{message}"
    );

    // Metrics count each refusal and the open incident.
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"assay_stripe_deliveries_total{outcome="signature_mismatch",project="default"} 200"#,
        r#"assay_open_project_incidents{kind="stripe_deliveries_refused",project="default"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }

    // The secret is fixed: the next delivery is accepted, and the incident
    // resolves itself and says so.
    let (status, _) = server
        .deliver(&subscription_created(
            "evt_fixed",
            "cus_1",
            "sub_1",
            "price_pro",
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = incident["id"].as_str().unwrap();
    let resolved = wait_for("the incident to resolve", async || {
        let detail = server.get(&format!("/v1/incidents/{id}")).await;
        (detail["status"] == "resolved").then_some(detail)
    })
    .await;
    assert!(
        resolved["resolution"]
            .as_str()
            .unwrap()
            .contains("accepted again")
    );
    wait_for("the resolved alert", async || {
        (receiver.accepted("slack").len() == 2).then_some(())
    })
    .await;
    // The other project saw none of it.
    let other = project_incidents(
        &server,
        crate::support::OTHER_API_KEY,
        "stripe_deliveries_refused",
        "open",
    )
    .await;
    assert!(other.is_empty());
    server.stop().await;
}

/// Delivers `count` accepted events to `project`, one every 40 ms.
async fn steady(server: &TestServer, project: &str, secret: &str, prefix: &str, count: usize) {
    let mut every = tokio::time::interval(std::time::Duration::from_millis(40));
    for i in 0..count {
        every.tick().await;
        let event =
            subscription_created(&format!("evt_{prefix}_{i}"), "cus_1", "sub_1", "price_pro");
        let body = event.to_string();
        let signature = sign(&body, secret, now());
        let (status, answer) = server.deliver_raw(project, body, Some(signature)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
}

async fn silence_after_a_steady_stream_opens_within_its_bound_and_resolves_when_deliveries_resume(
    backend: Backend,
) {
    let settings = [
        ("ASSAY_WATCH_INTERVAL", "100ms"),
        ("ASSAY_WATCH_SILENCE_FLOOR", "1500ms"),
        ("ASSAY_WATCH_SILENCE_FACTOR", "2"),
        ("ASSAY_WATCH_SILENCE_LEARNING", "500ms"),
        ("ASSAY_WATCH_SILENCE_MIN_EVENTS", "10"),
    ];
    // Project `other` learns as quickly, but does not watch for silence.
    let toml = "[projects.other.watch]\nsilence = \"off\"\nsilence_floor = \"1500ms\"\n\
                silence_factor = 2\nsilence_learning = \"500ms\"\nsilence_min_events = 10\n";
    let Some(server) = TestServer::start_with_toml(backend, toml, &settings).await else {
        return;
    };
    tokio::join!(
        steady(&server, "default", SECRET, "d", 25),
        steady(&server, "other", "whsec_other", "o", 25),
    );
    let stopped = chrono::Utc::now();
    let incident = wait_for("the silence incident", async || {
        project_incidents(
            &server,
            crate::support::API_KEY,
            "stripe_events_silent",
            "open",
        )
        .await
        .into_iter()
        .next()
    })
    .await;
    let opened = chrono::DateTime::parse_from_rfc3339(incident["opened_at"].as_str().unwrap())
        .unwrap()
        .to_utc();
    let after = opened - stopped;
    assert!(
        after >= chrono::Duration::milliseconds(1400),
        "opened {after} after the last delivery, before its floor"
    );
    assert!(
        after <= chrono::Duration::milliseconds(4000),
        "opened {after} after the last delivery: beyond its bound"
    );
    let title = incident["title"].as_str().unwrap();
    assert!(
        title.starts_with("No Stripe events reached Assay for ")
            && title.contains("(usually one every "),
        "{title}"
    );
    assert_eq!(incident["evidence"]["details"]["learnt_from"], 25);
    // A round later, `other` (silence off) has still opened nothing.
    let id = incident["id"].as_str().unwrap().to_owned();
    wait_for("a later round", async || {
        let detail = server.get(&format!("/v1/incidents/{id}")).await;
        (detail["evidence"]["assessed_at"] != incident["evidence"]["assessed_at"]).then_some(())
    })
    .await;
    let other = project_incidents(
        &server,
        crate::support::OTHER_API_KEY,
        "stripe_events_silent",
        "open",
    )
    .await;
    assert!(other.is_empty(), "silence is off for `other`: {other:?}");

    // Deliveries resume: it resolves itself.
    steady(&server, "default", SECRET, "again", 1).await;
    wait_for("the silence incident to resolve", async || {
        let detail = server.get(&format!("/v1/incidents/{id}")).await;
        (detail["status"] == "resolved").then_some(())
    })
    .await;
    server.stop().await;
}

on_both_backends!(
    incidents_from_before_project_incidents_survive_the_upgrade,
    one_project_incident_is_open_per_cause_whatever_races,
    refused_deliveries_open_one_project_incident_that_resolves_when_one_is_accepted,
    silence_after_a_steady_stream_opens_within_its_bound_and_resolves_when_deliveries_resume,
);
