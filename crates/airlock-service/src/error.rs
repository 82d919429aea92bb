//! The one error type of the service layer. Each kind tells the caller what
//! to do; the HTTP layer maps kinds to statuses in one place
//! (`airlock-server`'s `problem.rs`), the CLI and background loops read the
//! message.

use airlock_providers::ProviderError;
use airlock_store::StoreError;

/// What a service call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A refusal the caller can act on: not found, conflict, forbidden, invalid, unavailable.
    #[error(transparent)]
    Domain(#[from] airlock_core::Error),
    /// The store refused (a domain rule, a duplicate) or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A provider refused the input (the caller's to fix) or could not be reached.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// This replica is at a limit; retry after `retry_after` seconds.
    #[error("{message}")]
    Busy { message: String, retry_after: u64 },
    /// A bug or an unexpected failure: the message goes to the log, not to the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Shorthand for service results.
pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    /// An unexpected failure (the HTTP layer logs it and hides the details).
    pub fn internal(err: impl std::fmt::Display) -> Self {
        ServiceError::Internal(err.to_string())
    }

    /// The object is not in a state for this (someone else moved it first).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            ServiceError::Domain(airlock_core::Error::Conflict { .. })
                | ServiceError::Store(StoreError::Duplicate(_))
                | ServiceError::Store(StoreError::Rejected(airlock_core::Error::Conflict { .. }))
        )
    }

    /// A dependency (database, provider) cannot be reached right now; retrying may help.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ServiceError::Domain(airlock_core::Error::Unavailable { .. })
                | ServiceError::Store(StoreError::Unavailable(_))
                | ServiceError::Store(StoreError::Rejected(
                    airlock_core::Error::Unavailable { .. }
                ))
                | ServiceError::Provider(ProviderError::Unreachable { .. })
        )
    }
}

/// How a [`ServiceError`] is answered on the wire: the status code (RFC 9110
/// numbers, the REST API's and the run stream's error frame's), the message
/// and the problem-detail extras. The HTTP layer turns this into
/// `application/problem+json`; it is the only table from error kinds to
/// statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// What went wrong and what to do (internal errors: a pointer to the log).
    pub detail: String,
    /// The object's state, for conflicts.
    pub current_state: Option<String>,
    /// The offending input field, for invalid input.
    pub field: Option<String>,
    /// Seconds after which a retry may succeed.
    pub retry_after: Option<u64>,
}

impl Answer {
    fn new(status: u16, detail: impl Into<String>) -> Answer {
        Answer {
            status,
            detail: detail.into(),
            current_state: None,
            field: None,
            retry_after: None,
        }
    }
}

impl From<&airlock_core::Error> for Answer {
    fn from(e: &airlock_core::Error) -> Answer {
        use airlock_core::Error as E;
        let detail = e.to_string();
        match e {
            E::NotFound { .. } => Answer::new(404, detail),
            E::Conflict { current_state, .. } => Answer {
                current_state: Some(current_state.clone()),
                ..Answer::new(409, detail)
            },
            E::Forbidden { .. } => Answer::new(403, detail),
            E::Invalid { field, .. } => Answer {
                field: Some(field.clone()),
                ..Answer::new(400, detail)
            },
            E::Unavailable { retry_after, .. } => Answer {
                retry_after: *retry_after,
                ..Answer::new(503, detail)
            },
        }
    }
}

impl ServiceError {
    /// The wire answer for this error.
    pub fn answer(&self) -> Answer {
        match self {
            ServiceError::Domain(e) | ServiceError::Store(StoreError::Rejected(e)) => e.into(),
            ServiceError::Store(StoreError::Duplicate(what)) => {
                Answer::new(409, format!("{what} already exists"))
            }
            ServiceError::Store(StoreError::Unavailable(why)) => Answer {
                retry_after: Some(5),
                ..Answer::new(503, format!("database unavailable: {why}"))
            },
            ServiceError::Store(StoreError::Corrupt(_)) | ServiceError::Internal(_) => {
                Answer::new(500, "internal error; the server log has details")
            }
            ServiceError::Provider(e @ ProviderError::Refused { .. }) => {
                Answer::new(400, e.to_string())
            }
            ServiceError::Provider(e @ ProviderError::Unreachable { .. }) => {
                Answer::new(503, e.to_string())
            }
            ServiceError::Busy {
                message,
                retry_after,
            } => Answer {
                retry_after: Some(*retry_after),
                ..Answer::new(429, message.clone())
            },
        }
    }
}

/// A configuration section that cannot be set up at start-up: a notifier, a
/// secret file, a tool's `run_as` user. The message names the section and
/// what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

impl From<String> for SetupError {
    fn from(s: String) -> Self {
        SetupError(s)
    }
}
