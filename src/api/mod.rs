//! HTTP: thin handlers that parse, authorise, call the store and map errors.

pub mod access;
mod drills;
pub mod error;
mod health;
mod hooks;
mod incidents;
mod runs;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::access::{Action, Actor, ActorKind, Grant, KeyState};
use crate::config::ProjectConfig;
use crate::state::AppState;

/// The largest Stripe event we accept. Stripe's events are a few KiB; this
/// leaves room for expanded objects without letting a body exhaust memory.
pub const STRIPE_BODY_LIMIT: usize = 512 * 1024;
/// The largest SDK request body.
pub const API_BODY_LIMIT: usize = 64 * 1024;

/// The OpenAPI document's frame: what the routes do not say themselves.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Assay",
        description = "Proves that Stripe billing events turn into customer access. Errors are `{\"error\": {\"code\", \"message\"}}`; an API key of one project never sees another's data (404, not 403)."
    ),
    modifiers(&ApiKeyScheme),
    tags(
        (name = "stripe", description = "Stripe webhook ingest"),
        (name = "runs", description = "Runs and the app's stage reports (the SDK)"),
        (name = "incidents", description = "Incidents and their alert deliveries"),
        (name = "drills", description = "Failure drills"),
        (name = "access", description = "Scoped API keys and the audit log (the `admin` scope)"),
        (name = "health", description = "Liveness, readiness and metrics"),
    )
)]
struct ApiDoc;

/// The project API key, sent as `Authorization: Bearer <key>`.
struct ApiKeyScheme;

impl utoipa::Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The project's API key"))
                    .build(),
            ),
        );
    }
}

/// Every documented route, registered together with its OpenAPI operation
/// (`routes!` reads each handler's `#[utoipa::path]`), so the document and
/// the router cannot drift apart.
fn documented() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .routes(routes!(runs::open, runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::report_stage))
        .routes(routes!(incidents::list))
        .routes(routes!(incidents::get))
        .routes(routes!(incidents::acknowledge))
        .routes(routes!(incidents::resolve))
        .routes(routes!(drills::start, drills::list))
        .routes(routes!(drills::get))
        .routes(routes!(access::create, access::list))
        .routes(routes!(access::revoke))
        .routes(routes!(access::audit))
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT));
    let hooks = OpenApiRouter::new()
        .routes(routes!(hooks::stripe))
        .layer(DefaultBodyLimit::max(STRIPE_BODY_LIMIT));
    let health = OpenApiRouter::new()
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics));
    OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .merge(api)
        .merge(hooks)
        .merge(health)
}

/// The OpenAPI document of the HTTP API, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().split_for_parts().1
}

/// `/metrics` alone, for the listener of `ASSAY_METRICS_BIND`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "this listener serves /metrics only",
            )
        })
        .with_state(state)
}

/// The API's routes, with the contract's error answers for paths and
/// methods it does not know.
pub fn router(state: AppState) -> Router {
    let (documented, openapi) = documented().split_for_parts();
    let openapi = Arc::new(openapi);
    Router::new()
        .merge(documented)
        .route(
            "/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { axum::Json(openapi.as_ref().clone()) }
            }),
        )
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .with_state(state)
}

/// A JSON body whose rejections speak the contract's error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct AppJson<T>(pub T);

/// A query string whose rejections speak the contract's error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct AppQuery<T>(pub T);

/// Path parameters whose rejections speak the contract's error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct AppPath<T>(pub T);

/// Who calls, named by the bearer API key: the project it acts for, what it
/// is granted there, and who it is in the audit log. A handler's first step
/// is [`Caller::may`] with its action.
pub struct Caller {
    pub project: ProjectConfig,
    pub grant: Grant,
    pub actor: Actor,
}

impl Caller {
    /// The project, when the key may take `action`; else 403, naming the
    /// scope it needs.
    pub fn may(&self, action: Action) -> Result<&ProjectConfig, ApiError> {
        if self.grant.allows(action) {
            Ok(&self.project)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "missing_scope",
                self.grant.refusal(action),
            ))
        }
    }
}

/// How often a key's `last_used_at` is written, at most: often enough to
/// tell a key in use from a forgotten one, rarely enough to cost nothing.
const LAST_USED_PRECISION: chrono::Duration = chrono::Duration::minutes(1);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("send the project's API key as `Authorization: Bearer <key>`")
        })?;
        let key = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <key>`")
            })?;
        let address = state.client_of_request(parts);
        // The configuration's key (ASSAY_API_KEY) has every scope.
        if let Some(project) = state.config.project_for_api_key(key) {
            return Ok(Caller {
                project: project.clone(),
                grant: Grant::every_scope(),
                actor: Actor {
                    kind: ActorKind::Key,
                    name: "the configured API key".into(),
                    address,
                },
            });
        }
        let not_valid = || ApiError::unauthorized("the API key is not valid for any project");
        let stored = state
            .store
            .key_by_hash(&crate::access::keys::hash(key))
            .await?
            .ok_or_else(not_valid)?;
        let now = crate::now();
        match stored.state(now) {
            KeyState::Active => {}
            KeyState::Revoked(at) => {
                return Err(ApiError::unauthorized(format!(
                    "the API key {} was revoked at {}",
                    stored.prefix,
                    crate::time::rfc3339(&at)
                )));
            }
            KeyState::Expired(at) => {
                return Err(ApiError::unauthorized(format!(
                    "the API key {} expired at {}",
                    stored.prefix,
                    crate::time::rfc3339(&at)
                )));
            }
        }
        let project = state
            .config
            .projects
            .get(&stored.project)
            .ok_or_else(not_valid)?;
        if stored
            .last_used_at
            .is_none_or(|at| now - at >= LAST_USED_PRECISION)
        {
            let store = state.store.clone();
            let id = stored.id;
            // Not awaited: the call need not wait for a note of its use.
            tokio::spawn(async move {
                if let Err(e) = store.key_used(id, now).await {
                    tracing::warn!(error = %e, "noting an API key's use failed");
                }
            });
        }
        Ok(Caller {
            project: project.clone(),
            grant: Grant::Key(stored.scopes.clone()),
            actor: Actor {
                kind: ActorKind::Key,
                name: stored.prefix,
                address,
            },
        })
    }
}

pub use crate::run::{MAX_FIELD_LEN, is_clean_field};

/// Refuses a field that is not 1 to 255 printable characters (422).
pub fn check_field(name: &str, value: &str) -> Result<(), ApiError> {
    if !is_clean_field(value) {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("`{name}` must be 1 to {MAX_FIELD_LEN} printable characters"),
        ));
    }
    Ok(())
}

/// A `{run}` path segment. One that no run could have answers 404, like an
/// unknown run.
pub fn run_ref(text: &str) -> Result<crate::store::RunRef, ApiError> {
    if !is_clean_field(text) {
        return Err(ApiError::not_found("run"));
    }
    Ok(crate::store::RunRef::parse(text))
}

/// A JSON body that may be left out: an empty body reads as `T::default()`.
/// Takes the raw body so that a missing `Content-Type` is not an error.
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let body = body?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::unprocessable("invalid_body", e.to_string()),
        _ => ApiError::bad_request("malformed_json", e.to_string()),
    })
}
