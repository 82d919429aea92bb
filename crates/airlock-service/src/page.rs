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

/// What a list call asks for: the API's `?state=&mine=&to_review=&limit=&cursor=`.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// Only items in this state (parsed by the kind listed).
    pub state: Option<String>,
    /// Only the caller's own.
    pub mine: bool,
    /// Only what waits for the caller's review.
    pub to_review: bool,
    /// Items per page.
    pub limit: u32,
    /// From the previous page's `Link` header.
    pub cursor: Option<String>,
}

/// One page of a list, and the cursor of the next if there may be one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items the caller may read.
    pub items: Vec<T>,
    /// Where the next page starts.
    pub next: Option<String>,
}

impl ListParams {
    /// The `state` filter, parsed as the listed kind's state.
    pub fn state<S: std::str::FromStr>(&self) -> Result<Option<S>, S::Err> {
        self.state.as_deref().map(str::parse).transpose()
    }

    /// The requester filter: the caller, with `mine`.
    pub fn requester(&self, who: &airlock_core::Principal) -> Option<airlock_core::UserName> {
        self.mine.then(|| who.name.clone())
    }

    /// Where the page starts: the cursor's time and its id, parsed by `id`.
    pub fn after<I, E>(
        &self,
        id: impl Fn(&str) -> Result<I, E>,
    ) -> Result<Option<(OffsetDateTime, I)>, Error> {
        match self.cursor.as_deref().map(parse_cursor).transpose()? {
            Some((at, raw)) => Ok(Some((at, id(raw).map_err(|_| bad_cursor())?))),
            None => Ok(None),
        }
    }
}
