//! The `assay` binary's commands, run as a user would.

use std::process::Command;

fn assay() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_assay"));
    // Only what each test sets: nothing from the developer's shell.
    for (key, _) in std::env::vars() {
        if key.starts_with("ASSAY_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn check_config_prints_effective_settings_without_secrets() {
    let out = assay()
        .arg("check-config")
        .env("ASSAY_STRIPE_WEBHOOK_SECRET", "whsec_very_secret_value")
        .env("ASSAY_API_KEY", "api-key-very-secret-value")
        .env("ASSAY_PLAN_MAP", "price_1=pro")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("[projects.default]"), "{stdout}");
    assert!(stdout.contains("price_1"), "{stdout}");
    assert!(
        !stdout.contains("very_secret") && !stdout.contains("very-secret"),
        "{stdout}"
    );
}

#[test]
fn check_config_fails_clearly_on_bad_settings() {
    let out = assay()
        .arg("check-config")
        .env("ASSAY_DEADLINE_ACCESS_ASSERTED", "tomorrow")
        .env("ASSAY_SWEEP_SCHEDULE", "*/5 * * * *x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("ASSAY_DEADLINE_ACCESS_ASSERTED"),
        "{stderr}"
    );
    assert!(stderr.contains("ASSAY_SWEEP_SCHEDULE"), "{stderr}");
}

#[test]
fn check_config_reads_a_file_and_names_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("assay.toml");
    std::fs::write(&file, "[projects.acme]\nstripe_secret = \"whsec_x\"\n").unwrap();
    let out = assay()
        .args(["--config", file.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("stripe_secret"), "{stderr}");
}

#[test]
fn migrate_creates_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let out = assay()
        .arg("migrate")
        .env("ASSAY_DATABASE_URL", format!("sqlite://{}", db.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists());
}

#[test]
fn help_lists_the_commands() {
    let out = assay().arg("--help").output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    for command in ["serve", "migrate", "check-config"] {
        assert!(stdout.contains(command), "{stdout}");
    }
}
