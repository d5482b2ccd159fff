//! The drill's steps, its event and marker, and the incident check, without a
//! database.

use super::*;

fn timings() -> DrillTimings {
    DrillTimings {
        deadline_ms: 2_000,
        sweep_grace_ms: 5_000,
        alert_timeout_ms: 10_000,
        plan: "pro".into(),
    }
}

fn t0() -> DateTime<Utc> {
    crate::run::tests::t0()
}

fn drill() -> Drill {
    Drill::new(
        "default",
        "billing",
        DrillTrigger::Api,
        timings(),
        None,
        t0(),
    )
}

#[test]
fn a_drill_that_passes_every_step_passes() {
    let mut d = drill();
    let mut at = t0();
    for step in DrillStep::ALL {
        assert_eq!(d.step, *step);
        at += chrono::Duration::seconds(1);
        d.apply(StepOutcome::Passed("ok".into()), at);
    }
    assert_eq!(d.status, DrillStatus::Passed);
    assert_eq!(d.steps.len(), DrillStep::ALL.len());
    assert_eq!(d.next_step_at, None);
    assert_eq!(d.finished_at, Some(at));
}

#[test]
fn a_broken_chain_skips_to_the_clean_up_and_names_the_first_break() {
    let mut d = drill();
    d.apply(
        StepOutcome::Failed {
            link: BrokenLink::IngestRefused,
            detail: "HTTP 400".into(),
            fix: "check the secret".into(),
        },
        t0(),
    );
    assert_eq!(d.step, DrillStep::Resolved);
    d.apply(StepOutcome::Passed("nothing to resolve".into()), t0());
    assert_eq!(d.status, DrillStatus::Failed);
    let broken = d.broken_link.unwrap();
    assert_eq!(broken.link, BrokenLink::IngestRefused);
    assert_eq!(broken.step, DrillStep::Ingest);
}

#[test]
fn checks_of_one_incident_go_on_after_one_fails() {
    let mut d = drill();
    d.step = DrillStep::IncidentComplete;
    d.apply(
        StepOutcome::Failed {
            link: BrokenLink::IncidentIncomplete,
            detail: "no customer".into(),
            fix: "fix the template".into(),
        },
        t0(),
    );
    assert_eq!(d.step, DrillStep::AlertDelivered);
    d.apply(
        StepOutcome::Failed {
            link: BrokenLink::AlertNotDelivered,
            detail: "down".into(),
            fix: "fix the receiver".into(),
        },
        t0(),
    );
    assert_eq!(d.step, DrillStep::Resolved);
    assert_eq!(
        d.broken_link.as_ref().unwrap().link,
        BrokenLink::IncidentIncomplete,
        "the first break is the one named"
    );
}

#[test]
fn the_text_report_names_each_step_and_the_broken_link() {
    let mut d = drill();
    d.apply(StepOutcome::Passed("accepted".into()), t0());
    d.apply(
        StepOutcome::Failed {
            link: BrokenLink::NoRun,
            detail: "no run appeared".into(),
            fix: "point the ingest URL here".into(),
        },
        t0(),
    );
    d.apply(StepOutcome::Passed("nothing to clean up".into()), t0());
    let text = d.render_text();
    assert!(text.contains("FAILED"), "{text}");
    // Times as the API and the alerts write them.
    assert!(
        text.contains("ok   2026-11-23T10:00:00.000Z  ingest"),
        "{text}"
    );
    assert!(
        text.contains("FAIL 2026-11-23T10:00:00.000Z  run_opened"),
        "{text}"
    );
    assert!(
        text.contains("Broken link: the accepted webhook opened no run (no_run"),
        "{text}"
    );
    assert!(
        text.contains("What to fix:   point the ingest URL here"),
        "{text}"
    );
}

#[test]
fn a_drill_stuck_on_a_step_runs_out_of_time_there() {
    let mut d = drill();
    d.step = DrillStep::IncidentOpened;
    let limit = chrono::Duration::from_std(d.timings.longest()).unwrap();
    assert_eq!(d.out_of_time(t0() + limit), None);
    let outcome = d
        .out_of_time(t0() + limit + chrono::Duration::seconds(1))
        .unwrap();
    let StepOutcome::Failed { link, .. } = &outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(*link, BrokenLink::SweeperLate);
    d.apply(outcome, t0() + limit);
    assert_eq!(d.step, DrillStep::Resolved, "the clean-up still runs");
    assert_eq!(d.out_of_time(t0() + limit * 2), None);
}

#[test]
fn waiting_moves_only_the_next_look() {
    let mut d = drill();
    let later = t0() + chrono::Duration::seconds(3);
    d.apply(StepOutcome::WaitUntil(later), t0());
    assert_eq!(d.step, DrillStep::Ingest);
    assert!(d.steps.is_empty());
    assert_eq!(d.next_step_at, Some(later));
}

#[test]
fn the_drill_event_is_marked_and_decodes_as_a_drill() {
    let d = drill();
    let body = serde_json::to_vec(&d.event(Some("pro_monthly"), t0())).unwrap();
    let event = StripeEvent::parse(&body).unwrap();
    assert_eq!(drill_of(&event), Ok(Some(d.id)));
    let plans: crate::plan::PlanMap = "pro_monthly=pro".parse().unwrap();
    let policy = crate::stripe::event::AccessPolicy {
        plans: &plans,
        grace_period: Duration::from_secs(60),
        paused_keeps_access: false,
    };
    let facts = event.run_facts(&policy, t0()).unwrap();
    assert_eq!(facts.customer_id.as_deref(), Some(d.customer_id.as_str()));
    assert_eq!(
        facts.subscription_id.as_deref(),
        Some(d.subscription_id.as_str())
    );
    assert_eq!(
        facts.expectation,
        crate::run::Expectation::Plan("pro".into())
    );
}

#[test]
fn half_marked_or_live_drill_events_are_refused() {
    let d = drill();
    let parse = |event: &Value| StripeEvent::parse(&serde_json::to_vec(event).unwrap());
    let mut live = d.event(None, t0());
    live["livemode"] = json!(true);
    assert!(drill_of(&parse(&live).unwrap()).is_err());
    let mut no_metadata = d.event(None, t0());
    no_metadata["data"]["object"]["metadata"] = json!({});
    assert!(drill_of(&parse(&no_metadata).unwrap()).is_err());
    let mut real_id = d.event(None, t0());
    real_id["id"] = json!("evt_1QX");
    assert!(drill_of(&parse(&real_id).unwrap()).is_err());
    let mut other_drill = d.event(None, t0());
    other_drill["data"]["object"]["metadata"][METADATA_KEY] = json!(Uuid::now_v7().to_string());
    assert!(drill_of(&parse(&other_drill).unwrap()).is_err());
    let mut real = d.event(None, t0());
    real["id"] = json!("evt_1QX");
    real["data"]["object"]["metadata"] = json!({"order": "7"});
    assert_eq!(drill_of(&parse(&real).unwrap()), Ok(None));
}
