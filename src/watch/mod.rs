//! The monitor watches its own input. Assay proves outcomes only for the
//! events it receives, so when its input breaks, quiet would look exactly
//! like health. The watcher notices instead, per project, and opens a
//! project incident (see [`crate::incident`]) that names what is missing:
//!
//! - [`silence`]: no Stripe delivery accepted for far longer than usual;
//! - [`refusals`]: Stripe's deliveries are refused (a secret rotated on one
//!   side only, a skewed clock, a proxy that rewrites requests), with none
//!   accepted.
//!
//! What it learns from is the [`Tally`]: each replica counts the
//! deliveries it accepts and refuses per project, outcome and minute in
//! memory, and the watcher adds those counts to the database each round,
//! so a flood of forged requests costs a counter, never a row per
//! request. The assessments are pure functions of that history and the
//! settings; [`worker`] runs them and opens, keeps up to date and resolves
//! the incidents.

pub mod refusals;
pub mod settings;
pub mod silence;
mod tally;
pub mod worker;

use std::fmt;

use chrono::{DateTime, Utc};

pub use self::settings::{RefusalSettings, SilenceSettings, WatchSettings};
pub use self::tally::{Tally, TallyEntry};
use crate::stripe::Refusal;

/// What a delivery to the webhook endpoint came to, as the tally counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counted {
    /// Stored for the first time: a redelivery or a drill's event is not
    /// traffic, and is not counted.
    Accepted,
    Refused(Refusal),
}

impl Counted {
    pub fn as_str(self) -> &'static str {
        match self {
            Counted::Accepted => "accepted",
            Counted::Refused(reason) => reason.as_str(),
        }
    }

    pub fn parse(text: &str) -> Option<Counted> {
        match text {
            "accepted" => Some(Counted::Accepted),
            other => other.parse().ok().map(Counted::Refused),
        }
    }
}

impl fmt::Display for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The start of the minute `at` is in, in unix milliseconds: the tally's
/// bucket.
pub fn minute_of(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis().div_euclid(60_000) * 60_000
}

/// A duration in words, rounded to the unit that reads at its size:
/// `40 s`, `4 min`, `3 h`, `2 days`. Titles quote figures this way.
pub fn about(ms: i64) -> String {
    let secs = (ms.max(0) + 500) / 1000;
    match secs {
        0..90 => format!("{} s", secs.max(1)),
        90..5400 => format!("{} min", (secs + 30) / 60),
        5400..129_600 => format!("{} h", (secs + 1800) / 3600),
        _ => format!("{} days", (secs + 43_200) / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_their_size() {
        assert_eq!(about(200), "1 s");
        assert_eq!(about(40_000), "40 s");
        assert_eq!(about(4 * 60_000 + 10_000), "4 min");
        assert_eq!(about(3 * 3_600_000 + 60_000), "3 h");
        assert_eq!(about(2 * 86_400_000), "2 days");
    }

    #[test]
    fn outcomes_round_trip() {
        for counted in [
            Counted::Accepted,
            Counted::Refused(Refusal::SignatureMismatch),
            Counted::Refused(Refusal::MalformedEvent),
        ] {
            assert_eq!(Counted::parse(counted.as_str()), Some(counted));
        }
        assert_eq!(Counted::parse("nonsense"), None);
    }
}
