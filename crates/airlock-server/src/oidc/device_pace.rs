//! Pacing of the unauthenticated device-login endpoints: how many logins a
//! client address (and the whole server) may start per minute, and the
//! RFC 8628 poll interval per device code (`slow_down`). Memory is bounded;
//! time is passed in, never read here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use airlock_core::oidc::MAX_DEVICE_POLL_INTERVAL_SECS;
use sha2::{Digest, Sha256};

/// Device logins one client address may start per minute.
pub(super) const STARTS_PER_ADDRESS: u32 = 10;
/// Device logins the whole server starts per minute (the provider is called each time).
pub(super) const STARTS_PER_MINUTE: u32 = 60;
/// Addresses remembered at once; beyond it (after dropping lapsed windows) new addresses wait.
const MAX_ADDRESSES: usize = 4096;
/// Device codes remembered at once.
const MAX_CODES: usize = 4096;
/// Longest a device code is remembered, whatever the provider says.
const MAX_CODE_LIFE: Duration = Duration::from_secs(30 * 60);
/// RFC 8628 §3.5: each `slow_down` adds this to the interval.
const SLOW_DOWN_STEP: u64 = 5;
const WINDOW: Duration = Duration::from_secs(60);

/// The bucket an address counts in: IPv4 as is, IPv6 by its /64 (one host
/// usually holds a whole /64, so single addresses would be free to rotate).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Default)]
struct Windows {
    global: Option<(Instant, u32)>,
    per_addr: HashMap<IpAddr, (Instant, u32)>,
}

/// Fixed one-minute windows on device-login starts: per client address, and
/// a server-wide ceiling.
#[derive(Default)]
pub(super) struct StartLimiter(Mutex<Windows>);

fn fresh(w: Option<(Instant, u32)>, now: Instant) -> (Instant, u32) {
    match w {
        Some((start, n)) if now.duration_since(start) < WINDOW => (start, n),
        _ => (now, 0),
    }
}

impl StartLimiter {
    /// Counts a start from `ip` at `now`; false when its address or the
    /// server is over the limit (nothing is counted then).
    pub(super) fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = bucket(ip);
        let global = fresh(w.global, now);
        if global.1 >= STARTS_PER_MINUTE {
            return false;
        }
        if !w.per_addr.contains_key(&key) && w.per_addr.len() >= MAX_ADDRESSES {
            w.per_addr
                .retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if w.per_addr.len() >= MAX_ADDRESSES {
                return false;
            }
        }
        let mine = fresh(w.per_addr.get(&key).copied(), now);
        if mine.1 >= STARTS_PER_ADDRESS {
            return false;
        }
        w.global = Some((global.0, global.1 + 1));
        w.per_addr.insert(key, (mine.0, mine.1 + 1));
        true
    }
}

struct Pace {
    /// When the last poll was answered (None: not polled yet).
    last: Option<Instant>,
    /// The interval last told the client, in seconds.
    interval: u64,
    expires: Instant,
}

/// What to do with a poll.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PollCheck {
    /// Ask the provider; tell the client this interval.
    Proceed(u64),
    /// Sooner than the interval: answer `slow_down` with this (grown) interval.
    SlowDown(u64),
    /// Not started here (another replica, or a restart): the provider paces it.
    Unknown,
}

/// Per device code: when it was last polled and the interval the client was told.
#[derive(Default)]
pub(super) struct PollLog(Mutex<HashMap<[u8; 32], Pace>>);

fn key(device_code: &str) -> [u8; 32] {
    Sha256::digest(device_code.as_bytes()).into()
}

impl PollLog {
    /// Remembers a device code this server started, with the interval it told
    /// the client and the code's lifetime. Full: lapsed codes are dropped first,
    /// then the one expiring soonest.
    pub(super) fn started(&self, device_code: &str, interval: u64, life: Duration, now: Instant) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_CODES {
            m.retain(|_, p| p.expires > now);
        }
        if m.len() >= MAX_CODES {
            if let Some(k) = m.iter().min_by_key(|(_, p)| p.expires).map(|(k, _)| *k) {
                m.remove(&k);
            }
        }
        m.insert(
            key(device_code),
            Pace {
                last: None,
                interval,
                expires: now + life.min(MAX_CODE_LIFE),
            },
        );
    }

    /// Checks a poll arriving at `now`. A poll sooner than the interval after
    /// the last answer grows the interval by 5 s for this and later polls.
    pub(super) fn check(&self, device_code: &str, now: Instant) -> PollCheck {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let k = key(device_code);
        let Some(p) = m.get_mut(&k) else {
            return PollCheck::Unknown;
        };
        if p.expires <= now {
            m.remove(&k);
            return PollCheck::Unknown;
        }
        let too_soon = p
            .last
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(p.interval));
        // Counted from now on either way, so a concurrent second poll is too soon.
        p.last = Some(now);
        if too_soon {
            p.interval = (p.interval + SLOW_DOWN_STEP).min(MAX_DEVICE_POLL_INTERVAL_SECS);
            PollCheck::SlowDown(p.interval)
        } else {
            PollCheck::Proceed(p.interval)
        }
    }

    /// The provider was asked and answered at `now`: the next poll counts
    /// from here. With `slow_down` from the provider the interval grows too.
    /// Returns the interval to tell the client.
    pub(super) fn answered(&self, device_code: &str, slow_down: bool, now: Instant) -> Option<u64> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let p = m.get_mut(&key(device_code))?;
        p.last = Some(now);
        if slow_down {
            p.interval = (p.interval + SLOW_DOWN_STEP).min(MAX_DEVICE_POLL_INTERVAL_SECS);
        }
        Some(p.interval)
    }

    /// The login ended (tokens, denied, expired): forget the code.
    pub(super) fn finished(&self, device_code: &str) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&key(device_code));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_over_its_limit_does_not_stop_another() {
        let l = StartLimiter::default();
        let now = Instant::now();
        for _ in 0..STARTS_PER_ADDRESS {
            assert!(l.allow(ip("192.0.2.1"), now));
        }
        assert!(
            !l.allow(ip("192.0.2.1"), now),
            "11th start from one address"
        );
        assert!(
            l.allow(ip("192.0.2.2"), now),
            "another address still starts"
        );
        // The window passes: the first address may start again.
        assert!(l.allow(ip("192.0.2.1"), now + WINDOW));
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_share_a_limit() {
        let l = StartLimiter::default();
        let now = Instant::now();
        for i in 0..STARTS_PER_ADDRESS {
            assert!(l.allow(ip(&format!("2001:db8:1:2::{}", i + 1)), now));
        }
        assert!(!l.allow(ip("2001:db8:1:2::ffff"), now));
        assert!(l.allow(ip("2001:db8:1:3::1"), now));
    }

    #[test]
    fn the_server_wide_ceiling_holds_across_addresses() {
        let l = StartLimiter::default();
        let now = Instant::now();
        let mut allowed = 0;
        for i in 0..(STARTS_PER_MINUTE * 2) {
            if l.allow(ip(&format!("198.51.100.{}", i % 250)), now) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, STARTS_PER_MINUTE);
    }

    #[test]
    fn a_poll_sooner_than_the_interval_gets_slow_down_and_the_interval_grows_by_5s() {
        let log = PollLog::default();
        let t0 = Instant::now();
        log.started("dc", 5, Duration::from_secs(600), t0);
        assert_eq!(log.check("dc", t0), PollCheck::Proceed(5), "first poll");
        assert_eq!(log.answered("dc", false, t0), Some(5));
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(log.check("dc", t1), PollCheck::SlowDown(10));
        // The grown interval holds for later polls, counted from the last one.
        assert_eq!(
            log.check("dc", t1 + Duration::from_secs(6)),
            PollCheck::SlowDown(15)
        );
        let t3 = t1 + Duration::from_secs(6 + 15);
        assert_eq!(log.check("dc", t3), PollCheck::Proceed(15));
        assert_eq!(log.check("other", t3), PollCheck::Unknown);
    }

    #[test]
    fn poll_records_are_bounded_and_expire() {
        let log = PollLog::default();
        let t0 = Instant::now();
        log.started("old", 5, Duration::from_secs(60), t0);
        assert_eq!(
            log.check("old", t0 + Duration::from_secs(61)),
            PollCheck::Unknown
        );
        for i in 0..(MAX_CODES + 10) {
            log.started(&format!("c{i}"), 5, Duration::from_secs(600), t0);
        }
        assert!(log.0.lock().unwrap().len() <= MAX_CODES);
    }
}
