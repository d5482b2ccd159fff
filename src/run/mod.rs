//! Runs and their stages: the one place where a run changes stage or
//! status. Opening and the run's shape are here; [`report`] applies the
//! app's stage reports and the other side's delivery, [`order`] settles
//! which event of a subject is current, [`probe`] applies what a probe saw,
//! [`drill`] what a failure drill does to its run, and [`expiry`] fails an
//! overdue run and names what it missed.
//!
//! Everything here is pure: the store loads a [`Run`], calls one of the
//! transitions, and writes back the run with the timeline entries the
//! transition returned, in one transaction. The incident an expiry calls for
//! is built by the caller ([`crate::incident`]), from what the run missed.

mod drill;
mod expiry;
mod order;
mod probe;
mod report;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

pub use expiry::{Failure, Missed};
pub use order::{Settled, Subject, settle_opened, settle_order};
#[cfg(test)]
pub(crate) use probe::tests as probe_tests;
pub use probe::{Observation, ProbeAttempt, ProbeStart};

pub use crate::names::UnknownName;
use crate::names::named_enum;

/// The workflow every run belongs to until more workflows exist.
pub const BILLING_WORKFLOW: &str = "billing";

/// The plan name that means "no paid access".
pub const NO_PLAN: &str = "none";

named_enum! {
    /// Stages in the order a healthy run passes them.
    Stage, "stage" {
        Received => "received",
        Reconciled => "reconciled",
        AccessAsserted => "access_asserted",
        Closed => "closed",
    }
}

impl Stage {
    /// Stages the app reports; `received` is set by opening a run and
    /// `closed` by Assay itself.
    pub fn is_reportable(self) -> bool {
        matches!(self, Stage::Reconciled | Stage::AccessAsserted)
    }
}

named_enum! {
    RunStatus, "status" {
        Open => "open",
        Succeeded => "succeeded",
        Failed => "failed",
        Superseded => "superseded",
    }
}

named_enum! {
    /// Who said what happened to a run.
    Source, "source" {
        Stripe => "stripe",
        Sdk => "sdk",
        Probe => "probe",
        Sweeper => "sweeper",
        Drill => "drill",
    }
}

/// How long a run may take to reach each stage, counted from when it opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub reconciled: Duration,
    pub access_asserted: Duration,
}

/// What the customer's access should be once the app has processed an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// Exactly this plan; `none` means no paid access.
    Plan(String),
    /// A failed payment inside the grace period: access must *not* be
    /// revoked before `until`. `plan`, when known, is the plan that stays.
    KeepAccess {
        plan: Option<String>,
        until: DateTime<Utc>,
    },
    /// An entitlement summary: exactly these feature lookup keys.
    Features(BTreeSet<String>),
    /// The event cannot tell; the reason is kept as evidence.
    Unknown { reason: String },
}

impl Expectation {
    pub fn is_known(&self) -> bool {
        !matches!(self, Expectation::Unknown { .. })
    }
}

/// Everything needed to open a run, from a Stripe event or from the SDK.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub project: String,
    pub workflow: String,
    pub event_id: String,
    pub event_type: String,
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    pub expectation: Expectation,
    pub livemode: Option<bool>,
    /// When the event happened (Stripe's `created`), if known.
    pub event_created_at: Option<DateTime<Utc>>,
    pub deadlines: Deadlines,
    pub source: Source,
    /// When Assay starts probing the app for this run; `None`: no probe.
    pub probe_start: Option<ProbeStart>,
    /// The failure drill this run belongs to: a drill run is never counted
    /// or alerted as a real customer's.
    pub drill_id: Option<Uuid>,
}

/// One entry of a run's timeline: a stage report, a delivery, a verdict.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    #[serde(with = "crate::time::millis")]
    pub at: DateTime<Utc>,
    pub source: Source,
    pub stage: Stage,
    /// What the entry did to the run.
    pub outcome: Outcome,
    pub evidence: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Run {
    pub id: Uuid,
    pub project: String,
    pub workflow: String,
    pub event_id: String,
    pub event_type: String,
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    pub expected_plan: Option<String>,
    /// Why `expected_plan` is null, when it is.
    pub expected_plan_reason: Option<String>,
    /// For an entitlement summary: the feature lookup keys expected, sorted.
    pub expected_features: Option<Vec<String>>,
    /// For a failed payment: access must not be revoked before this time.
    #[serde(default, with = "crate::time::millis::option")]
    pub keep_access_until: Option<DateTime<Utc>>,
    pub observed_plan: Option<String>,
    pub observed_features: Option<Vec<String>>,
    pub deploy_sha: Option<String>,
    pub livemode: Option<bool>,
    pub stage: Stage,
    pub status: RunStatus,
    /// When the event happened: Stripe's `created`, or when the run opened
    /// until Stripe's delivery says. Orders events of one subscription.
    #[serde(with = "crate::time::millis")]
    pub event_created_at: DateTime<Utc>,
    /// The newer run that replaced what this one expected.
    pub superseded_by: Option<Uuid>,
    /// When Assay starts probing the app for this run; `None`: no probe.
    pub probe_start: Option<ProbeStart>,
    #[serde(with = "crate::time::millis")]
    pub opened_at: DateTime<Utc>,
    #[serde(with = "crate::time::millis")]
    pub reconciled_due_at: DateTime<Utc>,
    #[serde(with = "crate::time::millis")]
    pub access_due_at: DateTime<Utc>,
    /// The deadline of the next stage the run is waiting for; null once the
    /// run has ended. The sweeper reads only this column (through an index).
    #[serde(default, with = "crate::time::millis::option")]
    pub deadline_at: Option<DateTime<Utc>>,
    #[serde(default, with = "crate::time::millis::option")]
    pub closed_at: Option<DateTime<Utc>>,
    /// The failure drill this run belongs to, if it is a drill's.
    pub drill_id: Option<Uuid>,
}

/// A stage report from the app or from a probe.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StageReport {
    pub observed_plan: Option<String>,
    /// The feature lookup keys the customer has (entitlement runs).
    pub observed_features: Option<Vec<String>>,
    pub deploy_sha: Option<String>,
    /// The plan the app reconciled to; fills in an expectation the Stripe
    /// event could not tell (a checkout session carries no line items).
    pub expected_plan: Option<String>,
    pub evidence: Option<Value>,
    /// The caller's W3C trace id, when the report came with a
    /// `traceparent`: the timeline links to the app's trace.
    pub trace_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error(
        "stage `{0}` is set by Assay and cannot be reported; report `reconciled` or `access_asserted`"
    )]
    NotReportable(Stage),
    #[error(
        "an `access_asserted` report needs `observed_plan` (the plan the customer has now) or `observed_features`"
    )]
    MissingObservedPlan,
}

/// What a stage report did, beyond the timeline entries.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOutcome {
    pub timeline: Vec<TimelineEntry>,
    /// The app now shows the access that was paid for, after the run had
    /// already failed: its open incidents resolve themselves.
    pub access_now_matches: bool,
    /// The run just reached the stage its probing waits for.
    pub start_probing: bool,
}

/// How what the app shows compares with what the run expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Matches,
    /// Nothing to compare against, and the app shows paid access: the app's
    /// word is the best evidence there is.
    AcceptedWithoutExpectation,
    Mismatch,
}

named_enum! {
    /// What a timeline entry did to its run.
    Outcome, "timeline outcome" {
        /// The run opened, at `received`.
        Opened => "opened",
        /// The other side (Stripe or the app) sent the event again, and
        /// filled in what the run did not know yet.
        Confirmed => "confirmed",
        /// A report moved the run to a later stage.
        Advanced => "advanced",
        /// A report of a stage the run had already reached.
        Recorded => "recorded",
        /// A report after the run had ended, kept as evidence.
        RecordedAfterClose => "recorded_after_close",
        /// The app shows the access the run expects.
        Matched => "matched",
        /// Nothing to compare against, and the app shows paid access.
        AcceptedWithoutExpectation => "accepted_without_expectation",
        /// The app shows other access than the run expects.
        PlanMismatch => "plan_mismatch",
        /// Access matches after the run had failed: its incidents resolve.
        AccessNowMatches => "access_now_matches",
        /// The run closed: access confirmed.
        Succeeded => "succeeded",
        /// A newer event of the same subject replaced the run.
        Superseded => "superseded",
        /// The sweeper failed the overdue run.
        Failed => "failed",
        /// A failure drill's probe, counted as access that did not change.
        DrillMismatch => "drill_mismatch",
        /// A failure drill ended its run before the sweeper judged it.
        EndedByDrill => "ended_by_drill",
    }
}

/// Whose run this is: a real customer's, or a failure drill's. Each concern
/// of the domain that treats drills apart (the deadlines a run opens with,
/// what is counted, where alerts go, what an incident says) asks this one
/// policy; the store keeps it as the run's `drill_id`, by which its reads
/// keep drills apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Realm {
    Customer,
    /// The failure drill of this id.
    Drill(Uuid),
}

impl Realm {
    pub fn of(drill_id: Option<Uuid>) -> Realm {
        drill_id.map_or(Realm::Customer, Realm::Drill)
    }

    pub fn is_drill(self) -> bool {
        matches!(self, Realm::Drill(_))
    }

    /// Whether what happens in this realm is counted in the metrics: a
    /// drill's runs, incidents and alerts are not a customer's.
    pub fn counted(self) -> bool {
        !self.is_drill()
    }
}

/// The longest id, plan name or filter value Assay accepts, from Stripe or
/// from the app: PostgreSQL cannot index a value of a few KiB, and no
/// Stripe id comes near it.
pub const MAX_FIELD_LEN: usize = 255;

/// An id, plan name or filter value, whoever gives it: 1 to 255 characters,
/// not only spaces, none of them control characters (which no terminal,
/// page or filter shows faithfully; PostgreSQL cannot even store a NUL).
pub fn is_clean_field(value: &str) -> bool {
    !value.trim().is_empty() && value.len() <= MAX_FIELD_LEN && !value.chars().any(char::is_control)
}

/// `at` plus `d`, saturating at the last instant chrono knows: a huge
/// setting (`300000y` passes the loader) must not overflow, which panics.
pub fn after(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn sorted_set(features: &[String]) -> BTreeSet<&str> {
    features
        .iter()
        .map(|f| f.trim())
        .filter(|f| !f.is_empty())
        .collect()
}

impl Run {
    /// Opens a run at `now`, at stage `received`.
    pub fn open(spec: RunSpec, now: DateTime<Utc>) -> (Run, TimelineEntry) {
        let reconciled_due_at = after(now, spec.deadlines.reconciled);
        let access_due_at = after(now, spec.deadlines.access_asserted);
        let mut run = Run {
            id: Uuid::now_v7(),
            project: spec.project,
            workflow: spec.workflow,
            event_id: spec.event_id,
            event_type: spec.event_type,
            customer_id: spec.customer_id,
            subscription_id: spec.subscription_id,
            expected_plan: None,
            expected_plan_reason: None,
            expected_features: None,
            keep_access_until: None,
            observed_plan: None,
            observed_features: None,
            deploy_sha: None,
            livemode: spec.livemode,
            stage: Stage::Received,
            status: RunStatus::Open,
            event_created_at: spec.event_created_at.unwrap_or(now),
            superseded_by: None,
            probe_start: spec.probe_start,
            opened_at: now,
            reconciled_due_at,
            access_due_at,
            deadline_at: Some(reconciled_due_at.min(access_due_at)),
            closed_at: None,
            drill_id: spec.drill_id,
        };
        run.set_expectation(spec.expectation);
        let entry = TimelineEntry {
            at: now,
            source: spec.source,
            stage: Stage::Received,
            outcome: Outcome::Opened,
            evidence: json!({
                "event_type": run.event_type,
                "expected_plan": run.expected_plan,
                "expected_plan_reason": run.expected_plan_reason,
                "expected_features": run.expected_features,
                "keep_access_until": run.keep_access_until.as_ref().map(crate::time::rfc3339),
                "reconciled_due_at": crate::time::rfc3339(&run.reconciled_due_at),
                "access_asserted_due_at": crate::time::rfc3339(&run.access_due_at),
            }),
        };
        (run, entry)
    }

    /// What the run expects, as one value.
    pub fn expectation(&self) -> Expectation {
        if let Some(features) = &self.expected_features {
            return Expectation::Features(features.iter().cloned().collect());
        }
        if let Some(until) = self.keep_access_until {
            return Expectation::KeepAccess {
                plan: self.expected_plan.clone(),
                until,
            };
        }
        match &self.expected_plan {
            Some(plan) => Expectation::Plan(plan.clone()),
            None => Expectation::Unknown {
                reason: self.expected_plan_reason.clone().unwrap_or_default(),
            },
        }
    }

    pub(crate) fn set_expectation(&mut self, expectation: Expectation) {
        let (plan, reason, features, until) = match expectation {
            Expectation::Plan(plan) => (Some(plan), None, None, None),
            Expectation::KeepAccess { plan, until } => {
                let reason = plan.is_none().then(|| {
                    "a failed payment keeps whatever paid plan the customer has".to_owned()
                });
                (plan, reason, None, Some(until))
            }
            Expectation::Features(set) => (
                None,
                Some("an entitlement summary expects features, not a plan".to_owned()),
                Some(set.into_iter().collect()),
                None,
            ),
            Expectation::Unknown { reason } => (None, Some(reason), None, None),
        };
        self.expected_plan = plan;
        self.expected_plan_reason = reason;
        self.expected_features = features;
        self.keep_access_until = until;
    }

    /// How `plan` and `features`, as the app shows them, compare with what
    /// this run expects.
    pub fn verdict(&self, plan: Option<&str>, features: Option<&[String]>) -> Verdict {
        let paid = plan.is_some_and(|p| p != NO_PLAN);
        let matches = match self.expectation() {
            Expectation::Features(expected) => features
                .is_some_and(|f| sorted_set(f) == expected.iter().map(String::as_str).collect()),
            Expectation::KeepAccess { plan: kept, .. } => {
                paid && kept.as_deref().is_none_or(|k| Some(k) == plan)
            }
            Expectation::Plan(expected) => plan == Some(expected.as_str()),
            Expectation::Unknown { .. } if paid => return Verdict::AcceptedWithoutExpectation,
            Expectation::Unknown { .. } => false,
        };
        if matches {
            Verdict::Matches
        } else {
            Verdict::Mismatch
        }
    }

    /// Whose run this is.
    pub fn realm(&self) -> Realm {
        Realm::of(self.drill_id)
    }

    /// The deadline of the stage this open run waits for next.
    fn next_deadline(&self) -> DateTime<Utc> {
        match self.stage {
            Stage::Received => self.reconciled_due_at.min(self.access_due_at),
            _ => self.access_due_at,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_huge_deadline_saturates_instead_of_overflowing() {
        let now = Utc::now();
        let huge = Duration::from_secs(300_000 * 365 * 24 * 3600);
        assert_eq!(after(now, huge), DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            after(now, Duration::from_secs(60)),
            now + chrono::Duration::seconds(60)
        );
    }

    pub(crate) fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    pub(crate) fn spec(expectation: Expectation) -> RunSpec {
        RunSpec {
            project: "default".into(),
            workflow: BILLING_WORKFLOW.into(),
            event_id: "evt_1".into(),
            event_type: "checkout.session.completed".into(),
            customer_id: Some("cus_1".into()),
            subscription_id: Some("sub_1".into()),
            expectation,
            livemode: Some(false),
            event_created_at: None,
            probe_start: None,
            drill_id: None,
            deadlines: Deadlines {
                reconciled: Duration::from_secs(120),
                access_asserted: Duration::from_secs(600),
            },
            source: Source::Stripe,
        }
    }

    pub(crate) fn pro_run() -> Run {
        Run::open(spec(Expectation::Plan("pro".into())), t0()).0
    }

    pub(crate) fn secs(s: i64) -> DateTime<Utc> {
        t0() + chrono::Duration::seconds(s)
    }

    /// The app reports `reconciled` at `at`.
    pub(crate) fn reconcile(run: &mut Run, at: DateTime<Utc>) -> ReportOutcome {
        run.report(Stage::Reconciled, StageReport::default(), Source::Sdk, at)
            .unwrap()
    }

    pub(crate) fn access(plan: &str) -> StageReport {
        StageReport {
            observed_plan: Some(plan.into()),
            ..Default::default()
        }
    }

    #[test]
    fn opening_waits_for_reconciliation_first() {
        let run = pro_run();
        assert_eq!(run.stage, Stage::Received);
        assert_eq!(run.status, RunStatus::Open);
        assert_eq!(run.deadline_at, Some(secs(120)));
    }

    #[test]
    fn names_parse_and_reject_clearly() {
        assert_eq!(
            "access_asserted".parse::<Stage>(),
            Ok(Stage::AccessAsserted)
        );
        let err = "shipped".parse::<Stage>().unwrap_err().to_string();
        assert!(
            err.contains("shipped") && err.contains("reconciled"),
            "{err}"
        );
        assert_eq!("failed".parse::<RunStatus>(), Ok(RunStatus::Failed));
        assert!("done".parse::<RunStatus>().is_err());
    }

    #[test]
    fn only_drills_are_kept_out_of_the_count() {
        let run = pro_run();
        assert_eq!(run.realm(), Realm::Customer);
        assert!(run.realm().counted());
        let drill = Uuid::now_v7();
        let drill_run = Run {
            drill_id: Some(drill),
            ..pro_run()
        };
        assert_eq!(drill_run.realm(), Realm::Drill(drill));
        assert!(!drill_run.realm().counted());
    }
}
