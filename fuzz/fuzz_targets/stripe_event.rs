//! The event decoder: `StripeEvent::parse` on a webhook body, then what
//! ingest does with an event that decodes (`drill_of`, `run_facts` under the
//! project's access policy), as `assay::ingest::stripe_event` calls them.
#![no_main]

use std::collections::HashMap;
use std::sync::LazyLock;

use assay::config::{Config, ProjectConfig, Sources};
use assay::run::{Expectation, NO_PLAN};
use assay::stripe::StripeEvent;
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;

/// The event types that open a run; every other type must open none.
const RUN_TYPES: [&str; 11] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "entitlements.active_entitlement_summary.updated",
];

/// Projects as an operator configures them, loaded through the real loader so
/// the policy is what `ProjectConfig::access_policy` gives in production: the
/// seeds' price, lookup key and product mapped; the defaults (7 days of
/// grace, paused loses access); the other choices; and the extremes the
/// loader accepts (the shortest and the longest grace period).
static PROJECTS: LazyLock<Vec<ProjectConfig>> = LazyLock::new(|| {
    let plans = "price_1PgafmB7WZ01zgkW6dKueIc5=pro,lookup_key=team,prod_QXg1hqf4jFNsqG=starter";
    let settings: [&[(&str, &str)]; 4] = [
        &[("ASSAY_PLAN_MAP", plans)],
        &[
            ("ASSAY_PLAN_MAP", plans),
            ("ASSAY_PLAN_PRIORITY", "team,pro"),
            ("ASSAY_GRACE_PERIOD", "1h"),
            ("ASSAY_PAUSED_KEEPS_ACCESS", "true"),
        ],
        &[("ASSAY_PLAN_MAP", plans), ("ASSAY_GRACE_PERIOD", "1ns")],
        // u64::MAX seconds: humantime's largest duration.
        &[
            ("ASSAY_PLAN_MAP", plans),
            ("ASSAY_GRACE_PERIOD", "18446744073709551615s"),
        ],
    ];
    settings
        .iter()
        .map(|vars| {
            let env: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let mut config = Config::load(Sources {
                file: None,
                env: &env,
            })
            .expect("the fuzz target's own settings load");
            config
                .projects
                .remove("default")
                .expect("no file: `default`")
        })
        .collect()
});

/// A fixed clock, so that a crash replays: an hour after the seeds' events.
fn fixed_now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_229_200, 0).expect("in range")
}

fn check_facts(event: &StripeEvent, project: &ProjectConfig, now: DateTime<Utc>) {
    let policy = project.access_policy();
    let Some(facts) = event.run_facts(&policy, now) else {
        return;
    };
    assert!(
        RUN_TYPES.contains(&event.event_type.as_str()),
        "`{}` opened a run",
        event.event_type
    );
    // An id the run is matched by is never empty.
    assert_ne!(facts.customer_id.as_deref(), Some(""));
    assert_ne!(facts.subscription_id.as_deref(), Some(""));
    match &facts.expectation {
        // A plan comes from the plan map, or is `none`: never from the event.
        Expectation::Plan(plan) => assert!(
            plan == NO_PLAN || policy.plans.entries().values().any(|p| p == plan),
            "plan `{plan}` is not in the plan map"
        ),
        Expectation::KeepAccess { plan, until } => {
            assert!(*until > now, "grace that is already over");
            if let Some(plan) = plan {
                assert!(policy.plans.entries().values().any(|p| p == plan));
            }
        }
        Expectation::Features(_) | Expectation::Unknown { .. } => {}
    }
    if event.event_type == "customer.subscription.deleted" {
        assert_eq!(facts.expectation, Expectation::Plan(NO_PLAN.into()));
    }
}

fuzz_target!(|body: &[u8]| {
    let Ok(event) = StripeEvent::parse(body) else {
        return;
    };
    // Ingest stores the body with `from_utf8_lossy`, trusting that a body
    // that decodes is UTF-8 already: nothing may be lost in storing it.
    assert!(
        std::str::from_utf8(body).is_ok(),
        "decoded a non-UTF-8 body"
    );
    for text in [&event.id, &event.event_type] {
        assert!(!text.is_empty() && text.len() <= 255, "{text:?}");
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }

    if let Ok(Some(_)) = assay::drill::drill_of(&event) {
        assert_eq!(
            event.livemode,
            Some(false),
            "a live event taken for a drill"
        );
    }

    for project in PROJECTS.iter() {
        check_facts(&event, project, fixed_now());
        // At the event's own time too: inside any grace period.
        if let Some(created) = event.created_at() {
            check_facts(&event, project, created);
        }
    }
});
