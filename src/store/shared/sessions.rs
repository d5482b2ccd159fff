//! Dashboard sessions: only the hash of a session's cookie is stored.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::SqlStore;
use crate::access::AuditEntry;
use crate::store::{DashboardSession, Sessions, StoreError, from_ms, to_ms};

#[async_trait]
impl Sessions for SqlStore {
    async fn create_session(
        &self,
        session: &DashboardSession,
        signed_in: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        // Expired sessions go when new ones come: no cleanup job.
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
            .bind(to_ms(session.created_at))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO dashboard_sessions (id_hash, operator, csrf_token, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&session.id_hash)
        .bind(&session.operator)
        .bind(&session.csrf_token)
        .bind(to_ms(session.created_at))
        .bind(to_ms(session.expires_at))
        .execute(&mut *tx)
        .await?;
        super::access::append(&mut tx, signed_in).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DashboardSession>, StoreError> {
        let row: Option<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT operator, csrf_token, created_at, expires_at FROM dashboard_sessions \
             WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(to_ms(now))
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(
            |(operator, csrf_token, created_at, expires_at)| DashboardSession {
                id_hash: id_hash.to_owned(),
                operator,
                csrf_token,
                created_at: from_ms(created_at),
                expires_at: from_ms(expires_at),
            },
        ))
    }

    async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
