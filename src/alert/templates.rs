//! Alert messages from handlebars templates: the defaults in `templates/`
//! are compiled into the binary; an operator may override any of them with
//! a file of the same name in a directory of their own. Every template is
//! compiled, and rendered once with a sample incident, when the
//! configuration loads, so a broken override fails `assay check-config`
//! with its file and line, not an alert at 3 a.m.

use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use serde_json::{Value, json};

use super::AlertEvent;
use crate::incident::{Evidence, Incident, IncidentScope, ProjectEvidence, RunEvidence};

/// (name, default text). The name is also the override's file name.
const DEFAULTS: [(&str, &str); 4] = [
    (
        "slack.json.hbs",
        include_str!("../../templates/alerts/slack.json.hbs"),
    ),
    (
        "email.subject.hbs",
        include_str!("../../templates/alerts/email.subject.hbs"),
    ),
    (
        "email.txt.hbs",
        include_str!("../../templates/alerts/email.txt.hbs"),
    ),
    (
        "email.html.hbs",
        include_str!("../../templates/alerts/email.html.hbs"),
    ),
];

/// How many incidents a grouped alert lists by name.
pub const GROUP_SHOWN: usize = 5;

/// The rendered email.
#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The compiled templates. Three registries because each output escapes
/// differently: JSON strings, HTML, and plain text (no escaping).
pub struct Templates {
    json: Handlebars<'static>,
    html: Handlebars<'static>,
    text: Handlebars<'static>,
    /// Which files came from the override directory, for `check-config`.
    pub overridden: Vec<PathBuf>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("overridden", &self.overridden)
            .finish()
    }
}

/// Escapes a value for a Slack message: for Slack's mrkdwn first (`&`, `<`
/// and `>`, so that a reported plan cannot be `<!channel>`), then for the
/// inside of a JSON string.
fn slack_escape(text: &str) -> String {
    let mrkdwn = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let quoted = serde_json::to_string(&mrkdwn).unwrap_or_default();
    quoted[1..quoted.len() - 1].to_owned()
}

/// Longest value shown in a message: Slack refuses a field over 2,000
/// characters, and a feature list can be longer.
const VALUE_LIMIT: usize = 300;

/// Longest retry step; a message lists up to 5 of them in one section.
const GUIDANCE_LIMIT: usize = 400;

/// Longest summary: Slack refuses a section over 3,000 characters.
const SUMMARY_LIMIT: usize = 2_000;

/// `text`, cut to `limit` characters with an ellipsis.
fn cut_to(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn cut(text: &str) -> String {
    cut_to(text, VALUE_LIMIT)
}

impl Templates {
    /// Compiles the defaults, replaced by the files in `dir` where present.
    /// Every problem is returned, naming the file and line.
    pub fn load(dir: Option<&Path>) -> Result<Templates, Vec<String>> {
        let registry = |escape: fn(&str) -> String| {
            let mut r = Handlebars::new();
            r.set_strict_mode(false);
            r.register_escape_fn(escape);
            r
        };
        let mut templates = Templates {
            json: registry(slack_escape),
            html: registry(handlebars::html_escape),
            text: registry(handlebars::no_escape),
            overridden: Vec::new(),
        };
        let mut errors = Vec::new();
        if let Some(dir) = dir
            && !dir.is_dir()
        {
            errors.push(format!(
                "alert templates: {} is not a directory",
                dir.display()
            ));
        }
        for (name, default) in DEFAULTS {
            let path = dir.map(|d| d.join(name)).filter(|p| p.is_file());
            let source = match &path {
                Some(path) => match std::fs::read_to_string(path) {
                    Ok(text) => text,
                    Err(e) => {
                        errors.push(format!("alert template {}: {e}", path.display()));
                        continue;
                    }
                },
                None => default.to_owned(),
            };
            let shown = path
                .as_ref()
                .map_or_else(|| format!("(built-in) {name}"), |p| p.display().to_string());
            let registry = match name {
                "slack.json.hbs" => &mut templates.json,
                "email.html.hbs" => &mut templates.html,
                _ => &mut templates.text,
            };
            if let Err(e) = registry.register_template_string(name, source) {
                let line = e
                    .pos()
                    .map(|(line, column)| format!(" line {line}, column {column}"))
                    .unwrap_or_default();
                errors.push(format!("alert template {shown}{line}: {}", e.reason()));
                continue;
            }
            if let Some(path) = path {
                templates.overridden.push(path);
            }
        }
        if errors.is_empty() {
            // Render every kind of message once, so that a template that
            // compiles but breaks one case (or makes broken JSON) is caught
            // now, not on the first incident of that kind.
            for event in AlertEvent::ALL {
                for (count, drill, scope) in [
                    (1, false, IncidentScope::Run),
                    (2, false, IncidentScope::Run),
                    (1, true, IncidentScope::Run),
                    (2, true, IncidentScope::Run),
                    (1, false, IncidentScope::Project),
                ] {
                    let sample = Message::sample_of(*event, count, drill, scope);
                    let case = format!("a {event} message about {count} {scope} incident(s)");
                    if let Err(e) = templates.slack(&sample) {
                        errors.push(format!("alert template slack.json.hbs, {case}: {e}"));
                    }
                    if let Err(e) = templates.email(&sample) {
                        errors.push(format!("alert template email.*.hbs, {case}: {e}"));
                    }
                }
            }
            errors.dedup();
        }
        if errors.is_empty() {
            Ok(templates)
        } else {
            Err(errors)
        }
    }

    /// The Slack Block Kit message.
    pub fn slack(&self, message: &Message) -> Result<Value, String> {
        let text = self
            .json
            .render("slack.json.hbs", &message.context)
            .map_err(|e| format!("rendering failed: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("the rendered message is not JSON: {e}"))
    }

    pub fn email(&self, message: &Message) -> Result<Email, String> {
        let render = |registry: &Handlebars<'static>, name: &str| {
            registry
                .render(name, &message.context)
                .map_err(|e| format!("rendering {name} failed: {e}"))
        };
        Ok(Email {
            subject: render(&self.text, "email.subject.hbs")?
                .trim()
                .replace(['\r', '\n'], " "),
            text: render(&self.text, "email.txt.hbs")?,
            html: render(&self.html, "email.html.hbs")?,
        })
    }
}

/// What a single-incident message must show, by the name a report uses and
/// the key of the template context's `incident`.
const MUST_SHOW: [(&str, &str); 6] = [
    ("the customer", "customer"),
    ("the subscription", "subscription"),
    ("the Stripe event", "event_id"),
    ("the expected plan", "expected_plan"),
    ("the observed plan", "observed_plan"),
    ("the deploy SHA", "deploy_sha"),
];

impl Templates {
    /// What the message about one incident would leave out on a channel of
    /// `kind` (`slack`, `email` or `webhook`): each evidence value an
    /// operator needs, the first retry step, and the DRILL mark of a drill.
    /// Rendered with the templates the sender uses, so an override that
    /// drops a field is caught. Empty when complete.
    pub fn missing_fields(&self, message: &Message, kind: &str) -> Vec<String> {
        let incident = &message.context["incident"];
        let mut wanted: Vec<(String, String)> = MUST_SHOW
            .iter()
            .filter_map(|(what, key)| {
                let value = incident[*key].as_str()?;
                Some(((*what).to_owned(), value.to_owned()))
            })
            .collect();
        if let Some(step) = incident["guidance"][0].as_str() {
            wanted.push(("the retry guidance".to_owned(), step.to_owned()));
        }
        let drill = message.context["drill"] == Value::Bool(true);
        let templates: Vec<Rendered<'_>> = match kind {
            "slack" => vec![("slack.json.hbs", &self.json, slack_escape, true)],
            "email" => vec![
                (
                    "email.subject.hbs",
                    &self.text,
                    |s: &str| s.to_owned(),
                    false,
                ),
                ("email.txt.hbs", &self.text, |s: &str| s.to_owned(), true),
                ("email.html.hbs", &self.html, handlebars::html_escape, true),
            ],
            // The webhook body is the incidents as JSON: all of them.
            _ => Vec::new(),
        };
        let mut missing = Vec::new();
        for (name, registry, escape, every_field) in templates {
            let rendered = match registry.render(name, &message.context) {
                Ok(text) => text,
                Err(e) => {
                    missing.push(format!("{name} does not render: {e}"));
                    continue;
                }
            };
            if drill && !rendered.contains("DRILL") {
                missing.push(format!("{name} does not mark the message DRILL"));
            } else if drill && name == "slack.json.hbs" && !slack_text_marked(&rendered) {
                missing.push(format!(
                    "{name} does not mark the message's notification text DRILL"
                ));
            }
            if every_field {
                for (what, value) in &wanted {
                    if !rendered.contains(&escape(value)) {
                        missing.push(format!("{name} does not show {what} (`{value}`)"));
                    }
                }
            }
        }
        missing
    }
}

/// Whether a rendered Slack message's `text`, which its notification
/// shows, says DRILL.
fn slack_text_marked(rendered: &str) -> bool {
    serde_json::from_str::<Value>(rendered)
        .ok()
        .and_then(|message| message["text"].as_str().map(|text| text.contains("DRILL")))
        .unwrap_or(false)
}

/// A template as the field check reads it: its name, its registry, how it
/// escapes a value, and whether it must show every field (a subject line
/// need only carry the DRILL mark).
type Rendered<'a> = (&'a str, &'a Handlebars<'static>, fn(&str) -> String, bool);

/// What a message says, as the templates see it.
#[derive(Debug, Clone)]
pub struct Message {
    pub context: Value,
}

/// A value for display: the text, or a word saying why there is none.
fn shown(value: Option<&str>, reason: Option<&str>, missing: &str) -> String {
    cut(&match (value, reason) {
        (Some(text), _) => text.to_owned(),
        (None, Some(reason)) => format!("{missing} ({reason})"),
        (None, None) => missing.to_owned(),
    })
}

/// A plan, or a feature set, or why there is neither.
fn access(
    plan: Option<&str>,
    features: Option<&[String]>,
    reason: Option<&str>,
    missing: &str,
) -> String {
    match features.filter(|_| plan.is_none()) {
        Some(features) => cut(&format!("features [{}]", features.join(", "))),
        None => shown(plan, reason, missing),
    }
}

/// The address of an incident's page on the dashboard.
pub fn incident_url(public_url: &str, incident: &Incident) -> String {
    format!(
        "{}/incidents/{}",
        public_url.trim_end_matches('/'),
        incident.id
    )
}

/// One incident, flattened for templates: what every incident has, and
/// the facts of its scope. A project incident's run fields say it has
/// none, so that a template written for runs still reads true.
fn incident_context(incident: &Incident, public_url: &str) -> Value {
    let mut context = json!({
        "id": incident.id,
        "url": incident_url(public_url, incident),
        "title": incident.title,
        "kind": incident.kind,
        "scope": incident.scope,
        "status": incident.status,
        "project": incident.project,
        "workflow": incident.workflow,
        "opened_at": crate::time::rfc3339(&incident.opened_at),
        "resolution": incident.resolution,
        "summary": cut_to(incident.evidence.summary(), SUMMARY_LIMIT),
        // Each step cut: Slack refuses a section over 3,000 characters,
        // and a step quotes ids and plans.
        "guidance": incident.evidence.guidance().iter().map(|step| cut_to(step, GUIDANCE_LIMIT)).collect::<Vec<_>>(),
        "evidence": incident.evidence,
    });
    let facts = match &incident.evidence {
        Evidence::Run(e) => run_facts(e),
        Evidence::Project(e) => project_facts(e),
    };
    if let (Some(context), Value::Object(facts)) = (context.as_object_mut(), facts) {
        context.extend(facts);
    }
    context
}

/// The facts of a run's incident.
fn run_facts(e: &RunEvidence) -> Value {
    let observed = access(
        e.observed_plan.as_deref(),
        e.observed_features.as_deref(),
        e.observed_plan_reason.as_deref(),
        "not observed",
    );
    let expected = access(
        e.expected_plan.as_deref(),
        e.expected_features.as_deref(),
        e.expected_plan_reason.as_deref(),
        "unknown",
    );
    let last_probe = match &e.last_probe {
        Some(probe) => match (&probe.error, &probe.observed_plan) {
            (Some(error), _) => cut(&format!("failed: {error}")),
            (None, Some(plan)) => format!(
                "saw plan {plan} (HTTP {})",
                probe
                    .status_code
                    .map_or_else(|| "null".to_owned(), |code| code.to_string())
            ),
            (None, None) => "saw no plan".to_owned(),
        },
        None => shown(None, e.last_probe_reason.as_deref(), "none"),
    };
    let deadline_at = crate::time::rfc3339(&e.deadline_at);
    json!({
        "project_scope": false,
        "customer": shown(e.customer_id.as_deref(), None, "unknown customer"),
        "subscription": shown(e.subscription_id.as_deref(), None, "none"),
        "event_id": shown(Some(&e.event_id), None, "unknown"),
        "event_type": shown(Some(&e.event_type), None, "unknown"),
        "expected_plan": expected,
        "observed_plan": observed,
        "deploy_sha": shown(e.deploy_sha.as_deref(), e.deploy_sha_reason.as_deref(), "unknown"),
        "missed_stage": shown(Some(e.missed_stage.as_str()), None, "unknown"),
        "deadline_at": shown(Some(&deadline_at), None, "unknown"),
        "last_probe": last_probe,
    })
}

/// The facts of a project's incident.
fn project_facts(e: &ProjectEvidence) -> Value {
    const NONE: &str = "none: a project incident";
    json!({
        "project_scope": true,
        "seen": cut(&e.seen),
        "since": crate::time::rfc3339(&e.since),
        "usual": shown(e.usual.as_deref(), None, "no usual figure"),
        "customer": NONE,
        "subscription": NONE,
        "event_id": NONE,
        "event_type": NONE,
        "expected_plan": NONE,
        "observed_plan": NONE,
        "deploy_sha": NONE,
        "missed_stage": NONE,
        "deadline_at": NONE,
        "last_probe": NONE,
    })
}

impl Message {
    /// The message about `incidents` (several for a grouped alert; the first
    /// stands for them all).
    pub fn new(event: AlertEvent, incidents: &[Incident], public_url: &str) -> Message {
        let drill = incidents.iter().any(|i| i.realm().is_drill());
        let first = incidents.first();
        let count = incidents.len();
        let grouped = count > 1;
        let title = first.map(|i| i.title.clone()).unwrap_or_default();
        let headline = match (event, grouped) {
            (AlertEvent::Resolved, _) => format!("Resolved: {title}"),
            (AlertEvent::Reminder, _) => format!("Still open: {title}"),
            (AlertEvent::Opened, true) => format!("{count} customers: {title}"),
            (AlertEvent::Opened, false) => title.clone(),
        };
        // A drill's message says so in its first words, where a reader and
        // a simple filter look, on every channel.
        let headline = if drill {
            format!("DRILL: {headline}")
        } else {
            headline
        };
        let summary = match (event, first) {
            (AlertEvent::Resolved, Some(i)) => format!(
                "Resolved: {}",
                i.resolution.clone().unwrap_or_else(|| "by hand".to_owned())
            ),
            (_, Some(i)) if grouped => match i.evidence.of_run() {
                Some(e) => format!(
                    "{count} incidents opened together with one cause (deploy {}, missed stage {}). The first: {}",
                    e.deploy_sha.as_deref().unwrap_or("unknown"),
                    e.missed_stage,
                    e.summary
                ),
                None => format!(
                    "{count} incidents opened together with one cause. The first: {}",
                    i.evidence.summary()
                ),
            },
            (_, Some(i)) => i.evidence.summary().to_owned(),
            (_, None) => String::new(),
        };
        let contexts: Vec<Value> = incidents
            .iter()
            .map(|i| incident_context(i, public_url))
            .collect();
        Message {
            context: json!({
                "event": event,
                "drill": drill,
                "grouped": grouped,
                "count": count,
                "headline": headline,
                "summary": cut_to(&summary, SUMMARY_LIMIT),
                "incident": contexts.first(),
                "shown": contexts.iter().take(GROUP_SHOWN).collect::<Vec<_>>(),
                "more": count.saturating_sub(GROUP_SHOWN),
                "dashboard_url": public_url,
            }),
        }
    }

    /// Whether the message is about a drill's incidents.
    pub fn drill(&self) -> bool {
        self.context["drill"] == Value::Bool(true)
    }

    /// The headline, a drill's beginning with DRILL.
    pub fn headline(&self) -> &str {
        self.context["headline"].as_str().unwrap_or_default()
    }

    /// `incidents` as JSON, each with the address of its page.
    pub fn linked(&self, incidents: &[Incident]) -> Vec<Value> {
        let public_url = self.context["dashboard_url"].as_str().unwrap_or_default();
        incidents
            .iter()
            .map(|incident| {
                let mut value = serde_json::to_value(incident).unwrap_or_default();
                if let Value::Object(fields) = &mut value {
                    fields.insert("url".into(), incident_url(public_url, incident).into());
                }
                value
            })
            .collect()
    }

    #[cfg(test)]
    fn sample(event: AlertEvent, count: usize, drill: bool) -> Message {
        Message::sample_of(event, count, drill, IncidentScope::Run)
    }

    fn sample_of(event: AlertEvent, count: usize, drill: bool, scope: IncidentScope) -> Message {
        use crate::incident::{Condition, IncidentKind, IncidentStatus};
        use crate::run::Stage;
        let now = chrono::Utc::now();
        let drill_id = drill.then(uuid::Uuid::nil);
        let project = ProjectEvidence {
            summary: "sample \"quoted\" <b>summary</b>".into(),
            project: "default".into(),
            workflow: "billing".into(),
            seen: "200 deliveries refused".into(),
            since: now,
            assessed_at: now,
            usual: Some("the last accepted delivery came <b>then</b>".into()),
            details: Condition::DeliveriesRefused {
                refused: 200,
                reasons: Default::default(),
                first_refused_at: now,
                last_refused_at: now,
                last_accepted_at: None,
                window_secs: 3600,
            },
            guidance: vec!["step one".into(), "step two".into()],
            drill,
            drill_id,
        };
        let run = RunEvidence {
            summary: "sample \"quoted\" <b>summary</b>".into(),
            project: "default".into(),
            workflow: "billing".into(),
            run_id: uuid::Uuid::nil(),
            event_id: "evt_sample".into(),
            event_type: "customer.subscription.updated".into(),
            livemode: Some(false),
            customer_id: Some("cus_sample".into()),
            subscription_id: Some("sub_sample".into()),
            expected_plan: Some("plan_expected".into()),
            expected_plan_reason: None,
            expected_features: None,
            keep_access_until: None,
            observed_plan: Some("plan_observed".into()),
            observed_plan_reason: None,
            observed_features: None,
            deploy_sha: Some("sha_sample".into()),
            deploy_sha_reason: None,
            last_stage: Stage::Reconciled,
            missed_stage: Stage::AccessAsserted,
            deadline_at: now,
            run_opened_at: now,
            last_probe: None,
            last_probe_reason: Some("no active probe is configured for this workflow".into()),
            guidance: vec!["step one".into(), "step two".into()],
            drill,
            drill_id,
        };
        let (kind, evidence) = match scope {
            IncidentScope::Run => (IncidentKind::AccessNotChanged, Evidence::Run(Box::new(run))),
            IncidentScope::Project => (
                IncidentKind::StripeDeliveriesRefused,
                Evidence::Project(Box::new(project)),
            ),
        };
        let incident = Incident {
            id: uuid::Uuid::nil(),
            scope,
            run_id: (scope == IncidentScope::Run).then(uuid::Uuid::nil),
            project: "default".into(),
            workflow: "billing".into(),
            kind,
            subject: String::new(),
            title: kind.title().into(),
            status: IncidentStatus::Open,
            evidence,
            opened_at: now,
            acknowledged_at: None,
            resolved_at: None,
            resolution: None,
            drill,
        };
        Message::new(event, &vec![incident; count], "http://assay.invalid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_render_valid_block_kit_and_escape_what_they_show() {
        let templates = Templates::load(None).unwrap();
        let message = Message::sample(AlertEvent::Opened, 2, true);
        let slack = templates.slack(&message).unwrap();
        assert_eq!(slack["blocks"][0]["type"], "header");
        // A drill says so first: in the notification, the header, the subject.
        assert!(
            slack["text"]
                .as_str()
                .unwrap()
                .starts_with("DRILL: 2 customers"),
            "{slack}"
        );
        assert!(
            slack["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .starts_with("DRILL: "),
            "{slack}"
        );
        // A grouped message links to each incident it names.
        assert!(
            slack.to_string().contains(
                "<http://assay.invalid/incidents/00000000-0000-0000-0000-000000000000|cus_sample>"
            ),
            "{slack}"
        );
        let email = templates.email(&message).unwrap();
        assert!(
            email.subject.starts_with("[Assay] DRILL: 2 customers"),
            "{}",
            email.subject
        );
        let real = templates
            .email(&Message::sample(AlertEvent::Opened, 1, false))
            .unwrap();
        assert!(!real.subject.contains("DRILL"), "{}", real.subject);
        assert!(email.html.contains("&lt;b&gt;summary"), "HTML is escaped");
        assert!(email.text.contains("<b>summary"), "text is not");
    }

    #[test]
    fn the_defaults_show_every_field_and_a_dropped_one_is_named() {
        let templates = Templates::load(None).unwrap();
        let mut message = Message::sample(AlertEvent::Opened, 1, true);
        message.context["incident"]["subscription"] = json!("sub_<1>");
        for kind in ["slack", "email", "webhook"] {
            assert_eq!(
                templates.missing_fields(&message, kind),
                Vec::<String>::new(),
                "{kind}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let slack = include_str!("../../templates/alerts/slack.json.hbs")
            .replace("{{incident.customer}}", "someone")
            .replace("{{#if drill}}DRILL · {{/if}}", "")
            .replace("{{headline}}", "{{incident.title}}");
        std::fs::write(dir.path().join("slack.json.hbs"), slack).unwrap();
        let templates = Templates::load(Some(dir.path())).unwrap();
        let missing = templates.missing_fields(&message, "slack");
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing[0].contains("DRILL"), "{missing:?}");
        assert!(
            missing[1].contains("the customer (`cus_sample`)"),
            "{missing:?}"
        );

        // DRILL in the body only is not enough: the notification says it.
        let slack = include_str!("../../templates/alerts/slack.json.hbs").replace(
            "\"text\": \"{{headline}}\"",
            "\"text\": \"{{incident.title}}\"",
        );
        std::fs::write(dir.path().join("slack.json.hbs"), slack).unwrap();
        let templates = Templates::load(Some(dir.path())).unwrap();
        let missing = templates.missing_fields(&message, "slack");
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(missing[0].contains("notification text"), "{missing:?}");
    }

    #[test]
    fn slack_values_cannot_ping_the_channel_or_overflow_a_field() {
        let templates = Templates::load(None).unwrap();
        let mut message = Message::sample(AlertEvent::Opened, 1, false);
        message.context["incident"]["observed_plan"] = json!("<!channel> & co");
        message.context["summary"] = json!("x".repeat(10_000));
        let slack = templates.slack(&message).unwrap().to_string();
        assert!(slack.contains("&lt;!channel&gt; &amp; co"), "{slack}");
        assert!(!slack.contains("<!channel>"));
        assert_eq!(cut(&"é".repeat(1000)).chars().count(), VALUE_LIMIT + 1);
    }

    #[test]
    fn a_broken_override_is_refused_with_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("email.txt.hbs"),
            "line one\n{{#if x}}\nno end\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("slack.json.hbs"),
            "{ \"text\": {{headline}} }",
        )
        .unwrap();
        let errors = Templates::load(Some(dir.path())).unwrap_err();
        let all = errors.join("\n");
        assert!(all.contains("email.txt.hbs line"), "{all}");
        assert!(all.contains(&dir.path().display().to_string()), "{all}");

        std::fs::remove_file(dir.path().join("email.txt.hbs")).unwrap();
        let errors = Templates::load(Some(dir.path())).unwrap_err();
        assert!(errors.join("\n").contains("not JSON"), "{errors:?}");
    }
}
