//! Human durations (`30s`, `15m`, `1h30m`, `7d`) parsed once at the edge into
//! a positive whole number of seconds.

use std::fmt;
use std::str::FromStr;

/// Upper bound for any duration airlock accepts (one year): keeps arithmetic
/// on timestamps far from overflow.
pub const MAX_SECONDS: u64 = 366 * 24 * 3600;

/// A positive duration in whole seconds, written like `30m` or `1h30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(u64);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a duration: {why} (write e.g. 30s, 15m, 1h30m, 7d)")]
pub struct SpanError {
    input: String,
    why: &'static str,
}

impl Span {
    /// A span of `secs` seconds; `None` when zero or above [`MAX_SECONDS`].
    pub fn from_secs(secs: u64) -> Option<Span> {
        (secs > 0 && secs <= MAX_SECONDS).then_some(Span(secs))
    }
    /// The length in seconds.
    pub fn as_secs(self) -> u64 {
        self.0
    }
    /// As a `time::Duration`.
    pub fn to_time(self) -> time::Duration {
        time::Duration::seconds(self.0 as i64)
    }
}

impl FromStr for Span {
    type Err = SpanError;
    fn from_str(s: &str) -> Result<Span, SpanError> {
        let err = |why| SpanError {
            input: s.chars().take(40).collect(),
            why,
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("empty"));
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        for c in t.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                if digits.len() > 12 {
                    return Err(err("number too large"));
                }
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                _ => return Err(err("unknown unit (use s, m, h or d)")),
            };
            if digits.is_empty() {
                return Err(err("a unit needs a number before it"));
            }
            let n: u64 = digits.parse().map_err(|_| err("bad number"))?;
            digits.clear();
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err("too large"))?;
        }
        if !digits.is_empty() {
            return Err(err("missing unit after the last number"));
        }
        if total == 0 {
            return Err(err("must be positive"));
        }
        if total > MAX_SECONDS {
            return Err(err("longer than 366d"));
        }
        Ok(Span(total))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.is_multiple_of(86400) {
            write!(f, "{}d", s / 86400)
        } else if s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Serialised as whole seconds: the API contract returns durations as integers.
impl serde::Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!("30s".parse::<Span>().unwrap().as_secs(), 30);
        assert_eq!("15m".parse::<Span>().unwrap().as_secs(), 900);
        assert_eq!("1h30m".parse::<Span>().unwrap().as_secs(), 5400);
        assert_eq!("2d".parse::<Span>().unwrap().as_secs(), 172800);
    }

    #[test]
    fn refuses_zero_negative_unitless_and_huge() {
        for bad in [
            "",
            "0s",
            "-5m",
            "10",
            "m",
            "5x",
            "400d",
            "99999999999999h",
            "1.5h",
        ] {
            assert!(bad.parse::<Span>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["45s", "90s", "30m", "2h", "3d"] {
            let span: Span = s.parse().unwrap();
            assert_eq!(span.to_string().parse::<Span>().unwrap(), span);
        }
        assert_eq!("90m".parse::<Span>().unwrap().to_string(), "90m");
    }
}
