//! The prober: claims runs due for a probe with a lease (the store's claim
//! mechanism, so several replicas never probe one run at once), probes them
//! with bounded concurrency overall and per app host, paced per host, and
//! records every attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::ProbeJob;
use super::client::ProbeClient;
use crate::run::RunStatus;
use crate::store::ProbeQueue;
use crate::worker::Worker;

/// How many probes one replica runs at once, and how often it looks for due
/// ones.
#[derive(Debug, Clone, Copy)]
pub struct ProberSettings {
    pub concurrency: usize,
    pub poll_interval: Duration,
}

pub struct Prober {
    store: Arc<dyn ProbeQueue>,
    /// One client per probed project.
    clients: HashMap<String, Arc<ProbeClient>>,
    settings: ProberSettings,
    in_flight: Arc<Semaphore>,
    per_host: Mutex<HashMap<(String, String), Arc<Semaphore>>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Prober {
    pub fn new(
        store: Arc<dyn ProbeQueue>,
        clients: HashMap<String, Arc<ProbeClient>>,
        settings: ProberSettings,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Prober {
        Prober {
            store,
            clients,
            metrics,
            in_flight: Arc::new(Semaphore::new(settings.concurrency)),
            settings,
            per_host: Mutex::new(HashMap::new()),
        }
    }

    fn host_gate(&self, project: &str, host: &str, size: usize) -> Arc<Semaphore> {
        let mut gates = self.per_host.lock().unwrap_or_else(|e| e.into_inner());
        gates
            .entry((project.to_owned(), host.to_owned()))
            .or_insert_with(|| Arc::new(Semaphore::new(size)))
            .clone()
    }

    /// Claims what is due and can start now; returns how many were claimed.
    pub async fn tick(self: &Arc<Self>) -> usize {
        // Claim only what can start: a claimed probe that waits for a permit
        // holds its lease for nothing.
        let free = self.in_flight.available_permits();
        if free == 0 {
            return 0;
        }
        let jobs = match self.store.claim_probes(crate::now(), free as u32).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %e, "claiming probes failed; retrying");
                return 0;
            }
        };
        let claimed = jobs.len();
        for job in jobs {
            let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                return claimed;
            };
            let this = self.clone();
            let span =
                tracing::info_span!("probe", project = %job.run.project, run_id = %job.run.id);
            tokio::spawn(
                async move {
                    this.run_job(job).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
        claimed
    }

    async fn run_job(&self, job: ProbeJob) {
        let client = self.clients.get(&job.run.project).cloned();
        let (Some(client), RunStatus::Open | RunStatus::Failed) = (client, job.run.status) else {
            // The run ended well, or its project is no longer probed.
            if let Err(e) = self.store.finish_probe(&job, None, crate::now()).await {
                tracing::error!(run_id = %job.run.id, error = %e, "dropping a probe failed");
            }
            return;
        };
        let host = client
            .target(&job.run)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_default();
        let gate = self.host_gate(&job.run.project, &host, client.config().host_concurrency);
        let Ok(_host_permit) = gate.acquire().await else {
            return;
        };
        client.wait_for_turn(&host).await;
        // Waiting for the host may have eaten the lease: a probe that could
        // outlive it might run twice (another replica claims the run once the
        // lease passes). Give it back; the next claim probes it.
        let worst_case =
            chrono::Duration::from_std(client.config().timeout).unwrap_or(chrono::TimeDelta::MAX);
        if crate::now() + worst_case >= job.lease_expires_at {
            tracing::warn!(
                run_id = %job.run.id,
                host,
                "a probe waited too long for its host; given back for the next claim"
            );
            if let Err(e) = self.store.release_probe(&job).await {
                tracing::error!(run_id = %job.run.id, error = %e, "giving a probe back failed; its lease will expire");
            }
            return;
        }
        let attempt = client.probe(&job.run, &HeaderMap::new()).await;
        tracing::debug!(
            run_id = %job.run.id,
            url = %attempt.url,
            status = ?attempt.status_code,
            error = ?attempt.error,
            "probed"
        );
        let schedule = client.config().schedule;
        let outcome = match (&attempt.error, job.run.probe_matches(&attempt)) {
            (Some(_), _) => "error",
            (None, true) => "matched",
            (None, false) => "mismatch",
        };
        match self
            .store
            .finish_probe(&job, Some((attempt, schedule)), crate::now())
            .await
        {
            Ok(true) => self.metrics.probe(&job.run.project, outcome),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(run_id = %job.run.id, error = %e, "recording a probe failed; it will be retried")
            }
        }
    }
}

/// Probes one round at a time, as soon as a slot is free; once shutdown
/// fires, lets the probes in flight finish (each is bounded by its
/// timeout), so that none is cut off between its request and its record.
impl Worker for Arc<Prober> {
    fn poll_interval(&self) -> Duration {
        self.settings.poll_interval
    }

    /// A slot is free: claim as soon as a probe finishes, not at the next
    /// poll, or probes would be capped at `concurrency` per poll interval
    /// however fast the app answered.
    async fn ready(&self) {
        let _slot = self.in_flight.acquire().await;
    }

    async fn round(&self) -> bool {
        self.tick().await > 0
    }

    async fn drain(&self) {
        let all = u32::try_from(self.settings.concurrency).unwrap_or(u32::MAX);
        let longest = self
            .clients
            .values()
            .map(|c| c.config().timeout)
            .max()
            .unwrap_or_default();
        let drained = tokio::time::timeout(
            longest + Duration::from_secs(1),
            self.in_flight.acquire_many(all),
        )
        .await;
        if drained.is_err() {
            // Those still queued for their host were never sent; their
            // leases expire and another replica (or the next start) makes them.
            tracing::warn!("stopping with probes still queued for their host");
        }
    }
}
