//! The rows of runs, their timelines, incidents and the probe queue, read
//! and written as every concern of the store needs them: the layer the
//! role implementations beside it are built on.

use chrono::{DateTime, Utc};
use const_format::concatcp;

use super::{Conn, Db, KEY_LOCK, LOCK, push_rows};
use crate::incident::Incident;
use crate::metrics::Transition;
use crate::run::{ProbeAttempt, Run, TimelineEntry};
use crate::store::records::{
    INCIDENT_COLUMNS, IncidentRow, PROBE_COLUMNS, ProbeAttemptRow, RUN_COLUMNS, RUN_UPDATABLE,
    RUN_UPSERT_ALL, RunRow, convert, probe_attempt_row, run_row, run_upsert, timeline_row,
};
use crate::store::rows::{ROWS_PER_STATEMENT, Rows};
use crate::store::{Cursor, RunRef, StoreError, to_ms};

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
    let by_id = if locked { BY_ID_LOCKED } else { BY_ID };
    let by_event = if locked { BY_EVENT_LOCKED } else { BY_EVENT };
    let lookups = match run {
        RunRef::Id(id) => vec![(by_id, id.to_string())],
        RunRef::EventId(event_id) => vec![(by_event, event_id.clone())],
        RunRef::IdOrEventId(id, text) => vec![(by_id, id.to_string()), (by_event, text.clone())],
    };
    for (sql, key) in lookups {
        let row: Option<RunRow> = sqlx::query_as(sql)
            .bind(project)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(row) = row {
            return Run::try_from(row).map(Some);
        }
    }
    Ok(None)
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

/// Serialises the transaction on `keys` (the dialect's `KEY_LOCK`; SQLite's
/// one writer needs none), in key order, so that writers that share several
/// keys wait for each other instead of deadlocking.
pub(super) async fn lock_keys(conn: &mut Conn, mut keys: Vec<String>) -> Result<(), StoreError> {
    let Some(lock) = KEY_LOCK else {
        return Ok(());
    };
    keys.sort();
    keys.dedup();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let mut query = sqlx::QueryBuilder::new(lock);
        query.push(" FROM (");
        push_rows(
            &mut query,
            Rows::of(chunk, |row, key| {
                row.text("key", key.as_str());
            }),
        );
        query.push(") AS locks (key)");
        query.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Queues a probe of each run, due at `now`, unless one is queued already.
pub(super) async fn enqueue_probes(
    conn: &mut Conn,
    runs: &[&Run],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for chunk in runs.chunks(ROWS_PER_STATEMENT) {
        let rows = Rows::of(chunk, |row, run| {
            row.text("run_id", run.id.to_string())
                .int("due_at", to_ms(now));
        });
        let mut query = insert("probe_queue", rows);
        query.push(" ON CONFLICT (run_id) DO NOTHING");
        query.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Records one attempt on its run.
pub(super) async fn record_probe_attempt(
    conn: &mut Conn,
    run_id: uuid::Uuid,
    attempt: &ProbeAttempt,
) -> Result<(), StoreError> {
    let run_id = run_id.to_string();
    insert(
        "probe_attempts",
        Rows::of([attempt], |row, attempt| {
            probe_attempt_row(row, &run_id, attempt)
        }),
    )
    .build()
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The run's latest `limit` probe attempts, oldest first.
pub(super) async fn probes_of_run(
    conn: &mut Conn,
    run_id: uuid::Uuid,
    limit: i64,
) -> Result<Vec<ProbeAttempt>, StoreError> {
    let rows: Vec<ProbeAttemptRow> = sqlx::query_as(concatcp!(
        "SELECT ",
        PROBE_COLUMNS,
        " FROM probe_attempts WHERE run_id = $1 ORDER BY seq DESC LIMIT $2"
    ))
    .bind(run_id.to_string())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut probes: Vec<ProbeAttempt> = convert(rows)?;
    probes.reverse();
    Ok(probes)
}

/// Continues a newest-first list (by `at`, a time column, then id) after
/// `cursor`.
pub(super) fn push_cursor(
    query: &mut sqlx::QueryBuilder<Db>,
    at: &'static str,
    cursor: Option<Cursor>,
) {
    if let Some(c) = cursor {
        query
            .push(format!(" AND ({at} < "))
            .push_bind(c.at_ms)
            .push(format!(" OR ({at} = "))
            .push_bind(c.at_ms)
            .push(" AND id < ")
            .push_bind(c.id.to_string())
            .push("))");
    }
}
