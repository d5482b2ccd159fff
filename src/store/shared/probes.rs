//! The prober's queue (`probe_queue`): claimed with a lease, and settled by
//! recording the attempt on its run and scheduling the next.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use const_format::concatcp;

use super::claim::Queue;
use super::report::save_report;
use super::tables::{append_timeline, fetch_run, record_probe_attempt, write_run};
use super::{LOCK, SqlStore};
use crate::probe::{ProbeJob, ProbeSchedule};
use crate::run::{Observation, ProbeAttempt, Source};
use crate::store::records::{ProbeJobRow, RUN_COLUMNS};
use crate::store::{ProbeQueue, RunRef, StoreError, to_ms};

#[async_trait]
impl ProbeQueue for SqlStore {
    async fn claim_probes(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ProbeJob>, StoreError> {
        let lease = self.lease(Queue::Probes, now, limit).await?;
        if lease.claimed == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<ProbeJobRow> = sqlx::query_as(concatcp!(
            "SELECT ",
            RUN_COLUMNS,
            ", attempts FROM runs JOIN probe_queue ON probe_queue.run_id = runs.id ",
            "WHERE probe_queue.lease_token = $1"
        ))
        .bind(&lease.token)
        .fetch_all(&self.writer)
        .await?;
        rows.into_iter()
            .map(|row| row.into_job(&lease.token, lease.expires_at))
            .collect()
    }

    async fn finish_probe(
        &self,
        job: &ProbeJob,
        attempt: Option<(ProbeAttempt, ProbeSchedule)>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let key = RunRef::Id(job.run.id);
        let mut run = fetch_run(&mut tx, &job.run.project, &key, true)
            .await?
            .ok_or(StoreError::NotFound("run"))?;
        // If our lease expired and the run was claimed again, the work is
        // theirs and this attempt is not recorded twice. The queue row stays
        // locked until commit, so no claim can take it between this check
        // and the update below.
        let still_ours: Option<i64> = sqlx::query_scalar(concatcp!(
            "SELECT attempts FROM probe_queue WHERE run_id = $1 AND lease_token = $2",
            LOCK
        ))
        .bind(run.id.to_string())
        .bind(&job.lease_token)
        .fetch_optional(&mut *tx)
        .await?;
        if still_ours.is_none() {
            tracing::warn!(run_id = %run.id, "a probe finished after its lease passed to another replica; dropped");
            return Ok(false);
        }
        let mut next_due = None;
        let mut seen = Vec::new();
        if let Some((mut attempt, schedule)) = attempt {
            attempt.matched = run.probe_matches(&attempt);
            record_probe_attempt(&mut tx, run.id, &attempt).await?;
            let matched = match run.observe(&attempt, now) {
                Observation::Asserted(outcome) => {
                    save_report(
                        &mut tx,
                        &self.outbox,
                        &run,
                        &outcome,
                        Source::Probe,
                        now,
                        &mut seen,
                    )
                    .await?;
                    true
                }
                Observation::Noted(entry) => {
                    write_run(&mut tx, &run, false).await?;
                    if let Some(entry) = entry {
                        append_timeline(&mut tx, &run, &[entry], &mut seen).await?;
                    }
                    false
                }
            };
            next_due = schedule.next_due(&run, job.attempts + 1, matched, now);
        }
        // Only the holder of the lease moves the queue row.
        let moved = match next_due {
            Some(due) => {
                sqlx::query(
                    "UPDATE probe_queue SET due_at = $2, attempts = attempts + 1, \
                     lease_token = NULL, lease_expires_at = NULL \
                     WHERE run_id = $1 AND lease_token = $3",
                )
                .bind(run.id.to_string())
                .bind(to_ms(due))
                .bind(&job.lease_token)
                .execute(&mut *tx)
                .await?
            }
            None => {
                sqlx::query("DELETE FROM probe_queue WHERE run_id = $1 AND lease_token = $2")
                    .bind(run.id.to_string())
                    .bind(&job.lease_token)
                    .execute(&mut *tx)
                    .await?
            }
        };
        if moved.rows_affected() == 0 {
            // Cannot happen while the row is locked; if it does, recording
            // nothing is the safe side.
            tracing::warn!(run_id = %run.id, "a probe's queue row changed hands; dropped");
            return Ok(false);
        }
        tx.commit().await?;
        self.metrics.record(&seen);
        Ok(true)
    }

    async fn release_probe(&self, job: &ProbeJob) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE probe_queue SET lease_token = NULL, lease_expires_at = NULL \
             WHERE run_id = $1 AND lease_token = $2",
        )
        .bind(job.run.id.to_string())
        .bind(&job.lease_token)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}
