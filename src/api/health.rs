use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{ApiError, AppState};

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health", responses((status = 200, description = "the process answers", body = serde_json::Value)))]
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the database answers and is migrated.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health", responses((status = 200, description = "the database answers and is migrated", body = serde_json::Value),
    (status = 503, description = "not ready", body = crate::api::error::ErrorBody)))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ready().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready");
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the database is unreachable or not migrated",
        )
    })?;
    Ok(Json(json!({ "status": "ready" })))
}

/// `GET /metrics`: the Prometheus text exposition. Bind it privately: it
/// names projects and channels.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "health", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let standing = state.store.standing(crate::now()).await?;
    Ok((
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(&standing),
    ))
}
