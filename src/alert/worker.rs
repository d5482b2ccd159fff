//! The alert sender: claims pending deliveries with a lease (the store's
//! claim mechanism, as the prober's, so several replicas never send one
//! twice), sends each through its channel, and records the attempt with
//! what comes next: sent, a retry with backoff, or dead after the give-up
//! horizon.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::channel::ChannelSender;
use super::settings::{AlertSettings, ChannelConfig};
use super::{DeliveryJob, DeliveryOutcome, random_unit, skip_reason};
use crate::store::AlertQueue;
use crate::worker::Worker;

pub struct AlertSender {
    store: Arc<dyn AlertQueue>,
    /// Channels by (project, name).
    channels: HashMap<(String, String), ChannelConfig>,
    settings: AlertSettings,
    sender: ChannelSender,
    poll_interval: Duration,
    batch: u32,
    metrics: Arc<crate::metrics::Metrics>,
    /// When reminders were last looked for.
    reminders_checked: Mutex<Option<Instant>>,
}

impl AlertSender {
    pub fn new(
        store: Arc<dyn AlertQueue>,
        channels: HashMap<(String, String), ChannelConfig>,
        settings: AlertSettings,
        poll_interval: Duration,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<AlertSender, String> {
        Ok(AlertSender {
            store,
            metrics,
            channels,
            sender: ChannelSender::new(settings.timeout)?,
            settings,
            poll_interval,
            batch: 32,
            reminders_checked: Mutex::new(None),
        })
    }

    /// What to record for one claimed delivery, after sending it if it is
    /// still worth sending.
    async fn deliver(&self, job: &DeliveryJob) -> DeliveryOutcome {
        if let Some(reason) = skip_reason(job.delivery.event, &job.incidents) {
            return DeliveryOutcome::Skipped(reason);
        }
        let key = (job.delivery.project.clone(), job.delivery.channel.clone());
        let attempt = match self.channels.get(&key) {
            Some(channel) => {
                self.sender
                    .send(
                        channel,
                        &self.settings.templates,
                        &self.settings.public_url,
                        job,
                    )
                    .await
            }
            None => super::DeliveryAttempt {
                at: crate::now(),
                duration_ms: 0,
                status_code: None,
                error: Some(format!(
                    "channel `{}` is no longer configured for project `{}`",
                    key.1, key.0
                )),
            },
        };
        if attempt.error.is_none() {
            return DeliveryOutcome::Sent(attempt);
        }
        let failures = u32::try_from(job.delivery.attempts.len()).unwrap_or(u32::MAX) + 1;
        let retry_at = self.settings.retry.retry_at(
            failures,
            job.delivery.created_at,
            crate::now(),
            random_unit(),
        );
        DeliveryOutcome::Failed { attempt, retry_at }
    }

    /// Claims and sends what is due; returns how many were claimed.
    pub async fn tick(&self) -> usize {
        let jobs = match self.store.claim_deliveries(crate::now(), self.batch).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %e, "claiming alert deliveries failed; retrying");
                return 0;
            }
        };
        let claimed = jobs.len();
        // Each channel's sends are independent: one slow receiver does not
        // hold up the others.
        let sends = jobs.into_iter().map(|job| {
            let span = tracing::info_span!(
                "alert_delivery",
                project = %job.delivery.project,
                channel = %job.delivery.channel,
                delivery_id = %job.delivery.id,
                event = %job.delivery.event,
            );
            self.send_and_record(job).instrument(span)
        });
        futures::future::join_all(sends).await;
        claimed
    }

    /// Sends one claimed delivery and records the outcome.
    async fn send_and_record(&self, job: DeliveryJob) {
        let outcome = self.deliver(&job).await;
        match &outcome {
            DeliveryOutcome::Failed {
                attempt,
                retry_at: None,
            } => tracing::error!(
                delivery_id = %job.delivery.id,
                channel = %job.delivery.channel,
                error = ?attempt.error,
                "alert delivery is dead: gave up after {}",
                crate::time::written(self.settings.retry.give_up_after)
            ),
            DeliveryOutcome::Failed { attempt, .. } => tracing::warn!(
                delivery_id = %job.delivery.id,
                channel = %job.delivery.channel,
                error = ?attempt.error,
                "alert delivery failed; will retry"
            ),
            _ => {}
        }
        let counted = match &outcome {
            DeliveryOutcome::Sent(_) => "sent",
            DeliveryOutcome::Failed {
                retry_at: Some(_), ..
            } => "failed",
            DeliveryOutcome::Failed { retry_at: None, .. } => "dead",
            DeliveryOutcome::Skipped(_) => "skipped",
        };
        match self
            .store
            .finish_delivery(&job, outcome, crate::now())
            .await
        {
            // A drill's alert is not a customer's.
            Ok(true) if job.incidents.iter().all(|i| i.realm().counted()) => {
                self.metrics
                    .delivery(&job.delivery.project, &job.delivery.channel, counted);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(delivery_id = %job.delivery.id, error = %e, "recording an alert delivery failed; its lease will expire and it is retried")
            }
        }
    }

    /// Queues reminders when configured, looking for them a few times per
    /// interval (at most once a minute), not on every poll.
    async fn remind(&self) {
        let Some(interval) = self.settings.reminder_interval else {
            return;
        };
        let every = (interval / 4).min(Duration::from_secs(60));
        {
            let mut checked = self
                .reminders_checked
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if checked.is_some_and(|at| at.elapsed() < every) {
                return;
            }
            *checked = Some(Instant::now());
        }
        if let Err(e) = self.store.queue_reminders(crate::now(), interval).await {
            tracing::error!(error = %e, "queueing reminders failed");
        }
    }
}

/// Sends a round of due deliveries at a time, and queues reminders.
impl Worker for AlertSender {
    fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// A full batch means more may be due.
    async fn round(&self) -> bool {
        self.remind().await;
        self.tick().await >= self.batch as usize
    }
}
