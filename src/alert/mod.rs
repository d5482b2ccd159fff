//! Incident alerts: what to send, to whom, and when to try again.
//!
//! Alerts go through an outbox. The transaction that opens (or resolves)
//! incidents also writes their deliveries, one per channel, so an incident is
//! never opened without its alert queued, and a crash after the commit loses
//! nothing: the alert sender claims pending deliveries (with a lease, as the
//! prober claims probes), sends them, and records every attempt.
//!
//! This module holds the rules, pure: [`Outbox`] decides which deliveries an
//! event makes (one per incident, or one grouped message when many incidents
//! share a cause), [`RetryPolicy`] when to try again and when to give up.
//! [`settings`] reads the channels, [`templates`] renders messages,
//! [`channel`] sends them, [`worker`] runs the sender.

pub mod channel;
pub mod settings;
pub mod templates;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::incident::{Evidence, Incident, IncidentKind, IncidentStatus};
use crate::names::named_enum;
use crate::run::Stage;

named_enum! {
    /// What an alert tells.
    AlertEvent, "alert event" {
        Opened => "opened",
        Resolved => "resolved",
        Reminder => "reminder",
    }
}

named_enum! {
    /// Where a delivery stands. `dead`: given up after the retry horizon,
    /// visible and counted, never silent. `skipped`: no longer worth sending
    /// (a reminder for an incident acknowledged or resolved meanwhile).
    DeliveryStatus, "delivery status" {
        Pending => "pending",
        Sent => "sent",
        Dead => "dead",
        Skipped => "skipped",
    }
}

/// One attempt to send a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeliveryAttempt {
    #[serde(with = "crate::time::millis")]
    pub at: DateTime<Utc>,
    pub duration_ms: i64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

/// One message to one channel, with its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    pub project: String,
    pub channel: String,
    pub event: AlertEvent,
    pub status: DeliveryStatus,
    /// How many incidents the message is about; more than one for a
    /// grouped alert.
    pub incident_count: i64,
    #[serde(with = "crate::time::millis")]
    pub created_at: DateTime<Utc>,
    #[serde(default, with = "crate::time::millis::option")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, with = "crate::time::millis::option")]
    pub settled_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub attempts: Vec<DeliveryAttempt>,
}

/// A delivery to write to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub id: Uuid,
    pub project: String,
    pub channel: String,
    pub event: AlertEvent,
    pub incident_ids: Vec<Uuid>,
    /// What the incidents have in common (see [`Cause`]), when it matters:
    /// a grouped delivery carries it, and an incident of the same cause
    /// that opens while that delivery still waits joins it instead of
    /// making a message of its own (a sweep works in batches, and replicas
    /// sweep side by side).
    pub cause: Option<String>,
    /// About several incidents: it waits [`GROUP_SETTLE`] for the rest of
    /// its cause to join.
    pub grouped: bool,
}

/// How long a grouped alert waits for more incidents of its cause.
pub const GROUP_SETTLE: Duration = Duration::from_secs(2);

/// A pending delivery claimed by one replica's sender, with what it needs to
/// render the message.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    pub delivery: Delivery,
    /// The incidents the message is about, as they are now.
    pub incidents: Vec<Incident>,
    pub lease_token: String,
}

/// What the sender did with a claimed delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    Sent(DeliveryAttempt),
    /// Failed; try again at `retry_at`, or give up when it is `None`.
    Failed {
        attempt: DeliveryAttempt,
        retry_at: Option<DateTime<Utc>>,
    },
    Skipped(String),
}

/// The channels of one project that real incidents and drill incidents
/// alert, by name, in configuration order.
#[derive(Debug, Clone, Default)]
pub struct ProjectChannels {
    pub real: Vec<String>,
    pub drill: Vec<String>,
}

/// Which channels each project alerts, and when incidents are grouped.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    /// Channel names per project.
    pub channels: HashMap<String, ProjectChannels>,
    /// This many incidents or more with one cause, opened in one sweep, make
    /// one grouped alert.
    pub group_threshold: usize,
}

/// Incidents with one cause: the same project, workflow, deploy and missed
/// stage for runs' incidents (a bad deploy that breaks access for 500
/// customers is one cause), the same kind and subject for a project's.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cause {
    project: String,
    workflow: String,
    kind: IncidentKind,
    about: CauseOf,
    /// A drill's incidents never share a message with real ones.
    drill: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CauseOf {
    Run {
        deploy_sha: Option<String>,
        missed_stage: Stage,
    },
    Project {
        subject: String,
    },
}

/// Causes sort field by field, stages and kinds by their names, so that
/// one sweep's alerts are queued in the order they were when those were
/// text.
impl Ord for Cause {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

impl PartialOrd for Cause {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Cause {
    /// What causes sort by, borrowed.
    fn order(&self) -> (&str, &str, Option<&str>, &str, &str, bool) {
        let (first, second) = match &self.about {
            CauseOf::Run {
                deploy_sha,
                missed_stage,
            } => (deploy_sha.as_deref(), missed_stage.as_str()),
            CauseOf::Project { subject } => (Some(subject.as_str()), "project"),
        };
        (
            &self.project,
            &self.workflow,
            first,
            second,
            self.kind.as_str(),
            self.drill,
        )
    }

    /// The cause as stored on a delivery.
    fn key(&self) -> String {
        let about = match &self.about {
            CauseOf::Run {
                deploy_sha,
                missed_stage,
            } => format!("{}|{missed_stage}", deploy_sha.as_deref().unwrap_or("")),
            CauseOf::Project { subject } => format!("project|{subject}"),
        };
        format!(
            "{}|{about}|{}{}",
            self.workflow,
            self.kind,
            if self.drill { "|drill" } else { "" }
        )
    }

    fn of(incident: &Incident) -> Cause {
        let about = match &incident.evidence {
            Evidence::Run(e) => CauseOf::Run {
                deploy_sha: e.deploy_sha.clone(),
                missed_stage: e.missed_stage,
            },
            Evidence::Project(_) => CauseOf::Project {
                subject: incident.subject.clone(),
            },
        };
        Cause {
            project: incident.project.clone(),
            workflow: incident.workflow.clone(),
            kind: incident.kind,
            about,
            drill: incident.realm().is_drill(),
        }
    }
}

impl Outbox {
    fn deliveries(
        &self,
        project: &str,
        event: AlertEvent,
        incident_ids: Vec<Uuid>,
        cause: Option<&Cause>,
        drill: bool,
    ) -> Vec<NewDelivery> {
        let grouped = incident_ids.len() > 1;
        self.channels
            .get(project)
            .into_iter()
            .flat_map(|c| if drill { &c.drill } else { &c.real })
            .map(|channel| NewDelivery {
                id: Uuid::now_v7(),
                project: project.to_owned(),
                channel: channel.clone(),
                event,
                incident_ids: incident_ids.clone(),
                cause: cause.map(Cause::key),
                grouped,
            })
            .collect()
    }

    /// The deliveries for incidents that just opened together (one sweep):
    /// one per incident and channel, except that a cause shared by at least
    /// `group_threshold` incidents makes one grouped delivery per channel.
    pub fn opened(&self, incidents: &[Incident]) -> Vec<NewDelivery> {
        self.grouped(AlertEvent::Opened, incidents)
    }

    /// The reminders for incidents still open, grouped as they opened.
    pub fn reminders(&self, incidents: &[Incident]) -> Vec<NewDelivery> {
        self.grouped(AlertEvent::Reminder, incidents)
    }

    fn grouped(&self, event: AlertEvent, incidents: &[Incident]) -> Vec<NewDelivery> {
        let mut by_cause: BTreeMap<Cause, Vec<&Incident>> = BTreeMap::new();
        for incident in incidents {
            by_cause
                .entry(Cause::of(incident))
                .or_default()
                .push(incident);
        }
        let mut out = Vec::new();
        for (cause, group) in by_cause {
            if self.group_threshold > 1 && group.len() >= self.group_threshold {
                let ids = group.iter().map(|i| i.id).collect();
                out.extend(self.deliveries(&cause.project, event, ids, Some(&cause), cause.drill));
            } else {
                for incident in group {
                    out.extend(self.deliveries(
                        &incident.project,
                        event,
                        vec![incident.id],
                        Some(&cause),
                        cause.drill,
                    ));
                }
            }
        }
        out
    }

    /// The deliveries that say an incident resolved.
    pub fn resolved(&self, incident: &Incident) -> Vec<NewDelivery> {
        self.deliveries(
            &incident.project,
            AlertEvent::Resolved,
            vec![incident.id],
            None,
            incident.realm().is_drill(),
        )
    }
}

/// Whether a claimed delivery is still worth sending: a reminder is not once
/// its incident was acknowledged or resolved. `Some(reason)` to skip it.
pub fn skip_reason(event: AlertEvent, incidents: &[Incident]) -> Option<String> {
    if event != AlertEvent::Reminder {
        return None;
    }
    incidents
        .iter()
        .all(|i| i.status != IncidentStatus::Open)
        .then(|| {
            "the incident was acknowledged or resolved before the reminder went out".to_owned()
        })
}

/// When to try a failed delivery again, and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Counted from when the delivery was queued: after this, it is dead.
    pub give_up_after: Duration,
}

impl RetryPolicy {
    /// The next try after `attempts` failures, with "equal jitter": half
    /// the doubled wait, plus a random part of the other half, so that a
    /// receiver that comes back is not hit by every sender at once.
    /// `random` is in `0.0..1.0`. `None`: give up.
    pub fn retry_at(
        &self,
        attempts: u32,
        created_at: DateTime<Utc>,
        now: DateTime<Utc>,
        random: f64,
    ) -> Option<DateTime<Utc>> {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        let wait = self.initial.saturating_mul(factor).min(self.max);
        let wait = wait / 2 + wait.mul_f64(random.clamp(0.0, 1.0) / 2.0);
        let at = now + chrono::Duration::from_std(wait).ok()?;
        let horizon = created_at + chrono::Duration::from_std(self.give_up_after).ok()?;
        (at <= horizon).then_some(at)
    }
}

impl fmt::Display for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} doubling to {}, giving up after {}",
            crate::time::written(self.initial),
            crate::time::written(self.max),
            crate::time::written(self.give_up_after)
        )
    }
}

/// A random number in `0.0..1.0` from the OS's randomness (through a v4
/// UUID: no extra dependency for jitter).
pub fn random_unit() -> f64 {
    let bytes = Uuid::new_v4().into_bytes();
    f64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(project: &str, sha: &str) -> Incident {
        crate::incident::tests::access_incident(project, sha)
    }

    fn outbox() -> Outbox {
        Outbox {
            channels: HashMap::from([(
                "p".to_owned(),
                ProjectChannels {
                    real: vec!["slack".to_owned(), "email".to_owned()],
                    drill: vec!["drills".to_owned()],
                },
            )]),
            group_threshold: 3,
        }
    }

    #[test]
    fn many_incidents_with_one_cause_make_one_grouped_alert_per_channel() {
        let mut incidents: Vec<Incident> = (0..5).map(|_| incident("p", "sha-bad")).collect();
        incidents.push(incident("p", "sha-other"));
        let out = outbox().opened(&incidents);
        let grouped: Vec<&NewDelivery> = out.iter().filter(|d| d.incident_ids.len() == 5).collect();
        assert_eq!(grouped.len(), 2, "one per channel");
        let single: Vec<&NewDelivery> = out.iter().filter(|d| d.incident_ids.len() == 1).collect();
        assert_eq!(single.len(), 2, "the other cause alerts on its own");
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn below_the_threshold_each_incident_alerts_alone() {
        let incidents: Vec<Incident> = (0..2).map(|_| incident("p", "sha")).collect();
        let out = outbox().opened(&incidents);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|d| d.incident_ids.len() == 1));
        assert!(outbox().opened(&[incident("unalerted", "sha")]).is_empty());
    }

    #[test]
    fn drill_incidents_alert_the_drill_channels_and_never_group_with_real_ones() {
        let mut incidents: Vec<Incident> = (0..3).map(|_| incident("p", "sha")).collect();
        let mut drill = incident("p", "sha");
        drill.drill = true;
        if let Evidence::Run(e) = &mut drill.evidence {
            e.drill = true;
            e.drill_id = Some(Uuid::now_v7());
        }
        incidents.push(drill.clone());
        let out = outbox().opened(&incidents);
        let to_drills: Vec<&NewDelivery> = out.iter().filter(|d| d.channel == "drills").collect();
        assert_eq!(to_drills.len(), 1);
        assert_eq!(to_drills[0].incident_ids, vec![drill.id]);
        assert!(
            out.iter()
                .filter(|d| d.channel != "drills")
                .all(|d| !d.incident_ids.contains(&drill.id) && d.incident_ids.len() == 3)
        );
        let resolved = outbox().resolved(&drill);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].channel, "drills");
    }

    #[test]
    fn reminders_are_skipped_once_acknowledged() {
        let mut acked = incident("p", "sha");
        acked.status = IncidentStatus::Acknowledged;
        assert!(skip_reason(AlertEvent::Reminder, std::slice::from_ref(&acked)).is_some());
        assert!(skip_reason(AlertEvent::Opened, std::slice::from_ref(&acked)).is_none());
        assert!(skip_reason(AlertEvent::Reminder, &[incident("p", "sha")]).is_none());
    }

    #[test]
    fn retries_back_off_with_jitter_and_give_up_at_the_horizon() {
        let policy = RetryPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(600),
            give_up_after: Duration::from_secs(3600),
        };
        let t0 = Utc::now();
        let wait = |attempts, random| {
            (policy.retry_at(attempts, t0, t0, random).unwrap() - t0).num_seconds()
        };
        assert_eq!((wait(1, 0.0), wait(1, 0.999)), (5, 9));
        assert_eq!((wait(3, 0.0), wait(3, 0.999)), (20, 39));
        assert_eq!(wait(30, 0.0), 300, "capped");
        let late = t0 + chrono::Duration::seconds(3590);
        assert_eq!(
            policy.retry_at(30, t0, late, 0.0),
            None,
            "past the horizon: dead"
        );
        assert!((0.0..1.0).contains(&random_unit()));
    }
}
