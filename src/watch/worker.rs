//! The watcher: each round it adds this replica's tally to the database,
//! reads each project's history back (every replica's counts), assesses
//! each condition, and opens, keeps up to date or resolves the project
//! incidents. Replicas watch side by side: the database keeps one open
//! incident per cause, and a resolution is written once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Tally, WatchSettings, refusals, silence};
use crate::incident::{Incident, IncidentKind, NewIncident, ProjectCause, ProjectFinding};
use crate::store::{StoreError, Watch};

pub struct Watcher {
    store: Arc<dyn Watch>,
    projects: Vec<(String, WatchSettings)>,
    tally: Arc<Tally>,
    interval: Duration,
}

impl Watcher {
    pub fn new(
        store: Arc<dyn Watch>,
        projects: Vec<(String, WatchSettings)>,
        tally: Arc<Tally>,
        interval: Duration,
    ) -> Watcher {
        Watcher {
            store,
            projects,
            tally,
            interval,
        }
    }

    /// Stores the tally, so that no count is lost when a round fails.
    async fn store_tally(&self) -> Result<(), StoreError> {
        let entries = self.tally.take();
        if let Err(e) = self.store.add_tallies(&entries).await {
            self.tally.restore(entries);
            return Err(e);
        }
        Ok(())
    }

    /// One round at `now`.
    pub async fn watch(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.store_tally().await?;
        let open = self.store.open_project_incidents().await?;
        for (project, settings) in &self.projects {
            let history = self.store.tallies(project, now - silence::HISTORY).await?;
            let assessed: [(IncidentKind, Result<Option<ProjectFinding>, &str>); 2] = [
                (
                    IncidentKind::StripeEventsSilent,
                    match &settings.silence {
                        Some(s) => Ok(silence::assess(project, &history, s, now)),
                        None => Err("silence is no longer watched (ASSAY_WATCH_SILENCE=off)"),
                    },
                ),
                (
                    IncidentKind::StripeDeliveriesRefused,
                    match &settings.refusals {
                        Some(r) => Ok(refusals::assess(project, &history, r, now)),
                        None => Err("refusals are no longer watched (ASSAY_WATCH_REFUSALS=off)"),
                    },
                ),
            ];
            for (kind, finding) in assessed {
                let cleared = match finding {
                    Ok(Some(finding)) => {
                        self.keep(finding, now).await?;
                        continue;
                    }
                    Ok(None) => match kind {
                        IncidentKind::StripeEventsSilent => silence::CLEARED,
                        _ => refusals::CLEARED,
                    },
                    Err(unwatched) => unwatched,
                };
                let stale = open
                    .iter()
                    .filter(|i| &i.project == project && i.kind == kind && !i.drill);
                for incident in stale {
                    self.clear(incident, cleared, now).await?;
                }
            }
        }
        Ok(())
    }

    async fn keep(&self, finding: ProjectFinding, now: DateTime<Utc>) -> Result<(), StoreError> {
        let new = NewIncident::for_project(finding, now);
        if let Some(incident) = self.store.keep_project_incident(new, now).await? {
            tracing::warn!(
                project = %incident.project,
                kind = %incident.kind,
                incident_id = %incident.id,
                title = %incident.title,
                "project incident opened"
            );
        }
        Ok(())
    }

    async fn clear(
        &self,
        incident: &Incident,
        resolution: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let cause = ProjectCause::of(incident);
        if let Some(resolved) = self
            .store
            .clear_project_incident(&cause, resolution, now)
            .await?
        {
            tracing::info!(
                project = %resolved.project,
                kind = %resolved.kind,
                incident_id = %resolved.id,
                resolution,
                "project incident resolved"
            );
        }
        Ok(())
    }
}

impl crate::worker::Worker for Watcher {
    fn poll_interval(&self) -> Duration {
        self.interval
    }

    async fn round(&self) -> bool {
        if let Err(e) = self.watch(crate::now()).await {
            tracing::warn!(error = %e, "the watcher's round failed; it tries again next round");
        }
        false
    }

    /// What was counted since the last round is stored before the replica
    /// stops.
    async fn drain(&self) {
        if let Err(e) = self.store_tally().await {
            tracing::warn!(error = %e, "the last tally could not be stored");
        }
    }
}
