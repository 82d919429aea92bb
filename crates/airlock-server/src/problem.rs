//! Errors on the wire: RFC 9457 `application/problem+json`, one mapping from
//! the domain error kinds to HTTP statuses.

use airlock_api::Problem;
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

impl From<airlock_core::Error> for ApiError {
    fn from(e: airlock_core::Error) -> Self {
        use airlock_core::Error as E;
        let detail = e.to_string();
        match e {
            E::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, detail),
            E::Conflict { current_state, .. } => ApiError {
                current_state: Some(current_state),
                ..ApiError::new(StatusCode::CONFLICT, detail)
            },
            E::Forbidden { .. } => ApiError::new(StatusCode::FORBIDDEN, detail),
            E::Invalid { field, .. } => ApiError {
                field: Some(field),
                ..ApiError::new(StatusCode::BAD_REQUEST, detail)
            },
            E::Unavailable { retry_after, .. } => ApiError {
                retry_after,
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, detail)
            },
        }
    }
}

impl From<airlock_store::StoreError> for ApiError {
    fn from(e: airlock_store::StoreError) -> Self {
        use airlock_store::StoreError as S;
        match e {
            S::Rejected(inner) => inner.into(),
            S::Duplicate(what) => {
                ApiError::new(StatusCode::CONFLICT, format!("{what} already exists"))
            }
            S::Unavailable(why) => ApiError {
                retry_after: Some(5),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("database unavailable: {why}"),
                )
            },
            S::Corrupt(why) => ApiError::internal(format!("corrupt store: {why}")),
        }
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
