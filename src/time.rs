//! Times as Assay shows them everywhere, in the API, the dashboard, alerts
//! and drill reports: RFC 3339 in UTC with milliseconds, such as
//! `2026-11-23T10:00:00.000Z`. Every time Assay keeps has millisecond
//! precision ([`crate::now`]), so nothing is rounded away.

use chrono::{DateTime, Utc};

/// `at` as Assay shows a time.
pub fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
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
