//! The configuration loader: `Config::load` on a TOML file and `ASSAY_*`
//! variables. It must answer `Ok` or a `ConfigError` listing what is wrong,
//! never panic, and never show a secret.
//!
//! The input is the file's text. Its lines `#env NAME=value` also set
//! variables, and a line `#nofile` loads the variables alone; both are TOML
//! comments, so a seed stays a readable, valid config file.
#![no_main]

use std::collections::HashMap;
use std::sync::LazyLock;

use assay::config::{Config, Sources};
use assay::stripe::StripeEvent;
use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use tempfile::TempDir;

/// The admin token the target sets when the input sets none: nothing in the
/// input can hold it, so wherever it shows up, the loader leaked it.
const CANARY: &str = "canary-4f1d2c9e-admin-token-7b3a";

/// One directory for the run's config file, rewritten for every input.
static DIR: LazyLock<TempDir> =
    LazyLock::new(|| tempfile::tempdir().expect("a temporary directory"));

/// A failed payment, the event that reads the grace period.
static PAYMENT_FAILED: LazyLock<StripeEvent> = LazyLock::new(|| {
    StripeEvent::parse(
        br#"{"id":"evt_fuzz","type":"invoice.payment_failed","created":1767225600,
            "data":{"object":{"customer":"cus_1","subscription":"sub_1",
            "lines":{"data":[{"price":{"id":"price_1","lookup_key":"pro_monthly"}}]}}}}"#,
    )
    .expect("the fixed event decodes")
});

fn valid_project_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn check_loaded(config: &Config) {
    assert!(!config.projects.is_empty(), "no project");
    assert!((1..=10_000).contains(&config.sweep.batch_size));
    assert!((1..=1000).contains(&config.database.max_connections));
    for (name, project) in &config.projects {
        assert_eq!(name, &project.name);
        assert!(valid_project_name(name), "project name {name:?}");
        assert!(
            project
                .webhook_secrets
                .iter()
                .all(|s| s.expose().starts_with("whsec_"))
        );
        assert!(project.deadlines.reconciled <= project.deadlines.access_asserted);
        // A configuration that loads never makes ingest panic.
        let now = DateTime::from_timestamp(1_767_229_200, 0).expect("in range");
        let _ = PAYMENT_FAILED.run_facts(&project.access_policy(), now);
    }
    let keyed: Vec<_> = config
        .projects
        .values()
        .filter_map(|p| p.api_key.as_ref())
        .collect();
    for (i, key) in keyed.iter().enumerate() {
        assert!(
            !keyed[i + 1..].contains(key),
            "two projects share an API key"
        );
    }
    // `assay check-config` prints this: valid TOML, with no secret in it.
    let shown = config.redacted();
    if let Err(e) = toml::from_str::<toml::Table>(&shown) {
        panic!("check-config printed invalid TOML ({e}):\n{shown}");
    }
    assert!(
        !shown.contains(CANARY),
        "check-config printed the admin token"
    );
    assert!(
        !format!("{config:?}").contains(CANARY),
        "Debug shows the admin token"
    );
}

fuzz_target!(|data: &[u8]| {
    // A file that is not UTF-8 is refused before TOML sees it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut env = HashMap::new();
    let mut use_file = true;
    for line in text.lines() {
        if line.trim() == "#nofile" {
            use_file = false;
        } else if let Some((name, value)) =
            line.strip_prefix("#env ").and_then(|l| l.split_once('='))
        {
            env.insert(name.to_owned(), value.to_owned());
        }
    }
    // It would point the loader at arbitrary files on this machine.
    env.remove("ASSAY_CONFIG");
    let canary = !env.contains_key("ASSAY_ADMIN_TOKEN");
    if canary {
        env.insert("ASSAY_ADMIN_TOKEN".into(), CANARY.into());
    }

    let path = DIR.path().join("assay.toml");
    std::fs::write(&path, text).expect("the config file is written");
    let loaded = Config::load(Sources {
        file: use_file.then_some(path.as_path()),
        env: &env,
    });
    match loaded {
        Ok(config) => {
            check_loaded(&config);
            if canary {
                assert_eq!(config.operator_for_token(CANARY).as_deref(), Some("admin"));
            }
        }
        Err(e) => {
            assert!(!e.0.is_empty(), "refused with no reason");
            assert!(e.0.iter().all(|m| !m.trim().is_empty()), "an empty reason");
            assert!(
                !e.to_string().contains(CANARY),
                "an error shows the admin token"
            );
        }
    }
});
