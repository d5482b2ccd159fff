//! Traces over OTLP: `assay serve` with `OTEL_EXPORTER_OTLP_ENDPOINT` set
//! exports its spans to a real OTLP/HTTP receiver on loopback (JSON, per
//! `OTEL_EXPORTER_OTLP_PROTOCOL`), and an SDK call's W3C `traceparent`
//! makes Assay's spans part of the app's trace.

use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use assay_client::{Client, OpenRun, Stage};
use serde_json::Value;

use crate::support::{
    API_KEY, Peer, free_port, http_client, post_signed, serve_command, subscription_created,
    wait_for, wait_until_ready,
};

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every span name and trace id the receiver got.
fn spans(bodies: &[Value]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for body in bodies {
        for resource in body["resourceSpans"].as_array().into_iter().flatten() {
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    out.push((
                        span["name"].as_str().unwrap_or_default().to_owned(),
                        span["traceId"].as_str().unwrap_or_default().to_lowercase(),
                    ));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_in_the_callers_trace() {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = got.clone();
    let receiver = Peer::serve(axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                if let Ok(json) = serde_json::from_slice::<Value>(&body) {
                    kept.lock().unwrap().push(json);
                }
                "{}"
            }
        }),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _serve = Serve(
        serve_command(
            port,
            &format!("sqlite://{}", dir.path().join("assay.db").display()),
        )
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.base())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        // Export every 100 ms instead of every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .spawn()
        .unwrap(),
    );
    let http = http_client();
    wait_until_ready(&base).await;

    let event = subscription_created("evt_otel", "cus_otel", "sub_otel", "price_pro").to_string();
    let delivered = post_signed(&http, &base, &event).await.unwrap();
    assert!(delivered.status().is_success());

    // The app's handler runs in trace 0af7…; its SDK call carries it.
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let client = Client::builder(&base, API_KEY)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .traced(&format!("00-{trace}-b7ad6b7169203331-01"));
    client
        .open_run(&OpenRun::new(
            "evt_otel",
            "customer.subscription.created",
            "cus_otel",
        ))
        .await
        .unwrap();
    client
        .report(
            "evt_otel",
            Stage::Reconciled {
                expected_plan: None,
            },
        )
        .await
        .unwrap();

    let seen = wait_for("the spans at the OTLP receiver", async || {
        let seen = spans(&got.lock().unwrap());
        let ingest = seen.iter().any(|(name, _)| name == "ingest");
        let in_trace = seen
            .iter()
            .any(|(name, id)| name == "stage_report" && id == trace);
        (ingest && in_trace).then_some(seen)
    })
    .await;
    assert!(
        seen.iter()
            .any(|(name, id)| name == "request" && id == trace),
        "the request span joins the caller's trace: {seen:?}"
    );
    // The run's timeline names the caller's trace too.
    let run = client.get_run("evt_otel").await.unwrap();
    let timeline = run.other["timeline"].as_array().unwrap();
    assert!(
        timeline.iter().any(|e| e["evidence"]["trace_id"] == trace),
        "{timeline:?}"
    );
}
