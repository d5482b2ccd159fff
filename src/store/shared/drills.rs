//! Failure drills: stored once per schedule time, claimed step by step with
//! a lease, and what a drill does to its run.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use const_format::concatcp;
use uuid::Uuid;

use super::claim::Queue;
use super::tables::{append_timeline, fetch_run, push_cursor, record_probe_attempt, write_run};
use super::{Db, SqlStore};
use crate::access::{Actor, AuditAction, AuditEntry};
use crate::alert::DeliveryStatus;
use crate::drill::Drill;
use crate::run::{ProbeAttempt, Run};
use crate::store::records::{DRILL_COLUMNS, DrillRow, convert};
use crate::store::{Cursor, DrillJob, Drills, Page, RunRef, StoreError, to_ms};

#[async_trait]
impl Drills for SqlStore {
    async fn create_drill(
        &self,
        drill: &Drill,
        only_if_idle: bool,
        actor: &Actor,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        if only_if_idle {
            let running: Option<String> = sqlx::query_scalar(
                "SELECT id FROM drills WHERE project = $1 AND workflow = $2 AND status = 'running' LIMIT 1",
            )
            .bind(&drill.project)
            .bind(&drill.workflow)
            .fetch_optional(&mut *tx)
            .await?;
            if running.is_some() {
                return Ok(false);
            }
        }
        let report = serde_json::to_string(&drill.report())
            .map_err(|e| StoreError::Corrupt(format!("drill report: {e}")))?;
        let done = sqlx::query(concatcp!(
            "INSERT INTO drills (",
            DRILL_COLUMNS,
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ",
            "ON CONFLICT (project, workflow, scheduled_for) DO NOTHING"
        ))
        .bind(drill.id.to_string())
        .bind(&drill.project)
        .bind(&drill.workflow)
        .bind(drill.trigger.as_str())
        .bind(drill.status.as_str())
        .bind(drill.step.as_str())
        .bind(&drill.event_id)
        .bind(drill.run_id.map(|id| id.to_string()))
        .bind(drill.incident_id.map(|id| id.to_string()))
        .bind(to_ms(drill.started_at))
        .bind(drill.finished_at.map(to_ms))
        .bind(drill.scheduled_for.map(to_ms))
        .bind(report)
        .bind(drill.next_step_at.map(to_ms))
        .execute(&mut *tx)
        .await?;
        let created = done.rows_affected() == 1;
        if created {
            let entry = AuditEntry::new(
                Some(&drill.project),
                actor,
                AuditAction::DrillStarted,
                Some(drill.id.to_string()),
                drill.started_at,
            )
            .changed(
                None,
                Some(serde_json::json!({
                    "workflow": drill.workflow,
                    "trigger": drill.trigger,
                })),
            );
            super::access::append(&mut tx, &entry).await?;
        }
        tx.commit().await?;
        Ok(created)
    }

    async fn claim_drills(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DrillJob>, StoreError> {
        let lease = self.lease(Queue::Drills, now, limit).await?;
        if lease.claimed == 0 {
            return Ok(Vec::new());
        }
        let (token, lease_expires_at) = (lease.token, lease.expires_at);
        let rows: Vec<DrillRow> = sqlx::query_as(concatcp!(
            "SELECT ",
            DRILL_COLUMNS,
            " FROM drills WHERE lease_token = $1 ORDER BY started_at, id"
        ))
        .bind(&token)
        .fetch_all(&self.writer)
        .await?;
        let mut jobs = Vec::new();
        for row in rows {
            let id = row.id().to_owned();
            match Drill::try_from(row) {
                Ok(drill) => jobs.push(DrillJob {
                    drill,
                    lease_token: token.clone(),
                    lease_expires_at,
                }),
                // One unreadable drill must not hold up the others
                // claimed with it, again at every claim: it ends.
                Err(e) => {
                    tracing::error!(drill_id = %id, error = %e, "an unreadable drill is marked failed");
                    sqlx::query(
                        "UPDATE drills SET status = 'failed', next_step_at = NULL, finished_at = $2, \
                         lease_token = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_token = $3",
                    )
                    .bind(&id)
                    .bind(to_ms(now))
                    .bind(&token)
                    .execute(&self.writer)
                    .await?;
                }
            }
        }
        Ok(jobs)
    }

    async fn save_drill(&self, job: &DrillJob) -> Result<bool, StoreError> {
        let drill = &job.drill;
        let report = serde_json::to_string(&drill.report())
            .map_err(|e| StoreError::Corrupt(format!("drill report: {e}")))?;
        // Only the lease's holder writes: a step taken over by
        // another replica is recorded once, by that replica.
        let done = sqlx::query(
            "UPDATE drills SET status = $2, step = $3, run_id = $4, incident_id = $5, finished_at = $6, \
             report = $7, next_step_at = $8, lease_token = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND lease_token = $9",
        )
        .bind(drill.id.to_string())
        .bind(drill.status.as_str())
        .bind(drill.step.as_str())
        .bind(drill.run_id.map(|id| id.to_string()))
        .bind(drill.incident_id.map(|id| id.to_string()))
        .bind(drill.finished_at.map(to_ms))
        .bind(report)
        .bind(drill.next_step_at.map(to_ms))
        .bind(&job.lease_token)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn drill(&self, project: &str, id: Uuid) -> Result<Drill, StoreError> {
        let row: Option<DrillRow> = sqlx::query_as(concatcp!(
            "SELECT ",
            DRILL_COLUMNS,
            " FROM drills WHERE project = $1 AND id = $2"
        ))
        .bind(project)
        .bind(id.to_string())
        .fetch_optional(&self.reader)
        .await?;
        row.ok_or(StoreError::NotFound("drill"))?.try_into()
    }

    async fn list_drills(
        &self,
        project: &str,
        limit: u32,
        cursor: Option<Cursor>,
    ) -> Result<Page<Drill>, StoreError> {
        let mut query = sqlx::QueryBuilder::<Db>::new(concatcp!(
            "SELECT ",
            DRILL_COLUMNS,
            " FROM drills WHERE project = "
        ));
        query.push_bind(project.to_owned());
        push_cursor(&mut query, "started_at", cursor);
        query
            .push(" ORDER BY started_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows: Vec<DrillRow> = query.build_query_as().fetch_all(&self.reader).await?;
        Ok(Page::from_rows(convert(rows)?, limit, |d: &Drill| Cursor {
            at_ms: to_ms(d.started_at),
            id: d.id,
        }))
    }

    async fn record_drill_probe(
        &self,
        project: &str,
        run_id: Uuid,
        attempt: ProbeAttempt,
        now: DateTime<Utc>,
    ) -> Result<Run, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut run = fetch_run(&mut tx, project, &RunRef::Id(run_id), true)
            .await?
            .ok_or(StoreError::NotFound("run"))?;
        // Whatever the app answers, a drill's probe is no match.
        let attempt = ProbeAttempt {
            matched: false,
            ..attempt
        };
        let entry = run.observe_for_drill(&attempt, now);
        record_probe_attempt(&mut tx, run.id, &attempt).await?;
        write_run(&mut tx, &run, false).await?;
        // A drill's run: nothing to count.
        append_timeline(&mut tx, &run, &[entry], &mut Vec::new()).await?;
        tx.commit().await?;
        Ok(run)
    }

    async fn end_drill_run(
        &self,
        project: &str,
        run_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Run, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut run = fetch_run(&mut tx, project, &RunRef::Id(run_id), true)
            .await?
            .ok_or(StoreError::NotFound("run"))?;
        if let Some(entry) = run.end_for_drill(now) {
            write_run(&mut tx, &run, false).await?;
            append_timeline(&mut tx, &run, &[entry], &mut Vec::new()).await?;
        }
        tx.commit().await?;
        Ok(run)
    }

    async fn skip_drill_alerts(
        &self,
        project: &str,
        run_id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let skipped = sqlx::query(
            "UPDATE alert_deliveries SET status = $3, next_attempt_at = NULL, settled_at = $4, \
             last_error = $5, lease_token = NULL, lease_expires_at = NULL \
             WHERE project = $1 AND status = $6 AND id IN (\
             SELECT l.delivery_id FROM alert_delivery_incidents AS l \
             JOIN incidents ON incidents.id = l.incident_id \
             JOIN runs ON runs.id = incidents.run_id \
             WHERE runs.id = $2 AND runs.drill_id IS NOT NULL)",
        )
        .bind(project)
        .bind(run_id.to_string())
        .bind(DeliveryStatus::Skipped.as_str())
        .bind(to_ms(now))
        .bind(reason)
        .bind(DeliveryStatus::Pending.as_str())
        .execute(&self.writer)
        .await?;
        Ok(skipped.rows_affected())
    }
}
