//! The app's word and the other side's delivery: stage reports move a run
//! forward (or only land on its timeline), and a second delivery of the
//! event fills in what the run did not know yet.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{
    Expectation, Outcome, ProbeStart, ReportError, ReportOutcome, Run, RunSpec, RunStatus, Source,
    Stage, StageReport, TimelineEntry, Verdict, sorted_set,
};

impl Run {
    /// The same event arrived again from the other side (the SDK opened the
    /// run and then Stripe delivered it, or the reverse). Fills in what the
    /// run did not know yet; never overrides what it knew. Returns a timeline
    /// entry when Stripe delivered (a fact worth recording) or something was
    /// filled in; an identical SDK call changes nothing.
    pub fn merge(&mut self, spec: RunSpec, now: DateTime<Utc>) -> Option<TimelineEntry> {
        let mut filled = Vec::new();
        if self.customer_id.is_none() && spec.customer_id.is_some() {
            self.customer_id = spec.customer_id;
            filled.push("customer_id");
        }
        if self.subscription_id.is_none() && spec.subscription_id.is_some() {
            self.subscription_id = spec.subscription_id;
            filled.push("subscription_id");
        }
        if self.livemode.is_none() && spec.livemode.is_some() {
            self.livemode = spec.livemode;
            filled.push("livemode");
        }
        // Stripe's `created` is the true time of the event; the SDK's open
        // only stood in for it.
        if spec.source == Source::Stripe
            && let Some(created) = spec.event_created_at
            && created != self.event_created_at
        {
            self.event_created_at = created;
            filled.push("event_created_at");
        }
        if !self.expectation().is_known() && spec.expectation.is_known() {
            self.set_expectation(spec.expectation);
            filled.push("expectation");
        }
        if filled.is_empty() && spec.source != Source::Stripe {
            return None;
        }
        Some(TimelineEntry {
            at: now,
            source: spec.source,
            stage: Stage::Received,
            outcome: Outcome::Confirmed,
            evidence: json!({ "filled_in": filled }),
        })
    }

    /// Applies a stage report. Every report lands on the timeline; the run's
    /// stage only ever moves forward, and only an open run moves at all.
    pub fn report(
        &mut self,
        stage: Stage,
        report: StageReport,
        source: Source,
        now: DateTime<Utc>,
    ) -> Result<ReportOutcome, ReportError> {
        if !stage.is_reportable() {
            return Err(ReportError::NotReportable(stage));
        }
        let observed = report
            .observed_plan
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        let features = report.observed_features.as_deref().map(|f| {
            sorted_set(f)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        });
        if stage == Stage::AccessAsserted && observed.is_none() && features.is_none() {
            return Err(ReportError::MissingObservedPlan);
        }

        let mut evidence = json!({
            "observed_plan": observed,
            "observed_features": features,
            "deploy_sha": report.deploy_sha,
            "reported_expected_plan": report.expected_plan,
            "evidence": report.evidence,
        });
        if let Some(trace_id) = &report.trace_id {
            evidence["trace_id"] = json!(trace_id);
        }
        let was_open = self.status == RunStatus::Open;
        if was_open {
            if let Some(sha) = report.deploy_sha.as_ref().filter(|s| !s.trim().is_empty()) {
                self.deploy_sha = Some(sha.trim().to_owned());
            }
            if !self.expectation().is_known()
                && let Some(plan) = report
                    .expected_plan
                    .as_ref()
                    .filter(|p| !p.trim().is_empty())
            {
                self.set_expectation(Expectation::Plan(plan.trim().to_owned()));
            }
        }
        // The latest word on the customer's access, kept even after the run
        // ends so that the incident and the dashboard show it.
        if observed.is_some() {
            self.observed_plan = observed.clone();
        }
        if features.is_some() {
            self.observed_features = features.clone();
        }

        let verdict = (stage == Stage::AccessAsserted)
            .then(|| self.verdict(observed.as_deref(), features.as_deref()));
        let mut timeline = Vec::new();
        let mut access_now_matches = false;
        let outcome = if !was_open {
            if self.status == RunStatus::Failed && verdict == Some(Verdict::Matches) {
                access_now_matches = true;
                Outcome::AccessNowMatches
            } else {
                Outcome::RecordedAfterClose
            }
        } else {
            match verdict {
                Some(Verdict::Matches) => Outcome::Matched,
                Some(Verdict::AcceptedWithoutExpectation) => Outcome::AcceptedWithoutExpectation,
                Some(Verdict::Mismatch) => Outcome::PlanMismatch,
                None if stage > self.stage => Outcome::Advanced,
                None => Outcome::Recorded,
            }
        };
        if outcome == Outcome::PlanMismatch {
            evidence["expected_plan"] = json!(self.expected_plan);
            evidence["expected_features"] = json!(self.expected_features);
        }
        timeline.push(TimelineEntry {
            at: now,
            source,
            stage,
            outcome,
            evidence,
        });

        let mut start_probing = false;
        match outcome {
            Outcome::Advanced => {
                start_probing =
                    stage == Stage::Reconciled && self.probe_start == Some(ProbeStart::Reconciled);
                self.stage = stage;
                self.deadline_at = Some(self.next_deadline());
            }
            // The app reports what access the customer has, so it has
            // processed the event: count that as reconciliation. The run then
            // waits for the access deadline, and if it fails, it fails as
            // "access did not change", showing the wrong plan.
            Outcome::PlanMismatch if self.stage < Stage::Reconciled => {
                self.stage = Stage::Reconciled;
                self.deadline_at = Some(self.next_deadline());
            }
            Outcome::Matched | Outcome::AcceptedWithoutExpectation => {
                self.stage = Stage::Closed;
                self.status = RunStatus::Succeeded;
                self.deadline_at = None;
                self.closed_at = Some(now);
                timeline.push(TimelineEntry {
                    at: now,
                    source,
                    stage: Stage::Closed,
                    outcome: Outcome::Succeeded,
                    evidence: json!({
                        "plan": self.observed_plan,
                        "features": self.observed_features,
                    }),
                });
            }
            _ => {}
        }
        Ok(ReportOutcome {
            timeline,
            access_now_matches,
            start_probing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{access, pro_run, reconcile, secs, spec, t0};
    use super::super::*;

    #[test]
    fn happy_path_closes_succeeded() {
        let mut run = pro_run();
        reconcile(&mut run, secs(5));
        assert_eq!(run.stage, Stage::Reconciled);
        assert_eq!(run.deadline_at, Some(secs(600)));
        let out = run
            .report(Stage::AccessAsserted, access("pro"), Source::Sdk, secs(9))
            .unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.stage, Stage::Closed);
        assert_eq!(run.deadline_at, None);
        assert_eq!(run.closed_at, Some(secs(9)));
        let outcomes: Vec<_> = out.timeline.iter().map(|e| e.outcome).collect();
        assert_eq!(outcomes, [Outcome::Matched, Outcome::Succeeded]);
    }

    #[test]
    fn mismatch_is_recorded_and_run_stays_open() {
        let mut run = pro_run();
        let out = run
            .report(
                Stage::AccessAsserted,
                access("starter"),
                Source::Sdk,
                secs(5),
            )
            .unwrap();
        assert_eq!(out.timeline[0].outcome, Outcome::PlanMismatch);
        assert_eq!(run.status, RunStatus::Open);
        assert_eq!(
            run.stage,
            Stage::Reconciled,
            "an access report implies reconciliation"
        );
        assert_eq!(run.deadline_at, Some(secs(600)));
        let (missed, _) = run.expire(secs(600)).unwrap();
        assert_eq!(missed.kind, Failure::AccessNotChanged);
        assert_eq!(run.observed_plan.as_deref(), Some("starter"));
    }

    #[test]
    fn stage_never_moves_backwards_and_repeats_are_recorded() {
        let mut run = pro_run();
        reconcile(&mut run, secs(1));
        let again = reconcile(&mut run, secs(2));
        assert_eq!(again.timeline[0].outcome, Outcome::Recorded);
        assert_eq!(run.stage, Stage::Reconciled);
    }

    #[test]
    fn access_before_reconciled_still_closes_the_run() {
        let mut run = pro_run();
        run.report(Stage::AccessAsserted, access("pro"), Source::Sdk, secs(1))
            .unwrap();
        let late = reconcile(&mut run, secs(2));
        assert_eq!(late.timeline[0].outcome, Outcome::RecordedAfterClose);
        assert_eq!(run.status, RunStatus::Succeeded);
    }

    #[test]
    fn unreportable_stages_and_missing_plan_are_refused() {
        let mut run = pro_run();
        assert_eq!(
            run.report(Stage::Closed, StageReport::default(), Source::Sdk, secs(1)),
            Err(ReportError::NotReportable(Stage::Closed))
        );
        assert_eq!(
            run.report(
                Stage::AccessAsserted,
                StageReport::default(),
                Source::Sdk,
                secs(1)
            ),
            Err(ReportError::MissingObservedPlan)
        );
        assert_eq!(run, pro_run_with_id(run.id));
    }

    #[test]
    fn unknown_expectation_is_filled_by_the_report() {
        let mut run = Run::open(
            spec(Expectation::Unknown {
                reason: "no line items".into(),
            }),
            t0(),
        )
        .0;
        let report = StageReport {
            expected_plan: Some("pro".into()),
            ..Default::default()
        };
        run.report(Stage::Reconciled, report, Source::Sdk, secs(1))
            .unwrap();
        assert_eq!(run.expected_plan.as_deref(), Some("pro"));
        assert_eq!(run.expected_plan_reason, None);
        run.report(
            Stage::AccessAsserted,
            access("starter"),
            Source::Sdk,
            secs(2),
        )
        .unwrap();
        assert_eq!(run.status, RunStatus::Open);
    }

    #[test]
    fn unknown_expectation_accepts_a_paid_plan_but_not_none() {
        let unknown = || {
            Run::open(
                spec(Expectation::Unknown {
                    reason: "no line items".into(),
                }),
                t0(),
            )
            .0
        };
        let mut run = unknown();
        run.report(Stage::AccessAsserted, access("none"), Source::Sdk, secs(1))
            .unwrap();
        assert_eq!(run.status, RunStatus::Open);
        let mut run = unknown();
        run.report(Stage::AccessAsserted, access("pro"), Source::Sdk, secs(1))
            .unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
    }

    #[test]
    fn merge_fills_gaps_and_never_overrides() {
        let mut run = Run::open(
            RunSpec {
                source: Source::Sdk,
                subscription_id: None,
                ..spec(Expectation::Unknown { reason: "r".into() })
            },
            t0(),
        )
        .0;
        let entry = run
            .merge(spec(Expectation::Plan("pro".into())), secs(1))
            .unwrap();
        assert_eq!(entry.source, Source::Stripe);
        assert_eq!(run.expected_plan.as_deref(), Some("pro"));
        assert_eq!(run.subscription_id.as_deref(), Some("sub_1"));
        let sdk_again = RunSpec {
            source: Source::Sdk,
            ..spec(Expectation::Plan("starter".into()))
        };
        assert_eq!(run.merge(sdk_again, secs(2)), None);
        assert_eq!(run.expected_plan.as_deref(), Some("pro"));
    }

    #[test]
    fn a_failed_run_learns_when_access_matches_later() {
        let mut run = pro_run();
        run.expire(secs(600)).unwrap();
        let out = run
            .report(Stage::AccessAsserted, access("pro"), Source::Sdk, secs(700))
            .unwrap();
        assert!(out.access_now_matches);
        assert_eq!(run.status, RunStatus::Failed);
    }

    fn pro_run_with_id(id: Uuid) -> Run {
        Run { id, ..pro_run() }
    }
}
