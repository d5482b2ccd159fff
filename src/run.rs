//! Runs and their stages: the one place where a run changes stage or status.
//!
//! Everything here is pure: the store loads a [`Run`], calls one of the
//! transitions below, and writes back the run together with the timeline
//! entries (and incidents) the transition returned, in one transaction.
//! Keeping the rules out of the store is what lets a second backend sit beside
//! the first without repeating them.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::probe::{ProbeAttempt, ProbeStart};

/// The workflow every run belongs to until more workflows exist.
pub const BILLING_WORKFLOW: &str = "billing";

/// The plan name that means "no paid access".
pub const NO_PLAN: &str = "none";

/// A closed set of names that travel as snake_case strings (JSON, SQL, URLs).
/// One definition gives the enum its `as_str`, `Display`, `FromStr` (with an
/// error that lists the valid names) and serde form.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ::serde::Serialize, ::serde::Deserialize, ::utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::run::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| $crate::run::UnknownName {
                    what: $what,
                    value: s.to_owned(),
                    expected: concat!($($text, ", "),+).trim_end_matches(", "),
                })
            }
        }
    };
}
pub(crate) use named_enum;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`; expected one of: {expected}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

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
    pub at: DateTime<Utc>,
    pub source: Source,
    pub stage: Stage,
    /// What the entry did to the run, e.g. `opened`, `advanced`, `recorded`,
    /// `plan_mismatch`, `succeeded`, `superseded`, `failed`.
    pub outcome: String,
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
    pub keep_access_until: Option<DateTime<Utc>>,
    pub observed_plan: Option<String>,
    pub observed_features: Option<Vec<String>>,
    pub deploy_sha: Option<String>,
    pub livemode: Option<bool>,
    pub stage: Stage,
    pub status: RunStatus,
    /// When the event happened: Stripe's `created`, or when the run opened
    /// until Stripe's delivery says. Orders events of one subscription.
    pub event_created_at: DateTime<Utc>,
    /// The newer run that replaced what this one expected.
    pub superseded_by: Option<Uuid>,
    /// When Assay starts probing the app for this run; `None`: no probe.
    pub probe_start: Option<ProbeStart>,
    pub opened_at: DateTime<Utc>,
    pub reconciled_due_at: DateTime<Utc>,
    pub access_due_at: DateTime<Utc>,
    /// The deadline of the next stage the run is waiting for; null once the
    /// run has ended. The sweeper reads only this column (through an index).
    pub deadline_at: Option<DateTime<Utc>>,
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

/// What a run is about, for ordering its events: its subscription, or its
/// customer when the event names no subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Subscription(String),
    Customer(String),
}

fn fmt_deadline(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
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
            outcome: "opened".into(),
            evidence: json!({
                "event_type": run.event_type,
                "expected_plan": run.expected_plan,
                "expected_plan_reason": run.expected_plan_reason,
                "expected_features": run.expected_features,
                "keep_access_until": run.keep_access_until.as_ref().map(fmt_deadline),
                "reconciled_due_at": fmt_deadline(&run.reconciled_due_at),
                "access_asserted_due_at": fmt_deadline(&run.access_due_at),
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

    fn set_expectation(&mut self, expectation: Expectation) {
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

    /// The same event arrived again from the other side (the SDK opened the
    /// run and then Stripe delivered it, or the reverse). Fills in what the
    /// run did not know yet; never overrides what it knew. Returns a timeline
    /// entry when Stripe delivered (a fact worth recording) or something was
    /// filled in; an identical SDK call changes nothing.
    pub fn merge(&mut self, spec: RunSpec, now: DateTime<Utc>) -> Option<TimelineEntry> {
        let mut filled = Vec::new();
        if self.customer_id.is_none() && spec.customer_id.is_some() {
            self.customer_id = spec.customer_id;
            filled.push("customer_id");
        }
        if self.subscription_id.is_none() && spec.subscription_id.is_some() {
            self.subscription_id = spec.subscription_id;
            filled.push("subscription_id");
        }
        if self.livemode.is_none() && spec.livemode.is_some() {
            self.livemode = spec.livemode;
            filled.push("livemode");
        }
        // Stripe's `created` is the true time of the event; the SDK's open
        // only stood in for it.
        if spec.source == Source::Stripe
            && let Some(created) = spec.event_created_at
            && created != self.event_created_at
        {
            self.event_created_at = created;
            filled.push("event_created_at");
        }
        if !self.expectation().is_known() && spec.expectation.is_known() {
            self.set_expectation(spec.expectation);
            filled.push("expectation");
        }
        if filled.is_empty() && spec.source != Source::Stripe {
            return None;
        }
        Some(TimelineEntry {
            at: now,
            source: spec.source,
            stage: Stage::Received,
            outcome: "confirmed".into(),
            evidence: json!({ "filled_in": filled }),
        })
    }

    /// Applies a stage report. Every report lands on the timeline; the run's
    /// stage only ever moves forward, and only an open run moves at all.
    pub fn report(
        &mut self,
        stage: Stage,
        report: StageReport,
        source: Source,
        now: DateTime<Utc>,
    ) -> Result<ReportOutcome, ReportError> {
        if !stage.is_reportable() {
            return Err(ReportError::NotReportable(stage));
        }
        let observed = report
            .observed_plan
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        let features = report.observed_features.as_deref().map(|f| {
            sorted_set(f)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        });
        if stage == Stage::AccessAsserted && observed.is_none() && features.is_none() {
            return Err(ReportError::MissingObservedPlan);
        }

        let mut evidence = json!({
            "observed_plan": observed,
            "observed_features": features,
            "deploy_sha": report.deploy_sha,
            "reported_expected_plan": report.expected_plan,
            "evidence": report.evidence,
        });
        if let Some(trace_id) = &report.trace_id {
            evidence["trace_id"] = json!(trace_id);
        }
        let was_open = self.status == RunStatus::Open;
        if was_open {
            if let Some(sha) = report.deploy_sha.as_ref().filter(|s| !s.trim().is_empty()) {
                self.deploy_sha = Some(sha.trim().to_owned());
            }
            if !self.expectation().is_known()
                && let Some(plan) = report
                    .expected_plan
                    .as_ref()
                    .filter(|p| !p.trim().is_empty())
            {
                self.set_expectation(Expectation::Plan(plan.trim().to_owned()));
            }
        }
        // The latest word on the customer's access, kept even after the run
        // ends so that the incident and the dashboard show it.
        if observed.is_some() {
            self.observed_plan = observed.clone();
        }
        if features.is_some() {
            self.observed_features = features.clone();
        }

        let verdict = (stage == Stage::AccessAsserted)
            .then(|| self.verdict(observed.as_deref(), features.as_deref()));
        let mut timeline = Vec::new();
        let mut access_now_matches = false;
        let outcome = if !was_open {
            if self.status == RunStatus::Failed && verdict == Some(Verdict::Matches) {
                access_now_matches = true;
                "access_now_matches"
            } else {
                "recorded_after_close"
            }
        } else {
            match verdict {
                Some(Verdict::Matches) => "matched",
                Some(Verdict::AcceptedWithoutExpectation) => "accepted_without_expectation",
                Some(Verdict::Mismatch) => "plan_mismatch",
                None if stage > self.stage => "advanced",
                None => "recorded",
            }
        };
        if outcome == "plan_mismatch" {
            evidence["expected_plan"] = json!(self.expected_plan);
            evidence["expected_features"] = json!(self.expected_features);
        }
        timeline.push(TimelineEntry {
            at: now,
            source,
            stage,
            outcome: outcome.into(),
            evidence,
        });

        let mut start_probing = false;
        match outcome {
            "advanced" => {
                start_probing =
                    stage == Stage::Reconciled && self.probe_start == Some(ProbeStart::Reconciled);
                self.stage = stage;
                self.deadline_at = Some(self.next_deadline());
            }
            // The app reports what access the customer has, so it has
            // processed the event: count that as reconciliation. The run then
            // waits for the access deadline, and if it fails, it fails as
            // "access did not change", showing the wrong plan.
            "plan_mismatch" if self.stage < Stage::Reconciled => {
                self.stage = Stage::Reconciled;
                self.deadline_at = Some(self.next_deadline());
            }
            "matched" | "accepted_without_expectation" => {
                self.stage = Stage::Closed;
                self.status = RunStatus::Succeeded;
                self.deadline_at = None;
                self.closed_at = Some(now);
                timeline.push(TimelineEntry {
                    at: now,
                    source,
                    stage: Stage::Closed,
                    outcome: "succeeded".into(),
                    evidence: json!({
                        "plan": self.observed_plan,
                        "features": self.observed_features,
                    }),
                });
            }
            _ => {}
        }
        Ok(ReportOutcome {
            timeline,
            access_now_matches,
            start_probing,
        })
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
            outcome: "superseded".into(),
            evidence: json!({
                "superseded_by": newer.id,
                "newer_event_id": newer.event_id,
                "newer_event_type": newer.event_type,
                "newer_event_created_at": fmt_deadline(&newer.event_created_at),
            }),
        })
    }

    /// The deadline of the stage this open run waits for next.
    fn next_deadline(&self) -> DateTime<Utc> {
        match self.stage {
            Stage::Received => self.reconciled_due_at.min(self.access_due_at),
            _ => self.access_due_at,
        }
    }

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

    /// The sweeper's verdict on an overdue run: it fails, and the caller
    /// opens the returned incident. `None` when the run is not overdue (it
    /// moved on since it was selected).
    pub fn expire(
        &mut self,
        now: DateTime<Utc>,
        last_probe: Option<&ProbeAttempt>,
    ) -> Option<(crate::incident::NewIncident, TimelineEntry)> {
        let (missed, deadline) = self.missed_stage(now)?;
        let incident =
            crate::incident::NewIncident::for_missed_stage(self, missed, deadline, last_probe, now);
        self.status = RunStatus::Failed;
        self.deadline_at = None;
        self.closed_at = Some(now);
        let entry = TimelineEntry {
            at: now,
            source: Source::Sweeper,
            stage: missed,
            outcome: "failed".into(),
            evidence: json!({
                "missed_stage": missed,
                "deadline_at": fmt_deadline(&deadline),
                "incident_kind": incident.kind,
            }),
        };
        Some((incident, entry))
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

    fn pro_run() -> Run {
        Run::open(spec(Expectation::Plan("pro".into())), t0()).0
    }

    fn secs(s: i64) -> DateTime<Utc> {
        t0() + chrono::Duration::seconds(s)
    }

    /// The app reports `reconciled` at `at`.
    fn reconcile(run: &mut Run, at: DateTime<Utc>) -> ReportOutcome {
        run.report(Stage::Reconciled, StageReport::default(), Source::Sdk, at)
            .unwrap()
    }

    fn access(plan: &str) -> StageReport {
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
    fn happy_path_closes_succeeded() {
        let mut run = pro_run();
        reconcile(&mut run, secs(5));
        assert_eq!(run.stage, Stage::Reconciled);
        assert_eq!(run.deadline_at, Some(secs(600)));
        let out = run
            .report(Stage::AccessAsserted, access("pro"), Source::Sdk, secs(9))
            .unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.stage, Stage::Closed);
        assert_eq!(run.deadline_at, None);
        assert_eq!(run.closed_at, Some(secs(9)));
        let outcomes: Vec<_> = out.timeline.iter().map(|e| e.outcome.as_str()).collect();
        assert_eq!(outcomes, ["matched", "succeeded"]);
    }

    #[test]
    fn mismatch_is_recorded_and_run_stays_open() {
        let mut run = pro_run();
        let out = run
            .report(
                Stage::AccessAsserted,
                access("starter"),
                Source::Sdk,
                secs(5),
            )
            .unwrap();
        assert_eq!(out.timeline[0].outcome, "plan_mismatch");
        assert_eq!(run.status, RunStatus::Open);
        assert_eq!(
            run.stage,
            Stage::Reconciled,
            "an access report implies reconciliation"
        );
        assert_eq!(run.deadline_at, Some(secs(600)));
        let (incident, _) = run.expire(secs(600), None).unwrap();
        assert_eq!(
            incident.kind,
            crate::incident::IncidentKind::AccessNotChanged
        );
        assert_eq!(run.observed_plan.as_deref(), Some("starter"));
    }

    #[test]
    fn stage_never_moves_backwards_and_repeats_are_recorded() {
        let mut run = pro_run();
        reconcile(&mut run, secs(1));
        let again = reconcile(&mut run, secs(2));
        assert_eq!(again.timeline[0].outcome, "recorded");
        assert_eq!(run.stage, Stage::Reconciled);
    }

    #[test]
    fn access_before_reconciled_still_closes_the_run() {
        let mut run = pro_run();
        run.report(Stage::AccessAsserted, access("pro"), Source::Sdk, secs(1))
            .unwrap();
        let late = reconcile(&mut run, secs(2));
        assert_eq!(late.timeline[0].outcome, "recorded_after_close");
        assert_eq!(run.status, RunStatus::Succeeded);
    }

    #[test]
    fn unreportable_stages_and_missing_plan_are_refused() {
        let mut run = pro_run();
        assert_eq!(
            run.report(Stage::Closed, StageReport::default(), Source::Sdk, secs(1)),
            Err(ReportError::NotReportable(Stage::Closed))
        );
        assert_eq!(
            run.report(
                Stage::AccessAsserted,
                StageReport::default(),
                Source::Sdk,
                secs(1)
            ),
            Err(ReportError::MissingObservedPlan)
        );
        assert_eq!(run, pro_run_with_id(run.id));
    }

    fn pro_run_with_id(id: Uuid) -> Run {
        Run { id, ..pro_run() }
    }

    #[test]
    fn unknown_expectation_is_filled_by_the_report() {
        let mut run = Run::open(
            spec(Expectation::Unknown {
                reason: "no line items".into(),
            }),
            t0(),
        )
        .0;
        let report = StageReport {
            expected_plan: Some("pro".into()),
            ..Default::default()
        };
        run.report(Stage::Reconciled, report, Source::Sdk, secs(1))
            .unwrap();
        assert_eq!(run.expected_plan.as_deref(), Some("pro"));
        assert_eq!(run.expected_plan_reason, None);
        run.report(
            Stage::AccessAsserted,
            access("starter"),
            Source::Sdk,
            secs(2),
        )
        .unwrap();
        assert_eq!(run.status, RunStatus::Open);
    }

    #[test]
    fn unknown_expectation_accepts_a_paid_plan_but_not_none() {
        let unknown = || {
            Run::open(
                spec(Expectation::Unknown {
                    reason: "no line items".into(),
                }),
                t0(),
            )
            .0
        };
        let mut run = unknown();
        run.report(Stage::AccessAsserted, access("none"), Source::Sdk, secs(1))
            .unwrap();
        assert_eq!(run.status, RunStatus::Open);
        let mut run = unknown();
        run.report(Stage::AccessAsserted, access("pro"), Source::Sdk, secs(1))
            .unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
    }

    #[test]
    fn merge_fills_gaps_and_never_overrides() {
        let mut run = Run::open(
            RunSpec {
                source: Source::Sdk,
                subscription_id: None,
                ..spec(Expectation::Unknown { reason: "r".into() })
            },
            t0(),
        )
        .0;
        let entry = run
            .merge(spec(Expectation::Plan("pro".into())), secs(1))
            .unwrap();
        assert_eq!(entry.source, Source::Stripe);
        assert_eq!(run.expected_plan.as_deref(), Some("pro"));
        assert_eq!(run.subscription_id.as_deref(), Some("sub_1"));
        let sdk_again = RunSpec {
            source: Source::Sdk,
            ..spec(Expectation::Plan("starter".into()))
        };
        assert_eq!(run.merge(sdk_again, secs(2)), None);
        assert_eq!(run.expected_plan.as_deref(), Some("pro"));
    }

    #[test]
    fn expiry_names_the_missed_stage() {
        let mut run = pro_run();
        assert!(run.expire(secs(119), None).is_none());
        let (incident, entry) = run.expire(secs(120), None).unwrap();
        assert_eq!(
            incident.kind,
            crate::incident::IncidentKind::ReconciliationMissing
        );
        assert_eq!(entry.stage, Stage::Reconciled);
        assert_eq!(run.status, RunStatus::Failed);
        assert!(
            run.expire(secs(999), None).is_none(),
            "a failed run never fails twice"
        );

        let mut run = pro_run();
        reconcile(&mut run, secs(1));
        assert!(run.expire(secs(300), None).is_none());
        let (incident, _) = run.expire(secs(600), None).unwrap();
        assert_eq!(
            incident.kind,
            crate::incident::IncidentKind::AccessNotChanged
        );
    }

    #[test]
    fn a_failed_run_learns_when_access_matches_later() {
        let mut run = pro_run();
        run.expire(secs(600), None).unwrap();
        let out = run
            .report(Stage::AccessAsserted, access("pro"), Source::Sdk, secs(700))
            .unwrap();
        assert!(out.access_now_matches);
        assert_eq!(run.status, RunStatus::Failed);
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

    mod ordering {
        use super::*;
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
}
