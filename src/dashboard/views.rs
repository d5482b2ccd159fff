//! What each dashboard page shows, shaped for its template: times made
//! readable, nulls explained, values cut to a sane length. The templates do
//! no logic beyond `if` and `each`, and handlebars escapes every value.

use chrono::{DateTime, Utc};
use handlebars::Handlebars;
use serde_json::{Value, json};

use crate::config::Config;
use crate::drill::{Drill, DrillStatus};
use crate::incident::Incident;
use crate::run::{Run, RunStatus, Stage, Verdict};
use crate::store::{IncidentDetail, RunDetail, RunSummary};

const TEMPLATES: [(&str, &str); 7] = [
    (
        "layout",
        include_str!("../../templates/dashboard/layout.hbs"),
    ),
    (
        "signin",
        include_str!("../../templates/dashboard/signin.hbs"),
    ),
    ("runs", include_str!("../../templates/dashboard/runs.hbs")),
    ("run", include_str!("../../templates/dashboard/run.hbs")),
    (
        "incidents",
        include_str!("../../templates/dashboard/incidents.hbs"),
    ),
    (
        "incident",
        include_str!("../../templates/dashboard/incident.hbs"),
    ),
    (
        "drills",
        include_str!("../../templates/dashboard/drills.hbs"),
    ),
];

pub struct Views {
    registry: Handlebars<'static>,
}

impl Views {
    pub fn new() -> Views {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(false);
        for (name, text) in TEMPLATES {
            // Built in and covered by tests: a broken one is a build bug.
            if let Err(e) = registry.register_template_string(name, text) {
                tracing::error!(name, error = %e, "a dashboard template does not compile");
            }
        }
        Views { registry }
    }

    pub fn render(&self, name: &str, context: &Value) -> Result<String, handlebars::RenderError> {
        self.registry.render(name, context)
    }
}

/// `path?key=value&...` with the present values percent-encoded.
pub fn query_url(path: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let mut url = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            url.append_pair(key, value);
        }
    }
    format!("{path}?{}", url.finish())
}

fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A duration in words: `340 ms`, `4.2s`, `45s`, `3m 20s`, `2h 5m`;
/// never a rounded-down `0s`.
fn span(ms: i64) -> String {
    let ms = ms.unsigned_abs();
    let secs = ms / 1000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..10_000 => format!("{}.{}s", secs, (ms % 1000) / 100),
        10_000..60_000 => format!("{secs}s"),
        60_000..3_600_000 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// How long ago, in the words an operator skims: `12s ago`, `4 min ago`,
/// `2 h 5 min ago`, `3 d ago`.
fn ago(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h {} min ago", secs / 3600, (secs % 3600) / 60),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// What the app was last seen to grant, and whether it is not what the run
/// expects: a mismatch is flagged, never shown like a match.
fn access_seen(run: &Run) -> (String, bool) {
    let seen = match (&run.observed_plan, &run.observed_features) {
        (Some(plan), _) => plan.clone(),
        (None, Some(features)) => format!("features [{}]", features.join(", ")),
        (None, None) => return ("—".to_owned(), false),
    };
    let mismatch = run.verdict(
        run.observed_plan.as_deref(),
        run.observed_features.as_deref(),
    ) == Verdict::Mismatch;
    if mismatch {
        (
            format!(
                "saw {}, expected {}",
                cut(&seen, 60),
                cut(&expected(run), 60)
            ),
            true,
        )
    } else {
        (format!("saw {}", cut(&seen, 60)), false)
    }
}

fn cut(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn expected(run: &Run) -> String {
    match (
        &run.expected_plan,
        &run.expected_features,
        &run.expected_plan_reason,
    ) {
        (Some(plan), _, _) => plan.clone(),
        (None, Some(features), _) => format!("features [{}]", features.join(", ")),
        (None, None, Some(reason)) => format!("unknown ({reason})"),
        (None, None, None) => "unknown".to_owned(),
    }
}

fn observed(run: &Run) -> String {
    match (&run.observed_plan, &run.observed_features) {
        (Some(plan), _) => plan.clone(),
        (None, Some(features)) => format!("features [{}]", features.join(", ")),
        (None, None) => "not observed yet".to_owned(),
    }
}

/// The four progress steps: done, failed (the first one a failed run did
/// not reach), or pending.
fn steps(run: &Run) -> Vec<&'static str> {
    const STEPS: [Stage; 4] = [
        Stage::Received,
        Stage::Reconciled,
        Stage::AccessAsserted,
        Stage::Closed,
    ];
    let mut broke = false;
    STEPS
        .iter()
        .map(|step| {
            if run.stage >= *step || run.status == RunStatus::Succeeded {
                "done"
            } else if run.status == RunStatus::Failed && !broke {
                broke = true;
                "failed"
            } else {
                ""
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub fn runs_page(
    config: &Config,
    project: &str,
    status: &str,
    stage: &Option<String>,
    customer_id: &Option<String>,
    runs: &[Run],
    incidents: &std::collections::HashMap<uuid::Uuid, uuid::Uuid>,
    summary: &RunSummary,
    next: Option<String>,
    refresh: u32,
) -> Value {
    let now = crate::now();
    let option = |value: &str, label: &str, selected: bool| json!({"value": value, "label": label, "selected": selected});
    let mut statuses = vec![option("", "any", status.is_empty())];
    statuses.extend(
        RunStatus::ALL
            .iter()
            .map(|s| option(s.as_str(), s.as_str(), s.as_str() == status)),
    );
    let stage_text = stage.clone().unwrap_or_default();
    let mut stages = vec![option("", "any", stage_text.is_empty())];
    stages.extend(
        Stage::ALL
            .iter()
            .map(|s| option(s.as_str(), s.as_str(), s.as_str() == stage_text)),
    );
    let rows: Vec<Value> = runs
        .iter()
        .map(|run| {
            let (deadline, overdue) = match run.deadline_at {
                Some(at) if at <= now => (span((now - at).num_milliseconds()), true),
                Some(at) => (format!("in {}", span((at - now).num_milliseconds())), false),
                None => ("—".to_owned(), false),
            };
            let (seen, mismatch) = access_seen(run);
            json!({
                "url": format!("/runs/{}/{}", run.project, run.id),
                "customer": run.customer_id.clone().unwrap_or_else(|| "unknown customer".to_owned()),
                "event_type": run.event_type,
                "event_id": run.event_id,
                "age": format!("opened {}", ago((now - run.opened_at).num_milliseconds())),
                "expected": cut(&expected(run), 200),
                "stage": run.stage,
                "steps": steps(run),
                "deadline": deadline,
                "overdue": overdue,
                "seen": seen,
                "mismatch": mismatch,
                "incident_url": incidents.get(&run.id).map(|id| format!("/incidents/{id}")),
                "status": run.status,
            })
        })
        .collect();
    json!({
        "title": format!("Runs · {project}"),
        "refresh": refresh,
        "project": project,
        "projects": config.projects.keys().map(|name| json!({"name": name, "selected": name == project})).collect::<Vec<_>>(),
        "statuses": statuses,
        "stages": stages,
        "customer_id": customer_id.clone().unwrap_or_default(),
        "runs": rows,
        "next": next,
        "summary": summary,
        "median": summary.median_ms.map_or_else(|| "—".to_owned(), span),
        "p95": summary.p95_ms.map_or_else(|| "—".to_owned(), span),
    })
}

pub fn drills_page(
    config: &Config,
    project: &str,
    drills: &[Drill],
    next: Option<String>,
    running: bool,
) -> Value {
    let rows: Vec<Value> = drills
        .iter()
        .map(|drill| {
            json!({
                "id": drill.id,
                "started_at": time(&drill.started_at),
                "trigger": drill.trigger,
                "status": drill.status,
                "took": drill.finished_at.map(|at| span((at - drill.started_at).num_milliseconds())),
                "broken": drill.broken_link.as_ref().map(|b| json!({
                    "headline": b.headline,
                    "link": b.link,
                    "detail": cut(&b.detail, 600),
                    "fix": b.fix,
                })),
                "run_url": drill.run_id.map(|id| format!("/runs/{}/{id}", drill.project)),
                "incident_url": drill.incident_id.map(|id| format!("/incidents/{id}")),
                "steps": drill.steps.iter().map(|step| json!({
                    "at": step.at.format("%H:%M:%S%.3f").to_string(),
                    "step": step.step,
                    "passed": step.passed,
                    "detail": cut(&step.detail, 600),
                })).collect::<Vec<_>>(),
                "next_step": (drill.status == DrillStatus::Running).then_some(drill.step),
            })
        })
        .collect();
    json!({
        "title": format!("Drills · {project}"),
        // A running drill is worth watching; a finished list is not.
        "refresh": running.then_some(5),
        "project": project,
        "projects": config.projects.keys().map(|name| json!({"name": name, "selected": name == project})).collect::<Vec<_>>(),
        "schedule": config.projects.get(project).and_then(|p| p.drill.schedule.as_ref()).map(|s| s.text.clone()),
        "drills": rows,
        "next": next,
    })
}

/// The Stripe dashboard's page for an object, in test or live mode.
fn stripe_link(livemode: Option<bool>, kind: &str, id: &Option<String>) -> Option<String> {
    let id = id.as_ref()?;
    let mode = if livemode == Some(true) { "" } else { "test/" };
    Some(format!("https://dashboard.stripe.com/{mode}{kind}/{id}"))
}

pub fn run_page(detail: &RunDetail, event: Option<&str>) -> Value {
    let run = &detail.run;
    let pretty = event.map(|raw| {
        serde_json::from_str::<Value>(raw)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| raw.to_owned())
    });
    json!({
        "title": format!("Run {}", run.event_id),
        "drill": run.drill_id,
        "run": {
            "project": run.project,
            "event_type": run.event_type,
            "event_id": run.event_id,
            "stage": run.stage,
            "status": run.status,
            "opened_at": time(&run.opened_at),
            "reconciled_due_at": time(&run.reconciled_due_at),
            "access_due_at": time(&run.access_due_at),
        },
        "customer": run.customer_id.clone().unwrap_or_else(|| "unknown customer".to_owned()),
        "subscription": run.subscription_id.clone().unwrap_or_else(|| "none".to_owned()),
        "stripe_customer": stripe_link(run.livemode, "customers", &run.customer_id),
        "stripe_subscription": stripe_link(run.livemode, "subscriptions", &run.subscription_id),
        "expected": expected(run),
        "observed": observed(run),
        "deploy_sha": run.deploy_sha.clone().unwrap_or_else(|| "not reported".to_owned()),
        "timeline": detail.timeline.iter().map(|e| json!({
            "at": time(&e.at),
            "source": e.source,
            "stage": e.stage,
            "outcome": e.outcome,
            "evidence": cut(&e.evidence.to_string(), 400),
        })).collect::<Vec<_>>(),
        "probe_count": detail.probe_count,
        "probes": detail.probes.iter().rev().map(|p| json!({
            "at": time(&p.at),
            "status_code": p.status_code,
            "duration_ms": p.duration_ms,
            "observed_plan": p.observed_plan.clone().unwrap_or_default(),
            "deploy_sha": p.deploy_sha.clone().unwrap_or_default(),
            "error": p.error,
            "matched": p.matched,
        })).collect::<Vec<_>>(),
        "incidents": detail.incidents.iter().map(|i| json!({"id": i.id, "title": i.title, "status": i.status})).collect::<Vec<_>>(),
        "event": pretty,
    })
}

pub fn incidents_page(
    project: &str,
    status: &str,
    incidents: &[Incident],
    next: Option<String>,
) -> Value {
    let tabs: Vec<Value> = ["open", "acknowledged", "resolved"]
        .iter()
        .map(|tab| json!({"value": tab, "label": tab, "selected": *tab == status}))
        .collect();
    json!({
        "title": format!("Incidents · {project}"),
        "project": project,
        "tabs": tabs,
        "incidents": incidents.iter().map(|i| json!({
            "id": i.id,
            "title": i.title,
            "status": i.status,
            "opened_at": time(&i.opened_at),
            "customer": i.evidence.customer_id.as_deref().unwrap_or("unknown customer"),
            "deploy_sha": i.evidence.deploy_sha.as_deref().unwrap_or("—"),
        })).collect::<Vec<_>>(),
        "next": next,
    })
}

pub fn incident_page(detail: &IncidentDetail) -> Value {
    let incident = &detail.incident;
    // Every field of the evidence, in its order, as a key and a value.
    let fields = serde_json::to_value(&incident.evidence).unwrap_or_default();
    let evidence: Vec<Value> = fields
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| !matches!(key.as_str(), "summary" | "guidance"))
        // The drill marks say nothing on a real customer's incident.
        .filter(|(key, _)| incident.drill || !matches!(key.as_str(), "drill" | "drill_id"))
        .map(|(key, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Null => "—".to_owned(),
                other => other.to_string(),
            };
            json!({"key": key, "value": cut(&text, 500)})
        })
        .collect();
    let status = incident.status;
    json!({
        "title": incident.title,
        "drill": incident.drill,
        "incident": {
            "id": incident.id,
            "title": incident.title,
            "status": status,
            "project": incident.project,
        },
        "summary": incident.evidence.summary,
        "open_actions": status != crate::incident::IncidentStatus::Resolved,
        "can_acknowledge": status == crate::incident::IncidentStatus::Open,
        "evidence": evidence,
        "guidance": incident.evidence.guidance,
        "run_url": format!("/runs/{}/{}", incident.project, incident.run_id),
        "deliveries": detail.deliveries.iter().map(|d| json!({
            "channel": d.channel,
            "event": d.event,
            "status": d.status,
            "grouped": d.incident_count > 1,
            "incident_count": d.incident_count,
            "attempts": d.attempts.iter().map(|a| json!({
                "at": time(&a.at),
                "error": a.error,
                "status_code": a.status_code,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for (name, text) in TEMPLATES {
            let mut registry = Handlebars::new();
            registry
                .register_template_string(name, text)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn durations_read_as_words() {
        assert_eq!(span(340), "340 ms", "never a misleading 0s");
        assert_eq!(span(4_250), "4.2s");
        assert_eq!(span(45_000), "45s");
        assert_eq!(span(200_000), "3m 20s");
        assert_eq!(span(7_500_000), "2h 5m");
        assert_eq!(ago(12_000), "12s ago");
        assert_eq!(ago(250_000), "4 min ago");
        assert_eq!(ago(7_500_000), "2 h 5 min ago");
        assert_eq!(ago(3 * 86_400_000), "3 d ago");
    }

    #[test]
    fn a_mismatch_is_flagged_and_a_match_is_not() {
        use crate::run::Expectation;
        use crate::run::tests::{spec, t0};
        let mut run = Run::open(spec(Expectation::Plan("pro".into())), t0()).0;
        assert_eq!(access_seen(&run), ("—".to_owned(), false));
        run.observed_plan = Some("starter".into());
        assert_eq!(
            access_seen(&run),
            ("saw starter, expected pro".to_owned(), true)
        );
        run.observed_plan = Some("pro".into());
        assert_eq!(access_seen(&run), ("saw pro".to_owned(), false));
    }

    #[test]
    fn query_urls_encode_their_values() {
        assert_eq!(
            query_url("/", &[("customer_id", Some("a&b=<c>")), ("stage", None)]),
            "/?customer_id=a%26b%3D%3Cc%3E"
        );
    }
}
