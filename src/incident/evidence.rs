//! The evidence of a run's incident: what an operator needs to act, each value
//! that is missing with the reason it is, and the steps to recover the
//! customer's access. One struct, serialised as the API, the alerts and the
//! templates show it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::run::{Failure, Missed, ProbeAttempt, Realm, Run, Stage};
use crate::time::rfc3339;

/// Everything an incident says about its run, in the order the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunEvidence {
    /// The missing outcome in a sentence.
    pub summary: String,
    pub project: String,
    pub workflow: String,
    pub run_id: Uuid,
    pub event_id: String,
    pub event_type: String,
    pub livemode: Option<bool>,
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    pub expected_plan: Option<String>,
    pub expected_plan_reason: Option<String>,
    pub expected_features: Option<Vec<String>>,
    #[serde(default, with = "crate::time::millis::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub keep_access_until: Option<DateTime<Utc>>,
    pub observed_plan: Option<String>,
    pub observed_plan_reason: Option<String>,
    pub observed_features: Option<Vec<String>>,
    pub deploy_sha: Option<String>,
    pub deploy_sha_reason: Option<String>,
    /// The stage the run had reached.
    pub last_stage: Stage,
    /// The stage whose deadline passed.
    pub missed_stage: Stage,
    #[serde(with = "crate::time::millis")]
    #[schema(value_type = String, format = DateTime)]
    pub deadline_at: DateTime<Utc>,
    #[serde(with = "crate::time::millis")]
    #[schema(value_type = String, format = DateTime)]
    pub run_opened_at: DateTime<Utc>,
    pub last_probe: Option<ProbeAttempt>,
    pub last_probe_reason: Option<String>,
    /// What an operator should do to recover the customer's access, most
    /// direct first.
    pub guidance: Vec<String>,
    pub drill: bool,
    pub drill_id: Option<Uuid>,
}

impl RunEvidence {
    /// The evidence about what `run` missed.
    pub fn of(run: &Run, missed: &Missed, last_probe: Option<&ProbeAttempt>) -> RunEvidence {
        let kind = missed.kind;
        let probed = run.probe_start.is_some();
        let observed_plan_reason = match (&run.observed_plan, &run.observed_features, last_probe) {
            (Some(_), _, _) => None,
            (None, Some(_), _) => Some("the app reported features, not a plan".to_owned()),
            (None, None, Some(probe)) => Some(format!(
                "not observed: {}, and the app reported no access_asserted",
                probe.describe()
            )),
            (None, None, None) if probed => Some(
                "not observed: no probe ran before the deadline, and the app reported no access_asserted"
                    .to_owned(),
            ),
            (None, None, None) => Some(
                "the app reported no access_asserted for this event, and no active probe is configured"
                    .to_owned(),
            ),
        };
        let last_probe_reason = match (last_probe, probed) {
            (Some(_), _) => None,
            (None, true) => Some("no probe ran before the deadline"),
            (None, false) => Some("no active probe is configured for this workflow"),
        };
        let deploy_sha_reason = run.deploy_sha.is_none().then_some(if probed {
            "neither an SDK report nor a probe response for this run carried a deploy SHA"
        } else {
            "no SDK report for this run carried a deploy_sha"
        });
        RunEvidence {
            summary: summary(run, kind),
            project: run.project.clone(),
            workflow: run.workflow.clone(),
            run_id: run.id,
            event_id: run.event_id.clone(),
            event_type: run.event_type.clone(),
            livemode: run.livemode,
            customer_id: run.customer_id.clone(),
            subscription_id: run.subscription_id.clone(),
            expected_plan: run.expected_plan.clone(),
            expected_plan_reason: run.expected_plan_reason.clone(),
            expected_features: run.expected_features.clone(),
            keep_access_until: run.keep_access_until,
            observed_plan: run.observed_plan.clone(),
            observed_plan_reason,
            observed_features: run.observed_features.clone(),
            deploy_sha: run.deploy_sha.clone(),
            deploy_sha_reason: deploy_sha_reason.map(str::to_owned),
            last_stage: run.stage,
            missed_stage: missed.stage,
            deadline_at: missed.deadline,
            run_opened_at: run.opened_at,
            last_probe: last_probe.cloned(),
            last_probe_reason: last_probe_reason.map(str::to_owned),
            guidance: guidance(run, kind),
            drill: run.realm().is_drill(),
            drill_id: run.drill_id,
        }
    }
}

fn or_unknown(value: &Option<String>, what: &str) -> String {
    value.clone().unwrap_or_else(|| format!("(unknown {what})"))
}

fn summary(run: &Run, kind: Failure) -> String {
    let told = outcome(run, kind);
    match run.realm() {
        Realm::Drill(_) => format!("DRILL, no real customer: {told}"),
        Realm::Customer => told,
    }
}

fn outcome(run: &Run, kind: Failure) -> String {
    let customer = or_unknown(&run.customer_id, "customer");
    let event = &run.event_id;
    let shown = match (&run.observed_plan, &run.observed_features) {
        (Some(plan), _) => format!("the app shows {plan}"),
        (None, Some(features)) => format!("the app shows features [{}]", features.join(", ")),
        (None, None) => "the app never confirmed it".to_owned(),
    };
    match kind {
        Failure::ReconciliationMissing => {
            format!(
                "{event} for customer {customer} was not reconciled by the app before its deadline"
            )
        }
        Failure::AccessNotRevoked => {
            format!("customer {customer} should have no paid access after {event}, but {shown}")
        }
        Failure::AccessRevokedEarly => format!(
            "customer {customer} should keep access until {} after {event} (payment grace period), but {shown}",
            run.keep_access_until
                .as_ref()
                .map(rfc3339)
                .unwrap_or_default()
        ),
        Failure::AccessNotChanged => match &run.expected_features {
            Some(features) => format!(
                "customer {customer} should have features [{}] after {event}, but {shown}",
                features.join(", ")
            ),
            None => format!(
                "customer {customer} should have plan {} after {event}, but {shown}",
                or_unknown(&run.expected_plan, "plan")
            ),
        },
    }
}

/// Steps an operator can take to recover the customer's access, most direct
/// first, with the ids already filled in.
fn guidance(run: &Run, kind: Failure) -> Vec<String> {
    let customer = or_unknown(&run.customer_id, "customer");
    let subscription = run
        .subscription_id
        .clone()
        .unwrap_or_else(|| format!("of customer {customer}"));
    let expected = or_unknown(&run.expected_plan, "plan");
    let mut steps = Vec::new();
    if let Realm::Drill(drill) = run.realm() {
        steps.push(format!(
            "This incident comes from failure drill {drill}: no customer is affected, and the drill resolves it itself. The steps below are what a real incident of this kind would ask for."
        ));
    }
    match kind {
        Failure::ReconciliationMissing => {
            steps.push(format!(
                "Check the app's Stripe webhook handler and its job queue for {} ({}): it was accepted by Assay but the app never reported `reconciled`.",
                run.event_id, run.event_type
            ));
            steps.push(format!(
                "Re-run reconciliation for subscription {subscription}: fetch it from Stripe and update the app's subscription row, then report `reconciled` for {}.",
                run.event_id
            ));
        }
        Failure::AccessNotRevoked => {
            steps.push(format!(
                "Revoke customer {customer}'s paid access in the app: after {} ({}) they should have none{}.",
                run.event_id,
                run.event_type,
                run.observed_plan
                    .as_ref()
                    .map(|o| format!(", the app last showed `{o}`"))
                    .unwrap_or_default()
            ));
            steps.push(format!(
                "Check why the app's cancellation path did not run for subscription {subscription}, then report `access_asserted` with `none` for {}.",
                run.event_id
            ));
        }
        Failure::AccessRevokedEarly => {
            steps.push(format!(
                "Restore customer {customer}'s access now: a failed payment keeps access until the grace period ends{}.",
                run.keep_access_until
                    .as_ref()
                    .map(|u| format!(" ({})", rfc3339(u)))
                    .unwrap_or_default()
            ));
            steps.push(
                "Check the app's dunning path: it revoked on the failed payment instead of waiting for the subscription to be canceled or unpaid."
                    .to_owned(),
            );
        }
        Failure::AccessNotChanged => {
            steps.push(format!(
                "Check customer {customer}'s entitlement in the app: it should be plan `{expected}`{}.",
                run.observed_plan
                    .as_ref()
                    .map(|o| format!(", the app last showed `{o}`"))
                    .unwrap_or_default()
            ));
            steps.push(if run.probe_start.is_some() {
                format!(
                    "Re-run the access grant for subscription {subscription}; Assay keeps probing the app, and the incident resolves itself when the access matches."
                )
            } else {
                format!(
                    "Re-run the access grant for subscription {subscription}, then report `access_asserted` for {}; the incident resolves itself when the observed plan matches.",
                    run.event_id
                )
            });
        }
    }
    steps.push(format!(
        "If the app never processed the event, resend {} from the Stripe dashboard (Developers > Events) or with `stripe events resend {}`.",
        run.event_id, run.event_id
    ));
    steps.push(match &run.deploy_sha {
        Some(sha) => format!(
            "Check the app's deploy {sha} for errors in the billing path around {}.",
            rfc3339(&run.opened_at)
        ),
        None => format!(
            "Check the app's deploy that was live at {} for errors in the billing path.",
            rfc3339(&run.opened_at)
        ),
    });
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::tests::{spec, t0};
    use crate::run::{Expectation, Source, StageReport};

    /// The evidence of a probed run, key by key and in order, as the API
    /// and the alerts show it.
    #[test]
    fn evidence_serialises_as_the_api_shows_it() {
        let mut run = Run::open(spec(Expectation::Plan("pro".into())), t0()).0;
        run.probe_start = Some(crate::run::ProbeStart::Open);
        let report = StageReport {
            observed_plan: Some("starter".into()),
            ..Default::default()
        };
        run.report(Stage::AccessAsserted, report, Source::Sdk, t0())
            .unwrap();
        let probe = ProbeAttempt {
            at: t0() + chrono::Duration::milliseconds(1500),
            duration_ms: 9,
            url: "http://app/access/cus_1".into(),
            status_code: Some(200),
            observed_plan: Some("starter".into()),
            observed_features: None,
            deploy_sha: None,
            error: None,
            matched: false,
        };
        let (missed, _) = run.expire(t0() + chrono::Duration::minutes(10)).unwrap();
        let evidence = RunEvidence::of(&run, &missed, Some(&probe));
        let text = serde_json::to_string(&evidence).unwrap();
        let run_id = run.id;
        let want = format!(
            concat!(
                r#"{{"summary":"customer cus_1 should have plan pro after evt_1, but the app shows starter","#,
                r#""project":"default","workflow":"billing","run_id":"{run_id}","event_id":"evt_1","#,
                r#""event_type":"checkout.session.completed","livemode":false,"customer_id":"cus_1","#,
                r#""subscription_id":"sub_1","expected_plan":"pro","expected_plan_reason":null,"#,
                r#""expected_features":null,"keep_access_until":null,"observed_plan":"starter","#,
                r#""observed_plan_reason":null,"observed_features":null,"deploy_sha":null,"#,
                r#""deploy_sha_reason":"neither an SDK report nor a probe response for this run carried a deploy SHA","#,
                r#""last_stage":"reconciled","missed_stage":"access_asserted","deadline_at":"2026-11-23T10:10:00.000Z","#,
                r#""run_opened_at":"2026-11-23T10:00:00.000Z","last_probe":{{"at":"2026-11-23T10:00:01.500Z","#,
                r#""duration_ms":9,"url":"http://app/access/cus_1","status_code":200,"observed_plan":"starter","#,
                r#""observed_features":null,"deploy_sha":null,"error":null,"matched":false}},"last_probe_reason":null,"#,
                r#""guidance":["Check customer cus_1's entitlement in the app: it should be plan `pro`, the app last showed `starter`.","#,
                r#""Re-run the access grant for subscription sub_1; Assay keeps probing the app, and the incident resolves itself when the access matches.","#,
                r#""If the app never processed the event, resend evt_1 from the Stripe dashboard (Developers > Events) or with `stripe events resend evt_1`.","#,
                r#""Check the app's deploy that was live at 2026-11-23T10:00:00.000Z for errors in the billing path."],"#,
                r#""drill":false,"drill_id":null}}"#
            ),
            run_id = run_id,
        );
        assert_eq!(text, want);
        let back: RunEvidence = serde_json::from_str(&text).unwrap();
        assert_eq!(back, evidence, "what is stored reads back the same");
    }
}
