//! Active probes: Assay asks the app itself what access a customer has,
//! instead of taking the app's word for it.
//!
//! This module holds the rules (when to probe again, what an attempt means
//! for a run); [`client`] makes the HTTP request safely and [`worker`] runs
//! the probes of every replica through the store's claim mechanism.

pub mod client;
pub mod settings;
pub mod worker;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use crate::run::{ReportOutcome, Run, RunStatus, Source, Stage, StageReport, Verdict, named_enum};

named_enum! {
    /// When a run starts being probed.
    ProbeStart, "probe start" {
        Open => "open",
        Reconciled => "reconciled",
    }
}

/// One probe of the app's access endpoint, as recorded on the run.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProbeAttempt {
    pub at: DateTime<Utc>,
    pub duration_ms: i64,
    /// The URL probed, without query string (which may carry a token).
    pub url: String,
    pub status_code: Option<u16>,
    pub observed_plan: Option<String>,
    pub observed_features: Option<Vec<String>>,
    pub deploy_sha: Option<String>,
    /// Why the attempt saw nothing: a timeout, a refused host, a bad body.
    pub error: Option<String>,
    /// Whether what it saw is the access the run expects.
    pub matched: bool,
}

impl ProbeAttempt {
    /// The attempt in a sentence, for incident evidence.
    pub fn describe(&self) -> String {
        match (&self.error, &self.observed_plan, &self.observed_features) {
            (Some(error), _, _) => format!("the last probe failed: {error}"),
            (None, Some(plan), _) => format!("the last probe saw plan {plan}"),
            (None, None, Some(features)) => {
                format!("the last probe saw features [{}]", features.join(", "))
            }
            (None, None, None) => "the last probe saw nothing".to_owned(),
        }
    }
}

/// A run due for a probe, claimed by one replica.
#[derive(Debug, Clone)]
pub struct ProbeJob {
    pub run: Run,
    /// Attempts made so far.
    pub attempts: u32,
    pub lease_token: String,
    /// After this, another replica may claim the run: a probe that cannot
    /// finish before it is not started.
    pub lease_expires_at: DateTime<Utc>,
}

/// How often to probe, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSchedule {
    pub initial: Duration,
    pub max: Duration,
    /// How long a failed run is still probed (every `max`), so that its
    /// incident resolves itself once the app grants the access.
    pub resolve_window: Duration,
}

impl ProbeSchedule {
    /// The wait after `attempts` attempts: doubling from `initial`, capped.
    pub fn after(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(16));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// When to probe `run` next after `attempts` attempts, or `None` when
    /// probing is over: access matched (`matched`), the run ended otherwise
    /// than failing, or it failed longer than `resolve_window` ago.
    pub fn next_due(
        &self,
        run: &Run,
        attempts: u32,
        matched: bool,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let later = |wait: Duration| Some(now + chrono::Duration::from_std(wait).ok()?);
        match run.status {
            _ if matched => None,
            RunStatus::Open => {
                let next = later(self.after(attempts))?;
                // One last look just before the next deadline (the one the
                // sweeper will judge) is worth more than none; past it, keep
                // looking until the sweeper decides.
                let deadline = run.deadline_at.unwrap_or(run.access_due_at);
                Some(if now < deadline {
                    next.min(deadline)
                } else {
                    next
                })
            }
            RunStatus::Failed => {
                let failed_at = run.closed_at.unwrap_or(now);
                let until = failed_at + chrono::Duration::from_std(self.resolve_window).ok()?;
                later(self.max).filter(|next| *next <= until)
            }
            RunStatus::Succeeded | RunStatus::Superseded => None,
        }
    }
}

impl fmt::Display for ProbeSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} doubling to {}, and for {} after a run failed",
            humantime::format_duration(self.initial),
            humantime::format_duration(self.max),
            humantime::format_duration(self.resolve_window)
        )
    }
}

impl Run {
    /// Whether a probe's view is the access this run expects.
    pub fn probe_matches(&self, attempt: &ProbeAttempt) -> bool {
        if attempt.error.is_some() {
            return false;
        }
        // Never "accepted without expectation", as an SDK report can be: a
        // probe may run before the app handled the event, and would accept
        // the customer's old plan. It waits for a known expectation.
        self.verdict(
            attempt.observed_plan.as_deref(),
            attempt.observed_features.as_deref(),
        ) == Verdict::Matches
    }

    /// Applies a probe's view of the customer's access. A match asserts
    /// access with source `probe`, exactly as an SDK report would (closing
    /// the run, or resolving a failed run's incidents). A mismatch or a
    /// failed probe only updates what the run last saw, so the evidence
    /// shows it, without one timeline entry per attempt.
    pub fn observe(&mut self, attempt: &ProbeAttempt, now: DateTime<Utc>) -> Option<ReportOutcome> {
        if self.probe_matches(attempt) {
            let report = StageReport {
                observed_plan: attempt.observed_plan.clone(),
                observed_features: attempt.observed_features.clone(),
                deploy_sha: attempt.deploy_sha.clone(),
                expected_plan: None,
                trace_id: None,
                evidence: Some(json!({
                    "probe": {
                        "url": attempt.url,
                        "status_code": attempt.status_code,
                        "duration_ms": attempt.duration_ms,
                    }
                })),
            };
            return self
                .report(Stage::AccessAsserted, report, Source::Probe, now)
                .ok();
        }
        self.note_probe(attempt);
        None
    }

    /// Keeps what a probe saw on an open run (so that the evidence shows
    /// it), without counting it as a match.
    pub fn note_probe(&mut self, attempt: &ProbeAttempt) {
        if self.status != RunStatus::Open {
            return;
        }
        if attempt.error.is_none() {
            if attempt.observed_plan.is_some() {
                self.observed_plan = attempt.observed_plan.clone();
            }
            if attempt.observed_features.is_some() {
                self.observed_features = attempt.observed_features.clone();
            }
        }
        if self.deploy_sha.is_none() {
            self.deploy_sha = attempt.deploy_sha.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Expectation;
    use crate::run::tests::{spec, t0};

    fn attempt(plan: Option<&str>, error: Option<&str>) -> ProbeAttempt {
        ProbeAttempt {
            at: t0(),
            duration_ms: 12,
            url: "http://app/access/cus_1".into(),
            status_code: Some(200),
            observed_plan: plan.map(Into::into),
            observed_features: None,
            deploy_sha: Some("sha-9".into()),
            error: error.map(Into::into),
            matched: false,
        }
    }

    fn schedule() -> ProbeSchedule {
        ProbeSchedule {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(600),
            resolve_window: Duration::from_secs(3600),
        }
    }

    #[test]
    fn the_wait_doubles_and_is_capped() {
        let s = ProbeSchedule {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(30),
            ..schedule()
        };
        let secs: Vec<u64> = (1..=6).map(|n| s.after(n).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 30, 30]);
        assert_eq!(s.after(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn an_open_run_gets_a_last_look_at_its_deadline_and_more_until_swept() {
        let s = schedule();
        let run = Run::open(spec(Expectation::Plan("pro".into())), t0()).0;
        // The deadline the sweeper judges next is `reconciled`'s (2 min):
        // the last look comes before it, not before the access deadline.
        let late = t0() + chrono::Duration::seconds(110);
        assert_eq!(
            s.next_due(&run, 1, false, late),
            Some(run.reconciled_due_at)
        );
        let past = run.reconciled_due_at + chrono::Duration::seconds(1);
        assert_eq!(
            s.next_due(&run, 1, false, past),
            Some(past + chrono::Duration::seconds(60))
        );
        assert_eq!(
            s.next_due(&run, 1, true, late),
            None,
            "a match ends probing"
        );
    }

    #[test]
    fn a_failed_run_is_probed_within_the_resolve_window_only() {
        let s = schedule();
        let mut run = Run::open(spec(Expectation::Plan("pro".into())), t0()).0;
        let failed_at = run.access_due_at;
        run.expire(failed_at, None).unwrap();
        assert_eq!(
            s.next_due(&run, 9, false, failed_at),
            Some(failed_at + chrono::Duration::seconds(600))
        );
        let near_end = failed_at + chrono::Duration::seconds(3500);
        assert_eq!(s.next_due(&run, 9, false, near_end), None);

        let mut done = Run::open(spec(Expectation::Plan("pro".into())), t0()).0;
        done.observe(&attempt(Some("pro"), None), t0()).unwrap();
        assert_eq!(
            s.next_due(&done, 1, false, t0()),
            None,
            "a succeeded run is done"
        );
    }

    #[test]
    fn a_probe_never_accepts_without_an_expectation() {
        let unknown = Expectation::Unknown {
            reason: "no line items".into(),
        };
        let mut run = Run::open(spec(unknown), t0()).0;
        // The customer's plan before the app handled the checkout.
        assert!(run.observe(&attempt(Some("free"), None), t0()).is_none());
        assert_eq!(run.status, RunStatus::Open);
    }

    #[test]
    fn a_matching_probe_closes_the_run_as_the_probe() {
        let mut run = Run::open(spec(Expectation::Plan("pro".into())), t0()).0;
        let out = run.observe(&attempt(Some("pro"), None), t0()).unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(out.timeline[0].source, Source::Probe);
        assert_eq!(run.deploy_sha.as_deref(), Some("sha-9"));
    }

    #[test]
    fn a_mismatch_or_failure_only_updates_what_was_seen() {
        let mut run = Run::open(spec(Expectation::Plan("pro".into())), t0()).0;
        assert!(run.observe(&attempt(Some("starter"), None), t0()).is_none());
        assert_eq!(run.observed_plan.as_deref(), Some("starter"));
        assert_eq!(run.status, RunStatus::Open);
        assert!(
            run.observe(&attempt(None, Some("timed out after 5s")), t0())
                .is_none()
        );
        assert_eq!(
            run.observed_plan.as_deref(),
            Some("starter"),
            "a failure does not erase"
        );
        assert_eq!(
            run.stage,
            Stage::Received,
            "a probe says nothing about reconciliation"
        );
    }

    #[test]
    fn attempts_describe_themselves_for_evidence() {
        assert_eq!(
            attempt(None, Some("timed out after 5s")).describe(),
            "the last probe failed: timed out after 5s"
        );
        assert_eq!(
            attempt(Some("starter"), None).describe(),
            "the last probe saw plan starter"
        );
    }
}
