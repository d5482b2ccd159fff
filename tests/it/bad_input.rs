//! Every bad input gets a clear 4xx with the contract's error body, and
//! changes nothing in the database.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{
    Backend, NO_SETTINGS, OTHER_API_KEY, SECRET, TestServer, assert_error, now, on_both_backends,
    sign, subscription_created,
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

async fn bad_sdk_calls_are_refused_and_change_nothing(backend: Backend) {
    let Some(server) = TestServer::start(backend, NO_SETTINGS).await else {
        return;
    };
    server
        .deliver(&subscription_created(
            "evt_sdk",
            "cus_1",
            "sub_1",
            "price_pro",
        ))
        .await;
    let run_id = server.get("/v1/runs/evt_sdk").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = server.counts().await;
    let url = |path: &str| server.url(path);
    let client = &server.client;
    let send = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.unwrap();
        let status = response.status();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };

    assert_error(
        "missing API key",
        &send(client.get(url("/v1/runs"))).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        "wrong API key",
        &send(
            client
                .get(url("/v1/runs"))
                .bearer_auth("not-a-key-0123456789"),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        "not a bearer scheme",
        &send(client.get(url("/v1/runs")).basic_auth("user", Some("pw"))).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        "unknown stage",
        &server.report("evt_sdk", "shipped", json!({})).await,
        StatusCode::BAD_REQUEST,
        "unknown_stage",
    );
    assert_error(
        "stage set by Assay",
        &server.report("evt_sdk", "closed", json!({})).await,
        StatusCode::BAD_REQUEST,
        "stage_not_reportable",
    );
    assert_error(
        "access without a plan",
        &server
            .report("evt_sdk", "access_asserted", json!({"deploy_sha": "x"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing_observed_plan",
    );
    assert_error(
        "misspelt field",
        &server
            .report("evt_sdk", "access_asserted", json!({"observedPlan": "pro"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_error(
        "malformed JSON report",
        &send(
            client
                .post(url("/v1/runs/evt_sdk/stages/reconciled"))
                .bearer_auth(crate::support::API_KEY)
                .body("{oops"),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
    );
    assert_error(
        "unknown run",
        &server.report("evt_nobody", "reconciled", json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        "open without a customer",
        &server
            .api(
                Method::POST,
                "/v1/runs",
                Some(json!({"event_id": "evt_x", "event_type": "t"})),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_error(
        "open with an empty event id",
        &server
            .api(
                Method::POST,
                "/v1/runs",
                Some(json!({"event_id": " ", "event_type": "t", "customer_id": "c"})),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert_error(
        "open as plain text",
        &send(
            client
                .post(url("/v1/runs"))
                .bearer_auth(crate::support::API_KEY)
                .body("{}"),
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert_error(
        "open with a body over the limit",
        &server
            .api(
                Method::POST,
                "/v1/runs",
                Some(json!({"event_id": "x".repeat(70 * 1024)})),
            )
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );
    assert_error(
        "unknown status filter",
        &server.api(Method::GET, "/v1/runs?status=done", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        "unknown query parameter",
        &server.api(Method::GET, "/v1/runs?colour=red", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        "limit out of range",
        &server.api(Method::GET, "/v1/runs?limit=0", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        "forged cursor",
        &server
            .api(Method::GET, "/v1/runs?cursor=Zm9vOmJhcg", None)
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
    );
    assert_error(
        "incident id that is not a UUID",
        &server.api(Method::GET, "/v1/incidents/abc", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // NUL cannot be stored by PostgreSQL: it must be refused before it gets
    // there, the same on both backends.
    assert_error(
        "NUL in a run id",
        &server.api(Method::GET, "/v1/runs/evt%00x", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        "NUL in a run id of a stage report",
        &server.report("evt%00x", "reconciled", json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        "NUL in a customer filter",
        &server
            .api(Method::GET, "/v1/runs?customer_id=a%00b", None)
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        "NUL in a reported plan",
        &server
            .report(
                "evt_sdk",
                "access_asserted",
                json!({"observed_plan": "pro\u{0}"}),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );

    // Another project's key sees none of this project's runs: 404, not 403.
    for path in [format!("/v1/runs/{run_id}"), "/v1/runs/evt_sdk".to_owned()] {
        assert_error(
            "another project's run",
            &server.api_as(OTHER_API_KEY, Method::GET, &path, None).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
        assert_error(
            "a stage on another project's run",
            &server
                .api_as(
                    OTHER_API_KEY,
                    Method::POST,
                    &format!("{path}/stages/reconciled"),
                    Some(json!({})),
                )
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
    let other_list = server
        .api_as(OTHER_API_KEY, Method::GET, "/v1/runs", None)
        .await;
    assert_eq!(other_list.1["data"], json!([]));

    assert_eq!(
        server.counts().await,
        before,
        "a refused call changed the database"
    );
    server.stop().await;
}

async fn unknown_endpoints_and_methods_answer_in_the_contract_shape(backend: Backend) {
    let Some(server) = TestServer::start(backend, NO_SETTINGS).await else {
        return;
    };
    let got = server.api(Method::GET, "/v2/nothing", None).await;
    assert_error("unknown path", &got, StatusCode::NOT_FOUND, "not_found");
    let got = server.api(Method::DELETE, "/v1/runs", None).await;
    assert_error(
        "wrong method",
        &got,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    // A path segment that is not UTF-8 names nothing: 404 in the contract's
    // shape (it was a plain-text 400).
    for (method, path) in [
        (Method::POST, "/hooks/stripe/%FF"),
        (Method::GET, "/v1/runs/%FF"),
        (Method::POST, "/v1/runs/%FF/stages/reconciled"),
        (Method::POST, "/v1/runs/evt_1/stages/%C0%AF"),
        (Method::GET, "/v1/incidents/%FF"),
        (Method::POST, "/v1/incidents/%FF/acknowledge"),
        (Method::POST, "/v1/incidents/%FF/resolve"),
        (Method::GET, "/v1/drills/%FF"),
    ] {
        let got = server.api(method.clone(), path, None).await;
        assert_error(
            &format!("{method} {path}"),
            &got,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
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
    bad_sdk_calls_are_refused_and_change_nothing,
    unknown_endpoints_and_methods_answer_in_the_contract_shape,
    a_project_without_a_webhook_secret_answers_503_naming_the_setting,
);
