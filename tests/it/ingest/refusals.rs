//! A bad Stripe delivery gets a clear 4xx with the contract's error body
//! and stores nothing; a project without a secret answers 503 naming the
//! setting.
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Backend, NO_SETTINGS, SECRET, TestServer, assert_error, now, on_both_backends, sign,
    subscription_created,
};

async fn bad_stripe_deliveries_are_refused_and_store_nothing(backend: Backend) {
    let Some(server) = TestServer::start(backend, NO_SETTINGS).await else {
        return;
    };
    let event = subscription_created("evt_bad", "cus_1", "sub_1", "price_pro");
    let body = event.to_string();
    let t = now();
    let before = server.counts().await;

    let cases: Vec<(&str, (StatusCode, Value), StatusCode, &str)> = vec![
        (
            "wrong secret",
            server
                .deliver_raw("default", body.clone(), Some(sign(&body, "whsec_wrong", t)))
                .await,
            StatusCode::BAD_REQUEST,
            "signature_mismatch",
        ),
        (
            "tampered body",
            server
                .deliver_raw(
                    "default",
                    body.replace("cus_1", "cus_2"),
                    Some(sign(&body, SECRET, t)),
                )
                .await,
            StatusCode::BAD_REQUEST,
            "signature_mismatch",
        ),
        (
            "timestamp older than 300 s",
            server
                .deliver_raw("default", body.clone(), Some(sign(&body, SECRET, t - 301)))
                .await,
            StatusCode::BAD_REQUEST,
            "stale_signature",
        ),
        (
            "timestamp in the future",
            server
                .deliver_raw("default", body.clone(), Some(sign(&body, SECRET, t + 600)))
                .await,
            StatusCode::BAD_REQUEST,
            "stale_signature",
        ),
        (
            "missing header",
            server.deliver_raw("default", body.clone(), None).await,
            StatusCode::BAD_REQUEST,
            "invalid_signature_header",
        ),
        (
            "malformed header",
            server
                .deliver_raw("default", body.clone(), Some("t=yesterday,v1=zz".into()))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_signature_header",
        ),
        (
            "only a v0 signature",
            server
                .deliver_raw("default", body.clone(), Some(format!("t={t},v0=abcd")))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_signature_header",
        ),
        (
            "non-JSON body, correctly signed",
            server
                .deliver_raw("default", "not json", Some(sign("not json", SECRET, t)))
                .await,
            StatusCode::BAD_REQUEST,
            "malformed_event",
        ),
        (
            "JSON without an id, correctly signed",
            server
                .deliver_raw(
                    "default",
                    r#"{"type":"invoice.paid","data":{"object":{}}}"#,
                    Some(sign(
                        r#"{"type":"invoice.paid","data":{"object":{}}}"#,
                        SECRET,
                        t,
                    )),
                )
                .await,
            StatusCode::BAD_REQUEST,
            "malformed_event",
        ),
        (
            "unknown project",
            server
                .deliver_raw("nope", body.clone(), Some(sign(&body, SECRET, t)))
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "another project's secret",
            server
                .deliver_raw("default", body.clone(), Some(sign(&body, "whsec_other", t)))
                .await,
            StatusCode::BAD_REQUEST,
            "signature_mismatch",
        ),
    ];
    for (case, got, status, code) in &cases {
        assert_error(case, got, *status, code);
    }

    // A NUL inside the event, correctly signed.
    let mut nul = event.clone();
    nul["data"]["object"]["customer"] = json!("cus_\u{0}1");
    let nul = nul.to_string();
    let got = server
        .deliver_raw("default", nul.clone(), Some(sign(&nul, SECRET, t)))
        .await;
    assert_error(
        "NUL in the event",
        &got,
        StatusCode::BAD_REQUEST,
        "malformed_event",
    );

    // Ids no Stripe id comes near, random so that they do not compress:
    // PostgreSQL could not index them (this was a 500 there).
    let long: String = (0..320)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    for field in ["customer", "subscription"] {
        let mut event = event.clone();
        event["data"]["object"][field] = json!(long);
        let body = event.to_string();
        let got = server
            .deliver_raw("default", body.clone(), Some(sign(&body, SECRET, t)))
            .await;
        assert_error(
            &format!("a {field} id of 10,000 characters"),
            &got,
            StatusCode::BAD_REQUEST,
            "malformed_event",
        );
    }

    // Over the limit, correctly signed: refused before it is read whole.
    let mut big = event.clone();
    big["data"]["object"]["metadata"] = json!({ "padding": "x".repeat(600 * 1024) });
    let big = big.to_string();
    let got = server
        .deliver_raw("default", big.clone(), Some(sign(&big, SECRET, t)))
        .await;
    assert_error(
        "body over the limit",
        &got,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );

    assert_eq!(
        server.counts().await,
        before,
        "a refused delivery changed the database"
    );
    server.stop().await;
}

async fn a_project_without_a_webhook_secret_answers_503_naming_the_setting(backend: Backend) {
    let Some(server) = TestServer::start(backend, &[("ASSAY_STRIPE_WEBHOOK_SECRET", "")]).await
    else {
        return;
    };
    let event = subscription_created("evt_nosecret", "cus_1", "sub_1", "price_pro");
    let body = event.to_string();
    let got = server
        .deliver_raw("default", body.clone(), Some(sign(&body, SECRET, now())))
        .await;
    assert_error(
        "no secret",
        &got,
        StatusCode::SERVICE_UNAVAILABLE,
        "webhook_secret_missing",
    );
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ASSAY_STRIPE_WEBHOOK_SECRET")
    );
    assert_eq!(server.count("stripe_events").await, 0);
    server.stop().await;
}

on_both_backends!(
    bad_stripe_deliveries_are_refused_and_store_nothing,
    a_project_without_a_webhook_secret_answers_503_naming_the_setting,
);
