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

/// `d` in its largest whole unit (`d`, `h`, `m`, `s`, `ms`), as the
/// configuration takes it back: `90s`, `5m`, `24h` (a day is written in
/// hours, as it usually is), `7d`, `1500ms`.
pub fn written(d: Duration) -> String {
    const UNITS: [(&str, u128); 4] = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ];
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    UNITS
        .iter()
        .filter(|(unit, size)| ms.is_multiple_of(*size) && !(*unit == "d" && ms == *size))
        .map(|(unit, size)| format!("{}{unit}", ms / size))
        .next()
        .unwrap_or_else(|| format!("{ms}ms"))
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
    fn durations_are_written_as_the_configuration_takes_them() {
        let written_as = |ms: u64| written(Duration::from_millis(ms));
        assert_eq!(written_as(90_000), "90s");
        assert_eq!(written_as(300_000), "5m");
        assert_eq!(written_as(86_400_000), "24h");
        assert_eq!(written_as(7 * 86_400_000), "7d");
        assert_eq!(written_as(1500), "1500ms");
        assert_eq!(written_as(0), "0s");
        for ms in [90_000, 300_000, 86_400_000, 7 * 86_400_000, 1500] {
            let back = humantime::parse_duration(&written_as(ms)).unwrap();
            assert_eq!(back, Duration::from_millis(ms), "read back as written");
        }
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
