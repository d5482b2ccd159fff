//! Stripe deliveries, stored in group commits: a batch of deliveries in one
//! transaction, each event once per (project, event id), each first
//! delivery's run opened and settled against its subject's runs.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::FutureExt;

use super::ordering::{lock_scopes, open_or_merge, probed_from_open, scope_runs};
use super::tables::{append_timelines, enqueue_probes, insert, write_runs};
use super::{Conn, Db, SqlStore};
use crate::metrics::{Metrics, Transition};
use crate::run::{Run, RunSpec, TimelineEntry};
use crate::store::group_commit::{CommitBatch, Pending, panic_message};
use crate::store::records::{run_row, uuid};
use crate::store::rows::{ROWS_PER_STATEMENT, Rows};
use crate::store::{Ingest, Ingested, StoreError, StoredEvent, retry_deadlocked, to_ms};

#[async_trait]
impl Ingest for SqlStore {
    async fn ingest_stripe_event(
        &self,
        event: StoredEvent,
        run: Option<RunSpec>,
        now: DateTime<Utc>,
    ) -> Result<Ingested, StoreError> {
        self.ingest.submit(event, run, now).await
    }

    async fn stripe_event(
        &self,
        project: &str,
        event_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT payload FROM stripe_events WHERE project = $1 AND event_id = $2",
        )
        .bind(project)
        .bind(event_id)
        .fetch_optional(&self.reader)
        .await?)
    }
}

/// Stores deliveries inside `conn`'s transaction in a few statements
/// for all of them, not a few each: every event once per (project,
/// event id) and, on its first delivery, its run, settled against
/// its subject's runs as if the deliveries had come one at a time
/// (`run::settle_opened`).
///
/// The batch is stored as if its deliveries came one at a time in
/// event-id order, which is as good a serial order as arrival: the
/// final state does not depend on it. Events and runs are written in
/// that order and subjects locked in key order (those of runs the
/// app opened first too, which merge last), so writers' batches that
/// share events or subjects queue behind each other. A run is
/// inserted before its subject is locked, as the app's own opening
/// does. Runs probed from their opening are queued once the batch
/// has settled, due at its first delivery's time; one already
/// superseded by a newer event in the batch is not queued.
async fn ingest_batch(
    conn: &mut Conn,
    deliveries: &[&Pending],
    seen: &mut Vec<Transition>,
) -> Result<Vec<Ingested>, StoreError> {
    use std::collections::HashSet;
    let key = |i: &usize| {
        (
            deliveries[*i].event.project.as_str(),
            deliveries[*i].event.event_id.as_str(),
        )
    };
    let mut order: Vec<usize> = (0..deliveries.len()).collect();
    order.sort_by(|a, b| key(a).cmp(&key(b)));
    // The same event twice in one batch is stored once, for the first.
    order.dedup_by(|later, earlier| key(later) == key(earlier));
    // The primary key makes a redelivery a no-op, even when two
    // replicas receive it at the same moment.
    let mut inserted: HashSet<(String, String)> = HashSet::new();
    for chunk in order.chunks(ROWS_PER_STATEMENT) {
        let rows = Rows::of(chunk, |row, &i| {
            let d = deliveries[i];
            row.text("project", &d.event.project)
                .text("event_id", &d.event.event_id)
                .text("event_type", &d.event.event_type)
                .opt_bool("livemode", d.event.livemode)
                .opt_int("created", d.event.created)
                .int("received_at", to_ms(d.now))
                .text("payload", &d.event.payload);
        });
        let mut query = insert("stripe_events", rows);
        query.push(" ON CONFLICT (project, event_id) DO NOTHING RETURNING project, event_id");
        let rows: Vec<(String, String)> = query.build_query_as().fetch_all(&mut *conn).await?;
        inserted.extend(rows);
    }
    let mut outcomes = vec![Ingested::Duplicate { run_id: None }; deliveries.len()];
    let mut opening: Vec<(usize, Run, TimelineEntry)> = Vec::new();
    for i in order {
        let (project, event_id) = key(&i);
        if !inserted.contains(&(project.to_owned(), event_id.to_owned())) {
            continue;
        }
        outcomes[i] = Ingested::Stored { run: None };
        if let Some(spec) = &deliveries[i].run {
            let (run, entry) = Run::open(spec.clone(), deliveries[i].now);
            opening.push((i, run, entry));
        }
    }
    // Open the runs; where the app opened one first, merge below.
    let mut new_ids: HashSet<String> = HashSet::new();
    for chunk in opening.chunks(ROWS_PER_STATEMENT) {
        let mut query = insert(
            "runs",
            Rows::of(chunk, |row, (_, run, _)| run_row(row, run)),
        );
        query.push(" ON CONFLICT (project, workflow, event_id) DO NOTHING RETURNING id");
        let ids: Vec<String> = query.build_query_scalar().fetch_all(&mut *conn).await?;
        new_ids.extend(ids);
    }
    let (opening, merging): (Vec<_>, Vec<_>) = opening
        .into_iter()
        .partition(|(_, run, _)| new_ids.contains(&run.id.to_string()));
    let mut opened: Vec<Run> = Vec::with_capacity(opening.len());
    let mut opened_for: Vec<usize> = Vec::with_capacity(opening.len());
    let mut entries: Vec<TimelineEntry> = Vec::with_capacity(opening.len());
    for (i, run, entry) in opening {
        opened_for.push(i);
        opened.push(run);
        entries.push(entry);
    }
    let firsts: Vec<(&Run, &TimelineEntry)> = opened.iter().zip(&entries).collect();
    append_timelines(conn, &firsts, seen).await?;

    // Settle each subject's order: lock the subjects (PostgreSQL),
    // read their stored runs, settle in memory, write what changed.
    // The runs to merge below settle their subjects too: their locks
    // are taken now, in the same order, not one by one later.
    let locking: Vec<&Run> = opened
        .iter()
        .chain(merging.iter().map(|(_, run, _)| run))
        .collect();
    lock_scopes(conn, &locking).await?;
    // Runs the app opened first are not settled until merged: until
    // then their order is their opening time, not Stripe's.
    let merging_events: HashSet<(&str, &str)> = merging
        .iter()
        .map(|(_, run, _)| (run.project.as_str(), run.event_id.as_str()))
        .collect();
    let reading: Vec<&Run> = opened.iter().collect();
    let mut stored: Vec<Run> = scope_runs(conn, &reading)
        .await?
        .into_iter()
        .filter(|run| !merging_events.contains(&(run.project.as_str(), run.event_id.as_str())))
        .collect();
    let changes = crate::run::settle_opened(&mut opened, &mut stored);
    if !changes.is_empty() {
        let pick = |which: &crate::run::Settled| match *which {
            crate::run::Settled::Opened(i) => &opened[i],
            crate::run::Settled::Stored(i) => &stored[i],
        };
        let mut changed: Vec<&Run> = Vec::new();
        for (which, _) in &changes {
            let run = pick(which);
            if !changed.iter().any(|c| c.id == run.id) {
                changed.push(run);
            }
        }
        write_runs(conn, &changed, None).await?;
        let settled: Vec<(&Run, &TimelineEntry)> = changes
            .iter()
            .map(|(which, entry)| (pick(which), entry))
            .collect();
        append_timelines(conn, &settled, seen).await?;
    }
    let probe_now: Vec<&Run> = opened.iter().filter(|run| probed_from_open(run)).collect();
    if let Some(now) = deliveries.iter().map(|d| d.now).min()
        && !probe_now.is_empty()
    {
        enqueue_probes(conn, &probe_now, now).await?;
    }
    for (i, run) in opened_for.into_iter().zip(opened) {
        outcomes[i] = Ingested::Stored {
            run: Some(Box::new(run)),
        };
    }
    for (i, _, _) in merging {
        if let Some(spec) = &deliveries[i].run {
            let (run, _) = open_or_merge(conn, spec.clone(), deliveries[i].now, seen).await?;
            outcomes[i] = Ingested::Stored {
                run: Some(Box::new(run)),
            };
        }
    }
    // A redelivery answers with the run its first delivery opened, read
    // after this batch's runs are written: the first may be in it.
    for (outcome, delivery) in outcomes.iter_mut().zip(deliveries) {
        if let (Ingested::Duplicate { run_id }, Some(spec)) = (outcome, &delivery.run) {
            *run_id = run_of_event(conn, spec).await?;
        }
    }
    Ok(outcomes)
}

/// The id of the run of `spec`'s event, if one is stored.
async fn run_of_event(conn: &mut Conn, spec: &RunSpec) -> Result<Option<uuid::Uuid>, StoreError> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT id FROM runs WHERE project = $1 AND workflow = $2 AND event_id = $3",
    )
    .bind(&spec.project)
    .bind(&spec.workflow)
    .bind(&spec.event_id)
    .fetch_optional(&mut *conn)
    .await?;
    id.as_deref().map(uuid).transpose()
}

/// Stores `deliveries` in one transaction: all of them or none.
/// Returns the transitions made, for the metrics: the caller counts
/// them, outside its panic guard, so that nothing after the commit
/// can make a committed batch look failed.
async fn ingest_together(
    writer: &sqlx::Pool<Db>,
    deliveries: &[&Pending],
) -> Result<(Vec<Ingested>, Vec<Transition>), StoreError> {
    let mut tx = writer.begin().await?;
    let mut seen = Vec::new();
    let outcomes = ingest_batch(&mut tx, deliveries, &mut seen).await?;
    tx.commit().await?;
    Ok((outcomes, seen))
}

/// The group-commit writer (see `group_commit`): a batch in one
/// transaction. If the database cannot be reached, every delivery in
/// the batch gets that answer at once. If it refused the batch (a
/// constraint, a deadlock with another writer, a row it cannot
/// read), each delivery is retried in its own transaction, so one
/// bad delivery costs its neighbours only time. A panic is caught
/// like a refusal, so the writer lives on for the deliveries after.
pub(super) fn commit_batch(writer: sqlx::Pool<Db>, metrics: Arc<Metrics>) -> CommitBatch {
    std::sync::Arc::new(move |batch| {
        let (writer, metrics) = (writer.clone(), metrics.clone());
        let span = tracing::debug_span!("ingest_batch", deliveries = batch.len());
        Box::pin(tracing::Instrument::instrument(
            async move {
                // A delivery whose request is gone was never going to be
                // acknowledged: Stripe delivers it again.
                let batch: Vec<_> = batch.into_iter().filter(|d| !d.reply.is_closed()).collect();
                if batch.is_empty() {
                    return;
                }
                let together = {
                    let all: Vec<_> = batch.iter().collect();
                    std::panic::AssertUnwindSafe(ingest_together(&writer, &all))
                        .catch_unwind()
                        .await
                };
                let failure = match together {
                    Ok(Ok((outcomes, seen))) => {
                        metrics.record(&seen);
                        for (d, outcome) in batch.into_iter().zip(outcomes) {
                            let _ = d.reply.send(Ok(outcome));
                        }
                        return;
                    }
                    Ok(Err(e)) if e.unavailable() => {
                        tracing::error!(error = %e, deliveries = batch.len(), "an ingest batch could not be stored");
                        let message = e.to_string();
                        for d in batch {
                            let _ = d.reply.send(Err(StoreError::Unavailable(message.clone())));
                        }
                        return;
                    }
                    Ok(Err(e)) => e,
                    Err(panic) => StoreError::Crashed(panic_message(&*panic)),
                };
                // A lone delivery has had its try, unless it lost a deadlock.
                if batch.len() == 1 && !failure.deadlocked() {
                    if let StoreError::Crashed(why) = &failure {
                        tracing::error!(panic = %why, "storing a delivery panicked");
                    }
                    if let Some(d) = batch.into_iter().next() {
                        let _ = d.reply.send(Err(failure));
                    }
                    return;
                }
                tracing::warn!(
                    error = %failure,
                    deliveries = batch.len(),
                    "an ingest batch failed; storing its deliveries one at a time"
                );
                for d in batch {
                    let one = [&d];
                    let outcome = std::panic::AssertUnwindSafe(retry_deadlocked(|| {
                        ingest_together(&writer, &one)
                    }))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| Err(StoreError::Crashed(panic_message(&*panic))))
                    .map(|(mut outcomes, seen)| {
                        metrics.record(&seen);
                        outcomes.remove(0)
                    });
                    if let Err(StoreError::Crashed(why)) = &outcome {
                        tracing::error!(panic = %why, event_id = %d.event.event_id, "storing a delivery panicked");
                    }
                    let _ = d.reply.send(outcome);
                }
            },
            span,
        ))
    })
}
