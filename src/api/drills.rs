//! `POST /v1/drills` starts a failure drill; `GET /v1/drills/{id}` reads its
//! report as it runs; `GET /v1/drills` lists a project's drills.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::runs::page_params;
use super::{ApiError, ApiProject, AppQuery, AppState, optional_json};
use crate::drill::{Drill, DrillTrigger};
use crate::store::Page;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StartDrill {
    workflow: Option<String>,
}

/// `POST /v1/drills`: 202 with the drill as it starts; it runs in the
/// background, on whichever replica claims it.
pub async fn start(
    State(state): State<AppState>,
    ApiProject(project): ApiProject,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: StartDrill = optional_json(body)?;
    let workflow = crate::drill::workflow(body.workflow.as_deref())
        .map_err(|e| ApiError::unprocessable("unknown_workflow", e))?;
    let drill =
        crate::drill::runner::start(state.store.as_ref(), &project, workflow, DrillTrigger::Api)
            .await?;
    let location = format!("/v1/drills/{}", drill.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(drill),
    )
        .into_response())
}

pub async fn get(
    State(state): State<AppState>,
    ApiProject(project): ApiProject,
    Path(id): Path<String>,
) -> Result<Json<Drill>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("drill"))?;
    Ok(Json(state.store.drill(&project.name, id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    ApiProject(project): ApiProject,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Json<Page<Drill>>, ApiError> {
    let (limit, cursor) = page_params(query.limit, query.cursor.as_deref())?;
    Ok(Json(
        state
            .store
            .list_drills(&project.name, limit, cursor)
            .await?,
    ))
}
