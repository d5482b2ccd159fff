//! Runs and their timelines: how a run is read and written back, and the
//! SDK's calls (open a run, report a stage, read and list runs).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use const_format::concatcp;

use super::{Conn, Db, LOCK, SqlStore, ordering, probes, push_cursor, push_rows};
use crate::alert::Outbox;
use crate::incident::Incident;
use crate::metrics::Transition;
use crate::run::{ReportOutcome, Run, RunSpec, Source, Stage, StageReport, TimelineEntry};
use crate::store::records::{
    INCIDENT_COLUMNS, IncidentRow, RUN_COLUMNS, RUN_UPDATABLE, RUN_UPSERT_ALL, RunRow, TimelineRow,
    convert, run_row, run_upsert, timeline_row,
};
use crate::store::rows::{ROWS_PER_STATEMENT, Rows};
use crate::store::{
    Cursor, PROBES_SHOWN, Page, RunDetail, RunFilter, RunRef, Runs, StoreError, retry_deadlocked,
    to_ms,
};

const BY_ID: &str = concatcp!(
    "SELECT ",
    RUN_COLUMNS,
    " FROM runs WHERE project = $1 AND id = $2"
);
const BY_EVENT: &str = concatcp!(
    "SELECT ",
    RUN_COLUMNS,
    " FROM runs WHERE project = $1 AND event_id = $2"
);
const BY_ID_LOCKED: &str = concatcp!(BY_ID, LOCK);
const BY_EVENT_LOCKED: &str = concatcp!(BY_EVENT, LOCK);

/// Reads one run of `project`; `locked` when the transaction will write it
/// back.
pub(super) async fn fetch_run(
    conn: &mut Conn,
    project: &str,
    run: &RunRef,
    locked: bool,
) -> Result<Option<Run>, StoreError> {
    let (sql, key) = match (run, locked) {
        (RunRef::Id(id), false) => (BY_ID, id.to_string()),
        (RunRef::Id(id), true) => (BY_ID_LOCKED, id.to_string()),
        (RunRef::EventId(event_id), false) => (BY_EVENT, event_id.clone()),
        (RunRef::EventId(event_id), true) => (BY_EVENT_LOCKED, event_id.clone()),
    };
    let row: Option<RunRow> = sqlx::query_as(sql)
        .bind(project)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(Run::try_from).transpose()
}

/// `INSERT INTO table (columns) <rows>`, the columns those the rows name.
pub(super) fn insert<'a>(table: &str, rows: Rows<'a>) -> sqlx::QueryBuilder<Db> {
    let mut query =
        sqlx::QueryBuilder::<Db>::new(format!("INSERT INTO {table} ({}) ", rows.column_list()));
    push_rows(&mut query, rows);
    query
}

/// Inserts a new run, or writes back every field a transition may change.
/// Returns false when `insert_only` and the event already had a run
/// (another request opened it first).
pub(super) async fn write_run(
    conn: &mut Conn,
    run: &Run,
    insert_only: bool,
) -> Result<bool, StoreError> {
    let mut query = insert("runs", Rows::of([run], run_row));
    if insert_only {
        query.push(" ON CONFLICT (project, workflow, event_id) DO NOTHING");
    } else {
        query.push(RUN_UPSERT_ALL.as_str());
    }
    let done = query.build().execute(&mut *conn).await?;
    Ok(done.rows_affected() == 1)
}

/// Writes back many runs, a few statements for all of them: every field a
/// transition may change or, given the same runs as they were read
/// (`before`, in the same order), only the fields that changed in any of
/// them. SQLite rewrites every index on a column an update assigns,
/// changed or not, so writing back only what changed spares the indexes on
/// the customer and subscription of every run a sweep fails.
pub(super) async fn write_runs(
    conn: &mut Conn,
    runs: &[&Run],
    before: Option<&[Run]>,
) -> Result<(), StoreError> {
    for (i, chunk) in runs.chunks(ROWS_PER_STATEMENT).enumerate() {
        let rows = Rows::of(chunk.iter().copied(), run_row);
        let upsert = match before {
            Some(before) => {
                let start = i * ROWS_PER_STATEMENT;
                let read = Rows::of(&before[start..start + chunk.len()], run_row);
                let changed = rows.changed(&read);
                std::borrow::Cow::Owned(run_upsert(
                    RUN_UPDATABLE.into_iter().filter(|c| changed.contains(c)),
                ))
            }
            None => std::borrow::Cow::Borrowed(RUN_UPSERT_ALL.as_str()),
        };
        let mut query = insert("runs", rows);
        query.push(upsert);
        query.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Appends the run's new timeline entries, and notes the transitions they
/// make in `seen`, for the metrics once the transaction commits.
pub(super) async fn append_timeline(
    conn: &mut Conn,
    run: &Run,
    entries: &[TimelineEntry],
    seen: &mut Vec<Transition>,
) -> Result<(), StoreError> {
    let entries: Vec<_> = entries.iter().map(|e| (run, e)).collect();
    append_timelines(conn, &entries, seen).await
}

/// Appends entries of many runs, a few statements for all of them.
pub(super) async fn append_timelines(
    conn: &mut Conn,
    entries: &[(&Run, &TimelineEntry)],
    seen: &mut Vec<Transition>,
) -> Result<(), StoreError> {
    for (run, entry) in entries {
        seen.extend(Transition::of(run, std::slice::from_ref(*entry)));
    }
    for chunk in entries.chunks(ROWS_PER_STATEMENT) {
        let rows = Rows::of(chunk, |row, (run, entry)| timeline_row(row, run, entry));
        insert("run_timeline", rows)
            .build()
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The incidents of a run, oldest first.
pub(super) async fn incidents_of_run(
    conn: &mut Conn,
    run_id: uuid::Uuid,
) -> Result<Vec<Incident>, StoreError> {
    let rows: Vec<IncidentRow> = sqlx::query_as(concatcp!(
        "SELECT ",
        INCIDENT_COLUMNS,
        " FROM incidents WHERE run_id = $1 ORDER BY opened_at, id"
    ))
    .bind(run_id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    convert(rows)
}

/// Writes back a run after a stage report or a matching probe, with its
/// timeline entries; resolves the run's incidents when access now matches,
/// and starts probing when the run reached its probe stage.
pub(super) async fn save_report(
    conn: &mut Conn,
    outbox: &Outbox,
    run: &Run,
    outcome: &ReportOutcome,
    source: Source,
    now: DateTime<Utc>,
    seen: &mut Vec<Transition>,
) -> Result<(), StoreError> {
    write_run(conn, run, false).await?;
    append_timeline(conn, run, &outcome.timeline, seen).await?;
    if outcome.access_now_matches {
        let resolution = format!(
            "access now matches: {} reported plan `{}`",
            source.as_str(),
            run.observed_plan.as_deref().unwrap_or_default()
        );
        for mut incident in incidents_of_run(conn, run.id).await? {
            super::incidents::resolve(conn, outbox, &mut incident, resolution.clone(), now).await?;
        }
    }
    if outcome.start_probing {
        probes::enqueue(conn, &[run], now).await?;
    }
    Ok(())
}

#[async_trait]
impl Runs for SqlStore {
    async fn open_run(&self, spec: RunSpec, now: DateTime<Utc>) -> Result<(Run, bool), StoreError> {
        // Its merge locks the run, then the subject; a Stripe batch locks
        // subjects, then their runs: PostgreSQL may pick this one as a
        // deadlock's victim, and the second try goes through.
        let (opened, seen) = retry_deadlocked(|| async {
            let mut tx = self.writer.begin().await?;
            let mut seen = Vec::new();
            let opened = ordering::open_or_merge(&mut tx, spec.clone(), now, &mut seen).await?;
            tx.commit().await?;
            Ok((opened, seen))
        })
        .await?;
        self.metrics.record(&seen);
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
        let mut run = fetch_run(&mut tx, project, run_ref, true)
            .await?
            .ok_or(StoreError::NotFound("run"))?;
        let outcome = run.report(stage, report, source, now)?;
        let mut seen = Vec::new();
        save_report(
            &mut tx,
            &self.outbox,
            &run,
            &outcome,
            source,
            now,
            &mut seen,
        )
        .await?;
        tx.commit().await?;
        self.metrics.record(&seen);
        Ok(run)
    }

    async fn run_detail(&self, project: &str, run_ref: &RunRef) -> Result<RunDetail, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let run = fetch_run(&mut conn, project, run_ref, false)
            .await?
            .ok_or(StoreError::NotFound("run"))?;
        let timeline: Vec<TimelineRow> = sqlx::query_as(
            "SELECT at, source, stage, outcome, evidence FROM run_timeline WHERE run_id = $1 \
             ORDER BY seq",
        )
        .bind(run.id.to_string())
        .fetch_all(&mut *conn)
        .await?;
        let incidents = incidents_of_run(&mut conn, run.id).await?;
        let probes = probes::of_run(&mut conn, run.id, PROBES_SHOWN).await?;
        let probe_count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM probe_attempts WHERE run_id = $1")
                .bind(run.id.to_string())
                .fetch_one(&mut *conn)
                .await?;
        Ok(RunDetail {
            run,
            timeline: convert(timeline)?,
            probes,
            probe_count,
            incidents,
        })
    }

    async fn list_runs(&self, project: &str, filter: &RunFilter) -> Result<Page<Run>, StoreError> {
        let mut query = sqlx::QueryBuilder::<Db>::new(concatcp!(
            "SELECT ",
            RUN_COLUMNS,
            " FROM runs WHERE project = "
        ));
        query.push_bind(project.to_owned());
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
        query.push(if filter.drill {
            " AND drill_id IS NOT NULL"
        } else {
            " AND drill_id IS NULL"
        });
        push_cursor(&mut query, "opened_at", filter.cursor);
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
}
