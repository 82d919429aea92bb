//! Small helpers: statistics, memory, unique names, PostgreSQL URLs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rand::Rng;

/// The `p`-th percentile (0..=100) of sorted samples, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts samples for [`percentile`].
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Resident set size of a process (`self` when `pid` is None), in KiB, from `/proc`.
pub fn rss_kib(pid: Option<u32>) -> Result<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let kib = v.trim().trim_end_matches("kB").trim();
            return kib.parse().with_context(|| format!("VmRSS `{v}`"));
        }
    }
    bail!("no VmRSS in {path}")
}

/// KiB as MiB text.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A short lowercase tag that is unique enough per run (for schema and role names).
pub fn unique_tag() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let r: u32 = rand::thread_rng().gen();
    format!("{:x}{:06x}", secs % 0x10000, r % 0x100_0000)
}

/// A random request id in airlock's format (16 chars of lowercase base32).
pub fn request_id() -> airlock_core::RequestId {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::thread_rng();
    let s: String = (0..16)
        .map(|_| ALPHABET[rng.gen_range(0..32)] as char)
        .collect();
    airlock_core::RequestId::parse(&s).expect("generated ids are valid")
}

/// `url` with its `search_path` set to `schema`.
pub fn with_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

/// Seconds as text with a sensible unit.
pub fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.1} ms", s * 1e3)
    }
}

/// A free TCP port on 127.0.0.1 (racy, good enough for a benchmark).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
