//! Run-stream frames as `Bytes` for streamed response bodies; the format itself (kinds,
//! header, content type) is `airlock_api::stream`, shared with the CLI.

use bytes::Bytes;

pub use airlock_api::stream::{open, Kind, CONTENT_TYPE, HEADER_LEN};

/// Writes the payload length into a frame made by [`open`].
pub fn seal(mut v: Vec<u8>) -> Bytes {
    airlock_api::stream::seal(&mut v);
    Bytes::from(v)
}

/// Encodes one frame.
pub fn frame(kind: Kind, payload: &[u8]) -> Bytes {
    Bytes::from(airlock_api::stream::encode(kind, payload))
}

/// A JSON frame.
pub fn json_frame(kind: Kind, v: &impl serde::Serialize) -> Bytes {
    frame(kind, &serde_json::to_vec(v).unwrap_or_default())
}
