//! The embedded SQLite store.
//!
//! SQLite allows one writer at a time, so writes go through a pool of exactly
//! one connection: transactions queue in the pool instead of failing with
//! `SQLITE_BUSY`, and a read-modify-write inside one is never raced by
//! another writer (which is why reads need no lock clause here). Reads use a
//! separate pool and, under WAL, never wait for the writer.
//! `synchronous = FULL` makes every commit durable before we acknowledge it.

use std::str::FromStr;
use std::time::Duration;

use const_format::concatcp;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use self::dialect::MIGRATOR;
use super::{DatabaseSettings, StoreError};

mod dialect;
/// The statements of `shared/`, compiled for SQLite.
#[path = "../shared/mod.rs"]
#[allow(
    clippy::duplicate_mod,
    reason = "each backend compiles the shared statements for its own types"
)]
mod shared;

pub use shared::SqlStore as SqliteStore;

impl SqliteStore {
    pub async fn connect(
        settings: &DatabaseSettings,
        outbox: std::sync::Arc<crate::alert::Outbox>,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(&settings.url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(settings.statement_timeout)
            .foreign_keys(true)
            // A batch's multi-row inserts keep a statement journal (to undo
            // the statement alone), which SQLite spills to a temp file once
            // it outgrows a small threshold: a batch of Stripe payloads
            // would open and write one every time. Kept in memory it costs
            // no file and no writes.
            .pragma("temp_store", "memory");
        let writer = open_writer(options.clone(), settings.statement_timeout).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore::new(
            writer,
            reader,
            1,
            settings.lease,
            outbox,
            metrics,
        ))
    }

    /// SQLite's plan for the sweeper's claim, one line per step.
    pub async fn explain_sweep(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(concatcp!(
            "EXPLAIN QUERY PLAN ",
            shared::sweep::CLAIM_OVERDUE
        ))
        .bind(0_i64)
        .bind(1_i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(|r| r.3).collect())
    }
}

/// Opens the writer and applies migrations. sqlx takes no lock on SQLite,
/// so processes that start on one file at once race: switching to WAL or
/// upgrading a migration's read to a write can fail at once with "database
/// is locked" (SQLite does not wait when waiting could deadlock), and a
/// migration another process applied a moment ago can be tried again. Each
/// step is transactional, so the loser retries, with jitter, until it finds
/// the work done or `patience` runs out.
async fn open_writer(
    options: SqliteConnectOptions,
    patience: Duration,
) -> Result<SqlitePool, StoreError> {
    let deadline = std::time::Instant::now() + patience.max(Duration::from_secs(5));
    let mut attempt: u32 = 0;
    loop {
        let opened = async {
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await?;
            MIGRATOR.run(&writer).await?;
            Ok::<_, StoreError>(writer)
        }
        .await;
        match opened {
            Ok(writer) => return Ok(writer),
            // A migration error may be the race too: another process
            // applied the migration after this one read the list.
            Err(e)
                if (matches!(e, StoreError::Migrate(_)) || e.to_string().contains("locked"))
                    && std::time::Instant::now() < deadline =>
            {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "starting raced another process; retrying");
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 50;
                tokio::time::sleep(Duration::from_millis(
                    20 * u64::from(attempt.min(10)) + jitter,
                ))
                .await;
            }
            Err(e) => return Err(e),
        }
    }
}
