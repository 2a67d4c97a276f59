//! API errors as the Master API shows them: `{"code": "...", "message": "..."}`
//! with Amon's codes and our status mapping (SPEC §8).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::store::StoreError;

/// One field that failed validation (`422 ValidationFailed`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn missing(field: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            code: "MissingParameter",
            message: format!("{field} is required"),
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.to_string(),
            code: "Invalid",
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    MissingParameter(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    Gone(String),
    #[error("request body is larger than {limit} bytes")]
    RequestTooLarge { limit: usize },
    #[error("{message}")]
    ValidationFailed { message: String, errors: Vec<FieldError> },
    #[error("{0}")]
    EventTooOld(String),
    #[error("{0}")]
    ServiceUnavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument(_) => "InvalidArgument",
            ApiError::MissingParameter(_) => "MissingParameter",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::ResourceNotFound(_) => "ResourceNotFound",
            ApiError::Gone(_) => "Gone",
            ApiError::RequestTooLarge { .. } => "RequestTooLarge",
            ApiError::ValidationFailed { .. } => "ValidationFailed",
            ApiError::EventTooOld(_) => "EventTooOld",
            ApiError::ServiceUnavailable(_) => "ServiceUnavailable",
            ApiError::Internal(_) => "InternalError",
        }
    }

    pub fn validation(errors: Vec<FieldError>) -> ApiError {
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        ApiError::ValidationFailed {
            message: format!("invalid {}", fields.join(", ")),
            errors,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidArgument(_) | ApiError::MissingParameter(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::ResourceNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ValidationFailed { .. } | ApiError::EventTooOld(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(message) = self {
            // Logged once here, at the top; the client gets the same text.
            tracing::error!(error = %message, "internal error");
        }
        let errors = match self {
            ApiError::ValidationFailed { errors, .. } => Some(errors.as_slice()),
            _ => None,
        };
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::ServiceUnavailable(_) = self {
            // Every 503 is temporary: say when to come back.
            response.insert_header((actix_web::http::header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
        }
        response.json(ErrorBody {
            code: self.code(),
            message: self.to_string(),
            errors,
        })
    }
}

/// What a `503` tells the client to wait before trying again, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Stopped => ApiError::ServiceUnavailable("the store is not running".into()),
            e if e.is_unavailable() => {
                ApiError::ServiceUnavailable(format!("the database cannot take writes now: {e}"))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}
