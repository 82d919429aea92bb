//! Every JSON request body the API accepts, parsed by kind through the
//! handlers' own types and steps (strict JSON, then the pure field parsers
//! they apply before touching state). The entry point for fuzzing; handlers
//! do not call it and nothing here reaches the store.

use airlock_core::request::ReviewDecision;
use airlock_core::{GroupName, Span, UserName};
use airlock_store::LockKind;
use axum::body::Bytes;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// A JSON request body, named for the endpoint that takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `POST /api/v1/requests` and `POST /api/v1/breakglass`.
    NewRequest,
    /// `POST /api/v1/requests/{id}/reviews`.
    Review,
    /// `POST /api/v1/requests/{id}/withdraw|revoke` (optional body).
    Comment,
    /// `POST /api/v1/requests/{id}/credentials` (optional body).
    Credentials,
    /// `POST /api/v1/tokens`.
    Token,
    /// `POST /api/v1/tokens/revoke`.
    RevokeTokens,
    /// `POST /api/v1/locks`.
    NewLock,
    /// `POST /api/v1/runs`.
    Exec,
    /// `POST /api/v1/operations/{name}/runs`.
    Operation,
    /// `POST /api/v1/runs/{id}/reviews`.
    RunReview,
    /// `POST /api/v1/runs/{id}/start|cancel` (optional body).
    RunComment,
    /// `POST /api/v1/auth/device/token`.
    DevicePoll,
}

impl BodyKind {
    /// Every kind, in a fixed order (a fuzzer picks one by index).
    pub const ALL: &'static [BodyKind] = &[
        BodyKind::NewRequest,
        BodyKind::Review,
        BodyKind::Comment,
        BodyKind::Credentials,
        BodyKind::Token,
        BodyKind::RevokeTokens,
        BodyKind::NewLock,
        BodyKind::Exec,
        BodyKind::Operation,
        BodyKind::RunReview,
        BodyKind::RunComment,
        BodyKind::DevicePoll,
    ];
}

/// What `ApiJson` does with the bytes it read.
fn json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    serde_json::from_slice(bytes).map_err(|e| BodyError(format!("invalid JSON body: {e}")))
}

fn detail(e: ApiError) -> String {
    e.detail
}

fn span(s: &str) -> Result<Span, BodyError> {
    s.parse::<Span>().map_err(|e| BodyError(e.to_string()))
}

/// Why a body is refused: the reason a client would see in the 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub String);

impl From<String> for BodyError {
    fn from(s: String) -> Self {
        BodyError(s)
    }
}

/// Parses `bytes` as the body of `kind`; `Err` carries the reason a client would see.
pub fn parse_body(kind: BodyKind, bytes: &[u8]) -> Result<(), BodyError> {
    match kind {
        BodyKind::NewRequest => {
            let b: crate::api::NewRequest = json(bytes)?;
            span(&b.duration)?;
        }
        BodyKind::Review | BodyKind::RunReview => {
            let b: crate::api::ReviewBody = json(bytes)?;
            ReviewDecision::parse(&b.decision).map_err(|e| e.to_string())?;
        }
        BodyKind::Comment | BodyKind::RunComment => {
            let _: crate::api::CommentBody =
                crate::api::optional_body(&Bytes::copy_from_slice(bytes)).map_err(detail)?;
        }
        BodyKind::Credentials => {
            let _: crate::api::CredentialsBody =
                crate::api::optional_body(&Bytes::copy_from_slice(bytes)).map_err(detail)?;
        }
        BodyKind::Token => {
            let b: crate::api::TokenBody = json(bytes)?;
            UserName::parse(&b.user).map_err(|e| e.to_string())?;
            for g in &b.groups {
                GroupName::parse(g).map_err(|e| e.to_string())?;
            }
            if let Some(t) = &b.ttl {
                span(t)?;
            }
        }
        BodyKind::RevokeTokens => {
            let _: airlock_api::access::RevokeTokens = json(bytes)?;
        }
        BodyKind::NewLock => {
            let b: airlock_api::access::NewLock = json(bytes)?;
            LockKind::parse(&b.kind).map_err(|e| e.to_string())?;
            if let Some(d) = &b.duration {
                span(d)?;
            }
        }
        BodyKind::Exec => {
            let _: crate::runs_api::ExecBody = json(bytes)?;
        }
        BodyKind::Operation => {
            let _: crate::runs_api::OperationBody = json(bytes)?;
        }
        BodyKind::DevicePoll => {
            let _: crate::oidc::device::PollBody = json(bytes)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_as_their_handlers_parse_them() {
        let ok: &[(BodyKind, &str)] = &[
            (
                BodyKind::NewRequest,
                r#"{"entitlement":"db","duration":"1h","reason":"INC-1"}"#,
            ),
            (BodyKind::Review, r#"{"decision":"approve"}"#),
            (BodyKind::Comment, "  "),
            (
                BodyKind::Credentials,
                r#"{"public_key":"ssh-ed25519 AAAA"}"#,
            ),
            (
                BodyKind::Token,
                r#"{"user":"alice","groups":["sre"],"ttl":"7d"}"#,
            ),
            (BodyKind::RevokeTokens, r#"{"user":"alice"}"#),
            (
                BodyKind::NewLock,
                r#"{"kind":"user","name":"bob","reason":"left","for":"1h"}"#,
            ),
            (
                BodyKind::Exec,
                r#"{"tool":"psql","args":["-c","select 1"]}"#,
            ),
            (
                BodyKind::Operation,
                r#"{"params":{"n":"1"},"dry_run":true}"#,
            ),
            (BodyKind::RunReview, r#"{"decision":"deny","comment":"no"}"#),
            (BodyKind::RunComment, ""),
            (BodyKind::DevicePoll, r#"{"device_code":"x"}"#),
        ];
        assert_eq!(ok.len(), BodyKind::ALL.len());
        for (kind, body) in ok {
            assert_eq!(parse_body(*kind, body.as_bytes()), Ok(()), "{kind:?}");
        }
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(parse_body(BodyKind::Review, br#"{"decision":"approve","x":1}"#).is_err());
        assert!(parse_body(BodyKind::Review, br#"{"decision":"maybe"}"#).is_err());
        assert!(parse_body(
            BodyKind::NewLock,
            br#"{"kind":"group","name":"a","reason":"r"}"#
        )
        .is_err());
        assert!(parse_body(BodyKind::Token, br#"{"user":"alice","ttl":"400d"}"#).is_err());
        assert!(parse_body(BodyKind::Comment, b"{").is_err());
    }
}
