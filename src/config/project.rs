//! One project's settings: what its table (over `project_defaults`, under
//! its variables) is checked into.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::raw::RawProject;
use crate::alert::settings::ChannelConfig;
use crate::drill::settings::DrillSettings;
use crate::plan::PlanMap;
use crate::probe::settings::ProbeConfig;
use crate::run::{Deadlines, ProbeStart};
use crate::settings::{ApiKeyHash, Secret, TextOrTable, boolean, parse_duration};
use crate::watch::WatchSettings;

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
    /// When the watcher opens incidents about this project's input.
    pub watch: WatchSettings,
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

/// Checks one project's table; problems go to `errors`. `process_env`
/// gives the variables that probe header values name.
pub(super) fn check_project(
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
    let watch = WatchSettings::load(&what, raw.watch, errors);
    if let (Some(probe), Some(lease)) = (&probe, lease)
        && probe.timeout >= lease
    {
        errors.push(format!(
            "{what}: ASSAY_PROBE_TIMEOUT ({}) must be shorter than ASSAY_LEASE_DURATION ({}), \
             or a slow probe could be claimed and sent twice",
            crate::time::written(probe.timeout),
            crate::time::written(lease)
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
        watch,
    }
}
