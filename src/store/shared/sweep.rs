//! The sweep: overdue runs, claimed by locking them in the transaction that
//! fails them and opens their incidents, with the incidents' alerts queued
//! in the same transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use const_format::concatcp;

use super::outbox::queue_deliveries;
use super::tables::{append_timelines, enqueue_probes, insert, write_runs};
use super::{Conn, SKIP_LOCKED, SqlStore};
use crate::incident::{Incident, NewIncident};
use crate::run::{ProbeAttempt, Run};
use crate::store::records::{
    LastProbeRow, PROBE_COLUMNS, RUN_COLUMNS, RunRow, convert, incident_row,
};
use crate::store::rows::{ROWS_PER_STATEMENT, Rows};
use crate::store::{StoreError, Sweep, Swept, to_ms};

/// The sweeper's claim: up to `$2` overdue runs (`deadline_at <= $1`),
/// oldest first, read in the transaction that settles them, through the
/// `runs_by_deadline` index, so its cost follows the overdue runs, not all
/// runs. Replicas sweeping at once skip each other's runs.
pub(crate) const CLAIM_OVERDUE: &str = concatcp!(
    "SELECT ",
    RUN_COLUMNS,
    " FROM runs WHERE deadline_at <= $1 ORDER BY deadline_at LIMIT $2",
    SKIP_LOCKED
);

#[async_trait]
impl Sweep for SqlStore {
    async fn sweep(&self, now: DateTime<Utc>, limit: u32) -> Result<Swept, StoreError> {
        let mut tx = self.writer.begin().await?;
        let rows: Vec<RunRow> = sqlx::query_as(CLAIM_OVERDUE)
            .bind(to_ms(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let mut swept = Swept {
            runs_claimed: rows.len(),
            ..Swept::default()
        };
        if rows.is_empty() {
            return Ok(swept);
        }
        let mut seen = Vec::new();
        let runs: Vec<Run> = convert(rows)?;
        let last_probes = last_probes(&mut tx, &runs).await?;
        let (mut failed, mut read, mut entries, mut incidents) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for mut run in runs {
            let before = run.clone();
            if let Some((missed, entry)) = run.expire(now) {
                incidents.push(NewIncident::for_missed(
                    &run,
                    &missed,
                    last_probes.get(&run.id),
                    now,
                ));
                failed.push(run);
                read.push(before);
                entries.push(entry);
            }
        }
        // Each table in one statement for the whole batch, so that a
        // sweep's time does not follow its size.
        swept.runs_failed = failed.len();
        write_runs(&mut tx, &failed.iter().collect::<Vec<_>>(), Some(&read)).await?;
        let entries: Vec<_> = failed.iter().zip(&entries).collect();
        append_timelines(&mut tx, &entries, &mut seen).await?;
        // Keep probing a failed run, so that its incident resolves itself
        // once the app grants the access.
        let probed: Vec<&Run> = failed.iter().filter(|r| r.probe_start.is_some()).collect();
        enqueue_probes(&mut tx, &probed, now).await?;
        let inserted = insert_incidents(&mut tx, &incidents).await?;
        swept.incidents = incidents
            .into_iter()
            .filter(|i| inserted.contains(&i.id.to_string()))
            .map(Incident::from_new)
            .collect();
        // The outbox: the alerts go in with the incidents, or not at all.
        queue_deliveries(&mut tx, &self.outbox.opened(&swept.incidents), now).await?;
        tx.commit().await?;
        self.metrics.record(&seen);
        Ok(swept)
    }

    fn writers(&self) -> usize {
        self.writers
    }
}

/// The latest probe attempt of each of `runs` that has one, in one
/// statement per chunk: the sweeper needs it for every run it fails.
async fn last_probes(
    conn: &mut Conn,
    runs: &[Run],
) -> Result<std::collections::HashMap<uuid::Uuid, ProbeAttempt>, StoreError> {
    let mut last = std::collections::HashMap::new();
    for chunk in runs.chunks(ROWS_PER_STATEMENT) {
        let mut query = sqlx::QueryBuilder::new(concatcp!(
            "SELECT run_id, ",
            PROBE_COLUMNS,
            " FROM probe_attempts p WHERE p.seq = ",
            "(SELECT MAX(seq) FROM probe_attempts WHERE run_id = p.run_id) AND p.run_id IN ("
        ));
        let mut ids = query.separated(", ");
        for run in chunk {
            ids.push_bind(run.id.to_string());
        }
        query.push(")");
        let rows: Vec<LastProbeRow> = query.build_query_as().fetch_all(&mut *conn).await?;
        for row in rows {
            let (run_id, probe) = row.into_parts()?;
            last.insert(run_id, probe);
        }
    }
    Ok(last)
}

/// Inserts each incident unless its run already has one of its kind;
/// returns the ids of those inserted.
async fn insert_incidents(
    conn: &mut Conn,
    new: &[NewIncident],
) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut inserted = std::collections::HashSet::new();
    for chunk in new.chunks(ROWS_PER_STATEMENT) {
        let evidence = chunk
            .iter()
            .map(|new| serde_json::to_string(&new.evidence))
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| StoreError::Corrupt(format!("incident evidence: {e}")))?;
        let rows = Rows::of(chunk.iter().zip(evidence), |row, (new, evidence)| {
            incident_row(row, new, evidence)
        });
        let mut query = insert("incidents", rows);
        query.push(" ON CONFLICT (run_id, kind) DO NOTHING RETURNING id");
        let ids: Vec<String> = query.build_query_scalar().fetch_all(&mut *conn).await?;
        inserted.extend(ids);
    }
    Ok(inserted)
}
