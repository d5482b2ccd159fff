//! The drill runner: claims drills whose next step is due with a lease (the
//! store's claim mechanism, so with several replicas each step is taken by
//! one), does that one step, and writes the drill back by its lease. It also
//! starts the scheduled drills: every replica's scheduler tries, and the
//! store keeps one drill per schedule time.
//!
//! Every step is safe to do twice (a replica that dies mid-step leaves it
//! to the next claim): the webhook is idempotent by event id, a repeated
//! `reconciled` report is recorded and changes nothing, and the waits only
//! read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::Instrument;

mod steps;

use super::{BrokenLink, Drill, DrillStep, DrillTrigger, StepOutcome};
use crate::config::{Config, ProjectConfig};
use crate::probe::client::ProbeClient;
use crate::run::after;
use crate::store::{DrillJob, Store, StoreError};
use crate::worker::Worker;

/// How long a drill waits for its accepted webhook's run to show up.
const RUN_WAIT: Duration = Duration::from_secs(10);
/// How often a waiting step looks again.
const WAIT_POLL: Duration = Duration::from_millis(250);
/// How long after a transient failure (the database) a step is retried.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest a drill's webhook request may take.
const INGEST_TIMEOUT: Duration = Duration::from_secs(10);

fn failed(link: BrokenLink, detail: impl Into<String>, fix: impl Into<String>) -> StepOutcome {
    StepOutcome::Failed {
        link,
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// A step that finds what an earlier step recorded missing: a bug, not a
/// broken link of the user's chain, but still a failed drill.
fn lost(link: BrokenLink, what: &str) -> StepOutcome {
    failed(
        link,
        format!("the drill lost its {what}"),
        "report this as a bug in Assay",
    )
}

/// Starts a drill now, for `actor`: stores it, due at once, for a runner
/// to take.
pub async fn start(
    store: &dyn Store,
    project: &ProjectConfig,
    workflow: &str,
    trigger: DrillTrigger,
    actor: &crate::access::Actor,
) -> Result<Drill, StoreError> {
    let drill = Drill::new(
        &project.name,
        workflow,
        trigger,
        project.drill.timings(),
        None,
        crate::now(),
    );
    store.create_drill(&drill, false, actor).await?;
    Ok(drill)
}

pub struct DrillRunner {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    /// The probe clients of the probed projects, shared with the prober.
    probes: HashMap<String, Arc<ProbeClient>>,
    http: reqwest::Client,
    /// This replica's own address, where the webhook goes unless a
    /// project names its ingress (`drill.ingest_url`).
    own_url: String,
    poll_interval: Duration,
    /// Shorter than the lease, so that no other replica takes the step over
    /// while its webhook is on the wire.
    ingest_timeout: Duration,
    /// Each scheduled project's next schedule time.
    next_scheduled: tokio::sync::Mutex<HashMap<String, DateTime<Utc>>>,
}

impl DrillRunner {
    pub fn new(
        store: Arc<dyn Store>,
        config: Arc<Config>,
        probes: HashMap<String, Arc<ProbeClient>>,
        own_url: String,
    ) -> Result<DrillRunner, String> {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(INGEST_TIMEOUT)
            .user_agent(concat!("assay-drill/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| crate::error_chain(&e))?;
        Ok(DrillRunner {
            store,
            probes,
            http,
            ingest_timeout: INGEST_TIMEOUT.min(config.database.lease / 2),
            own_url,
            poll_interval: Duration::from_millis(500),
            next_scheduled: Default::default(),
            config,
        })
    }

    /// Claims the drills whose next step is due and takes one step of
    /// each; returns how many were claimed.
    pub async fn tick(&self) -> usize {
        let jobs = match self.store.claim_drills(crate::now(), 8).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %e, "claiming drills failed; retrying");
                return 0;
            }
        };
        let claimed = jobs.len();
        let steps = jobs.into_iter().map(|job| {
            let span = tracing::info_span!(
                "drill_step",
                project = %job.drill.project,
                drill_id = %job.drill.id,
                step = %job.drill.step,
            );
            self.take_step(job).instrument(span)
        });
        futures::future::join_all(steps).await;
        claimed
    }

    /// Takes one step of a claimed drill and writes the drill back.
    async fn take_step(&self, mut job: DrillJob) {
        let step = job.drill.step;
        let outcome = match self.step(&mut job.drill).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(drill_id = %job.drill.id, %step, error = %e, "a drill step failed on the database; retrying");
                StepOutcome::WaitUntil(after(crate::now(), RETRY_AFTER))
            }
        };
        if let StepOutcome::Failed { link, detail, .. } = &outcome {
            tracing::warn!(drill_id = %job.drill.id, project = %job.drill.project, %step, %link, "drill step failed: {detail}");
        }
        job.drill.apply(outcome, crate::now());
        if job.drill.finished_at.is_some() {
            tracing::info!(
                drill_id = %job.drill.id,
                project = %job.drill.project,
                status = %job.drill.status,
                broken_link = ?job.drill.broken_link.as_ref().map(|b| b.link),
                "drill finished"
            );
        }
        match self.store.save_drill(&job).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(drill_id = %job.drill.id, "a drill step finished after its lease passed on; not recorded")
            }
            Err(e) => {
                tracing::error!(drill_id = %job.drill.id, error = %e, "recording a drill step failed; its lease will expire and the step is retried")
            }
        }
    }

    /// Does the drill's current step once.
    async fn step(&self, drill: &mut Drill) -> Result<StepOutcome, StoreError> {
        let now = crate::now();
        // The clean-up needs only the store: it runs even where the
        // project is not configured, and however late.
        if drill.step == DrillStep::Resolved {
            return match self.resolved(drill, now).await {
                // Bounded too: a clean-up failing for twice the drill's
                // time gives up, so that the drill ends.
                Err(e) if now > after(drill.started_at, drill.timings.longest() * 2) => Ok(failed(
                    BrokenLink::ResolveFailed,
                    format!("the clean-up kept failing: {e}"),
                    "resolve the drill's incident on the dashboard; see the replicas' logs",
                )),
                other => other,
            };
        }
        if let Some(outcome) = drill.out_of_time(now) {
            return Ok(outcome);
        }
        let Some(project) = self.config.projects.get(&drill.project) else {
            return Ok(failed(
                drill.step.link(),
                format!(
                    "project `{}` is not configured on this replica",
                    drill.project
                ),
                "configure the project on every replica, or start drills only for configured projects",
            ));
        };
        match drill.step {
            DrillStep::Ingest => Ok(self.ingest(drill, project, now).await),
            DrillStep::RunOpened => self.run_opened(drill, now).await,
            DrillStep::Reconciled => self.reconciled(drill, now).await,
            DrillStep::AccessFailed => self.access_failed(drill, project, now).await,
            DrillStep::IncidentOpened => self.incident_opened(drill, now).await,
            DrillStep::IncidentComplete => self.incident_complete(drill, project).await,
            DrillStep::AlertDelivered => self.alert_delivered(drill, project, now).await,
            DrillStep::Resolved => self.resolved(drill, now).await,
        }
    }

    /// Starts the scheduled drills that are due.
    async fn fire_schedules(&self) {
        let mut next = self.next_scheduled.lock().await;
        let now = Utc::now();
        for project in self.config.projects.values() {
            let Some(schedule) = &project.drill.schedule else {
                continue;
            };
            let Some(due) = next
                .get(&project.name)
                .copied()
                .or_else(|| schedule.schedule.after(&now).next())
            else {
                continue;
            };
            if due > now {
                next.insert(project.name.clone(), due);
                continue;
            }
            // Every replica tries; the store keeps one drill per schedule
            // time, and none while the last one still runs.
            let drill = Drill::new(
                &project.name,
                crate::run::BILLING_WORKFLOW,
                DrillTrigger::Schedule,
                project.drill.timings(),
                Some(due),
                crate::now(),
            );
            match self
                .store
                .create_drill(&drill, true, &crate::access::Actor::system())
                .await
            {
                Ok(true) => {
                    tracing::info!(drill_id = %drill.id, project = %project.name, "scheduled drill started")
                }
                Ok(false) => {
                    tracing::debug!(project = %project.name, "scheduled drill already started elsewhere, or one still runs")
                }
                Err(e) => {
                    tracing::error!(project = %project.name, error = %e, "starting a scheduled drill failed")
                }
            }
            if let Some(following) = schedule.schedule.after(&now).next() {
                next.insert(project.name.clone(), following);
            } else {
                next.remove(&project.name);
            }
        }
    }
}

/// Fires the scheduled drills that are due, then takes a step of each
/// claimed drill; a claim leaves a drill due again at once when its step
/// passed, so a round that claimed any is followed by another.
impl Worker for DrillRunner {
    fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    async fn round(&self) -> bool {
        self.fire_schedules().await;
        self.tick().await > 0
    }
}
