//! Metrics that show whether people get access fast: time to first review
//! and time to access per entitlement and surface, break-glass activations,
//! and how long pending requests have waited. Label values come from the
//! catalog (entitlements) and a closed set (surfaces), so series are bounded.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;

use super::Histogram;

/// Approvals remembered until the grant is active (to label time to access);
/// beyond this many, the oldest are forgotten and show as `unknown`.
const MAX_APPROVED: usize = 10_000;

/// Age buckets of the pending-requests gauge: (label, upper bound in seconds).
pub const PENDING_AGES: [(&str, i64); 4] = [
    ("5m", 300),
    ("1h", 3600),
    ("24h", 86_400),
    ("older", i64::MAX),
];

type Key = (String, String);

/// The people-facing metrics.
#[derive(Default)]
pub struct PeopleMetrics {
    first_review: Mutex<BTreeMap<Key, Histogram>>,
    time_to_access: Mutex<BTreeMap<Key, Histogram>>,
    breakglass: Mutex<BTreeMap<String, u64>>,
    approved_via: Mutex<(HashMap<String, &'static str>, VecDeque<String>)>,
}

fn observe(map: &Mutex<BTreeMap<Key, Histogram>>, ent: &str, surface: &str, secs: f64) {
    if let Ok(mut m) = map.lock() {
        m.entry((ent.to_string(), surface.to_string()))
            .or_default()
            .observe(secs);
    }
}

impl PeopleMetrics {
    /// The first review of a request arrived `secs` after it was made.
    pub fn first_review(&self, entitlement: &str, surface: &str, secs: f64) {
        observe(&self.first_review, entitlement, surface, secs);
    }

    /// A request was approved through `surface` (`auto`/`breakglass` without a reviewer).
    pub fn approved(&self, request_id: &str, surface: &'static str) {
        if let Ok(mut g) = self.approved_via.lock() {
            let (map, order) = &mut *g;
            if map.insert(request_id.to_string(), surface).is_none() {
                order.push_back(request_id.to_string());
            }
            while order.len() > MAX_APPROVED {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }

    /// A grant became active `secs` after its request was made.
    pub fn active(&self, request_id: &str, entitlement: &str, secs: f64) {
        let surface = self
            .approved_via
            .lock()
            .ok()
            .and_then(|mut g| g.0.remove(request_id))
            .unwrap_or("unknown");
        observe(&self.time_to_access, entitlement, surface, secs);
    }

    /// A break-glass entitlement was self-activated.
    pub fn breakglass(&self, entitlement: &str) {
        if let Ok(mut m) = self.breakglass.lock() {
            *m.entry(entitlement.to_string()).or_default() += 1;
        }
    }

    /// Renders these metrics; `pending_ages` are the ages (seconds) of pending requests.
    pub fn render(&self, pending_ages: &[i64], out: &mut String) {
        render_family(
            &self.first_review,
            "airlock_time_to_first_review_seconds",
            "Time from a request until its first review, by entitlement and the reviewer's surface.",
            out,
        );
        render_family(
            &self.time_to_access,
            "airlock_time_to_access_seconds",
            "Time from a request until its grant is active, by entitlement and the surface of the approving review (auto, breakglass; unknown if approved before a restart or on another replica).",
            out,
        );
        let _ = writeln!(
            out,
            "# HELP airlock_breakglass_activations_total Break-glass self-activations.\n# TYPE airlock_breakglass_activations_total counter"
        );
        if let Ok(m) = self.breakglass.lock() {
            for (e, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "airlock_breakglass_activations_total{{entitlement=\"{e}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP airlock_pending_requests Pending requests by how long they have waited (up to 5m, 1h, 24h, older).\n# TYPE airlock_pending_requests gauge"
        );
        let mut counts = [0u64; PENDING_AGES.len()];
        for age in pending_ages {
            let i = PENDING_AGES
                .iter()
                .position(|(_, max)| age <= max)
                .unwrap_or(PENDING_AGES.len() - 1);
            counts[i] += 1;
        }
        for ((label, _), n) in PENDING_AGES.iter().zip(counts) {
            let _ = writeln!(out, "airlock_pending_requests{{age=\"{label}\"}} {n}");
        }
        let oldest = pending_ages.iter().copied().max().unwrap_or(0);
        let _ = writeln!(
            out,
            "# HELP airlock_pending_oldest_seconds Age of the oldest pending request.\n# TYPE airlock_pending_oldest_seconds gauge\nairlock_pending_oldest_seconds {oldest}"
        );
    }
}

fn render_family(map: &Mutex<BTreeMap<Key, Histogram>>, name: &str, help: &str, out: &mut String) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    if let Ok(m) = map.lock() {
        for ((ent, surface), h) in m.iter() {
            let labels = format!("entitlement=\"{ent}\",surface=\"{surface}\"");
            h.render_series(name, &labels, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_to_access_is_labelled_by_the_approving_surface() {
        let m = PeopleMetrics::default();
        m.approved("r1", "slack");
        m.active("r1", "payments-db", 42.0);
        m.active("r2", "payments-db", 1.0); // approval not seen by this replica
        let mut out = String::new();
        m.render(&[], &mut out);
        assert!(
            out.contains("airlock_time_to_access_seconds_count{entitlement=\"payments-db\",surface=\"slack\"} 1"),
            "{out}"
        );
        assert!(out.contains("surface=\"unknown\"} 1"), "{out}");
    }

    #[test]
    fn pending_requests_are_bucketed_by_age() {
        let m = PeopleMetrics::default();
        let mut out = String::new();
        m.render(&[10, 299, 301, 7200, 100_000], &mut out);
        assert!(
            out.contains("airlock_pending_requests{age=\"5m\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("airlock_pending_requests{age=\"1h\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("airlock_pending_requests{age=\"24h\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("airlock_pending_requests{age=\"older\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("airlock_pending_oldest_seconds 100000"),
            "{out}"
        );
    }

    #[test]
    fn remembered_approvals_are_bounded() {
        let m = PeopleMetrics::default();
        for i in 0..(MAX_APPROVED + 10) {
            m.approved(&format!("r{i}"), "web");
        }
        let g = m.approved_via.lock().unwrap();
        assert_eq!(g.0.len(), MAX_APPROVED);
        assert!(!g.0.contains_key("r0"));
    }
}
