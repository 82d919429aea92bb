//! Every JSON request body the API deserializes (`airlock_server::bodies`):
//! the first byte picks the body kind, the rest is the body. The same bytes
//! also go through the path-parameter id parsers.
#![no_main]

use airlock_server::bodies::{parse_body, BodyKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let kind = BodyKind::ALL[pick as usize % BodyKind::ALL.len()];
    let _ = parse_body(kind, body);
    if let Ok(s) = std::str::from_utf8(body) {
        let _ = airlock_core::request::RequestId::parse(s);
        let _ = airlock_core::run::RunId::parse(s);
    }
});
