//! The example billing app (`examples/billing_app`) and Assay together: a
//! signed event goes to both, the app reconciles and reports through the
//! SDK, Assay probes the app, and the run succeeds; with the app's
//! reconciliation broken on purpose, the incident fires. Then the SDK
//! against an Assay that is down for a while.

#[path = "../../../examples/billing_app/app.rs"]
#[allow(dead_code)]
mod app;

use std::time::Duration;

use assay_client::{Client, Error, OpenRun, Stage};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{
    API_KEY, Backend, Peer, SECRET, TestServer, free_port, now, on_both_backends, sign,
    subscription_created, wait_for,
};

/// Sends one signed event to the app and to Assay, as Stripe sends it to
/// both endpoints.
async fn stripe_sends(event: &Value, app: &Peer, assay: &TestServer) {
    let body = event.to_string();
    let response = assay
        .client
        .post(format!("{}/stripe/webhook", app.base()))
        .header("stripe-signature", sign(&body, SECRET, now()))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, _) = assay.deliver(event).await;
    assert_eq!(status, StatusCode::OK);
}

/// Assay probing the app: the app's port is known only once it is up, so
/// the probe URL names a port reserved first.
async fn assay_probing(backend: Backend, app_port: u16) -> Option<TestServer> {
    TestServer::start(
        backend,
        &[
            (
                "ASSAY_PROBE_URL",
                format!("http://127.0.0.1:{app_port}/internal/access/{{{{customer_id}}}}"),
            ),
            ("ASSAY_PROBE_INTERVAL", "200ms".to_owned()),
            ("ASSAY_DEADLINE_RECONCILED", "2s".to_owned()),
            ("ASSAY_DEADLINE_ACCESS_ASSERTED", "3s".to_owned()),
        ],
    )
    .await
}

async fn the_example_app_and_assay_prove_access_together(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let Some(assay) = assay_probing(backend, port).await else {
        return;
    };
    let app = start_app_on(&assay, false, dir.path(), port).await;
    stripe_sends(
        &subscription_created("evt_app_ok", "cus_app_ok", "sub_app_ok", "price_pro"),
        &app,
        &assay,
    )
    .await;
    let run = wait_for("the run to succeed", async || {
        let run = assay.get("/v1/runs/evt_app_ok").await;
        (run["status"] == "succeeded").then_some(run)
    })
    .await;
    assert_eq!(run["observed_plan"], "pro");
    assert_eq!(run["deploy_sha"], "sha-example-1");
    let sources: Vec<&str> = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source"].as_str().unwrap())
        .collect();
    assert!(sources.contains(&"sdk"), "the app reported: {sources:?}");
    assert!(sources.contains(&"stripe"), "Stripe delivered: {sources:?}");
    // Whichever confirmed access first (the app's report or Assay's probe
    // of the app), every probe that ran saw the plan paid for.
    for probe in run["probes"].as_array().unwrap() {
        assert_eq!(probe["observed_plan"], "pro", "{probe}");
    }
    assert_eq!(assay.count("incidents").await, 0);
    assay.stop().await;
}

async fn a_broken_reconciliation_in_the_example_app_fires_the_incident(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let Some(assay) = assay_probing(backend, port).await else {
        return;
    };
    let app = start_app_on(&assay, true, dir.path(), port).await;
    stripe_sends(
        &subscription_created("evt_app_bad", "cus_app_bad", "sub_app_bad", "price_pro"),
        &app,
        &assay,
    )
    .await;
    let incidents = assay.wait_for_incidents(1).await;
    let incident = &incidents[0];
    assert_eq!(
        incident["title"],
        "Customer access did not change after Stripe event"
    );
    assert_eq!(incident["evidence"]["event_id"], "evt_app_bad");
    assert_eq!(incident["evidence"]["expected_plan"], "pro");
    // The probe saw what the customer has: nothing.
    assert_eq!(incident["evidence"]["observed_plan"], "none");
    assert_eq!(incident["evidence"]["deploy_sha"], "sha-example-1");
    drop(app);
    assay.stop().await;
}

/// The example app on `port`, with a fresh SQLite file, reporting to
/// `assay`; `broken` leaves every subscription row alone.
async fn start_app_on(assay: &TestServer, broken: bool, dir: &std::path::Path, port: u16) -> Peer {
    let settings = app::Settings {
        stripe_webhook_secret: SECRET.to_owned(),
        plans: [("price_pro".to_owned(), "pro".to_owned())].into(),
        assay_url: assay.base.clone(),
        assay_api_key: API_KEY.to_owned(),
        deploy_sha: "sha-example-1".to_owned(),
        break_reconciliation: broken,
    };
    let url = format!("sqlite://{}", dir.join("billing.db").display());
    let router = app::router(settings, &url).await.unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    Peer::serve_on(listener, router)
}

on_both_backends!(
    the_example_app_and_assay_prove_access_together,
    a_broken_reconciliation_in_the_example_app_fires_the_incident,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_retries_and_queues_while_assay_is_down() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = Client::builder(&base, API_KEY)
        .deploy_sha("sha-sdk")
        .retries(2, Duration::from_millis(50), Duration::from_millis(100))
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();

    // Down: a direct call gives up after its attempts, quickly.
    let started = std::time::Instant::now();
    let err = client
        .open_run(&OpenRun::new("evt_sdk_0", "invoice.paid", "cus_sdk"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unavailable { attempts: 2, .. }),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // Fire and forget: queued in order while Assay is down, never blocking;
    // past the bound, reports are dropped and counted.
    let reporter = client.background(3, Duration::from_secs(60));
    let mut open = OpenRun::new("evt_sdk_1", "invoice.paid", "cus_sdk");
    open.expected_plan = Some("pro".into());
    let queued = std::time::Instant::now();
    reporter.open_run(open).unwrap();
    reporter
        .report(
            "evt_sdk_1",
            Stage::Reconciled {
                expected_plan: None,
            },
        )
        .unwrap();
    reporter
        .report(
            "evt_sdk_1",
            Stage::AccessAsserted {
                observed_plan: "pro".into(),
                deploy_sha: None,
            },
        )
        .unwrap();
    let mut dropped = 0;
    for _ in 0..5 {
        if reporter
            .report(
                "evt_sdk_1",
                Stage::Reconciled {
                    expected_plan: None,
                },
            )
            .is_err()
        {
            dropped += 1;
        }
    }
    assert!(
        queued.elapsed() < Duration::from_millis(100),
        "never blocks"
    );
    assert!(dropped >= 4, "the bound holds: {dropped} dropped");
    assert_eq!(reporter.counts().1, dropped);

    // Assay comes up on that port: the queued reports arrive, in order.
    let Some(assay) =
        TestServer::start_on_port(Backend::Sqlite, port, crate::support::NO_SETTINGS).await
    else {
        return;
    };
    assert_eq!(
        reporter.flush(Duration::from_secs(20)).await,
        0,
        "every queued report settles"
    );
    let run = wait_for("the queued reports to arrive", async || {
        let (status, run) = assay
            .api(reqwest::Method::GET, "/v1/runs/evt_sdk_1", None)
            .await;
        (status == StatusCode::OK && run["status"] == "succeeded").then_some(run)
    })
    .await;
    assert_eq!(run["deploy_sha"], "sha-sdk");
    assert_eq!(run["observed_plan"], "pro");

    // A refusal is not retried: it is an error at once.
    let err = client
        .report(
            "evt_unknown",
            Stage::Reconciled {
                expected_plan: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Refused { status: 404, code, .. } if code == "not_found"),
        "{err}"
    );
    let traced = client
        .traced("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .get_run("evt_sdk_1")
        .await
        .unwrap();
    assert_eq!(traced.event_id, "evt_sdk_1");
    assay.stop().await;
}
