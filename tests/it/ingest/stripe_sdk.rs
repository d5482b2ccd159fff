//! Our signature check agrees with Stripe's own code: payloads signed by the
//! official Stripe SDK are accepted (or refused when stale), and headers we
//! produce are accepted by Stripe's verifier.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;

use crate::support::{
    Backend, NO_SETTINGS, SECRET, TestServer, fixture, now, python_module_available,
};

fn script() -> String {
    format!("{}/tests/stripe_sdk.py", env!("CARGO_MANIFEST_DIR"))
}

/// Whether Stripe's Python SDK can be used.
fn stripe_sdk_available() -> bool {
    python_module_available("stripe")
}

fn stripe_py(args: &[&str]) -> Result<String, String> {
    let out = Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn write_payload(dir: &Path, name: &str, payload: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, payload).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn payloads_signed_by_stripes_sdk_are_accepted() {
    if !stripe_sdk_available() {
        return;
    }
    let server = TestServer::start(Backend::Sqlite, NO_SETTINGS)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = [
        "checkout.session.completed",
        "customer.subscription.created",
        "invoice.paid",
    ];
    for (i, event_type) in events.iter().enumerate() {
        let payload = fixture(event_type, &format!("evt_sdk_{i}")).to_string();
        let path = write_payload(dir.path(), event_type, &payload);
        let header = stripe_py(&["sign", SECRET, &path]).unwrap();
        let (status, body) = server.deliver_raw("default", payload, Some(header)).await;
        assert_eq!(status, StatusCode::OK, "{event_type}: {body}");
        assert_eq!(body["event_id"], format!("evt_sdk_{i}"));
    }
    assert_eq!(server.count("stripe_events").await, events.len() as i64);

    // Stripe's SDK signing with the wrong secret, or too long ago: refused.
    let payload = fixture("invoice.paid", "evt_sdk_refused").to_string();
    let path = write_payload(dir.path(), "refused", &payload);
    let wrong = stripe_py(&["sign", "whsec_not_ours", &path]).unwrap();
    let stale = stripe_py(&["sign", SECRET, &path, &(now() - 301).to_string()]).unwrap();
    assert_eq!(
        server
            .deliver_raw("default", payload.clone(), Some(wrong))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        server.deliver_raw("default", payload, Some(stale)).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(server.count("stripe_events").await, events.len() as i64);
    server.stop().await;
}

#[test]
fn headers_we_sign_pass_stripes_verifier() {
    if !stripe_sdk_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let payload = fixture("customer.subscription.resumed", "evt_ours").to_string();
    let path = write_payload(dir.path(), "ours", &payload);
    let header = assay::stripe::signature::sign(payload.as_bytes(), SECRET, now());
    assert_eq!(
        stripe_py(&["verify", SECRET, &path, &header]),
        Ok("ok".into())
    );
    let verdict = stripe_py(&["verify", "whsec_other", &path, &header]);
    assert!(
        verdict.is_err(),
        "Stripe's verifier should refuse another secret"
    );
}
