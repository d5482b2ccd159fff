//! What each dashboard page shows, shaped for its template: times made
//! readable, nulls explained, values cut to a sane length. The templates do
//! no logic beyond `if` and `each`, and handlebars escapes every value.

use chrono::{DateTime, Utc};
use handlebars::Handlebars;
use serde_json::{Value, json};

use crate::config::Config;
use crate::drill::{Drill, DrillStatus};
use crate::incident::{Condition, Evidence, Incident, ProjectEvidence, RunEvidence};
use crate::run::{Run, RunStatus, Stage, Verdict};
use crate::store::{IncidentDetail, RunDetail, RunSummary};
use crate::time::{rfc3339, span};

const TEMPLATES: [(&str, &str); 9] = [
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
    ("keys", include_str!("../../templates/dashboard/keys.hbs")),
    ("audit", include_str!("../../templates/dashboard/audit.hbs")),
];

/// The keys page: a project's keys, and the one just made, if any.
pub fn keys_page(
    project: &str,
    keys: &[crate::access::ApiKey],
    created: Option<(&crate::access::ApiKey, &str)>,
    configured_key: bool,
) -> Value {
    let now = crate::now();
    let keys: Vec<Value> = keys
        .iter()
        .map(|key| {
            json!({
                "id": key.id,
                "prefix": key.prefix,
                "name": key.name,
                "scopes": crate::access::keys::scopes_text(&key.scopes).replace(',', ", "),
                "created_at": rfc3339(&key.created_at),
                "created_by": key.created_by,
                "last_used": key.last_used_at.map_or_else(|| "never".to_owned(), |at| rfc3339(&at)),
                "state": key.state_text(now),
                "active": key.state(now) == crate::access::KeyState::Active,
            })
        })
        .collect();
    json!({
        "title": format!("API keys · {project}"),
        "project": project,
        "keys": keys,
        "scopes": crate::access::Scope::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "created": created.map(|(key, secret)| json!({"prefix": key.prefix, "secret": secret})),
        "configured_key": configured_key,
    })
}

/// The audit page: a project's entries, newest first.
pub fn audit_page(
    project: &str,
    entries: &[crate::access::AuditEntry],
    next: Option<String>,
) -> Value {
    let shown = |value: &Option<Value>| value.as_ref().map(|v| cut(&v.to_string(), 300));
    let entries: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "at": rfc3339(&e.at),
                "actor": e.actor.name,
                "actor_kind": e.actor.kind,
                "address": e.actor.address,
                "action": e.action,
                "target": e.target,
                "before": shown(&e.before),
                "after": shown(&e.after),
            })
        })
        .collect();
    json!({
        "title": format!("Audit log · {project}"),
        "project": project,
        "entries": entries,
        "next": next,
        "export_url": query_url("/audit", &[("project", Some(project)), ("format", Some("jsonl"))]),
    })
}

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

/// A timeline entry's evidence as key and value pairs, for reading.
fn pairs(evidence: &Value) -> Vec<Value> {
    match evidence {
        Value::Object(fields) => fields
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(key, value)| {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                json!({"key": key, "value": cut(&text, 300)})
            })
            .collect(),
        Value::Null => Vec::new(),
        other => vec![json!({"key": "", "value": cut(&other.to_string(), 300)})],
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
    let Some(seen) = access(
        run.observed_plan.as_deref(),
        run.observed_features.as_deref(),
    ) else {
        return ("—".to_owned(), false);
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

/// Access as a plan, or else a feature set; `None` when neither is known.
fn access(plan: Option<&str>, features: Option<&[String]>) -> Option<String> {
    match (plan, features) {
        (Some(plan), _) => Some(plan.to_owned()),
        (None, Some(features)) => Some(format!("features [{}]", features.join(", "))),
        (None, None) => None,
    }
}

fn expected(run: &Run) -> String {
    access(
        run.expected_plan.as_deref(),
        run.expected_features.as_deref(),
    )
    .unwrap_or_else(|| match &run.expected_plan_reason {
        Some(reason) => format!("unknown ({reason})"),
        None => "unknown".to_owned(),
    })
}

fn observed(run: &Run) -> String {
    access(
        run.observed_plan.as_deref(),
        run.observed_features.as_deref(),
    )
    .unwrap_or_else(|| "not observed yet".to_owned())
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
                "started_at": rfc3339(&drill.started_at),
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
                    "at": rfc3339(&step.at),
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
    let now = crate::now();
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
            "opened_at": when(&run.opened_at, now),
            "reconciled_due_at": when(&run.reconciled_due_at, now),
            "access_due_at": when(&run.access_due_at, now),
        },
        "customer": run.customer_id.clone().unwrap_or_else(|| "unknown customer".to_owned()),
        "subscription": run.subscription_id.clone().unwrap_or_else(|| "none".to_owned()),
        "stripe_customer": stripe_link(run.livemode, "customers", &run.customer_id),
        "stripe_subscription": stripe_link(run.livemode, "subscriptions", &run.subscription_id),
        "expected": expected(run),
        "observed": observed(run),
        "deploy_sha": run.deploy_sha.clone().unwrap_or_else(|| "not reported".to_owned()),
        "timeline": detail.timeline.iter().map(|e| json!({
            "at": rfc3339(&e.at),
            "ago": ago((now - e.at).num_milliseconds()),
            "source": e.source,
            "stage": e.stage,
            "outcome": e.outcome,
            "evidence": pairs(&e.evidence),
        })).collect::<Vec<_>>(),
        "probe_count": detail.probe_count,
        "probes": detail.probes.iter().rev().map(|p| json!({
            "at": rfc3339(&p.at),
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

/// The open project incidents, as the top of the runs page lists them.
pub fn project_incidents_banner(incidents: &[Incident]) -> Value {
    let now = crate::now();
    incidents
        .iter()
        .map(|i| {
            let (seen, since) = match i.evidence.of_project() {
                Some(e) => (e.seen.clone(), when(&e.since, now)),
                None => (i.evidence.summary().to_owned(), when(&i.opened_at, now)),
            };
            json!({
                "id": i.id,
                "title": i.title,
                "status": i.status,
                "seen": cut(&seen, 300),
                "since": since,
            })
        })
        .collect()
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
            "opened_at": rfc3339(&i.opened_at),
            "scope": i.scope,
            "customer": match i.evidence.of_run() {
                Some(e) => e.customer_id.as_deref().unwrap_or("unknown customer"),
                None => "all: a project incident",
            },
            "deploy_sha": i.evidence.of_run().and_then(|e| e.deploy_sha.as_deref()).unwrap_or("—"),
        })).collect::<Vec<_>>(),
        "next": next,
    })
}

/// A guidance step as text and code parts: the backticks of its quoted
/// ids and commands become code, not literal marks.
fn rendered_step(step: &str) -> Vec<Value> {
    step.split('`')
        .enumerate()
        .filter(|(_, text)| !text.is_empty())
        .map(|(i, text)| json!({"text": text, "code": i % 2 == 1}))
        .collect()
}

/// A time as the dashboard shows it: as the API writes it, and how long ago.
fn when(at: &DateTime<Utc>, now: DateTime<Utc>) -> String {
    let ms = (now - *at).num_milliseconds();
    if ms >= 0 {
        format!("{} ({})", rfc3339(at), ago(ms))
    } else {
        format!("{} (in {})", rfc3339(at), span(-ms))
    }
}

/// A value, or its reason for being missing, or nothing to show.
fn or_reason(value: Option<&str>, reason: Option<&str>) -> Option<String> {
    match (value, reason) {
        (Some(value), _) => Some(value.to_owned()),
        (None, Some(reason)) => Some(format!("unknown: {reason}")),
        (None, None) => None,
    }
}

/// Who is affected, the rest of the evidence, and the last probe, of a
/// run's incident.
fn run_incident_facts(e: &RunEvidence, now: DateTime<Utc>) -> (Vec<Value>, Vec<Value>, Value) {
    let access = |plan: Option<&str>, features: Option<&[String]>, reason: Option<&str>| {
        access(plan, features).or_else(|| reason.map(|r| format!("unknown: {r}")))
    };
    let expected = access(
        e.expected_plan.as_deref(),
        e.expected_features.as_deref(),
        e.expected_plan_reason.as_deref(),
    );
    let observed = access(
        e.observed_plan.as_deref(),
        e.observed_features.as_deref(),
        e.observed_plan_reason.as_deref(),
    );
    // Red only where there is something to compare: a plan against a plan,
    // or a feature set against a feature set.
    let differs = match (&e.observed_plan, &e.expected_plan) {
        (Some(seen), Some(wanted)) => seen != wanted,
        _ => match (&e.observed_features, &e.expected_features) {
            (Some(seen), Some(wanted)) => {
                let (mut seen, mut wanted) = (seen.clone(), wanted.clone());
                seen.sort();
                wanted.sort();
                seen != wanted
            }
            _ => false,
        },
    };
    // Who is affected, with what they should have against what they have.
    let affected: Vec<Value> = [
        ("Customer", e.customer_id.clone(), false),
        ("Subscription", e.subscription_id.clone(), false),
        ("Should have", expected, false),
        ("Has", observed, differs),
    ]
    .into_iter()
    .filter_map(|(label, value, bad)| {
        value.map(|v| json!({"label": label, "value": cut(&v, 500), "bad": bad}))
    })
    .collect();
    // The rest of the evidence, labelled, empty fields left out.
    let facts = labelled(vec![
        (
            "Stripe event",
            Some(format!("{} · {}", e.event_id, e.event_type)),
        ),
        (
            "Mode",
            e.livemode
                .map(|live| if live { "live" } else { "test" }.to_owned()),
        ),
        (
            "Deploy",
            or_reason(e.deploy_sha.as_deref(), e.deploy_sha_reason.as_deref()),
        ),
        (
            "Missed",
            Some(format!(
                "{}, due {}",
                e.missed_stage,
                when(&e.deadline_at, now)
            )),
        ),
        ("Last reached", Some(e.last_stage.to_string())),
        ("Run opened", Some(when(&e.run_opened_at, now))),
        (
            "Keep access until",
            e.keep_access_until.as_ref().map(|at| when(at, now)),
        ),
        (
            "Last probe",
            e.last_probe
                .is_none()
                .then(|| e.last_probe_reason.clone())
                .flatten(),
        ),
        (
            "Project",
            Some(format!("{} · workflow {}", e.project, e.workflow)),
        ),
    ]);
    let last_probe = e.last_probe.as_ref().map(|p| {
        json!({
            "at": when(&p.at, now),
            "url": p.url,
            "status_code": p.status_code,
            "took": span(p.duration_ms),
            "saw": access(p.observed_plan.as_deref(), p.observed_features.as_deref(), None),
            "error": p.error,
        })
    });
    (affected, facts, last_probe.unwrap_or_default())
}

/// What a project's incident saw, and the facts of its condition.
fn project_incident_facts(e: &ProjectEvidence, now: DateTime<Utc>) -> (Vec<Value>, Vec<Value>) {
    let affected = vec![
        json!({"label": "Seen", "value": cut(&e.seen, 500), "bad": true}),
        json!({"label": "Since", "value": when(&e.since, now), "bad": false}),
    ];
    let mut facts: Vec<(&str, Option<String>)> = vec![("Usually", e.usual.clone())];
    match &e.details {
        Condition::DeliveriesRefused {
            refused,
            reasons,
            last_refused_at,
            last_accepted_at,
            ..
        } => {
            let breakdown = reasons
                .iter()
                .map(|(reason, n)| format!("{reason}: {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            facts.push(("Refused", Some(format!("{refused} ({breakdown})"))));
            facts.push(("Last refused", Some(when(last_refused_at, now))));
            facts.push((
                "Last accepted",
                Some(
                    last_accepted_at
                        .as_ref()
                        .map_or_else(|| "none in the history".to_owned(), |at| when(at, now)),
                ),
            ));
        }
        Condition::Silence {
            last_accepted_at,
            threshold_secs,
            learnt_from,
            ..
        } => {
            facts.push(("Last accepted", Some(when(last_accepted_at, now))));
            facts.push((
                "Opens after",
                Some(format!(
                    "{} of silence (learnt from {learnt_from} deliveries)",
                    span(
                        i64::try_from(*threshold_secs)
                            .unwrap_or(i64::MAX)
                            .saturating_mul(1000)
                    )
                )),
            ));
        }
    }
    facts.push(("Last assessed", Some(when(&e.assessed_at, now))));
    facts.push((
        "Project",
        Some(format!("{} · workflow {}", e.project, e.workflow)),
    ));
    (affected, labelled(facts))
}

/// Labelled facts, empty ones left out.
fn labelled(facts: Vec<(&str, Option<String>)>) -> Vec<Value> {
    facts
        .into_iter()
        .filter_map(|(label, value)| value.map(|v| json!({"label": label, "value": cut(&v, 500)})))
        .collect()
}

pub fn incident_page(detail: &IncidentDetail) -> Value {
    let now = crate::now();
    let incident = &detail.incident;
    let (affected, facts, last_probe) = match &incident.evidence {
        Evidence::Run(e) => run_incident_facts(e, now),
        Evidence::Project(e) => {
            let (affected, facts) = project_incident_facts(e, now);
            (affected, facts, Value::Null)
        }
    };
    let status = incident.status;
    let duration = match incident.resolved_at {
        Some(at) => format!(
            "resolved after {}",
            span((at - incident.opened_at).num_milliseconds())
        ),
        None => format!(
            "open for {}",
            span((now - incident.opened_at).num_milliseconds())
        ),
    };
    json!({
        "title": incident.title,
        "drill": incident.drill,
        "incident": {
            "id": incident.id,
            "title": incident.title,
            "status": status,
            "project": incident.project,
        },
        "summary": incident.evidence.summary(),
        "scope": incident.scope,
        "opened": when(&incident.opened_at, now),
        "duration": duration,
        "resolution": incident.resolution,
        "open_actions": status != crate::incident::IncidentStatus::Resolved,
        "can_acknowledge": status == crate::incident::IncidentStatus::Open,
        "affected": affected,
        "facts": facts,
        "last_probe": last_probe,
        "guidance": incident.evidence.guidance().iter().map(|step| rendered_step(step)).collect::<Vec<_>>(),
        "run_url": incident.run_id.map(|run| format!("/runs/{}/{run}", incident.project)),
        "deliveries": detail.deliveries.iter().map(|d| json!({
            "channel": d.channel,
            "event": d.event,
            "status": d.status,
            "grouped": d.incident_count > 1,
            "incident_count": d.incident_count,
            "attempts": d.attempts.iter().map(|a| json!({
                "at": rfc3339(&a.at),
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
    fn ages_read_as_words() {
        assert_eq!(ago(12_000), "12s ago");
        assert_eq!(ago(250_000), "4 min ago");
        assert_eq!(ago(7_500_000), "2 h 5 min ago");
        assert_eq!(ago(3 * 86_400_000), "3 d ago");
    }

    #[test]
    fn guidance_quotes_become_code() {
        assert_eq!(
            rendered_step("report `access_asserted` for evt_1"),
            vec![
                json!({"text": "report ", "code": false}),
                json!({"text": "access_asserted", "code": true}),
                json!({"text": " for evt_1", "code": false}),
            ]
        );
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
