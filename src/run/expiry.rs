//! Deadlines: an open run whose next deadline has passed fails, and what it
//! missed names the customer-visible outcome that is missing. The incident
//! that tells an operator so is built from that by [`crate::incident`].

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Expectation, NO_PLAN, Outcome, Run, RunStatus, Source, Stage, TimelineEntry};
use crate::names::named_enum;
use crate::time::rfc3339;

named_enum! {
    /// Which customer-visible outcome a failed run is missing. A run has
    /// at most one incident per failure.
    Failure, "run failure" {
        ReconciliationMissing => "reconciliation_missing",
        AccessNotChanged => "access_not_changed",
        AccessNotRevoked => "access_not_revoked",
        AccessRevokedEarly => "access_revoked_early",
    }
}

/// What an overdue run missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    /// The stage whose deadline passed.
    pub stage: Stage,
    pub deadline: DateTime<Utc>,
    /// What the customer sees wrong because of it.
    pub kind: Failure,
}

impl Run {
    /// The stage whose deadline has passed, if the run is overdue at `now`.
    pub fn missed_stage(&self, now: DateTime<Utc>) -> Option<(Stage, DateTime<Utc>)> {
        if self.status != RunStatus::Open {
            return None;
        }
        if self.stage < Stage::Reconciled && self.reconciled_due_at <= now {
            return Some((Stage::Reconciled, self.reconciled_due_at));
        }
        if self.stage < Stage::AccessAsserted && self.access_due_at <= now {
            return Some((Stage::AccessAsserted, self.access_due_at));
        }
        None
    }

    /// The outcome missing for a run that missed `missed`. A run whose
    /// access was observed (and found wrong) fails on that access even when
    /// the app also never reported reconciliation: what the customer has is
    /// the outcome that matters.
    fn missing_outcome(&self, missed: Stage) -> Failure {
        let observed = self.observed_plan.is_some() || self.observed_features.is_some();
        if missed <= Stage::Reconciled && !observed {
            return Failure::ReconciliationMissing;
        }
        match self.expectation() {
            Expectation::Plan(plan) if plan == NO_PLAN => Failure::AccessNotRevoked,
            Expectation::KeepAccess { .. } if self.observed_plan.as_deref() == Some(NO_PLAN) => {
                Failure::AccessRevokedEarly
            }
            _ => Failure::AccessNotChanged,
        }
    }

    /// The sweeper's verdict on an overdue run: it fails, and the caller
    /// opens an incident about what it missed. `None` when the run is not
    /// overdue (it moved on since it was selected).
    pub fn expire(&mut self, now: DateTime<Utc>) -> Option<(Missed, TimelineEntry)> {
        let (stage, deadline) = self.missed_stage(now)?;
        let missed = Missed {
            stage,
            deadline,
            kind: self.missing_outcome(stage),
        };
        self.status = RunStatus::Failed;
        self.deadline_at = None;
        self.closed_at = Some(now);
        let entry = TimelineEntry {
            at: now,
            source: Source::Sweeper,
            stage,
            outcome: Outcome::Failed,
            evidence: json!({
                "missed_stage": stage,
                "deadline_at": rfc3339(&deadline),
                "incident_kind": missed.kind,
            }),
        };
        Some((missed, entry))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{access, pro_run, reconcile, secs, spec, t0};
    use super::super::*;

    #[test]
    fn expiry_names_the_missed_stage() {
        let mut run = pro_run();
        assert!(run.expire(secs(119)).is_none());
        let (missed, entry) = run.expire(secs(120)).unwrap();
        assert_eq!(missed.kind, Failure::ReconciliationMissing);
        assert_eq!(
            (missed.stage, missed.deadline),
            (Stage::Reconciled, secs(120))
        );
        assert_eq!(entry.stage, Stage::Reconciled);
        assert_eq!(entry.outcome, Outcome::Failed);
        assert_eq!(run.status, RunStatus::Failed);
        assert!(
            run.expire(secs(999)).is_none(),
            "a failed run never fails twice"
        );

        let mut run = pro_run();
        reconcile(&mut run, secs(1));
        assert!(run.expire(secs(300)).is_none());
        let (missed, _) = run.expire(secs(600)).unwrap();
        assert_eq!(missed.kind, Failure::AccessNotChanged);
    }

    #[test]
    fn the_missing_outcome_is_what_the_customer_sees_wrong() {
        let failed = |expectation: Expectation, observed: Option<&str>| {
            let mut run = Run::open(spec(expectation), t0()).0;
            if let Some(plan) = observed {
                run.report(Stage::AccessAsserted, access(plan), Source::Sdk, t0())
                    .unwrap();
            }
            run.expire(secs(600)).unwrap().0.kind
        };
        assert_eq!(
            failed(Expectation::Plan(NO_PLAN.into()), Some("pro")),
            Failure::AccessNotRevoked
        );
        let grace = Expectation::KeepAccess {
            plan: None,
            until: secs(3600),
        };
        assert_eq!(failed(grace, Some(NO_PLAN)), Failure::AccessRevokedEarly);
        assert_eq!(
            failed(Expectation::Plan("pro".into()), None),
            Failure::ReconciliationMissing
        );
        assert_eq!(
            failed(Expectation::Plan("pro".into()), Some("starter")),
            Failure::AccessNotChanged
        );
    }
}
