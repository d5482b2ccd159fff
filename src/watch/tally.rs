//! The tally: this replica's count of deliveries per project, outcome and
//! minute, kept in memory between the watcher's rounds. Its size follows
//! the projects, outcomes and minutes since the last round, never the
//! number of requests.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::{Counted, minute_of};

/// One bucket: how many deliveries of one project had one outcome in one
/// minute, and when the first and last of them came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TallyEntry {
    pub project: String,
    pub outcome: Counted,
    /// Unix milliseconds at the minute's start.
    pub minute: i64,
    pub count: u64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
}

impl TallyEntry {
    fn add(&mut self, other: &TallyEntry) {
        self.count += other.count;
        self.first_at = self.first_at.min(other.first_at);
        self.last_at = self.last_at.max(other.last_at);
    }
}

#[derive(Debug, Default)]
pub struct Tally {
    buckets: Mutex<HashMap<(String, Counted, i64), TallyEntry>>,
}

impl Tally {
    /// Counts one delivery of `project` that came to `outcome` at `at`.
    pub fn count(&self, project: &str, outcome: Counted, at: DateTime<Utc>) {
        let minute = minute_of(at);
        let entry = TallyEntry {
            project: project.to_owned(),
            outcome,
            minute,
            count: 1,
            first_at: at,
            last_at: at,
        };
        self.merge(entry);
    }

    fn merge(&self, entry: TallyEntry) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets
            .entry((entry.project.clone(), entry.outcome, entry.minute))
            .and_modify(|e| e.add(&entry))
            .or_insert(entry);
    }

    /// Everything counted since the last take, leaving the tally empty.
    pub fn take(&self) -> Vec<TallyEntry> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut entries: Vec<TallyEntry> = buckets.drain().map(|(_, e)| e).collect();
        entries.sort_by(|a, b| {
            (&a.project, a.outcome, a.minute).cmp(&(&b.project, b.outcome, b.minute))
        });
        entries
    }

    /// Puts back what a take could not store, to be stored with the next.
    pub fn restore(&self, entries: Vec<TallyEntry>) {
        for entry in entries {
            self.merge(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::Refusal;

    #[test]
    fn a_flood_is_one_bucket_per_minute_and_outcome() {
        let tally = Tally::default();
        let t0 = DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        let refused = Counted::Refused(Refusal::SignatureMismatch);
        for i in 0..10_000 {
            tally.count("p", refused, t0 + chrono::Duration::milliseconds(i));
        }
        tally.count("p", Counted::Accepted, t0);
        let entries = tally.take();
        assert_eq!(entries.len(), 2);
        let flood = entries.iter().find(|e| e.outcome == refused).unwrap();
        assert_eq!(flood.count, 10_000);
        assert_eq!(flood.first_at, t0);
        assert_eq!(flood.last_at, t0 + chrono::Duration::milliseconds(9_999));
        assert!(tally.take().is_empty());
        tally.restore(entries);
        tally.count("p", refused, t0);
        let again = tally.take();
        assert_eq!(again.iter().map(|e| e.count).sum::<u64>(), 10_002);
    }
}
