//! Ingest silence: no Stripe delivery accepted for far longer than usual.
//!
//! The usual gap is learnt from the project's own history (the tally of
//! accepted deliveries over the last [`HISTORY`]) by time of day, because
//! most billing traffic follows the day: at a given hour, it is the time
//! the history covered in the hours of day around it (that hour and its
//! neighbours, on every day of the history) divided by the deliveries
//! accepted in them. Until the history spans two days, or when those hours
//! hold too few deliveries to say, it is the history's mean gap. A silence
//! is measured against the longest usual gap of the hours it spans, and
//! opens an incident once it lasts the usual gap times the factor, and at
//! least the floor. A project learns before it alarms: nothing opens until
//! its history spans the learning time and holds the minimum number of
//! deliveries.

use chrono::{DateTime, Duration, Timelike, Utc};

use super::{Counted, SilenceSettings, TallyEntry, about};
use crate::incident::{Condition, IncidentKind, ProjectFinding};
use crate::run::BILLING_WORKFLOW;
use crate::time::rfc3339;

/// How far back the usual traffic is learnt from.
pub const HISTORY: Duration = Duration::days(7);
/// The resolution of a silence incident.
pub const CLEARED: &str = "Stripe deliveries reach Assay again";
/// Fewer deliveries than this in an hour-of-day window say too little;
/// the mean gap stands in.
const MIN_IN_WINDOW: u64 = 3;
const HOUR_MS: i64 = 3_600_000;

/// The history of accepted deliveries, as the assessment reads it.
struct Accepted<'a> {
    buckets: Vec<&'a TallyEntry>,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    total: u64,
}

impl Accepted<'_> {
    fn mean_gap_ms(&self) -> f64 {
        let span = (self.last - self.first).num_milliseconds().max(1) as f64;
        span / (self.total.saturating_sub(1).max(1)) as f64
    }

    /// The usual gap at hour of day `hour` (UTC), in milliseconds.
    fn gap_at_hour_ms(&self, hour: u32) -> f64 {
        if self.last - self.first < Duration::days(2) {
            return self.mean_gap_ms();
        }
        let near = |h: u32| (h + 24 - hour) % 24 <= 1 || (hour + 24 - h) % 24 <= 1;
        let hour_of = |ms: i64| (ms.div_euclid(HOUR_MS) % 24) as u32;
        let count: u64 = self
            .buckets
            .iter()
            .filter(|b| near(hour_of(b.minute)))
            .map(|b| b.count)
            .sum();
        if count < MIN_IN_WINDOW {
            return self.mean_gap_ms();
        }
        let (first, last) = (self.first.timestamp_millis(), self.last.timestamp_millis());
        let mut covered = 0i64;
        let mut slot = first.div_euclid(HOUR_MS) * HOUR_MS;
        while slot < last {
            if near(hour_of(slot)) {
                covered += (slot + HOUR_MS).min(last) - slot.max(first);
            }
            slot += HOUR_MS;
        }
        covered.max(1) as f64 / count as f64
    }
}

/// The silence incident `history` (the project's tally, any outcomes)
/// calls for at `now`, if any.
pub fn assess(
    project: &str,
    history: &[TallyEntry],
    settings: &SilenceSettings,
    now: DateTime<Utc>,
) -> Option<ProjectFinding> {
    let buckets: Vec<&TallyEntry> = history
        .iter()
        .filter(|b| b.outcome == Counted::Accepted && b.last_at > now - HISTORY)
        .collect();
    let accepted = Accepted {
        first: buckets.iter().map(|b| b.first_at).min()?,
        last: buckets.iter().map(|b| b.last_at).max()?,
        total: buckets.iter().map(|b| b.count).sum(),
        buckets,
    };
    let learnt = now - accepted.first >= Duration::from_std(settings.learning).ok()?
        && accepted.total >= settings.min_events;
    let silent = now - accepted.last;
    let floor = Duration::from_std(settings.floor).ok()?;
    if !learnt || silent < floor {
        return None;
    }
    // The longest usual gap of the hours of day the silence spans.
    let hours = (silent.num_hours() + 1).min(24);
    let usual_ms = (0..=hours)
        .map(|h| (accepted.last + Duration::hours(h)).hour())
        .map(|hour| accepted.gap_at_hour_ms(hour))
        .fold(0.0, f64::max);
    let threshold_ms = (usual_ms * f64::from(settings.factor)).max(floor.num_milliseconds() as f64);
    if (silent.num_milliseconds() as f64) < threshold_ms {
        return None;
    }
    let (silent_ms, usual) = (silent.num_milliseconds(), about(usual_ms as i64));
    let last = rfc3339(&accepted.last);
    Some(ProjectFinding {
        project: project.to_owned(),
        workflow: BILLING_WORKFLOW.to_owned(),
        kind: IncidentKind::StripeEventsSilent,
        subject: String::new(),
        title: format!(
            "No Stripe events reached Assay for {} (usually one every {usual})",
            about(silent_ms)
        ),
        summary: format!(
            "Assay has accepted no Stripe delivery for project {project} since {last} ({}), where one usually arrives every {usual}. Runs open only for the events Assay receives, so customers' access goes unwatched until deliveries resume.",
            about(silent_ms)
        ),
        seen: format!("no Stripe delivery accepted since {last}"),
        since: accepted.last,
        usual: Some(format!(
            "one accepted delivery every {usual} at this time of day, learnt from {} deliveries over {}",
            accepted.total,
            about((accepted.last - accepted.first).num_milliseconds())
        )),
        details: Condition::Silence {
            last_accepted_at: accepted.last,
            silent_secs: u64::try_from(silent.num_seconds()).unwrap_or_default(),
            usual_gap_secs: usual_ms.round() / 1000.0,
            threshold_secs: (threshold_ms / 1000.0).round() as u64,
            learnt_from: accepted.total,
        },
        guidance: vec![
            format!(
                "Check the webhook endpoint of project {project} in Stripe (Developers > Webhooks): it must be enabled, point at this Assay's /hooks/stripe/{project} and list the event types Assay acts on. Stripe disables an endpoint after days of failed deliveries."
            ),
            "Check the route from the internet to Assay: DNS, the ingress or load balancer rule, firewalls, and the TLS certificate of the endpoint's host.".to_owned(),
            "Check the endpoint's recent attempts in Stripe: what they were answered says which link failed. Deliveries Assay refused open an incident of their own.".to_owned(),
            format!(
                "If traffic truly stopped (a quiet season, a paused product), resolve this incident; for a project whose traffic is irregular, raise ASSAY_WATCH_SILENCE_FLOOR (now {}) or set ASSAY_WATCH_SILENCE=off.",
                crate::time::written(settings.floor)
            ),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::minute_of;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T00:00:00Z")
            .unwrap()
            .to_utc()
    }

    /// One accepted delivery every `gap`, from `from` for `count`.
    fn steady(from: DateTime<Utc>, gap: Duration, count: i64) -> Vec<TallyEntry> {
        (0..count)
            .map(|i| {
                let at = from + gap * i32::try_from(i).unwrap();
                TallyEntry {
                    project: "p".into(),
                    outcome: Counted::Accepted,
                    minute: minute_of(at),
                    count: 1,
                    first_at: at,
                    last_at: at,
                }
            })
            .collect()
    }

    fn settings() -> SilenceSettings {
        SilenceSettings {
            floor: std::time::Duration::from_secs(1800),
            factor: 20,
            learning: std::time::Duration::from_secs(86_400),
            min_events: 50,
        }
    }

    #[test]
    fn a_silence_far_beyond_the_usual_gap_opens_once_it_passes_the_threshold() {
        // One every 4 minutes for two days.
        let history = steady(t0(), Duration::minutes(4), 720);
        let last = history.last().unwrap().last_at;
        assert!(assess("p", &history, &settings(), last + Duration::minutes(79)).is_none());
        let found = assess("p", &history, &settings(), last + Duration::hours(3)).unwrap();
        assert_eq!(
            found.title,
            "No Stripe events reached Assay for 3 h (usually one every 4 min)"
        );
        assert_eq!(found.since, last);
        let Condition::Silence {
            threshold_secs,
            learnt_from,
            ..
        } = found.details
        else {
            panic!("a silence");
        };
        assert_eq!((threshold_secs, learnt_from), (80 * 60, 720));
    }

    #[test]
    fn the_floor_holds_when_traffic_is_dense() {
        let history = steady(t0(), Duration::seconds(10), 20_000);
        let last = history.last().unwrap().last_at;
        assert!(assess("p", &history, &settings(), last + Duration::minutes(29)).is_none());
        assert!(assess("p", &history, &settings(), last + Duration::minutes(31)).is_some());
    }

    #[test]
    fn a_project_without_history_never_alarms() {
        assert!(assess("p", &[], &settings(), t0()).is_none());
        // Too short a history, however long the silence after it.
        let history = steady(t0(), Duration::minutes(1), 600);
        assert!(assess("p", &history, &settings(), t0() + Duration::hours(20)).is_none());
        // Long enough, but too few deliveries.
        let history = steady(t0(), Duration::hours(2), 20);
        assert!(assess("p", &history, &settings(), t0() + Duration::days(5)).is_none());
    }

    #[test]
    fn quiet_nights_are_usual_at_night() {
        // Three days: every 2 minutes from 08:00 to 20:00, every hour at
        // night.
        let mut history = Vec::new();
        for day in 0..3 {
            let morning = t0() + Duration::days(day) + Duration::hours(8);
            history.extend(steady(morning, Duration::minutes(2), 360));
            let night = morning + Duration::hours(12);
            history.extend(steady(night, Duration::hours(1), 12));
        }
        history.retain(|b| b.last_at < t0() + Duration::days(2) + Duration::hours(23));
        // The last delivery came at 22:00 on the third day; a 3-hour quiet
        // at night is nothing unusual with one an hour.
        let last = history.iter().map(|b| b.last_at).max().unwrap();
        assert_eq!(last.hour(), 22);
        assert!(assess("p", &history, &settings(), last + Duration::hours(3)).is_none());
        // The same quiet in the day is far beyond the usual.
        let mut day_history = history.clone();
        day_history.retain(|b| b.last_at <= t0() + Duration::days(2) + Duration::hours(14));
        let last = day_history.iter().map(|b| b.last_at).max().unwrap();
        assert!(assess("p", &day_history, &settings(), last + Duration::hours(1)).is_some());
    }
}
