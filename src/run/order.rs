//! Stripe does not deliver in order: the events of one subject (a
//! subscription, or a customer without one) settle which of their runs is
//! current, by when each event happened.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Outcome, Run, RunStatus, Source, TimelineEntry};
use crate::time::rfc3339;

/// What a run is about, for ordering its events: its subscription, or its
/// customer when the event names no subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Subscription(String),
    Customer(String),
}

impl Run {
    /// What this run is about, for ordering.
    pub fn subject(&self) -> Option<Subject> {
        match (&self.subscription_id, &self.customer_id) {
            (Some(sub), _) => Some(Subject::Subscription(sub.clone())),
            (None, Some(cus)) => Some(Subject::Customer(cus.clone())),
            (None, None) => None,
        }
    }

    /// The runs this one is ordered among: its subject's, within its
    /// project and workflow (two projects may watch one Stripe account and
    /// receive the same events; each orders its own runs).
    pub fn order_scope(&self) -> Option<(String, String, Subject)> {
        Some((self.project.clone(), self.workflow.clone(), self.subject()?))
    }

    /// Events of one subject are ordered by when they happened, then by id
    /// (Stripe's `created` has one-second resolution).
    pub fn order_key(&self) -> (DateTime<Utc>, &str) {
        (self.event_created_at, &self.event_id)
    }

    /// Ends this open run because `newer`, a later event about the same
    /// subject, replaced what it expected. A superseded run never raises an
    /// incident. `None` when the run has already ended.
    pub fn supersede(&mut self, newer: &Run, now: DateTime<Utc>) -> Option<TimelineEntry> {
        if self.status != RunStatus::Open {
            return None;
        }
        self.status = RunStatus::Superseded;
        self.superseded_by = Some(newer.id);
        self.deadline_at = None;
        self.closed_at = Some(now);
        Some(TimelineEntry {
            at: now,
            source: Source::Stripe,
            stage: self.stage,
            outcome: Outcome::Superseded,
            evidence: json!({
                "superseded_by": newer.id,
                "newer_event_id": newer.event_id,
                "newer_event_type": newer.event_type,
                "newer_event_created_at": rfc3339(&newer.event_created_at),
            }),
        })
    }
}

/// Stripe does not deliver in order. When `new` opens (or learns its
/// subject), it and the other runs of its subject settle who is current:
/// if a newer event's run exists, `new` is superseded by the newest one;
/// otherwise `new` supersedes every older run still open. Returns the
/// timeline entries for each run it changed: `None` for `new`, `Some(i)` for
/// `others[i]`.
pub fn settle_order(
    new: &mut Run,
    others: &mut [Run],
    now: DateTime<Utc>,
) -> Vec<(Option<usize>, TimelineEntry)> {
    let mut changed = Vec::new();
    let newest_newer = others
        .iter()
        .filter(|other| other.id != new.id && other.order_key() > new.order_key())
        .max_by(|a, b| a.order_key().cmp(&b.order_key()));
    if let Some(newer) = newest_newer {
        if let Some(entry) = new.supersede(newer, now) {
            changed.push((None, entry));
        }
        return changed;
    }
    for (i, other) in others.iter_mut().enumerate() {
        if other.id != new.id
            && other.order_key() < new.order_key()
            && let Some(entry) = other.supersede(new, now)
        {
            changed.push((Some(i), entry));
        }
    }
    changed
}

/// A run a batch settle changed (see [`settle_opened`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// `opened[i]`.
    Opened(usize),
    /// `stored[i]`.
    Stored(usize),
}

/// Settles runs opened together (one group commit) exactly as if each had
/// opened alone, in turn, in `opened`'s order: `opened[i]` meets the stored
/// runs of its scope (`Run::order_scope`) and the batch's runs before it,
/// never those after (which meet it in their turn). `stored` holds what
/// `settle_order`'s read finds for the batch's scopes: runs whose event is
/// delivered, open or of a newer event. Each settles at its own opening
/// time, as a lone opening does. Returns every change in the order made.
pub fn settle_opened(opened: &mut [Run], stored: &mut [Run]) -> Vec<(Settled, TimelineEntry)> {
    type Scope = (String, String, Subject);
    let mut members: std::collections::HashMap<Scope, Vec<Settled>> =
        std::collections::HashMap::new();
    for (i, run) in stored.iter().enumerate() {
        if let Some(scope) = run.order_scope() {
            members.entry(scope).or_default().push(Settled::Stored(i));
        }
    }
    let mut changes = Vec::new();
    for i in 0..opened.len() {
        let Some(scope) = opened[i].order_scope() else {
            continue;
        };
        let group = members.entry(scope).or_default();
        let (before, rest) = opened.split_at_mut(i);
        let new = &mut rest[0];
        let mut others: Vec<Run> = group
            .iter()
            .map(|m| match *m {
                Settled::Stored(j) => stored[j].clone(),
                Settled::Opened(j) => before[j].clone(),
            })
            .collect();
        let now = new.opened_at;
        for (which, entry) in settle_order(new, &mut others, now) {
            let changed = match which {
                None => Settled::Opened(i),
                Some(k) => {
                    match group[k] {
                        Settled::Stored(j) => stored[j] = others[k].clone(),
                        Settled::Opened(j) => before[j] = others[k].clone(),
                    }
                    group[k]
                }
            };
            changes.push((changed, entry));
        }
        group.push(Settled::Opened(i));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::super::tests::{access, spec, t0};
    use super::super::*;
    use proptest::prelude::*;

    /// Event `i` of one subscription, created `i` seconds after t0.
    fn event_run(i: usize, now: DateTime<Utc>) -> Run {
        let spec = RunSpec {
            event_id: format!("evt_{i}"),
            event_created_at: Some(t0() + chrono::Duration::seconds(i as i64)),
            ..spec(Expectation::Plan("pro".into()))
        };
        Run::open(spec, now).0
    }

    /// Delivers the events in `order`, settling each as the store does.
    fn deliver(order: &[usize]) -> Vec<Run> {
        let mut stored: Vec<Run> = Vec::new();
        for (step, &i) in order.iter().enumerate() {
            let now = t0() + chrono::Duration::minutes(step as i64);
            let mut new = event_run(i, now);
            for (which, _) in settle_order(&mut new, &mut stored, now) {
                assert!(which.is_none_or(|i| stored[i].status == RunStatus::Superseded));
            }
            stored.push(new);
        }
        stored
    }

    #[test]
    fn a_late_older_event_opens_superseded_by_the_newest() {
        let runs = deliver(&[2, 0, 1]);
        let newest = runs.iter().find(|r| r.event_id == "evt_2").unwrap();
        assert_eq!(newest.status, RunStatus::Open);
        for old in runs.iter().filter(|r| r.event_id != "evt_2") {
            assert_eq!(old.status, RunStatus::Superseded, "{}", old.event_id);
            assert_eq!(old.superseded_by, Some(newest.id));
            assert_eq!(old.deadline_at, None, "a superseded run is never swept");
        }
    }

    #[test]
    fn only_open_runs_are_superseded() {
        let now = t0();
        let mut old = event_run(0, now);
        old.report(Stage::AccessAsserted, access("pro"), Source::Sdk, now)
            .unwrap();
        let mut others = vec![old];
        let mut new = event_run(1, now);
        assert!(settle_order(&mut new, &mut others, now).is_empty());
        assert_eq!(others[0].status, RunStatus::Succeeded);
    }

    proptest! {
        /// Whatever order Stripe delivers a subscription's events in, and
        /// however often, once all have arrived exactly one run is
        /// current: the newest event's. Every other run is superseded, so
        /// only the newest can ever fail.
        #[test]
        fn only_the_newest_event_stays_current(
            order in Just((0..6).collect::<Vec<usize>>()).prop_shuffle()
        ) {
            let runs = deliver(&order);
            for run in &runs {
                let newest = run.event_id == "evt_5";
                prop_assert_eq!(run.status == RunStatus::Open, newest, "{} {:?}", run.event_id, run.status);
                prop_assert_eq!(run.superseded_by.is_some(), !newest);
            }
        }

        /// Runs opened together in one group commit end as they would
        /// had each opened alone in turn, whatever was stored before the
        /// batch: events of three subscriptions, watched by two
        /// projects (as two endpoints of one Stripe account are), the
        /// first `split` stored one by one, the rest settled as one batch.
        #[test]
        fn a_batch_settles_as_its_runs_would_one_by_one(
            order in Just((0..18).collect::<Vec<usize>>()).prop_shuffle(),
            split in 0..18usize,
        ) {
            let runs: Vec<Run> = order
                .iter()
                .enumerate()
                .map(|(step, &i)| {
                    // Both projects get event `i % 9`, as Stripe sends
                    // one event to every endpoint.
                    let spec = RunSpec {
                        project: format!("project_{}", i / 9),
                        event_id: format!("evt_{}", i % 9),
                        subscription_id: Some(format!("sub_{}", i % 3)),
                        event_created_at: Some(t0() + chrono::Duration::seconds((i % 9) as i64)),
                        ..spec(Expectation::Plan("pro".into()))
                    };
                    Run::open(spec, t0() + chrono::Duration::minutes(step as i64)).0
                })
                .collect();
            let alone = one_by_one(runs.clone());
            let mut stored = one_by_one(runs[..split].to_vec());
            let mut opened = runs[split..].to_vec();
            settle_opened(&mut opened, &mut stored);
            stored.extend(opened);
            prop_assert_eq!(outcome(&stored), outcome(&alone));
        }
    }

    /// Opens each run in turn, settling it against the stored runs of
    /// its subject, as a store that commits one event at a time does.
    fn one_by_one(runs: Vec<Run>) -> Vec<Run> {
        let mut stored: Vec<Run> = Vec::new();
        for mut new in runs {
            let mine: Vec<usize> = (0..stored.len())
                .filter(|&j| {
                    let other = &stored[j];
                    (&other.project, &other.workflow, other.subject())
                        == (&new.project, &new.workflow, new.subject())
                })
                .collect();
            let mut others: Vec<Run> = mine.iter().map(|&j| stored[j].clone()).collect();
            let now = new.opened_at;
            for (which, _) in settle_order(&mut new, &mut others, now) {
                if let Some(k) = which {
                    stored[mine[k]] = others[k].clone();
                }
            }
            stored.push(new);
        }
        stored
    }

    /// Each run's project and event, its status and the run that
    /// superseded it, sorted.
    fn outcome(runs: &[Run]) -> Vec<(String, RunStatus, Option<String>)> {
        let name = |r: &Run| format!("{}/{}", r.project, r.event_id);
        let name_of = |id: Uuid| runs.iter().find(|r| r.id == id).map(name);
        let mut outcome: Vec<_> = runs
            .iter()
            .map(|r| (name(r), r.status, r.superseded_by.and_then(name_of)))
            .collect();
        outcome.sort_by(|a, b| a.0.cmp(&b.0));
        outcome
    }
}
