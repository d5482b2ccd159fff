//! Over a real socket, an unknown endpoint or method answers in the
//! contract's error shape.
use reqwest::{Method, StatusCode};

use crate::support::{Backend, NO_SETTINGS, TestServer, assert_error, on_both_backends};

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

on_both_backends!(unknown_endpoints_and_methods_answer_in_the_contract_shape);
