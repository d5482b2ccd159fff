use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::{ApiError, AppPath, AppState};
use crate::ingest::{self, IngestError};
use crate::stripe::Refusal;

/// `POST /hooks/stripe/{project}`: 200 only after the event is committed.
#[utoipa::path(post, path = "/hooks/stripe/{project}", operation_id = "stripe_webhook", tag = "stripe",
    params(("project" = String, Path, description = "the project whose endpoint Stripe calls"),
        ("Stripe-Signature" = String, Header, description = "Stripe's signature of the body")),
    request_body(content = serde_json::Value, description = "a Stripe event, as Stripe sends it", content_type = "application/json"),
    responses((status = 200, description = "stored (or seen before); sent only after the commit", body = serde_json::Value),
        (status = 400, description = "a bad signature, a stale timestamp or a malformed event; nothing stored", body = crate::api::error::ErrorBody),
        (status = 404, description = "no such project", body = crate::api::error::ErrorBody),
        (status = 413, description = "the body is over 512 KiB", body = crate::api::error::ErrorBody),
        (status = 503, description = "the project has no webhook secret", body = crate::api::error::ErrorBody)))]
pub async fn stripe(
    State(state): State<AppState>,
    AppPath(project): AppPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let project = state
        .config
        .projects
        .get(&project)
        .ok_or_else(|| ApiError::not_found("project"))?;
    let body = body?;
    let signature = headers
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or_default());
    let now = crate::now();
    let outcome = ingest::stripe_event(state.store.as_ref(), project, signature, &body, now).await;
    if let Some(counted) = ingest::counted(&outcome) {
        state.tally.count(&project.name, counted, now);
        state
            .metrics
            .stripe_delivery(&project.name, counted.as_str());
    }
    match outcome {
        Ok(accepted) => Ok(Json(json!({
            "received": true,
            "event_id": accepted.event_id,
            "duplicate": accepted.duplicate,
            "run_id": accepted.run_id,
        }))),
        Err(IngestError::NoSecret(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook_secret_missing",
            "this project has no Stripe webhook secret configured; set ASSAY_STRIPE_WEBHOOK_SECRET",
        )),
        Err(IngestError::Store(e)) => Err(e.into()),
        Err(e) => {
            let code = e.refusal().map_or("malformed_event", Refusal::as_str);
            if let IngestError::Signature(_) = e {
                tracing::warn!(project = %project.name, error = %e, "refused Stripe delivery");
            }
            Err(ApiError::bad_request(code, e.to_string()))
        }
    }
}
