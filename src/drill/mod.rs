//! Failure drills: Assay rehearses, on purpose, the failure operators fear (a
//! customer who paid and whose access did not change) and checks that the
//! alarm rings, link by link.
//!
//! A drill builds a test-mode Stripe event marked as a drill in its id and
//! its metadata, signs it and posts it through the real ingest path over
//! HTTP; lets `reconciled` succeed; forces the access check to fail (the
//! probe carries an `Assay-Drill` header and its answer never counts as a
//! match); waits for the sweeper's incident; checks the incident's title,
//! evidence and rendered alerts; waits for every drill channel to take the
//! alert; and resolves the incident. Each step is recorded with its time and
//! outcome, and a failed step names the broken link and what to fix.
//!
//! This module holds the rules, pure: the drill's steps and how it moves
//! between them, the drill event and its marker, and the incident check.
//! [`settings`] reads the per-project settings, [`runner`] does the steps
//! (claimed through the store like every background job) and fires the
//! scheduled drills.

pub mod cli;
pub mod runner;
pub mod settings;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::incident::{Incident, IncidentKind};
use crate::names::named_enum;
use crate::stripe::StripeEvent;

/// Drill events' ids start with this; no Stripe event id does.
pub const EVENT_PREFIX: &str = "evt_assaydrill_";
/// The metadata key of a drill event's object, holding the drill's id.
pub const METADATA_KEY: &str = "assay_drill";
/// The header a drill's probe carries, holding the drill's id, so that the
/// app can tell (and log) a drill's probe apart.
pub const PROBE_HEADER: &str = "Assay-Drill";

named_enum! {
    DrillStatus, "drill status" {
        Running => "running",
        Passed => "passed",
        Failed => "failed",
    }
}

named_enum! {
    /// What started a drill.
    DrillTrigger, "drill trigger" {
        Api => "api",
        Cli => "cli",
        Dashboard => "dashboard",
        Schedule => "schedule",
    }
}

named_enum! {
    /// The links of the chain a drill checks, in order.
    DrillStep, "drill step" {
        Ingest => "ingest",
        RunOpened => "run_opened",
        Reconciled => "reconciled",
        AccessFailed => "access_failed",
        IncidentOpened => "incident_opened",
        IncidentComplete => "incident_complete",
        AlertDelivered => "alert_delivered",
        Resolved => "resolved",
    }
}

named_enum! {
    /// Which link of the chain broke.
    BrokenLink, "broken link" {
        IngestRefused => "ingest_refused",
        NoRun => "no_run",
        StageRefused => "stage_refused",
        SweeperLate => "sweeper_late",
        IncidentIncomplete => "incident_incomplete",
        AlertNotDelivered => "alert_not_delivered",
        ResolveFailed => "resolve_failed",
    }
}

impl BrokenLink {
    /// The broken link in words, as an operator reads the report.
    pub fn headline(self) -> &'static str {
        match self {
            BrokenLink::IngestRefused => "the Stripe webhook was refused",
            BrokenLink::NoRun => "the accepted webhook opened no run",
            BrokenLink::StageRefused => "the run refused the app's stage report",
            BrokenLink::SweeperLate => "the sweeper did not open the incident by its deadline",
            BrokenLink::IncidentIncomplete => "the incident or its alert is missing a field",
            BrokenLink::AlertNotDelivered => "the alert was not delivered",
            BrokenLink::ResolveFailed => "the drill's incident could not be resolved",
        }
    }

    /// Whether the chain goes on after this link broke: the checks of one
    /// incident are independent, but without a run or an incident there is
    /// nothing further to check.
    fn stops_the_chain(self) -> bool {
        matches!(
            self,
            BrokenLink::IngestRefused
                | BrokenLink::NoRun
                | BrokenLink::StageRefused
                | BrokenLink::SweeperLate
        )
    }
}

impl DrillStep {
    /// The link a failure at this step names.
    pub fn link(self) -> BrokenLink {
        match self {
            DrillStep::Ingest => BrokenLink::IngestRefused,
            DrillStep::RunOpened => BrokenLink::NoRun,
            DrillStep::Reconciled | DrillStep::AccessFailed => BrokenLink::StageRefused,
            DrillStep::IncidentOpened => BrokenLink::SweeperLate,
            DrillStep::IncidentComplete => BrokenLink::IncidentIncomplete,
            DrillStep::AlertDelivered => BrokenLink::AlertNotDelivered,
            DrillStep::Resolved => BrokenLink::ResolveFailed,
        }
    }

    fn next(self) -> Option<DrillStep> {
        let all = DrillStep::ALL;
        let at = all.iter().position(|s| *s == self)?;
        all.get(at + 1).copied()
    }
}

/// The settings a drill runs with, fixed when it starts, so that every
/// replica that takes a step of it judges it alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct DrillTimings {
    /// How long after the event the drill run's access is due.
    pub deadline_ms: u64,
    /// How long after that deadline the sweeper has to open the incident.
    pub sweep_grace_ms: u64,
    /// How long after the incident opened each drill channel has to take
    /// the alert.
    pub alert_timeout_ms: u64,
    /// The plan the drill customer pays for.
    pub plan: String,
}

impl DrillTimings {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
    pub fn sweep_grace(&self) -> Duration {
        Duration::from_millis(self.sweep_grace_ms)
    }
    pub fn alert_timeout(&self) -> Duration {
        Duration::from_millis(self.alert_timeout_ms)
    }
}

/// One step as done: when, whether it passed, and what was seen.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct StepRecord {
    pub step: DrillStep,
    #[serde(with = "crate::time::millis")]
    pub at: DateTime<Utc>,
    pub passed: bool,
    pub detail: String,
}

/// The first link that broke, and what to do about it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct Broken {
    pub link: BrokenLink,
    pub step: DrillStep,
    pub headline: String,
    pub detail: String,
    pub fix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Drill {
    pub id: Uuid,
    pub project: String,
    pub workflow: String,
    pub trigger: DrillTrigger,
    pub status: DrillStatus,
    /// The step the drill does next; the last one it did once finished.
    pub step: DrillStep,
    pub event_id: String,
    pub customer_id: String,
    pub subscription_id: String,
    pub run_id: Option<Uuid>,
    pub incident_id: Option<Uuid>,
    #[serde(with = "crate::time::millis")]
    pub started_at: DateTime<Utc>,
    #[serde(default, with = "crate::time::millis::option")]
    pub finished_at: Option<DateTime<Utc>>,
    /// For a scheduled drill: the schedule's time it stands for.
    #[serde(default, with = "crate::time::millis::option")]
    pub scheduled_for: Option<DateTime<Utc>>,
    pub timings: DrillTimings,
    pub steps: Vec<StepRecord>,
    pub broken_link: Option<Broken>,
    /// When the current step began: the waits count from it.
    #[serde(with = "crate::time::millis")]
    pub step_started_at: DateTime<Utc>,
    /// When the runner takes the next step; `None` once finished.
    #[serde(skip)]
    pub next_step_at: Option<DateTime<Utc>>,
}

/// The part of a drill kept as one JSON document (the rest are columns).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct DrillReport {
    pub customer_id: String,
    pub subscription_id: String,
    pub timings: DrillTimings,
    pub steps: Vec<StepRecord>,
    pub broken_link: Option<Broken>,
    #[serde(with = "crate::time::millis")]
    pub step_started_at: DateTime<Utc>,
}

impl Drill {
    /// The report as an operator reads it in a terminal.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let verdict = match self.status {
            DrillStatus::Passed => "PASSED: the alarm rings",
            DrillStatus::Failed => "FAILED: the alarm would not ring as it should",
            DrillStatus::Running => "RUNNING",
        };
        let _ = writeln!(
            out,
            "Failure drill {} (project {}, workflow {}, started by {} at {})",
            self.id,
            self.project,
            self.workflow,
            self.trigger,
            crate::time::rfc3339(&self.started_at)
        );
        let _ = writeln!(out, "{verdict}");
        let _ = writeln!(
            out,
            "Event {}, customer {}, subscription {}",
            self.event_id, self.customer_id, self.subscription_id
        );
        if let Some(run) = self.run_id {
            let _ = write!(out, "Run {run}");
            if let Some(incident) = self.incident_id {
                let _ = write!(out, ", incident {incident}");
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out);
        for record in &self.steps {
            let _ = writeln!(
                out,
                "  {} {}  {:<17} {}",
                if record.passed { "ok  " } else { "FAIL" },
                crate::time::rfc3339(&record.at),
                record.step.as_str(),
                record.detail
            );
        }
        if self.status == DrillStatus::Running {
            let _ = writeln!(out, "  ...  next: {}", self.step);
        }
        if let Some(broken) = &self.broken_link {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "Broken link: {} ({}, at step {})",
                broken.headline, broken.link, broken.step
            );
            let _ = writeln!(out, "  What happened: {}", broken.detail);
            let _ = writeln!(out, "  What to fix:   {}", broken.fix);
        }
        out
    }
}

/// What doing one step came to.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    Passed(String),
    Failed {
        link: BrokenLink,
        detail: String,
        fix: String,
    },
    /// Not yet: look again at this time.
    WaitUntil(DateTime<Utc>),
}

impl Drill {
    /// A drill about to start, due at once. Its event, customer and
    /// subscription ids carry the drill's id, so that nothing it creates can
    /// be mistaken for a real customer's.
    pub fn new(
        project: &str,
        workflow: &str,
        trigger: DrillTrigger,
        timings: DrillTimings,
        scheduled_for: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Drill {
        let id = Uuid::now_v7();
        let tag = id.simple();
        Drill {
            id,
            project: project.to_owned(),
            workflow: workflow.to_owned(),
            trigger,
            status: DrillStatus::Running,
            step: DrillStep::Ingest,
            event_id: format!("{EVENT_PREFIX}{tag}"),
            customer_id: format!("cus_assaydrill_{tag}"),
            subscription_id: format!("sub_assaydrill_{tag}"),
            run_id: None,
            incident_id: None,
            started_at: now,
            finished_at: None,
            scheduled_for,
            timings,
            steps: Vec::new(),
            broken_link: None,
            step_started_at: now,
            next_step_at: Some(now),
        }
    }

    pub fn report(&self) -> DrillReport {
        DrillReport {
            customer_id: self.customer_id.clone(),
            subscription_id: self.subscription_id.clone(),
            timings: self.timings.clone(),
            steps: self.steps.clone(),
            broken_link: self.broken_link.clone(),
            step_started_at: self.step_started_at,
        }
    }

    /// A drill still short of its clean-up long after every wait it has
    /// should have ended (a step that keeps failing on the database, say)
    /// fails at the step it is stuck on, so that it never runs for ever and
    /// never holds up the drills scheduled after it.
    pub fn out_of_time(&self, now: DateTime<Utc>) -> Option<StepOutcome> {
        let limit = self.timings.longest();
        let late = self.started_at + chrono::Duration::from_std(limit).ok()?;
        (self.status == DrillStatus::Running && self.step != DrillStep::Resolved && now > late)
            .then(|| StepOutcome::Failed {
                link: self.step.link(),
                detail: format!(
                    "the drill was still at step {} {} after it started",
                    self.step,
                    crate::time::written(Duration::from_secs(limit.as_secs()))
                ),
                fix: "see the replicas' logs: a step kept failing (is the database reachable?)"
                    .to_owned(),
            })
    }

    /// Applies what the current step came to: the drill moves to its next
    /// step, waits, or finishes.
    pub fn apply(&mut self, outcome: StepOutcome, now: DateTime<Utc>) {
        if self.status != DrillStatus::Running {
            return;
        }
        let step = self.step;
        let next = match outcome {
            StepOutcome::WaitUntil(at) => {
                self.next_step_at = Some(at.max(now));
                return;
            }
            StepOutcome::Passed(detail) => {
                self.steps.push(StepRecord {
                    step,
                    at: now,
                    passed: true,
                    detail,
                });
                step.next()
            }
            StepOutcome::Failed { link, detail, fix } => {
                self.steps.push(StepRecord {
                    step,
                    at: now,
                    passed: false,
                    detail: detail.clone(),
                });
                if self.broken_link.is_none() {
                    self.broken_link = Some(Broken {
                        link,
                        step,
                        headline: link.headline().to_owned(),
                        detail,
                        fix,
                    });
                }
                match step {
                    DrillStep::Resolved => None,
                    // Clean up: the last step resolves what the drill
                    // opened and ends its run.
                    _ if link.stops_the_chain() => Some(DrillStep::Resolved),
                    _ => step.next(),
                }
            }
        };
        match next {
            Some(next) => {
                self.step = next;
                self.step_started_at = now;
                self.next_step_at = Some(now);
            }
            None => {
                self.status = if self.broken_link.is_none() {
                    DrillStatus::Passed
                } else {
                    DrillStatus::Failed
                };
                self.finished_at = Some(now);
                self.next_step_at = None;
            }
        }
    }

    /// The drill's Stripe event: a subscription updated to the drill plan,
    /// in test mode, marked as a drill in its id and its metadata.
    /// `lookup_key` is a plan-map key of the drill plan, when the project
    /// maps one, so the plan comes out of the event the way a real one's
    /// does.
    pub fn event(&self, lookup_key: Option<&str>, now: DateTime<Utc>) -> Value {
        let tag = self.id.simple();
        let created = now.timestamp();
        json!({
            "id": self.event_id,
            "object": "event",
            "api_version": "2025-03-31.basil",
            "created": created,
            "livemode": false,
            "pending_webhooks": 1,
            "request": { "id": null, "idempotency_key": null },
            "type": "customer.subscription.updated",
            "data": {
                "object": {
                    "id": self.subscription_id,
                    "object": "subscription",
                    "customer": self.customer_id,
                    "status": "active",
                    "livemode": false,
                    "created": created,
                    "metadata": { METADATA_KEY: self.id.to_string() },
                    "items": {
                        "object": "list",
                        "has_more": false,
                        "data": [{
                            "id": format!("si_assaydrill_{tag}"),
                            "object": "subscription_item",
                            "quantity": 1,
                            "current_period_start": created,
                            "current_period_end": created + 30 * 86_400,
                            "price": {
                                "id": format!("price_assaydrill_{tag}"),
                                "object": "price",
                                "lookup_key": lookup_key,
                                "product": format!("prod_assaydrill_{tag}"),
                                "livemode": false,
                            },
                        }],
                    },
                },
                "previous_attributes": { "status": "incomplete" },
            },
        })
    }
}

/// The workflow a drill rehearses: only `billing` exists.
pub fn workflow(name: Option<&str>) -> Result<&'static str, String> {
    match name.map(str::trim) {
        None | Some(crate::run::BILLING_WORKFLOW) => Ok(crate::run::BILLING_WORKFLOW),
        Some(other) => Err(format!(
            "unknown workflow `{}`; expected one of: {}",
            other.chars().take(64).collect::<String>(),
            crate::run::BILLING_WORKFLOW
        )),
    }
}

impl DrillTimings {
    /// The longest a healthy drill takes, with room to spare: a drill still
    /// running after this is reported as it stands.
    pub fn longest(&self) -> Duration {
        self.deadline() + self.sweep_grace() + self.alert_timeout() + Duration::from_secs(60)
    }
}

/// Why an event's drill marks do not add up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a drill event must be marked in its id (`{EVENT_PREFIX}...`) and in its object's metadata (`{METADATA_KEY}`) with the same drill id, and be in test mode: {0}"
)]
pub struct BadDrillMarker(pub &'static str);

/// The drill an event belongs to, if it is a drill's. An event marked only
/// half-way, or marked and live, is refused: it could be neither a drill
/// nor a real customer's without doubt.
pub fn drill_of(event: &StripeEvent) -> Result<Option<Uuid>, BadDrillMarker> {
    let in_id = event.id.strip_prefix(EVENT_PREFIX);
    let in_metadata = event
        .object
        .metadata
        .get(METADATA_KEY)
        .map(|v| v.as_deref().and_then(|s| Uuid::parse_str(s).ok()));
    match (in_id, in_metadata) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(BadDrillMarker("the metadata mark is missing")),
        (None, Some(_)) => Err(BadDrillMarker("the id mark is missing")),
        (_, Some(None)) => Err(BadDrillMarker("the metadata mark is not a drill id")),
        (Some(tag), Some(Some(id))) => {
            if tag != id.simple().to_string() {
                return Err(BadDrillMarker("the id and metadata marks differ"));
            }
            if event.livemode != Some(false) {
                return Err(BadDrillMarker("it is not `livemode: false`"));
            }
            Ok(Some(id))
        }
    }
}

/// What a drill's incident lacks: the title must name the missing access,
/// and the evidence must hold everything an operator needs. Empty when
/// complete.
pub fn incident_problems(incident: &Incident) -> Vec<String> {
    let mut problems = Vec::new();
    let expected_title = IncidentKind::AccessNotChanged.title();
    if incident.title != expected_title {
        problems.push(format!(
            "the title is `{}`, not `{expected_title}`",
            incident.title
        ));
    }
    let Some(e) = incident.evidence.of_run() else {
        problems.push("the incident is about the project, not the drill's run".to_owned());
        return problems;
    };
    let text = |value: Option<&str>| value.is_some_and(|s| !s.trim().is_empty());
    for (key, value) in [
        ("event_id", Some(e.event_id.as_str())),
        ("customer_id", e.customer_id.as_deref()),
        ("subscription_id", e.subscription_id.as_deref()),
        ("expected_plan", e.expected_plan.as_deref()),
    ] {
        if !text(value) {
            problems.push(format!("the evidence has no `{key}`"));
        }
    }
    for (key, value, reason, why) in [
        (
            "observed_plan",
            &e.observed_plan,
            "observed_plan_reason",
            &e.observed_plan_reason,
        ),
        (
            "deploy_sha",
            &e.deploy_sha,
            "deploy_sha_reason",
            &e.deploy_sha_reason,
        ),
    ] {
        if !text(value.as_deref()) && !text(why.as_deref()) {
            problems.push(format!("the evidence has neither `{key}` nor `{reason}`"));
        }
    }
    if !e.guidance.iter().any(|step| !step.is_empty()) {
        problems.push("the evidence has no retry guidance".to_owned());
    }
    if !incident.drill || !e.drill || !incident.realm().is_drill() {
        problems.push("the incident is not marked as a drill's".to_owned());
    }
    problems
}

#[cfg(test)]
mod tests;
