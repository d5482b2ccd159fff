use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

use super::{
    ApiError, AppJson, AppPath, AppQuery, AppState, Caller, MAX_FIELD_LEN, check_field,
    is_clean_field, optional_json, run_ref,
};
use crate::access::Action;
use crate::run::{BILLING_WORKFLOW, Expectation, Run, RunSpec, Source, Stage, StageReport};
use crate::store::{Cursor, DEFAULT_PAGE, MAX_PAGE, Page, RunDetail, RunFilter};

fn check_optional(name: &str, value: &Option<String>) -> Result<(), ApiError> {
    value.as_deref().map_or(Ok(()), |v| check_field(name, v))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenRun {
    event_id: String,
    event_type: String,
    customer_id: String,
    subscription_id: Option<String>,
    expected_plan: Option<String>,
}

/// `POST /v1/runs`: 201 when this call opened the run, 200 when it existed.
#[utoipa::path(post, path = "/v1/runs", operation_id = "open_run", tag = "runs", security(("api_key" = [])),
    request_body = OpenRun,
    responses((status = 201, description = "the run this call opened", body = Run), (status = 200, description = "the run that existed", body = Run), (status = 400, description = "a malformed request", body = crate::api::error::ErrorBody), (status = 401, description = "no or a wrong API key", body = crate::api::error::ErrorBody), (status = 403, description = "the key lacks the scope this needs (`missing_scope`)", body = crate::api::error::ErrorBody),
        (status = 422, description = "a field is not valid", body = crate::api::error::ErrorBody)))]
pub async fn open(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<OpenRun>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let project = caller.may(Action::OpenRun)?;
    check_field("event_id", &body.event_id)?;
    if body.event_id.starts_with(crate::drill::EVENT_PREFIX) {
        return Err(ApiError::unprocessable(
            "reserved_event_id",
            format!(
                "event ids starting with `{}` belong to Assay's failure drills",
                crate::drill::EVENT_PREFIX
            ),
        ));
    }
    check_field("event_type", &body.event_type)?;
    check_field("customer_id", &body.customer_id)?;
    check_optional("subscription_id", &body.subscription_id)?;
    check_optional("expected_plan", &body.expected_plan)?;
    let expectation = match body.expected_plan {
        Some(plan) => Expectation::Plan(plan.trim().to_owned()),
        None => Expectation::Unknown {
            reason: "the app opened the run without an expected_plan".into(),
        },
    };
    let spec = RunSpec {
        project: project.name.clone(),
        workflow: BILLING_WORKFLOW.to_owned(),
        event_id: body.event_id,
        event_type: body.event_type,
        customer_id: Some(body.customer_id),
        subscription_id: body.subscription_id,
        expectation,
        livemode: None,
        event_created_at: None,
        deadlines: project.deadlines,
        probe_start: project.probe_start(),
        source: Source::Sdk,
        drill_id: None,
    };
    let span = tracing::info_span!("open_run", project = %project.name, event_id = %spec.event_id);
    let (run, created) = state
        .store
        .open_run(spec, crate::now())
        .instrument(span)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(run)))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    observed_plan: Option<String>,
    observed_features: Option<Vec<String>>,
    deploy_sha: Option<String>,
    expected_plan: Option<String>,
    evidence: Option<serde_json::Map<String, Value>>,
}

/// `POST /v1/runs/{run}/stages/{stage}`; the body is optional.
#[utoipa::path(post, path = "/v1/runs/{run}/stages/{stage}", operation_id = "report_stage", tag = "runs", security(("api_key" = [])),
    params(("run" = String, Path, description = "the run's UUID or its Stripe event id"), ("stage" = crate::run::Stage, Path, description = "`reconciled` or `access_asserted`")),
    request_body(content = ReportBody, description = "optional"),
    responses((status = 200, description = "the run after the report", body = Run), (status = 400, description = "a malformed request", body = crate::api::error::ErrorBody), (status = 401, description = "no or a wrong API key", body = crate::api::error::ErrorBody), (status = 403, description = "the key lacks the scope this needs (`missing_scope`)", body = crate::api::error::ErrorBody),
        (status = 404, description = "no such run in this project", body = crate::api::error::ErrorBody),
        (status = 422, description = "a field is not valid, or `access_asserted` without an observed plan", body = crate::api::error::ErrorBody)))]
pub async fn report_stage(
    State(state): State<AppState>,
    caller: Caller,
    AppPath((run, stage)): AppPath<(String, String)>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Run>, ApiError> {
    let project = caller.may(Action::ReportStage)?;
    let stage: Stage = stage.parse().map_err(|e: crate::names::UnknownName| {
        ApiError::bad_request("unknown_stage", e.to_string())
    })?;
    let body: ReportBody = optional_json(body)?;
    check_optional("observed_plan", &body.observed_plan)?;
    if let Some(features) = &body.observed_features {
        if features.len() > 200 {
            return Err(ApiError::unprocessable(
                "invalid_field",
                "`observed_features` holds at most 200 lookup keys",
            ));
        }
        for feature in features {
            check_field("observed_features[]", feature)?;
        }
    }
    check_optional("deploy_sha", &body.deploy_sha)?;
    check_optional("expected_plan", &body.expected_plan)?;
    let report = StageReport {
        observed_plan: body.observed_plan,
        observed_features: body.observed_features,
        deploy_sha: body.deploy_sha,
        expected_plan: body.expected_plan,
        evidence: body.evidence.map(Value::Object),
        trace_id: crate::telemetry::trace_id(&headers),
    };
    let span = tracing::info_span!("stage_report", project = %project.name, run = %run, %stage);
    let run = state
        .store
        .report_stage(
            &project.name,
            &run_ref(&run)?,
            stage,
            report,
            Source::Sdk,
            crate::now(),
        )
        .instrument(span)
        .await?;
    Ok(Json(run))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `open`, `succeeded`, `failed` or `superseded`.
    status: Option<String>,
    stage: Option<String>,
    customer_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    /// `true` lists failure drills' instead of real customers'.
    drill: Option<bool>,
}

/// Reads `limit` and `cursor`, shared by every list endpoint.
pub(super) fn page_params(
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<(u32, Option<Cursor>), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` must be between 1 and {MAX_PAGE}"),
        ));
    }
    let cursor = cursor
        .map(Cursor::decode)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_cursor", e.to_string()))?;
    Ok((limit, cursor))
}

pub(super) fn parse_filter<T: std::str::FromStr<Err = crate::names::UnknownName>>(
    value: Option<&str>,
) -> Result<Option<T>, ApiError> {
    value
        .map(str::parse)
        .transpose()
        .map_err(|e: crate::names::UnknownName| {
            ApiError::bad_request("invalid_query", e.to_string())
        })
}

/// `GET /v1/runs`: newest first.
#[utoipa::path(get, path = "/v1/runs", operation_id = "list_runs", tag = "runs", security(("api_key" = [])), params(ListQuery),
    responses((status = 200, description = "runs, newest first", body = Page<Run>), (status = 400, description = "a malformed request", body = crate::api::error::ErrorBody), (status = 401, description = "no or a wrong API key", body = crate::api::error::ErrorBody), (status = 403, description = "the key lacks the scope this needs (`missing_scope`)", body = crate::api::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Json<Page<Run>>, ApiError> {
    let project = caller.may(Action::ReadRuns)?;
    let (limit, cursor) = page_params(query.limit, query.cursor.as_deref())?;
    if query
        .customer_id
        .as_deref()
        .is_some_and(|c| !is_clean_field(c))
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`customer_id` must be 1 to {MAX_FIELD_LEN} printable characters"),
        ));
    }
    let filter = RunFilter {
        status: parse_filter(query.status.as_deref())?,
        stage: parse_filter(query.stage.as_deref())?,
        customer_id: query.customer_id,
        customer_id_prefix: None,
        drill: query.drill.unwrap_or(false),
        limit,
        cursor,
    };
    Ok(Json(state.store.list_runs(&project.name, &filter).await?))
}

/// `GET /v1/runs/{run}`: the run with its timeline, probes and incidents.
#[utoipa::path(get, path = "/v1/runs/{run}", operation_id = "get_run", tag = "runs", security(("api_key" = [])),
    params(("run" = String, Path, description = "the run's UUID or its Stripe event id")),
    responses((status = 200, description = "the run with its timeline, probes and incidents", body = RunDetail), (status = 400, description = "a malformed request", body = crate::api::error::ErrorBody), (status = 401, description = "no or a wrong API key", body = crate::api::error::ErrorBody), (status = 403, description = "the key lacks the scope this needs (`missing_scope`)", body = crate::api::error::ErrorBody),
        (status = 404, description = "no such run in this project", body = crate::api::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(run): AppPath<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let project = caller.may(Action::ReadRuns)?;
    Ok(Json(
        state
            .store
            .run_detail(&project.name, &run_ref(&run)?)
            .await?,
    ))
}
