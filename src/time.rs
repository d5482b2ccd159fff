//! Times as Assay shows them everywhere, in the API, the dashboard, alerts
//! and drill reports: RFC 3339 in UTC with milliseconds, such as
//! `2026-11-23T10:00:00.000Z`. Every time Assay keeps has millisecond
//! precision ([`crate::now`]), so nothing is rounded away. Durations are
//! written as an operator writes them in the configuration (`90s`, `24h`,
//! `7d`).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// `at` as Assay shows a time.
pub fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `d` in its largest whole unit (`d`, `h`, `m`, `s`, `ms`, `us`, `ns`), as the
/// configuration takes it back: `90s`, `5m`, `24h` (a day is written in
/// hours, as it usually is), `7d`, `1500ms`.
pub fn written(d: Duration) -> String {
    const UNITS: [(&str, u128); 7] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1000),
        ("ns", 1),
    ];
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_owned();
    }
    UNITS
        .iter()
        .filter(|(unit, size)| ns.is_multiple_of(*size) && !(*unit == "d" && ns == *size))
        .map(|(unit, size)| format!("{}{unit}", ns / size))
        .next()
        .unwrap_or_else(|| format!("{ns}ns"))
}

/// A measured duration of `ms` milliseconds in words, to the precision that
/// matters at its size: `340 ms`, `4.2s`, `45s`, `3m 20s`, `2h 5m`; never
/// a rounded-down `0s`.
pub fn span(ms: i64) -> String {
    let ms = ms.unsigned_abs();
    let secs = ms / 1000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..10_000 => format!("{}.{}s", secs, (ms % 1000) / 100),
        10_000..60_000 => format!("{secs}s"),
        60_000..3_600_000 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// Serde's `with` for a time field: written as [`rfc3339`], read as any
/// RFC 3339 time.
pub mod millis {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d)
    }

    /// The same for an optional time: `null` when absent.
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            at: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::serialize(at, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<DateTime<Utc>>::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_durations_read_as_words() {
        assert_eq!(span(340), "340 ms", "never a misleading 0s");
        assert_eq!(span(4_250), "4.2s");
        assert_eq!(span(45_000), "45s");
        assert_eq!(span(200_000), "3m 20s");
        assert_eq!(span(7_500_000), "2h 5m");
    }

    #[test]
    fn durations_are_written_as_the_configuration_takes_them() {
        let written_as = |ms: u64| written(Duration::from_millis(ms));
        assert_eq!(written_as(90_000), "90s");
        assert_eq!(written_as(300_000), "5m");
        assert_eq!(written_as(86_400_000), "24h");
        assert_eq!(written_as(7 * 86_400_000), "7d");
        assert_eq!(written_as(1500), "1500ms");
        assert_eq!(written_as(0), "0s");
        assert_eq!(
            written(Duration::from_micros(500)),
            "500us",
            "nothing rounded away"
        );
        for ms in [90_000, 300_000, 86_400_000, 7 * 86_400_000, 1500] {
            let back = humantime::parse_duration(&written_as(ms)).unwrap();
            assert_eq!(back, Duration::from_millis(ms), "read back as written");
        }
    }

    /// Every string in `value` that starts as a time does is written as
    /// Assay writes times; how many there were.
    fn times_in(value: &serde_json::Value) -> usize {
        match value {
            serde_json::Value::String(text) if text.len() >= 19 && text.as_bytes()[10] == b'T' => {
                let parsed = DateTime::parse_from_rfc3339(text)
                    .unwrap_or_else(|e| panic!("{text}: {e}"))
                    .with_timezone(&Utc);
                assert_eq!(*text, rfc3339(&parsed), "a time written another way");
                1
            }
            serde_json::Value::Array(items) => items.iter().map(times_in).sum(),
            serde_json::Value::Object(map) => map.values().map(times_in).sum(),
            _ => 0,
        }
    }

    /// Runs, timelines, incidents, deliveries, probe attempts and drills
    /// at whole seconds (where chrono's own format drops the fraction).
    #[test]
    fn every_shown_time_is_written_one_way() {
        use crate::run::tests::{pro_run, t0};
        let run = pro_run();
        let (_, opened) = crate::run::Run::open(
            crate::run::tests::spec(crate::run::Expectation::Plan("pro".into())),
            t0(),
        );
        let mut incident = crate::incident::tests::access_incident("default", "abc123");
        incident.acknowledge(t0()).unwrap();
        incident.resolve(t0(), "fixed".into());
        let delivery = crate::alert::Delivery {
            id: uuid::Uuid::nil(),
            project: "default".into(),
            channel: "ops".into(),
            event: crate::alert::AlertEvent::Opened,
            status: crate::alert::DeliveryStatus::Sent,
            incident_count: 1,
            created_at: t0(),
            next_attempt_at: Some(t0()),
            settled_at: Some(t0()),
            last_error: None,
            attempts: vec![crate::alert::DeliveryAttempt {
                at: t0(),
                duration_ms: 1,
                status_code: Some(200),
                error: None,
            }],
        };
        let probe = crate::run::ProbeAttempt {
            at: t0(),
            duration_ms: 1,
            url: "http://app/access/cus_1".into(),
            status_code: Some(200),
            observed_plan: Some("pro".into()),
            observed_features: None,
            deploy_sha: None,
            error: None,
            matched: true,
        };
        let mut drill = crate::drill::Drill::new(
            "default",
            "billing",
            crate::drill::DrillTrigger::Api,
            crate::drill::DrillTimings {
                deadline_ms: 2_000,
                sweep_grace_ms: 5_000,
                alert_timeout_ms: 10_000,
                plan: "pro".into(),
            },
            Some(t0()),
            t0(),
        );
        drill.apply(crate::drill::StepOutcome::Passed("ok".into()), t0());
        drill.finished_at = Some(t0());
        let shown = [
            serde_json::to_value(&run).unwrap(),
            serde_json::to_value(&opened).unwrap(),
            serde_json::to_value(&incident).unwrap(),
            serde_json::to_value(&delivery).unwrap(),
            serde_json::to_value(&probe).unwrap(),
            serde_json::to_value(&drill).unwrap(),
        ];
        let counted: Vec<usize> = shown.iter().map(times_in).collect();
        // Every time field of each, the evidence's included.
        assert!(counted.iter().all(|n| *n > 0), "{counted:?}");
    }

    #[test]
    fn a_whole_second_keeps_its_milliseconds() {
        let at = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(rfc3339(&at), "2026-11-23T10:00:00.000Z");
        #[derive(serde::Serialize)]
        struct Shown {
            #[serde(with = "millis")]
            at: DateTime<Utc>,
            #[serde(with = "millis::option")]
            never: Option<DateTime<Utc>>,
        }
        let shown = serde_json::to_value(Shown { at, never: None }).unwrap();
        assert_eq!(
            shown,
            serde_json::json!({"at": "2026-11-23T10:00:00.000Z", "never": null})
        );
    }
}
