//! The SDK's calls: open a run, report a stage, read and list runs (the
//! rows themselves are read and written in `tables`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use const_format::concatcp;

use super::report::save_report;
use super::tables::{fetch_run, incidents_of_run, probes_of_run, push_cursor};
use super::{Db, SqlStore, ordering};
use crate::run::{Run, RunSpec, Source, Stage, StageReport};
use crate::store::records::{RUN_COLUMNS, RunRow, TimelineRow, convert};
use crate::store::{
    Cursor, PROBES_SHOWN, Page, RunDetail, RunFilter, RunRef, Runs, StoreError, retry_deadlocked,
    to_ms,
};

#[async_trait]
impl Runs for SqlStore {
    async fn open_run(&self, spec: RunSpec, now: DateTime<Utc>) -> Result<(Run, bool), StoreError> {
        // Its merge locks the run, then the subject; a Stripe batch locks
        // subjects, then their runs: PostgreSQL may pick this one as a
        // deadlock's victim, and the second try goes through.
        let (opened, seen) = retry_deadlocked(|| async {
            let mut tx = self.writer.begin().await?;
            let mut seen = Vec::new();
            let opened = ordering::open_or_merge(&mut tx, spec.clone(), now, &mut seen).await?;
            tx.commit().await?;
            Ok((opened, seen))
        })
        .await?;
        self.metrics.record(&seen);
        Ok(opened)
    }

    async fn report_stage(
        &self,
        project: &str,
        run_ref: &RunRef,
        stage: Stage,
        report: StageReport,
        source: Source,
        now: DateTime<Utc>,
    ) -> Result<Run, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut run = fetch_run(&mut tx, project, run_ref, true)
            .await?
            .ok_or(StoreError::NotFound("run"))?;
        let outcome = run.report(stage, report, source, now)?;
        let mut seen = Vec::new();
        save_report(
            &mut tx,
            &self.outbox,
            &run,
            &outcome,
            source,
            now,
            &mut seen,
        )
        .await?;
        tx.commit().await?;
        self.metrics.record(&seen);
        Ok(run)
    }

    async fn run_detail(&self, project: &str, run_ref: &RunRef) -> Result<RunDetail, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let run = fetch_run(&mut conn, project, run_ref, false)
            .await?
            .ok_or(StoreError::NotFound("run"))?;
        let timeline: Vec<TimelineRow> = sqlx::query_as(
            "SELECT at, source, stage, outcome, evidence FROM run_timeline WHERE run_id = $1 \
             ORDER BY seq",
        )
        .bind(run.id.to_string())
        .fetch_all(&mut *conn)
        .await?;
        let incidents = incidents_of_run(&mut conn, run.id).await?;
        let probes = probes_of_run(&mut conn, run.id, PROBES_SHOWN).await?;
        let probe_count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM probe_attempts WHERE run_id = $1")
                .bind(run.id.to_string())
                .fetch_one(&mut *conn)
                .await?;
        Ok(RunDetail {
            run,
            timeline: convert(timeline)?,
            probes,
            probe_count,
            incidents,
        })
    }

    async fn list_runs(&self, project: &str, filter: &RunFilter) -> Result<Page<Run>, StoreError> {
        let mut query = sqlx::QueryBuilder::<Db>::new(concatcp!(
            "SELECT ",
            RUN_COLUMNS,
            " FROM runs WHERE project = "
        ));
        query.push_bind(project.to_owned());
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(stage) = filter.stage {
            query.push(" AND stage = ").push_bind(stage.as_str());
        }
        if let Some(customer) = &filter.customer_id {
            query
                .push(" AND customer_id = ")
                .push_bind(customer.clone());
        }
        // A prefix compared as text, character for character: no LIKE
        // wildcards to escape, and no collation's idea of order.
        if let Some(prefix) = &filter.customer_id_prefix {
            query
                .push(" AND substr(customer_id, 1, ")
                .push_bind(i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX))
                .push(") = ")
                .push_bind(prefix.clone());
        }
        query.push(if filter.drill {
            " AND drill_id IS NOT NULL"
        } else {
            " AND drill_id IS NULL"
        });
        push_cursor(&mut query, "opened_at", filter.cursor);
        query
            .push(" ORDER BY opened_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(filter.limit) + 1);
        let rows: Vec<RunRow> = query.build_query_as().fetch_all(&self.reader).await?;
        Ok(Page::from_rows(
            convert(rows)?,
            filter.limit,
            |run: &Run| Cursor {
                at_ms: to_ms(run.opened_at),
                id: run.id,
            },
        ))
    }
}
