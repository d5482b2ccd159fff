//! A project's drill settings (`[projects.<name>.drill]`, or the
//! `ASSAY_DRILL_*` variables for the project they configure), validated with
//! the rest of the configuration.

use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::DrillTimings;
use crate::plan::PlanMap;
use crate::run::NO_PLAN;

/// The variables that configure one project's drills.
pub const VARIABLES: [&str; 6] = [
    "ASSAY_DRILL_SCHEDULE",
    "ASSAY_DRILL_DEADLINE",
    "ASSAY_DRILL_SWEEP_GRACE",
    "ASSAY_DRILL_ALERT_TIMEOUT",
    "ASSAY_DRILL_PLAN",
    "ASSAY_DRILL_INGEST_URL",
];

pub const DEFAULT_DEADLINE: &str = "10s";
pub const DEFAULT_SWEEP_GRACE: &str = "30s";
pub const DEFAULT_ALERT_TIMEOUT: &str = "2m";
/// The drill plan when the plan map names none.
pub const FALLBACK_PLAN: &str = "drill";

#[derive(Debug, Clone)]
pub struct DrillSchedule {
    pub schedule: cron::Schedule,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct DrillSettings {
    /// When drills run by themselves; `None`: only on demand.
    pub schedule: Option<DrillSchedule>,
    pub deadline: Duration,
    pub sweep_grace: Duration,
    pub alert_timeout: Duration,
    /// The plan the drill customer pays for.
    pub plan: String,
    /// The plan-map key that gives `plan`, put on the drill event's price.
    pub lookup_key: Option<String>,
    /// Where the drill posts its webhook (`/hooks/stripe/<project>` is
    /// appended): through the ingress Stripe uses, when set; else this
    /// replica's own listener.
    pub ingest_url: Option<url::Url>,
}

impl DrillSettings {
    /// A drill run's deadlines: both stages are due at the drill deadline
    /// (the drill reports `reconciled` itself, at once).
    pub fn deadlines(&self) -> crate::run::Deadlines {
        crate::run::Deadlines {
            reconciled: self.deadline,
            access_asserted: self.deadline,
        }
    }

    pub fn timings(&self) -> DrillTimings {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        DrillTimings {
            deadline_ms: ms(self.deadline),
            sweep_grace_ms: ms(self.sweep_grace),
            alert_timeout_ms: ms(self.alert_timeout),
            plan: self.plan.clone(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileDrill {
    schedule: Option<String>,
    deadline: Option<String>,
    sweep_grace: Option<String>,
    alert_timeout: Option<String>,
    plan: Option<String>,
    ingest_url: Option<String>,
}

impl DrillSettings {
    /// Reads one project's drill settings; problems go to `errors`.
    pub(crate) fn load(
        what: &str,
        file: Option<FileDrill>,
        var: &dyn Fn(&str) -> Option<String>,
        plans: &PlanMap,
        errors: &mut Vec<String>,
    ) -> DrillSettings {
        let file = file.unwrap_or_default();
        // The configuration's one duration check; a bad value is reported
        // and the default stands in, so that loading goes on.
        let mut duration = |name: &str, key: &str, file: Option<String>, default: &str| {
            let text = var(name).or(file).unwrap_or_else(|| default.to_owned());
            crate::config::parse_duration(&format!("{what}: {name} / drill.{key}"), &text, errors)
                .unwrap_or_else(|| humantime::parse_duration(default).unwrap_or_default())
        };
        let deadline = duration(
            "ASSAY_DRILL_DEADLINE",
            "deadline",
            file.deadline,
            DEFAULT_DEADLINE,
        );
        let sweep_grace = duration(
            "ASSAY_DRILL_SWEEP_GRACE",
            "sweep_grace",
            file.sweep_grace,
            DEFAULT_SWEEP_GRACE,
        );
        let alert_timeout = duration(
            "ASSAY_DRILL_ALERT_TIMEOUT",
            "alert_timeout",
            file.alert_timeout,
            DEFAULT_ALERT_TIMEOUT,
        );
        let schedule = var("ASSAY_DRILL_SCHEDULE")
            .or(file.schedule)
            .filter(|text| !matches!(text.trim(), "" | "off" | "never"))
            .and_then(|text| match cron::Schedule::from_str(text.trim()) {
                Ok(schedule) => Some(DrillSchedule {
                    schedule,
                    text: text.trim().to_owned(),
                }),
                Err(e) => {
                    errors.push(format!(
                        "{what}: ASSAY_DRILL_SCHEDULE / drill.schedule: `{text}` is not a cron expression with a seconds field ({e}); e.g. `0 0 4 * * *` for 04:00 every day"
                    ));
                    None
                }
            });
        // The plan a paying drill customer gets: the one named, else the
        // first the plan map gives.
        let plan = var("ASSAY_DRILL_PLAN")
            .or(file.plan)
            .map(|p| p.trim().to_owned())
            .or_else(|| {
                plans
                    .entries()
                    .values()
                    .find(|p| p.as_str() != NO_PLAN)
                    .cloned()
            })
            .unwrap_or_else(|| FALLBACK_PLAN.to_owned());
        if plan.is_empty() || plan == NO_PLAN || plan.len() > 255 {
            errors.push(format!(
                "{what}: ASSAY_DRILL_PLAN / drill.plan: `{plan}` is not a paid plan; a drill customer pays for one"
            ));
        }
        let lookup_key = plans
            .entries()
            .iter()
            .find(|(_, p)| **p == plan)
            .map(|(key, _)| key.clone());
        let ingest_url = var("ASSAY_DRILL_INGEST_URL")
            .or(file.ingest_url)
            .and_then(|text| match url::Url::parse(text.trim()) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                    Some(url)
                }
                _ => {
                    errors.push(format!(
                        "{what}: ASSAY_DRILL_INGEST_URL / drill.ingest_url: `{text}` is not an http or https base URL such as https://assay.example.com"
                    ));
                    None
                }
            });
        DrillSettings {
            schedule,
            deadline,
            sweep_grace,
            alert_timeout,
            plan,
            lookup_key,
            ingest_url,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)], plans: &str) -> (DrillSettings, Vec<String>) {
        let mut errors = Vec::new();
        let var = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let plans: PlanMap = plans.parse().unwrap();
        let settings = DrillSettings::load("project `p`", None, &var, &plans, &mut errors);
        (settings, errors)
    }

    #[test]
    fn defaults_take_the_plan_from_the_plan_map() {
        let (s, errors) = load(&[], "free_key=none,pro_monthly=pro");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.plan, "pro");
        assert_eq!(s.lookup_key.as_deref(), Some("pro_monthly"));
        assert_eq!(s.deadline, Duration::from_secs(10));
        assert!(s.schedule.is_none());
        let (s, _) = load(&[], "");
        assert_eq!((s.plan.as_str(), s.lookup_key), (FALLBACK_PLAN, None));
    }

    #[test]
    fn every_bad_setting_is_reported() {
        let (_, errors) = load(
            &[
                ("ASSAY_DRILL_SCHEDULE", "every tuesday"),
                ("ASSAY_DRILL_DEADLINE", "0s"),
                ("ASSAY_DRILL_PLAN", "none"),
                ("ASSAY_DRILL_INGEST_URL", "ftp://x"),
            ],
            "",
        );
        let all = errors.join("\n");
        for part in [
            "ASSAY_DRILL_SCHEDULE",
            "ASSAY_DRILL_DEADLINE",
            "ASSAY_DRILL_PLAN",
            "ASSAY_DRILL_INGEST_URL",
        ] {
            assert!(all.contains(part), "{part}: {all}");
        }
    }
}
