//! What the watcher keeps: the tally of deliveries per project, outcome
//! and minute, and the project incidents it opens, keeps up to date and
//! resolves, each with its alerts in the same transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use const_format::concatcp;

use super::incidents::resolve;
use super::outbox::queue_deliveries;
use super::tables::insert;
use super::{Conn, LOCK, SqlStore};
use crate::incident::{Incident, NewIncident, ProjectCause};
use crate::store::records::{INCIDENT_COLUMNS, IncidentRow, convert, incident_row};
use crate::store::rows::{ROWS_PER_STATEMENT, Rows};
use crate::store::{StoreError, Watch, from_ms, to_ms};
use crate::watch::{Counted, TallyEntry};

/// The open project incident of one cause, locked to be written back.
const OPEN_OF_CAUSE: &str = concatcp!(
    "SELECT ",
    INCIDENT_COLUMNS,
    " FROM incidents WHERE scope = 'project' AND status <> 'resolved' AND project = $1 ",
    "AND workflow = $2 AND kind = $3 AND subject = $4 AND drill = $5",
    LOCK
);

async fn open_of_cause(
    conn: &mut Conn,
    cause: &ProjectCause,
) -> Result<Option<Incident>, StoreError> {
    let row: Option<IncidentRow> = sqlx::query_as(OPEN_OF_CAUSE)
        .bind(&cause.project)
        .bind(&cause.workflow)
        .bind(cause.kind.as_str())
        .bind(&cause.subject)
        .bind(cause.drill)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(Incident::try_from).transpose()
}

#[derive(sqlx::FromRow)]
struct TallyRow {
    project: String,
    outcome: String,
    minute: i64,
    count: i64,
    first_at: i64,
    last_at: i64,
}

#[async_trait]
impl Watch for SqlStore {
    async fn add_tallies(&self, entries: &[TallyEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        for chunk in entries.chunks(ROWS_PER_STATEMENT) {
            let rows = Rows::of(chunk, |row, e| {
                row.text("project", &e.project)
                    .text("outcome", e.outcome.as_str())
                    .int("minute", e.minute)
                    .int("count", i64::try_from(e.count).unwrap_or(i64::MAX))
                    .int("first_at", to_ms(e.first_at))
                    .int("last_at", to_ms(e.last_at));
            });
            let mut query = insert("ingest_tallies", rows);
            // Each replica adds its own counts; the buckets of one take
            // are distinct, so no statement meets a key twice.
            query.push(concatcp!(
                " ON CONFLICT (project, outcome, minute) DO UPDATE SET ",
                "count = ingest_tallies.count + excluded.count, ",
                "first_at = CASE WHEN excluded.first_at < ingest_tallies.first_at ",
                "THEN excluded.first_at ELSE ingest_tallies.first_at END, ",
                "last_at = CASE WHEN excluded.last_at > ingest_tallies.last_at ",
                "THEN excluded.last_at ELSE ingest_tallies.last_at END"
            ));
            query.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn tallies(
        &self,
        project: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<TallyEntry>, StoreError> {
        let rows: Vec<TallyRow> = sqlx::query_as(
            "SELECT project, outcome, minute, count, first_at, last_at FROM ingest_tallies \
             WHERE project = $1 AND minute >= $2 ORDER BY minute, outcome",
        )
        .bind(project)
        .bind(crate::watch::minute_of(since))
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(TallyEntry {
                    outcome: Counted::parse(&r.outcome).ok_or_else(|| {
                        StoreError::Corrupt(format!("tally outcome `{}`", r.outcome))
                    })?,
                    project: r.project,
                    minute: r.minute,
                    count: u64::try_from(r.count).unwrap_or_default(),
                    first_at: from_ms(r.first_at),
                    last_at: from_ms(r.last_at),
                })
            })
            .collect()
    }

    async fn keep_project_incident(
        &self,
        new: NewIncident,
        now: DateTime<Utc>,
    ) -> Result<Option<Incident>, StoreError> {
        let evidence = serde_json::to_string(&new.evidence)
            .map_err(|e| StoreError::Corrupt(format!("incident evidence: {e}")))?;
        let mut tx = self.writer.begin().await?;
        let mut query = insert(
            "incidents",
            Rows::of(std::slice::from_ref(&new), |row, new| {
                incident_row(row, new, evidence.clone())
            }),
        );
        // The partial unique index keeps one open per cause, whichever
        // replica gets there first.
        query.push(
            " ON CONFLICT (project, workflow, kind, subject, drill) \
             WHERE scope = 'project' AND status <> 'resolved' DO NOTHING RETURNING id",
        );
        let inserted: Option<String> = query.build_query_scalar().fetch_optional(&mut *tx).await?;
        let opened = if inserted.is_some() {
            let incident = Incident::from_new(new);
            queue_deliveries(
                &mut tx,
                &self.outbox.opened(std::slice::from_ref(&incident)),
                now,
            )
            .await?;
            Some(incident)
        } else {
            // Open already: its figures move on with the condition.
            sqlx::query(
                "UPDATE incidents SET title = $6, evidence = $7 WHERE scope = 'project' \
                 AND status <> 'resolved' AND project = $1 AND workflow = $2 AND kind = $3 \
                 AND subject = $4 AND drill = $5",
            )
            .bind(&new.project)
            .bind(&new.workflow)
            .bind(new.kind.as_str())
            .bind(&new.subject)
            .bind(new.drill)
            .bind(&new.title)
            .bind(&evidence)
            .execute(&mut *tx)
            .await?;
            None
        };
        tx.commit().await?;
        Ok(opened)
    }

    async fn clear_project_incident(
        &self,
        cause: &ProjectCause,
        resolution: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Incident>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let Some(mut incident) = open_of_cause(&mut tx, cause).await? else {
            return Ok(None);
        };
        resolve(
            &mut tx,
            &self.outbox,
            &mut incident,
            resolution.to_owned(),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(incident))
    }

    async fn open_project_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        let rows: Vec<IncidentRow> = sqlx::query_as(concatcp!(
            "SELECT ",
            INCIDENT_COLUMNS,
            " FROM incidents WHERE scope = 'project' AND status <> 'resolved' ",
            "ORDER BY opened_at, id"
        ))
        .fetch_all(&self.reader)
        .await?;
        convert(rows)
    }
}
