//! `POST /v1/drills` starts a failure drill; `GET /v1/drills/{id}` reads its
//! report as it runs; `GET /v1/drills` lists a project's drills.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::runs::page_params;
use super::{ApiError, AppPath, AppQuery, AppState, Caller, optional_json};
use crate::access::Action;
use crate::drill::{Drill, DrillTrigger};
use crate::store::Page;

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartDrill {
    /// The workflow to drill; `billing`, the only one, by default.
    workflow: Option<String>,
}

/// `POST /v1/drills`: 202 with the drill as it starts; it runs in the
/// background, on whichever replica claims it.
#[utoipa::path(post, path = "/v1/drills", operation_id = "start_drill", tag = "drills", security(("api_key" = [])),
    request_body(content = StartDrill, description = "optional"),
    responses((status = 202, description = "the drill as it starts; poll `GET /v1/drills/{id}`", body = Drill), (status = 400, description = "a malformed request", body = crate::api::error::ErrorBody), (status = 401, description = "no or a wrong API key", body = crate::api::error::ErrorBody), (status = 403, description = "the key lacks the scope this needs (`missing_scope`)", body = crate::api::error::ErrorBody),
        (status = 422, description = "an unknown workflow", body = crate::api::error::ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let project = caller.may(Action::StartDrill)?;
    let body: StartDrill = optional_json(body)?;
    let workflow = crate::drill::workflow(body.workflow.as_deref())
        .map_err(|e| ApiError::unprocessable("unknown_workflow", e))?;
    let drill = crate::drill::runner::start(
        state.store.as_ref(),
        project,
        workflow,
        DrillTrigger::Api,
        &caller.actor,
    )
    .await?;
    let location = format!("/v1/drills/{}", drill.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(drill),
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/drills/{id}", operation_id = "get_drill", tag = "drills", security(("api_key" = [])),
    params(("id" = String, Path, description = "the drill's UUID")),
    responses((status = 200, description = "the drill's report", body = Drill), (status = 400, description = "a malformed request", body = crate::api::error::ErrorBody), (status = 401, description = "no or a wrong API key", body = crate::api::error::ErrorBody), (status = 403, description = "the key lacks the scope this needs (`missing_scope`)", body = crate::api::error::ErrorBody),
        (status = 404, description = "no such drill in this project", body = crate::api::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<String>,
) -> Result<Json<Drill>, ApiError> {
    let project = caller.may(Action::ReadDrills)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("drill"))?;
    Ok(Json(state.store.drill(&project.name, id).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/drills", operation_id = "list_drills", tag = "drills", security(("api_key" = [])), params(ListQuery),
    responses((status = 200, description = "the project's drills, newest first", body = Page<Drill>), (status = 400, description = "a malformed request", body = crate::api::error::ErrorBody), (status = 401, description = "no or a wrong API key", body = crate::api::error::ErrorBody), (status = 403, description = "the key lacks the scope this needs (`missing_scope`)", body = crate::api::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Json<Page<Drill>>, ApiError> {
    let project = caller.may(Action::ReadDrills)?;
    let (limit, cursor) = page_params(query.limit, query.cursor.as_deref())?;
    Ok(Json(
        state
            .store
            .list_drills(&project.name, limit, cursor)
            .await?,
    ))
}
