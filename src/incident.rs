//! Incidents: what an operator is told when a run misses a deadline.
//!
//! The title names the customer-visible outcome that is missing, never the
//! transport. The evidence is everything needed at 3 a.m. to act without
//! opening another tool, including the reason for every value that is null.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::probe::ProbeAttempt;
use crate::run::{Expectation, NO_PLAN, Run, Stage, named_enum};

named_enum! {
    /// Which outcome was missing. A run has at most one incident per kind.
    IncidentKind, "incident kind" {
        ReconciliationMissing => "reconciliation_missing",
        AccessNotChanged => "access_not_changed",
        AccessNotRevoked => "access_not_revoked",
        AccessRevokedEarly => "access_revoked_early",
    }
}

impl IncidentKind {
    pub fn title(self) -> &'static str {
        match self {
            IncidentKind::ReconciliationMissing => {
                "Subscription state was not reconciled after Stripe event"
            }
            IncidentKind::AccessNotChanged => "Customer access did not change after Stripe event",
            IncidentKind::AccessNotRevoked => "Customer access was not revoked after Stripe event",
            IncidentKind::AccessRevokedEarly => {
                "Customer access was revoked during the payment grace period"
            }
        }
    }

    /// The kind for a run that missed `missed`: what the customer sees wrong.
    /// A run whose access a probe observed (and found wrong) fails on that
    /// access even when the app also never reported reconciliation: what
    /// the customer has is the outcome that matters.
    fn for_run(run: &Run, missed: Stage) -> IncidentKind {
        let observed = run.observed_plan.is_some() || run.observed_features.is_some();
        if missed <= Stage::Reconciled && !observed {
            return IncidentKind::ReconciliationMissing;
        }
        match run.expectation() {
            Expectation::Plan(plan) if plan == NO_PLAN => IncidentKind::AccessNotRevoked,
            Expectation::KeepAccess { .. } if run.observed_plan.as_deref() == Some(NO_PLAN) => {
                IncidentKind::AccessRevokedEarly
            }
            _ => IncidentKind::AccessNotChanged,
        }
    }
}

named_enum! {
    IncidentStatus, "incident status" {
        Open => "open",
        Acknowledged => "acknowledged",
        Resolved => "resolved",
    }
}

/// An incident as the sweeper opens it, before the store gives it a row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewIncident {
    pub id: Uuid,
    pub run_id: Uuid,
    pub project: String,
    pub workflow: String,
    pub kind: IncidentKind,
    pub title: String,
    pub evidence: Value,
    pub opened_at: DateTime<Utc>,
    /// Opened by a failure drill: alerted only as a drill, never counted.
    pub drill: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Incident {
    pub id: Uuid,
    pub run_id: Uuid,
    pub project: String,
    pub workflow: String,
    pub kind: IncidentKind,
    pub title: String,
    pub status: IncidentStatus,
    pub evidence: Value,
    pub opened_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution: Option<String>,
    /// Opened by a failure drill: alerted only as a drill, never counted.
    pub drill: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncidentError {
    #[error("the incident is already resolved; it cannot be acknowledged")]
    AlreadyResolved,
}

fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Incident {
    pub fn from_new(new: NewIncident) -> Incident {
        Incident {
            id: new.id,
            run_id: new.run_id,
            project: new.project,
            workflow: new.workflow,
            kind: new.kind,
            title: new.title,
            status: IncidentStatus::Open,
            evidence: new.evidence,
            opened_at: new.opened_at,
            acknowledged_at: None,
            resolved_at: None,
            resolution: None,
            drill: new.drill,
        }
    }

    /// Someone is on it. Acknowledging twice is harmless.
    pub fn acknowledge(&mut self, now: DateTime<Utc>) -> Result<bool, IncidentError> {
        match self.status {
            IncidentStatus::Open => {
                self.status = IncidentStatus::Acknowledged;
                self.acknowledged_at = Some(now);
                Ok(true)
            }
            IncidentStatus::Acknowledged => Ok(false),
            IncidentStatus::Resolved => Err(IncidentError::AlreadyResolved),
        }
    }

    /// Closes the incident, by hand or because access now matches. Resolving
    /// a resolved incident changes nothing.
    pub fn resolve(&mut self, now: DateTime<Utc>, resolution: String) -> bool {
        if self.status == IncidentStatus::Resolved {
            return false;
        }
        self.status = IncidentStatus::Resolved;
        self.resolved_at = Some(now);
        self.resolution = Some(resolution);
        true
    }
}

impl NewIncident {
    /// Builds the incident for a run that missed `missed` at `deadline`.
    pub fn for_missed_stage(
        run: &Run,
        missed: Stage,
        deadline: DateTime<Utc>,
        last_probe: Option<&ProbeAttempt>,
        now: DateTime<Utc>,
    ) -> NewIncident {
        let kind = IncidentKind::for_run(run, missed);
        NewIncident {
            id: Uuid::now_v7(),
            run_id: run.id,
            project: run.project.clone(),
            workflow: run.workflow.clone(),
            kind,
            title: kind.title().to_owned(),
            evidence: evidence(run, kind, missed, deadline, last_probe),
            opened_at: now,
            drill: run.drill_id.is_some(),
        }
    }
}

fn evidence(
    run: &Run,
    kind: IncidentKind,
    missed: Stage,
    deadline: DateTime<Utc>,
    last_probe: Option<&ProbeAttempt>,
) -> Value {
    let observed_plan_reason = match (&run.observed_plan, &run.observed_features, last_probe) {
        (Some(_), _, _) => None,
        (None, Some(_), _) => Some("the app reported features, not a plan".to_owned()),
        (None, None, Some(probe)) => Some(format!(
            "not observed: {}, and the app reported no access_asserted",
            probe.describe()
        )),
        (None, None, None) if run.probe_start.is_some() => Some(
            "not observed: no probe ran before the deadline, and the app reported no access_asserted"
                .to_owned(),
        ),
        (None, None, None) => Some(
            "the app reported no access_asserted for this event, and no active probe is configured"
                .to_owned(),
        ),
    };
    let (last_probe_value, last_probe_reason) = match (last_probe, run.probe_start) {
        (Some(probe), _) => (json!(probe), None),
        (None, Some(_)) => (Value::Null, Some("no probe ran before the deadline")),
        (None, None) => (
            Value::Null,
            Some("no active probe is configured for this workflow"),
        ),
    };
    let deploy_sha_reason = run
        .deploy_sha
        .is_none()
        .then_some(if run.probe_start.is_some() {
            "neither an SDK report nor a probe response for this run carried a deploy SHA"
        } else {
            "no SDK report for this run carried a deploy_sha"
        });
    json!({
        "summary": summary(run, kind),
        "project": run.project,
        "workflow": run.workflow,
        "run_id": run.id,
        "event_id": run.event_id,
        "event_type": run.event_type,
        "livemode": run.livemode,
        "customer_id": run.customer_id,
        "subscription_id": run.subscription_id,
        "expected_plan": run.expected_plan,
        "expected_plan_reason": run.expected_plan_reason,
        "expected_features": run.expected_features,
        "keep_access_until": run.keep_access_until.as_ref().map(rfc3339),
        "observed_plan": run.observed_plan,
        "observed_plan_reason": observed_plan_reason,
        "observed_features": run.observed_features,
        "deploy_sha": run.deploy_sha,
        "deploy_sha_reason": deploy_sha_reason,
        "last_stage": run.stage,
        "missed_stage": missed,
        "deadline_at": rfc3339(&deadline),
        "run_opened_at": rfc3339(&run.opened_at),
        "last_probe": last_probe_value,
        "last_probe_reason": last_probe_reason,
        "guidance": guidance(run, kind),
        "drill": run.drill_id.is_some(),
        "drill_id": run.drill_id,
    })
}

fn or_unknown(value: &Option<String>, what: &str) -> String {
    value.clone().unwrap_or_else(|| format!("(unknown {what})"))
}

fn summary(run: &Run, kind: IncidentKind) -> String {
    let told = outcome(run, kind);
    match run.drill_id {
        Some(_) => format!("DRILL, no real customer: {told}"),
        None => told,
    }
}

fn outcome(run: &Run, kind: IncidentKind) -> String {
    let customer = or_unknown(&run.customer_id, "customer");
    let event = &run.event_id;
    let shown = match (&run.observed_plan, &run.observed_features) {
        (Some(plan), _) => format!("the app shows {plan}"),
        (None, Some(features)) => format!("the app shows features [{}]", features.join(", ")),
        (None, None) => "the app never confirmed it".to_owned(),
    };
    match kind {
        IncidentKind::ReconciliationMissing => {
            format!(
                "{event} for customer {customer} was not reconciled by the app before its deadline"
            )
        }
        IncidentKind::AccessNotRevoked => {
            format!("customer {customer} should have no paid access after {event}, but {shown}")
        }
        IncidentKind::AccessRevokedEarly => format!(
            "customer {customer} should keep access until {} after {event} (payment grace period), but {shown}",
            run.keep_access_until
                .as_ref()
                .map(rfc3339)
                .unwrap_or_default()
        ),
        IncidentKind::AccessNotChanged => match &run.expected_features {
            Some(features) => format!(
                "customer {customer} should have features [{}] after {event}, but {shown}",
                features.join(", ")
            ),
            None => format!(
                "customer {customer} should have plan {} after {event}, but {shown}",
                or_unknown(&run.expected_plan, "plan")
            ),
        },
    }
}

/// Steps an operator can take to recover the customer's access, most direct
/// first, with the ids already filled in.
fn guidance(run: &Run, kind: IncidentKind) -> Vec<String> {
    let customer = or_unknown(&run.customer_id, "customer");
    let subscription = run
        .subscription_id
        .clone()
        .unwrap_or_else(|| format!("of customer {customer}"));
    let expected = or_unknown(&run.expected_plan, "plan");
    let mut steps = Vec::new();
    if let Some(drill) = run.drill_id {
        steps.push(format!(
            "This incident comes from failure drill {drill}: no customer is affected, and the drill resolves it itself. The steps below are what a real incident of this kind would ask for."
        ));
    }
    match kind {
        IncidentKind::ReconciliationMissing => {
            steps.push(format!(
                "Check the app's Stripe webhook handler and its job queue for {} ({}): it was accepted by Assay but the app never reported `reconciled`.",
                run.event_id, run.event_type
            ));
            steps.push(format!(
                "Re-run reconciliation for subscription {subscription}: fetch it from Stripe and update the app's subscription row, then report `reconciled` for {}.",
                run.event_id
            ));
        }
        IncidentKind::AccessNotRevoked => {
            steps.push(format!(
                "Revoke customer {customer}'s paid access in the app: after {} ({}) they should have none{}.",
                run.event_id,
                run.event_type,
                run.observed_plan
                    .as_ref()
                    .map(|o| format!(", the app last showed `{o}`"))
                    .unwrap_or_default()
            ));
            steps.push(format!(
                "Check why the app's cancellation path did not run for subscription {subscription}, then report `access_asserted` with `none` for {}.",
                run.event_id
            ));
        }
        IncidentKind::AccessRevokedEarly => {
            steps.push(format!(
                "Restore customer {customer}'s access now: a failed payment keeps access until the grace period ends{}.",
                run.keep_access_until
                    .as_ref()
                    .map(|u| format!(" ({})", rfc3339(u)))
                    .unwrap_or_default()
            ));
            steps.push(
                "Check the app's dunning path: it revoked on the failed payment instead of waiting for the subscription to be canceled or unpaid."
                    .to_owned(),
            );
        }
        IncidentKind::AccessNotChanged => {
            steps.push(format!(
                "Check customer {customer}'s entitlement in the app: it should be plan `{expected}`{}.",
                run.observed_plan
                    .as_ref()
                    .map(|o| format!(", the app last showed `{o}`"))
                    .unwrap_or_default()
            ));
            steps.push(if run.probe_start.is_some() {
                format!(
                    "Re-run the access grant for subscription {subscription}; Assay keeps probing the app, and the incident resolves itself when the access matches."
                )
            } else {
                format!(
                    "Re-run the access grant for subscription {subscription}, then report `access_asserted` for {}; the incident resolves itself when the observed plan matches.",
                    run.event_id
                )
            });
        }
    }
    steps.push(format!(
        "If the app never processed the event, resend {} from the Stripe dashboard (Developers > Events) or with `stripe events resend {}`.",
        run.event_id, run.event_id
    ));
    steps.push(match &run.deploy_sha {
        Some(sha) => format!(
            "Check the app's deploy {sha} for errors in the billing path around {}.",
            rfc3339(&run.opened_at)
        ),
        None => format!(
            "Check the app's deploy that was live at {} for errors in the billing path.",
            rfc3339(&run.opened_at)
        ),
    });
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::tests::{spec, t0};
    use crate::run::{Expectation, Source, StageReport};

    fn missed_access_run() -> Run {
        let mut run = Run::open(spec(Expectation::Plan("pro".into())), t0()).0;
        let report = StageReport {
            deploy_sha: Some("abc123".into()),
            ..Default::default()
        };
        run.report(Stage::Reconciled, report, Source::Sdk, t0())
            .unwrap();
        let report = StageReport {
            observed_plan: Some("starter".into()),
            ..Default::default()
        };
        run.report(Stage::AccessAsserted, report, Source::Sdk, t0())
            .unwrap();
        run
    }

    #[test]
    fn a_probe_that_saw_the_wrong_plan_fails_the_run_on_access() {
        let mut run = Run::open(spec(Expectation::Plan("pro".into())), t0()).0;
        run.probe_start = Some(crate::probe::ProbeStart::Open);
        let probe = ProbeAttempt {
            at: t0(),
            duration_ms: 9,
            url: "http://app/access/cus_1".into(),
            status_code: Some(200),
            observed_plan: Some("free".into()),
            observed_features: None,
            deploy_sha: Some("sha-7".into()),
            error: None,
            matched: false,
        };
        run.observe(&probe, t0());
        // The app never reported reconciliation, but the probe shows what
        // the customer has: that is the failure to name.
        let (incident, _) = run
            .expire(t0() + chrono::Duration::minutes(10), Some(&probe))
            .unwrap();
        assert_eq!(incident.kind, IncidentKind::AccessNotChanged);
        assert_eq!(incident.evidence["missed_stage"], "reconciled");
        assert_eq!(incident.evidence["observed_plan"], "free");
        assert_eq!(incident.evidence["deploy_sha"], "sha-7");
        assert_eq!(incident.evidence["last_probe"]["observed_plan"], "free");
        assert!(
            incident.evidence["guidance"]
                .to_string()
                .contains("keeps probing")
        );
    }

    #[test]
    fn access_incident_carries_every_evidence_field() {
        let mut run = missed_access_run();
        let (incident, _) = run
            .expire(t0() + chrono::Duration::minutes(10), None)
            .unwrap();
        assert_eq!(
            incident.title,
            "Customer access did not change after Stripe event"
        );
        let e = &incident.evidence;
        for field in [
            "event_id",
            "event_type",
            "customer_id",
            "subscription_id",
            "expected_plan",
            "observed_plan",
            "deploy_sha",
            "missed_stage",
            "deadline_at",
        ] {
            assert!(e[field].is_string(), "{field} should be filled: {e}");
        }
        assert_eq!(e["observed_plan"], "starter");
        assert_eq!(e["observed_plan_reason"], Value::Null);
        assert_eq!(e["missed_stage"], "access_asserted");
        let guidance = e["guidance"].as_array().unwrap();
        assert!(
            guidance
                .iter()
                .any(|g| g.as_str().unwrap().contains("sub_1"))
        );
        assert!(
            guidance
                .iter()
                .any(|g| g.as_str().unwrap().contains("abc123"))
        );
        assert!(e["summary"].as_str().unwrap().contains("shows starter"));
    }

    #[test]
    fn null_values_come_with_their_reason() {
        let mut run = Run::open(
            spec(Expectation::Unknown {
                reason: "no line items".into(),
            }),
            t0(),
        )
        .0;
        let (incident, _) = run
            .expire(t0() + chrono::Duration::minutes(2), None)
            .unwrap();
        assert_eq!(
            incident.title,
            "Subscription state was not reconciled after Stripe event"
        );
        let e = &incident.evidence;
        for (value, reason) in [
            ("expected_plan", "expected_plan_reason"),
            ("observed_plan", "observed_plan_reason"),
            ("deploy_sha", "deploy_sha_reason"),
            ("last_probe", "last_probe_reason"),
        ] {
            assert!(e[value].is_null());
            assert!(e[reason].is_string(), "{reason} missing: {e}");
        }
    }

    #[test]
    fn acknowledge_and_resolve_are_idempotent_and_ordered() {
        let mut run = missed_access_run();
        let (new, _) = run
            .expire(t0() + chrono::Duration::minutes(10), None)
            .unwrap();
        let mut incident = Incident::from_new(new);
        assert_eq!(incident.acknowledge(t0()), Ok(true));
        assert_eq!(incident.acknowledge(t0()), Ok(false));
        assert!(incident.resolve(t0(), "fixed".into()));
        assert!(!incident.resolve(t0(), "again".into()));
        assert_eq!(incident.resolution.as_deref(), Some("fixed"));
        assert_eq!(
            incident.acknowledge(t0()),
            Err(IncidentError::AlreadyResolved)
        );
    }
}
