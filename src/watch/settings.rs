//! A project's watch settings: `[projects.<name>.watch]` over
//! `[project_defaults.watch]`, with the `ASSAY_WATCH_<KEY>` variables over
//! both for the project they configure.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::{Scalar, duration_or, text, whole_number};

/// The keys of a project's watch table; each has the variable
/// `ASSAY_WATCH_<KEY>`.
pub const KEYS: [&str; 8] = [
    "silence",
    "silence_floor",
    "silence_factor",
    "silence_learning",
    "silence_min_events",
    "refusals",
    "refusals_window",
    "refusals_min",
];

/// When silence opens an incident: after the usual gap times `factor`, and
/// never before `floor`; not at all until the project has `learning` of
/// history with `min_events` accepted deliveries in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SilenceSettings {
    pub floor: Duration,
    pub factor: u32,
    pub learning: Duration,
    pub min_events: u64,
}

/// When refusals open an incident: `min` refused in a row with no
/// delivery accepted since, the last within `window`; it resolves once a
/// delivery is accepted or none is refused for `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefusalSettings {
    pub window: Duration,
    pub min: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchSettings {
    /// `None`: silence is not watched (`off`).
    pub silence: Option<SilenceSettings>,
    /// `None`: refusals are not watched (`off`).
    pub refusals: Option<RefusalSettings>,
}

/// A project's watch table as the layers give it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of watch settings")]
pub struct RawWatch {
    #[serde(default, deserialize_with = "text")]
    pub silence: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub silence_floor: Option<String>,
    #[serde(default)]
    pub silence_factor: Option<Scalar>,
    #[serde(default, deserialize_with = "text")]
    pub silence_learning: Option<String>,
    #[serde(default)]
    pub silence_min_events: Option<Scalar>,
    #[serde(default, deserialize_with = "text")]
    pub refusals: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub refusals_window: Option<String>,
    #[serde(default)]
    pub refusals_min: Option<Scalar>,
}

/// `on` (or unset) or `off`; anything else is reported.
fn switch(what: &str, value: Option<&str>, errors: &mut Vec<String>) -> bool {
    match value.map(str::trim) {
        None | Some("on" | "auto") => true,
        Some("off") => false,
        Some(other) => {
            errors.push(format!("{what}: `{other}` is neither `on` nor `off`"));
            true
        }
    }
}

impl WatchSettings {
    /// Checks one project's watch table; problems go to `errors`.
    pub fn load(what: &str, raw: RawWatch, errors: &mut Vec<String>) -> WatchSettings {
        let name = |key: &str| {
            format!(
                "{what}: ASSAY_WATCH_{} / watch.{key}",
                key.to_ascii_uppercase()
            )
        };
        let silence_on = switch(&name("silence"), raw.silence.as_deref(), errors);
        let silence = SilenceSettings {
            floor: duration_or(
                &name("silence_floor"),
                raw.silence_floor.as_deref(),
                "30m",
                errors,
            ),
            factor: whole_number(
                &name("silence_factor"),
                raw.silence_factor.as_ref(),
                2..=1000,
                20,
                errors,
            ),
            learning: duration_or(
                &name("silence_learning"),
                raw.silence_learning.as_deref(),
                "1d",
                errors,
            ),
            min_events: whole_number(
                &name("silence_min_events"),
                raw.silence_min_events.as_ref(),
                2..=u64::MAX,
                50,
                errors,
            ),
        };
        let refusals_on = switch(&name("refusals"), raw.refusals.as_deref(), errors);
        let refusals = RefusalSettings {
            window: duration_or(
                &name("refusals_window"),
                raw.refusals_window.as_deref(),
                "1h",
                errors,
            ),
            min: whole_number(
                &name("refusals_min"),
                raw.refusals_min.as_ref(),
                1..=u64::MAX,
                5,
                errors,
            ),
        };
        WatchSettings {
            silence: silence_on.then_some(silence),
            refusals: refusals_on.then_some(refusals),
        }
    }

    /// The settings in words, as `check-config` shows them.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        match &self.silence {
            Some(s) => lines.push(format!(
                "silence: an incident after {} times the usual gap between accepted deliveries at that time of day, and never before {}; learning until {} of history holds {} deliveries",
                s.factor,
                crate::time::written(s.floor),
                crate::time::written(s.learning),
                s.min_events
            )),
            None => lines.push("silence: off".to_owned()),
        }
        match &self.refusals {
            Some(r) => lines.push(format!(
                "refusals: an incident after {} refused deliveries in a row with none accepted, while refusals keep coming within {}",
                r.min,
                crate::time::written(r.window)
            )),
            None => lines.push("refusals: off".to_owned()),
        }
        lines
    }
}

impl Default for WatchSettings {
    fn default() -> WatchSettings {
        WatchSettings::load("", RawWatch::default(), &mut Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_off_and_bad_values() {
        let defaults = WatchSettings::default();
        let silence = defaults.silence.unwrap();
        assert_eq!(
            (silence.floor, silence.factor, silence.min_events),
            (Duration::from_secs(1800), 20, 50)
        );
        assert_eq!(defaults.refusals.unwrap().min, 5);
        let mut errors = Vec::new();
        let off = WatchSettings::load(
            "project `p`",
            RawWatch {
                silence: Some("off".into()),
                refusals: Some("off".into()),
                ..RawWatch::default()
            },
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!((off.silence, off.refusals), (None, None));
        assert_eq!(off.describe(), ["silence: off", "refusals: off"]);
        let _ = WatchSettings::load(
            "project `p`",
            RawWatch {
                silence: Some("sometimes".into()),
                silence_factor: Some(Scalar::Int(1)),
                refusals_window: Some("soon".into()),
                ..RawWatch::default()
            },
            &mut errors,
        );
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("ASSAY_WATCH_SILENCE / watch.silence"));
        assert!(errors[1].contains("ASSAY_WATCH_SILENCE_FACTOR"));
        assert!(errors[2].contains("ASSAY_WATCH_REFUSALS_WINDOW"));
    }
}
