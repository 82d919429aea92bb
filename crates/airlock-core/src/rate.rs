//! Rate limits (`rate = "5/10m"`): at most N runs per principal and
//! rule/operation in any sliding window of length W. The decision is pure;
//! the store supplies the recent events and serialises count-and-insert.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use crate::Span;

/// Largest N accepted in `N/WINDOW`.
pub const MAX_RATE_COUNT: u32 = 100_000;

/// `N/WINDOW`: at most `count` runs in any window of `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Runs allowed per window (N).
    pub count: u32,
    /// The sliding window (W).
    pub window: Span,
}

/// Why a rate string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a rate: {why} (write N/WINDOW, e.g. 5/10m or 3/1h)")]
pub struct RateError {
    input: String,
    why: String,
}

impl FromStr for Rate {
    type Err = RateError;
    fn from_str(s: &str) -> Result<Rate, RateError> {
        let err = |why: String| RateError {
            input: s.chars().take(40).collect(),
            why,
        };
        let (n, w) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| err("missing `/`".into()))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| err(format!("`{n}` is not a whole number")))?;
        if count == 0 || count > MAX_RATE_COUNT {
            return Err(err(format!("N must be 1..={MAX_RATE_COUNT}")));
        }
        let window: Span = w.trim().parse().map_err(|e| err(format!("{e}")))?;
        Ok(Rate { count, window })
    }
}

impl<'de> serde::Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Rate {
    /// `5 per 10m`, as people read it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} per {}", self.count, self.window)
    }
}

/// The outcome of a rate check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Under the limit: the run may go ahead (and counts as one event).
    Allow,
    /// At the limit until `next_allowed_at`.
    Refuse { next_allowed_at: OffsetDateTime },
}

impl Rate {
    /// Start of the window ending at `now` (events strictly after it count).
    pub fn window_start(&self, now: OffsetDateTime) -> OffsetDateTime {
        now - self.window.to_time()
    }

    /// Decides with the times of earlier events for the same principal and
    /// key (any order; only those inside the window count). When refused, the
    /// next run is allowed when the oldest event that keeps the window full
    /// leaves it.
    pub fn decide(&self, events: &[OffsetDateTime], now: OffsetDateTime) -> RateDecision {
        let start = self.window_start(now);
        let mut inside: Vec<OffsetDateTime> =
            events.iter().copied().filter(|t| *t > start).collect();
        let n = self.count as usize;
        if inside.len() < n {
            return RateDecision::Allow;
        }
        inside.sort_unstable();
        RateDecision::Refuse {
            next_allowed_at: inside[inside.len() - n] + self.window.to_time(),
        }
    }
}

/// Whole seconds from `now` until `t`, at least 1 (for `Retry-After`).
pub fn retry_after_secs(now: OffsetDateTime, t: OffsetDateTime) -> u64 {
    let d = t - now;
    let secs = d.whole_seconds() + i64::from(d.subsec_nanoseconds() > 0);
    secs.max(1) as u64
}

/// A short human duration: `4m12s`, `59s`, `1h3m`.
pub fn human_secs(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;
    use time::Duration;

    fn t0() -> OffsetDateTime {
        datetime!(2030-01-01 00:00:00 UTC)
    }

    #[test]
    fn parses_and_displays() {
        let r: Rate = "5/10m".parse().unwrap();
        assert_eq!((r.count, r.window.as_secs()), (5, 600));
        assert_eq!(r.to_string(), "5 per 10m");
        for bad in ["5", "0/1m", "x/1m", "5/", "5/0s", "5/1x", "100001/1h"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn refuses_the_n_plus_first_and_names_when_the_window_frees() {
        let r: Rate = "3/1h".parse().unwrap();
        let ev = [
            t0(),
            t0() + Duration::minutes(10),
            t0() + Duration::minutes(20),
        ];
        assert_eq!(
            r.decide(&ev[..2], t0() + Duration::minutes(30)),
            RateDecision::Allow
        );
        assert_eq!(
            r.decide(&ev, t0() + Duration::minutes(30)),
            RateDecision::Refuse {
                next_allowed_at: t0() + Duration::hours(1)
            }
        );
        // Exactly one window after the oldest event, it no longer counts.
        assert_eq!(
            r.decide(&ev, t0() + Duration::hours(1)),
            RateDecision::Allow
        );
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_secs(252), "4m12s");
        assert_eq!(human_secs(59), "59s");
        assert_eq!(human_secs(3780), "1h3m");
        assert_eq!(retry_after_secs(t0(), t0() + Duration::milliseconds(1)), 1);
    }

    /// Reference: count events in (now - W, now] by brute force.
    fn reference(count: u32, window: i64, events: &[i64], now: i64) -> bool {
        events
            .iter()
            .filter(|e| **e > now - window && **e <= now)
            .count()
            < count as usize
    }

    proptest! {
        #[test]
        fn agrees_with_brute_force_and_retry_time_is_exact(
            count in 1u32..6, window in 1i64..100, mut events in proptest::collection::vec(0i64..200, 0..20), now in 0i64..300
        ) {
            events.retain(|e| *e <= now);
            let rate = Rate { count, window: Span::from_secs(window as u64).unwrap() };
            let times: Vec<_> = events.iter().map(|e| t0() + Duration::seconds(*e)).collect();
            let d = rate.decide(&times, t0() + Duration::seconds(now));
            prop_assert_eq!(matches!(d, RateDecision::Allow), reference(count, window, &events, now));
            if let RateDecision::Refuse { next_allowed_at } = d {
                let at = (next_allowed_at - t0()).whole_seconds();
                prop_assert!(at > now);
                prop_assert!(reference(count, window, &events, at), "allowed at the named time");
                prop_assert!(!reference(count, window, &events, at - 1), "and not a second earlier");
            }
        }
    }
}
