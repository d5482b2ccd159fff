//! The configuration loader's tests: the layers, the checks, what is printed.

use sha2::{Digest, Sha256};

use super::*;

fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("assay.toml");
    if let Some(text) = file {
        std::fs::write(&path, text).unwrap();
    }
    let env: HashMap<_, _> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load(Sources {
        file: file.map(|_| path.as_path()),
        env: &env,
    })
}

#[test]
fn no_file_runs_project_default_with_the_contract_defaults() {
    let config = load(None, &[]).unwrap();
    assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(config.database.url, "sqlite://assay.db");
    assert_eq!(config.database.lease, Duration::from_secs(30));
    let p = &config.projects["default"];
    assert!(p.webhook_secrets.is_empty());
    assert!(p.api_key.is_none());
    assert_eq!(p.deadlines.reconciled, Duration::from_secs(120));
    assert_eq!(p.deadlines.access_asserted, Duration::from_secs(600));
    assert_eq!(config.projects.len(), 1);
}

#[test]
fn environment_overrides_the_file() {
    let file = r#"
        bind = "127.0.0.1:9000"
        [projects.default]
        stripe_webhook_secret = ["whsec_a", "whsec_b"]
        api_key = "file-key-0123456789"
        plan_map = { price_1 = "pro" }
        deadline_reconciled = "30s"
    "#;
    let config = load(
        Some(file),
        &[
            ("ASSAY_BIND", "127.0.0.1:9001"),
            ("ASSAY_API_KEY", "env-key-0123456789"),
            ("ASSAY_PLAN_MAP", "price_2=team"),
        ],
    )
    .unwrap();
    assert_eq!(config.bind.to_string(), "127.0.0.1:9001");
    let p = &config.projects["default"];
    assert_eq!(p.webhook_secrets.len(), 2);
    assert!(p.api_key.as_ref().unwrap().matches("env-key-0123456789"));
    assert!(!p.api_key.as_ref().unwrap().matches("file-key-0123456789"));
    assert_eq!(p.plan_map, "price_2=team".parse().unwrap());
    assert_eq!(p.deadlines.reconciled, Duration::from_secs(30));
}

/// The variable replaces the file's key in either form, the hash too.
#[test]
fn the_api_key_variable_overrides_a_hashed_key_in_the_file() {
    let hash = hex::encode(Sha256::digest(b"file-key-0123456789"));
    let file = format!("[projects.default]\napi_key_sha256 = \"{hash}\"\n");
    let config = load(Some(&file), &[("ASSAY_API_KEY", "env-key-0123456789")]).unwrap();
    let key = config.projects["default"].api_key.as_ref().unwrap();
    assert!(key.matches("env-key-0123456789"));
    assert!(!key.matches("file-key-0123456789"));
    // Both in the file is still one too many.
    let both = format!("{file}api_key = \"file-key-0123456789\"\n");
    let err = load(Some(&both), &[]).unwrap_err().to_string();
    assert!(err.contains("not both"), "{err}");
}

/// A project (or the projects) given as something other than a table is
/// refused, not replaced by the defaults.
#[test]
fn a_project_that_is_not_a_table_is_refused() {
    for (file, named) in [
        (
            "[projects]\nacme = \"x\"\n",
            "`projects.acme` must be a table",
        ),
        ("projects = 5\n", "`projects` must be a table"),
        (
            "project_defaults = \"x\"\n",
            "`project_defaults` must be a table",
        ),
    ] {
        let err = load(Some(file), &[]).unwrap_err().to_string();
        assert!(err.contains(named), "{file}: {err}");
    }
}

/// A bad duration is one problem: the checks of how it relates to others
/// wait for a good value.
#[test]
fn a_bad_duration_is_reported_once() {
    let err = load(
        None,
        &[
            ("ASSAY_ALERT_RETRY_MAX", "bogus"),
            (
                "ASSAY_PROBE_URL",
                "http://127.0.0.1:3000/access/{{customer_id}}",
            ),
            ("ASSAY_PROBE_TIMEOUT", "bogus"),
        ],
    )
    .unwrap_err();
    assert_eq!(err.0.len(), 2, "{:?}", err.0);
    assert!(
        err.0.iter().all(|e| e.contains("is not a duration")),
        "{:?}",
        err.0
    );
}

/// A misspelled variable is named with the one meant; a variable a probe
/// header reads is not unknown.
#[test]
fn unknown_variables_are_warned_of_and_header_variables_are_known() {
    let config = load(
        None,
        &[
            (
                "ASSAY_PROBE_URL",
                "http://127.0.0.1:3000/access/{{customer_id}}",
            ),
            (
                "ASSAY_PROBE_HEADERS",
                "Authorization=Bearer ${ASSAY_APP_TOKEN}",
            ),
            ("ASSAY_APP_TOKEN", "app-token"),
            ("ASSAY_DEADLINE_RECONCILD", "5m"),
        ],
    )
    .unwrap();
    let unknown: Vec<&String> = config
        .warnings()
        .iter()
        .filter(|w| w.contains("is not a variable Assay reads"))
        .collect();
    assert_eq!(
        unknown,
        [&"ASSAY_DEADLINE_RECONCILD is not a variable Assay reads; did you mean ASSAY_DEADLINE_RECONCILED?".to_owned()]
    );
    // The same header in the file.
    let file = "[projects.default.probe]\nurl = \"http://127.0.0.1:3000/access/{{customer_id}}\"\n\
                [projects.default.probe.headers]\nAuthorization = \"Bearer ${ASSAY_APP_TOKEN}\"\n";
    let config = load(Some(file), &[("ASSAY_APP_TOKEN", "app-token")]).unwrap();
    assert!(
        !config
            .warnings()
            .iter()
            .any(|w| w.contains("ASSAY_APP_TOKEN")),
        "{:?}",
        config.warnings()
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let err = load(
        None,
        &[
            ("ASSAY_BIND", "nowhere"),
            ("ASSAY_STRIPE_WEBHOOK_SECRET", "sk_live_oops"),
            ("ASSAY_DEADLINE_RECONCILED", "soon"),
            ("ASSAY_SWEEP_SCHEDULE", "every minute"),
            ("ASSAY_PLAN_MAP", "price_1"),
        ],
    )
    .unwrap_err();
    let text = err.to_string();
    for needle in ["ASSAY_BIND", "whsec_", "soon", "every minute", "price_1"] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
    assert!(!text.contains("sk_live_oops"), "a secret leaked:\n{text}");
}

#[test]
fn a_sweep_batch_of_zero_is_refused_from_the_file_too() {
    for file in ["sweep_batch_size = 0\n", "sweep_batch_size = 10001\n"] {
        let err = load(Some(file), &[]).unwrap_err();
        assert!(err.to_string().contains("sweep_batch_size"), "{err}");
    }
    assert!(load(None, &[("ASSAY_SWEEP_BATCH_SIZE", "0")]).is_err());
}

#[test]
fn two_projects_may_not_share_an_api_key() {
    let file = "[projects.a]\napi_key = \"same-key-0123456789\"\n[projects.b]\napi_key = \"same-key-0123456789\"\n";
    let err = load(Some(file), &[]).unwrap_err();
    assert!(err.to_string().contains("same API key"), "{err}");
}

#[test]
fn unknown_keys_in_the_file_are_refused_with_their_name() {
    let err = load(Some("[projects.default]\nplanmap = \"x\"\n"), &[]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("`projects.default.planmap`"), "{text}");
    assert!(text.contains("did you mean `plan_map`?"), "{text}");
    assert!(!text.contains("expected `one of"), "{text}");
}

#[test]
fn redacted_output_never_shows_secrets() {
    let config = load(
        None,
        &[
            ("ASSAY_STRIPE_WEBHOOK_SECRET", "whsec_topsecret"),
            ("ASSAY_API_KEY", "key-topsecret-0123456789"),
            ("ASSAY_ADMIN_TOKEN", "admin-topsecret"),
        ],
    )
    .unwrap();
    let text = config.redacted();
    assert!(!text.contains("topsecret"), "{text}");
    assert!(text.contains("[redacted]"));
    toml::from_str::<toml::Table>(&text).expect("check-config prints valid TOML");
    assert!(!format!("{config:?}").contains("topsecret"));
}

#[test]
fn api_keys_match_only_their_project() {
    let file = r#"
        [projects.acme]
        api_key = "acme-key-0123456789"
        [projects.globex]
        api_key_sha256 = "5f6cd5f0b1a3d0cf64a1c70a1a2d3e5dfc0b7aa73e2c3a8bf88a8ac2cd5c50a4"
    "#;
    let config = load(Some(file), &[]).unwrap();
    assert_eq!(
        config.projects.len(),
        2,
        "no implicit default beside a file's projects"
    );
    assert_eq!(
        config
            .project_for_api_key("acme-key-0123456789")
            .map(|p| p.name.as_str()),
        Some("acme")
    );
    assert!(config.project_for_api_key("acme-key-012345678").is_none());
}

#[test]
fn project_variables_that_configure_nothing_are_refused() {
    let file = "[projects.acme]\n";
    let err = load(Some(file), &[("ASSAY_API_KEY", "key-0123456789abcdef")]).unwrap_err();
    assert!(err.to_string().contains("ASSAY_PROJECT"), "{err}");
    let config = load(
        Some(file),
        &[
            ("ASSAY_API_KEY", "key-0123456789abcdef"),
            ("ASSAY_PROJECT", "acme"),
        ],
    )
    .unwrap();
    assert!(config.projects["acme"].api_key.is_some());
    assert_eq!(config.projects.len(), 1);
}

#[test]
fn project_defaults_stand_beneath_every_project() {
    let file = r#"
        [project_defaults]
        deadline_reconciled = "45s"
        [projects.acme]
        [projects.globex]
        deadline_reconciled = "90s"
    "#;
    let config = load(Some(file), &[]).unwrap();
    assert_eq!(
        config.projects["acme"].deadlines.reconciled,
        Duration::from_secs(45)
    );
    assert_eq!(
        config.projects["globex"].deadlines.reconciled,
        Duration::from_secs(90)
    );
    assert_eq!(
        config.projects["globex"].deadlines.access_asserted,
        Duration::from_secs(600),
        "the built-in defaults stay beneath both"
    );
}

#[test]
fn a_bad_value_names_its_source_and_key() {
    let err = load(Some("[projects.acme]\ndrill = 3\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`projects.acme.drill`"), "{err}");
    assert!(err.contains("assay.toml"), "{err}");
    let err = load(None, &[("ASSAY_DATABASE_MAX_CONNECTIONS", "many")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ASSAY_DATABASE_MAX_CONNECTIONS / database_max_connections"),
        "{err}"
    );
}

#[test]
fn probe_settings_are_read_checked_and_never_printed() {
    let file = r#"
        [projects.default.probe]
        url = "http://app.internal:3000/access/{{customer_id}}"
        headers = { Authorization = "Bearer ${APP_TOKEN}" }
        features_pointer = "/features"
        interval = "2s"
        max_interval = "1m"
    "#;
    let config = load(Some(file), &[("APP_TOKEN", "tok-secret-42")]).unwrap();
    let probe = config.projects["default"].probe.clone().unwrap();
    assert_eq!(probe.plan_pointer, "/plan");
    assert_eq!(probe.features_pointer.as_deref(), Some("/features"));
    assert_eq!(
        probe.allow.names,
        ["app.internal"],
        "the URL's host by default"
    );
    assert_eq!(probe.schedule.initial, Duration::from_secs(2));
    assert_eq!(probe.headers[0].1.expose(), "Bearer tok-secret-42");
    let shown = config.redacted();
    assert!(!shown.contains("tok-secret-42"), "{shown}");
    assert!(shown.contains("app.internal"), "{shown}");
}

#[test]
fn bad_probe_settings_are_all_reported() {
    let err = load(
        None,
        &[
            ("ASSAY_PROBE_URL", "http://app.internal/access/{{plan}}"),
            ("ASSAY_PROBE_HEADERS", "Authorization=Bearer ${NOT_SET}"),
            ("ASSAY_PROBE_PLAN_POINTER", "plan"),
            ("ASSAY_PROBE_START", "later"),
        ],
    )
    .unwrap_err()
    .to_string();
    for part in [
        "names `plan`, which a run does not have",
        "NOT_SET",
        "not a JSON pointer",
        "probe start",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
    let err = load(
        None,
        &[
            (
                "ASSAY_PROBE_URL",
                "http://app.internal/access/{{customer_id}}",
            ),
            ("ASSAY_PROBE_ALLOW_HOSTS", "other.internal"),
            ("ASSAY_PROBE_TIMEOUT", "1m"),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not in ASSAY_PROBE_ALLOW_HOSTS"), "{err}");
    assert!(err.contains("shorter than ASSAY_LEASE_DURATION"), "{err}");
    let err = load(
        None,
        &[
            (
                "ASSAY_PROBE_URL",
                "http://app.internal/access/{{customer_id}}",
            ),
            ("ASSAY_PROBE_HEADERS", "Authorization"),
            ("ASSAY_PROBE_INTERVAL", "1m"),
            ("ASSAY_PROBE_MAX_INTERVAL", "10s"),
            ("ASSAY_PROBE_RESOLVE_WINDOW", "5s"),
            ("ASSAY_PROBE_CONNECT_TIMEOUT", "9s"),
        ],
    )
    .unwrap_err()
    .to_string();
    for part in [
        "is not `Name=value`",
        "MAX_INTERVAL (10s) is shorter than ASSAY_PROBE_INTERVAL",
        "RESOLVE_WINDOW (5s) is shorter",
        "CONNECT_TIMEOUT (9s) is longer",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
}

#[test]
fn operators_sign_in_with_their_own_tokens() {
    let alice = hex::encode(Sha256::digest(b"alice-token-0123456789"));
    let file = format!(
        "[[operators]]\nname = \"alice\"\ntoken_sha256 = \"{alice}\"\n[projects.default]\n"
    );
    let config = load(
        Some(&file),
        &[("ASSAY_ADMIN_TOKEN", "admin-token-0123456789")],
    )
    .unwrap();
    assert_eq!(
        config
            .operator_for_token("alice-token-0123456789")
            .as_deref(),
        Some("alice")
    );
    assert_eq!(
        config
            .operator_for_token("admin-token-0123456789")
            .as_deref(),
        Some("admin")
    );
    assert_eq!(config.operator_for_token("alice-token-012345678"), None);
    assert!(
        !config.redacted().contains(&alice),
        "the hash is not printed"
    );

    let bad = "[[operators]]\nname = \"admin\"\ntoken_sha256 = \"xyz\"\n";
    let err = load(Some(bad), &[]).unwrap_err().to_string();
    assert!(err.contains("operator name"), "{err}");
}

/// One problem does not hide the next: an unknown key, the values beside
/// it, other projects, the process-wide keys and arrays of tables are all
/// reported from one read.
#[test]
fn an_unknown_key_hides_no_other_problem() {
    let file = r#"
        sweep_shedule = "*/5 * * * * *"
        bind = "nowhere"
        [project_defaults]
        grace = "1d"
        [projects.acme]
        planmap = "x"
        deadline_reconciled = "soon"
        drill = 3
        [[projects.acme.channels]]
        name = "ops"
        kind = "webhook"
        urll = "http://127.0.0.1:9/hook"
        [projects.globex]
        customer_idd = "x"
    "#;
    let err = load(Some(file), &[("ASSAY_DEADLINE_RECONCILD", "30s")])
        .unwrap_err()
        .to_string();
    for expected in [
        "`sweep_shedule`: not a key Assay knows",
        "did you mean `sweep_schedule`?",
        "ASSAY_BIND / bind: `nowhere`",
        "`project_defaults.grace`: not a key Assay knows",
        "did you mean `grace_period`?",
        "`projects.acme.planmap`",
        "did you mean `plan_map`?",
        "`projects.acme.drill`",
        "ASSAY_DEADLINE_RECONCILED / deadline_reconciled: `soon` is not a duration",
        "`projects.acme.channels.0.urll`",
        "`projects.globex.customer_idd`",
        "also: ASSAY_DEADLINE_RECONCILD is not a variable Assay reads; did you mean ASSAY_DEADLINE_RECONCILED?",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert_eq!(
        err.matches("project_defaults.grace").count(),
        1,
        "a key beneath every project is reported once:\n{err}"
    );
}

/// Elements after one taken out are still named by their place in the
/// file, and each one's problem is reported.
#[test]
fn each_broken_element_of_an_array_is_named_by_its_place() {
    let file = r#"
        [[operators]]
        name = "ana"
        [[operators]]
        name = "ben"
        [[operators]]
        name = "cy"
        token_sha256 = "not hex"
        [[operators]]
        nam = "dee"
        token_sha256 = "00"
    "#;
    let err = load(Some(file), &[]).unwrap_err().to_string();
    for expected in [
        "operators: `ana`: give token_sha256 (to sign in with a token) or email",
        "operators: `ben`: give token_sha256 (to sign in with a token) or email",
        "`operators.3.nam`: not a key Assay knows",
        "operators: `cy`: token_sha256 must be 64 hex characters",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn a_duration_without_its_unit_is_told_so() {
    let err = load(None, &[("ASSAY_DEADLINE_RECONCILED", "30")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`30` is not a duration: a number needs its unit; use e.g."),
        "{err}"
    );
    let err = load(None, &[("ASSAY_DEADLINE_RECONCILED", "30 parsecs")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`parsecs` is not a unit"), "{err}");
}

/// An operator's role: their own in every project but those they list;
/// `responder` when they name none, as every operator could act before
/// roles; `admin` for the admin token's.
#[test]
fn operators_have_a_role_per_project() {
    let hash = hex::encode(Sha256::digest(b"dana-token-0123456789"));
    let eli = hex::encode(Sha256::digest(b"eli-token-0123456789"));
    let file = format!(
        "[[operators]]\nname = \"dana\"\ntoken_sha256 = \"{hash}\"\nrole = \"viewer\"\nprojects = {{ billing = \"admin\" }}\n\
         [[operators]]\nname = \"eli\"\ntoken_sha256 = \"{eli}\"\n\
         [projects.default]\n[projects.billing]\napi_key = \"billing-key-0123456789\"\n"
    );
    let config = load(
        Some(&file),
        &[("ASSAY_ADMIN_TOKEN", "admin-token-0123456789")],
    )
    .unwrap();
    assert_eq!(config.role_of("dana", "default"), Some(Role::Viewer));
    assert_eq!(config.role_of("dana", "billing"), Some(Role::Admin));
    assert_eq!(config.role_of("eli", "default"), Some(Role::Responder));
    assert_eq!(config.role_of("admin", "billing"), Some(Role::Admin));
    assert_eq!(
        config.role_of("gone", "default"),
        None,
        "a name no longer listed"
    );

    let bad = format!(
        "[[operators]]\nname = \"dana\"\ntoken_sha256 = \"{hash}\"\nrole = \"owner\"\nprojects = {{ nowhere = \"viewer\" }}\n[projects.default]\n"
    );
    let err = load(Some(&bad), &[]).unwrap_err().to_string();
    assert!(
        err.contains("unknown role `owner`; expected one of: viewer, responder, admin"),
        "{err}"
    );
    assert!(
        err.contains("no project `nowhere` to give a role in"),
        "{err}"
    );

    let shared = format!(
        "[[operators]]\nname = \"dana\"\ntoken_sha256 = \"{hash}\"\n[[operators]]\nname = \"eli\"\ntoken_sha256 = \"{hash}\"\n"
    );
    let err = load(Some(&shared), &[]).unwrap_err().to_string();
    assert!(
        err.contains("`eli`: token_sha256 is another operator's"),
        "{err}"
    );
}

#[test]
fn single_sign_on_maps_emails_and_groups_and_keeps_its_secret() {
    let file = r#"
        [sso]
        issuer = "https://login.example.com"
        client_id = "assay"
        client_secret = "${OIDC_SECRET}"
        provider_name = "Okta"
        scopes = ["email", "groups"]
        [[sso.groups]]
        group = "billing-oncall"
        role = "responder"
        projects = { billing = "admin" }
        [[operators]]
        name = "ana"
        email = "Ana@Example.com"
        role = "viewer"
        [projects.default]
        [projects.billing]
        api_key = "billing-key-0123456789"
    "#;
    let config = load(
        Some(file),
        &[
            ("OIDC_SECRET", "client-secret-value"),
            ("ASSAY_SSO_CLIENT_ID", "assay-prod"),
        ],
    )
    .unwrap();
    let sso = config.sso.as_ref().unwrap();
    assert_eq!(sso.client_id, "assay-prod", "the variable is over the file");
    assert_eq!(
        sso.client_secret.as_ref().map(Secret::expose),
        Some("client-secret-value")
    );
    assert_eq!(sso.scopes, ["email", "groups"]);
    assert!(!config.shown.contains("client-secret-value"));
    assert!(config.shown.contains("[sso]"), "{}", config.shown);
    assert!(config.has_sign_in());
    let ana = Identity {
        subject: "00u1".into(),
        email: Some("ana@example.com".into()),
        email_verified: Some(true),
        groups: vec![],
    };
    assert_eq!(config.sso_sign_in(&ana).unwrap().operator, "ana");
    assert_eq!(config.role_of("ana", "billing"), Some(Role::Viewer));
    let oncall = Identity {
        email: Some("ben@example.com".into()),
        groups: vec!["billing-oncall".into()],
        ..ana.clone()
    };
    let (groups, roles) = config.sso_sign_in(&oncall).unwrap().groups.unwrap();
    assert_eq!(groups, ["billing-oncall"]);
    assert_eq!(config.group_roles(&groups), Some(roles.clone()));
    assert_eq!(roles.in_project("billing"), Some(Role::Admin));
    assert_eq!(roles.in_project("default"), Some(Role::Responder));

    let broken = r#"
        [sso]
        issuer = "http://login.example.com"
        client_secret = "${NOT_SET}"
        [[sso.groups]]
        group = "ops"
        [[sso.groups]]
        group = "x"
        projects = { nowhere = "viewer" }
        [[operators]]
        name = "cy"
        email = "not-an-email"
    "#;
    let err = load(Some(broken), &[]).unwrap_err().to_string();
    for expected in [
        "ASSAY_SSO_ISSUER / sso.issuer: `http://login.example.com` must use https",
        "ASSAY_SSO_CLIENT_ID / sso.client_id: single sign-on needs the client id",
        "sso.client_secret: `${NOT_SET}` is not set",
        "sso.groups.0 (`ops`): give a `role`",
        "sso.groups.1 (`x`): no project `nowhere` to give a role in",
        "operators: `cy`: `not-an-email` is not an email address",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }

    assert!(
        config
            .warnings()
            .iter()
            .any(|w| w.contains("sso: ASSAY_PUBLIC_URL / public_url is unset")),
        "{:?}",
        config.warnings()
    );
    let with_url = load(
        Some(file),
        &[
            ("OIDC_SECRET", "client-secret-value"),
            ("ASSAY_PUBLIC_URL", "https://assay.example.com"),
        ],
    )
    .unwrap();
    assert!(!with_url.warnings().iter().any(|w| w.starts_with("sso:")));

    let by_email_only = "[[operators]]\nname = \"dee\"\nemail = \"dee@example.com\"\n";
    let err = load(Some(by_email_only), &[]).unwrap_err().to_string();
    assert!(err.contains("[sso] is not configured"), "{err}");
}
