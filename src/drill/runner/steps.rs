//! The drill's steps, one method each: what the step does and what it came
//! to, with the broken link and its fix named when it failed.

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::{DrillRunner, RUN_WAIT, WAIT_POLL, failed, lost};
use crate::alert::templates::Message;
use crate::alert::{AlertEvent, DeliveryStatus};
use crate::config::ProjectConfig;
use crate::drill::{BrokenLink, Drill, PROBE_HEADER, StepOutcome};
use crate::incident::Incident;
use crate::run::{RunStatus, Source, Stage, StageReport, after};
use crate::store::{RunRef, StoreError};

impl DrillRunner {
    /// Signs the drill's event with the project's webhook secret and posts
    /// it through the real ingest path, over HTTP.
    pub(super) async fn ingest(
        &self,
        drill: &Drill,
        project: &ProjectConfig,
        now: DateTime<Utc>,
    ) -> StepOutcome {
        let Some(secret) = project.webhook_secrets.first() else {
            return failed(
                BrokenLink::IngestRefused,
                format!(
                    "project `{}` has no Stripe webhook secret, so Assay refuses every Stripe webhook",
                    project.name
                ),
                "set ASSAY_STRIPE_WEBHOOK_SECRET (stripe_webhook_secret) to the signing secret of the Stripe endpoint",
            );
        };
        let base = project
            .drill
            .ingest_url
            .as_ref()
            .map_or(self.own_url.as_str(), url::Url::as_str)
            .trim_end_matches('/')
            .to_owned();
        let url = format!("{base}/hooks/stripe/{}", project.name);
        // What reports and logs show: no user info or query, where a token
        // could hide.
        let shown = crate::settings::shown_url(&url);
        let body = serde_json::to_vec(&drill.event(project.drill.lookup_key.as_deref(), now))
            .unwrap_or_default();
        let signature = crate::stripe::signature::sign(&body, secret.expose(), now.timestamp());
        let response = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("stripe-signature", signature)
            .timeout(self.ingest_timeout)
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                return failed(
                    BrokenLink::IngestRefused,
                    format!(
                        "could not post the webhook to {url}: {}",
                        crate::error_chain(&e.without_url())
                    ),
                    "check that this replica reaches Assay's webhook endpoint (ASSAY_DRILL_INGEST_URL / drill.ingest_url, or this replica's listener)",
                );
            }
        };
        let status = response.status();
        let answer: Value = response
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        if status.is_success() {
            return StepOutcome::Passed(format!(
                "the signed test-mode event {} was accepted by {shown} (HTTP {})",
                drill.event_id,
                status.as_u16()
            ));
        }
        let code = answer["error"]["code"].as_str().unwrap_or_default();
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        let fix = match (status.as_u16(), code) {
            (_, "signature_mismatch") => {
                "the webhook secret this replica signs with is not one the receiving Assay accepts: give every replica the same ASSAY_STRIPE_WEBHOOK_SECRET, the signing secret of the Stripe endpoint"
            }
            (_, "stale_signature") => {
                "the clocks of this replica and the receiving Assay differ by more than 300 s: synchronise them (NTP)"
            }
            (_, "webhook_secret_missing") => {
                "the receiving Assay has no webhook secret for this project: set ASSAY_STRIPE_WEBHOOK_SECRET there"
            }
            (404, _) => {
                "the ingest URL does not reach this project's webhook endpoint: check ASSAY_DRILL_INGEST_URL and the project's name on the receiving Assay"
            }
            (500..=599, _) => {
                "the receiving Assay could not store the event: see its log (is its database reachable?)"
            }
            _ => "see the receiving Assay's answer above",
        };
        failed(
            BrokenLink::IngestRefused,
            format!(
                "{shown} answered HTTP {}{}",
                status.as_u16(),
                if code.is_empty() {
                    String::new()
                } else {
                    format!(" `{code}`: {message}")
                }
            ),
            fix,
        )
    }

    pub(super) async fn run_opened(
        &self,
        drill: &mut Drill,
        now: DateTime<Utc>,
    ) -> Result<StepOutcome, StoreError> {
        let key = RunRef::EventId(drill.event_id.clone());
        match self.store.run_detail(&drill.project, &key).await {
            Ok(detail) if detail.run.drill_id != Some(drill.id) => Ok(failed(
                BrokenLink::NoRun,
                format!(
                    "the run of {} is not marked as this drill's; it would count as a real customer's",
                    drill.event_id
                ),
                "report this as a bug in Assay",
            )),
            Ok(detail) => {
                drill.run_id = Some(detail.run.id);
                Ok(StepOutcome::Passed(format!(
                    "run {} opened for {}, expecting plan {}; access due at {}",
                    detail.run.id,
                    drill.customer_id,
                    detail
                        .run
                        .expected_plan
                        .as_deref()
                        .unwrap_or("(from the app's report)"),
                    crate::time::rfc3339(&detail.run.access_due_at)
                )))
            }
            Err(StoreError::NotFound(_)) if now < after(drill.step_started_at, RUN_WAIT) => {
                Ok(StepOutcome::WaitUntil(after(now, WAIT_POLL)))
            }
            Err(StoreError::NotFound(_)) => Ok(failed(
                BrokenLink::NoRun,
                format!(
                    "the webhook was accepted, but no run for {} appeared in this Assay's database within {}",
                    drill.event_id,
                    crate::time::written(RUN_WAIT)
                ),
                "the ingest URL reaches an Assay with another database: point ASSAY_DRILL_INGEST_URL at the Assay that shares this database",
            )),
            Err(e) => Err(e),
        }
    }

    /// The app's side of a healthy start: the subscription row reconciled.
    pub(super) async fn reconciled(
        &self,
        drill: &mut Drill,
        now: DateTime<Utc>,
    ) -> Result<StepOutcome, StoreError> {
        let Some(run_id) = drill.run_id else {
            return Ok(lost(BrokenLink::NoRun, "run"));
        };
        let report = StageReport {
            expected_plan: Some(drill.timings.plan.clone()),
            evidence: Some(json!({ "drill_id": drill.id })),
            ..StageReport::default()
        };
        let run = match self
            .store
            .report_stage(
                &drill.project,
                &RunRef::Id(run_id),
                Stage::Reconciled,
                report,
                Source::Drill,
                now,
            )
            .await
        {
            Ok(run) => run,
            Err(StoreError::Report(e)) => {
                return Ok(failed(
                    BrokenLink::StageRefused,
                    e.to_string(),
                    "report this as a bug in Assay",
                ));
            }
            Err(e) => return Err(e),
        };
        if run.status != RunStatus::Open || run.stage < Stage::Reconciled {
            return Ok(failed(
                BrokenLink::StageRefused,
                format!(
                    "after reporting `reconciled` the run is {} at stage {}",
                    run.status, run.stage
                ),
                "the drill deadline passed before the drill could report `reconciled`: lengthen ASSAY_DRILL_DEADLINE",
            ));
        }
        Ok(StepOutcome::Passed(format!(
            "`reconciled` reported; the run waits for access until {}",
            crate::time::rfc3339(&run.access_due_at)
        )))
    }

    /// Makes the access check fail safely: the app is probed (with the
    /// drill's header) when the project is probed, and whatever it answers
    /// counts as a mismatch.
    pub(super) async fn access_failed(
        &self,
        drill: &mut Drill,
        project: &ProjectConfig,
        now: DateTime<Utc>,
    ) -> Result<StepOutcome, StoreError> {
        let Some(run_id) = drill.run_id else {
            return Ok(lost(BrokenLink::NoRun, "run"));
        };
        let Some(client) = self.probes.get(&project.name) else {
            return Ok(StepOutcome::Passed(
                "no probe is configured, so access stays unconfirmed, as with an app whose grant job failed"
                    .to_owned(),
            ));
        };
        let run = self
            .store
            .run_detail(&drill.project, &RunRef::Id(run_id))
            .await?
            .run;
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&drill.id.to_string()) {
            headers.insert(PROBE_HEADER, value);
        }
        let attempt = client.probe(&run, &headers).await;
        let seen = match (&attempt.error, &attempt.observed_plan) {
            (Some(error), _) => format!("the probe failed ({error})"),
            (None, Some(plan)) => format!("the app answered plan {plan}"),
            (None, None) => "the app answered no plan".to_owned(),
        };
        let url = attempt.url.clone();
        self.store
            .record_drill_probe(&drill.project, run_id, attempt, now)
            .await?;
        Ok(StepOutcome::Passed(format!(
            "probed {url} with the {PROBE_HEADER} header: {seen}; the drill counts it as access that did not change"
        )))
    }

    pub(super) async fn incident_opened(
        &self,
        drill: &mut Drill,
        now: DateTime<Utc>,
    ) -> Result<StepOutcome, StoreError> {
        let Some(run_id) = drill.run_id else {
            return Ok(lost(BrokenLink::NoRun, "run"));
        };
        let detail = self
            .store
            .run_detail(&drill.project, &RunRef::Id(run_id))
            .await?;
        if let Some(incident) = detail.incidents.first() {
            drill.incident_id = Some(incident.id);
            let late = (incident.opened_at - detail.run.access_due_at)
                .to_std()
                .unwrap_or_default();
            return Ok(StepOutcome::Passed(format!(
                "incident {} opened {} after the deadline: {}",
                incident.id,
                crate::time::span(i64::try_from(late.as_millis()).unwrap_or(i64::MAX)),
                incident.title
            )));
        }
        let give_up = after(detail.run.access_due_at, drill.timings.sweep_grace());
        if now < give_up {
            return Ok(StepOutcome::WaitUntil(after(now, WAIT_POLL).min(give_up)));
        }
        let sweep = &self.config.sweep;
        let schedule = match &sweep.schedule {
            Some(_) => format!("`{}` on this replica", sweep.schedule_text),
            None => "off on this replica".to_owned(),
        };
        Ok(failed(
            BrokenLink::SweeperLate,
            format!(
                "no incident {} after the access deadline ({}); the run is still {}",
                crate::time::written(drill.timings.sweep_grace()),
                crate::time::rfc3339(&detail.run.access_due_at),
                detail.run.status
            ),
            format!(
                "the sweeper opens incidents on ASSAY_SWEEP_SCHEDULE, {schedule}: make sure a replica sweeps, at intervals shorter than the drill's sweep grace ({}), and that its sweeps succeed (see its log)",
                crate::time::written(drill.timings.sweep_grace())
            ),
        ))
    }

    async fn incident(
        &self,
        drill: &Drill,
    ) -> Result<Option<crate::store::IncidentDetail>, StoreError> {
        match drill.incident_id {
            Some(id) => self.store.incident(&drill.project, id).await.map(Some),
            None => Ok(None),
        }
    }

    /// The title, the evidence, and every drill channel's rendered message.
    pub(super) async fn incident_complete(
        &self,
        drill: &Drill,
        project: &ProjectConfig,
    ) -> Result<StepOutcome, StoreError> {
        let Some(detail) = self.incident(drill).await? else {
            return Ok(lost(BrokenLink::IncidentIncomplete, "incident"));
        };
        let incident: &Incident = &detail.incident;
        let mut problems = crate::drill::incident_problems(incident);
        let in_evidence = problems.len();
        let message = Message::new(
            AlertEvent::Opened,
            std::slice::from_ref(incident),
            &self.config.alerts.public_url,
        );
        let mut kinds: Vec<&str> = project
            .alert_channels(true)
            .map(|c| c.kind.as_str())
            .collect();
        kinds.dedup();
        for kind in &kinds {
            for missing in self.config.alerts.templates.missing_fields(&message, kind) {
                if !problems.contains(&missing) {
                    problems.push(missing);
                }
            }
        }
        if problems.is_empty() {
            return Ok(StepOutcome::Passed(format!(
                "the title names the missing access and the evidence holds the event, customer, subscription, expected and observed plan, deploy SHA and retry guidance{}",
                if kinds.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; the {} messages show them all, marked DRILL",
                        kinds.join(" and ")
                    )
                }
            )));
        }
        let fix = if problems.len() > in_evidence {
            "put the missing fields back into the alert templates in ASSAY_ALERT_TEMPLATES_DIR (the built-in templates under templates/alerts/ show them all)"
        } else {
            "the incident is built by Assay itself: report this as a bug in Assay"
        };
        Ok(failed(
            BrokenLink::IncidentIncomplete,
            problems.join("; "),
            fix,
        ))
    }

    /// Every drill channel took the alert.
    pub(super) async fn alert_delivered(
        &self,
        drill: &Drill,
        project: &ProjectConfig,
        now: DateTime<Utc>,
    ) -> Result<StepOutcome, StoreError> {
        let channels: Vec<&str> = project
            .alert_channels(true)
            .map(|c| c.name.as_str())
            .collect();
        if channels.is_empty() {
            return Ok(failed(
                BrokenLink::AlertNotDelivered,
                format!(
                    "project `{}` has no alert channel: an incident would reach nobody",
                    project.name
                ),
                "configure a channel (ASSAY_SLACK_WEBHOOK_URL, ASSAY_SMTP_URL, ASSAY_ALERT_WEBHOOK_URL, or [[projects.<name>.channels]]; `drill = true` keeps one for drills)",
            ));
        }
        let Some(detail) = self.incident(drill).await? else {
            return Ok(lost(BrokenLink::AlertNotDelivered, "incident"));
        };
        let mut sent = Vec::new();
        let mut dead = Vec::new();
        let mut waiting = Vec::new();
        for channel in channels {
            let delivery = detail
                .deliveries
                .iter()
                .find(|d| d.channel == channel && d.event == AlertEvent::Opened);
            match delivery {
                Some(d) if d.status == DeliveryStatus::Sent => sent.push(format!(
                    "{channel} ({} attempt{})",
                    d.attempts.len(),
                    if d.attempts.len() == 1 { "" } else { "s" }
                )),
                Some(d) if d.status == DeliveryStatus::Pending => waiting.push(format!(
                    "{channel}: not delivered after {} attempt{}{}",
                    d.attempts.len(),
                    if d.attempts.len() == 1 { "" } else { "s" },
                    d.last_error
                        .as_ref()
                        .map(|e| format!(", last error: {e}"))
                        .unwrap_or_default()
                )),
                Some(d) => dead.push(format!(
                    "{channel}: {}{}",
                    d.status,
                    d.last_error
                        .as_ref()
                        .map(|e| format!(", last error: {e}"))
                        .unwrap_or_default()
                )),
                None => waiting.push(format!("{channel}: no alert queued")),
            }
        }
        let fix = "check that each channel's receiver is up and that its URL and credentials are right; Assay keeps retrying a real incident's alert until ASSAY_ALERT_GIVE_UP_AFTER";
        if !dead.is_empty() {
            return Ok(failed(BrokenLink::AlertNotDelivered, dead.join("; "), fix));
        }
        if waiting.is_empty() {
            return Ok(StepOutcome::Passed(format!(
                "the alert reached {}",
                sent.join(", ")
            )));
        }
        let give_up = after(detail.incident.opened_at, drill.timings.alert_timeout());
        if now < give_up {
            return Ok(StepOutcome::WaitUntil(after(now, WAIT_POLL).min(give_up)));
        }
        Ok(failed(
            BrokenLink::AlertNotDelivered,
            format!(
                "within {} of the incident: {}",
                crate::time::written(drill.timings.alert_timeout()),
                waiting.join("; ")
            ),
            fix,
        ))
    }

    /// Cleans up: resolves every open incident of the drill's run (their
    /// resolve alerts go to the same channels) and ends the run if the
    /// drill broke off before the sweeper judged it. The run is found by
    /// its event id, so that a run the drill never saw (a webhook that timed
    /// out but was stored, a step lost with its replica) is cleaned up too.
    pub(super) async fn resolved(
        &self,
        drill: &Drill,
        now: DateTime<Utc>,
    ) -> Result<StepOutcome, StoreError> {
        let key = RunRef::EventId(drill.event_id.clone());
        let detail = match self.store.run_detail(&drill.project, &key).await {
            Ok(detail) => detail,
            Err(StoreError::NotFound(_)) => {
                return Ok(StepOutcome::Passed("nothing to clean up".to_owned()));
            }
            Err(e) => return Err(e),
        };
        let mut done = Vec::new();
        for incident in &detail.incidents {
            if incident.status == crate::incident::IncidentStatus::Resolved {
                continue;
            }
            self.store
                .resolve_incident(
                    &drill.project,
                    incident.id,
                    format!("failure drill {} finished", drill.id),
                    &crate::access::Actor::system(),
                    now,
                )
                .await?;
            done.push(format!("incident {} resolved", incident.id));
        }
        let run = self
            .store
            .end_drill_run(&drill.project, detail.run.id, now)
            .await?;
        done.push(format!("run {} is {}", run.id, run.status));
        Ok(StepOutcome::Passed(done.join("; ")))
    }
}
