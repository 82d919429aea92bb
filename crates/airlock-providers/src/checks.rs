//! Value checks several kinds share.

use crate::InvalidValue;

/// Names the provider can put in a statement or an API path: letters, digits,
/// `_ -` and the bytes in `extra`.
pub(crate) fn is_plain_name(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || extra.contains(&b))
}

/// `role_prefix` (postgres, mysql): the prefix of the accounts airlock owns.
pub(crate) fn role_prefix(prefix: &Option<String>) -> Result<(), InvalidValue> {
    let Some(prefix) = prefix else { return Ok(()) };
    let ok = !prefix.is_empty()
        && prefix.len() <= 24
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(InvalidValue::new(
            "role_prefix",
            "role_prefix must be 1-24 of a-z 0-9 _",
        ))
    }
}

/// A database role (postgres, mysql): quoted as an identifier by the
/// provider, but kept to boring names.
pub(crate) fn database_role(role: &str) -> Result<(), InvalidValue> {
    if is_plain_name(role, b"") && role.len() <= 63 {
        Ok(())
    } else {
        Err(InvalidValue::new(
            "role",
            format!("role `{role}` is not valid: 1-63 of letters, digits, _ and -"),
        ))
    }
}

/// Splits `host:port` (an IPv6 host in brackets), or `None` when it is not one.
pub(crate) fn host_port(t: &str) -> Option<(String, u16)> {
    let (host, port) = t.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let plain = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b));
    plain.then(|| (host.to_string(), port))
}
