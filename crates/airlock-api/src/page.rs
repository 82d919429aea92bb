//! List pages: `?limit=&cursor=`, and the next page named in an RFC 8288
//! `Link: <PATH?…&cursor=C>; rel="next"` header.

/// Items on a page when the caller does not say.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most items a caller may ask for on one page.
pub const MAX_LIMIT: u32 = 1000;

/// The `Link` header value naming `path?query` as the next page.
pub fn next_link_header(path: &str, query: &[String]) -> String {
    format!("<{path}?{}>; rel=\"next\"", query.join("&"))
}

/// The path of the `rel="next"` target in a `Link` header, if it names one on
/// the same server (a path, never another host: a client must not send its
/// token elsewhere because a response said so).
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        (is_next && target.starts_with('/') && !target.starts_with("//"))
            .then(|| target.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_takes_only_a_local_next_target() {
        let made = next_link_header("/api/v1/tokens", &["cursor=1-ab".into(), "limit=2".into()]);
        assert_eq!(
            next_link(&made).as_deref(),
            Some("/api/v1/tokens?cursor=1-ab&limit=2")
        );
        assert_eq!(
            next_link("</a>; rel=\"prev\", </b>; rel=\"next\"").as_deref(),
            Some("/b")
        );
        assert_eq!(next_link("<https://evil.example/x>; rel=\"next\""), None);
        assert_eq!(next_link("<//evil.example/x>; rel=\"next\""), None);
        assert_eq!(next_link("</a>; rel=\"prev\""), None);
    }
}
