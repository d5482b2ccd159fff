use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde::Deserialize;
use uuid::Uuid;

use super::runs::{page_params, parse_filter};
use super::{ApiError, AppPath, AppQuery, AppState, Caller, optional_json};
use crate::access::Action;
use crate::incident::Incident;
use crate::store::{IncidentDetail, IncidentFilter, Page};

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `open`, `acknowledged` or `resolved`.
    status: Option<String>,
    /// `run` (about one run) or `project` (about a project's input,
    /// configuration or probe path); both when absent.
    scope: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    /// `true` lists failure drills' instead of real customers'.
    drill: Option<bool>,
}

fn incident_id(text: &str) -> Result<Uuid, ApiError> {
    // Not a UUID cannot name an incident: the same answer as an unknown one.
    Uuid::parse_str(text).map_err(|_| ApiError::not_found("incident"))
}

#[utoipa::path(get, path = "/v1/incidents", operation_id = "list_incidents", tag = "incidents", security(("api_key" = [])), params(ListQuery),
    responses((status = 200, description = "incidents, newest first", body = Page<Incident>), (status = 400, description = "a malformed request", body = crate::api::error::ErrorBody), (status = 401, description = "no or a wrong API key", body = crate::api::error::ErrorBody), (status = 403, description = "the key lacks the scope this needs (`missing_scope`)", body = crate::api::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Json<Page<Incident>>, ApiError> {
    let project = caller.may(Action::ReadIncidents)?;
    let (limit, cursor) = page_params(query.limit, query.cursor.as_deref())?;
    let filter = IncidentFilter {
        status: parse_filter(query.status.as_deref())?,
        scope: parse_filter(query.scope.as_deref())?,
        drill: query.drill.unwrap_or(false),
        limit,
        cursor,
    };
    Ok(Json(
        state.store.list_incidents(&project.name, &filter).await?,
    ))
}

#[utoipa::path(get, path = "/v1/incidents/{id}", operation_id = "get_incident", tag = "incidents", security(("api_key" = [])), params(("id" = String, Path, description = "the incident's UUID")),
    responses((status = 200, description = "the incident with its alert deliveries", body = IncidentDetail), (status = 400, description = "a malformed request", body = crate::api::error::ErrorBody), (status = 401, description = "no or a wrong API key", body = crate::api::error::ErrorBody), (status = 403, description = "the key lacks the scope this needs (`missing_scope`)", body = crate::api::error::ErrorBody), (status = 404, description = "no such incident in this project", body = crate::api::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<String>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let project = caller.may(Action::ReadIncidents)?;
    Ok(Json(
        state
            .store
            .incident(&project.name, incident_id(&id)?)
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/incidents/{id}/acknowledge", operation_id = "acknowledge_incident", tag = "incidents", security(("api_key" = [])), params(("id" = String, Path, description = "the incident's UUID")),
    responses((status = 200, description = "the incident, acknowledged", body = Incident), (status = 400, description = "a malformed request", body = crate::api::error::ErrorBody), (status = 401, description = "no or a wrong API key", body = crate::api::error::ErrorBody), (status = 403, description = "the key lacks the scope this needs (`missing_scope`)", body = crate::api::error::ErrorBody), (status = 404, description = "no such incident in this project", body = crate::api::error::ErrorBody),
        (status = 409, description = "the incident is resolved", body = crate::api::error::ErrorBody)))]
pub async fn acknowledge(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<String>,
) -> Result<Json<Incident>, ApiError> {
    let project = caller.may(Action::AcknowledgeIncident)?;
    let incident = state
        .store
        .acknowledge_incident(
            &project.name,
            incident_id(&id)?,
            &caller.actor,
            crate::now(),
        )
        .await?;
    Ok(Json(incident))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    resolution: Option<String>,
}

/// `POST /v1/incidents/{id}/resolve`, with an optional `{"resolution": "..."}`.
#[utoipa::path(post, path = "/v1/incidents/{id}/resolve", operation_id = "resolve_incident", tag = "incidents", security(("api_key" = [])), params(("id" = String, Path, description = "the incident's UUID")),
    request_body(content = ResolveBody, description = "optional"),
    responses((status = 200, description = "the incident, resolved", body = Incident), (status = 400, description = "a malformed request", body = crate::api::error::ErrorBody), (status = 401, description = "no or a wrong API key", body = crate::api::error::ErrorBody), (status = 403, description = "the key lacks the scope this needs (`missing_scope`)", body = crate::api::error::ErrorBody), (status = 404, description = "no such incident in this project", body = crate::api::error::ErrorBody)))]
pub async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Incident>, ApiError> {
    let project = caller.may(Action::ResolveIncident)?;
    let id = incident_id(&id)?;
    let body: ResolveBody = optional_json(body)?;
    let resolution = body
        .resolution
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "resolved by hand through the API".to_owned());
    let stray_control = resolution
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'));
    if resolution.len() > 2000 || stray_control {
        return Err(ApiError::unprocessable(
            "invalid_field",
            "`resolution` must be at most 2000 characters of text (no control characters but line breaks and tabs)",
        ));
    }
    let incident = state
        .store
        .resolve_incident(&project.name, id, resolution, &caller.actor, crate::now())
        .await?;
    Ok(Json(incident))
}
