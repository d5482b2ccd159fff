//! The one error type of the HTTP boundary, mapped once to a status and the
//! contract's body: `{"error": {"code": "...", "message": "..."}}`.
//! Internal errors are logged here, once, and answered without detail.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::incident::IncidentError;
use crate::run::ReportError;
use crate::store::StoreError;

/// The contract's error body, as documented in the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ErrorDetail {
    /// A stable, machine-readable code, e.g. `signature_mismatch`.
    code: String,
    /// What went wrong, for a person.
    message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// Logs the cause and answers a bare 500: no detail, no secret, no trace.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the cause is in the server's log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        if self.status == StatusCode::UNAUTHORIZED {
            return (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
        (self.status, body).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Report(e @ ReportError::NotReportable(_)) => {
                ApiError::bad_request("stage_not_reportable", e.to_string())
            }
            StoreError::Report(e @ ReportError::MissingObservedPlan) => {
                ApiError::unprocessable("missing_observed_plan", e.to_string())
            }
            StoreError::Incident(e @ IncidentError::AlreadyResolved) => {
                ApiError::new(StatusCode::CONFLICT, "incident_resolved", e.to_string())
            }
            StoreError::NotMigrated => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the database is not migrated yet",
            ),
            StoreError::WriterStopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the event was not stored; deliver it again",
            ),
            e @ StoreError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("{e}; the event was not stored, deliver it again"),
            ),
            other => ApiError::internal(&other),
        }
    }
}

fn body_too_large(status: StatusCode) -> bool {
    status == StatusCode::PAYLOAD_TOO_LARGE
}

impl ApiError {
    fn too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is larger than this endpoint accepts",
        )
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        if body_too_large(rejection.status()) {
            ApiError::too_large()
        } else {
            ApiError::bad_request("unreadable_body", rejection.body_text())
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        match rejection {
            JsonRejection::JsonDataError(e) => {
                ApiError::unprocessable("invalid_body", e.body_text())
            }
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::bad_request("malformed_json", e.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(e) => e.into(),
            other if body_too_large(other.status()) => ApiError::too_large(),
            other => ApiError::bad_request("unreadable_body", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::bad_request("invalid_query", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        match rejection {
            // A segment that does not decode (%FF is not UTF-8) names
            // nothing that exists, like an unknown run or project.
            PathRejection::FailedToDeserializePathParams(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "not found: the path does not decode as UTF-8",
            ),
            other => ApiError::internal(&other.body_text()),
        }
    }
}
