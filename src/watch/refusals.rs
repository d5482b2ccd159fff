//! Refused deliveries: Stripe's deliveries refused (a bad signature, a
//! stale timestamp, a malformed body) with none accepted since. One
//! refusal is noise (a scanner, a test); a run of them with nothing
//! accepted is a broken link: a secret rotated on one side only, a skewed
//! clock, a proxy that rewrites requests. The evidence has the counts per
//! reason and their times, never a secret or a signature.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::{Counted, RefusalSettings, TallyEntry};
use crate::incident::{Condition, IncidentKind, ProjectFinding, RefusalReason};
use crate::run::BILLING_WORKFLOW;
use crate::time::rfc3339;

/// The resolution of a refusals incident.
pub const CLEARED: &str =
    "Stripe deliveries are accepted again, or none has been refused for the window";

fn reason_in_words(reason: RefusalReason) -> &'static str {
    match reason {
        RefusalReason::SignatureMismatch => "signature mismatch",
        RefusalReason::StaleSignature => "stale signature timestamp",
        RefusalReason::InvalidSignatureHeader => "missing or invalid Stripe-Signature header",
        RefusalReason::MalformedEvent => "malformed event",
    }
}

/// The refusals incident `history` (the project's tally) calls for at
/// `now`, if any.
pub fn assess(
    project: &str,
    history: &[TallyEntry],
    settings: &RefusalSettings,
    now: DateTime<Utc>,
) -> Option<ProjectFinding> {
    let last_accepted = history
        .iter()
        .filter(|b| b.outcome == Counted::Accepted)
        .map(|b| b.last_at)
        .max();
    let mut reasons: BTreeMap<RefusalReason, u64> = BTreeMap::new();
    let (mut first, mut last) = (None::<DateTime<Utc>>, None::<DateTime<Utc>>);
    for bucket in history {
        let Counted::Refused(reason) = bucket.outcome else {
            continue;
        };
        if last_accepted.is_some_and(|accepted| bucket.last_at <= accepted) {
            continue;
        }
        *reasons.entry(reason).or_default() += bucket.count;
        first = Some(first.map_or(bucket.first_at, |f| f.min(bucket.first_at)));
        last = Some(last.map_or(bucket.last_at, |l| l.max(bucket.last_at)));
    }
    let (first, last) = (first?, last?);
    let refused: u64 = reasons.values().sum();
    let window = Duration::from_std(settings.window).ok()?;
    if refused < settings.min || now - last > window {
        return None;
    }
    let mut by_count: Vec<(RefusalReason, u64)> = reasons.iter().map(|(r, n)| (*r, *n)).collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let main = by_count[0].0;
    let breakdown = by_count
        .iter()
        .map(|(reason, n)| format!("{n} {}", reason_in_words(*reason)))
        .collect::<Vec<_>>()
        .join(", ");
    let (first_text, last_text) = (rfc3339(&first), rfc3339(&last));
    let accepted_text = match last_accepted {
        Some(at) => format!("none accepted since {}", rfc3339(&at)),
        None => "none accepted".to_owned(),
    };
    let mut guidance: Vec<String> = by_count
        .iter()
        .map(|(reason, _)| {
            let cause = reason.likely_cause();
            let mut chars = cause.chars();
            let cause = chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default();
            format!(
                "{} ({}): {cause}.",
                reason_in_words(*reason),
                reason.as_str()
            )
        })
        .collect();
    guidance.push(format!(
        "Once fixed, Stripe's retries deliver the refused events again (for up to 3 days); resend any older ones from the Stripe dashboard (Developers > Events) or with `stripe events resend`. The endpoint is /hooks/stripe/{project}."
    ));
    Some(ProjectFinding {
        project: project.to_owned(),
        workflow: BILLING_WORKFLOW.to_owned(),
        kind: IncidentKind::StripeDeliveriesRefused,
        subject: String::new(),
        title: format!(
            "Stripe deliveries are being refused: {}",
            reason_in_words(main)
        ),
        summary: format!(
            "{refused} Stripe deliveries to project {project} were refused since {first_text}, and {accepted_text}: Assay opens no run for an event it refuses, so those customers' access goes unwatched while Stripe retries."
        ),
        seen: format!(
            "{refused} deliveries refused ({breakdown}), the first at {first_text}, the last at {last_text}"
        ),
        since: first,
        usual: last_accepted
            .map(|at| format!("the last accepted delivery came at {}", rfc3339(&at))),
        details: Condition::DeliveriesRefused {
            refused,
            reasons,
            first_refused_at: first,
            last_refused_at: last,
            last_accepted_at: last_accepted,
            window_secs: settings.window.as_secs(),
        },
        guidance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::minute_of;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn bucket(outcome: Counted, at: DateTime<Utc>, count: u64) -> TallyEntry {
        TallyEntry {
            project: "p".into(),
            outcome,
            minute: minute_of(at),
            count,
            first_at: at,
            last_at: at,
        }
    }

    fn settings() -> RefusalSettings {
        RefusalSettings {
            window: std::time::Duration::from_secs(3600),
            min: 5,
        }
    }

    const MISMATCH: Counted = Counted::Refused(RefusalReason::SignatureMismatch);

    #[test]
    fn a_run_of_refusals_with_none_accepted_names_the_reason_and_its_likely_cause() {
        let history = vec![
            bucket(Counted::Accepted, t0(), 3),
            bucket(MISMATCH, t0() + Duration::minutes(1), 199),
            bucket(
                Counted::Refused(RefusalReason::StaleSignature),
                t0() + Duration::minutes(2),
                1,
            ),
        ];
        let found = assess("p", &history, &settings(), t0() + Duration::minutes(3)).unwrap();
        assert_eq!(
            found.title,
            "Stripe deliveries are being refused: signature mismatch"
        );
        assert!(
            found
                .seen
                .starts_with("200 deliveries refused (199 signature mismatch, 1 stale")
        );
        assert!(found.guidance[0].contains("rotated on one side only"));
        assert!(found.guidance[1].contains("clock"));
        let Condition::DeliveriesRefused {
            refused, reasons, ..
        } = &found.details
        else {
            panic!("refusals");
        };
        assert_eq!(*refused, 200);
        assert_eq!(reasons[&RefusalReason::SignatureMismatch], 199);
    }

    #[test]
    fn an_accepted_delivery_or_a_quiet_window_clears_it() {
        let refusals = bucket(MISMATCH, t0(), 50);
        let later = t0() + Duration::minutes(5);
        assert!(assess("p", std::slice::from_ref(&refusals), &settings(), later).is_some());
        let accepted = bucket(Counted::Accepted, t0() + Duration::minutes(4), 1);
        assert!(assess("p", &[refusals.clone(), accepted], &settings(), later).is_none());
        assert!(assess("p", &[refusals], &settings(), t0() + Duration::minutes(61)).is_none());
    }

    #[test]
    fn a_few_refusals_are_noise() {
        let history = vec![bucket(MISMATCH, t0(), 4)];
        assert!(assess("p", &history, &settings(), t0()).is_none());
    }
}
