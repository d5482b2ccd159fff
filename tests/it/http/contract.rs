//! `docs/CONTRACT.md`, the external contract, stays true: every endpoint
//! its HTTP table names is in the OpenAPI document the router serves (the
//! OpenAPI test shows each reaches a handler), every variable its
//! configuration table names is one Assay reads, and the names it reserves
//! for what comes next are not read yet.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::assay_command;

const CONTRACT: &str = include_str!("../../../docs/CONTRACT.md");

/// The contract's text from the heading `from` to the next `## ` heading.
fn section(from: &str) -> &'static str {
    let start = CONTRACT.find(from).unwrap_or_else(|| panic!("no {from}"));
    let rest = &CONTRACT[start + from.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// Every `` `NAME` `` in `text` that is an `ASSAY_*` variable.
fn variables(text: &str) -> BTreeSet<&str> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| {
            quoted.starts_with("ASSAY_")
                && quoted
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect()
}

#[test]
fn every_endpoint_of_the_contract_is_served() {
    let doc: Value = serde_json::to_value(assay::api::openapi()).unwrap();
    let served: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    let named: Vec<String> = section("## HTTP")
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| quoted.starts_with("GET /") || quoted.starts_with("POST /"))
        .map(|op| op.split('?').next().unwrap().trim().to_owned())
        // The dashboard is HTML, outside the API's document.
        .filter(|op| op != "GET /")
        .collect();
    assert!(named.len() >= 12, "{named:?}");
    for op in &named {
        assert!(
            served.contains(op),
            "{op} is in the contract, not served: {served:?}"
        );
    }
}

/// Runs `check-config` with `names` set (empty, which Assay reads as unset)
/// and returns the variables it says it does not read.
fn unread(names: &BTreeSet<&str>) -> Vec<String> {
    let mut cmd = assay_command();
    // ASSAY_CONFIG is the command line's `--config`, which may not be empty.
    for name in names.iter().filter(|name| **name != "ASSAY_CONFIG") {
        cmd.env(name, "");
    }
    let out = cmd.arg("check-config").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("is not a variable Assay reads"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_variable_of_the_contract_is_read_and_no_reserved_one_yet() {
    let configured = variables(section("## Configuration"));
    assert!(configured.len() >= 15, "{configured:?}");
    assert_eq!(unread(&configured), Vec::<String>::new());

    let reserved: BTreeSet<&str> = variables(section("## Names reserved for what comes next"))
        .difference(&configured)
        .copied()
        .collect();
    assert!(!reserved.is_empty());
    let unread = unread(&reserved);
    assert_eq!(
        unread.len(),
        reserved.len(),
        "{unread:?}: move a name that landed up"
    );
}
