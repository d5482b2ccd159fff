//! A project's drill settings: `[projects.<name>.drill]` over
//! `[project_defaults.drill]`, with the `ASSAY_DRILL_<KEY>` variables over
//! both for the project they configure, checked with the rest of the
//! configuration.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::DrillTimings;
use crate::plan::PlanMap;
use crate::run::NO_PLAN;
use crate::settings::{ShownUrl, duration_or, shown_url, text};

/// The keys of a project's drill table; each has the variable
/// `ASSAY_DRILL_<KEY>`.
pub const KEYS: [&str; 6] = [
    "schedule",
    "deadline",
    "sweep_grace",
    "alert_timeout",
    "plan",
    "ingest_url",
];
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

/// A project's drill table as the layers give it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of drill settings")]
pub struct RawDrill {
    #[serde(default, deserialize_with = "text")]
    pub schedule: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub deadline: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub sweep_grace: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub alert_timeout: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub plan: Option<String>,
    #[serde(default)]
    pub ingest_url: Option<ShownUrl>,
}

impl DrillSettings {
    /// Checks one project's drill table; problems go to `errors`.
    pub fn load(
        what: &str,
        raw: RawDrill,
        plans: &PlanMap,
        errors: &mut Vec<String>,
    ) -> DrillSettings {
        let mut duration = |name: &str, key: &str, value: Option<String>| {
            duration_or(
                &format!("{what}: {name} / drill.{key}"),
                value.as_deref(),
                "1s",
                errors,
            )
        };
        let deadline = duration("ASSAY_DRILL_DEADLINE", "deadline", raw.deadline);
        let sweep_grace = duration("ASSAY_DRILL_SWEEP_GRACE", "sweep_grace", raw.sweep_grace);
        let alert_timeout = duration(
            "ASSAY_DRILL_ALERT_TIMEOUT",
            "alert_timeout",
            raw.alert_timeout,
        );
        let schedule = raw
            .schedule
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
        let plan = raw
            .plan
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
        let ingest_url = raw
            .ingest_url
            .map(|url| url.expose().to_owned())
            .and_then(|text| match url::Url::parse(text.trim()) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                    Some(url)
                }
                _ => {
                    errors.push(format!(
                        "{what}: ASSAY_DRILL_INGEST_URL / drill.ingest_url: `{}` is not an http or https base URL such as https://assay.example.com",
                        shown_url(&text)
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

    fn load(raw: RawDrill, plans: &str) -> (DrillSettings, Vec<String>) {
        let mut errors = Vec::new();
        let plans: PlanMap = plans.parse().unwrap();
        let settings = DrillSettings::load("project `p`", raw, &plans, &mut errors);
        (settings, errors)
    }

    /// The table as the defaults layer gives it.
    fn defaults() -> RawDrill {
        RawDrill {
            schedule: Some("off".into()),
            deadline: Some("10s".into()),
            sweep_grace: Some("30s".into()),
            alert_timeout: Some("2m".into()),
            ..RawDrill::default()
        }
    }

    #[test]
    fn defaults_take_the_plan_from_the_plan_map() {
        let (s, errors) = load(defaults(), "free_key=none,pro_monthly=pro");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.plan, "pro");
        assert_eq!(s.lookup_key.as_deref(), Some("pro_monthly"));
        assert_eq!(s.deadline, Duration::from_secs(10));
        assert!(s.schedule.is_none());
        let (s, _) = load(defaults(), "");
        assert_eq!((s.plan.as_str(), s.lookup_key), (FALLBACK_PLAN, None));
    }

    #[test]
    fn every_bad_setting_is_reported() {
        let (_, errors) = load(
            RawDrill {
                schedule: Some("every tuesday".into()),
                deadline: Some("0s".into()),
                plan: Some("none".into()),
                ingest_url: Some(serde_json::from_value(serde_json::json!("ftp://x")).unwrap()),
                ..defaults()
            },
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
