//! The statements both backends run, written once. This folder is compiled
//! once per backend, as a module of `sqlite/` and of `postgres/`; the
//! backend's `dialect` module brings into scope its `Db` and `Conn` types,
//! its migrations and the clauses its dialect spells its own way:
//!
//! - `LOCK`, appended to reads that a transaction will write back;
//! - `SKIP_LOCKED`, which lets concurrent replicas claim disjoint rows;
//! - `KEY_LOCK`, which serialises transactions on named keys (the opening
//!   of runs about one subject, the grouping of alerts about one cause);
//! - `SCOPE_BY_SUBSCRIPTION` and `SCOPE_BY_CUSTOMER`, which read the runs of
//!   many subjects in one statement, in the form its planner looks each
//!   subject up by index;
//! - `push_rows`, how a multi-row statement binds its rows (`rows.rs`).
//!
//! Each file holds one concern: `tables` (the rows of runs, timelines,
//! incidents and the probe queue, read and written as every other file
//! needs them), `runs` (the SDK's calls), `report` (what a stage report or
//! a matching probe writes), `ordering` (opening runs and settling which
//! event of a subject is current), `ingest` (Stripe deliveries, in group
//! commits), `sweep`, `probes`, `incidents`, `outbox` (alert deliveries and
//! reminders), `drills`, `sessions`, `reads` (readiness, the dashboard's
//! summary, the metrics' gauges) and `claim` (the lease every worker's
//! queue is claimed with).

mod access;
mod claim;
mod drills;
mod incidents;
mod ingest;
mod ordering;
mod outbox;
mod probes;
mod reads;
mod report;
mod runs;
mod sessions;
/// Public to the backend, which may read its claim's plan.
pub(super) mod sweep;
mod tables;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use super::dialect::{
    Conn, Db, KEY_LOCK, LOCK, MIGRATOR, SCOPE_BY_CUSTOMER, SCOPE_BY_SUBSCRIPTION, SKIP_LOCKED,
    push_rows,
};
use crate::alert::Outbox;
use crate::metrics::Metrics;
use crate::store::group_commit::GroupCommit;

/// A store on one database of this backend.
pub struct SqlStore {
    /// Writing transactions: SQLite's one writer connection, or the pool.
    writer: sqlx::Pool<Db>,
    /// Reads that write nothing back.
    pub(super) reader: sqlx::Pool<Db>,
    /// How many writing transactions make progress at once.
    writers: usize,
    /// How long a claim on background work holds.
    lease: Duration,
    /// Which alerts opening or resolving an incident queues.
    outbox: Arc<Outbox>,
    /// Committed transitions are counted here.
    metrics: Arc<Metrics>,
    /// Stripe deliveries, committed in groups by `writers` writers.
    ingest: GroupCommit,
}

impl SqlStore {
    /// The store on migrated pools; starts the ingest writers.
    pub(super) fn new(
        writer: sqlx::Pool<Db>,
        reader: sqlx::Pool<Db>,
        writers: usize,
        lease: Duration,
        outbox: Arc<Outbox>,
        metrics: Arc<Metrics>,
    ) -> SqlStore {
        let ingest = GroupCommit::start(
            writers,
            ingest::commit_batch(writer.clone(), metrics.clone()),
        );
        SqlStore {
            writer,
            reader,
            writers,
            lease,
            outbox,
            metrics,
            ingest,
        }
    }
}
