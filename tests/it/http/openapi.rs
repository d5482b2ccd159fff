//! `GET /openapi.json`: a valid OpenAPI document (checked by the
//! `openapi-spec-validator` package), whose every operation the router
//! serves, and which lists exactly the endpoints the README's HTTP table
//! names.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use crate::support::{
    API_KEY, Backend, NO_SETTINGS, TestServer, python_module_available, run_with_input,
};

/// `METHOD /path` of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    ops
}

/// `METHOD /path` of every row of the README's HTTP table (query strings
/// left out).
fn readme_operations() -> BTreeSet<String> {
    let readme = include_str!("../../../README.md");
    let table = &readme[readme.find("## HTTP API").unwrap()..];
    table
        .lines()
        .take_while(|l| !l.starts_with("A run carries"))
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| {
            l[..l.find('`').unwrap()]
                .split('?')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_and_covers_every_route() {
    let Some(server) = TestServer::start(Backend::Sqlite, NO_SETTINGS).await else {
        return;
    };
    let response = server
        .client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc, serde_json::to_value(assay::api::openapi()).unwrap());

    if python_module_available("openapi_spec_validator") {
        let out = run_with_input(
            Command::new("python3").args([
                "-c",
                "import sys, json; from openapi_spec_validator import validate; validate(json.load(sys.stdin)); print('valid')",
            ]),
            &doc.to_string(),
        );
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The README's table and the document list the same endpoints.
    let mut documented = operations(&doc);
    documented.insert("GET /openapi.json".to_owned());
    assert_eq!(documented, readme_operations());

    // Every documented operation reaches a handler: never the router's
    // "no such endpoint" or "method not allowed".
    for op in operations(&doc) {
        let (method, path) = op.split_once(' ').unwrap();
        let path = path
            .replace("{project}", "default")
            .replace("{stage}", "reconciled")
            .replace("{run}", "evt_missing")
            .replace("{id}", "00000000-0000-7000-8000-000000000000");
        let response = server
            .client
            .request(method.parse().unwrap(), server.url(&path))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_ne!(status, 405, "{op}: {body}");
        assert!(!body.contains("no such endpoint"), "{op}: {body}");
    }
    server.stop().await;
}
