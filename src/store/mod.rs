//! The store: where runs, their timelines, Stripe events and incidents live.
//!
//! [`Store`] is the whole boundary the rest of Assay sees; each backend
//! implements it (SQLite now, PostgreSQL beside it later) and is picked at
//! start-up from the database URL. The rules for how a run moves live in
//! [`crate::run`] and [`crate::incident`]; a backend only loads, calls those
//! pure transitions and writes the result back atomically.

mod group_commit;
pub mod postgres;
mod rows;
mod sql;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::alert::{Delivery, DeliveryJob, DeliveryOutcome, Outbox};
use crate::drill::Drill;
use crate::incident::{Incident, IncidentError, IncidentStatus};
use crate::probe::{ProbeJob, ProbeSchedule};
use crate::run::{
    ProbeAttempt, ReportError, Run, RunSpec, RunStatus, Source, Stage, StageReport, TimelineEntry,
};

/// The most rows one list call returns.
pub const MAX_PAGE: u32 = 200;
pub const DEFAULT_PAGE: u32 = 50;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Incident(#[from] IncidentError),
    #[error("the database has not applied every migration this build needs")]
    NotMigrated,
    #[error("database error: {0}")]
    Backend(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the ingest writer has stopped; the event was not acknowledged")]
    WriterStopped,
    /// The database could not be reached for a whole batch of deliveries.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Storing panicked: a bug, caught so that the writer lives on.
    #[error("storing failed unexpectedly: {0}")]
    Crashed(String),
}

impl StoreError {
    /// The database could not be reached at all (as opposed to refusing
    /// one transaction): every write at this moment fails alike.
    pub(crate) fn unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_)
                | StoreError::WriterStopped
                | StoreError::Backend(
                    sqlx::Error::Io(_)
                        | sqlx::Error::Tls(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                )
        )
    }

    /// PostgreSQL chose this transaction as a deadlock's victim, or failed
    /// it for serialization: the same work tried again normally succeeds.
    pub(crate) fn deadlocked(&self) -> bool {
        matches!(self, StoreError::Backend(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("40P01" | "40001")))
    }
}

/// Runs `attempt` again, once, if it lost a deadlock: the transaction that
/// won has gone on, so the second try normally goes through.
pub(crate) async fn retry_deadlocked<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    match attempt().await {
        Err(e) if e.deadlocked() => {
            tracing::debug!(error = %e, "lost a deadlock; trying once more");
            attempt().await
        }
        other => other,
    }
}

/// A run named in a URL: its UUID, or the provider event id that keys it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunRef {
    Id(Uuid),
    EventId(String),
}

impl RunRef {
    pub fn parse(text: &str) -> RunRef {
        match Uuid::parse_str(text) {
            Ok(id) => RunRef::Id(id),
            Err(_) => RunRef::EventId(text.to_owned()),
        }
    }
}

/// A Stripe event exactly as it arrived, kept once per project and id.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub project: String,
    pub event_id: String,
    pub event_type: String,
    pub livemode: Option<bool>,
    pub created: Option<i64>,
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// First delivery: stored, with the run it opened (or merged into).
    Stored { run: Option<Box<Run>> },
    /// Seen before: nothing changed.
    Duplicate,
}

/// Position in a newest-first list: the last row's time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at_ms: i64,
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cursor is not one this server handed out")]
pub struct BadCursor;

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.at_ms, self.id))
    }

    pub fn decode(text: &str) -> Result<Cursor, BadCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| BadCursor)?;
        let (at, id) = text.split_once(':').ok_or(BadCursor)?;
        Ok(Cursor {
            at_ms: at.parse().map_err(|_| BadCursor)?,
            id: Uuid::parse_str(id).map_err(|_| BadCursor)?,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub stage: Option<Stage>,
    pub customer_id: Option<String>,
    /// Drill runs instead of real customers' (the two never mix).
    pub drill: bool,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub status: Option<IncidentStatus>,
    /// Drill incidents instead of real customers' (the two never mix).
    pub drill: bool,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row only says
    /// that there is a next page.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> Cursor) -> Page<T> {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = more
            .then(|| rows.last().map(|last| cursor_of(last).encode()))
            .flatten();
        Page {
            data: rows,
            next_cursor,
        }
    }
}

/// How many probe attempts a run's detail shows.
pub const PROBES_SHOWN: i64 = 100;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    pub timeline: Vec<TimelineEntry>,
    /// The latest [`PROBES_SHOWN`] probe attempts, oldest first: a failed
    /// run probed for a day has many.
    pub probes: Vec<ProbeAttempt>,
    /// How many probe attempts the run has in all.
    pub probe_count: i64,
    pub incidents: Vec<Incident>,
}

/// What one sweep batch did.
#[derive(Debug, Clone, Default)]
pub struct Swept {
    /// Overdue runs this batch claimed; fewer than the limit means no more.
    pub runs_claimed: usize,
    pub runs_failed: usize,
    pub incidents: Vec<Incident>,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Ready to serve: the database answers and every migration is applied.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Stores a Stripe event once per (project, event id) and, on its first
    /// delivery, opens (or confirms) its run in the same transaction.
    async fn ingest_stripe_event(
        &self,
        event: StoredEvent,
        run: Option<RunSpec>,
        now: DateTime<Utc>,
    ) -> Result<Ingested, StoreError>;

    /// Opens a run from the app side; idempotent on the event id. Returns the
    /// run and whether this call created it.
    async fn open_run(&self, spec: RunSpec, now: DateTime<Utc>) -> Result<(Run, bool), StoreError>;

    async fn report_stage(
        &self,
        project: &str,
        run: &RunRef,
        stage: Stage,
        report: StageReport,
        source: Source,
        now: DateTime<Utc>,
    ) -> Result<Run, StoreError>;

    async fn run_detail(&self, project: &str, run: &RunRef) -> Result<RunDetail, StoreError>;

    async fn list_runs(&self, project: &str, filter: &RunFilter) -> Result<Page<Run>, StoreError>;

    /// Claims up to `limit` runs whose deadline has passed at `now` (see the
    /// claim mechanism in `sql.rs`), fails them and opens their incidents.
    async fn sweep(&self, now: DateTime<Utc>, limit: u32) -> Result<Swept, StoreError>;

    /// How many writing transactions make progress at once: one on SQLite
    /// (one writer connection), as many as the ingest writers on PostgreSQL.
    fn writers(&self) -> usize;

    /// Claims up to `limit` runs due for a probe, with a lease.
    async fn claim_probes(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ProbeJob>, StoreError>;

    /// Records a probe attempt on its run, applies what it saw (a match
    /// asserts access, as an SDK report would) and schedules the next probe
    /// with the project's schedule, or ends probing; all in one transaction.
    /// `attempt` is `None` when there was nothing to probe (the run ended).
    /// Returns whether it was recorded: false when the lease had passed to
    /// another replica, whose record counts instead.
    async fn finish_probe(
        &self,
        job: &ProbeJob,
        attempt: Option<(ProbeAttempt, ProbeSchedule)>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Gives a claimed probe back unmade, due as it was: the next claim,
    /// by any replica, makes it.
    async fn release_probe(&self, job: &ProbeJob) -> Result<(), StoreError>;

    async fn list_incidents(
        &self,
        project: &str,
        filter: &IncidentFilter,
    ) -> Result<Page<Incident>, StoreError>;

    /// One incident with its alert deliveries and their attempts.
    async fn incident(&self, project: &str, id: Uuid) -> Result<IncidentDetail, StoreError>;

    /// Claims up to `limit` alert deliveries that are due, with a lease.
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryJob>, StoreError>;

    /// Records what the sender did with a claimed delivery; only the
    /// lease's holder records.
    /// Returns whether it was recorded (see [`Store::finish_probe`]).
    async fn finish_delivery(
        &self,
        job: &DeliveryJob,
        outcome: DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// The raw Stripe event as delivered, if Assay has it.
    async fn stripe_event(
        &self,
        project: &str,
        event_id: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Counts and latencies of a project's runs opened since `since`, for
    /// the dashboard's summary strip.
    async fn run_summary(
        &self,
        project: &str,
        since: DateTime<Utc>,
    ) -> Result<RunSummary, StoreError>;

    async fn create_session(&self, session: &DashboardSession) -> Result<(), StoreError>;

    /// The session whose id hashes to `id_hash`, if it has not expired.
    async fn session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DashboardSession>, StoreError>;

    async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError>;

    /// Queues a reminder for every open (unacknowledged) incident last
    /// alerted about more than `interval` ago; returns how many.
    async fn queue_reminders(
        &self,
        now: DateTime<Utc>,
        interval: Duration,
    ) -> Result<usize, StoreError>;

    async fn acknowledge_incident(
        &self,
        project: &str,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Incident, StoreError>;

    async fn resolve_incident(
        &self,
        project: &str,
        id: Uuid,
        resolution: String,
        now: DateTime<Utc>,
    ) -> Result<Incident, StoreError>;

    /// Stores a new drill, due at once. With `only_if_idle`, not while
    /// another drill of its project and workflow is running. A scheduled
    /// drill is stored once per schedule time, however many replicas try.
    /// Returns whether it was stored.
    async fn create_drill(&self, drill: &Drill, only_if_idle: bool) -> Result<bool, StoreError>;

    /// Claims up to `limit` drills whose next step is due, with a lease.
    async fn claim_drills(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DrillJob>, StoreError>;

    /// Writes back a claimed drill after a step and releases the lease;
    /// false (nothing written) when the lease passed to another replica.
    async fn save_drill(&self, job: &DrillJob) -> Result<bool, StoreError>;

    async fn drill(&self, project: &str, id: Uuid) -> Result<Drill, StoreError>;

    /// A project's drills, newest first.
    async fn list_drills(
        &self,
        project: &str,
        limit: u32,
        cursor: Option<Cursor>,
    ) -> Result<Page<Drill>, StoreError>;

    /// Records a drill's probe on its run: the attempt, and what it saw,
    /// never as a match (see [`Run::observe_for_drill`]).
    async fn record_drill_probe(
        &self,
        project: &str,
        run_id: Uuid,
        attempt: ProbeAttempt,
        now: DateTime<Utc>,
    ) -> Result<Run, StoreError>;

    /// How things stand now, for the metrics' gauges: counted through
    /// indexes, so a scrape costs what is open, not what is stored.
    async fn standing(&self, now: DateTime<Utc>) -> Result<crate::metrics::Standing, StoreError>;

    /// Ends a drill's run that is still open, without an incident: the
    /// drill broke off and must leave nothing behind to alert later.
    async fn end_drill_run(
        &self,
        project: &str,
        run_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Run, StoreError>;
}

/// A drill claimed by one replica's drill runner, for its next step.
#[derive(Debug, Clone)]
pub struct DrillJob {
    pub drill: Drill,
    pub lease_token: String,
    /// After this, another replica may take the step over.
    pub lease_expires_at: DateTime<Utc>,
}

/// What the dashboard's summary strip shows for one project.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunSummary {
    pub opened: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub superseded: i64,
    pub open: i64,
    /// From opening to access confirmed, over the succeeded runs.
    pub median_ms: Option<i64>,
    pub p95_ms: Option<i64>,
}

impl RunSummary {
    /// Fills the latencies from the succeeded runs' durations.
    pub fn with_latencies(mut self, mut durations_ms: Vec<i64>) -> RunSummary {
        durations_ms.sort_unstable();
        let at = |q: f64| {
            (!durations_ms.is_empty()).then(|| {
                let rank = ((durations_ms.len() as f64) * q).ceil() as usize;
                durations_ms[rank.clamp(1, durations_ms.len()) - 1]
            })
        };
        self.median_ms = at(0.5);
        self.p95_ms = at(0.95);
        self
    }
}

/// A signed-in operator's dashboard session.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardSession {
    /// SHA-256 of the cookie's value, hex.
    pub id_hash: String,
    pub operator: String,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// An incident with its alert deliveries.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub incident: Incident,
    pub deliveries: Vec<Delivery>,
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_database_fails_a_whole_batch() {
        for gone in [
            StoreError::Backend(sqlx::Error::PoolTimedOut),
            StoreError::Backend(sqlx::Error::PoolClosed),
            StoreError::Backend(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())),
        ] {
            assert!(gone.unavailable(), "{gone}");
        }
        for refused in [
            StoreError::Backend(sqlx::Error::RowNotFound),
            StoreError::Backend(sqlx::Error::ColumnNotFound("stage".into())),
            StoreError::Corrupt("a bad stage".into()),
            StoreError::Crashed("a bug".into()),
        ] {
            assert!(!refused.unavailable(), "{refused}");
            assert!(!refused.deadlocked(), "{refused}");
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = Cursor {
            at_ms: 1_767_225_600_123,
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        assert_eq!(Cursor::decode("!!"), Err(BadCursor));
        assert_eq!(
            Cursor::decode(&URL_SAFE_NO_PAD.encode("12:nope")),
            Err(BadCursor)
        );
    }

    #[test]
    fn run_refs_tell_uuids_from_event_ids() {
        let id = Uuid::now_v7();
        assert_eq!(RunRef::parse(&id.to_string()), RunRef::Id(id));
        assert_eq!(RunRef::parse("evt_1"), RunRef::EventId("evt_1".into()));
    }
}
