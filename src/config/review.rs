//! What a configuration that loads may still lack. Each warning names what
//! an operator would miss and the variable (and file key) that sets it:
//! `assay serve` prints them on start, beside what is configured, and
//! `assay check-config` prints them, failing on them with `--strict`.

use std::collections::HashMap;

use super::Config;
use super::project::ProjectConfig;
use crate::settings::{Secret, did_you_mean};

/// The variables read outside the configuration's own keys: by the command
/// line, the logger, and the test suite and benchmarks.
const OTHER_VARIABLES: [&str; 11] = [
    "ASSAY_CONFIG",
    "ASSAY_PROJECT",
    "ASSAY_LOG",
    "ASSAY_LOG_FORMAT",
    "ASSAY_URL",
    "ASSAY_TEST_SKIP",
    "ASSAY_TEST_POSTGRES_URL",
    "ASSAY_TEST_SEED",
    "ASSAY_UPDATE_SHAPES",
    "ASSAY_BENCH_CONCURRENCY",
    "ASSAY_BENCH_EVENTS",
];

/// Whether a secret is a value copied from an example rather than a real
/// one: it would never match a real signature or token.
fn placeholder(secret: &Secret) -> bool {
    let text = secret.expose().to_ascii_lowercase();
    ["replace", "changeme", "change_me", "example", "xxxx"]
        .iter()
        .any(|marker| text.contains(marker))
}

/// The names `${NAME}` in `texts` gives: variables a probe header reads.
pub(super) fn referenced_variables<'a>(texts: impl Iterator<Item = &'a str>) -> Vec<String> {
    texts
        .flat_map(|text| text.split("${").skip(1))
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.trim().to_owned()))
        .filter(|name| !name.is_empty())
        .collect()
}

/// The `ASSAY_*` variables in `env` that Assay does not read (`known`
/// holds those it does, the ones probe headers name included), each with
/// the one likely meant: a misspelled variable is otherwise ignored.
pub(super) fn unknown_variables(env: &HashMap<String, String>, known: &[String]) -> Vec<String> {
    let mut unknown: Vec<String> = env
        .keys()
        .filter(|name| name.starts_with("ASSAY_") && !name.starts_with("ASSAY_BENCH_"))
        .filter(|name| {
            !known.iter().any(|k| k == *name) && !OTHER_VARIABLES.contains(&name.as_str())
        })
        .map(|name| {
            // Compared without the prefix every name shares, which would
            // make any two look alike.
            let candidates = known
                .iter()
                .map(String::as_str)
                .chain(OTHER_VARIABLES.iter().copied())
                .map(|name| name.trim_start_matches("ASSAY_"));
            match did_you_mean(name.trim_start_matches("ASSAY_"), candidates) {
                Some(meant) => {
                    format!("{name} is not a variable Assay reads; did you mean ASSAY_{meant}?")
                }
                None => format!(
                    "{name} is not a variable Assay reads (README, \"Configuration\", lists them)"
                ),
            }
        })
        .collect();
    unknown.sort();
    unknown
}

/// What one project lacks.
fn project_warnings(project: &ProjectConfig) -> Vec<String> {
    let what = format!("project `{}`", project.name);
    let mut warnings = Vec::new();
    if project.webhook_secrets.is_empty() {
        warnings.push(format!(
            "{what}: no Stripe webhook secret, so Stripe's deliveries are answered 503; set ASSAY_STRIPE_WEBHOOK_SECRET / stripe_webhook_secret to the endpoint's signing secret (whsec_...)"
        ));
    }
    for (i, secret) in project.webhook_secrets.iter().enumerate() {
        if placeholder(secret) {
            warnings.push(format!(
                "{what}: webhook secret #{} is a placeholder from an example, which no Stripe signature matches; set ASSAY_STRIPE_WEBHOOK_SECRET / stripe_webhook_secret to the endpoint's signing secret",
                i + 1
            ));
        }
    }
    if project.api_key.is_none() {
        warnings.push(format!(
            "{what}: no API key, so the app's SDK cannot report stages and the API answers 401; set ASSAY_API_KEY / api_key (or api_key_sha256)"
        ));
    }
    if project.alert_channels(false).next().is_none() {
        warnings.push(format!(
            "{what}: no alert channel, so an incident reaches nobody; set ASSAY_SLACK_WEBHOOK_URL, ASSAY_SMTP_URL with ASSAY_ALERT_EMAIL_FROM and _TO, or ASSAY_ALERT_WEBHOOK_URL with ASSAY_ALERT_WEBHOOK_SECRET (or [[projects.{}.channels]])",
            project.name
        ));
    }
    if project.drill.schedule.is_some() && project.alert_channels(true).next().is_none() {
        warnings.push(format!(
            "{what}: drills are scheduled, but no channel would get their alerts, so each one fails; configure a channel or leave ASSAY_DRILL_SCHEDULE / drill.schedule unset"
        ));
    }
    warnings
}

/// Everything `config` lacks, the unknown variables first.
pub(super) fn warnings(config: &Config, unknown_variables: Vec<String>) -> Vec<String> {
    let mut warnings = unknown_variables;
    if !config.has_sign_in() {
        warnings.push(
            "no dashboard sign-in: set ASSAY_ADMIN_TOKEN / admin_token (or [[operators]], or [sso]) to open the dashboard"
                .to_owned(),
        );
    }
    if let Some(sso) = &config.sso
        && config.alerts.public_url == format!("http://{}", config.bind)
    {
        warnings.push(format!(
            "sso: ASSAY_PUBLIC_URL / public_url is unset, so {} sends browsers back to {}/signin/sso/callback; set it to the address operators reach Assay at, and register that redirect URI",
            sso.provider_name, config.alerts.public_url
        ));
    }
    if let Some(token) = &config.admin_token
        && placeholder(token)
    {
        warnings.push(
            "ASSAY_ADMIN_TOKEN / admin_token is a placeholder from an example; set a long random token"
                .to_owned(),
        );
    }
    for project in config.projects.values() {
        warnings.extend(project_warnings(project));
    }
    warnings
}

/// What is configured, a line per project, for `serve`'s start.
pub(super) fn summary(config: &Config) -> String {
    let mut lines = vec![format!(
        "Assay on http://{} (dashboard at {}), database {}",
        config.bind,
        config.alerts.public_url,
        crate::settings::redact_url(&config.database.url)
    )];
    for project in config.projects.values() {
        let channels: Vec<&str> = project
            .alert_channels(false)
            .map(|c| c.name.as_str())
            .collect();
        lines.push(format!(
            "  project {}: webhook secrets {}, API key {}, probe {}, alerts to {}, drills {}",
            project.name,
            project.webhook_secrets.len(),
            if project.api_key.is_some() {
                "set"
            } else {
                "none"
            },
            project.probe.as_ref().map_or_else(
                || "off".to_owned(),
                |p| crate::settings::shown_url(&p.url_template)
            ),
            if channels.is_empty() {
                "nobody".to_owned()
            } else {
                channels.join(", ")
            },
            project
                .drill
                .schedule
                .as_ref()
                .map_or_else(|| "by hand".to_owned(), |s| format!("on `{}`", s.text)),
        ));
        for line in project.watch.describe() {
            lines.push(format!("    watching {line}"));
        }
    }
    let warnings = config.warnings();
    if warnings.is_empty() {
        lines.push("  nothing is missing".to_owned());
    } else {
        lines.push(format!("  missing or doubtful ({}):", warnings.len()));
        lines.extend(warnings.iter().map(|w| format!("  - {w}")));
    }
    lines.join("\n")
}
