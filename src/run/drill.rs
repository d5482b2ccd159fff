//! What a failure drill does to its run: its probe never counts as a match,
//! and a drill that breaks off ends its run without an incident.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Outcome, ProbeAttempt, Run, RunStatus, Source, Stage, TimelineEntry};

impl Run {
    /// What a drill's probe saw, kept on the drill's run as the app's
    /// answer but never as a match: the drill rehearses access that did not
    /// change, whatever the app answers for a customer it has never seen.
    /// The run stays open, for the sweeper to fail.
    pub fn observe_for_drill(
        &mut self,
        attempt: &ProbeAttempt,
        now: DateTime<Utc>,
    ) -> TimelineEntry {
        self.note_probe(attempt);
        TimelineEntry {
            at: now,
            source: Source::Drill,
            stage: Stage::AccessAsserted,
            outcome: Outcome::DrillMismatch,
            evidence: json!({
                "probe": {
                    "url": attempt.url,
                    "status_code": attempt.status_code,
                    "observed_plan": attempt.observed_plan,
                    "error": attempt.error,
                },
                "note": "a drill counts whatever the app answers as access that did not change",
            }),
        }
    }

    /// Ends a drill's run that is still open, without an incident, when
    /// the drill broke off before the sweeper judged it. `None` when the
    /// run has already ended, or is a customer's.
    pub fn end_for_drill(&mut self, now: DateTime<Utc>) -> Option<TimelineEntry> {
        if !self.realm().is_drill() || self.status != RunStatus::Open {
            return None;
        }
        self.status = RunStatus::Failed;
        self.deadline_at = None;
        self.closed_at = Some(now);
        Some(TimelineEntry {
            at: now,
            source: Source::Drill,
            stage: self.stage,
            outcome: Outcome::EndedByDrill,
            evidence: json!({ "reason": "the drill broke off before the sweeper judged the run" }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Realm;
    use super::super::probe::tests::attempt;
    use super::super::tests::{pro_run, t0};
    use super::*;

    #[test]
    fn a_drills_probe_is_seen_but_never_matches() {
        let mut run = Run {
            drill_id: Some(uuid::Uuid::now_v7()),
            ..pro_run()
        };
        let entry = run.observe_for_drill(&attempt(Some("pro"), None), t0());
        assert_eq!(entry.outcome, Outcome::DrillMismatch);
        assert_eq!(run.status, RunStatus::Open);
        assert_eq!(run.observed_plan.as_deref(), Some("pro"));
    }

    #[test]
    fn only_a_drills_open_run_is_ended_by_its_drill() {
        let mut customer = pro_run();
        assert_eq!(customer.end_for_drill(t0()), None);
        assert_eq!(customer.status, RunStatus::Open);
        let mut drill = Run {
            drill_id: Some(uuid::Uuid::now_v7()),
            ..pro_run()
        };
        let entry = drill.end_for_drill(t0()).unwrap();
        assert_eq!(entry.outcome, Outcome::EndedByDrill);
        assert_eq!(drill.status, RunStatus::Failed);
        assert_eq!(drill.deadline_at, None);
        assert_eq!(drill.end_for_drill(t0()), None, "once");
        assert_eq!(Realm::of(drill.drill_id), drill.realm());
    }
}
