//! `assay drill run`: one drill, end to end, either in this process (Assay
//! serves on a loopback port, on the configured database, for as long as
//! the drill takes) or against a running Assay over its API.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Drill, DrillStatus, DrillTrigger};
use crate::alert::DeliveryStatus;
use crate::config::Config;
use crate::store::{RunDetail, RunRef, Store};

/// How often the command looks at the drill.
const POLL: Duration = Duration::from_millis(200);

/// Runs a drill with Assay in this process: the same server as `assay
/// serve` (sweeper, alert sender, drill runner), on a loopback port.
pub async fn in_process(
    config: Config,
    project: Option<&str>,
    workflow: &str,
) -> anyhow::Result<Drill> {
    let workflow = super::workflow(Some(workflow)).map_err(|e| anyhow!(e))?;
    let project = config
        .project_named(project)
        .map_err(|e| anyhow!(e))?
        .clone();
    crate::install_crypto_provider();
    // Migrated before the server starts, so that the two do not race.
    let store = crate::store::connect(&config.database).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on a loopback port")?;
    let shutdown = CancellationToken::new();
    // No listener for /metrics: a running `assay serve` may hold its port.
    let mut server = tokio::spawn(crate::server::serve_on(
        config,
        listener,
        None,
        shutdown.clone(),
    ));
    let drill = super::runner::start(
        store.as_ref(),
        &project,
        workflow,
        DrillTrigger::Cli,
        &crate::access::Actor::cli(),
    )
    .await?;
    let limit = drill.timings.longest();
    let started = Instant::now();
    let outcome = loop {
        tokio::select! {
            served = &mut server => {
                break Err(match served {
                    Ok(Err(e)) => e.context("Assay stopped during the drill"),
                    _ => anyhow!("Assay stopped during the drill"),
                });
            }
            _ = tokio::time::sleep(POLL) => {}
        }
        match store.drill(&project.name, drill.id).await {
            Ok(now) if now.status != DrillStatus::Running || started.elapsed() > limit => {
                break Ok(now);
            }
            Ok(_) => {}
            Err(e) => break Err(anyhow::Error::from(e).context("reading the drill failed")),
        }
    };
    // The drill's run, found by its event id whatever became of the drill.
    let run = store
        .run_detail(&project.name, &RunRef::EventId(drill.event_id.clone()))
        .await
        .ok();
    // Its last alerts (the resolve alert) go out before Assay stops here,
    // within the drill's alert timeout.
    if let (Ok(_), Some(run)) = (&outcome, &run) {
        let settled = Instant::now();
        while !server.is_finished()
            && settled.elapsed() < drill.timings.alert_timeout()
            && alerts_pending(store.as_ref(), run).await
        {
            tokio::time::sleep(POLL).await;
        }
    }
    shutdown.cancel();
    if !server.is_finished() {
        let _ = server.await;
    }
    // What could not go out by now would go out stale, whenever Assay next
    // serves on this database: a drill leaves nothing behind, however it
    // ended.
    if let Some(run) = run {
        match store
            .skip_drill_alerts(
                &run.run.project,
                run.run.id,
                "the drill ended before this alert could be delivered",
                crate::now(),
            )
            .await
        {
            Ok(0) => {}
            Ok(skipped) => {
                tracing::warn!(skipped, run_id = %run.run.id, "drill alerts not delivered before the drill ended were skipped")
            }
            Err(e) => {
                tracing::error!(error = %e, run_id = %run.run.id, "the drill's undelivered alerts could not be skipped")
            }
        }
    }
    outcome
}

/// Whether an alert about one of `run`'s incidents is still to be sent; a
/// store that cannot answer ends the wait.
async fn alerts_pending(store: &dyn Store, run: &RunDetail) -> bool {
    for incident in &run.incidents {
        match store.incident(&run.run.project, incident.id).await {
            Ok(detail)
                if detail
                    .deliveries
                    .iter()
                    .any(|d| d.status == DeliveryStatus::Pending) =>
            {
                return true;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the drill's alerts");
                return false;
            }
        }
    }
    false
}

/// Runs a drill on a running Assay through `POST /v1/drills` and reads its
/// report until it finishes.
pub async fn remote(
    base: &str,
    api_key: Option<&str>,
    project: Option<&str>,
    workflow: &str,
) -> anyhow::Result<Drill> {
    let key = api_key
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| anyhow!("set ASSAY_API_KEY (or --api-key) to the project's API key"))?;
    crate::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build an HTTP client")?;
    let base = base.trim_end_matches('/');
    let call = |request: reqwest::RequestBuilder| async move {
        let response = request
            .bearer_auth(key)
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach Assay at {base}: {}", crate::error_chain(&e)))?;
        let status = response.status();
        let body: Value = serde_json::from_slice(&response.bytes().await?).unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "Assay answered HTTP {}: {} {}",
                status.as_u16(),
                body["error"]["code"].as_str().unwrap_or_default(),
                body["error"]["message"].as_str().unwrap_or_default()
            );
        }
        serde_json::from_value::<Drill>(body).context("Assay's answer is not a drill report")
    };
    let drill = call(
        http.post(format!("{base}/v1/drills"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json!({ "workflow": workflow }).to_string()),
    )
    .await?;
    if let Some(project) = project
        && project != drill.project
    {
        bail!(
            "the API key belongs to project `{}`, not `{project}`; the drill {} runs on `{}`",
            drill.project,
            drill.id,
            drill.project
        );
    }
    let limit = drill.timings.longest();
    let started = Instant::now();
    loop {
        tokio::time::sleep(POLL).await;
        let now = call(http.get(format!("{base}/v1/drills/{}", drill.id))).await?;
        if now.status != DrillStatus::Running || started.elapsed() > limit {
            return Ok(now);
        }
    }
}
