//! Incidents: read, listed, acknowledged and resolved.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use const_format::concatcp;
use uuid::Uuid;

use super::outbox::{deliveries_of_incident, queue_deliveries};
use super::tables::push_cursor;
use super::{Conn, Db, LOCK, SqlStore};
use crate::access::{Actor, AuditAction, AuditEntry};
use crate::alert::Outbox;
use crate::incident::{Incident, IncidentStatus};
use crate::store::records::{INCIDENT_COLUMNS, IncidentRow, convert};
use crate::store::{Cursor, IncidentDetail, IncidentFilter, Incidents, Page, StoreError, to_ms};

const BY_ID: &str = concatcp!(
    "SELECT ",
    INCIDENT_COLUMNS,
    " FROM incidents WHERE project = $1 AND id = $2"
);
const BY_ID_LOCKED: &str = concatcp!(BY_ID, LOCK);

/// Reads one incident of `project`; `locked` when the transaction will
/// write it back.
async fn fetch(
    conn: &mut Conn,
    project: &str,
    id: Uuid,
    locked: bool,
) -> Result<Incident, StoreError> {
    let row: Option<IncidentRow> = sqlx::query_as(if locked { BY_ID_LOCKED } else { BY_ID })
        .bind(project)
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    row.ok_or(StoreError::NotFound("incident"))?.try_into()
}

/// Writes back what the incident's workflow changes.
async fn save(conn: &mut Conn, incident: &Incident) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE incidents SET status = $2, acknowledged_at = $3, resolved_at = $4, \
         resolution = $5 WHERE id = $1",
    )
    .bind(incident.id.to_string())
    .bind(incident.status.as_str())
    .bind(incident.acknowledged_at.map(to_ms))
    .bind(incident.resolved_at.map(to_ms))
    .bind(&incident.resolution)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Resolves `incident` in this transaction and queues the alerts that say
/// so; writes nothing when it was resolved already.
pub(super) async fn resolve(
    conn: &mut Conn,
    outbox: &Outbox,
    incident: &mut Incident,
    resolution: String,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if incident.resolve(now, resolution) {
        save(conn, incident).await?;
        queue_deliveries(conn, &outbox.resolved(incident), now).await?;
    }
    Ok(())
}

#[async_trait]
impl Incidents for SqlStore {
    async fn list_incidents(
        &self,
        project: &str,
        filter: &IncidentFilter,
    ) -> Result<Page<Incident>, StoreError> {
        let mut query = sqlx::QueryBuilder::<Db>::new(concatcp!(
            "SELECT ",
            INCIDENT_COLUMNS,
            " FROM incidents WHERE project = "
        ));
        query.push_bind(project.to_owned());
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(scope) = filter.scope {
            query.push(" AND scope = ").push_bind(scope.as_str());
        }
        query.push(" AND drill = ").push_bind(filter.drill);
        push_cursor(&mut query, "opened_at", filter.cursor);
        query
            .push(" ORDER BY opened_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(filter.limit) + 1);
        let rows: Vec<IncidentRow> = query.build_query_as().fetch_all(&self.reader).await?;
        Ok(Page::from_rows(
            convert(rows)?,
            filter.limit,
            |i: &Incident| Cursor {
                at_ms: to_ms(i.opened_at),
                id: i.id,
            },
        ))
    }

    async fn incident(&self, project: &str, id: Uuid) -> Result<IncidentDetail, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let incident = fetch(&mut conn, project, id, false).await?;
        let deliveries = deliveries_of_incident(&mut conn, incident.id).await?;
        Ok(IncidentDetail {
            incident,
            deliveries,
        })
    }

    async fn acknowledge_incident(
        &self,
        project: &str,
        id: Uuid,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Incident, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut incident = fetch(&mut tx, project, id, true).await?;
        let before = status_of(&incident);
        if incident.acknowledge(now)? {
            save(&mut tx, &incident).await?;
            let entry = AuditEntry::new(
                Some(project),
                actor,
                AuditAction::IncidentAcknowledged,
                Some(id.to_string()),
                now,
            )
            .changed(Some(before), Some(status_of(&incident)));
            super::access::append(&mut tx, &entry).await?;
        }
        tx.commit().await?;
        Ok(incident)
    }

    async fn resolve_incident(
        &self,
        project: &str,
        id: Uuid,
        resolution: String,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Incident, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut incident = fetch(&mut tx, project, id, true).await?;
        let before = status_of(&incident);
        let was_resolved = incident.status == IncidentStatus::Resolved;
        resolve(&mut tx, &self.outbox, &mut incident, resolution, now).await?;
        if !was_resolved && incident.status == IncidentStatus::Resolved {
            let entry = AuditEntry::new(
                Some(project),
                actor,
                AuditAction::IncidentResolved,
                Some(id.to_string()),
                now,
            )
            .changed(Some(before), Some(status_of(&incident)));
            super::access::append(&mut tx, &entry).await?;
        }
        tx.commit().await?;
        Ok(incident)
    }
}

/// What an audit entry records of an incident's state.
fn status_of(incident: &Incident) -> serde_json::Value {
    serde_json::json!({
        "status": incident.status,
        "resolution": incident.resolution,
    })
}
