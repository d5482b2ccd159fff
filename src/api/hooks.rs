use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::ingest::{self, IngestError};
use crate::stripe::SignatureError;

/// `POST /hooks/stripe/{project}`: 200 only after the event is committed.
pub async fn stripe(
    State(state): State<AppState>,
    Path(project): Path<String>,
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
    match ingest::stripe_event(
        state.store.as_ref(),
        project,
        signature,
        &body,
        crate::now(),
    )
    .await
    {
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
        Err(IngestError::Signature(e)) => {
            let code = match e {
                SignatureError::OutsideTolerance { .. } => "stale_signature",
                SignatureError::NoMatch => "signature_mismatch",
                _ => "invalid_signature_header",
            };
            tracing::warn!(project = %project.name, error = %e, "refused Stripe delivery");
            Err(ApiError::bad_request(code, e.to_string()))
        }
        Err(IngestError::Event(e)) => Err(ApiError::bad_request("malformed_event", e.to_string())),
        Err(IngestError::DrillMarker(e)) => {
            Err(ApiError::bad_request("malformed_event", e.to_string()))
        }
        Err(IngestError::Store(e)) => Err(e.into()),
    }
}
