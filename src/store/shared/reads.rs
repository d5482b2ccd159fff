//! Read models: readiness, the dashboard's summary strip and the metrics'
//! gauges, each counted through indexes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{MIGRATOR, SqlStore};
use crate::metrics::Standing;
use crate::store::records::uuid;
use crate::store::{Health, ReadModels, RunSummary, StoreError, to_ms};

#[async_trait]
impl Health for SqlStore {
    async fn ready(&self) -> Result<(), StoreError> {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.reader)
                .await?;
        if applied < MIGRATOR.iter().count() as i64 {
            return Err(StoreError::NotMigrated);
        }
        Ok(())
    }
}

#[async_trait]
impl ReadModels for SqlStore {
    async fn first_incidents(
        &self,
        project: &str,
        runs: &[uuid::Uuid],
    ) -> Result<std::collections::HashMap<uuid::Uuid, uuid::Uuid>, StoreError> {
        let mut first = std::collections::HashMap::new();
        // A page of runs at most: one indexed read each.
        for run in runs {
            let id: Option<String> = sqlx::query_scalar(
                "SELECT id FROM incidents WHERE project = $1 AND run_id = $2 ORDER BY opened_at, id LIMIT 1",
            )
            .bind(project)
            .bind(run.to_string())
            .fetch_optional(&self.reader)
            .await?;
            if let Some(id) = id {
                first.insert(*run, uuid(&id)?);
            }
        }
        Ok(first)
    }

    async fn run_summary(
        &self,
        project: &str,
        since: DateTime<Utc>,
    ) -> Result<RunSummary, StoreError> {
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, COUNT(*) FROM runs WHERE project = $1 AND opened_at >= $2 \
             AND drill_id IS NULL GROUP BY status",
        )
        .bind(project)
        .bind(to_ms(since))
        .fetch_all(&self.reader)
        .await?;
        let count = |status: &str| {
            counts
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n)
        };
        // The latest 10,000 are plenty for a median and a p95.
        let durations: Vec<i64> = sqlx::query_scalar(
            "SELECT closed_at - opened_at FROM runs WHERE project = $1 AND opened_at >= $2 \
             AND drill_id IS NULL AND status = 'succeeded' AND closed_at IS NOT NULL \
             ORDER BY opened_at DESC LIMIT 10000",
        )
        .bind(project)
        .bind(to_ms(since))
        .fetch_all(&self.reader)
        .await?;
        Ok(RunSummary {
            opened: counts.iter().map(|(_, n)| n).sum(),
            succeeded: count("succeeded"),
            failed: count("failed"),
            superseded: count("superseded"),
            open: count("open"),
            ..Default::default()
        }
        .with_latencies(durations))
    }

    async fn standing(&self, now: DateTime<Utc>) -> Result<Standing, StoreError> {
        let mut conn = self.reader.acquire().await?;
        // Through runs_by_deadline and the partial indexes of the
        // metrics migration: what is open, not what is stored.
        // An open run always waits for a deadline, and only open
        // runs have one: the partial deadline index holds them all.
        let open_runs: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT project, workflow, COUNT(*) FROM runs WHERE deadline_at IS NOT NULL AND drill_id IS NULL \
             GROUP BY project, workflow ORDER BY project, workflow",
        )
        .fetch_all(&mut *conn)
        .await?;
        let overdue: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT project, workflow, COUNT(*), MIN(deadline_at) FROM runs \
             WHERE deadline_at IS NOT NULL AND deadline_at <= $1 AND drill_id IS NULL \
             GROUP BY project, workflow ORDER BY project, workflow",
        )
        .bind(to_ms(now))
        .fetch_all(&mut *conn)
        .await?;
        let open_incidents: Vec<(String, i64)> = sqlx::query_as(
            "SELECT project, COUNT(*) FROM incidents WHERE status <> 'resolved' AND drill = FALSE \
             GROUP BY project ORDER BY project",
        )
        .fetch_all(&mut *conn)
        .await?;
        let dead_deliveries: Vec<(String, i64)> = sqlx::query_as(
            "SELECT d.project, COUNT(*) FROM alert_deliveries d WHERE d.status = 'dead' \
             AND NOT EXISTS (SELECT 1 FROM alert_delivery_incidents l JOIN incidents i ON i.id = l.incident_id \
             WHERE l.delivery_id = d.id AND i.drill) GROUP BY d.project ORDER BY d.project",
        )
        .fetch_all(&mut *conn)
        .await?;
        let project_incidents: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT project, kind, COUNT(*) FROM incidents WHERE scope = 'project' \
             AND status <> 'resolved' AND drill = FALSE GROUP BY project, kind ORDER BY project, kind",
        )
        .fetch_all(&mut *conn)
        .await?;
        // The watcher's history, not all of the tally.
        let last_accepted: Vec<(String, i64)> = sqlx::query_as(
            "SELECT project, MAX(last_at) FROM ingest_tallies WHERE outcome = 'accepted' \
             AND minute >= $1 GROUP BY project ORDER BY project",
        )
        .bind(crate::watch::minute_of(
            now - crate::watch::silence::HISTORY,
        ))
        .fetch_all(&mut *conn)
        .await?;
        let oldest = overdue.iter().filter_map(|(_, _, _, at)| *at).min();
        Ok(Standing {
            open_runs,
            overdue_runs: overdue.into_iter().map(|(p, w, n, _)| (p, w, n)).collect(),
            open_incidents,
            dead_deliveries,
            sweeper_lag_secs: oldest.map_or(0.0, |at| (to_ms(now) - at).max(0) as f64 / 1000.0),
            project_incidents,
            since_last_accepted: last_accepted
                .into_iter()
                .map(|(project, at)| (project, (to_ms(now) - at).max(0) as f64 / 1000.0))
                .collect(),
        })
    }
}
