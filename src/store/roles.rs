//! The store as its callers see it: one trait per role, so that a module
//! asks only for what it uses (the sweeper for [`Sweep`], the prober for
//! [`ProbeQueue`], the alert sender for [`AlertQueue`]), and [`Store`], all
//! of them, for the HTTP layer and the drill runner. Each backend
//! implements every role; the statements behind each are in the file of
//! `shared/` named after it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    AuditFilter, Cursor, DashboardSession, DrillJob, IncidentDetail, IncidentFilter, Ingested,
    Page, RunDetail, RunFilter, RunRef, RunSummary, SsoSignIn, StoreError, StoredEvent, Swept,
};
use crate::access::{Actor, ApiKey, AuditEntry};
use crate::alert::{DeliveryJob, DeliveryOutcome};
use crate::drill::Drill;
use crate::incident::{Incident, NewIncident, ProjectCause};
use crate::probe::{ProbeJob, ProbeSchedule};
use crate::run::{ProbeAttempt, Run, RunSpec, Source, Stage, StageReport};
use crate::watch::TallyEntry;

/// Readiness: the database answers and every migration is applied.
#[async_trait]
pub trait Health: Send + Sync {
    async fn ready(&self) -> Result<(), StoreError>;
}

/// Stripe deliveries as they arrive.
#[async_trait]
pub trait Ingest: Send + Sync {
    /// Stores a Stripe event once per (project, event id) and, on its first
    /// delivery, opens (or confirms) its run in the same transaction.
    async fn ingest_stripe_event(
        &self,
        event: StoredEvent,
        run: Option<RunSpec>,
        now: DateTime<Utc>,
    ) -> Result<Ingested, StoreError>;

    /// The raw Stripe event as delivered, if Assay has it.
    async fn stripe_event(
        &self,
        project: &str,
        event_id: &str,
    ) -> Result<Option<String>, StoreError>;
}

/// Runs as the app's SDK sees them: opened, reported on, read.
#[async_trait]
pub trait Runs: Send + Sync {
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
}

/// The sweeper's: overdue runs fail and open their incidents.
#[async_trait]
pub trait Sweep: Send + Sync {
    /// Claims up to `limit` runs whose deadline has passed at `now`, fails
    /// them and opens their incidents, in one transaction.
    async fn sweep(&self, now: DateTime<Utc>, limit: u32) -> Result<Swept, StoreError>;

    /// How many writing transactions make progress at once: one on SQLite
    /// (one writer connection), as many as the ingest writers on PostgreSQL.
    fn writers(&self) -> usize;
}

/// The prober's queue.
#[async_trait]
pub trait ProbeQueue: Send + Sync {
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
}

/// Incidents and their workflow.
#[async_trait]
pub trait Incidents: Send + Sync {
    async fn list_incidents(
        &self,
        project: &str,
        filter: &IncidentFilter,
    ) -> Result<Page<Incident>, StoreError>;

    /// One incident with its alert deliveries and their attempts.
    async fn incident(&self, project: &str, id: Uuid) -> Result<IncidentDetail, StoreError>;

    /// Acknowledges by hand; `actor`'s audit entry goes with the change.
    async fn acknowledge_incident(
        &self,
        project: &str,
        id: Uuid,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Incident, StoreError>;

    /// Resolves by hand; the resolve alerts and `actor`'s audit entry are
    /// queued with it.
    async fn resolve_incident(
        &self,
        project: &str,
        id: Uuid,
        resolution: String,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Incident, StoreError>;
}

/// The alert sender's outbox.
#[async_trait]
pub trait AlertQueue: Send + Sync {
    /// Claims up to `limit` alert deliveries that are due, with a lease.
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryJob>, StoreError>;

    /// Records what the sender did with a claimed delivery; only the
    /// lease's holder records. Returns whether it was recorded (see
    /// [`ProbeQueue::finish_probe`]).
    async fn finish_delivery(
        &self,
        job: &DeliveryJob,
        outcome: DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Queues a reminder for every open (unacknowledged) incident last
    /// alerted about more than `interval` ago; returns how many.
    async fn queue_reminders(
        &self,
        now: DateTime<Utc>,
        interval: Duration,
    ) -> Result<usize, StoreError>;
}

/// Failure drills, and what they do to their runs.
#[async_trait]
pub trait Drills: Send + Sync {
    /// Stores a new drill, due at once. With `only_if_idle`, not while
    /// another drill of its project and workflow is running. A scheduled
    /// drill is stored once per schedule time, however many replicas try.
    /// Returns whether it was stored; `actor`'s audit entry goes with it.
    async fn create_drill(
        &self,
        drill: &Drill,
        only_if_idle: bool,
        actor: &Actor,
    ) -> Result<bool, StoreError>;

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

    /// Ends a drill's run that is still open, without an incident: the
    /// drill broke off and must leave nothing behind to alert later.
    async fn end_drill_run(
        &self,
        project: &str,
        run_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Run, StoreError>;

    /// Skips, with `reason`, the alerts still pending about a drill run's
    /// incidents: the drill is over, and they must not go out later.
    /// Returns how many were skipped; a run that is not a drill's has none.
    async fn skip_drill_alerts(
        &self,
        project: &str,
        run_id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
}

/// Scoped API keys. Creating and revoking one appends its audit entry in
/// the same transaction.
#[async_trait]
pub trait Keys: Send + Sync {
    async fn create_key(&self, key: &ApiKey, actor: &Actor) -> Result<(), StoreError>;

    /// A project's keys, revoked ones included, newest first.
    async fn list_keys(&self, project: &str) -> Result<Vec<ApiKey>, StoreError>;

    /// Revokes a key of `project` (once: revoking it again changes nothing).
    async fn revoke_key(
        &self,
        project: &str,
        id: Uuid,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<ApiKey, StoreError>;

    /// The key whose secret hashes to `key_hash`, whatever its state.
    async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError>;

    /// Notes when a key was last used.
    async fn key_used(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError>;
}

/// The audit log: appended to, read; never changed.
#[async_trait]
pub trait Audit: Send + Sync {
    /// Appends an entry that no other change goes with (a sign-in).
    async fn record(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// A project's entries (and, if the filter asks, those of no project:
    /// the sign-ins), newest first.
    async fn audit_log(&self, filter: &AuditFilter) -> Result<Page<AuditEntry>, StoreError>;
}

/// Dashboard sessions.
#[async_trait]
pub trait Sessions: Send + Sync {
    /// Stores a new session with the audit entry of its sign-in.
    async fn create_session(
        &self,
        session: &DashboardSession,
        signed_in: &AuditEntry,
    ) -> Result<(), StoreError>;

    /// The session whose id hashes to `id_hash`, if it has not expired.
    async fn session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DashboardSession>, StoreError>;

    async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError>;

    /// Keeps a sign-in begun at the identity provider until it comes back.
    async fn begin_sso_sign_in(&self, sign_in: &SsoSignIn) -> Result<(), StoreError>;

    /// Takes the sign-in whose `state` hashes to `state_hash`, begun by the
    /// browser whose cookie hashes to `browser_hash`, if it has not
    /// expired: once, so that a replayed `state` finds nothing.
    async fn take_sso_sign_in(
        &self,
        state_hash: &str,
        browser_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SsoSignIn>, StoreError>;
}

/// Counts for the dashboard and the metrics, read through indexes.
#[async_trait]
pub trait ReadModels: Send + Sync {
    /// Counts and latencies of a project's runs opened since `since`, for
    /// the dashboard's summary strip.
    async fn run_summary(
        &self,
        project: &str,
        since: DateTime<Utc>,
    ) -> Result<RunSummary, StoreError>;

    /// How things stand now, for the metrics' gauges: counted through
    /// indexes, so a scrape costs what is open, not what is stored.
    async fn standing(&self, now: DateTime<Utc>) -> Result<crate::metrics::Standing, StoreError>;

    /// The first incident of each of `runs` that has one, by run id, for
    /// the dashboard's runs list to link to.
    async fn first_incidents(
        &self,
        project: &str,
        runs: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, Uuid>, StoreError>;
}

/// The watcher's: the tally of deliveries, and the project incidents it
/// opens, keeps up to date and resolves.
#[async_trait]
pub trait Watch: Send + Sync {
    /// Adds a replica's counts to the tally.
    async fn add_tallies(&self, entries: &[TallyEntry]) -> Result<(), StoreError>;

    /// The tally of `project` from the minute of `since` on, oldest first.
    async fn tallies(
        &self,
        project: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<TallyEntry>, StoreError>;

    /// Opens the project incident `new` is about, with its alerts, unless
    /// one of its cause is open; that one's title and evidence are brought
    /// up to date instead. Returns the incident if this call opened it.
    async fn keep_project_incident(
        &self,
        new: NewIncident,
        now: DateTime<Utc>,
    ) -> Result<Option<Incident>, StoreError>;

    /// Resolves the open project incident of `cause`, with its alerts;
    /// returns it if there was one.
    async fn clear_project_incident(
        &self,
        cause: &ProjectCause,
        resolution: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Incident>, StoreError>;

    /// Every project's open (or acknowledged) project incidents.
    async fn open_project_incidents(&self) -> Result<Vec<Incident>, StoreError>;
}

/// Every role: what the HTTP layer, the dashboard and the drill runner hold.
pub trait Store:
    Health
    + Ingest
    + Runs
    + Sweep
    + ProbeQueue
    + Incidents
    + AlertQueue
    + Drills
    + Sessions
    + Keys
    + Audit
    + ReadModels
    + Watch
{
}

impl<T> Store for T where
    T: Health
        + Ingest
        + Runs
        + Sweep
        + ProbeQueue
        + Incidents
        + AlertQueue
        + Drills
        + Sessions
        + Keys
        + Audit
        + ReadModels
        + Watch
{
}
