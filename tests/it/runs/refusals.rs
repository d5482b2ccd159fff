//! A bad SDK call gets a clear 4xx with the contract's error body and
//! changes nothing in the database.
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{
    Backend, NO_SETTINGS, OTHER_API_KEY, TestServer, assert_error, on_both_backends,
    subscription_created,
};

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

on_both_backends!(bad_sdk_calls_are_refused_and_change_nothing);
