//! The external shapes, pinned: for one fixed scenario (the README's worked
//! example, then its fix), `GET /v1/runs/{run}`, `GET /v1/incidents/{id}`,
//! the Slack messages and the webhook bodies must equal the JSON kept in
//! `tests/fixtures/shapes/`, on both backends. Ids, times and ports are
//! replaced by placeholders before the comparison; everything else (every
//! key, every value, every order) must match.
//!
//! The fixtures hold what the API and the alerts said before the store,
//! config and domain core were rebuilt; a change that alters them changes
//! the contract. `ASSAY_UPDATE_SHAPES=1 cargo test shapes` rewrites them,
//! for a change that means to.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::alerts::Receiver;
use crate::support::{Backend, TestServer, on_both_backends, subscription_created, wait_for};

const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Replaces what differs between runs of one scenario: UUIDs, RFC 3339
/// times (alone or inside a sentence), loopback addresses with their port,
/// and durations measured in milliseconds.
fn normalise(value: &mut Value) {
    match value {
        Value::String(text) => *text = placeholders(text),
        Value::Array(items) => items.iter_mut().for_each(normalise),
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "duration_ms" && value.is_number() {
                    *value = json!(0);
                } else {
                    normalise(value);
                }
            }
        }
        _ => {}
    }
}

fn placeholders(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(len) = uuid_at(rest) {
            out.push_str("<uuid>");
            rest = &rest[len..];
        } else if let Some(len) = time_at(rest) {
            out.push_str("<time>");
            rest = &rest[len..];
        } else if let Some(len) = rest
            .strip_prefix("127.0.0.1:")
            .map(|after| 10 + after.bytes().take_while(u8::is_ascii_digit).count())
        {
            out.push_str("<addr>");
            rest = &rest[len..];
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The length of a hyphenated UUID at the start of `text`.
fn uuid_at(text: &str) -> Option<usize> {
    let bytes = text.as_bytes().get(..36)?;
    let ok = bytes.iter().enumerate().all(|(i, b)| match i {
        8 | 13 | 18 | 23 => *b == b'-',
        _ => b.is_ascii_hexdigit(),
    });
    ok.then_some(36)
}

/// The length of a time as Assay writes it (`2026-11-23T10:51:20.908Z`) at
/// the start of `text`.
fn time_at(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|b| b.iter().all(u8::is_ascii_digit))
    };
    let is = |i: usize, c: u8| bytes.get(i) == Some(&c);
    if !(digits(0..4) && is(4, b'-') && digits(5..7) && is(7, b'-') && digits(8..10))
        || !(is(10, b'T') && digits(11..13) && is(13, b':') && digits(14..16) && is(16, b':'))
        || !digits(17..19)
    {
        return None;
    }
    // Only the one format Assay writes (milliseconds, `Z`): a time written
    // any other way is left in place and fails the comparison.
    (is(19, b'.') && digits(20..23) && is(23, b'Z')).then_some(24)
}

/// Compares `got` with the fixture `name`, or writes it when
/// `ASSAY_UPDATE_SHAPES` is set.
fn assert_shape(name: &str, mut got: Value) {
    normalise(&mut got);
    let path = format!(
        "{}/tests/fixtures/shapes/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let pretty = serde_json::to_string_pretty(&got).unwrap() + "\n";
    if std::env::var_os("ASSAY_UPDATE_SHAPES").is_some() {
        std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
        std::fs::write(&path, pretty).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}; ASSAY_UPDATE_SHAPES=1 writes it"));
    let want: Value = serde_json::from_str(&want).unwrap();
    assert!(
        got == want,
        "{name} changed shape.\nwant: {}\n got: {pretty}",
        serde_json::to_string_pretty(&want).unwrap()
    );
}

async fn the_api_and_alerts_keep_their_shapes(backend: Backend) {
    let receiver = Receiver::start().await;
    let settings = [
        ("ASSAY_SLACK_WEBHOOK_URL", receiver.url("slack")),
        ("ASSAY_ALERT_WEBHOOK_URL", receiver.url("hook")),
        ("ASSAY_ALERT_WEBHOOK_SECRET", HOOK_SECRET.to_owned()),
        ("ASSAY_PUBLIC_URL", "https://assay.example.test".to_owned()),
        ("ASSAY_ALERT_POLL_INTERVAL", "50ms".to_owned()),
        ("ASSAY_DEADLINE_RECONCILED", "1s".to_owned()),
        ("ASSAY_DEADLINE_ACCESS_ASSERTED", "2s".to_owned()),
    ];
    let Some(server) = TestServer::start(backend, &settings).await else {
        return;
    };
    let event = subscription_created("evt_shape", "cus_shape", "sub_shape", "price_pro");
    let (status, body) = server.deliver(&event).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .report(
            "evt_shape",
            "reconciled",
            json!({"deploy_sha": "9f2c1ab", "evidence": {"job": "grant-42"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .report(
            "evt_shape",
            "access_asserted",
            json!({"observed_plan": "starter"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let id = server.wait_for_incidents(1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for("the opened alert on both channels", async || {
        (receiver.accepted("slack").len() == 1 && receiver.accepted("hook").len() == 1)
            .then_some(())
    })
    .await;
    assert_shape("run_failed", server.get("/v1/runs/evt_shape").await);
    assert_shape("slack_opened", receiver.accepted("slack").remove(0));
    assert_shape("webhook_opened", receiver.accepted("hook").remove(0));

    // The app fixes the grant: the incident resolves itself and says so.
    let (status, body) = server
        .report(
            "evt_shape",
            "access_asserted",
            json!({"observed_plan": "pro"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let incident = wait_for("four settled deliveries", async || {
        let incident = server.get(&format!("/v1/incidents/{id}")).await;
        let deliveries = incident["deliveries"].as_array().unwrap();
        (deliveries.len() == 4 && deliveries.iter().all(|d| d["status"] == "sent"))
            .then_some(incident)
    })
    .await;
    assert_shape("incident_resolved", incident);
    assert_shape("run_resolved", server.get("/v1/runs/evt_shape").await);
    assert_shape("slack_resolved", receiver.accepted("slack").remove(1));
    assert_shape("webhook_resolved", receiver.accepted("hook").remove(1));
    server.stop().await;
}

on_both_backends!(the_api_and_alerts_keep_their_shapes);

#[test]
fn placeholders_replace_ids_times_and_ports_only() {
    assert_eq!(
        placeholders(
            "run 0192f1c3-6a4e-7b8c-9d0e-1f2a3b4c5d6e at 2026-11-23T10:51:20.908Z on http://127.0.0.1:4312/x"
        ),
        "run <uuid> at <time> on http://<addr>/x"
    );
    assert_eq!(
        placeholders("2026-11-23T10:51:20+00:00, 2026-11-23T10:51:20Z and 2026-11-23"),
        "2026-11-23T10:51:20+00:00, 2026-11-23T10:51:20Z and 2026-11-23",
        "a time in another format than Assay's stays, to fail the comparison"
    );
    assert_eq!(placeholders("evt_shape"), "evt_shape");
}
