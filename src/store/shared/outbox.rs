//! The alert outbox: deliveries queued in the transaction that opens or
//! resolves their incidents, joined into a waiting grouped alert when their
//! cause has one, claimed by the alert sender with a lease, and recorded
//! attempt by attempt; and the reminders of incidents left open.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use const_format::concatcp;

use super::claim::Queue;
use super::tables::{insert, lock_keys};
use super::{Conn, LOCK, SKIP_LOCKED, SqlStore};
use crate::alert::{
    AlertEvent, Delivery, DeliveryJob, DeliveryOutcome, DeliveryStatus, GROUP_SETTLE, NewDelivery,
};
use crate::incident::Incident;
use crate::store::records::{
    DELIVERY_COLUMNS, DeliveryAttemptRow, DeliveryRow, INCIDENT_COLUMNS, IncidentRow, convert,
};
use crate::store::rows::{ROWS_PER_STATEMENT, Rows};
use crate::store::{AlertQueue, StoreError, to_ms};

/// The cause whose waiting grouped alert `delivery` would join: new
/// incidents and reminders join, a resolution is its own message.
fn joins_a_group(delivery: &NewDelivery) -> Option<&str> {
    match delivery.event {
        AlertEvent::Opened | AlertEvent::Reminder => delivery.cause.as_deref(),
        _ => None,
    }
}

/// Writes deliveries to the outbox, and notes when their incidents
/// were last alerted about (for reminders).
pub(super) async fn queue_deliveries(
    conn: &mut Conn,
    deliveries: &[NewDelivery],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    // Two transactions that alert about one cause at once (two
    // batches of a sweep, two replicas' sweeps) would each find no
    // grouped alert waiting and each make one. With the cause
    // locked, the second waits for the first to commit, then joins
    // its alert.
    let groups = deliveries
        .iter()
        .filter_map(|d| {
            let cause = joins_a_group(d)?;
            Some(format!(
                "alert/{}/{}/{}/{cause}",
                d.project,
                d.channel,
                d.event.as_str()
            ))
        })
        .collect();
    lock_keys(conn, groups).await?;
    for delivery in deliveries {
        // An incident whose cause already has a grouped alert
        // waiting (not tried, not claimed) joins it. Locked, so that
        // no sender claims it between this read and the insert.
        let waiting: Option<String> = match joins_a_group(delivery) {
            Some(cause) => {
                sqlx::query_scalar(concatcp!(
                    "SELECT id FROM alert_deliveries WHERE project = $1 AND channel = $2 AND event = $3 ",
                    "AND cause = $4 AND status = 'pending' AND grouped AND attempts = 0 ",
                    "AND lease_token IS NULL ORDER BY created_at LIMIT 1",
                    LOCK
                ))
                .bind(&delivery.project)
                .bind(&delivery.channel)
                .bind(delivery.event.as_str())
                .bind(cause)
                .fetch_optional(&mut *conn)
                .await?
            }
            _ => None,
        };
        let (delivery_id, first_position) = match waiting {
            Some(id) => {
                let next: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(MAX(position) + 1, 0) FROM alert_delivery_incidents WHERE delivery_id = $1",
                )
                .bind(&id)
                .fetch_one(&mut *conn)
                .await?;
                (id, next)
            }
            None => {
                let settle = if delivery.grouped {
                    GROUP_SETTLE.as_millis() as i64
                } else {
                    0
                };
                sqlx::query(
                    "INSERT INTO alert_deliveries (id, project, channel, event, status, attempts, created_at, \
                     next_attempt_at, cause, grouped) VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6, $7, $8)",
                )
                .bind(delivery.id.to_string())
                .bind(&delivery.project)
                .bind(&delivery.channel)
                .bind(delivery.event.as_str())
                .bind(to_ms(now))
                .bind(to_ms(now) + settle)
                .bind(&delivery.cause)
                .bind(delivery.grouped)
                .execute(&mut *conn)
                .await?;
                (delivery.id.to_string(), 0)
            }
        };
        // Many rows per statement: a grouped alert about 500
        // incidents is one statement, not 500, while the sweep holds
        // the writer.
        let ids: Vec<(usize, &uuid::Uuid)> = delivery.incident_ids.iter().enumerate().collect();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let rows = Rows::of(chunk, |row, (position, incident_id)| {
                row.text("delivery_id", delivery_id.as_str())
                    .text("incident_id", incident_id.to_string())
                    .int("position", first_position + *position as i64);
            });
            insert("alert_delivery_incidents", rows)
                .build()
                .execute(&mut *conn)
                .await?;
        }
        sqlx::query(
            "UPDATE incidents SET last_alerted_at = $2 WHERE id IN \
             (SELECT incident_id FROM alert_delivery_incidents WHERE delivery_id = $1)",
        )
        .bind(&delivery_id)
        .bind(to_ms(now))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A delivery's attempts, oldest first.
async fn attempts_of_delivery(conn: &mut Conn, delivery: &mut Delivery) -> Result<(), StoreError> {
    let rows: Vec<DeliveryAttemptRow> = sqlx::query_as(
        "SELECT at, duration_ms, status_code, error FROM alert_attempts WHERE delivery_id = $1 ORDER BY seq",
    )
    .bind(delivery.id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    delivery.attempts = convert(rows)?;
    Ok(())
}

/// The deliveries about an incident, with their attempts.
pub(super) async fn deliveries_of_incident(
    conn: &mut Conn,
    incident_id: uuid::Uuid,
) -> Result<Vec<Delivery>, StoreError> {
    let rows: Vec<DeliveryRow> = sqlx::query_as(concatcp!(
        "SELECT ",
        DELIVERY_COLUMNS,
        " FROM alert_deliveries JOIN alert_delivery_incidents AS mine ",
        "ON mine.delivery_id = alert_deliveries.id WHERE mine.incident_id = $1 ",
        "ORDER BY alert_deliveries.created_at, alert_deliveries.id"
    ))
    .bind(incident_id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let mut deliveries: Vec<Delivery> = convert(rows)?;
    for delivery in &mut deliveries {
        attempts_of_delivery(conn, delivery).await?;
    }
    Ok(deliveries)
}

#[async_trait]
impl AlertQueue for SqlStore {
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryJob>, StoreError> {
        let lease = self.lease(Queue::Deliveries, now, limit).await?;
        if lease.claimed == 0 {
            return Ok(Vec::new());
        }
        let token = lease.token;
        let mut conn = self.writer.acquire().await?;
        let rows: Vec<DeliveryRow> = sqlx::query_as(concatcp!(
            "SELECT ",
            DELIVERY_COLUMNS,
            " FROM alert_deliveries WHERE lease_token = $1 ORDER BY created_at, id"
        ))
        .bind(&token)
        .fetch_all(&mut *conn)
        .await?;
        let mut jobs = Vec::new();
        for mut delivery in convert::<_, Delivery>(rows)? {
            // "Resolved" never overtakes the "opened" it follows: while
            // an earlier alert about its incident on this channel is
            // still pending (retrying), it waits until after that one.
            if delivery.event == AlertEvent::Resolved {
                let earlier: Option<i64> = sqlx::query_scalar(
                    "SELECT MAX(d.next_attempt_at) FROM alert_deliveries d \
                     JOIN alert_delivery_incidents l ON l.delivery_id = d.id \
                     WHERE l.incident_id IN (SELECT incident_id FROM alert_delivery_incidents WHERE delivery_id = $1) \
                     AND d.channel = $2 AND d.status = 'pending' AND d.event <> 'resolved'",
                )
                .bind(delivery.id.to_string())
                .bind(&delivery.channel)
                .fetch_one(&mut *conn)
                .await?;
                if let Some(after) = earlier {
                    sqlx::query(
                        "UPDATE alert_deliveries SET next_attempt_at = $2, lease_token = NULL, \
                         lease_expires_at = NULL WHERE id = $1 AND lease_token = $3",
                    )
                    .bind(delivery.id.to_string())
                    .bind(after.max(to_ms(now)) + 1)
                    .bind(&token)
                    .execute(&mut *conn)
                    .await?;
                    continue;
                }
            }
            attempts_of_delivery(&mut conn, &mut delivery).await?;
            let incidents: Vec<IncidentRow> = sqlx::query_as(concatcp!(
                "SELECT ",
                INCIDENT_COLUMNS,
                " FROM incidents JOIN alert_delivery_incidents AS l ON l.incident_id = incidents.id ",
                "WHERE l.delivery_id = $1 ORDER BY l.position"
            ))
            .bind(delivery.id.to_string())
            .fetch_all(&mut *conn)
            .await?;
            jobs.push(DeliveryJob {
                delivery,
                incidents: convert(incidents)?,
                lease_token: token.clone(),
            });
        }
        Ok(jobs)
    }

    async fn finish_delivery(
        &self,
        job: &DeliveryJob,
        outcome: DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let id = job.delivery.id.to_string();
        // Locked until commit: a replica that took an expired lease
        // over records instead, never both.
        let still_ours: Option<i64> = sqlx::query_scalar(concatcp!(
            "SELECT attempts FROM alert_deliveries WHERE id = $1 AND lease_token = $2",
            LOCK
        ))
        .bind(&id)
        .bind(&job.lease_token)
        .fetch_optional(&mut *tx)
        .await?;
        if still_ours.is_none() {
            tracing::warn!(delivery_id = %id, "an alert delivery finished after its lease passed on; not recorded");
            return Ok(false);
        }
        let (attempt, status, next, error) = match outcome {
            DeliveryOutcome::Sent(attempt) => (Some(attempt), DeliveryStatus::Sent, None, None),
            DeliveryOutcome::Failed { attempt, retry_at } => {
                let error = attempt.error.clone();
                match retry_at {
                    Some(at) => (Some(attempt), DeliveryStatus::Pending, Some(at), error),
                    None => (Some(attempt), DeliveryStatus::Dead, None, error),
                }
            }
            DeliveryOutcome::Skipped(reason) => (None, DeliveryStatus::Skipped, None, Some(reason)),
        };
        if let Some(attempt) = &attempt {
            sqlx::query(
                "INSERT INTO alert_attempts (delivery_id, at, duration_ms, status_code, error) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&id)
            .bind(to_ms(attempt.at))
            .bind(attempt.duration_ms)
            .bind(attempt.status_code.map(i64::from))
            .bind(&attempt.error)
            .execute(&mut *tx)
            .await?;
        }
        let settled = (status != DeliveryStatus::Pending).then(|| to_ms(now));
        sqlx::query(
            "UPDATE alert_deliveries SET status = $2, attempts = attempts + $3, next_attempt_at = $4, \
             settled_at = $5, last_error = $6, lease_token = NULL, lease_expires_at = NULL WHERE id = $1",
        )
        .bind(&id)
        .bind(status.as_str())
        .bind(i64::from(attempt.is_some()))
        .bind(next.map(to_ms))
        .bind(settled)
        .bind(error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn queue_reminders(
        &self,
        now: DateTime<Utc>,
        interval: Duration,
    ) -> Result<usize, StoreError> {
        let before = to_ms(now) - interval.as_millis() as i64;
        let mut tx = self.writer.begin().await?;
        // Through `incidents_to_remind` (open incidents only). An
        // incident with an alert still pending is not reminded of:
        // a receiver that is down gets one message when it is back,
        // not one per interval. Rows another replica is reminding of
        // right now are skipped; the update below makes the rest
        // wait a full interval again.
        let rows: Vec<IncidentRow> = sqlx::query_as(concatcp!(
            "SELECT ",
            INCIDENT_COLUMNS,
            " FROM incidents WHERE status = 'open' AND last_alerted_at <= $1 ",
            "AND NOT EXISTS (SELECT 1 FROM alert_delivery_incidents l ",
            "JOIN alert_deliveries d ON d.id = l.delivery_id ",
            "WHERE l.incident_id = incidents.id AND d.status = 'pending') ",
            "ORDER BY last_alerted_at LIMIT 1000",
            SKIP_LOCKED
        ))
        .bind(before)
        .fetch_all(&mut *tx)
        .await?;
        let incidents: Vec<Incident> = convert(rows)?;
        // Grouped as they opened: one message for a cause, not one
        // per customer.
        queue_deliveries(&mut tx, &self.outbox.reminders(&incidents), now).await?;
        for incident in &incidents {
            sqlx::query("UPDATE incidents SET last_alerted_at = $2 WHERE id = $1")
                .bind(incident.id.to_string())
                .bind(to_ms(now))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(incidents.len())
    }
}
