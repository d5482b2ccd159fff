//! Builds and runs Assay: the HTTP server (the API and the dashboard on one
//! router, [`app`]), the sweeper, the prober, the alert sender and the drill
//! runner, sharing one store.

use crate::state::AppState;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::alert::worker::AlertSender;
use crate::api;
use crate::config::Config;
use crate::dashboard;
use crate::drill::runner::DrillRunner;
use crate::probe::client::ProbeClient;
use crate::probe::worker::Prober;
use crate::store;
use crate::sweeper::Sweeper;
use crate::watch::Tally;
use crate::watch::worker::Watcher;
use crate::worker;
use std::collections::HashMap;

/// Runs until `shutdown` fires, on a listener the caller bound (tests bind
/// port 0), and on `metrics_bind` for `/metrics` when the configuration
/// names one. Migrations are applied before the first request is accepted.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics_listener = match config.metrics_bind {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for /metrics: {e}"))?,
        ),
        None => None,
    };
    serve_on(config, listener, metrics_listener, shutdown).await
}

/// [`serve`] on listeners the caller bound: `metrics_listener`, when given,
/// serves `/metrics`, which the main listener then does not.
pub async fn serve_on(
    config: Config,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    crate::install_crypto_provider();
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let store = store::connect_with(&config.database, config.outbox(), metrics.clone()).await?;
    let config = Arc::new(config);
    let sweeper = Sweeper::new(store.clone(), config.sweep.clone(), metrics.clone());
    let sweeper_task = tokio::spawn(sweeper.run(shutdown.child_token()));
    let mut clients = HashMap::new();
    for project in config.projects.values() {
        if let Some(probe) = &project.probe {
            let client = ProbeClient::new(&project.name, probe.clone()).map_err(|e| {
                anyhow::anyhow!("project `{}`: the probe client: {e}", project.name)
            })?;
            clients.insert(project.name.clone(), Arc::new(client));
        }
    }
    // Always running, even with no project probed: it also clears the
    // queue of runs whose project stopped being probed.
    let local = listener.local_addr()?;
    // The drills post their webhook to this replica's own listener (unless a
    // project names its ingress): a wildcard bind is reached on loopback.
    let reachable = match local.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, local.port()))
        }
        ip if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, local.port()))
        }
        _ => local,
    };
    let drill_runner = DrillRunner::new(
        store.clone(),
        config.clone(),
        clients.clone(),
        format!("http://{reachable}"),
    )
    .map_err(|e| anyhow::anyhow!("the drill runner: {e}"))?;
    let drill_task = tokio::spawn(worker::run(drill_runner, shutdown.child_token()));
    let prober = Arc::new(Prober::new(
        store.clone(),
        clients,
        config.prober,
        metrics.clone(),
    ));
    let prober_task = tokio::spawn(worker::run(prober, shutdown.child_token()));
    let channels = config
        .projects
        .values()
        .flat_map(|p| {
            p.channels
                .iter()
                .map(|c| ((p.name.clone(), c.name.clone()), c.clone()))
        })
        .collect();
    let alert_sender = AlertSender::new(
        store.clone(),
        channels,
        config.alerts.clone(),
        config.alert_poll_interval,
        metrics.clone(),
    )
    .map_err(|e| anyhow::anyhow!("the alert sender: {e}"))?;
    let alert_task = tokio::spawn(worker::run(alert_sender, shutdown.child_token()));
    let tally = Arc::new(Tally::default());
    let watcher = Watcher::new(
        store.clone(),
        config
            .projects
            .values()
            .map(|p| (p.name.clone(), p.watch))
            .collect(),
        tally.clone(),
        config.watch_interval,
    );
    let watch_task = tokio::spawn(worker::run(watcher, shutdown.child_token()));
    tracing::info!(
        addr = %listener.local_addr()?,
        projects = ?config.projects.keys().collect::<Vec<_>>(),
        sweep_schedule = %config.sweep.schedule_text,
        "assay is serving"
    );
    let state = AppState {
        config,
        store,
        metrics,
        tally,
    };
    let metrics_here = metrics_listener.is_none();
    let metrics_task = match metrics_listener {
        Some(metrics_listener) => {
            tracing::info!(addr = %metrics_listener.local_addr()?, "/metrics is served here");
            let router = api::metrics_router(state.clone());
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                axum::serve(metrics_listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }))
        }
        None => None,
    };
    let app = app(state, metrics_here);
    // The peer's address: the client's, or the proxy's that names the
    // client (for the sign-in lock-out and the audit log).
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .await;
    shutdown.cancel();
    let _ = sweeper_task.await;
    let _ = prober_task.await;
    let _ = alert_task.await;
    let _ = drill_task.await;
    // Last, so that the tally of the final requests is stored.
    let _ = watch_task.await;
    if let Some(task) = metrics_task {
        task.await??;
    }
    served?;
    Ok(())
}

/// Every route Assay serves: the API (whose answers for unknown paths and
/// methods stand for the whole router) and the dashboard, under one request
/// timeout and one trace span per request.
/// `metrics_here`: whether this router serves `/metrics` (else a listener
/// of its own does).
pub fn app(state: AppState, metrics_here: bool) -> Router {
    let metrics_elsewhere = !metrics_here;
    api::router(state.clone())
        .merge(dashboard::router(state))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| async move {
                // On its own listener, /metrics is not served here.
                if metrics_elsewhere && request.uri().path() == "/metrics" {
                    return axum::response::IntoResponse::into_response(api::ApiError::new(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        "no such endpoint: /metrics is served on ASSAY_METRICS_BIND",
                    ));
                }
                next.run(request).await
            },
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(TraceLayer::new_for_http().make_span_with(crate::telemetry::request_span))
}
