//! A project incident's evidence: what was seen, since when, the usual
//! figure, and what to check, with the facts of its condition as typed
//! fields. The watcher finds the condition ([`ProjectFinding`]); this module
//! turns it into the incident it opens or keeps up to date.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Evidence, IncidentKind, NewIncident};
pub use crate::stripe::Refusal as RefusalReason;

/// The facts of a project incident's condition, one shape per kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "condition", rename_all = "snake_case")]
pub enum Condition {
    /// Stripe's deliveries were refused, and none accepted, in the window.
    DeliveriesRefused {
        /// Refused in the window.
        refused: u64,
        /// How many for each reason.
        #[schema(value_type = BTreeMap<String, u64>)]
        reasons: BTreeMap<RefusalReason, u64>,
        #[serde(with = "crate::time::millis")]
        #[schema(value_type = String, format = DateTime)]
        first_refused_at: DateTime<Utc>,
        #[serde(with = "crate::time::millis")]
        #[schema(value_type = String, format = DateTime)]
        last_refused_at: DateTime<Utc>,
        /// The last accepted delivery, if the history has one.
        #[serde(default, with = "crate::time::millis::option")]
        #[schema(value_type = Option<String>, format = DateTime)]
        last_accepted_at: Option<DateTime<Utc>>,
        window_secs: u64,
    },
    /// No delivery accepted for far longer than the usual gap.
    Silence {
        #[serde(with = "crate::time::millis")]
        #[schema(value_type = String, format = DateTime)]
        last_accepted_at: DateTime<Utc>,
        silent_secs: u64,
        /// The usual time between accepted deliveries at this time of day.
        usual_gap_secs: f64,
        /// The silence that opens the incident: the floor, or the usual gap
        /// times the factor, whichever is longer.
        threshold_secs: u64,
        /// Accepted deliveries the usual gap was learnt from.
        learnt_from: u64,
    },
}

/// Everything a project incident says, in the order the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectEvidence {
    /// The missing outcome in a sentence.
    pub summary: String,
    pub project: String,
    pub workflow: String,
    /// What Assay saw, in a sentence.
    pub seen: String,
    /// Since when.
    #[serde(with = "crate::time::millis")]
    #[schema(value_type = String, format = DateTime)]
    pub since: DateTime<Utc>,
    /// When the condition was last assessed: an open incident's evidence
    /// is kept up to date until it resolves.
    #[serde(with = "crate::time::millis")]
    #[schema(value_type = String, format = DateTime)]
    pub assessed_at: DateTime<Utc>,
    /// The usual figure, in words, when there is one.
    pub usual: Option<String>,
    pub details: Condition,
    /// What to check, most likely first.
    pub guidance: Vec<String>,
    pub drill: bool,
    pub drill_id: Option<Uuid>,
}

/// A condition the watcher found in one project, before it is an
/// incident.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectFinding {
    pub project: String,
    pub workflow: String,
    pub kind: IncidentKind,
    /// What the incident is about within its kind; empty when the kind has
    /// one per project.
    pub subject: String,
    /// The title, with its figures.
    pub title: String,
    pub summary: String,
    pub seen: String,
    pub since: DateTime<Utc>,
    pub usual: Option<String>,
    pub details: Condition,
    pub guidance: Vec<String>,
}

impl NewIncident {
    /// The project incident about `finding`, assessed (or opened) at `now`.
    pub fn for_project(finding: ProjectFinding, now: DateTime<Utc>) -> NewIncident {
        NewIncident {
            id: Uuid::now_v7(),
            run_id: None,
            project: finding.project.clone(),
            workflow: finding.workflow.clone(),
            kind: finding.kind,
            subject: finding.subject,
            title: finding.title,
            evidence: Evidence::Project(Box::new(ProjectEvidence {
                summary: finding.summary,
                project: finding.project,
                workflow: finding.workflow,
                seen: finding.seen,
                since: finding.since,
                assessed_at: now,
                usual: finding.usual,
                details: finding.details,
                guidance: finding.guidance,
                drill: false,
                drill_id: None,
            })),
            opened_at: now,
            drill: false,
        }
    }
}

/// What makes two project incidents the same: at most one is open per
/// cause (the database holds to it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectCause {
    pub project: String,
    pub workflow: String,
    pub kind: IncidentKind,
    pub subject: String,
    pub drill: bool,
}

impl ProjectCause {
    pub fn of_new(incident: &NewIncident) -> ProjectCause {
        ProjectCause {
            project: incident.project.clone(),
            workflow: incident.workflow.clone(),
            kind: incident.kind,
            subject: incident.subject.clone(),
            drill: incident.drill,
        }
    }

    pub fn of(incident: &super::Incident) -> ProjectCause {
        ProjectCause {
            project: incident.project.clone(),
            workflow: incident.workflow.clone(),
            kind: incident.kind,
            subject: incident.subject.clone(),
            drill: incident.drill,
        }
    }
}
