//! `GET /metrics`: checked with Prometheus's own parser (`promtool check
//! metrics`), and for the values a run's life should leave: opened,
//! succeeded, failed, superseded, stage latencies, open incidents, alert
//! deliveries; a drill's run counted nowhere.

use std::process::Command;

use reqwest::Method;
use serde_json::json;

use crate::alerts::Receiver;
use crate::support::{
    Backend, TestServer, on_both_backends, peer_available, run_with_input, subscription_created,
    wait_for,
};

/// The value of sample `name` with exactly `labels` in the exposition, if
/// it has one (labels in any order).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (sample_name, rest) = series.split_once('{').unwrap_or((series, "}"));
        let mut got: Vec<String> = rest
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        got.sort();
        (sample_name == name && got == wanted).then(|| value.parse().ok())?
    })
}

fn promtool_available() -> bool {
    peer_available(
        "promtool",
        Command::new("promtool").arg("--version").output().is_ok(),
        "promtool",
        "apt-get install prometheus",
    )
}

async fn metrics_follow_runs_and_pass_promtool(backend: Backend) {
    let receiver = Receiver::start().await;
    let settings = [
        ("ASSAY_SLACK_WEBHOOK_URL", receiver.url("slack")),
        ("ASSAY_ALERT_POLL_INTERVAL", "50ms".to_owned()),
        ("ASSAY_DEADLINE_RECONCILED", "1s".to_owned()),
        ("ASSAY_DEADLINE_ACCESS_ASSERTED", "2s".to_owned()),
        ("ASSAY_DRILL_DEADLINE", "1s".to_owned()),
    ];
    let Some(server) = TestServer::start(backend, &settings).await else {
        return;
    };
    // One run succeeds, one fails, one is superseded by a newer event.
    for event in [
        subscription_created("evt_m_ok", "cus_ok", "sub_ok", "price_pro"),
        subscription_created("evt_m_bad", "cus_bad", "sub_bad", "price_pro"),
    ] {
        server.deliver(&event).await;
    }
    let mut older = subscription_created("evt_m_old", "cus_x", "sub_x", "price_pro");
    older["created"] = json!(1_700_000_000);
    let newer = subscription_created("evt_m_new", "cus_x", "sub_x", "price_starter");
    server.deliver(&older).await;
    server.deliver(&newer).await;
    server.report("evt_m_ok", "reconciled", json!({})).await;
    server
        .report(
            "evt_m_ok",
            "access_asserted",
            json!({"observed_plan": "pro"}),
        )
        .await;
    server
        .report(
            "evt_m_new",
            "access_asserted",
            json!({"observed_plan": "starter"}),
        )
        .await;
    // And a drill, which must count nowhere.
    let (_, drill) = server.api(Method::POST, "/v1/drills", None).await;
    let drill_id = drill["id"].as_str().unwrap().to_owned();
    server.wait_for_incidents(1).await;
    wait_for("the drill to finish", async || {
        let d = server.get(&format!("/v1/drills/{drill_id}")).await;
        (d["status"] != "running").then_some(())
    })
    .await;
    let text = wait_for("the alert to be counted", async || {
        let text = server
            .client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        sample(
            &text,
            "assay_alert_deliveries_total",
            &[
                ("project", "default"),
                ("channel", "slack"),
                ("outcome", "sent"),
            ],
        )
        .is_some()
        .then_some(text)
    })
    .await;

    let value = |name: &str, labels: &[(&str, &str)]| {
        sample(&text, name, labels).unwrap_or_else(|| panic!("{name} {labels:?}:\n{text}"))
    };
    let billing = [("project", "default"), ("workflow", "billing")];
    assert_eq!(
        value("assay_runs_opened_total", &billing),
        4.0,
        "the drill's run is not counted"
    );
    for (status, n) in [("succeeded", 2.0), ("failed", 1.0), ("superseded", 1.0)] {
        let labels = [billing[0], billing[1], ("status", status)];
        assert_eq!(value("assay_runs_closed_total", &labels), n, "{status}");
    }
    for (stage, n) in [("reconciled", 1.0), ("access_asserted", 2.0)] {
        let labels = [billing[0], billing[1], ("stage", stage)];
        assert_eq!(
            value("assay_stage_latency_seconds_count", &labels),
            n,
            "{stage}"
        );
    }
    assert_eq!(
        value("assay_open_incidents", &[("project", "default")]),
        1.0
    );
    assert!(text.contains("assay_sweeper_lag_seconds"), "{text}");
    assert!(!text.contains("assaydrill"));

    if promtool_available() {
        let out = run_with_input(Command::new("promtool").args(["check", "metrics"]), &text);
        assert!(
            out.status.success(),
            "promtool: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    server.stop().await;
}

/// With `ASSAY_METRICS_BIND`, `/metrics` is served on its own listener,
/// which serves nothing else, and no longer beside the webhooks.
async fn metrics_may_have_a_listener_of_their_own(backend: Backend) {
    let Some(server) = TestServer::start(backend, &[("ASSAY_METRICS_BIND", "127.0.0.1:0")]).await
    else {
        return;
    };
    let metrics_base = server.metrics_base.clone().expect("a metrics listener");
    let response = server
        .client
        .get(format!("{metrics_base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert!(response.text().await.unwrap().contains("# TYPE assay_"));
    let (status, body) = server.api(Method::GET, "/metrics", None).await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let response = server
        .client
        .get(format!("{metrics_base}/v1/runs"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::NOT_FOUND);
    let (status, _) = server.api(Method::GET, "/healthz", None).await;
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "the rest stays where it was"
    );
    server.stop().await;
}

on_both_backends!(
    metrics_follow_runs_and_pass_promtool,
    metrics_may_have_a_listener_of_their_own,
);
