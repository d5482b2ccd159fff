//! The PostgreSQL store, for several replicas on one database.
//!
//! Every statement is shared with SQLite (see `shared/`); what is particular
//! here is how replicas stay out of each other's way: rows a transaction will
//! write back are read `FOR UPDATE`, background work is claimed with
//! `FOR UPDATE SKIP LOCKED` (plus a lease for work that waits on the
//! network), transactions that open runs of one subject or alert about one
//! cause serialise on an advisory lock of its key, and migrations run under
//! sqlx's advisory lock, so replicas that start together apply them once. A
//! multi-row statement binds one array per column (`UNNEST`), one statement
//! text whatever its row count.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use self::dialect::MIGRATOR;
use super::{DatabaseSettings, StoreError};

mod dialect;
/// The statements of `shared/`, compiled for PostgreSQL.
#[path = "../shared/mod.rs"]
#[allow(
    clippy::duplicate_mod,
    reason = "each backend compiles the shared statements for its own types"
)]
mod shared;

pub use shared::SqlStore as PostgresStore;

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
        // The same pool serves reads: PostgreSQL has no single-writer rule
        // to work around.
        Ok(PostgresStore::new(
            pool.clone(),
            pool,
            writers,
            settings.lease,
            outbox,
            metrics,
        ))
    }
}
