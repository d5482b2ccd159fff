//! Configuration: an optional TOML file, overridden by `ASSAY_*` variables.
//!
//! Everything is validated at once at start-up, and every problem is reported
//! together, so that a broken setting fails `assay check-config` in CI rather
//! than a webhook at 3 a.m.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::alert::settings::{AlertSettings, ChannelConfig, FileAlerts, FileChannel};
use crate::plan::PlanMap;
use crate::probe::settings::{FileProbe, ProbeConfig};
use crate::probe::worker::ProberSettings;
use crate::run::{Deadlines, ProbeStart};
use crate::store::{DatabaseSettings, is_postgres};
use std::sync::Arc;

pub const DEFAULT_PROJECT: &str = "default";
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://assay.db";
pub const DEFAULT_SWEEP_SCHEDULE: &str = "*/5 * * * * *";
pub const DEFAULT_DEADLINE_RECONCILED: &str = "2m";
pub const DEFAULT_DEADLINE_ACCESS_ASSERTED: &str = "10m";
pub const DEFAULT_GRACE_PERIOD: &str = "7d";
pub const DEFAULT_SWEEP_BATCH: u32 = 500;
/// Above this, one sweep transaction holds too many rows for too long.
pub const MAX_SWEEP_BATCH: u32 = 10_000;
pub const DEFAULT_DATABASE_MAX_CONNECTIONS: u32 = 10;
pub const DEFAULT_DATABASE_STATEMENT_TIMEOUT: &str = "10s";
pub const DEFAULT_LEASE_DURATION: &str = "30s";

/// The variables that configure one project (the one `ASSAY_PROJECT` names).
const PROJECT_VARIABLES: [&str; 8] = [
    "ASSAY_STRIPE_WEBHOOK_SECRET",
    "ASSAY_API_KEY",
    "ASSAY_PLAN_MAP",
    "ASSAY_PLAN_PRIORITY",
    "ASSAY_DEADLINE_RECONCILED",
    "ASSAY_DEADLINE_ACCESS_ASSERTED",
    "ASSAY_GRACE_PERIOD",
    "ASSAY_PAUSED_KEEPS_ACCESS",
];

/// A value that must never be printed or logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
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

/// A string, or a list of strings (for secrets, which rotate).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A table, or the `KEY=plan,...` string the environment variable uses.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PlanMapSetting {
    Text(String),
    Table(BTreeMap<String, String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<String>,
    database_url: Option<String>,
    database_max_connections: Option<u32>,
    database_statement_timeout: Option<String>,
    lease_duration: Option<String>,
    admin_token: Option<String>,
    sweep_schedule: Option<String>,
    sweep_batch_size: Option<u32>,
    probe_concurrency: Option<usize>,
    probe_poll_interval: Option<String>,
    public_url: Option<String>,
    alert_templates_dir: Option<String>,
    alert_retry_initial: Option<String>,
    alert_retry_max: Option<String>,
    alert_give_up_after: Option<String>,
    alert_reminder_interval: Option<String>,
    alert_group_threshold: Option<usize>,
    alert_timeout: Option<String>,
    alert_poll_interval: Option<String>,
    #[serde(default)]
    operators: Vec<FileOperator>,
    #[serde(default)]
    projects: BTreeMap<String, FileProject>,
}

/// A named dashboard operator: only the SHA-256 of their token is kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOperator {
    name: String,
    token_sha256: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProject {
    stripe_webhook_secret: Option<OneOrMany>,
    api_key: Option<String>,
    api_key_sha256: Option<String>,
    plan_map: Option<PlanMapSetting>,
    plan_priority: Option<OneOrMany>,
    deadline_reconciled: Option<String>,
    deadline_access_asserted: Option<String>,
    grace_period: Option<String>,
    paused_keeps_access: Option<bool>,
    probe: Option<FileProbe>,
    #[serde(default)]
    channels: Vec<FileChannel>,
    drill: Option<crate::drill::settings::FileDrill>,
}

/// Where the configuration comes from: a file (optional) and a set of
/// environment variables, passed in so that tests need not touch the process
/// environment.
pub struct Sources<'a> {
    pub file: Option<&'a Path>,
    pub env: &'a HashMap<String, String>,
}

fn comma_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(crate) fn parse_duration(what: &str, text: &str, errors: &mut Vec<String>) -> Option<Duration> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => {
            errors.push(format!("{what}: must be longer than zero"));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(format!(
                "{what}: `{text}` is not a duration ({e}); use e.g. `90s`, `5m`, `1h`"
            ));
            None
        }
    }
}

fn valid_project_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl Config {
    /// Reads the file named by `sources.file` or `ASSAY_CONFIG` (if any) and
    /// applies the environment on top.
    pub fn load(sources: Sources<'_>) -> Result<Config, ConfigError> {
        let env = |name: &str| {
            sources
                .env
                .get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let path: Option<PathBuf> = sources
            .file
            .map(Path::to_path_buf)
            .or_else(|| env("ASSAY_CONFIG").map(PathBuf::from));
        let mut file = match &path {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(vec![format!("cannot read {}: {e}", path.display())])
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| {
                    // The message and where, never the quoted line: it may
                    // hold a secret (a password in a mistyped key's value).
                    let at = e
                        .span()
                        .map(|span| {
                            let before = &text[..span.start.min(text.len())];
                            let line = before.matches('\n').count() + 1;
                            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                            format!(" line {line}, column {column}")
                        })
                        .unwrap_or_default();
                    ConfigError(vec![format!(
                        "{}{at}: {}",
                        path.display(),
                        e.message().trim()
                    )])
                })?
            }
        };
        let mut errors = Vec::new();

        let bind_text = env("ASSAY_BIND")
            .map(str::to_owned)
            .or(file.bind.take())
            .unwrap_or_else(|| DEFAULT_BIND.to_owned());
        let bind = SocketAddr::from_str(&bind_text)
            .map_err(|_| {
                errors.push(format!(
                    "ASSAY_BIND / bind: `{bind_text}` is not an address:port such as 127.0.0.1:8080"
                ))
            })
            .ok();

        let database_url = env("ASSAY_DATABASE_URL")
            .map(str::to_owned)
            .or(file.database_url.take())
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !database_url.starts_with("sqlite:") && !is_postgres(&database_url) {
            errors.push(format!(
                "ASSAY_DATABASE_URL / database_url: `{}` is neither `sqlite://PATH` nor `postgres://...`",
                redact_url(&database_url)
            ));
        }
        let max_connections = match env("ASSAY_DATABASE_MAX_CONNECTIONS") {
            Some(text) => text.parse::<u32>().ok(),
            None => file.database_max_connections.or(Some(DEFAULT_DATABASE_MAX_CONNECTIONS)),
        }
        .filter(|n| (1..=1000).contains(n))
        .unwrap_or_else(|| {
            errors.push(
                "ASSAY_DATABASE_MAX_CONNECTIONS / database_max_connections: must be a whole number from 1 to 1000".into(),
            );
            DEFAULT_DATABASE_MAX_CONNECTIONS
        });
        let statement_timeout = parse_duration(
            "ASSAY_DATABASE_STATEMENT_TIMEOUT / database_statement_timeout",
            &env("ASSAY_DATABASE_STATEMENT_TIMEOUT")
                .map(str::to_owned)
                .or(file.database_statement_timeout.take())
                .unwrap_or_else(|| DEFAULT_DATABASE_STATEMENT_TIMEOUT.to_owned()),
            &mut errors,
        );
        let lease = parse_duration(
            "ASSAY_LEASE_DURATION / lease_duration",
            &env("ASSAY_LEASE_DURATION")
                .map(str::to_owned)
                .or(file.lease_duration.take())
                .unwrap_or_else(|| DEFAULT_LEASE_DURATION.to_owned()),
            &mut errors,
        );

        let schedule_text = env("ASSAY_SWEEP_SCHEDULE")
            .map(str::to_owned)
            .or(file.sweep_schedule.take())
            .unwrap_or_else(|| DEFAULT_SWEEP_SCHEDULE.to_owned());
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
        // The same range from the file and the environment: a batch of 0
        // would claim nothing, ever.
        let batch_size = match env("ASSAY_SWEEP_BATCH_SIZE") {
            Some(text) => text.parse::<u32>().ok(),
            None => Some(file.sweep_batch_size.unwrap_or(DEFAULT_SWEEP_BATCH)),
        }
        .filter(|n| (1..=MAX_SWEEP_BATCH).contains(n))
        .unwrap_or_else(|| {
            errors.push(format!(
                "ASSAY_SWEEP_BATCH_SIZE / sweep_batch_size: must be a whole number from 1 to {MAX_SWEEP_BATCH}"
            ));
            DEFAULT_SWEEP_BATCH
        });

        let probe_concurrency = match env("ASSAY_PROBE_CONCURRENCY") {
            Some(text) => text.parse::<usize>().ok(),
            None => Some(file.probe_concurrency.unwrap_or(16)),
        }
        .filter(|n| (1..=4096).contains(n))
        .unwrap_or_else(|| {
            errors.push("ASSAY_PROBE_CONCURRENCY / probe_concurrency: must be a whole number from 1 to 4096".into());
            16
        });
        let poll_interval = parse_duration(
            "ASSAY_PROBE_POLL_INTERVAL / probe_poll_interval",
            &env("ASSAY_PROBE_POLL_INTERVAL")
                .map(str::to_owned)
                .or(file.probe_poll_interval.take())
                .unwrap_or_else(|| "500ms".to_owned()),
            &mut errors,
        )
        .unwrap_or(Duration::from_millis(500));
        let alert_poll_interval = parse_duration(
            "ASSAY_ALERT_POLL_INTERVAL / alert_poll_interval",
            &env("ASSAY_ALERT_POLL_INTERVAL")
                .map(str::to_owned)
                .or(file.alert_poll_interval.take())
                .unwrap_or_else(|| "1s".to_owned()),
            &mut errors,
        )
        .unwrap_or(Duration::from_secs(1));
        let alerts = AlertSettings::load(
            FileAlerts {
                public_url: file.public_url.take(),
                templates_dir: file.alert_templates_dir.take(),
                retry_initial: file.alert_retry_initial.take(),
                retry_max: file.alert_retry_max.take(),
                give_up_after: file.alert_give_up_after.take(),
                reminder_interval: file.alert_reminder_interval.take(),
                group_threshold: file.alert_group_threshold.take(),
                timeout: file.alert_timeout.take(),
            },
            &|var| env(var).map(str::to_owned),
            &bind_text,
            &mut errors,
        );

        let mut operators = Vec::new();
        for operator in std::mem::take(&mut file.operators) {
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
            match ApiKeyHash::from_hex(&operator.token_sha256) {
                Some(hash) => operators.push((name, hash)),
                None => errors.push(format!(
                    "operators: `{name}`: token_sha256 must be 64 hex characters (the SHA-256 of the token)"
                )),
            }
        }

        let admin_token = env("ASSAY_ADMIN_TOKEN")
            .map(str::to_owned)
            .or(file.admin_token.take())
            .map(Secret::new);

        // The unprefixed project variables configure one project: `default`,
        // or the one ASSAY_PROJECT names. With no file they create it.
        let env_project = env("ASSAY_PROJECT").unwrap_or(DEFAULT_PROJECT).to_owned();
        if path.is_none() || file.projects.is_empty() || env("ASSAY_PROJECT").is_some() {
            file.projects.entry(env_project.clone()).or_default();
        } else if !file.projects.contains_key(&env_project) {
            // A variable that configures nothing would be a silent trap.
            for var in PROJECT_VARIABLES
                .iter()
                .chain(&crate::probe::settings::VARIABLES)
                .chain(&crate::alert::settings::VARIABLES)
                .chain(&crate::drill::settings::VARIABLES)
            {
                if env(var).is_some() {
                    errors.push(format!(
                        "{var} is set, but the config file has no project `{env_project}`; set ASSAY_PROJECT to the project it configures"
                    ));
                }
            }
        }
        let mut projects = BTreeMap::new();
        for (name, mut p) in std::mem::take(&mut file.projects) {
            let from_env = |var: &str| if name == env_project { env(var) } else { None };
            if !valid_project_name(&name) {
                errors.push(format!(
                    "project `{name}`: names are 1 to 64 characters of a-z, 0-9, - and _"
                ));
            }
            let secrets = match (
                from_env("ASSAY_STRIPE_WEBHOOK_SECRET"),
                p.stripe_webhook_secret.take(),
            ) {
                (Some(text), _) => comma_list(text),
                (None, Some(OneOrMany::One(text))) => comma_list(&text),
                (None, Some(OneOrMany::Many(list))) => {
                    list.iter().flat_map(|s| comma_list(s)).collect()
                }
                (None, None) => Vec::new(),
            };
            for (i, secret) in secrets.iter().enumerate() {
                if !secret.starts_with("whsec_") {
                    errors.push(format!(
                        "project `{name}`: webhook secret #{} does not start with `whsec_`; copy the signing secret of the Stripe endpoint",
                        i + 1
                    ));
                }
            }
            let api_key = match (from_env("ASSAY_API_KEY").map(str::to_owned), p.api_key.take(), p.api_key_sha256.take()) {
                (Some(key), _, _) | (None, Some(key), None) => {
                    if key.len() < 16 {
                        errors.push(format!(
                            "project `{name}`: the API key is shorter than 16 characters; use a long random token"
                        ));
                    }
                    Some(ApiKeyHash::of(&key))
                }
                (None, None, Some(digest)) => ApiKeyHash::from_hex(&digest).or_else(|| {
                    errors.push(format!(
                        "project `{name}`: api_key_sha256 must be 64 hex characters (the SHA-256 of the key)"
                    ));
                    None
                }),
                (None, Some(_), Some(_)) => {
                    errors.push(format!(
                        "project `{name}`: set api_key or api_key_sha256, not both"
                    ));
                    None
                }
                (None, None, None) => None,
            };
            let plan_map = match (from_env("ASSAY_PLAN_MAP"), p.plan_map.take()) {
                (Some(text), _) => PlanMap::from_str(text),
                (None, Some(PlanMapSetting::Text(text))) => PlanMap::from_str(&text),
                (None, Some(PlanMapSetting::Table(table))) => PlanMap::new(table),
                (None, None) => Ok(PlanMap::default()),
            }
            .unwrap_or_else(|e| {
                errors.push(format!("project `{name}`: ASSAY_PLAN_MAP / plan_map: {e}"));
                PlanMap::default()
            });
            let priority = match (from_env("ASSAY_PLAN_PRIORITY"), p.plan_priority.take()) {
                (Some(text), _) => comma_list(text),
                (None, Some(OneOrMany::One(text))) => comma_list(&text),
                (None, Some(OneOrMany::Many(list))) => list,
                (None, None) => Vec::new(),
            };
            let plan_map = plan_map.with_priority(priority);
            let grace_text = from_env("ASSAY_GRACE_PERIOD")
                .map(str::to_owned)
                .or(p.grace_period.take())
                .unwrap_or_else(|| DEFAULT_GRACE_PERIOD.to_owned());
            let grace_period = parse_duration(
                &format!("project `{name}`: ASSAY_GRACE_PERIOD / grace_period"),
                &grace_text,
                &mut errors,
            );
            let probe = ProbeConfig::load(
                &format!("project `{name}`"),
                p.probe.take(),
                &|var| from_env(var).map(str::to_owned),
                &|var| sources.env.get(var).cloned(),
                &mut errors,
            )
            .map(Arc::new);
            let channels = crate::alert::settings::load_channels(
                &format!("project `{name}`"),
                std::mem::take(&mut p.channels),
                &|var| from_env(var).map(str::to_owned),
                &mut errors,
            );
            let drill = crate::drill::settings::DrillSettings::load(
                &format!("project `{name}`"),
                p.drill.take(),
                &|var| from_env(var).map(str::to_owned),
                &plan_map,
                &mut errors,
            );
            if let (Some(probe), Some(lease)) = (&probe, lease)
                && probe.timeout >= lease
            {
                errors.push(format!(
                    "project `{name}`: ASSAY_PROBE_TIMEOUT ({}) must be shorter than ASSAY_LEASE_DURATION ({}), \
                     or a slow probe could be claimed and sent twice",
                    humantime::format_duration(probe.timeout),
                    humantime::format_duration(lease)
                ));
            }
            let paused_keeps_access = match from_env("ASSAY_PAUSED_KEEPS_ACCESS") {
                Some(text) => match text {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    other => {
                        errors.push(format!(
                            "project `{name}`: ASSAY_PAUSED_KEEPS_ACCESS: `{other}` is not true or false"
                        ));
                        false
                    }
                },
                None => p.paused_keeps_access.unwrap_or(false),
            };
            let reconciled_text = from_env("ASSAY_DEADLINE_RECONCILED")
                .map(str::to_owned)
                .or(p.deadline_reconciled.take())
                .unwrap_or_else(|| DEFAULT_DEADLINE_RECONCILED.to_owned());
            let access_text = from_env("ASSAY_DEADLINE_ACCESS_ASSERTED")
                .map(str::to_owned)
                .or(p.deadline_access_asserted.take())
                .unwrap_or_else(|| DEFAULT_DEADLINE_ACCESS_ASSERTED.to_owned());
            let reconciled = parse_duration(
                &format!("project `{name}`: ASSAY_DEADLINE_RECONCILED / deadline_reconciled"),
                &reconciled_text,
                &mut errors,
            );
            let access_asserted = parse_duration(
                &format!(
                    "project `{name}`: ASSAY_DEADLINE_ACCESS_ASSERTED / deadline_access_asserted"
                ),
                &access_text,
                &mut errors,
            );
            if let (Some(r), Some(a)) = (reconciled, access_asserted)
                && a < r
            {
                errors.push(format!(
                    "project `{name}`: the access_asserted deadline ({access_text}) comes before the reconciled deadline ({reconciled_text}); access is granted after reconciliation"
                ));
            }
            projects.insert(
                name.clone(),
                ProjectConfig {
                    name,
                    webhook_secrets: secrets.into_iter().map(Secret::new).collect(),
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
                },
            );
        }

        if let Some(lease) = lease
            && alerts.timeout >= lease
            && projects.values().any(|p| !p.channels.is_empty())
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

        match (bind, schedule) {
            (Some(bind), Some(schedule)) if errors.is_empty() => Ok(Config {
                bind,
                database: DatabaseSettings {
                    url: database_url,
                    max_connections,
                    statement_timeout: statement_timeout.unwrap_or_default(),
                    lease: lease.unwrap_or_default(),
                },
                admin_token,
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
            }),
            _ => Err(ConfigError(errors)),
        }
    }

    /// The effective settings as TOML, with every secret redacted.
    pub fn redacted(&self) -> String {
        use std::fmt::Write as _;
        let set = |present: bool| q(if present { "[redacted]" } else { "(not set)" });
        let duration = |d: Duration| q(&humantime::format_duration(d).to_string());
        let db = &self.database;
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "bind = {}", q(&self.bind.to_string()));
        let _ = writeln!(out, "database_url = {}", q(&redact_url(&db.url)));
        let _ = writeln!(out, "database_max_connections = {}", db.max_connections);
        let _ = writeln!(
            out,
            "database_statement_timeout = {}",
            duration(db.statement_timeout)
        );
        let _ = writeln!(out, "lease_duration = {}", duration(db.lease));
        let _ = writeln!(out, "admin_token = {}", set(self.admin_token.is_some()));
        for (name, _) in &self.operators {
            let _ = writeln!(out, "# operator {} (token_sha256 redacted)", q(name));
        }
        let _ = writeln!(out, "sweep_schedule = {}", q(&self.sweep.schedule_text));
        let _ = writeln!(out, "sweep_batch_size = {}", self.sweep.batch_size);
        let _ = writeln!(out, "probe_concurrency = {}", self.prober.concurrency);
        let _ = writeln!(
            out,
            "probe_poll_interval = {}",
            duration(self.prober.poll_interval)
        );
        let a = &self.alerts;
        let _ = writeln!(out, "public_url = {}", q(&a.public_url));
        let overridden: Vec<String> = a
            .templates
            .overridden
            .iter()
            .map(|p| q(&p.display().to_string()))
            .collect();
        let _ = writeln!(
            out,
            "# alert templates overridden: [{}]",
            overridden.join(", ")
        );
        let _ = writeln!(out, "alert_retry_initial = {}", duration(a.retry.initial));
        let _ = writeln!(out, "alert_retry_max = {}", duration(a.retry.max));
        let _ = writeln!(
            out,
            "alert_give_up_after = {}",
            duration(a.retry.give_up_after)
        );
        let reminder = a.reminder_interval.map_or_else(|| q("off"), duration);
        let _ = writeln!(out, "alert_reminder_interval = {reminder}");
        let _ = writeln!(out, "alert_group_threshold = {}", a.group_threshold);
        let _ = writeln!(out, "alert_timeout = {}", duration(a.timeout));
        let _ = writeln!(
            out,
            "alert_poll_interval = {}",
            duration(self.alert_poll_interval)
        );
        for p in self.projects.values() {
            // Project names are validated to bare-key characters.
            let _ = writeln!(out, "\n[projects.{}]", p.name);
            let secrets = vec![q("[redacted]"); p.webhook_secrets.len()];
            let _ = writeln!(out, "stripe_webhook_secret = [{}]", secrets.join(", "));
            let _ = writeln!(out, "api_key = {}", set(p.api_key.is_some()));
            let _ = writeln!(
                out,
                "deadline_reconciled = {}",
                duration(p.deadlines.reconciled)
            );
            let _ = writeln!(
                out,
                "deadline_access_asserted = {}",
                duration(p.deadlines.access_asserted)
            );
            let plans: Vec<String> = p
                .plan_map
                .entries()
                .iter()
                .map(|(k, v)| format!("{} = {}", q(k), q(v)))
                .collect();
            let _ = writeln!(out, "plan_map = {}", inline_table(&plans));
            let priority: Vec<String> = p.plan_map.priority().iter().map(|x| q(x)).collect();
            let _ = writeln!(out, "plan_priority = [{}]", priority.join(", "));
            let _ = writeln!(out, "grace_period = {}", duration(p.grace_period));
            let _ = writeln!(out, "paused_keeps_access = {}", p.paused_keeps_access);
            if let Some(probe) = &p.probe {
                let _ = writeln!(out, "\n[projects.{}.probe]", p.name);
                let _ = writeln!(out, "url = {}", q(&probe.url_template));
                let _ = writeln!(out, "method = {}", q(&probe.method));
                let names: Vec<String> = probe
                    .headers
                    .iter()
                    .map(|(n, _)| format!("{} = {}", q(n), q("[redacted]")))
                    .collect();
                let _ = writeln!(out, "headers = {}", inline_table(&names));
                let _ = writeln!(out, "plan_pointer = {}", q(&probe.plan_pointer));
                if let Some(pointer) = &probe.features_pointer {
                    let _ = writeln!(out, "features_pointer = {}", q(pointer));
                }
                let _ = writeln!(out, "deploy_sha_header = {}", q(&probe.deploy_sha_header));
                if let Some(pointer) = &probe.deploy_sha_pointer {
                    let _ = writeln!(out, "deploy_sha_pointer = {}", q(pointer));
                }
                let mut allow: Vec<String> = probe.allow.names.iter().map(|n| q(n)).collect();
                allow.extend(probe.allow.networks.iter().map(|n| q(&n.to_string())));
                let _ = writeln!(out, "allow_hosts = [{}]", allow.join(", "));
                let _ = writeln!(out, "start = {}", q(probe.start.as_str()));
                let _ = writeln!(out, "interval = {}", duration(probe.schedule.initial));
                let _ = writeln!(out, "max_interval = {}", duration(probe.schedule.max));
                let _ = writeln!(
                    out,
                    "resolve_window = {}",
                    duration(probe.schedule.resolve_window)
                );
                let _ = writeln!(out, "timeout = {}", duration(probe.timeout));
                let _ = writeln!(out, "connect_timeout = {}", duration(probe.connect_timeout));
                let _ = writeln!(out, "max_body_bytes = {}", probe.max_body_bytes);
                let _ = writeln!(out, "host_concurrency = {}", probe.host_concurrency);
                let _ = writeln!(out, "host_rate = {}", probe.host_rate);
            }
            for channel in &p.channels {
                use crate::alert::settings::ChannelKind;
                let _ = writeln!(out, "\n[[projects.{}.channels]]", p.name);
                let _ = writeln!(out, "name = {}", q(&channel.name));
                let _ = writeln!(out, "kind = {}", q(channel.kind.as_str()));
                if channel.drill_only {
                    let _ = writeln!(out, "drill = true");
                }
                match &channel.kind {
                    ChannelKind::Slack { .. } => {
                        let _ = writeln!(out, "url = {}", q("[redacted]"));
                    }
                    ChannelKind::Email { smtp_url, from, to } => {
                        let _ = writeln!(out, "smtp_url = {}", q(&redact_url(smtp_url.expose())));
                        let _ = writeln!(out, "from = {}", q(from));
                        let to: Vec<String> = to.iter().map(|t| q(t)).collect();
                        let _ = writeln!(out, "to = [{}]", to.join(", "));
                    }
                    ChannelKind::Webhook { url, .. } => {
                        let _ = writeln!(out, "url = {}", q(&crate::probe::client::shown_url(url)));
                        let _ = writeln!(out, "secret = {}", q("[redacted]"));
                    }
                }
            }
            let drill = &p.drill;
            let _ = writeln!(out, "\n[projects.{}.drill]", p.name);
            if let Some(schedule) = &drill.schedule {
                let _ = writeln!(out, "schedule = {}", q(&schedule.text));
            }
            let _ = writeln!(out, "deadline = {}", duration(drill.deadline));
            let _ = writeln!(out, "sweep_grace = {}", duration(drill.sweep_grace));
            let _ = writeln!(out, "alert_timeout = {}", duration(drill.alert_timeout));
            let _ = writeln!(out, "plan = {}", q(&drill.plan));
            if let Some(url) = &drill.ingest_url {
                let _ = writeln!(
                    out,
                    "ingest_url = {}",
                    q(&crate::probe::client::shown_url(url.as_str()))
                );
            }
        }
        out
    }
}

/// A TOML string literal.
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML inline table of `key = value` entries.
fn inline_table(entries: &[String]) -> String {
    if entries.is_empty() {
        "{}".to_owned()
    } else {
        format!("{{ {} }}", entries.join(", "))
    }
}

/// A database URL with any password replaced, whether it is written before
/// the host or as a `password` query parameter (sqlx reads both).
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("redacted"));
    }
    if parsed.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "redacted".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
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
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://assay:hunter2@db:5432/assay"),
            "postgres://assay:redacted@db:5432/assay"
        );
        assert_eq!(redact_url("sqlite://assay.db"), "sqlite://assay.db");
        let query = redact_url("postgres://db/assay?user=a&password=hunter2&sslmode=require");
        assert!(!query.contains("hunter2"), "{query}");
        assert!(query.contains("sslmode=require"), "{query}");
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
