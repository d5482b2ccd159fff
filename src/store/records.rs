//! Records as the database holds them: how a domain value is written as a
//! row (named column by named column, see [`Rows`]) and how a row read by
//! name decodes back. Backends share these: every column is text, integer
//! or boolean, and every time is unix milliseconds, so the same row decodes
//! from SQLite and PostgreSQL alike.

use std::str::FromStr;

use uuid::Uuid;

use super::rows::Row;
use super::{StoreError, from_ms, to_ms};
use crate::incident::{Evidence, Incident, IncidentScope, NewIncident};
use crate::run::{ProbeAttempt, Run, TimelineEntry};

/// The columns of `runs` a read selects; [`RunRow`] decodes them by name.
pub(crate) const RUN_COLUMNS: &str = "id, project, workflow, event_id, event_type, customer_id, \
     subscription_id, expected_plan, expected_plan_reason, observed_plan, deploy_sha, livemode, \
     stage, status, opened_at, reconciled_due_at, access_due_at, deadline_at, closed_at, \
     expected_features, keep_access_until, observed_features, event_created_at, superseded_by, \
     probe_start, drill_id";

/// The columns of `incidents` a read selects; [`IncidentRow`] decodes them.
pub(crate) const INCIDENT_COLUMNS: &str = "id, scope, run_id, project, workflow, kind, subject, \
     title, status, evidence, opened_at, acknowledged_at, resolved_at, resolution, drill";

/// The columns of `probe_attempts` a read selects.
pub(crate) const PROBE_COLUMNS: &str = "at, duration_ms, url, status_code, observed_plan, \
     observed_features, deploy_sha, error, matched";

/// The columns of `alert_deliveries` a read selects, with the number of
/// incidents each is about.
pub(crate) const DELIVERY_COLUMNS: &str = "alert_deliveries.id, project, channel, event, status, \
     created_at, next_attempt_at, settled_at, last_error, \
     (SELECT COUNT(*) FROM alert_delivery_incidents l WHERE l.delivery_id = alert_deliveries.id) \
     AS incident_count";

/// The columns of `drills` a read selects.
pub(crate) const DRILL_COLUMNS: &str = "id, project, workflow, trigger, status, step, event_id, \
     run_id, incident_id, started_at, finished_at, scheduled_for, report, next_step_at";

/// The fields of a run a transition may change: what writing a run back
/// updates when it exists.
pub(crate) const RUN_UPDATABLE: [&str; 16] = [
    "customer_id",
    "subscription_id",
    "expected_plan",
    "expected_plan_reason",
    "observed_plan",
    "deploy_sha",
    "livemode",
    "stage",
    "status",
    "deadline_at",
    "closed_at",
    "expected_features",
    "keep_access_until",
    "observed_features",
    "event_created_at",
    "superseded_by",
];

/// [`run_upsert`] of every field in [`RUN_UPDATABLE`], built once: most
/// run writes (stage reports, merges on ingest) write them all.
pub(crate) static RUN_UPSERT_ALL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| run_upsert(RUN_UPDATABLE));

/// The end of a run upsert: when the run exists, `columns` (of
/// [`RUN_UPDATABLE`]) are written back from the row given.
pub(crate) fn run_upsert<'c>(columns: impl IntoIterator<Item = &'c str>) -> String {
    let set: Vec<String> = columns
        .into_iter()
        .map(|column| format!("{column} = excluded.{column}"))
        .collect();
    if set.is_empty() {
        " ON CONFLICT (id) DO NOTHING".to_owned()
    } else {
        format!(" ON CONFLICT (id) DO UPDATE SET {}", set.join(", "))
    }
}

fn features(list: &Option<Vec<String>>) -> Option<String> {
    list.as_ref().map(|f| serde_json::json!(f).to_string())
}

/// One run as a row of `runs`.
pub(crate) fn run_row<'a>(row: &mut Row<'_, 'a>, run: &'a Run) {
    row.text("id", run.id.to_string())
        .text("project", &run.project)
        .text("workflow", &run.workflow)
        .text("event_id", &run.event_id)
        .text("event_type", &run.event_type)
        .opt_text("customer_id", run.customer_id.as_deref())
        .opt_text("subscription_id", run.subscription_id.as_deref())
        .opt_text("expected_plan", run.expected_plan.as_deref())
        .opt_text("expected_plan_reason", run.expected_plan_reason.as_deref())
        .opt_text("observed_plan", run.observed_plan.as_deref())
        .opt_text("deploy_sha", run.deploy_sha.as_deref())
        .opt_bool("livemode", run.livemode)
        .text("stage", run.stage.as_str())
        .text("status", run.status.as_str())
        .int("opened_at", to_ms(run.opened_at))
        .int("reconciled_due_at", to_ms(run.reconciled_due_at))
        .int("access_due_at", to_ms(run.access_due_at))
        .opt_int("deadline_at", run.deadline_at.map(to_ms))
        .opt_int("closed_at", run.closed_at.map(to_ms))
        .opt_text("expected_features", features(&run.expected_features))
        .opt_int("keep_access_until", run.keep_access_until.map(to_ms))
        .opt_text("observed_features", features(&run.observed_features))
        .int("event_created_at", to_ms(run.event_created_at))
        .opt_text("superseded_by", run.superseded_by.map(|id| id.to_string()))
        .opt_text("probe_start", run.probe_start.map(|p| p.as_str()))
        .opt_text("drill_id", run.drill_id.map(|id| id.to_string()));
}

/// One timeline entry of `run` as a row of `run_timeline`.
pub(crate) fn timeline_row<'a>(row: &mut Row<'_, 'a>, run: &'a Run, entry: &'a TimelineEntry) {
    row.text("run_id", run.id.to_string())
        .int("at", to_ms(entry.at))
        .text("source", entry.source.as_str())
        .text("stage", entry.stage.as_str())
        .text("outcome", entry.outcome.as_str())
        .text("evidence", entry.evidence.to_string());
}

/// A new incident as a row of `incidents`, its evidence already as JSON.
pub(crate) fn incident_row<'a>(row: &mut Row<'_, 'a>, new: &'a NewIncident, evidence: String) {
    row.text("id", new.id.to_string())
        .text("scope", new.kind.scope().as_str())
        .opt_text("run_id", new.run_id.map(|id| id.to_string()))
        .text("project", &new.project)
        .text("workflow", &new.workflow)
        .text("kind", new.kind.as_str())
        .text("subject", &new.subject)
        .text("title", &new.title)
        .text("status", crate::incident::IncidentStatus::Open.as_str())
        .text("evidence", evidence)
        .int("opened_at", to_ms(new.opened_at))
        .bool("drill", new.drill);
}

/// A probe attempt of `run_id` as a row of `probe_attempts`.
pub(crate) fn probe_attempt_row<'a>(
    row: &mut Row<'_, 'a>,
    run_id: &'a str,
    attempt: &'a ProbeAttempt,
) {
    row.text("run_id", run_id)
        .int("at", to_ms(attempt.at))
        .int("duration_ms", attempt.duration_ms)
        .text("url", &attempt.url)
        .opt_int("status_code", attempt.status_code.map(i64::from))
        .opt_text("observed_plan", attempt.observed_plan.as_deref())
        .opt_text("observed_features", features(&attempt.observed_features))
        .opt_text("deploy_sha", attempt.deploy_sha.as_deref())
        .opt_text("error", attempt.error.as_deref())
        .bool("matched", attempt.matched);
}

fn parse<T: FromStr>(what: &str, text: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("{what} `{text}`: {e}")))
}

pub(crate) fn uuid(text: &str) -> Result<Uuid, StoreError> {
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
    scope: String,
    run_id: Option<String>,
    project: String,
    workflow: String,
    kind: String,
    subject: String,
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
        let scope: IncidentScope = parse("incident scope", &r.scope)?;
        Ok(Incident {
            id: uuid(&r.id)?,
            scope,
            run_id: r.run_id.as_deref().map(uuid).transpose()?,
            kind: parse("incident kind", &r.kind)?,
            status: parse("incident status", &r.status)?,
            evidence: Evidence::from_json(scope, &r.evidence)
                .map_err(|e| StoreError::Corrupt(format!("incident evidence: {e}")))?,
            project: r.project,
            workflow: r.workflow,
            subject: r.subject,
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

impl TryFrom<ProbeAttemptRow> for ProbeAttempt {
    type Error = StoreError;
    fn try_from(r: ProbeAttemptRow) -> Result<Self, StoreError> {
        Ok(ProbeAttempt {
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
    pub(crate) fn into_parts(self) -> Result<(Uuid, ProbeAttempt), StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{ProbeStart, RunStatus, Stage};
    use crate::store::rows::Rows;

    fn at(ms: i64) -> chrono::DateTime<chrono::Utc> {
        from_ms(1_767_225_600_000 + ms)
    }

    /// A run's write-back names only columns a run's row writes, every one
    /// but those fixed at opening, and sets each from the row given.
    #[test]
    fn a_run_upsert_writes_back_the_columns_a_row_writes() {
        let run = distinct_run();
        let rows = Rows::of([&run], |row, run| run_row(row, run));
        let written = rows.column_list();
        let written: Vec<&str> = written.split(", ").collect();
        for column in RUN_UPDATABLE {
            assert!(written.contains(&column), "`{column}` is not written");
        }
        let fixed: Vec<&&str> = written
            .iter()
            .filter(|c| !RUN_UPDATABLE.contains(*c))
            .collect();
        assert_eq!(
            fixed,
            [
                &"id",
                &"project",
                &"workflow",
                &"event_id",
                &"event_type",
                &"opened_at",
                &"reconciled_due_at",
                &"access_due_at",
                &"probe_start",
                &"drill_id"
            ]
            .as_slice(),
            "only what a run opens with is never written back"
        );
        assert_eq!(
            run_upsert(["stage", "status"]),
            " ON CONFLICT (id) DO UPDATE SET stage = excluded.stage, status = excluded.status"
        );
        assert_eq!(run_upsert([]), " ON CONFLICT (id) DO NOTHING");
        assert!(RUN_UPSERT_ALL.contains("superseded_by = excluded.superseded_by"));
    }

    /// Every field of a run with a value of its own, so that a value
    /// written under another column's name, or read from one, cannot pass.
    fn distinct_run() -> Run {
        Run {
            id: uuid::Uuid::now_v7(),
            project: "project-a".into(),
            workflow: "workflow-b".into(),
            event_id: "evt_c".into(),
            event_type: "type.d".into(),
            customer_id: Some("cus_e".into()),
            subscription_id: Some("sub_f".into()),
            expected_plan: Some("plan-g".into()),
            expected_plan_reason: Some("reason-h".into()),
            expected_features: Some(vec!["feature-i".into()]),
            keep_access_until: Some(at(1)),
            observed_plan: Some("plan-j".into()),
            observed_features: Some(vec!["feature-k".into()]),
            deploy_sha: Some("sha-l".into()),
            livemode: Some(true),
            stage: Stage::Reconciled,
            status: RunStatus::Superseded,
            event_created_at: at(2),
            superseded_by: Some(uuid::Uuid::now_v7()),
            probe_start: Some(ProbeStart::Reconciled),
            opened_at: at(3),
            reconciled_due_at: at(4),
            access_due_at: at(5),
            deadline_at: Some(at(6)),
            closed_at: Some(at(7)),
            drill_id: Some(uuid::Uuid::now_v7()),
        }
    }

    #[tokio::test]
    async fn every_field_of_a_run_reads_back_as_written() {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .unwrap();
        let run = distinct_run();
        let rows = Rows::of([&run], run_row);
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
            "INSERT INTO runs ({}) ",
            rows.column_list()
        ));
        rows.values(&mut insert);
        insert.build().execute(&pool).await.unwrap();
        let row: RunRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(Run::try_from(row).unwrap(), run);
    }
}
