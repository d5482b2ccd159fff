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
mod project;
mod raw;
mod review;
mod sso;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::access::Role;
use crate::access::sso::{Identity, Refusal, Roles, SignInAs};

use self::layers::Layer;
pub use self::project::ProjectConfig;
use self::project::check_project;
use self::raw::{RawGlobal, RawProject, Shown};
pub use self::sso::SsoSettings;
use crate::alert::settings::{AlertSettings, RawAlerts};
use crate::probe::worker::ProberSettings;
pub use crate::settings::ApiKeyHash;
pub use crate::settings::{Secret, redact_url};
use crate::settings::{TextOrList, duration_or, parse_duration, whole_number};
use crate::store::{DatabaseSettings, is_postgres};

pub const DEFAULT_PROJECT: &str = "default";
/// Above this, one sweep transaction holds too many rows for too long.
pub const MAX_SWEEP_BATCH: u32 = 10_000;
/// The pool size the defaults give.
pub const DEFAULT_DATABASE_MAX_CONNECTIONS: u32 = 10;

/// The process-wide keys: each has the variable `ASSAY_<KEY>`.
const GLOBAL_KEYS: [&str; 22] = [
    "bind",
    "metrics_bind",
    "trusted_proxies",
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
    "watch_interval",
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
    let watch = crate::watch::settings::KEYS
        .iter()
        .map(|k| (variable("WATCH_", k), vec!["watch", *k]));
    own.chain(probe).chain(drill).chain(watch).collect()
}

/// The name the admin token's operator signs in as.
pub const ADMIN_OPERATOR: &str = "admin";

/// A named dashboard operator.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    pub name: String,
    /// The SHA-256 of their token, if they sign in with one.
    pub token: Option<ApiKeyHash>,
    /// Their email, lowercase, if they sign in through the identity
    /// provider.
    pub email: Option<String>,
    pub roles: Roles,
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
pub struct Config {
    pub bind: SocketAddr,
    /// `/metrics` on a listener of its own, and not on `bind`.
    pub metrics_bind: Option<SocketAddr>,
    /// The proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub database: DatabaseSettings,
    pub admin_token: Option<Secret>,
    /// Named dashboard operators, each with the SHA-256 of their token
    /// and their roles.
    pub operators: Vec<OperatorConfig>,
    /// Single sign-on through an OpenID Connect provider, if configured.
    pub sso: Option<SsoSettings>,
    pub sweep: SweepConfig,
    pub prober: ProberSettings,
    pub alerts: AlertSettings,
    /// How often an idle alert sender looks for due deliveries.
    pub alert_poll_interval: Duration,
    /// How often the watcher assesses each project's input.
    pub watch_interval: Duration,
    pub projects: BTreeMap<String, ProjectConfig>,
    /// The settings in effect as `assay check-config` prints them.
    shown: String,
    /// What the settings lack (see `review`).
    warnings: Vec<String>,
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
            found = Some(ADMIN_OPERATOR.to_owned());
        }
        for operator in &self.operators {
            if operator
                .token
                .as_ref()
                .is_some_and(|t| t.matches(presented))
            {
                found = Some(operator.name.clone());
            }
        }
        found
    }

    /// The role of the operator named `operator` in `project`: `admin` for
    /// the admin token's, none for a name the configuration no longer has.
    pub fn role_of(&self, operator: &str, project: &str) -> Option<Role> {
        if operator == ADMIN_OPERATOR {
            return self.admin_token.is_some().then_some(Role::Admin);
        }
        let found = self.operators.iter().find(|o| o.name == operator)?;
        found.roles.in_project(project)
    }

    /// Whom an identity the identity provider vouched for signs in as.
    pub fn sso_sign_in(&self, identity: &Identity) -> Result<SignInAs, Refusal> {
        let Some(sso) = &self.sso else {
            return Err(Refusal::NotAnOperator(identity.subject.clone()));
        };
        crate::access::sso::sign_in_as(
            identity,
            |email| {
                self.operators
                    .iter()
                    .find(|o| o.email.as_deref() == Some(email))
                    .map(|o| o.name.clone())
            },
            |name| name == ADMIN_OPERATOR || self.operators.iter().any(|o| o.name == name),
            &sso.rules(),
        )
    }

    /// The roles that the identity provider's `groups` give now: none once
    /// single sign-on or their rules are gone.
    pub fn group_roles(&self, groups: &[String]) -> Option<Roles> {
        let sso = self.sso.as_ref()?;
        crate::access::sso::roles_for_groups(groups, &sso.groups).map(|(roles, _)| roles)
    }

    /// Whether anyone can sign in to the dashboard.
    pub fn has_sign_in(&self) -> bool {
        self.admin_token.is_some() || !self.operators.is_empty() || self.sso.is_some()
    }

    /// The project a command names with `--project`; without one, the only
    /// project there is.
    pub fn project_named(&self, name: Option<&str>) -> Result<&ProjectConfig, String> {
        let names = || self.projects.keys().cloned().collect::<Vec<_>>().join(", ");
        match name {
            Some(name) => self.projects.get(name).ok_or_else(|| {
                format!(
                    "no project `{name}` is configured; the projects are: {}",
                    names()
                )
            }),
            None if self.projects.len() == 1 => self
                .projects
                .values()
                .next()
                .ok_or_else(|| "no project is configured".to_owned()),
            None => Err(format!(
                "name the project with --project: one of {}",
                names()
            )),
        }
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
        let file_text = file.as_ref().map(Layer::text).unwrap_or_default();
        sources_in_order.extend(file);
        for key in GLOBAL_KEYS {
            let name = variable("", key);
            if let Some(value) = env(&name) {
                sources_in_order.push(Layer::variable(&name, &[key], &value));
            }
        }
        for key in sso::KEYS {
            let name = variable("SSO_", key);
            if let Some(value) = env(&name) {
                sources_in_order.push(Layer::variable(&name, &["sso", key], &value));
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
        let mut layers = sources_in_order;
        // A misspelled variable may be why a setting is missing: those
        // Assay does not read are listed after the errors when it refuses.
        let unknown_variables = || {
            let known: Vec<String> = GLOBAL_KEYS
                .iter()
                .map(|key| variable("", key))
                .chain(sso::KEYS.iter().map(|key| variable("SSO_", key)))
                .chain(project_variables().into_iter().map(|(name, _)| name))
                .chain(channel_variables.iter().map(|name| (*name).to_owned()))
                // Variables a probe header names as `${NAME}` are read too.
                .chain(review::referenced_variables(
                    std::iter::once(file_text.as_str())
                        .chain(sources.env.values().map(String::as_str)),
                ))
                .collect();
            review::unknown_variables(sources.env, &known)
        };
        let refused = |errors: Vec<String>, unknown: Vec<String>| {
            ConfigError(
                errors
                    .into_iter()
                    .chain(unknown.into_iter().map(|line| format!("also: {line}")))
                    .collect(),
            )
        };
        let Some(global) = layers::extract::<RawGlobal>(&mut layers, &[], &mut errors) else {
            return Err(refused(errors, unknown_variables()));
        };

        let bind_text = global.bind.clone().unwrap_or_default();
        let bind = SocketAddr::from_str(&bind_text)
            .map_err(|_| {
                errors.push(format!(
                    "ASSAY_BIND / bind: `{bind_text}` is not an address:port such as 127.0.0.1:8080"
                ))
            })
            .ok();
        let metrics_bind = global.metrics_bind.as_deref().and_then(|text| {
            SocketAddr::from_str(text.trim())
                .map_err(|_| {
                    errors.push(format!(
                        "ASSAY_METRICS_BIND / metrics_bind: `{text}` is not an address:port such as 127.0.0.1:9464"
                    ))
                })
                .ok()
        });
        if metrics_bind.is_some() && metrics_bind == bind {
            errors.push(
                "ASSAY_METRICS_BIND / metrics_bind: must differ from ASSAY_BIND / bind".to_owned(),
            );
        }
        let mut trusted_proxies = Vec::new();
        for text in global
            .trusted_proxies
            .as_ref()
            .map(TextOrList::items)
            .unwrap_or_default()
        {
            match text.parse::<ipnet::IpNet>().or_else(|_| {
                text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)
            }) {
                Ok(net) => trusted_proxies.push(net),
                Err(_) => errors.push(format!(
                    "ASSAY_TRUSTED_PROXIES / trusted_proxies: `{text}` is not an address or CIDR block such as 10.0.0.0/8"
                )),
            }
        }
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
        let watch_interval = duration_or(
            "ASSAY_WATCH_INTERVAL / watch_interval",
            global.watch_interval.as_deref(),
            "30s",
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

        let known_project = |name: &str| global.projects.contains_key(name);
        let mut operators = Vec::new();
        for operator in &global.operators {
            let name = operator.name.trim().to_owned();
            if name.is_empty()
                || name.len() > 64
                || name.chars().any(char::is_control)
                || name == ADMIN_OPERATOR
            {
                errors.push(format!(
                    "operators: `{name}` is not a usable operator name (1 to 64 characters, not `admin`)"
                ));
                continue;
            }
            if operators.iter().any(|o: &OperatorConfig| o.name == name) {
                errors.push(format!("operators: `{name}` is listed twice"));
                continue;
            }
            let roles = sso::roles(
                &format!("operators: `{name}`"),
                operator.role.as_deref(),
                &operator.projects,
                Some(Role::Responder),
                &known_project,
                &mut errors,
            );
            let token = match &operator.token_sha256 {
                Some(hex) => match ApiKeyHash::from_hex(hex.expose()) {
                    Some(token) => Some(token),
                    None => {
                        errors.push(format!(
                            "operators: `{name}`: token_sha256 must be 64 hex characters (the SHA-256 of the token)"
                        ));
                        continue;
                    }
                },
                None => None,
            };
            let email = operator
                .email
                .as_deref()
                .map(|e| e.trim().to_ascii_lowercase());
            match &email {
                None if token.is_none() => {
                    errors.push(format!(
                        "operators: `{name}`: give token_sha256 (to sign in with a token) or email (to sign in through [sso]), or both"
                    ));
                    continue;
                }
                Some(email) if !email.contains('@') || email.chars().any(char::is_whitespace) => {
                    errors.push(format!(
                        "operators: `{name}`: `{email}` is not an email address"
                    ));
                    continue;
                }
                Some(email)
                    if operators
                        .iter()
                        .any(|o: &OperatorConfig| o.email.as_ref() == Some(email)) =>
                {
                    errors.push(format!(
                        "operators: `{name}`: the email `{email}` is another operator's; an email signs in one operator"
                    ));
                    continue;
                }
                _ => {}
            }
            // A token signs in one operator: a shared one would sign in
            // whichever is listed last, with their role.
            let admin_hash = global
                .admin_token
                .as_ref()
                .map(|t| ApiKeyHash::of(t.expose()));
            if token.as_ref().is_some_and(|t| {
                operators
                    .iter()
                    .any(|o: &OperatorConfig| o.token.as_ref() == Some(t))
                    || admin_hash.as_ref() == Some(t)
            }) {
                errors.push(format!(
                    "operators: `{name}`: token_sha256 is another operator's (or the admin token's); every operator needs their own token"
                ));
                continue;
            }
            if let Some(roles) = roles {
                operators.push(OperatorConfig {
                    name,
                    token,
                    email,
                    roles,
                });
            }
        }
        let sso = sso::load(
            &global.sso,
            &known_project,
            &|var| sources.env.get(var).cloned(),
            &mut errors,
        );
        if let Some(sso) = &sso
            && sso.groups.is_empty()
            && operators.iter().all(|o| o.email.is_none())
        {
            errors.push(format!(
                "sso: nobody could sign in through {}: give operators an `email`, or map the provider's groups to roles with [[sso.groups]]",
                sso.provider_name
            ));
        }
        if sso.is_none() && operators.iter().any(|o| o.token.is_none()) {
            errors.push(
                "operators: an operator signs in only by email, but [sso] is not configured (set ASSAY_SSO_ISSUER / sso.issuer and the client)"
                    .to_owned(),
            );
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
            let focus = ["project_defaults".to_owned(), format!("projects.{name}")];
            let Some(mut raw) = layers::extract::<RawProject>(&mut layers, &focus, &mut errors)
            else {
                continue;
            };
            // The variable is the project's key, whichever form the file
            // gives it in.
            if *name == env_project && configures_project && env("ASSAY_API_KEY").is_some() {
                raw.api_key_sha256 = None;
            }
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
                crate::time::written(alerts.timeout),
                crate::time::written(lease)
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

        let unknown_variables = unknown_variables();

        let shown = toml::to_string(&Shown {
            global: &global,
            projects: &raw_projects,
        })
        .map_err(|e| errors.push(format!("the settings cannot be shown as TOML: {e}")))
        .unwrap_or_default();
        match (bind, schedule) {
            (Some(bind), Some(schedule)) if errors.is_empty() => Ok(Config {
                bind,
                metrics_bind,
                trusted_proxies,
                database: DatabaseSettings {
                    url: database_url,
                    max_connections,
                    statement_timeout: statement_timeout.unwrap_or_default(),
                    lease: lease.unwrap_or_default(),
                },
                admin_token: global.admin_token,
                operators,
                sso,
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
                watch_interval,
                projects,
                shown,
                warnings: Vec::new(),
            })
            .map(|mut config| {
                config.warnings = review::warnings(&config, unknown_variables);
                config
            }),
            _ => Err(refused(errors, unknown_variables)),
        }
    }

    /// What the settings lack or hold that looks wrong, though they load:
    /// each names the variable and file key that sets it.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// What is configured and what is missing, in one block, as `serve`
    /// says it on start.
    pub fn summary(&self) -> String {
        review::summary(self)
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
        // What the watcher opens project incidents on, defaults included,
        // as comments: the output stays a configuration file.
        shown.push_str(&format!(
            "# the watcher assesses every project every {}\n",
            crate::time::written(self.watch_interval)
        ));
        for project in self.projects.values() {
            for line in project.watch.describe() {
                shown.push_str(&format!("# project {}: {line}\n", project.name));
            }
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

#[cfg(test)]
mod tests;
