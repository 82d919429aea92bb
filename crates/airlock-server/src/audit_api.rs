//! Transparency-log routes under `/api/v1/audit`: the latest signed tree head,
//! consistency proofs and inclusion proofs. Clients check every answer against
//! the signed checkpoint themselves; nothing here asks to be trusted.

use std::sync::Arc;

use airlock_core::merkle::Hash;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::auth::Caller;
use crate::problem::ApiError;
use airlock_service::tlog::ProofError;

type AppState = State<Arc<App>>;

fn proof_error(e: ProofError) -> ApiError {
    match e {
        ProofError::Invalid(why) => ApiError::new(StatusCode::BAD_REQUEST, why),
        ProofError::Store(e) => e.into(),
    }
}

fn b64_all(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h)).collect()
}

async fn latest_note(app: &Arc<App>) -> Result<(u64, String), ApiError> {
    let cp = app
        .svc
        .db_untracked(|s| s.audit_latest_checkpoint())
        .await?;
    match cp.and_then(|c| c.note.map(|n| (c.seq, n))) {
        Some(x) => Ok(x),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no signed checkpoint yet: one is signed within a second of the first audit event; try again shortly",
        )),
    }
}

/// `GET /api/v1/audit/checkpoint`: the latest signed note, `text/plain`.
pub async fn checkpoint(State(app): AppState, Caller(p): Caller) -> Result<Response, ApiError> {
    airlock_service::visibility::check_audit_reader(&app, &p)?;
    let (_, note) = latest_note(&app).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        note,
    )
        .into_response())
}

/// Query of `GET /api/v1/audit/consistency`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    from: u64,
    to: u64,
}

/// `GET /api/v1/audit/consistency?from=N&to=M`: RFC 9162 consistency proof.
pub async fn consistency(
    State(app): AppState,
    Caller(p): Caller,
    q: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    airlock_service::visibility::check_audit_reader(&app, &p)?;
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let (from, to) = (q.from, q.to);
    let a = app.clone();
    let proof = app
        .svc
        .db_untracked(move |s| Ok(a.tlog.consistency(s, from, to)))
        .await?
        .map_err(proof_error)?;
    Ok(crate::api::json(
        StatusCode::OK,
        json!({"from": from, "to": to, "proof": b64_all(&proof)}),
    ))
}

/// `GET /api/v1/audit/proof/{seq}`: inclusion proof of event `seq` in the
/// latest signed tree head, with that note and the event's canonical body.
pub async fn proof(
    State(app): AppState,
    Caller(p): Caller,
    Path(seq): Path<String>,
) -> Result<Response, ApiError> {
    airlock_service::visibility::check_audit_reader(&app, &p)?;
    let seq: u64 =
        seq.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "seq must be a positive integer")
        })?;
    let (size, note) = latest_note(&app).await?;
    if seq > size {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("event {seq} is not covered by a signed checkpoint yet (the latest covers {size} events); try again in a second"),
        ));
    }
    let a = app.clone();
    let (proof, body) = app
        .svc
        .db_untracked(move |s| {
            let body = s.audit_events(seq - 1, 1)?.pop().map(|e| e.body);
            Ok((a.tlog.inclusion(s, seq - 1, size), body))
        })
        .await?;
    let proof = proof.map_err(proof_error)?;
    let body = body.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, format!("event {seq} does not exist"))
    })?;
    Ok(crate::api::json(
        StatusCode::OK,
        json!({
            "seq": seq,
            "leaf_index": seq - 1,
            "tree_size": size,
            "leaf_hash": B64.encode(airlock_core::merkle::leaf_hash(&body)),
            "proof": b64_all(&proof),
            "checkpoint": note,
            "body": String::from_utf8_lossy(&body),
        }),
    ))
}
