//! Rows as the database holds them, and their conversion to domain types.
//! Backends share these: every column is text, integer or boolean, and every
//! time is unix milliseconds, so the same row decodes from SQLite and
//! PostgreSQL alike.

use std::str::FromStr;

use uuid::Uuid;

use super::{StoreError, from_ms};
use crate::incident::Incident;
use crate::run::{Run, TimelineEntry};

/// The columns of `runs`, in the order [`RunRow`] reads them.
macro_rules! run_columns {
    () => {
        "id, project, workflow, event_id, event_type, customer_id, subscription_id, \
         expected_plan, expected_plan_reason, observed_plan, deploy_sha, livemode, stage, \
         status, opened_at, reconciled_due_at, access_due_at, deadline_at, closed_at, \
         expected_features, keep_access_until, observed_features, event_created_at, superseded_by, \
         probe_start, drill_id"
    };
}
pub(crate) use run_columns;

macro_rules! incident_columns {
    () => {
        "id, run_id, project, workflow, kind, title, status, evidence, opened_at, \
         acknowledged_at, resolved_at, resolution, drill"
    };
}
pub(crate) use incident_columns;

fn parse<T: FromStr>(what: &str, text: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("{what} `{text}`: {e}")))
}

fn uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| StoreError::Corrupt(format!("id `{text}`: {e}")))
}

fn json(text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("evidence: {e}")))
}

#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
    id: String,
    project: String,
    workflow: String,
    event_id: String,
    event_type: String,
    customer_id: Option<String>,
    subscription_id: Option<String>,
    expected_plan: Option<String>,
    expected_plan_reason: Option<String>,
    observed_plan: Option<String>,
    deploy_sha: Option<String>,
    livemode: Option<bool>,
    stage: String,
    status: String,
    opened_at: i64,
    reconciled_due_at: i64,
    access_due_at: i64,
    deadline_at: Option<i64>,
    closed_at: Option<i64>,
    expected_features: Option<String>,
    keep_access_until: Option<i64>,
    observed_features: Option<String>,
    event_created_at: i64,
    superseded_by: Option<String>,
    probe_start: Option<String>,
    drill_id: Option<String>,
}

fn string_list(text: Option<String>) -> Result<Option<Vec<String>>, StoreError> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("feature list: {e}")))
    })
    .transpose()
}

impl TryFrom<RunRow> for Run {
    type Error = StoreError;
    fn try_from(r: RunRow) -> Result<Run, StoreError> {
        Ok(Run {
            id: uuid(&r.id)?,
            stage: parse("stage", &r.stage)?,
            status: parse("status", &r.status)?,
            project: r.project,
            workflow: r.workflow,
            event_id: r.event_id,
            event_type: r.event_type,
            customer_id: r.customer_id,
            subscription_id: r.subscription_id,
            expected_plan: r.expected_plan,
            expected_plan_reason: r.expected_plan_reason,
            observed_plan: r.observed_plan,
            deploy_sha: r.deploy_sha,
            livemode: r.livemode,
            opened_at: from_ms(r.opened_at),
            reconciled_due_at: from_ms(r.reconciled_due_at),
            access_due_at: from_ms(r.access_due_at),
            deadline_at: r.deadline_at.map(from_ms),
            closed_at: r.closed_at.map(from_ms),
            expected_features: string_list(r.expected_features)?,
            keep_access_until: r.keep_access_until.map(from_ms),
            observed_features: string_list(r.observed_features)?,
            event_created_at: from_ms(r.event_created_at),
            superseded_by: r.superseded_by.as_deref().map(uuid).transpose()?,
            probe_start: r
                .probe_start
                .as_deref()
                .map(|p| parse("probe start", p))
                .transpose()?,
            drill_id: r.drill_id.as_deref().map(uuid).transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct TimelineRow {
    at: i64,
    source: String,
    stage: String,
    outcome: String,
    evidence: String,
}

impl TryFrom<TimelineRow> for TimelineEntry {
    type Error = StoreError;
    fn try_from(r: TimelineRow) -> Result<TimelineEntry, StoreError> {
        Ok(TimelineEntry {
            at: from_ms(r.at),
            source: parse("source", &r.source)?,
            stage: parse("stage", &r.stage)?,
            outcome: parse("timeline outcome", &r.outcome)?,
            evidence: json(&r.evidence)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct IncidentRow {
    id: String,
    run_id: String,
    project: String,
    workflow: String,
    kind: String,
    title: String,
    status: String,
    evidence: String,
    opened_at: i64,
    acknowledged_at: Option<i64>,
    resolved_at: Option<i64>,
    resolution: Option<String>,
    drill: bool,
}

impl TryFrom<IncidentRow> for Incident {
    type Error = StoreError;
    fn try_from(r: IncidentRow) -> Result<Incident, StoreError> {
        Ok(Incident {
            id: uuid(&r.id)?,
            run_id: uuid(&r.run_id)?,
            kind: parse("incident kind", &r.kind)?,
            status: parse("incident status", &r.status)?,
            evidence: serde_json::from_str(&r.evidence)
                .map_err(|e| StoreError::Corrupt(format!("incident evidence: {e}")))?,
            project: r.project,
            workflow: r.workflow,
            title: r.title,
            opened_at: from_ms(r.opened_at),
            acknowledged_at: r.acknowledged_at.map(from_ms),
            resolved_at: r.resolved_at.map(from_ms),
            resolution: r.resolution,
            drill: r.drill,
        })
    }
}

/// Converts fetched rows, failing on the first corrupt one.
pub(crate) fn convert<R, T: TryFrom<R, Error = StoreError>>(
    rows: Vec<R>,
) -> Result<Vec<T>, StoreError> {
    rows.into_iter().map(T::try_from).collect()
}

/// The columns of `probe_attempts`, in the order [`ProbeAttemptRow`] reads.
macro_rules! probe_columns {
    () => {
        "at, duration_ms, url, status_code, observed_plan, observed_features, deploy_sha, error, matched"
    };
}
pub(crate) use probe_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct ProbeAttemptRow {
    at: i64,
    duration_ms: i64,
    url: String,
    status_code: Option<i64>,
    observed_plan: Option<String>,
    observed_features: Option<String>,
    deploy_sha: Option<String>,
    error: Option<String>,
    matched: bool,
}

impl TryFrom<ProbeAttemptRow> for crate::run::ProbeAttempt {
    type Error = StoreError;
    fn try_from(r: ProbeAttemptRow) -> Result<Self, StoreError> {
        Ok(crate::run::ProbeAttempt {
            at: from_ms(r.at),
            duration_ms: r.duration_ms,
            url: r.url,
            status_code: r.status_code.and_then(|c| u16::try_from(c).ok()),
            observed_plan: r.observed_plan,
            observed_features: string_list(r.observed_features)?,
            deploy_sha: r.deploy_sha,
            error: r.error,
            matched: r.matched,
        })
    }
}

/// A run's latest probe attempt, for the sweeper.
#[derive(sqlx::FromRow)]
pub(crate) struct LastProbeRow {
    run_id: String,
    #[sqlx(flatten)]
    probe: ProbeAttemptRow,
}

impl LastProbeRow {
    pub(crate) fn into_parts(self) -> Result<(Uuid, crate::run::ProbeAttempt), StoreError> {
        Ok((uuid(&self.run_id)?, self.probe.try_into()?))
    }
}

/// A claimed probe: the run, and how often it was probed before.
#[derive(sqlx::FromRow)]
pub(crate) struct ProbeJobRow {
    #[sqlx(flatten)]
    run: RunRow,
    attempts: i64,
}

impl ProbeJobRow {
    pub(crate) fn into_job(
        self,
        lease_token: &str,
        lease_expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::probe::ProbeJob, StoreError> {
        Ok(crate::probe::ProbeJob {
            run: self.run.try_into()?,
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            lease_token: lease_token.to_owned(),
            lease_expires_at,
        })
    }
}

/// The columns of `alert_deliveries`, in the order [`DeliveryRow`] reads, with
/// the number of incidents it is about.
macro_rules! delivery_columns {
    () => {
        "alert_deliveries.id, project, channel, event, status, created_at, next_attempt_at, settled_at, last_error, \
         (SELECT COUNT(*) FROM alert_delivery_incidents l WHERE l.delivery_id = alert_deliveries.id) AS incident_count"
    };
}
pub(crate) use delivery_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    id: String,
    project: String,
    channel: String,
    event: String,
    status: String,
    created_at: i64,
    next_attempt_at: Option<i64>,
    settled_at: Option<i64>,
    last_error: Option<String>,
    incident_count: i64,
}

impl TryFrom<DeliveryRow> for crate::alert::Delivery {
    type Error = StoreError;
    fn try_from(r: DeliveryRow) -> Result<Self, StoreError> {
        Ok(crate::alert::Delivery {
            id: uuid(&r.id)?,
            event: parse("alert event", &r.event)?,
            status: parse("delivery status", &r.status)?,
            project: r.project,
            channel: r.channel,
            incident_count: r.incident_count,
            created_at: from_ms(r.created_at),
            next_attempt_at: r.next_attempt_at.map(from_ms),
            settled_at: r.settled_at.map(from_ms),
            last_error: r.last_error,
            attempts: Vec::new(),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryAttemptRow {
    at: i64,
    duration_ms: i64,
    status_code: Option<i64>,
    error: Option<String>,
}

impl TryFrom<DeliveryAttemptRow> for crate::alert::DeliveryAttempt {
    type Error = StoreError;
    fn try_from(r: DeliveryAttemptRow) -> Result<Self, StoreError> {
        Ok(crate::alert::DeliveryAttempt {
            at: from_ms(r.at),
            duration_ms: r.duration_ms,
            status_code: r.status_code.and_then(|c| u16::try_from(c).ok()),
            error: r.error,
        })
    }
}

/// The columns of `drills`, in the order [`DrillRow`] reads.
macro_rules! drill_columns {
    () => {
        "id, project, workflow, trigger, status, step, event_id, run_id, incident_id, started_at, \
         finished_at, scheduled_for, report, next_step_at"
    };
}
pub(crate) use drill_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct DrillRow {
    id: String,
    project: String,
    workflow: String,
    trigger: String,
    status: String,
    step: String,
    event_id: String,
    run_id: Option<String>,
    incident_id: Option<String>,
    started_at: i64,
    finished_at: Option<i64>,
    scheduled_for: Option<i64>,
    report: String,
    next_step_at: Option<i64>,
}

impl DrillRow {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }
}

impl TryFrom<DrillRow> for crate::drill::Drill {
    type Error = StoreError;
    fn try_from(r: DrillRow) -> Result<Self, StoreError> {
        let report: crate::drill::DrillReport = serde_json::from_str(&r.report)
            .map_err(|e| StoreError::Corrupt(format!("drill report: {e}")))?;
        Ok(crate::drill::Drill {
            id: uuid(&r.id)?,
            trigger: parse("drill trigger", &r.trigger)?,
            status: parse("drill status", &r.status)?,
            step: parse("drill step", &r.step)?,
            run_id: r.run_id.as_deref().map(uuid).transpose()?,
            incident_id: r.incident_id.as_deref().map(uuid).transpose()?,
            project: r.project,
            workflow: r.workflow,
            event_id: r.event_id,
            customer_id: report.customer_id,
            subscription_id: report.subscription_id,
            started_at: from_ms(r.started_at),
            finished_at: r.finished_at.map(from_ms),
            scheduled_for: r.scheduled_for.map(from_ms),
            timings: report.timings,
            steps: report.steps,
            broken_link: report.broken_link,
            step_started_at: report.step_started_at,
            next_step_at: r.next_step_at.map(from_ms),
        })
    }
}
