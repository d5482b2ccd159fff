//! API keys and the audit log. An audit entry is appended by the
//! transaction of the change it records ([`append`]); the database refuses
//! to change or remove one (a trigger in the migration).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use const_format::concatcp;
use uuid::Uuid;

use super::SqlStore;
use super::tables::push_cursor;
use super::{Conn, Db, LOCK};
use crate::access::keys::{scopes_of, scopes_text};
use crate::access::{Actor, ApiKey, AuditAction, AuditEntry};
use crate::store::{Audit, AuditFilter, Cursor, Keys, Page, StoreError, from_ms, to_ms};

const KEY_COLUMNS: &str = "id, project, name, prefix, key_hash, scopes, created_at, created_by, \
                           last_used_at, expires_at, revoked_at";
const KEYS_OF_PROJECT: &str = concatcp!(
    "SELECT ",
    KEY_COLUMNS,
    " FROM api_keys WHERE project = $1 ORDER BY created_at DESC, id DESC"
);
const KEY_LOCKED: &str = concatcp!(
    "SELECT ",
    KEY_COLUMNS,
    " FROM api_keys WHERE project = $1 AND id = $2",
    LOCK
);
const KEY_BY_HASH: &str = concatcp!("SELECT ", KEY_COLUMNS, " FROM api_keys WHERE key_hash = $1");

type KeyRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn key_of(row: KeyRow) -> Result<ApiKey, StoreError> {
    let (
        id,
        project,
        name,
        prefix,
        key_hash,
        scopes,
        created_at,
        created_by,
        last_used,
        expires,
        revoked,
    ) = row;
    Ok(ApiKey {
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(format!("api key id: {e}")))?,
        project,
        name,
        prefix,
        scopes: scopes_of(&scopes),
        created_at: from_ms(created_at),
        created_by,
        last_used_at: last_used.map(from_ms),
        expires_at: expires.map(from_ms),
        revoked_at: revoked.map(from_ms),
        key_hash,
    })
}

/// Appends `entry` in the caller's transaction.
pub(super) async fn append(conn: &mut Conn, entry: &AuditEntry) -> Result<(), StoreError> {
    let json = |value: &Option<serde_json::Value>| value.as_ref().map(|v| v.to_string());
    sqlx::query(
        "INSERT INTO audit_log (id, project, at, actor, actor_kind, address, action, target, before, after) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(entry.id.to_string())
    .bind(&entry.project)
    .bind(to_ms(entry.at))
    .bind(&entry.actor.name)
    .bind(entry.actor.kind.as_str())
    .bind(&entry.actor.address)
    .bind(entry.action.as_str())
    .bind(&entry.target)
    .bind(json(&entry.before))
    .bind(json(&entry.after))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The audit entry for a change of `key` by `actor`.
fn key_entry(key: &ApiKey, actor: &Actor, action: AuditAction, at: DateTime<Utc>) -> AuditEntry {
    AuditEntry::new(
        Some(&key.project),
        actor,
        action,
        Some(key.id.to_string()),
        at,
    )
}

#[async_trait]
impl Keys for SqlStore {
    async fn create_key(&self, key: &ApiKey, actor: &Actor) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, project, name, prefix, key_hash, scopes, created_at, created_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(key.id.to_string())
        .bind(&key.project)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.key_hash)
        .bind(scopes_text(&key.scopes))
        .bind(to_ms(key.created_at))
        .bind(&key.created_by)
        .bind(key.expires_at.map(to_ms))
        .execute(&mut *tx)
        .await?;
        let after = serde_json::to_value(key).ok();
        append(
            &mut tx,
            &key_entry(key, actor, AuditAction::KeyCreated, key.created_at).changed(None, after),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_keys(&self, project: &str) -> Result<Vec<ApiKey>, StoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(KEYS_OF_PROJECT)
            .bind(project)
            .fetch_all(&self.reader)
            .await?;
        rows.into_iter().map(key_of).collect()
    }

    async fn revoke_key(
        &self,
        project: &str,
        id: Uuid,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<ApiKey, StoreError> {
        let mut tx = self.writer.begin().await?;
        let row: Option<KeyRow> = sqlx::query_as(KEY_LOCKED)
            .bind(project)
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let mut key = key_of(row.ok_or(StoreError::NotFound("API key"))?)?;
        if key.revoked_at.is_none() {
            let before = serde_json::to_value(&key).ok();
            key.revoked_at = Some(now);
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2")
                .bind(to_ms(now))
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            let after = serde_json::to_value(&key).ok();
            append(
                &mut tx,
                &key_entry(&key, actor, AuditAction::KeyRevoked, now).changed(before, after),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(key)
    }

    async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(KEY_BY_HASH)
            .bind(key_hash)
            .fetch_optional(&self.reader)
            .await?;
        row.map(key_of).transpose()
    }

    async fn key_used(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(to_ms(now))
            .bind(id.to_string())
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

type AuditRow = (
    String,
    Option<String>,
    i64,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn entry_of(row: AuditRow) -> Result<AuditEntry, StoreError> {
    let (id, project, at, actor, kind, address, action, target, before, after) = row;
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("audit {what}: {e}"));
    let json = |text: Option<String>| {
        text.map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| corrupt("state", &e))
    };
    Ok(AuditEntry {
        id: Uuid::parse_str(&id).map_err(|e| corrupt("id", &e))?,
        project,
        at: from_ms(at),
        actor: Actor {
            kind: kind.parse().map_err(|e| corrupt("actor kind", &e))?,
            name: actor,
            address,
        },
        action: action.parse().map_err(|e| corrupt("action", &e))?,
        target,
        before: json(before)?,
        after: json(after)?,
    })
}

#[async_trait]
impl Audit for SqlStore {
    async fn record(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        append(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_log(&self, filter: &AuditFilter) -> Result<Page<AuditEntry>, StoreError> {
        let mut query = sqlx::QueryBuilder::<Db>::new(
            "SELECT id, project, at, actor, actor_kind, address, action, target, before, after \
             FROM audit_log WHERE (project = ",
        );
        query.push_bind(filter.project.clone());
        if filter.sign_ins {
            query.push(" OR project IS NULL");
        }
        query.push(")");
        if let Some(action) = filter.action {
            query.push(" AND action = ").push_bind(action.as_str());
        }
        if let Some(actor) = &filter.actor {
            query.push(" AND actor = ").push_bind(actor.clone());
        }
        push_cursor(&mut query, "at", filter.cursor);
        query
            .push(" ORDER BY at DESC, id DESC LIMIT ")
            .push_bind(i64::from(filter.limit) + 1);
        let rows: Vec<AuditRow> = query.build_query_as().fetch_all(&self.reader).await?;
        let entries = rows
            .into_iter()
            .map(entry_of)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(entries, filter.limit, |e: &AuditEntry| {
            Cursor {
                at_ms: to_ms(e.at),
                id: e.id,
            }
        }))
    }
}
