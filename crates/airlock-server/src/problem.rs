//! Errors on the wire: RFC 9457 `application/problem+json`, one mapping from
//! the domain error kinds to HTTP statuses.

use airlock_api::Problem;
use airlock_service::ServiceError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An HTTP-facing error.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    pub current_state: Option<String>,
    pub field: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status and a message saying what to do.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
            current_state: None,
            field: None,
            retry_after: None,
        }
    }
    /// 401 with a hint.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }
    /// 500: details go to the log, not to the caller.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; the server log has details",
        )
    }
}

/// The one mapping from application errors to HTTP: the status and the
/// problem-detail extras come from [`ServiceError::answer`]; 5xx details go to
/// the log, not to the caller.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let a = e.answer();
        if a.status >= 500 && !e.is_unavailable() {
            tracing::error!(error = %e, "internal error");
        }
        ApiError {
            status: StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            detail: a.detail,
            current_state: a.current_state,
            field: a.field,
            retry_after: a.retry_after,
        }
    }
}

impl From<airlock_core::Error> for ApiError {
    fn from(e: airlock_core::Error) -> Self {
        ServiceError::from(e).into()
    }
}

impl From<airlock_store::StoreError> for ApiError {
    fn from(e: airlock_store::StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: "about:blank".into(),
            title: self.status.canonical_reason().unwrap_or("error").into(),
            status: self.status.as_u16(),
            detail: self.detail,
            current_state: self.current_state,
            field: self.field,
        };
        let mut resp = (self.status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(airlock_api::problem::CONTENT_TYPE),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                h.insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
