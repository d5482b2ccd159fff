//! The store's one error type, and what a caller may do about each kind.

use crate::incident::IncidentError;
use crate::run::ReportError;

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
}
