//! Incidents: what an operator is told when an outcome is missing.
//!
//! An incident has a scope. A run's incident is about one customer: a run
//! missed a deadline, and the title names the customer-visible outcome that
//! is missing, never the transport; its [`RunEvidence`] is everything
//! needed at 3 a.m. to act without opening another tool, including the
//! reason for every value that is null. A project's incident is about what
//! every run of the project depends on (Stripe's deliveries reaching Assay,
//! the plan map, the app's access endpoint): its [`ProjectEvidence`] says
//! what was seen, since when, the usual figure and what to check, and it
//! resolves itself when the condition clears. A run's expiry says what it
//! missed ([`crate::run::Missed`]); this module turns that into the
//! incident, and holds the incident's own workflow (acknowledge, resolve).

mod evidence;
mod project;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

pub use self::evidence::RunEvidence;
pub use self::project::{Condition, ProjectCause, ProjectEvidence, ProjectFinding, RefusalReason};
use crate::names::named_enum;
use crate::run::{Failure, Missed, ProbeAttempt, Realm, Run};

named_enum! {
    /// Which outcome is missing: a run's failure, or a condition of its
    /// project's input, configuration or probe path.
    IncidentKind, "incident kind" {
        ReconciliationMissing => "reconciliation_missing",
        AccessNotChanged => "access_not_changed",
        AccessNotRevoked => "access_not_revoked",
        AccessRevokedEarly => "access_revoked_early",
        /// Stripe lists events that never reached Assay.
        StripeEventsUndelivered => "stripe_events_undelivered",
        /// No Stripe delivery for far longer than usual.
        StripeEventsSilent => "stripe_events_silent",
        /// Stripe's deliveries are refused (signature, timestamp, body).
        StripeDeliveriesRefused => "stripe_deliveries_refused",
        /// A Stripe price the plan map does not know.
        PriceUnmapped => "price_unmapped",
        /// The app's access endpoint fails for most probes.
        ProbePathFailing => "probe_path_failing",
    }
}

named_enum! {
    /// What an incident is about: one run, or a project.
    IncidentScope, "incident scope" {
        Run => "run",
        Project => "project",
    }
}

impl From<Failure> for IncidentKind {
    fn from(failure: Failure) -> IncidentKind {
        match failure {
            Failure::ReconciliationMissing => IncidentKind::ReconciliationMissing,
            Failure::AccessNotChanged => IncidentKind::AccessNotChanged,
            Failure::AccessNotRevoked => IncidentKind::AccessNotRevoked,
            Failure::AccessRevokedEarly => IncidentKind::AccessRevokedEarly,
        }
    }
}

impl IncidentKind {
    pub fn scope(self) -> IncidentScope {
        match self {
            IncidentKind::ReconciliationMissing
            | IncidentKind::AccessNotChanged
            | IncidentKind::AccessNotRevoked
            | IncidentKind::AccessRevokedEarly => IncidentScope::Run,
            IncidentKind::StripeEventsUndelivered
            | IncidentKind::StripeEventsSilent
            | IncidentKind::StripeDeliveriesRefused
            | IncidentKind::PriceUnmapped
            | IncidentKind::ProbePathFailing => IncidentScope::Project,
        }
    }

    /// The title of a run's incident of this kind; a project incident's
    /// title carries its figures, and is made with its evidence.
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
            IncidentKind::StripeEventsUndelivered => "Stripe events did not reach Assay",
            IncidentKind::StripeEventsSilent => "No Stripe events reached Assay",
            IncidentKind::StripeDeliveriesRefused => "Stripe deliveries are being refused",
            IncidentKind::PriceUnmapped => "A Stripe price is missing from the plan map",
            IncidentKind::ProbePathFailing => {
                "Assay cannot check customers' access: the app's access endpoint is failing"
            }
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

/// What an incident says: about a run, or about a project. Serialised as
/// the one it is.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Evidence {
    Run(Box<RunEvidence>),
    Project(Box<ProjectEvidence>),
}

impl Evidence {
    /// A run's evidence, when the incident is about a run.
    pub fn of_run(&self) -> Option<&RunEvidence> {
        match self {
            Evidence::Run(e) => Some(e),
            Evidence::Project(_) => None,
        }
    }

    pub fn of_project(&self) -> Option<&ProjectEvidence> {
        match self {
            Evidence::Project(e) => Some(e),
            Evidence::Run(_) => None,
        }
    }

    pub fn summary(&self) -> &str {
        match self {
            Evidence::Run(e) => &e.summary,
            Evidence::Project(e) => &e.summary,
        }
    }

    pub fn guidance(&self) -> &[String] {
        match self {
            Evidence::Run(e) => &e.guidance,
            Evidence::Project(e) => &e.guidance,
        }
    }

    pub fn drill_id(&self) -> Option<Uuid> {
        match self {
            Evidence::Run(e) => e.drill_id,
            Evidence::Project(e) => e.drill_id,
        }
    }

    /// Reads stored evidence back as the scope it was written for.
    pub fn from_json(scope: IncidentScope, text: &str) -> Result<Evidence, serde_json::Error> {
        Ok(match scope {
            IncidentScope::Run => Evidence::Run(Box::new(serde_json::from_str(text)?)),
            IncidentScope::Project => Evidence::Project(Box::new(serde_json::from_str(text)?)),
        })
    }
}

/// An incident as the sweeper or the watcher opens it, before the store
/// gives it a row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewIncident {
    pub id: Uuid,
    /// The run it is about; `None` for a project's incident.
    pub run_id: Option<Uuid>,
    pub project: String,
    pub workflow: String,
    pub kind: IncidentKind,
    /// What a project incident is about within its kind (an unmapped
    /// price); empty when the kind has one per project, and for a run's.
    pub subject: String,
    pub title: String,
    pub evidence: Evidence,
    #[serde(with = "crate::time::millis")]
    pub opened_at: DateTime<Utc>,
    /// Opened by a failure drill: alerted only as a drill, never counted.
    pub drill: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Incident {
    pub id: Uuid,
    pub scope: IncidentScope,
    /// The run it is about; `null` for a project's incident.
    pub run_id: Option<Uuid>,
    pub project: String,
    pub workflow: String,
    pub kind: IncidentKind,
    /// What a project incident is about within its kind (an unmapped
    /// price); empty when the kind has one per project, and for a run's.
    pub subject: String,
    pub title: String,
    pub status: IncidentStatus,
    pub evidence: Evidence,
    #[serde(with = "crate::time::millis")]
    pub opened_at: DateTime<Utc>,
    #[serde(default, with = "crate::time::millis::option")]
    pub acknowledged_at: Option<DateTime<Utc>>,
    #[serde(default, with = "crate::time::millis::option")]
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

impl NewIncident {
    /// The incident about what `run` missed, opened at `now`; `last_probe`
    /// is the run's latest probe attempt, if it was probed.
    pub fn for_missed(
        run: &Run,
        missed: &Missed,
        last_probe: Option<&ProbeAttempt>,
        now: DateTime<Utc>,
    ) -> NewIncident {
        let kind = IncidentKind::from(missed.kind);
        NewIncident {
            id: Uuid::now_v7(),
            run_id: Some(run.id),
            project: run.project.clone(),
            workflow: run.workflow.clone(),
            kind,
            subject: String::new(),
            title: kind.title().to_owned(),
            evidence: Evidence::Run(Box::new(RunEvidence::of(run, missed, last_probe))),
            opened_at: now,
            drill: run.realm().is_drill(),
        }
    }
}

impl Incident {
    pub fn from_new(new: NewIncident) -> Incident {
        Incident {
            id: new.id,
            scope: new.kind.scope(),
            run_id: new.run_id,
            project: new.project,
            workflow: new.workflow,
            kind: new.kind,
            subject: new.subject,
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

    /// Whose incident this is: a customer's, or a failure drill's.
    pub fn realm(&self) -> Realm {
        Realm::of(self.evidence.drill_id())
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::run::tests::{secs, spec, t0};
    use crate::run::{Expectation, Source, Stage, StageReport};

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

    /// The incident `run` opens when it expires at `now`.
    pub(crate) fn expire(
        run: &mut Run,
        now: DateTime<Utc>,
        probe: Option<&ProbeAttempt>,
    ) -> NewIncident {
        let (missed, _) = run.expire(now).expect("the run is overdue");
        NewIncident::for_missed(run, &missed, probe, now)
    }

    /// An open incident of `project` about a customer whose access did not
    /// change after deploy `sha`.
    pub(crate) fn access_incident(project: &str, sha: &str) -> Incident {
        let mut run = Run::open(
            crate::run::RunSpec {
                project: project.into(),
                ..spec(Expectation::Plan("pro".into()))
            },
            t0(),
        )
        .0;
        run.deploy_sha = Some(sha.into());
        Incident::from_new(expire(&mut run, secs(600), None))
    }

    #[test]
    fn a_probe_that_saw_the_wrong_plan_fails_the_run_on_access() {
        let mut run = Run::open(spec(Expectation::Plan("pro".into())), t0()).0;
        run.probe_start = Some(crate::run::ProbeStart::Open);
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
        let incident = expire(&mut run, t0() + chrono::Duration::minutes(10), Some(&probe));
        assert_eq!(incident.kind, IncidentKind::AccessNotChanged);
        let evidence = serde_json::to_value(&incident.evidence).unwrap();
        assert_eq!(evidence["missed_stage"], "reconciled");
        assert_eq!(evidence["observed_plan"], "free");
        assert_eq!(evidence["deploy_sha"], "sha-7");
        assert_eq!(evidence["last_probe"]["observed_plan"], "free");
        assert!(evidence["guidance"].to_string().contains("keeps probing"));
    }

    #[test]
    fn access_incident_carries_every_evidence_field() {
        let mut run = missed_access_run();
        let incident = expire(&mut run, t0() + chrono::Duration::minutes(10), None);
        assert_eq!(
            incident.title,
            "Customer access did not change after Stripe event"
        );
        let e = serde_json::to_value(&incident.evidence).unwrap();
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
        assert_eq!(e["observed_plan_reason"], serde_json::Value::Null);
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
        let incident = expire(&mut run, t0() + chrono::Duration::minutes(2), None);
        assert_eq!(
            incident.title,
            "Subscription state was not reconciled after Stripe event"
        );
        let e = serde_json::to_value(&incident.evidence).unwrap();
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
        let new = expire(&mut run, t0() + chrono::Duration::minutes(10), None);
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
