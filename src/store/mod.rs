//! The store: where runs, their timelines, Stripe events, incidents, the
//! probe queue, the alert outbox, drills and sessions live.
//!
//! Callers see it through role traits ([`roles`]); each backend implements
//! them all and is picked at start-up from the database URL. The rules for
//! how a run moves live in [`crate::run`] and what an incident says in
//! [`crate::incident`]: the store loads, calls those pure transitions and
//! writes the result back atomically.
//!
//! Where the SQL is: every statement both backends run is in `shared/`, one
//! file per concern (the rows every concern reads and writes, ingest and
//! ordering, the SDK's calls and stage reports, the sweep, the probe queue,
//! the alert outbox, incidents, drills, sessions, read models), with the
//! statement fragments both share in `fragments.rs`. `shared/` is
//! compiled once per backend, as a module of [`sqlite`] and of [`postgres`],
//! each of which brings into scope its own `Db`, its connection type, and
//! the few clauses the two dialects spell differently. How rows are written
//! and read is in `records.rs`, multi-row statements in `rows.rs`.
//!
//! # The claim mechanism
//!
//! Background work that waits on the network is claimed with a lease: one
//! statement marks up to N due rows with a fresh `lease_token` and a
//! `lease_expires_at`, skipping rows another replica has locked or leased.
//! The worker then settles its rows in a transaction that reads them back
//! *by token* (so a row whose lease was taken over is not settled twice) and
//! releases the lease. A replica that dies between the two steps holds its
//! rows only until the lease expires; then any replica claims them again.
//! The prober claims its `probe_queue`, the alert sender `alert_deliveries`
//! and the drill runner `drills`, all through one claim statement shape
//! (`fragments.rs`, filled in per queue by `shared/claim.rs`). The sweeper needs no lease: it waits on nothing
//! between claiming and settling, so it does both in one transaction, its
//! rows locked (skipping those another replica has), and a replica that
//! dies mid-sweep leaves nothing held. Exactly-once outcomes do not rest on
//! the lease alone: the unique `(run_id, kind)` key refuses a second
//! incident even if an expired lease is settled late, and a probe is
//! recorded only by its lease's holder.

mod error;
mod fragments;
mod group_commit;
mod model;
pub mod postgres;
mod records;
mod roles;
mod rows;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

pub use error::StoreError;
pub(crate) use error::retry_deadlocked;
pub use model::{
    AuditFilter, BadCursor, Cursor, DEFAULT_PAGE, DashboardSession, DrillJob, IncidentDetail,
    IncidentFilter, Ingested, MAX_PAGE, PROBES_SHOWN, Page, RunDetail, RunFilter, RunRef,
    RunSummary, SsoSignIn, StoredEvent, Swept,
};
pub use roles::{
    AlertQueue, Audit, Drills, Health, Incidents, Ingest, Keys, ProbeQueue, ReadModels, Runs,
    Sessions, Store, Sweep, Watch,
};

use crate::alert::Outbox;

/// How to reach the database, and the limits that keep it healthy.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `postgres://...`.
    pub url: String,
    /// PostgreSQL pool size; SQLite read pool size (it always has one writer).
    pub max_connections: u32,
    /// PostgreSQL `statement_timeout` and pool acquire timeout; SQLite's busy
    /// timeout.
    pub statement_timeout: Duration,
    /// How long a claim on background work holds before another replica may
    /// take it over.
    pub lease: Duration,
}

/// Opens the store the URL's scheme names and applies its migrations; it
/// queues no alerts.
pub async fn connect(settings: &DatabaseSettings) -> Result<Arc<dyn Store>, StoreError> {
    connect_with(settings, Outbox::default(), Arc::default()).await
}

/// Opens the store; opening or resolving an incident queues the alerts
/// `outbox` says, in the same transaction, and every committed transition
/// of a run is counted in `metrics`.
pub async fn connect_with(
    settings: &DatabaseSettings,
    outbox: Outbox,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<Arc<dyn Store>, StoreError> {
    let outbox = Arc::new(outbox);
    if is_postgres(&settings.url) {
        Ok(Arc::new(
            postgres::PostgresStore::connect(settings, outbox, metrics).await?,
        ))
    } else {
        Ok(Arc::new(
            sqlite::SqliteStore::connect(settings, outbox, metrics).await?,
        ))
    }
}

/// This replica, as `pid@host`.
pub fn holder() -> &'static str {
    static HOLDER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOLDER.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".to_owned());
        format!("{}@{host}", std::process::id())
    })
}

/// A fresh claim token that names its holder (`pid@host/uuid`), so that an
/// operator, or a test, can tell which replica holds a lease.
pub fn lease_token() -> String {
    format!("{}/{}", holder(), Uuid::now_v7())
}

pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Times are stored as integer milliseconds since the epoch: exact, cheap to
/// index, and the same in every backend.
pub(crate) fn to_ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}
