//! The one place that decides what a client sees of an error: HTTP status, a stable code, and
//! a safe message. 5xx details are logged once here and never echoed.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use provenix_core::api::{ErrorBody, ErrorResponse};

use crate::log::LogError;

/// Every error a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400 with a code and message for the client.
    #[error("{code}: {message}")]
    BadRequest { code: &'static str, message: String },
    /// 404 with a code and message.
    #[error("{code}: {message}")]
    NotFound { code: &'static str, message: String },
    /// 408: the request took longer than the per-request time limit (a client sending its
    /// body too slowly, or a handler waiting too long).
    #[error("request timed out")]
    Timeout,
    /// 413: body or batch over the limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// 503 with Retry-After: the sequencer queue is full.
    #[error("overloaded")]
    Overloaded,
    /// 503 with Retry-After: shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// 503 with Retry-After: storage failed (details logged, not sent).
    #[error("storage unavailable: {0}")]
    Storage(String),
    /// 500: anything else (details logged, not sent).
    #[error("internal: {0}")]
    Internal(String),
}

impl AppError {
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }

    /// Status, stable code and client-safe message.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            AppError::BadRequest { code, message } => {
                (StatusCode::BAD_REQUEST, code, message.clone())
            }
            AppError::NotFound { code, message } => (StatusCode::NOT_FOUND, code, message.clone()),
            AppError::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request took longer than the server's time limit".into(),
            ),
            AppError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", m.clone()),
            AppError::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the log is busy; retry after the Retry-After delay".into(),
            ),
            AppError::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the log is shutting down; retry later".into(),
            ),
            AppError::Storage(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the log's storage is unavailable; nothing was acknowledged, retry later".into(),
            ),
            AppError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".into(),
            ),
        }
    }
}

impl From<LogError> for AppError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Overloaded => AppError::Overloaded,
            LogError::ShuttingDown => AppError::ShuttingDown,
            LogError::Storage(s) => AppError::Storage(s.to_string()),
            LogError::Signing(s) => AppError::Internal(s),
        }
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        AppError::Storage(e.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, code, "request failed");
        }
        let body = ErrorResponse {
            error: ErrorBody {
                code: code.to_owned(),
                message,
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
