//! The `assay` binary's commands, run as a user would.

use crate::support::assay_command as assay;

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
fn check_config_warns_of_what_is_missing_and_strict_refuses_it() {
    let lacking = || {
        let mut cmd = assay();
        cmd.arg("check-config")
            .env("ASSAY_STRIPE_WEBHOOK_SECRET", "whsec_replace_me")
            // Misspelled: ignored but for the warning.
            .env("ASSAY_DEADLINE_RECONCILD", "5m");
        cmd
    };
    let out = lacking().output().unwrap();
    assert!(out.status.success(), "warnings alone do not fail");
    let stderr = String::from_utf8(out.stderr).unwrap();
    for expected in [
        "ASSAY_DEADLINE_RECONCILD is not a variable Assay reads; did you mean ASSAY_DEADLINE_RECONCILED?",
        "no dashboard sign-in: set ASSAY_ADMIN_TOKEN",
        "webhook secret #1 is a placeholder",
        "no API key",
        "no alert channel",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from:\n{stderr}"
        );
    }
    let out = lacking().arg("--strict").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--strict refuses them"));

    // Complete, it passes --strict without a word on standard error.
    let out = assay()
        .args(["check-config", "--strict"])
        .env("ASSAY_STRIPE_WEBHOOK_SECRET", "whsec_0123456789abcdef")
        .env("ASSAY_API_KEY", "api-key-0123456789abcdef")
        .env("ASSAY_ADMIN_TOKEN", "admin-token-0123456789")
        .env("ASSAY_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/alerts")
        .env(
            "ASSAY_ALERT_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr, "");
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
    assert!(
        stderr.contains("did you mean `stripe_webhook_secret`?"),
        "{stderr}"
    );
}

#[test]
fn check_config_refuses_a_broken_template_override_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("email.txt.hbs");
    std::fs::write(
        &broken,
        "Incident {{incident.id}}\n{{#each incident.guidance}}\n- {{this}}\n",
    )
    .unwrap();
    let out = assay()
        .arg("check-config")
        .env("ASSAY_ALERT_TEMPLATES_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&broken.display().to_string()), "{stderr}");
    assert!(stderr.contains(" line "), "{stderr}");

    // Fixed, it is taken, and check-config says which files override.
    std::fs::write(&broken, "Incident {{incident.id}}\n").unwrap();
    let out = assay()
        .arg("check-config")
        .env("ASSAY_ALERT_TEMPLATES_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("email.txt.hbs"), "{stdout}");
}

#[test]
fn check_config_shows_alert_channels_without_their_secrets() {
    let out = assay()
        .arg("check-config")
        .env(
            "ASSAY_SLACK_WEBHOOK_URL",
            "https://hooks.slack.test/services/T000/B000/slacktoken42",
        )
        .env(
            "ASSAY_SMTP_URL",
            "smtp://alerts:smtppass42@mail.test:587?tls=required",
        )
        .env("ASSAY_ALERT_EMAIL_FROM", "assay@example.test")
        .env("ASSAY_ALERT_EMAIL_TO", "oncall@example.test")
        .env("ASSAY_ALERT_WEBHOOK_URL", "https://ops.example.test/assay")
        .env(
            "ASSAY_ALERT_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    for shown in [
        "kind = \"slack\"",
        "kind = \"email\"",
        "oncall@example.test",
        "https://ops.example.test/assay",
    ] {
        assert!(stdout.contains(shown), "{shown}: {stdout}");
    }
    for secret in [
        "slacktoken42",
        "smtppass42",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ] {
        assert!(!stdout.contains(secret), "{secret} shown: {stdout}");
    }
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
    assert!(
        stdout.contains("README.md"),
        "says where the docs are: {stdout}"
    );
    let out = assay().args(["check-config", "--help"]).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("--strict"), "{stdout}");
}
