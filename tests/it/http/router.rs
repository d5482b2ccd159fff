//! The HTTP contract's status codes and error shapes, checked in process:
//! the whole router (`server::app`) on a real SQLite store, driven with
//! `oneshot`, no socket. Each refusal answers its status with
//! `{"error": {"code", "message"}}` and nothing else.

use std::collections::HashMap;
use std::sync::Arc;

use assay::config::{Config, Sources};
use assay::state::AppState;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::{API_KEY, SECRET, now, sign};

/// The router over a fresh SQLite store: project `default` with the test
/// secret and key, project `bare` with neither.
async fn app() -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("assay.toml");
    std::fs::write(&file, "[projects.default]\n[projects.bare]\n").unwrap();
    let env: HashMap<String, String> = [
        (
            "ASSAY_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("assay.db").display()),
        ),
        ("ASSAY_STRIPE_WEBHOOK_SECRET", SECRET.to_owned()),
        ("ASSAY_API_KEY", API_KEY.to_owned()),
        ("ASSAY_SWEEP_SCHEDULE", "off".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = Config::load(Sources {
        file: Some(&file),
        env: &env,
    })
    .unwrap();
    let metrics = Arc::new(assay::metrics::Metrics::new());
    let store = assay::store::connect_with(&config.database, config.outbox(), metrics.clone())
        .await
        .unwrap();
    let app = assay::server::app(
        AppState {
            config: Arc::new(config),
            store,
            metrics,
            tally: Default::default(),
        },
        true,
    );
    (app, dir)
}

/// A request's answer: status, headers and the body as JSON (or text).
async fn send(
    app: &axum::Router,
    request: Request<Body>,
) -> (StatusCode, header::HeaderMap, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (parts.status, parts.headers, body)
}

fn api(method: &str, path: &str, body: Option<&str>) -> Request<Body> {
    let builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {API_KEY}"));
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned())),
        None => builder.body(Body::empty()),
    }
    .unwrap()
}

/// The contract's error body with `code`, and nothing else in it.
fn assert_refused(
    case: &str,
    got: (StatusCode, header::HeaderMap, Value),
    status: StatusCode,
    code: &str,
) {
    let (got_status, _, body) = got;
    assert_eq!(got_status, status, "{case}: {body}");
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{case}: {body}"));
    assert_eq!(error.len(), 2, "{case}: only code and message: {body}");
    assert_eq!(error["code"], code, "{case}: {body}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| !m.trim().is_empty()),
        "{case}: the message says nothing: {body}"
    );
    assert_eq!(body.as_object().map(|b| b.len()), Some(1), "{case}: {body}");
}

#[tokio::test]
async fn health_answers_without_auth() {
    let (app, _dir) = app().await;
    let (status, _, body) = send(&app, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, _, body) = send(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ready"})));
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_contract_shape() {
    let (app, _dir) = app().await;
    let got = send(&app, api("GET", "/v2/nothing", None)).await;
    assert_refused("unknown path", got, StatusCode::NOT_FOUND, "not_found");
    let got = send(&app, api("DELETE", "/v1/runs", None)).await;
    assert_refused(
        "wrong method",
        got,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn sdk_calls_need_the_projects_key() {
    let (app, _dir) = app().await;
    let no_key = Request::get("/v1/runs").body(Body::empty()).unwrap();
    let (status, headers, body) = send(&app, no_key).await;
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_refused(
        "no key",
        (status, headers, body),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let wrong = Request::get("/v1/runs")
        .header(header::AUTHORIZATION, "Bearer not-a-key-0123456789")
        .body(Body::empty())
        .unwrap();
    let got = send(&app, wrong).await;
    assert_refused("wrong key", got, StatusCode::UNAUTHORIZED, "unauthorized");
    let not_bearer = Request::get("/v1/runs")
        .header(header::AUTHORIZATION, format!("Basic {API_KEY}"))
        .body(Body::empty())
        .unwrap();
    let got = send(&app, not_bearer).await;
    assert_refused("not bearer", got, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn bad_sdk_bodies_and_queries_get_their_4xx() {
    let (app, _dir) = app().await;
    let cases = [
        (
            "malformed JSON",
            api("POST", "/v1/runs", Some("{")),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "a missing field",
            api("POST", "/v1/runs", Some(r#"{"event_id": "evt_1"}"#)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "an unknown field",
            api(
                "POST",
                "/v1/runs",
                Some(
                    r#"{"event_id": "evt_1", "event_type": "t", "customer_id": "c", "plan": "x"}"#,
                ),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "a control character in an id",
            api(
                "POST",
                "/v1/runs",
                Some(r#"{"event_id": "evt_\u0007", "event_type": "t", "customer_id": "c"}"#),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            "a drill's event id",
            api(
                "POST",
                "/v1/runs",
                Some(r#"{"event_id": "evt_assaydrill_1", "event_type": "t", "customer_id": "c"}"#),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reserved_event_id",
        ),
        (
            "an unknown stage",
            api("POST", "/v1/runs/evt_1/stages/shipped", None),
            StatusCode::BAD_REQUEST,
            "unknown_stage",
        ),
        (
            "an unknown run",
            api("GET", "/v1/runs/evt_missing", None),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "a limit of 0",
            api("GET", "/v1/runs?limit=0", None),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "an unknown status",
            api("GET", "/v1/runs?status=done", None),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "a made-up cursor",
            api("GET", "/v1/runs?cursor=!!", None),
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        (
            "an unknown query key",
            api("GET", "/v1/incidents?colour=red", None),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "an incident id that is no UUID",
            api("GET", "/v1/incidents/nope", None),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "an unknown incident",
            api(
                "POST",
                &format!("/v1/incidents/{}/acknowledge", uuid::Uuid::now_v7()),
                None,
            ),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "an unknown workflow",
            api("POST", "/v1/drills", Some(r#"{"workflow": "shipping"}"#)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_workflow",
        ),
        (
            "a body over the limit",
            api(
                "POST",
                "/v1/runs",
                Some(&format!(r#"{{"event_id": "{}"}}"#, "x".repeat(100 * 1024))),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (case, request, status, code) in cases {
        assert_refused(case, send(&app, request).await, status, code);
    }
    let no_content_type = Request::post("/v1/runs")
        .header(header::AUTHORIZATION, format!("Bearer {API_KEY}"))
        .body(Body::from(
            r#"{"event_id": "evt_1", "event_type": "t", "customer_id": "c"}"#,
        ))
        .unwrap();
    let got = send(&app, no_content_type).await;
    assert_refused(
        "no content type",
        got,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
}

fn delivery(project: &str, body: &str, signature: Option<String>) -> Request<Body> {
    let mut builder = Request::post(format!("/hooks/stripe/{project}"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(signature) = signature {
        builder = builder.header("stripe-signature", signature);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn bad_stripe_deliveries_get_their_4xx_and_a_good_one_a_200() {
    let (app, _dir) = app().await;
    let body = r#"{"id":"evt_router_1","object":"event","type":"charge.succeeded","created":1767225600,"data":{"object":{}}}"#;
    let cases = [
        (
            "an unknown project",
            delivery("nobody", body, Some(sign(body, SECRET, now()))),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "no signature",
            delivery("default", body, None),
            StatusCode::BAD_REQUEST,
            "invalid_signature_header",
        ),
        (
            "another secret's signature",
            delivery("default", body, Some(sign(body, "whsec_other", now()))),
            StatusCode::BAD_REQUEST,
            "signature_mismatch",
        ),
        (
            "a stale signature",
            delivery("default", body, Some(sign(body, SECRET, now() - 600))),
            StatusCode::BAD_REQUEST,
            "stale_signature",
        ),
        (
            "a signed body that is no event",
            delivery("default", "[]", Some(sign("[]", SECRET, now()))),
            StatusCode::BAD_REQUEST,
            "malformed_event",
        ),
        (
            "a project without a secret",
            delivery("bare", body, Some(sign(body, SECRET, now()))),
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook_secret_missing",
        ),
    ];
    for (case, request, status, code) in cases {
        assert_refused(case, send(&app, request).await, status, code);
    }
    let (status, _, answer) = send(
        &app,
        delivery("default", body, Some(sign(body, SECRET, now()))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["received"], true);
    assert_eq!(answer["duplicate"], false);
    let (status, _, again) = send(
        &app,
        delivery("default", body, Some(sign(body, SECRET, now()))),
    )
    .await;
    assert_eq!(
        (status, &again["duplicate"]),
        (StatusCode::OK, &json!(true))
    );
}
