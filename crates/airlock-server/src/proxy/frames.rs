//! The live-output wire format of `POST /api/v1/runs` (attached),
//! `POST /api/v1/runs/{id}/start` and `GET /api/v1/runs/{id}/stream`:
//! a chunked body of frames `[kind: u8][length: u32 big-endian][payload]`.

use axum::body::Bytes;

/// Content type of a run stream.
pub const CONTENT_TYPE: &str = "application/vnd.airlock.run-stream";

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The run object when streaming starts (JSON).
    Start = 1,
    /// Bytes the tool wrote to stdout.
    Stdout = 2,
    /// Bytes the tool wrote to stderr.
    Stderr = 3,
    /// A note from airlock (UTF-8), e.g. that output was skipped.
    Note = 4,
    /// The finished run object (JSON); the last frame.
    End = 5,
    /// A problem+json body: the run could not be followed to its end.
    Error = 6,
}

/// Bytes before a frame's payload.
pub const HEADER_LEN: usize = 5;

/// An empty frame of `kind` with room for `capacity` payload bytes; fill the
/// payload (e.g. by reading into the spare capacity), then [`seal`] it.
pub fn open(kind: Kind, capacity: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + capacity);
    v.extend_from_slice(&[kind as u8, 0, 0, 0, 0]);
    v
}

/// Writes the payload length into a frame made by [`open`].
pub fn seal(mut v: Vec<u8>) -> Bytes {
    let len = (v.len() - HEADER_LEN) as u32;
    v[1..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Bytes::from(v)
}

/// Encodes one frame.
pub fn frame(kind: Kind, payload: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.push(kind as u8);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// A JSON frame.
pub fn json_frame(kind: Kind, v: &impl serde::Serialize) -> Bytes {
    frame(kind, &serde_json::to_vec(v).unwrap_or_default())
}
