//! The PostgreSQL store, for several replicas on one database.
//!
//! Every statement is shared with SQLite (see `sql.rs`); what is particular
//! here is how replicas stay out of each other's way: rows a transaction will
//! write back are read `FOR UPDATE`, background work is claimed with
//! `FOR UPDATE SKIP LOCKED` (plus a lease for work that waits on the
//! network), and migrations run under sqlx's advisory lock, so replicas that
//! start together apply them once. A multi-row statement binds one array
//! per column (`UNNEST`), one statement text whatever its row count.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::DatabaseSettings;
use super::sql::{scope_filter, sql_store};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PostgresStore {
    writer: PgPool,
    /// The same pool: PostgreSQL has no single-writer rule to work around.
    reader: PgPool,
    lease: Duration,
    outbox: std::sync::Arc<crate::alert::Outbox>,
    /// Committed transitions are counted here.
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Stripe deliveries, committed in groups by a few writers at once.
    ingest: super::group_commit::GroupCommit,
    /// How many ingest batches commit at once (a sweep runs half as many
    /// of its batches at once).
    writers: usize,
}

impl PostgresStore {
    pub async fn connect(
        settings: &DatabaseSettings,
        outbox: std::sync::Arc<crate::alert::Outbox>,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Result<PostgresStore, StoreError> {
        let options = PgConnectOptions::from_str(&settings.url)?
            // Names the replica (`assay pid@host`) in `pg_stat_activity`:
            // the sweeper's claims are row locks, and this says whose.
            .application_name(&format!("assay {}", super::holder()))
            .options([(
                "statement_timeout",
                format!("{}ms", settings.statement_timeout.as_millis()),
            )]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.statement_timeout)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        // Each writer holds a connection while its batch commits; half the
        // pool leaves the rest to readers and the background workers.
        let writers = (settings.max_connections as usize / 2).max(1);
        let ingest = super::group_commit::GroupCommit::start(
            writers,
            commit_ingest_batch(pool.clone(), metrics.clone()),
        );
        Ok(PostgresStore {
            writer: pool.clone(),
            reader: pool,
            lease: settings.lease,
            outbox,
            metrics,
            ingest,
            writers,
        })
    }
}

/// The runs of one scope's subjects (`scope_filter!`), but for the runs of
/// the events in the JSON array `$5` (`?` is jsonb's "holds this string"),
/// locked: a LATERAL join looks each subject up in the index by itself. An
/// `IN` list let the planner of a table without statistics yet (a new
/// database on renewal day) scan the project's every run per batch, as if
/// `project = $1` alone were selective: ingest slowed as runs accumulated.
macro_rules! scope_runs {
    ($subject:literal) => {
        concat!(
            "SELECT ",
            run_columns!(),
            " FROM jsonb_array_elements_text($3::jsonb) AS subject (key) CROSS JOIN LATERAL (SELECT ",
            run_columns!(),
            " FROM runs WHERE ",
            scope_filter!(),
            " AND ",
            $subject,
            " = subject.key AND NOT ($5::jsonb ? event_id) FOR UPDATE) AS runs"
        )
    };
}

sql_store!(
    PostgresStore,
    sqlx::Postgres,
    PgConnection,
    lock = " FOR UPDATE",
    skip_locked = " FOR UPDATE SKIP LOCKED",
    advisory_locks = "SELECT pg_advisory_xact_lock(hashtextextended(key, 0))",
    scope_runs = [
        scope_runs!("subscription_id"),
        scope_runs!("subscription_id IS NULL AND customer_id")
    ],
    rows = unnest
);
