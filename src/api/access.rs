//! `/v1/keys` (a project's scoped API keys) and `/v1/audit` (its audit
//! log): both for a key with the `admin` scope.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::runs::{page_params, parse_filter};
use super::{ApiError, AppJson, AppPath, AppQuery, AppState, Caller};
use crate::access::keys::{KeyRequest, issue};
use crate::access::{Action, ApiKey, AuditEntry, Scope};
use crate::store::{AuditFilter, MAX_PAGE, Page};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for, such as `billing-app`.
    name: String,
    /// Any of `report`, `read`, `operate`, `admin`; at least one.
    scopes: Vec<Scope>,
    /// When it stops working, RFC 3339; none: until revoked.
    expires_at: Option<DateTime<Utc>>,
    /// An `ak_test_` key rather than `ak_live_`.
    #[serde(default)]
    test: bool,
}

/// A key just made: the only time its secret is shown.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The key itself: keep it now, it is not shown again.
    secret: String,
    key: ApiKey,
}

/// `POST /v1/keys`: a new key of this project.
#[utoipa::path(post, path = "/v1/keys", operation_id = "create_key", tag = "access", security(("api_key" = [])),
    request_body = CreateKey,
    responses((status = 201, description = "the key, its secret shown this once", body = CreatedKey), (status = 400, description = "a malformed request", body = crate::api::error::ErrorBody), (status = 401, description = "no or a wrong API key", body = crate::api::error::ErrorBody),
        (status = 403, description = "the key lacks the `admin` scope", body = crate::api::error::ErrorBody), (status = 422, description = "a field is not valid", body = crate::api::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let project = caller.may(Action::ManageKeys)?;
    let now = crate::now();
    let request = KeyRequest {
        project: &project.name,
        name: body.name.trim(),
        scopes: body.scopes,
        expires_at: body.expires_at,
        test: body.test,
        created_by: &caller.actor.name,
    };
    if let Some(why) = request.refusal(now) {
        return Err(ApiError::unprocessable("invalid_field", why));
    }
    let issued = issue(request, now);
    state.store.create_key(&issued.key, &caller.actor).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            secret: issued.secret,
            key: issued.key,
        }),
    ))
}

/// `GET /v1/keys`: this project's keys, revoked ones included, newest
/// first; never their secrets.
#[utoipa::path(get, path = "/v1/keys", operation_id = "list_keys", tag = "access", security(("api_key" = [])),
    responses((status = 200, description = "the project's keys", body = Vec<ApiKey>), (status = 401, description = "no or a wrong API key", body = crate::api::error::ErrorBody),
        (status = 403, description = "the key lacks the `admin` scope", body = crate::api::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ApiKey>>, ApiError> {
    let project = caller.may(Action::ManageKeys)?;
    Ok(Json(state.store.list_keys(&project.name).await?))
}

/// `DELETE /v1/keys/{id}`: revokes the key at once, on every replica; its
/// record stays, for the audit log.
#[utoipa::path(delete, path = "/v1/keys/{id}", operation_id = "revoke_key", tag = "access", security(("api_key" = [])),
    params(("id" = String, Path, description = "the key's id")),
    responses((status = 200, description = "the key, revoked", body = ApiKey), (status = 401, description = "no or a wrong API key", body = crate::api::error::ErrorBody),
        (status = 403, description = "the key lacks the `admin` scope", body = crate::api::error::ErrorBody), (status = 404, description = "no such key in this project", body = crate::api::error::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<String>,
) -> Result<Json<ApiKey>, ApiError> {
    let project = caller.may(Action::ManageKeys)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("API key"))?;
    Ok(Json(
        state
            .store
            .revoke_key(&project.name, id, &caller.actor, crate::now())
            .await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this action, such as `incident_resolved`.
    action: Option<String>,
    /// Only this actor: an operator's name or a key's prefix.
    actor: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    /// `jsonl`: every matching entry, one JSON object per line, for export.
    format: Option<String>,
}

/// `GET /v1/audit`: who did what in this project, newest first;
/// `format=jsonl` exports it all as JSON lines.
#[utoipa::path(get, path = "/v1/audit", operation_id = "audit_log", tag = "access", security(("api_key" = [])), params(AuditQuery),
    responses((status = 200, description = "audit entries, newest first", body = Page<AuditEntry>), (status = 400, description = "a malformed request", body = crate::api::error::ErrorBody), (status = 401, description = "no or a wrong API key", body = crate::api::error::ErrorBody),
        (status = 403, description = "the key lacks the `admin` scope", body = crate::api::error::ErrorBody)))]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(query): AppQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let project = caller.may(Action::ReadAudit)?;
    let export = match query.format.as_deref() {
        None | Some("json") => false,
        Some("jsonl") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`format` is `json` or `jsonl`, not `{other}`"),
            ));
        }
    };
    let (limit, cursor) = page_params(query.limit, query.cursor.as_deref())?;
    // A key belongs to one project: the sign-ins, which belong to none,
    // are for the dashboard's admins of every project.
    let filter = AuditFilter {
        project: project.name.clone(),
        sign_ins: false,
        action: parse_filter(query.action.as_deref())?,
        actor: query.actor,
        limit,
        cursor,
    };
    if !export {
        return Ok(Json(state.store.audit_log(&filter).await?).into_response());
    }
    Ok(audit_lines(state.store.clone(), filter))
}

/// Every audit entry `filter` matches, as JSON lines: page after page, each
/// written as it is read, so that an export of any size holds one page in
/// memory.
pub fn audit_lines(
    store: std::sync::Arc<dyn crate::store::Store>,
    filter: AuditFilter,
) -> Response {
    let filter = AuditFilter {
        limit: MAX_PAGE,
        ..filter
    };
    let lines = futures::stream::try_unfold(Some(filter), move |filter| {
        let store = store.clone();
        async move {
            let Some(mut filter) = filter else {
                return Ok(None);
            };
            let page = store.audit_log(&filter).await?;
            let corrupt = |what: &str, e: &dyn std::fmt::Display| {
                crate::store::StoreError::Corrupt(format!("audit export: {what}: {e}"))
            };
            let mut text = String::new();
            for entry in &page.data {
                text.push_str(&serde_json::to_string(entry).map_err(|e| corrupt("entry", &e))?);
                text.push('\n');
            }
            let next = match page.next_cursor.as_deref() {
                Some(cursor) => {
                    filter.cursor = Some(
                        crate::store::Cursor::decode(cursor).map_err(|e| corrupt("cursor", &e))?,
                    );
                    Some(filter)
                }
                None => None,
            };
            Ok::<_, crate::store::StoreError>(Some((text, next)))
        }
    });
    // A failure ends the body early, which a client sees as a broken
    // transfer (no final chunk); it is logged here.
    let lines = futures::TryStreamExt::inspect_err(lines, |e| {
        tracing::error!(error = %e, "the audit export failed part way");
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}
