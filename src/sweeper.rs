//! The sweeper: on its cron schedule, fails runs whose deadline has passed and
//! opens their incidents. It reads only overdue runs, through the deadline
//! index, so its cost follows the number of overdue runs, not of all runs.

use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::SweepConfig;
use crate::incident::Incident;
use crate::metrics::Metrics;
use crate::run::Realm;
use crate::store::{StoreError, Sweep};

pub struct Sweeper {
    store: Arc<dyn Sweep>,
    config: SweepConfig,
    metrics: Arc<Metrics>,
}

impl Sweeper {
    pub fn new(store: Arc<dyn Sweep>, config: SweepConfig, metrics: Arc<Metrics>) -> Sweeper {
        Sweeper {
            store,
            config,
            metrics,
        }
    }

    /// One sweep: batches until no overdue run is left, several at once on
    /// PostgreSQL, where a batch is one server process's work: two use two
    /// cores, their claims skipping each other's runs. Half as many as the
    /// ingest writers, so that a sweep during a burst leaves a quarter of
    /// the pool to the dashboard and the workers. SQLite's batches would
    /// queue for its one writer: one at a time.
    pub async fn sweep_once(&self) -> Result<Vec<Incident>, StoreError> {
        let lanes = (0..self.store.writers().div_ceil(2).max(1)).map(|_| self.sweep_lane());
        let mut opened = Vec::new();
        let mut failed = None;
        for lane in futures::future::join_all(lanes).await {
            match lane {
                Ok(incidents) => opened.extend(incidents),
                // The other lanes' batches committed, and were logged.
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        self.metrics.swept();
        Ok(opened)
    }

    /// Sweeps batch after batch until one comes back short.
    async fn sweep_lane(&self) -> Result<Vec<Incident>, StoreError> {
        let mut opened = Vec::new();
        loop {
            let now = crate::now();
            let swept = self.store.sweep(now, self.config.batch_size).await?;
            for incident in &swept.incidents {
                // A sweep opens runs' incidents only.
                let (event_id, customer_id) = incident
                    .evidence
                    .of_run()
                    .map(|e| {
                        (
                            e.event_id.as_str(),
                            e.customer_id.as_deref().unwrap_or_default(),
                        )
                    })
                    .unwrap_or_default();
                match incident.realm() {
                    Realm::Drill(_) => tracing::info!(
                        incident_id = %incident.id,
                        project = %incident.project,
                        event_id = %event_id,
                        "failure drill: {}", incident.title
                    ),
                    Realm::Customer => tracing::warn!(
                        incident_id = %incident.id,
                        run_id = ?incident.run_id,
                        project = %incident.project,
                        kind = %incident.kind,
                        event_id = %event_id,
                        customer_id = %customer_id,
                        "{}", incident.title
                    ),
                }
            }
            opened.extend(swept.incidents);
            // A short batch means nothing more is due (or the rest is in
            // another lane's batch). (`runs_claimed` is never above the
            // batch size; `== 0` guards a misconfiguration that would
            // otherwise spin.)
            if swept.runs_claimed == 0 || (swept.runs_claimed as u32) < self.config.batch_size {
                return Ok(opened);
            }
        }
    }

    /// Sweeps on schedule until `shutdown` fires. A failed sweep is logged
    /// and retried at the next tick: the work stays in the database.
    pub async fn run(self, shutdown: CancellationToken) {
        let Some(schedule) = self.config.schedule.clone() else {
            tracing::info!("the sweeper is off on this replica (ASSAY_SWEEP_SCHEDULE=off)");
            return;
        };
        loop {
            // From now, not from the last tick: a slow sweep skips the ticks
            // it overran instead of running them back to back.
            let Some(next) = schedule.after(&Utc::now()).next() else {
                tracing::warn!("the sweep schedule has no further times; the sweeper stops");
                return;
            };
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let span = tracing::info_span!("sweep");
            if let Err(e) = self.sweep_once().instrument(span).await {
                tracing::error!(error = %e, "sweep failed; retrying at the next tick");
            }
        }
    }
}
