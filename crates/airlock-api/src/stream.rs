//! The live-output wire format of `POST /api/v1/runs` (attached),
//! `POST /api/v1/runs/{id}/start` and `GET /api/v1/runs/{id}/stream`:
//! a chunked body of frames `[kind: u8][length: u32 big-endian][payload]`.

/// Content type of a run stream.
pub const CONTENT_TYPE: &str = "application/vnd.airlock.run-stream";

/// Bytes before a frame's payload.
pub const HEADER_LEN: usize = 5;

/// Largest payload a client accepts in one frame (the server's output frames
/// are far smaller; a run object is JSON of a bounded run).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

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

impl Kind {
    /// The kind a frame header's first byte names, if any.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Start,
            2 => Kind::Stdout,
            3 => Kind::Stderr,
            4 => Kind::Note,
            5 => Kind::End,
            6 => Kind::Error,
            _ => return None,
        })
    }
}

/// An empty frame of `kind` with room for `capacity` payload bytes; fill the
/// payload (e.g. by reading into the spare capacity), then [`seal`] it.
pub fn open(kind: Kind, capacity: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + capacity);
    v.extend_from_slice(&[kind as u8, 0, 0, 0, 0]);
    v
}

/// Writes the payload length into a frame made by [`open`].
pub fn seal(v: &mut [u8]) {
    let len = (v.len() - HEADER_LEN) as u32;
    v[1..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
}

/// Encodes one frame.
pub fn encode(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut v = open(kind, payload.len());
    v.extend_from_slice(payload);
    seal(&mut v);
    v
}

/// A frame header: the kind byte (unchecked: a newer server may send kinds
/// this client does not know) and the payload length.
pub fn decode_header(head: [u8; HEADER_LEN]) -> (u8, usize) {
    (
        head[0],
        u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let f = encode(Kind::Stderr, b"oops\n");
        assert_eq!(f, [3, 0, 0, 0, 5, b'o', b'o', b'p', b's', b'\n']);
        let (kind, len) = decode_header(f[..HEADER_LEN].try_into().unwrap());
        assert_eq!((Kind::from_u8(kind), len), (Some(Kind::Stderr), 5));
        let mut g = open(Kind::End, 8);
        g.extend_from_slice(b"{}");
        seal(&mut g);
        assert_eq!(decode_header(g[..HEADER_LEN].try_into().unwrap()), (5, 2));
        assert_eq!(Kind::from_u8(0), None);
        assert_eq!(Kind::from_u8(7), None);
        for k in 1..=6 {
            assert_eq!(Kind::from_u8(k).map(|k| k as u8), Some(k));
        }
    }
}
