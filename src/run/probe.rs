//! What a probe of the app's access endpoint saw, and what that does to a
//! run: a match asserts access as an SDK report would; anything else only
//! updates what the run last saw.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Outcome, ReportOutcome, Run, RunStatus, Source, Stage, StageReport, TimelineEntry, Verdict,
};
use crate::names::named_enum;

named_enum! {
    /// When a run starts being probed.
    ProbeStart, "probe start" {
        Open => "open",
        Reconciled => "reconciled",
    }
}

/// One probe of the app's access endpoint, as recorded on the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProbeAttempt {
    #[serde(with = "crate::time::millis")]
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

/// What a probe did to a run (see [`Run::observe`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// The access matched: asserted as an SDK report would.
    Asserted(ReportOutcome),
    /// Anything else: kept as what the run last saw, with a timeline entry
    /// when the probe saw other access than the run last saw.
    Noted(Option<TimelineEntry>),
}

impl ProbeAttempt {
    /// Where the probe looked and what it got, for a timeline entry.
    fn summary(&self) -> serde_json::Value {
        json!({
            "url": self.url,
            "status_code": self.status_code,
            "duration_ms": self.duration_ms,
        })
    }

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
    /// the run, or resolving a failed run's incidents). Anything else only
    /// updates what the run last saw, so the evidence shows it; an open
    /// run's timeline gains a `plan_mismatch` entry when the probe saw
    /// access that mismatches the expectation and differs from what the run
    /// last saw, not one entry per attempt.
    pub fn observe(&mut self, attempt: &ProbeAttempt, now: DateTime<Utc>) -> Observation {
        if self.probe_matches(attempt)
            && let Ok(outcome) = self.report(
                Stage::AccessAsserted,
                StageReport {
                    observed_plan: attempt.observed_plan.clone(),
                    observed_features: attempt.observed_features.clone(),
                    deploy_sha: attempt.deploy_sha.clone(),
                    expected_plan: None,
                    trace_id: None,
                    evidence: Some(json!({ "probe": attempt.summary() })),
                },
                Source::Probe,
                now,
            )
        {
            return Observation::Asserted(outcome);
        }
        let sorted = |features: &Option<Vec<String>>| {
            features.clone().map(|mut f| {
                f.sort();
                f
            })
        };
        let saw_other = self.status == RunStatus::Open
            && attempt.error.is_none()
            && self.verdict(
                attempt.observed_plan.as_deref(),
                attempt.observed_features.as_deref(),
            ) == Verdict::Mismatch
            && (attempt.observed_plan != self.observed_plan
                || sorted(&attempt.observed_features) != sorted(&self.observed_features));
        self.note_probe(attempt);
        Observation::Noted(saw_other.then(|| TimelineEntry {
            at: now,
            source: Source::Probe,
            stage: Stage::AccessAsserted,
            outcome: Outcome::PlanMismatch,
            evidence: json!({
                "observed_plan": attempt.observed_plan,
                "observed_features": attempt.observed_features,
                "expected_plan": self.expected_plan,
                "expected_features": self.expected_features,
                "probe": attempt.summary(),
            }),
        }))
    }

    /// Keeps what a probe saw on an open run (so that the evidence shows
    /// it), without counting it as a match.
    pub(super) fn note_probe(&mut self, attempt: &ProbeAttempt) {
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
pub(crate) mod tests {
    use super::super::tests::{spec, t0};
    use super::super::*;

    pub(crate) fn attempt(plan: Option<&str>, error: Option<&str>) -> ProbeAttempt {
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

    #[test]
    fn a_probe_never_accepts_without_an_expectation() {
        let unknown = Expectation::Unknown {
            reason: "no line items".into(),
        };
        let mut run = Run::open(spec(unknown), t0()).0;
        // The customer's plan before the app handled the checkout: not a
        // mismatch either, with nothing to compare against.
        assert_eq!(
            run.observe(&attempt(Some("free"), None), t0()),
            Observation::Noted(None)
        );
        assert_eq!(run.status, RunStatus::Open);
    }

    #[test]
    fn a_matching_probe_closes_the_run_as_the_probe() {
        let mut run = Run::open(spec(Expectation::Plan("pro".into())), t0()).0;
        let Observation::Asserted(out) = run.observe(&attempt(Some("pro"), None), t0()) else {
            panic!("a match asserts access");
        };
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(out.timeline[0].source, Source::Probe);
        assert_eq!(run.deploy_sha.as_deref(), Some("sha-9"));
    }

    #[test]
    fn a_mismatch_or_failure_only_updates_what_was_seen() {
        let mut run = Run::open(spec(Expectation::Plan("pro".into())), t0()).0;
        // The first sight of the wrong plan goes on the timeline...
        let Observation::Noted(Some(entry)) = run.observe(&attempt(Some("starter"), None), t0())
        else {
            panic!("a mismatch is noted on the timeline");
        };
        assert_eq!(entry.outcome, Outcome::PlanMismatch);
        assert_eq!(entry.source, Source::Probe);
        assert_eq!(entry.evidence["observed_plan"], "starter");
        assert_eq!(entry.evidence["expected_plan"], "pro");
        assert_eq!(run.observed_plan.as_deref(), Some("starter"));
        assert_eq!(run.status, RunStatus::Open);
        // ...once: the same view again adds nothing, another plan does.
        assert_eq!(
            run.observe(&attempt(Some("starter"), None), t0()),
            Observation::Noted(None)
        );
        assert_eq!(
            run.observe(&attempt(None, Some("timed out after 5s")), t0()),
            Observation::Noted(None)
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
