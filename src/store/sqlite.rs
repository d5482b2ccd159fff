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

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::DatabaseSettings;
use super::sql::sql_store;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    lease: Duration,
}

impl SqliteStore {
    pub async fn connect(settings: &DatabaseSettings) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(&settings.url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(settings.statement_timeout)
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore {
            writer,
            reader,
            lease: settings.lease,
        })
    }

    /// SQLite's plan for the sweeper's claim, one line per step.
    pub async fn explain_sweep(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(concat!("EXPLAIN QUERY PLAN ", claim_overdue_sql!("")))
                .bind("token")
                .bind(0_i64)
                .bind(0_i64)
                .bind(1_i64)
                .fetch_all(&self.reader)
                .await?;
        Ok(rows.into_iter().map(|r| r.3).collect())
    }
}

/// Applies migrations. sqlx takes no lock on SQLite, so two processes that
/// start on one file at once can both try the same migration; each runs in a
/// transaction, so the loser fails cleanly and, on a retry, finds it applied.
async fn migrate(writer: &SqlitePool) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        match MIGRATOR.run(writer).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "migration raced another process; retrying");
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    SqliteConnection,
    lock = "",
    skip_locked = "",
    subject_lock = ""
);
