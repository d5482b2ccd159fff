//! The embedded SQLite store.
//!
//! SQLite allows one writer at a time, so writes go through a pool of exactly
//! one connection: transactions queue in the pool instead of failing with
//! `SQLITE_BUSY`, and a read-modify-write inside one is never raced by
//! another writer. Reads use a separate pool and, under WAL, never wait for
//! the writer. `synchronous = FULL` makes every commit durable before we
//! acknowledge it.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::rows::{IncidentRow, RunRow, TimelineRow, convert, incident_columns, run_columns};
use super::{
    Cursor, IncidentFilter, Ingested, Page, RunDetail, RunFilter, RunRef, Store, StoreError,
    StoredEvent, Swept, to_ms,
};
use crate::incident::{Incident, NewIncident};
use crate::run::{Run, RunSpec, Source, Stage, StageReport, TimelineEntry};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The sweeper's query; one definition, so that the plan a test reads is the
/// plan the sweeper gets.
macro_rules! sweep_sql {
    () => {
        concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE deadline_at <= $1 ORDER BY deadline_at LIMIT $2"
        )
    };
}

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(database_url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(database_url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore { writer, reader })
    }

    /// SQLite's plan for the sweeper's query, one line per step.
    pub async fn explain_sweep(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(concat!("EXPLAIN QUERY PLAN ", sweep_sql!()))
                .bind(0_i64)
                .bind(1_i64)
                .fetch_all(&self.reader)
                .await?;
        Ok(rows.into_iter().map(|r| r.3).collect())
    }
}

async fn fetch_run(
    conn: &mut SqliteConnection,
    project: &str,
    run: &RunRef,
) -> Result<Option<Run>, StoreError> {
    let row: Option<RunRow> = match run {
        RunRef::Id(id) => {
            sqlx::query_as(concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs WHERE project = $1 AND id = $2"
            ))
            .bind(project)
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?
        }
        RunRef::EventId(event_id) => {
            sqlx::query_as(concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs WHERE project = $1 AND event_id = $2 ORDER BY opened_at LIMIT 1"
            ))
            .bind(project)
            .bind(event_id)
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    row.map(Run::try_from).transpose()
}

async fn insert_run(conn: &mut SqliteConnection, run: &Run) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "INSERT INTO runs (",
        run_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
    ))
    .bind(run.id.to_string())
    .bind(&run.project)
    .bind(&run.workflow)
    .bind(&run.event_id)
    .bind(&run.event_type)
    .bind(&run.customer_id)
    .bind(&run.subscription_id)
    .bind(&run.expected_plan)
    .bind(&run.expected_plan_reason)
    .bind(&run.observed_plan)
    .bind(&run.deploy_sha)
    .bind(run.livemode)
    .bind(run.stage.as_str())
    .bind(run.status.as_str())
    .bind(to_ms(run.opened_at))
    .bind(to_ms(run.reconciled_due_at))
    .bind(to_ms(run.access_due_at))
    .bind(run.deadline_at.map(to_ms))
    .bind(run.closed_at.map(to_ms))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes back every field a transition may change.
async fn save_run(conn: &mut SqliteConnection, run: &Run) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE runs SET customer_id = $2, subscription_id = $3, expected_plan = $4, \
         expected_plan_reason = $5, observed_plan = $6, deploy_sha = $7, livemode = $8, \
         stage = $9, status = $10, deadline_at = $11, closed_at = $12 WHERE id = $1",
    )
    .bind(run.id.to_string())
    .bind(&run.customer_id)
    .bind(&run.subscription_id)
    .bind(&run.expected_plan)
    .bind(&run.expected_plan_reason)
    .bind(&run.observed_plan)
    .bind(&run.deploy_sha)
    .bind(run.livemode)
    .bind(run.stage.as_str())
    .bind(run.status.as_str())
    .bind(run.deadline_at.map(to_ms))
    .bind(run.closed_at.map(to_ms))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn append_timeline(
    conn: &mut SqliteConnection,
    run_id: Uuid,
    entries: &[TimelineEntry],
) -> Result<(), StoreError> {
    for entry in entries {
        sqlx::query(
            "INSERT INTO run_timeline (run_id, at, source, stage, outcome, evidence) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(run_id.to_string())
        .bind(to_ms(entry.at))
        .bind(entry.source.as_str())
        .bind(entry.stage.as_str())
        .bind(&entry.outcome)
        .bind(entry.evidence.to_string())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Inserts the incident unless the run already has one of its kind; returns
/// whether it was inserted.
async fn insert_incident(
    conn: &mut SqliteConnection,
    new: &NewIncident,
) -> Result<bool, StoreError> {
    let done = sqlx::query(concat!(
        "INSERT INTO incidents (",
        incident_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8, NULL, NULL, NULL) \
         ON CONFLICT (run_id, kind) DO NOTHING"
    ))
    .bind(new.id.to_string())
    .bind(new.run_id.to_string())
    .bind(&new.project)
    .bind(&new.workflow)
    .bind(new.kind.as_str())
    .bind(&new.title)
    .bind(new.evidence.to_string())
    .bind(to_ms(new.opened_at))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

async fn save_incident(conn: &mut SqliteConnection, incident: &Incident) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE incidents SET status = $2, acknowledged_at = $3, resolved_at = $4, resolution = $5 \
         WHERE id = $1",
    )
    .bind(incident.id.to_string())
    .bind(incident.status.as_str())
    .bind(incident.acknowledged_at.map(to_ms))
    .bind(incident.resolved_at.map(to_ms))
    .bind(&incident.resolution)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn fetch_incident(
    conn: &mut SqliteConnection,
    project: &str,
    id: Uuid,
) -> Result<Incident, StoreError> {
    let row: Option<IncidentRow> = sqlx::query_as(concat!(
        "SELECT ",
        incident_columns!(),
        " FROM incidents WHERE project = $1 AND id = $2"
    ))
    .bind(project)
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    row.ok_or(StoreError::NotFound("incident"))?.try_into()
}

async fn incidents_of_run(
    conn: &mut SqliteConnection,
    run_id: Uuid,
) -> Result<Vec<Incident>, StoreError> {
    let rows: Vec<IncidentRow> = sqlx::query_as(concat!(
        "SELECT ",
        incident_columns!(),
        " FROM incidents WHERE run_id = $1 ORDER BY opened_at"
    ))
    .bind(run_id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    convert(rows)
}

/// Opens the run, or confirms the one the other side opened first.
async fn open_or_merge(
    conn: &mut SqliteConnection,
    spec: RunSpec,
    now: DateTime<Utc>,
) -> Result<(Run, bool), StoreError> {
    let key = RunRef::EventId(spec.event_id.clone());
    match fetch_run(conn, &spec.project, &key).await? {
        None => {
            let (run, entry) = Run::open(spec, now);
            insert_run(conn, &run).await?;
            append_timeline(conn, run.id, &[entry]).await?;
            Ok((run, true))
        }
        Some(mut run) => {
            if let Some(entry) = run.merge(spec, now) {
                save_run(conn, &run).await?;
                append_timeline(conn, run.id, &[entry]).await?;
            }
            Ok((run, false))
        }
    }
}

fn push_cursor(query: &mut QueryBuilder<Sqlite>, cursor: Option<Cursor>) {
    if let Some(c) = cursor {
        query
            .push(" AND (opened_at < ")
            .push_bind(c.at_ms)
            .push(" OR (opened_at = ")
            .push_bind(c.at_ms)
            .push(" AND id < ")
            .push_bind(c.id.to_string())
            .push("))");
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ready(&self) -> Result<(), StoreError> {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1")
                .fetch_one(&self.reader)
                .await?;
        if applied < MIGRATOR.iter().count() as i64 {
            return Err(StoreError::NotMigrated);
        }
        Ok(())
    }

    async fn ingest_stripe_event(
        &self,
        event: StoredEvent,
        run: Option<RunSpec>,
        now: DateTime<Utc>,
    ) -> Result<Ingested, StoreError> {
        let mut tx = self.writer.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO stripe_events (project, event_id, event_type, livemode, created, received_at, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (project, event_id) DO NOTHING",
        )
        .bind(&event.project)
        .bind(&event.event_id)
        .bind(&event.event_type)
        .bind(event.livemode)
        .bind(event.created)
        .bind(to_ms(now))
        .bind(&event.payload)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Ingested::Duplicate);
        }
        let run = match run {
            Some(spec) => Some(Box::new(open_or_merge(&mut tx, spec, now).await?.0)),
            None => None,
        };
        tx.commit().await?;
        Ok(Ingested::Stored { run })
    }

    async fn open_run(&self, spec: RunSpec, now: DateTime<Utc>) -> Result<(Run, bool), StoreError> {
        let mut tx = self.writer.begin().await?;
        let opened = open_or_merge(&mut tx, spec, now).await?;
        tx.commit().await?;
        Ok(opened)
    }

    async fn report_stage(
        &self,
        project: &str,
        run_ref: &RunRef,
        stage: Stage,
        report: StageReport,
        source: Source,
        now: DateTime<Utc>,
    ) -> Result<Run, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut run = fetch_run(&mut tx, project, run_ref)
            .await?
            .ok_or(StoreError::NotFound("run"))?;
        let outcome = run.report(stage, report, source, now)?;
        save_run(&mut tx, &run).await?;
        append_timeline(&mut tx, run.id, &outcome.timeline).await?;
        if outcome.access_now_matches {
            let resolution = format!(
                "access now matches: {} reported plan `{}`",
                source.as_str(),
                run.observed_plan.as_deref().unwrap_or_default()
            );
            for mut incident in incidents_of_run(&mut tx, run.id).await? {
                if incident.resolve(now, resolution.clone()) {
                    save_incident(&mut tx, &incident).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(run)
    }

    async fn run_detail(&self, project: &str, run_ref: &RunRef) -> Result<RunDetail, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let run = fetch_run(&mut conn, project, run_ref)
            .await?
            .ok_or(StoreError::NotFound("run"))?;
        let timeline: Vec<TimelineRow> = sqlx::query_as(
            "SELECT at, source, stage, outcome, evidence FROM run_timeline WHERE run_id = $1 ORDER BY seq",
        )
        .bind(run.id.to_string())
        .fetch_all(&mut *conn)
        .await?;
        let incidents = incidents_of_run(&mut conn, run.id).await?;
        Ok(RunDetail {
            run,
            timeline: convert(timeline)?,
            incidents,
        })
    }

    async fn list_runs(&self, project: &str, filter: &RunFilter) -> Result<Page<Run>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE project = "
        ));
        query.push_bind(project);
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(stage) = filter.stage {
            query.push(" AND stage = ").push_bind(stage.as_str());
        }
        if let Some(customer) = &filter.customer_id {
            query
                .push(" AND customer_id = ")
                .push_bind(customer.clone());
        }
        push_cursor(&mut query, filter.cursor);
        query
            .push(" ORDER BY opened_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(filter.limit) + 1);
        let rows: Vec<RunRow> = query.build_query_as().fetch_all(&self.reader).await?;
        Ok(Page::from_rows(
            convert(rows)?,
            filter.limit,
            |run: &Run| Cursor {
                at_ms: to_ms(run.opened_at),
                id: run.id,
            },
        ))
    }

    async fn sweep(&self, now: DateTime<Utc>, limit: u32) -> Result<Swept, StoreError> {
        let mut tx = self.writer.begin().await?;
        let rows: Vec<RunRow> = sqlx::query_as(sweep_sql!())
            .bind(to_ms(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let mut swept = Swept::default();
        for mut run in convert::<_, Run>(rows)? {
            let Some((incident, entry)) = run.expire(now) else {
                continue;
            };
            swept.runs_failed += 1;
            save_run(&mut tx, &run).await?;
            append_timeline(&mut tx, run.id, &[entry]).await?;
            if insert_incident(&mut tx, &incident).await? {
                swept.incidents.push(Incident::from_new(incident));
            }
        }
        tx.commit().await?;
        Ok(swept)
    }

    async fn list_incidents(
        &self,
        project: &str,
        filter: &IncidentFilter,
    ) -> Result<Page<Incident>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            incident_columns!(),
            " FROM incidents WHERE project = "
        ));
        query.push_bind(project);
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        push_cursor(&mut query, filter.cursor);
        query
            .push(" ORDER BY opened_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(filter.limit) + 1);
        let rows: Vec<IncidentRow> = query.build_query_as().fetch_all(&self.reader).await?;
        Ok(Page::from_rows(
            convert(rows)?,
            filter.limit,
            |i: &Incident| Cursor {
                at_ms: to_ms(i.opened_at),
                id: i.id,
            },
        ))
    }

    async fn incident(&self, project: &str, id: Uuid) -> Result<Incident, StoreError> {
        let mut conn = self.reader.acquire().await?;
        fetch_incident(&mut conn, project, id).await
    }

    async fn acknowledge_incident(
        &self,
        project: &str,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Incident, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut incident = fetch_incident(&mut tx, project, id).await?;
        if incident.acknowledge(now)? {
            save_incident(&mut tx, &incident).await?;
        }
        tx.commit().await?;
        Ok(incident)
    }

    async fn resolve_incident(
        &self,
        project: &str,
        id: Uuid,
        resolution: String,
        now: DateTime<Utc>,
    ) -> Result<Incident, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut incident = fetch_incident(&mut tx, project, id).await?;
        if incident.resolve(now, resolution) {
            save_incident(&mut tx, &incident).await?;
        }
        tx.commit().await?;
        Ok(incident)
    }
}
