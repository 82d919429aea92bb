//! Slack interactions: the signature check on arbitrary headers and body, then
//! the form body → `payload` JSON parsing. Input: one flag byte, then
//! `timestamp \n signature \n body`; with flag bit 0 the target signs the body
//! itself so the parser is reached as it is in production (after a valid check).
#![no_main]

use airlock_core::notify::slack_signature;
use airlock_server::slack_interactions::{form_value, parse, verify};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
const NOW: i64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let ts = parts.next().and_then(|t| std::str::from_utf8(t).ok());
    let sig = parts.next().and_then(|s| std::str::from_utf8(s).ok());
    let body = parts.next().unwrap_or_default();
    let signed;
    let sig = if flags & 1 == 1 {
        let ts = ts.filter(|t| !t.is_empty()).unwrap_or("1700000000");
        signed = slack_signature(SECRET, ts, body);
        let r = verify(SECRET, Some(ts), Some(&signed), body, NOW);
        // Our own signature over a fresh, well-formed timestamp must pass.
        if ts.len() <= 12
            && ts.bytes().all(|b| b.is_ascii_digit())
            && ts.parse::<i64>().is_ok_and(|t| (NOW - t).abs() <= 300)
        {
            assert_eq!(r, Ok(()), "own signature refused for ts {ts:?}");
        }
        Some(signed.as_str())
    } else {
        sig
    };
    let _ = verify(SECRET, ts, sig, body, NOW);
    let _ = parse(body);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = form_value(text, "payload");
    }
});
