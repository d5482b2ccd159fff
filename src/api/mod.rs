//! HTTP: thin handlers that parse, authorise, call the store and map errors.

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

/// The project an SDK call acts for, named by its bearer API key.
pub struct ApiProject(pub ProjectConfig);

impl FromRequestParts<AppState> for ApiProject {
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
        state
            .config
            .project_for_api_key(key)
            .cloned()
            .map(ApiProject)
            .ok_or_else(|| ApiError::unauthorized("the API key is not valid for any project"))
    }
}

pub use crate::run::{MAX_FIELD_LEN, is_clean_field};

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
