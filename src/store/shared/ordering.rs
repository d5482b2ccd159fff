//! Opening runs, and settling which run of a subject (a subscription, or a
//! customer without one) is current once one opens or learns more (see
//! `run::settle_order`): the subject's locks, the read of its runs, and the
//! write-back of the runs that changed.

use chrono::{DateTime, Utc};

use super::tables::{append_timeline, enqueue_probes, fetch_run, lock_keys, write_run};
use super::{Conn, SCOPE_BY_CUSTOMER, SCOPE_BY_SUBSCRIPTION};
use crate::metrics::Transition;
use crate::run::{ProbeStart, Run, RunSpec, RunStatus, Source, Subject};
use crate::store::records::{RunRow, convert};
use crate::store::{RunRef, StoreError, to_ms};

/// Whether a run just opened is probed from its opening.
pub(super) fn probed_from_open(run: &Run) -> bool {
    run.probe_start == Some(ProbeStart::Open) && run.status == RunStatus::Open
}

/// Opens the run, or confirms the one the other side opened first. Safe
/// under concurrency: the insert yields to a run another request committed
/// first, which is then read locked and merged.
pub(super) async fn open_or_merge(
    conn: &mut Conn,
    spec: RunSpec,
    now: DateTime<Utc>,
    seen: &mut Vec<Transition>,
) -> Result<(Run, bool), StoreError> {
    let key = RunRef::EventId(spec.event_id.clone());
    let source = spec.source;
    // Insert first: most events open a new run, and the insert yields (one
    // statement, not a read and then a write) where one exists.
    let (mut run, entry) = Run::open(spec.clone(), now);
    if write_run(conn, &run, true).await? {
        append_timeline(conn, &run, &[entry], seen).await?;
        let delivered = delivered(conn, &run, source).await?;
        settle_order(conn, &mut run, delivered, now, seen).await?;
        if probed_from_open(&run) {
            enqueue_probes(conn, &[&run], now).await?;
        }
        return Ok((run, true));
    }
    let mut run = fetch_run(conn, &spec.project, &key, true)
        .await?
        .ok_or(StoreError::NotFound("run"))?;
    if let Some(entry) = run.merge(spec, now) {
        write_run(conn, &run, false).await?;
        append_timeline(conn, &run, &[entry], seen).await?;
        let delivered = delivered(conn, &run, source).await?;
        settle_order(conn, &mut run, delivered, now, seen).await?;
    }
    Ok((run, false))
}

/// Whether the run's Stripe event is stored (see `settle_order`). A Stripe
/// delivery stored it in this very transaction, so only the app's own
/// opening asks.
async fn delivered(conn: &mut Conn, run: &Run, source: Source) -> Result<bool, StoreError> {
    if source == Source::Stripe {
        return Ok(true);
    }
    let stored: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM stripe_events WHERE project = $1 AND event_id = $2",
    )
    .bind(&run.project)
    .bind(&run.event_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(stored > 0)
}

/// Settles which run of its subscription (or customer) is current once
/// `run` has opened or learnt more (see `run::settle_order`), and writes
/// back every run that changed. Only the open runs and the runs of newer
/// events are read.
///
/// Events are ordered by Stripe's `created`. A run the app opened before
/// Stripe's delivery has only its opening time, later than the event's:
/// ordering on it would let an older event supersede newer ones for good.
/// So only runs whose Stripe event is stored take part; an app-opened run
/// settles when the delivery tells its time (`merge`).
async fn settle_order(
    conn: &mut Conn,
    run: &mut Run,
    delivered: bool,
    now: DateTime<Utc>,
    seen: &mut Vec<Transition>,
) -> Result<(), StoreError> {
    if !delivered || run.subject().is_none() {
        return Ok(());
    }
    lock_scopes(conn, &[&*run]).await?;
    let mut others: Vec<Run> = scope_runs(conn, &[&*run]).await?;
    for (which, entry) in crate::run::settle_order(run, &mut others, now) {
        let changed = match which {
            None => &*run,
            Some(i) => &others[i],
        };
        write_run(conn, changed, false).await?;
        append_timeline(conn, changed, &[entry], seen).await?;
    }
    Ok(())
}

/// Locks the ordering scopes of `runs` (see `tables::lock_keys`). Two events of
/// one subject opening at once must not both miss each other: the later
/// waits here for the first to commit.
pub(super) async fn lock_scopes(conn: &mut Conn, runs: &[&Run]) -> Result<(), StoreError> {
    lock_keys(
        conn,
        runs.iter().copied().filter_map(subject_lock_key).collect(),
    )
    .await
}

/// The key of the lock on a run's ordering scope.
fn subject_lock_key(run: &Run) -> Option<String> {
    let (project, workflow, Subject::Subscription(id) | Subject::Customer(id)) =
        run.order_scope()?;
    Some(format!("{project}/{workflow}/{id}"))
}

/// Reads, locked, what `runs` settle against (`run::settle_order`): the
/// other runs of their scopes that `SCOPE_FILTER` names, in one statement
/// per project, workflow and kind of subject. `runs` themselves are left out
/// by their event ids (a run's scope is within its project and workflow,
/// where its event id is its key): a batch's just-opened runs would
/// otherwise come back to be decoded, and on PostgreSQL locked, only to be
/// dropped.
pub(super) async fn scope_runs(conn: &mut Conn, runs: &[&Run]) -> Result<Vec<Run>, StoreError> {
    struct Scope<'r> {
        subscriptions: Vec<&'r str>,
        customers: Vec<&'r str>,
        events: Vec<&'r str>,
        oldest: DateTime<Utc>,
    }
    let mut scopes: std::collections::HashMap<(&str, &str), Scope<'_>> =
        std::collections::HashMap::new();
    for run in runs {
        let Some(subject) = run.subject() else {
            continue;
        };
        let scope = scopes
            .entry((run.project.as_str(), run.workflow.as_str()))
            .or_insert_with(|| Scope {
                subscriptions: Vec::new(),
                customers: Vec::new(),
                events: Vec::new(),
                oldest: run.event_created_at,
            });
        scope.oldest = scope.oldest.min(run.event_created_at);
        scope.events.push(&run.event_id);
        match subject {
            Subject::Subscription(_) => scope.subscriptions.extend(run.subscription_id.as_deref()),
            Subject::Customer(_) => scope.customers.extend(run.customer_id.as_deref()),
        }
    }
    let mut found = Vec::new();
    for ((project, workflow), scope) in &scopes {
        let events = serde_json::json!(scope.events).to_string();
        for (sql, ids) in [
            (SCOPE_BY_SUBSCRIPTION, &scope.subscriptions),
            (SCOPE_BY_CUSTOMER, &scope.customers),
        ] {
            if ids.is_empty() {
                continue;
            }
            // One text for any number of subjects: the statement is
            // prepared once, where an IN list would be one per length.
            let rows: Vec<RunRow> = sqlx::query_as(sql)
                .bind(*project)
                .bind(*workflow)
                .bind(serde_json::json!(ids).to_string())
                .bind(to_ms(scope.oldest))
                .bind(&events)
                .fetch_all(&mut *conn)
                .await?;
            found.extend(convert::<RunRow, Run>(rows)?);
        }
    }
    Ok(found)
}
