//! Configuration: the defaults compiled into the binary, an optional TOML
//! file over them, and the `ASSAY_*` variables over both ([`layers`]).
//!
//! The layers are read as one tree ([`raw`]), then checked section by
//! section, each subsystem checking its own (`alert::settings`,
//! `probe::settings`, `drill::settings`) with the primitives of
//! [`crate::settings`]. Every problem is reported together, each naming its
//! variable and key, so that a broken setting fails `assay check-config` in
//! CI rather than a webhook at 3 a.m.

mod layers;
mod raw;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use self::layers::DEFAULTS;
use self::layers::Layer;
use self::raw::{RawGlobal, RawProject, Shown};
use crate::alert::settings::{AlertSettings, ChannelConfig, RawAlerts};
use crate::drill::settings::DrillSettings;
use crate::plan::PlanMap;
use crate::probe::settings::ProbeConfig;
use crate::probe::worker::ProberSettings;
use crate::run::{Deadlines, ProbeStart};
pub use crate::settings::{Secret, redact_url};
use crate::settings::{TextOrTable, boolean, duration_or, parse_duration, whole_number};
use crate::store::{DatabaseSettings, is_postgres};

pub const DEFAULT_PROJECT: &str = "default";
/// Above this, one sweep transaction holds too many rows for too long.
pub const MAX_SWEEP_BATCH: u32 = 10_000;
/// The pool size the defaults give.
pub const DEFAULT_DATABASE_MAX_CONNECTIONS: u32 = 10;

/// The process-wide keys: each has the variable `ASSAY_<KEY>`.
const GLOBAL_KEYS: [&str; 19] = [
    "bind",
    "database_url",
    "database_max_connections",
    "database_statement_timeout",
    "lease_duration",
    "admin_token",
    "sweep_schedule",
    "sweep_batch_size",
    "probe_concurrency",
    "probe_poll_interval",
    "public_url",
    "alert_templates_dir",
    "alert_retry_initial",
    "alert_retry_max",
    "alert_give_up_after",
    "alert_reminder_interval",
    "alert_group_threshold",
    "alert_timeout",
    "alert_poll_interval",
];

/// A project's own keys: each has the variable `ASSAY_<KEY>`, which sets it
/// for the project `ASSAY_PROJECT` names.
const PROJECT_KEYS: [&str; 8] = [
    "stripe_webhook_secret",
    "api_key",
    "plan_map",
    "plan_priority",
    "deadline_reconciled",
    "deadline_access_asserted",
    "grace_period",
    "paused_keeps_access",
];

/// The variable of a key: `ASSAY_`, the section's prefix, the key.
fn variable(prefix: &str, key: &str) -> String {
    format!("ASSAY_{prefix}{}", key.to_ascii_uppercase())
}

/// Each project variable with the key path it sets under the project.
fn project_variables() -> Vec<(String, Vec<&'static str>)> {
    let own = PROJECT_KEYS.iter().map(|k| (variable("", k), vec![*k]));
    let probe = crate::probe::settings::KEYS
        .iter()
        .map(|k| (variable("PROBE_", k), vec!["probe", *k]));
    let drill = crate::drill::settings::KEYS
        .iter()
        .map(|k| (variable("DRILL_", k), vec!["drill", *k]));
    own.chain(probe).chain(drill).collect()
}

/// An API key as we keep it: only its SHA-256, compared in constant time.
/// API keys are long random tokens, so a fast hash is enough; what matters is
/// that the key itself is not kept in memory or printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyHash([u8; 32]);

impl ApiKeyHash {
    pub fn of(key: &str) -> ApiKeyHash {
        ApiKeyHash(Sha256::digest(key.as_bytes()).into())
    }

    pub fn from_hex(hex_digest: &str) -> Option<ApiKeyHash> {
        let bytes = hex::decode(hex_digest.trim()).ok()?;
        Some(ApiKeyHash(bytes.try_into().ok()?))
    }

    pub fn matches(&self, presented: &str) -> bool {
        bool::from(ApiKeyHash::of(presented).0.ct_eq(&self.0))
    }
}

impl fmt::Debug for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[sha256 redacted]")
    }
}

#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// `None`: this replica does not sweep (`off`); another one must.
    pub schedule: Option<cron::Schedule>,
    pub schedule_text: String,
    /// Overdue runs failed per transaction; a sweep repeats until done.
    pub batch_size: u32,
}

#[derive(Debug, Clone)]
pub struct ProjectConfig {
    pub name: String,
    pub webhook_secrets: Vec<Secret>,
    pub api_key: Option<ApiKeyHash>,
    pub plan_map: PlanMap,
    pub deadlines: Deadlines,
    /// How long access must be kept after a failed payment.
    pub grace_period: Duration,
    /// Whether a paused subscription keeps its plan.
    pub paused_keeps_access: bool,
    /// How Assay probes the app's access endpoint; `None`: it does not.
    pub probe: Option<Arc<ProbeConfig>>,
    /// Where this project's incident alerts go.
    pub channels: Vec<ChannelConfig>,
    /// How this project's failure drills run.
    pub drill: crate::drill::settings::DrillSettings,
}

impl ProjectConfig {
    /// When this project's runs start being probed, if they are.
    pub fn probe_start(&self) -> Option<ProbeStart> {
        self.probe.as_ref().map(|p| p.start)
    }

    /// The channels an incident alerts: a drill's go to the channels kept
    /// for drills when there are any, else to every channel (marked DRILL);
    /// a real incident never goes to a drill-only channel.
    pub fn alert_channels(&self, drill: bool) -> impl Iterator<Item = &ChannelConfig> {
        let has_drill_channels = self.channels.iter().any(|c| c.drill_only);
        self.channels.iter().filter(move |c| {
            if drill && has_drill_channels {
                c.drill_only
            } else {
                !c.drill_only
            }
        })
    }

    pub fn access_policy(&self) -> crate::stripe::event::AccessPolicy<'_> {
        crate::stripe::event::AccessPolicy {
            plans: &self.plan_map,
            grace_period: self.grace_period,
            paused_keeps_access: self.paused_keeps_access,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub database: DatabaseSettings,
    pub admin_token: Option<Secret>,
    /// Named dashboard operators, each with the SHA-256 of their token.
    pub operators: Vec<(String, ApiKeyHash)>,
    pub sweep: SweepConfig,
    pub prober: ProberSettings,
    pub alerts: AlertSettings,
    /// How often an idle alert sender looks for due deliveries.
    pub alert_poll_interval: Duration,
    pub projects: BTreeMap<String, ProjectConfig>,
    /// The settings in effect as `assay check-config` prints them.
    shown: String,
}

impl Config {
    /// The dashboard operator this token signs in, if any: `admin` for
    /// `ASSAY_ADMIN_TOKEN`, else a named operator. Every token is compared,
    /// in constant time, so the time taken tells nothing.
    pub fn operator_for_token(&self, presented: &str) -> Option<String> {
        let mut found = None;
        if let Some(token) = &self.admin_token
            && bool::from(token.expose().as_bytes().ct_eq(presented.as_bytes()))
        {
            found = Some("admin".to_owned());
        }
        for (name, hash) in &self.operators {
            if hash.matches(presented) {
                found = Some(name.clone());
            }
        }
        found
    }

    /// Which channels each project alerts, for the store's outbox.
    pub fn outbox(&self) -> crate::alert::Outbox {
        crate::alert::Outbox {
            channels: self
                .projects
                .values()
                .map(|p| {
                    let names = |drill| p.alert_channels(drill).map(|c| c.name.clone()).collect();
                    (
                        p.name.clone(),
                        crate::alert::ProjectChannels {
                            real: names(false),
                            drill: names(true),
                        },
                    )
                })
                .collect(),
            group_threshold: self.alerts.group_threshold,
        }
    }

    /// The project whose API key this is, if any. Every project's hash is
    /// compared, so the time taken does not tell which project came close.
    pub fn project_for_api_key(&self, presented: &str) -> Option<&ProjectConfig> {
        let mut found = None;
        for project in self.projects.values() {
            if project
                .api_key
                .as_ref()
                .is_some_and(|k| k.matches(presented))
            {
                found = Some(project);
            }
        }
        found
    }
}

/// Every problem found, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

/// Where the configuration comes from: a file (optional) and a set of
/// environment variables, passed in so that tests need not touch the process
/// environment.
pub struct Sources<'a> {
    pub file: Option<&'a Path>,
    pub env: &'a HashMap<String, String>,
}

fn valid_project_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl Config {
    /// Reads the file named by `sources.file` or `ASSAY_CONFIG` (if any)
    /// over the defaults, and applies the environment on top.
    pub fn load(sources: Sources<'_>) -> Result<Config, ConfigError> {
        let env = |name: &str| {
            sources
                .env
                .get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let path: Option<PathBuf> = sources
            .file
            .map(Path::to_path_buf)
            .or_else(|| env("ASSAY_CONFIG").map(PathBuf::from));
        let file = path
            .as_deref()
            .map(Layer::file)
            .transpose()
            .map_err(|e| ConfigError(vec![e]))?;
        let mut errors = Vec::new();

        // The unprefixed project variables configure one project: `default`,
        // or the one ASSAY_PROJECT names. With no file, or a file without
        // projects, they create it.
        let env_project = env("ASSAY_PROJECT").unwrap_or_else(|| DEFAULT_PROJECT.to_owned());
        let file_projects: Vec<String> =
            file.as_ref().and_then(|f| f.projects()).unwrap_or_default();
        let creates_project = file_projects.is_empty() || env("ASSAY_PROJECT").is_some();
        let configures_project = creates_project || file_projects.contains(&env_project);
        let mut sources_in_order = vec![Layer::defaults()];
        sources_in_order.extend(file);
        for key in GLOBAL_KEYS {
            let name = variable("", key);
            if let Some(value) = env(&name) {
                sources_in_order.push(Layer::variable(&name, &[key], &value));
            }
        }
        if creates_project {
            sources_in_order.push(Layer::table("ASSAY_PROJECT", &["projects", &env_project]));
        }
        let channel_variables = crate::alert::settings::VARIABLES;
        for (name, path) in project_variables() {
            let Some(value) = env(&name) else {
                continue;
            };
            if configures_project {
                let mut key = vec!["projects", env_project.as_str()];
                key.extend(path);
                sources_in_order.push(Layer::variable(&name, &key, &value));
            } else {
                errors.push(not_configuring(&name, &env_project));
            }
        }
        if !configures_project {
            for name in channel_variables.iter().filter(|v| env(v).is_some()) {
                errors.push(not_configuring(name, &env_project));
            }
        }
        let figment = layers::merged(sources_in_order);
        let global: RawGlobal = figment
            .extract()
            .map_err(|e| ConfigError(layers::problems(e, "")))?;

        let bind_text = global.bind.clone().unwrap_or_default();
        let bind = SocketAddr::from_str(&bind_text)
            .map_err(|_| {
                errors.push(format!(
                    "ASSAY_BIND / bind: `{bind_text}` is not an address:port such as 127.0.0.1:8080"
                ))
            })
            .ok();
        let database_url = global
            .database_url
            .as_ref()
            .map(|url| url.expose().to_owned())
            .unwrap_or_default();
        if !database_url.starts_with("sqlite:") && !is_postgres(&database_url) {
            errors.push(format!(
                "ASSAY_DATABASE_URL / database_url: `{}` is neither `sqlite://PATH` nor `postgres://...`",
                redact_url(&database_url)
            ));
        }
        let max_connections = whole_number(
            "ASSAY_DATABASE_MAX_CONNECTIONS / database_max_connections",
            global.database_max_connections.as_ref(),
            1..=1000,
            DEFAULT_DATABASE_MAX_CONNECTIONS,
            &mut errors,
        );
        let statement_timeout = parse_duration(
            "ASSAY_DATABASE_STATEMENT_TIMEOUT / database_statement_timeout",
            global
                .database_statement_timeout
                .as_deref()
                .unwrap_or_default(),
            &mut errors,
        );
        let lease = parse_duration(
            "ASSAY_LEASE_DURATION / lease_duration",
            global.lease_duration.as_deref().unwrap_or_default(),
            &mut errors,
        );

        let schedule_text = global.sweep_schedule.clone().unwrap_or_default();
        // `off` leaves sweeping to other replicas (a dashboard-only one, say).
        let schedule = if schedule_text.trim() == "off" {
            Some(None)
        } else {
            cron::Schedule::from_str(&schedule_text)
                .map_err(|e| {
                    errors.push(format!(
                        "ASSAY_SWEEP_SCHEDULE / sweep_schedule: `{schedule_text}` is not a cron expression with a seconds field ({e}); e.g. `*/5 * * * * *`, or `off`"
                    ))
                })
                .ok()
                .map(Some)
        };
        // A batch of 0 would claim nothing, ever.
        let batch_size = whole_number(
            "ASSAY_SWEEP_BATCH_SIZE / sweep_batch_size",
            global.sweep_batch_size.as_ref(),
            1..=MAX_SWEEP_BATCH,
            500,
            &mut errors,
        );
        let probe_concurrency = whole_number(
            "ASSAY_PROBE_CONCURRENCY / probe_concurrency",
            global.probe_concurrency.as_ref(),
            1..=4096,
            16,
            &mut errors,
        );
        let poll_interval = duration_or(
            "ASSAY_PROBE_POLL_INTERVAL / probe_poll_interval",
            global.probe_poll_interval.as_deref(),
            "500ms",
            &mut errors,
        );
        let alert_poll_interval = duration_or(
            "ASSAY_ALERT_POLL_INTERVAL / alert_poll_interval",
            global.alert_poll_interval.as_deref(),
            "1s",
            &mut errors,
        );
        let alerts = AlertSettings::load(
            RawAlerts {
                public_url: global.public_url.clone(),
                templates_dir: global.alert_templates_dir.clone(),
                retry_initial: global.alert_retry_initial.clone(),
                retry_max: global.alert_retry_max.clone(),
                give_up_after: global.alert_give_up_after.clone(),
                reminder_interval: global.alert_reminder_interval.clone(),
                group_threshold: global.alert_group_threshold.clone(),
                timeout: global.alert_timeout.clone(),
            },
            &bind_text,
            &mut errors,
        );

        let mut operators = Vec::new();
        for operator in &global.operators {
            let name = operator.name.trim().to_owned();
            if name.is_empty()
                || name.len() > 64
                || name.chars().any(char::is_control)
                || name == "admin"
            {
                errors.push(format!(
                    "operators: `{name}` is not a usable operator name (1 to 64 characters, not `admin`)"
                ));
                continue;
            }
            if operators.iter().any(|(n, _)| *n == name) {
                errors.push(format!("operators: `{name}` is listed twice"));
                continue;
            }
            match ApiKeyHash::from_hex(operator.token_sha256.expose()) {
                Some(hash) => operators.push((name, hash)),
                None => errors.push(format!(
                    "operators: `{name}`: token_sha256 must be 64 hex characters (the SHA-256 of the token)"
                )),
            }
        }

        let mut raw_projects = BTreeMap::new();
        let mut projects = BTreeMap::new();
        for name in global.projects.keys() {
            if !valid_project_name(name) {
                errors.push(format!(
                    "project `{name}`: names are 1 to 64 characters of a-z, 0-9, - and _"
                ));
                continue;
            }
            let project = figment::Figment::new()
                .merge(figment.focus("project_defaults"))
                .merge(figment.focus(&format!("projects.{name}")));
            let mut raw: RawProject = match project.extract() {
                Ok(raw) => raw,
                Err(e) => {
                    errors.extend(layers::problems(e, &format!("projects.{name}")));
                    continue;
                }
            };
            if *name == env_project && configures_project {
                raw.channels = crate::alert::settings::with_env_channels(
                    std::mem::take(&mut raw.channels),
                    &|var| env(var),
                );
            }
            let checked = check_project(
                name,
                raw.clone(),
                &|var| sources.env.get(var).cloned(),
                lease,
                &mut errors,
            );
            projects.insert(name.clone(), checked);
            raw_projects.insert(name.clone(), raw);
        }

        if let Some(lease) = lease
            && alerts.timeout >= lease
            && projects
                .values()
                .any(|p: &ProjectConfig| !p.channels.is_empty())
        {
            errors.push(format!(
                "ASSAY_ALERT_TIMEOUT ({}) must be shorter than ASSAY_LEASE_DURATION ({}), or a slow send could be claimed and sent twice",
                humantime::format_duration(alerts.timeout),
                humantime::format_duration(lease)
            ));
        }

        // A key that opens two projects would act for whichever is checked
        // last: refuse it.
        let keyed: Vec<&ProjectConfig> =
            projects.values().filter(|p| p.api_key.is_some()).collect();
        for (i, a) in keyed.iter().enumerate() {
            for b in &keyed[i + 1..] {
                if a.api_key == b.api_key {
                    errors.push(format!(
                        "projects `{}` and `{}` have the same API key; every project needs its own",
                        a.name, b.name
                    ));
                }
            }
        }

        let shown = toml::to_string(&Shown {
            global: &global,
            projects: &raw_projects,
        })
        .map_err(|e| errors.push(format!("the settings cannot be shown as TOML: {e}")))
        .unwrap_or_default();
        match (bind, schedule) {
            (Some(bind), Some(schedule)) if errors.is_empty() => Ok(Config {
                bind,
                database: DatabaseSettings {
                    url: database_url,
                    max_connections,
                    statement_timeout: statement_timeout.unwrap_or_default(),
                    lease: lease.unwrap_or_default(),
                },
                admin_token: global.admin_token,
                operators,
                sweep: SweepConfig {
                    schedule,
                    schedule_text,
                    batch_size,
                },
                prober: ProberSettings {
                    concurrency: probe_concurrency,
                    poll_interval,
                },
                alerts,
                alert_poll_interval,
                projects,
                shown,
            }),
            _ => Err(ConfigError(errors)),
        }
    }

    /// The effective settings as TOML, every layer applied, with every
    /// secret redacted: derived from the settings read, whose secrets
    /// serialise redacted.
    pub fn redacted(&self) -> String {
        let overridden: Vec<String> = self
            .alerts
            .templates
            .overridden
            .iter()
            .map(|p| toml::Value::String(p.display().to_string()).to_string())
            .collect();
        let mut shown = format!(
            "# alert templates overridden: [{}]\n{}",
            overridden.join(", "),
            self.shown
        );
        if !shown.ends_with('\n') {
            shown.push('\n');
        }
        shown
    }
}

/// A project variable that configures no project.
fn not_configuring(variable: &str, project: &str) -> String {
    format!(
        "{variable} is set, but the config file has no project `{project}`; set ASSAY_PROJECT to the project it configures"
    )
}

/// Checks one project's table; problems go to `errors`. `process_env`
/// gives the variables that probe header values name.
fn check_project(
    name: &str,
    raw: RawProject,
    process_env: &dyn Fn(&str) -> Option<String>,
    lease: Option<Duration>,
    errors: &mut Vec<String>,
) -> ProjectConfig {
    let what = format!("project `{name}`");
    let secrets = raw
        .stripe_webhook_secret
        .as_ref()
        .map(|s| s.secrets())
        .unwrap_or_default();
    for (i, secret) in secrets.iter().enumerate() {
        if !secret.expose().starts_with("whsec_") {
            errors.push(format!(
                "{what}: webhook secret #{} does not start with `whsec_`; copy the signing secret of the Stripe endpoint",
                i + 1
            ));
        }
    }
    let api_key = match (raw.api_key, raw.api_key_sha256) {
        (Some(key), None) => {
            if key.expose().len() < 16 {
                errors.push(format!(
                    "{what}: the API key is shorter than 16 characters; use a long random token"
                ));
            }
            Some(ApiKeyHash::of(key.expose()))
        }
        (None, Some(digest)) => ApiKeyHash::from_hex(digest.expose()).or_else(|| {
            errors.push(format!(
                "{what}: api_key_sha256 must be 64 hex characters (the SHA-256 of the key)"
            ));
            None
        }),
        (Some(_), Some(_)) => {
            errors.push(format!("{what}: set api_key or api_key_sha256, not both"));
            None
        }
        (None, None) => None,
    };
    let plan_map = match raw.plan_map {
        Some(TextOrTable::Text(text)) => PlanMap::from_str(&text),
        Some(TextOrTable::Table(table)) => PlanMap::new(table),
        None => Ok(PlanMap::default()),
    }
    .unwrap_or_else(|e| {
        errors.push(format!("{what}: ASSAY_PLAN_MAP / plan_map: {e}"));
        PlanMap::default()
    });
    let priority = raw
        .plan_priority
        .as_ref()
        .map(|p| p.items())
        .unwrap_or_default();
    let plan_map = plan_map.with_priority(priority);
    let grace_period = parse_duration(
        &format!("{what}: ASSAY_GRACE_PERIOD / grace_period"),
        raw.grace_period.as_deref().unwrap_or_default(),
        errors,
    );
    let probe = ProbeConfig::load(&what, raw.probe, process_env, errors).map(Arc::new);
    let channels = crate::alert::settings::load_channels(&what, raw.channels, errors);
    let drill = DrillSettings::load(&what, raw.drill, &plan_map, errors);
    if let (Some(probe), Some(lease)) = (&probe, lease)
        && probe.timeout >= lease
    {
        errors.push(format!(
            "{what}: ASSAY_PROBE_TIMEOUT ({}) must be shorter than ASSAY_LEASE_DURATION ({}), \
             or a slow probe could be claimed and sent twice",
            humantime::format_duration(probe.timeout),
            humantime::format_duration(lease)
        ));
    }
    let paused_keeps_access = boolean(
        &format!("{what}: ASSAY_PAUSED_KEEPS_ACCESS / paused_keeps_access"),
        raw.paused_keeps_access.as_ref(),
        false,
        errors,
    );
    let reconciled_text = raw.deadline_reconciled.unwrap_or_default();
    let access_text = raw.deadline_access_asserted.unwrap_or_default();
    let reconciled = parse_duration(
        &format!("{what}: ASSAY_DEADLINE_RECONCILED / deadline_reconciled"),
        &reconciled_text,
        errors,
    );
    let access_asserted = parse_duration(
        &format!("{what}: ASSAY_DEADLINE_ACCESS_ASSERTED / deadline_access_asserted"),
        &access_text,
        errors,
    );
    if let (Some(r), Some(a)) = (reconciled, access_asserted)
        && a < r
    {
        errors.push(format!(
            "{what}: the access_asserted deadline ({access_text}) comes before the reconciled deadline ({reconciled_text}); access is granted after reconciliation"
        ));
    }
    ProjectConfig {
        name: name.to_owned(),
        webhook_secrets: secrets,
        api_key,
        plan_map,
        deadlines: Deadlines {
            reconciled: reconciled.unwrap_or_default(),
            access_asserted: access_asserted.unwrap_or_default(),
        },
        grace_period: grace_period.unwrap_or_default(),
        paused_keeps_access,
        probe,
        channels,
        drill,
    }
}

#[cfg(test)]
mod tests {
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
        assert!(err.to_string().contains("planmap"), "{err}");
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
            "does not render",
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
}
