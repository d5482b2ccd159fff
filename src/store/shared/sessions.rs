//! Dashboard sessions: only the hash of a session's cookie is stored.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::SqlStore;
use crate::access::AuditEntry;
use crate::store::{DashboardSession, Sessions, SsoSignIn, StoreError, from_ms, to_ms};

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
            "INSERT INTO dashboard_sessions (id_hash, operator, sso_groups, csrf_token, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&session.id_hash)
        .bind(&session.operator)
        .bind(groups_json(session.sso_groups.as_deref())?)
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
        let row: Option<(String, Option<String>, String, i64, i64)> = sqlx::query_as(
            "SELECT operator, sso_groups, csrf_token, created_at, expires_at FROM dashboard_sessions \
             WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(to_ms(now))
        .fetch_optional(&self.reader)
        .await?;
        let Some((operator, sso_groups, csrf_token, created_at, expires_at)) = row else {
            return Ok(None);
        };
        Ok(Some(DashboardSession {
            id_hash: id_hash.to_owned(),
            operator,
            sso_groups: sso_groups
                .map(|text| serde_json::from_str::<Vec<String>>(&text))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("a session's groups: {e}")))?,
            csrf_token,
            created_at: from_ms(created_at),
            expires_at: from_ms(expires_at),
        }))
    }

    async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn begin_sso_sign_in(&self, sign_in: &SsoSignIn) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        // Sign-ins never finished go when new ones begin: no cleanup job.
        sqlx::query("DELETE FROM sso_sign_ins WHERE expires_at <= $1")
            .bind(to_ms(sign_in.created_at))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sso_sign_ins \
             (state_hash, browser_hash, nonce, pkce_verifier, next, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&sign_in.state_hash)
        .bind(&sign_in.browser_hash)
        .bind(&sign_in.nonce)
        .bind(&sign_in.pkce_verifier)
        .bind(&sign_in.next)
        .bind(to_ms(sign_in.created_at))
        .bind(to_ms(sign_in.expires_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_sso_sign_in(
        &self,
        state_hash: &str,
        browser_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SsoSignIn>, StoreError> {
        // Deleted whether or not it has expired: either way it is spent.
        // Only the browser that began it can spend it.
        let row: Option<(String, String, String, String, i64, i64)> = sqlx::query_as(
            "DELETE FROM sso_sign_ins WHERE state_hash = $1 AND browser_hash = $2 \
             RETURNING browser_hash, nonce, pkce_verifier, next, created_at, expires_at",
        )
        .bind(state_hash)
        .bind(browser_hash)
        .fetch_optional(&self.writer)
        .await?;
        Ok(row.filter(|row| row.5 > to_ms(now)).map(
            |(browser_hash, nonce, pkce_verifier, next, created_at, expires_at)| SsoSignIn {
                state_hash: state_hash.to_owned(),
                browser_hash,
                nonce,
                pkce_verifier,
                next,
                created_at: from_ms(created_at),
                expires_at: from_ms(expires_at),
            },
        ))
    }
}

fn groups_json(groups: Option<&[String]>) -> Result<Option<String>, StoreError> {
    groups
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("a session's groups: {e}")))
}
