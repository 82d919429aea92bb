//! The one error type callers act on: each variant maps to one HTTP status and
//! one CLI message. Messages say what went wrong and what to do.

/// A refusal or failure a caller can act on by its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist (or is not visible to the caller).
    #[error("{what} not found")]
    NotFound { what: String },
    /// The object is in a state where this action is not possible.
    #[error("{message} (current state: {current_state})")]
    Conflict {
        current_state: String,
        message: String,
    },
    /// The caller may not do this.
    #[error("forbidden: {reason}")]
    Forbidden { reason: String },
    /// A field of the input is invalid.
    #[error("invalid {field}: {why}")]
    Invalid { field: String, why: String },
    /// A dependency (provider, database) cannot be reached right now.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<u64>,
    },
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(field: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            why: why.into(),
        }
    }
    /// Shorthand for [`Error::Forbidden`].
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Error::Forbidden {
            reason: reason.into(),
        }
    }
    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }
}
