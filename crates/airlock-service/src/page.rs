//! List cursors: `MICROS-ID`, the sort key of the last item of a page, so the
//! next page starts strictly after it however many rows were added meanwhile.

use airlock_core::Error;
use time::OffsetDateTime;

/// The `(at, id)` a cursor names.
pub fn parse_cursor(s: &str) -> Result<(OffsetDateTime, &str), Error> {
    let (micros, id) = s.split_once('-').ok_or_else(bad_cursor)?;
    let micros: i128 = micros.parse().map_err(|_| bad_cursor())?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).map_err(|_| bad_cursor())?;
    Ok((at, id))
}

/// The refusal for a cursor that did not come from a `Link` header.
pub fn bad_cursor() -> Error {
    Error::invalid(
        "cursor",
        "not a cursor from a previous page's `Link` header",
    )
}

/// The cursor after a full page (`len` items, the last at `last`), if there may be more.
pub fn next_cursor(len: usize, limit: u32, last: Option<(OffsetDateTime, &str)>) -> Option<String> {
    let (at, id) = last.filter(|_| len as u32 >= limit)?;
    Some(format!("{}-{id}", at.unix_timestamp_nanos() / 1000))
}
