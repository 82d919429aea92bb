//! Prometheus metrics in text format, kept in atomics: no registry crate, a
//! handful of counters and fixed-bucket histograms.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub mod people;

const BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0, 3600.0,
];

/// A cumulative histogram with fixed buckets (seconds).
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; 12],
    inf: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation in seconds.
    pub fn observe(&self, secs: f64) {
        let secs = secs.max(0.0);
        match BUCKETS.iter().position(|b| secs <= *b) {
            Some(i) => self.counts[i].fetch_add(1, Ordering::Relaxed),
            None => self.inf.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_micros
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_series(name, "", out);
    }

    /// Writes the bucket, sum and count lines of one series (`labels` without braces).
    pub fn render_series(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        cum += self.inf.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
        let _ = writeln!(
            out,
            "{name}_sum{} {}",
            braces(labels),
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{} {cum}", braces(labels));
    }
}

/// All server metrics.
#[derive(Default)]
pub struct Metrics {
    /// Request creation → grant active.
    pub request_to_active: Histogram,
    /// Request creation → final approval.
    pub approval_latency: Histogram,
    /// `not_after` (or due time) → reconciler acted.
    pub reconciler_lag: Histogram,
    /// Provider errors by provider name.
    pub provider_errors: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Drift accounts removed.
    pub drift_removed: AtomicU64,
    /// Last drift check per provider: (orphaned, standing).
    pub drift: Mutex<std::collections::BTreeMap<String, (u64, u64)>>,
    /// Time to review / access by surface, break-glass count, pending ages.
    pub people: people::PeopleMetrics,
    /// Unix time of the last successful `catalog_url` fetch (0: never).
    pub catalog_last_success: AtomicU64,
    /// Failed `catalog_url` fetches.
    pub catalog_failures: AtomicU64,
    /// Per notification sink: (delivered, failed attempts, dropped).
    pub notify: Mutex<std::collections::BTreeMap<String, (u64, u64, u64)>>,
    /// Last audit verification on this replica: 0 not yet, 1 ok, 2 failed.
    pub audit_state: AtomicU64,
    /// Events the last audit verification covered.
    pub audit_events: AtomicU64,
    /// Unix time of the last audit verification.
    pub audit_checked_at: AtomicU64,
}

impl Metrics {
    /// Records the outcome of an audit verification at `unix` seconds.
    pub fn audit_verified(&self, ok: bool, events: u64, unix: i64) {
        self.audit_state
            .store(if ok { 1 } else { 2 }, Ordering::Relaxed);
        self.audit_events.store(events, Ordering::Relaxed);
        self.audit_checked_at
            .store(unix.max(0) as u64, Ordering::Relaxed);
    }

    /// The audit gauges; none before the first verification (an alert on
    /// `airlock_audit_chain_ok == 0` must not fire on a fresh start).
    fn render_audit(&self, out: &mut String) {
        let state = self.audit_state.load(Ordering::Relaxed);
        if state == 0 {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP airlock_audit_chain_ok Whether the last verification of the audit chain and its signed checkpoints passed (1) or failed (0).
# TYPE airlock_audit_chain_ok gauge
airlock_audit_chain_ok {}
# HELP airlock_audit_verified_events Events the last audit verification covered.
# TYPE airlock_audit_verified_events gauge
airlock_audit_verified_events {}
# HELP airlock_audit_verified_timestamp_seconds Unix time of the last audit verification.
# TYPE airlock_audit_verified_timestamp_seconds gauge
airlock_audit_verified_timestamp_seconds {}",
            u64::from(state == 1),
            self.audit_events.load(Ordering::Relaxed),
            self.audit_checked_at.load(Ordering::Relaxed)
        );
    }

    /// Counts one provider error.
    pub fn provider_error(&self, provider: &str) {
        if let Ok(mut m) = self.provider_errors.lock() {
            *m.entry(provider.to_string()).or_default() += 1;
        }
    }

    /// A `catalog_url` fetch succeeded at `unix` seconds.
    pub fn catalog_loaded(&self, unix: i64) {
        self.catalog_last_success
            .store(unix.max(0) as u64, Ordering::Relaxed);
    }

    /// A `catalog_url` fetch failed.
    pub fn catalog_failed(&self) {
        self.catalog_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the latest drift counts of one provider.
    pub fn set_drift(&self, provider: &str, orphaned: u64, standing: u64) {
        if let Ok(mut m) = self.drift.lock() {
            m.insert(provider.to_string(), (orphaned, standing));
        }
    }

    /// Counts one event delivered to `sink`.
    pub fn notify_delivered(&self, sink: &str) {
        self.notify_count(sink, |c| c.0 += 1);
    }

    /// Counts one failed delivery attempt to `sink` (it will be retried).
    pub fn notify_failed_attempt(&self, sink: &str) {
        self.notify_count(sink, |c| c.1 += 1);
    }

    /// Counts one event given up for `sink` (a permanent refusal).
    pub fn notify_failed(&self, sink: &str) {
        self.notify_count(sink, |c| c.2 += 1);
    }

    fn notify_count(&self, sink: &str, f: impl FnOnce(&mut (u64, u64, u64))) {
        if let Ok(mut m) = self.notify.lock() {
            f(m.entry(sink.to_string()).or_default());
        }
    }

    /// Notification counters and `lags` (sink, head seq − cursor) as text.
    pub fn render_notify(&self, lags: &[(String, u64)]) -> String {
        let mut out = String::new();
        let counts = self.notify.lock().map(|m| m.clone()).unwrap_or_default();
        for (name, help, pick) in [
            (
                "airlock_notify_delivered_total",
                "Audit events delivered per notification sink.",
                0,
            ),
            (
                "airlock_notify_failures_total",
                "Failed delivery attempts per sink (retried with backoff).",
                1,
            ),
            (
                "airlock_notify_dropped_total",
                "Events given up per sink after a permanent refusal.",
                2,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (sink, c) in &counts {
                let n = [c.0, c.1, c.2][pick];
                let _ = writeln!(out, "{name}{{sink=\"{}\"}} {n}", label(sink));
            }
        }
        let _ = writeln!(
            out,
            "# HELP airlock_notify_lag_events Audit events not yet handled per sink (chain head minus cursor).\n# TYPE airlock_notify_lag_events gauge"
        );
        for (sink, lag) in lags {
            let _ = writeln!(
                out,
                "airlock_notify_lag_events{{sink=\"{}\"}} {lag}",
                label(sink)
            );
        }
        out
    }

    /// Renders everything; `states` are current request counts per state,
    /// `pending_ages` the ages in seconds of pending requests, `overdue` the
    /// active grants past `not_after` by more than [`OVERDUE_AFTER`].
    pub fn render(&self, states: &[(String, u64)], pending_ages: &[i64], overdue: u64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP airlock_grants_past_not_after Active grants whose not_after passed more than {}s ago (the reconciler should have ended them).
# TYPE airlock_grants_past_not_after gauge
airlock_grants_past_not_after {overdue}",
            OVERDUE_AFTER.whole_seconds()
        );
        self.render_audit(&mut out);
        let _ = writeln!(
            out,
            "# HELP airlock_requests Requests by state.\n# TYPE airlock_requests gauge"
        );
        for (s, n) in states {
            let _ = writeln!(out, "airlock_requests{{state=\"{s}\"}} {n}");
        }
        self.request_to_active.render(
            "airlock_request_to_active_seconds",
            "Time from request creation until the grant is active.",
            &mut out,
        );
        self.approval_latency.render(
            "airlock_approval_latency_seconds",
            "Time from request creation until approval.",
            &mut out,
        );
        self.reconciler_lag.render(
            "airlock_reconciler_lag_seconds",
            "Delay between a grant's due time (e.g. not_after) and the reconciler acting on it.",
            &mut out,
        );
        let _ = writeln!(
            out,
            "# HELP airlock_provider_errors_total Provider call failures.\n# TYPE airlock_provider_errors_total counter"
        );
        if let Ok(m) = self.provider_errors.lock() {
            for (p, n) in m.iter() {
                let _ = writeln!(out, "airlock_provider_errors_total{{provider=\"{p}\"}} {n}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP airlock_drift_removed_total Accounts removed because no grant backs them.\n# TYPE airlock_drift_removed_total counter\nairlock_drift_removed_total {}",
            self.drift_removed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP airlock_drift_accounts Access found by the last drift check: orphaned (managed by airlock, no grant) or standing (entitlement role held outside airlock).\n# TYPE airlock_drift_accounts gauge"
        );
        if let Ok(m) = self.drift.lock() {
            for (p, (orphaned, standing)) in m.iter() {
                let _ = writeln!(
                    out,
                    "airlock_drift_accounts{{provider=\"{p}\",type=\"orphaned\"}} {orphaned}\nairlock_drift_accounts{{provider=\"{p}\",type=\"standing\"}} {standing}"
                );
            }
        }
        self.people.render(pending_ages, &mut out);
        let _ = writeln!(
            out,
            "# HELP airlock_catalog_last_success_timestamp_seconds Last successful catalog_url fetch.\n# TYPE airlock_catalog_last_success_timestamp_seconds gauge\nairlock_catalog_last_success_timestamp_seconds {}\n# HELP airlock_catalog_fetch_failures_total Failed catalog_url fetches.\n# TYPE airlock_catalog_fetch_failures_total counter\nairlock_catalog_fetch_failures_total {}",
            self.catalog_last_success.load(Ordering::Relaxed),
            self.catalog_failures.load(Ordering::Relaxed)
        );
        out
    }
}

/// How long past `not_after` an active grant counts as overdue: the
/// reconciler normally ends one within a second.
pub const OVERDUE_AFTER: time::Duration = time::Duration::seconds(5);

/// The whole `/metrics` text of this replica: request counts, pending ages,
/// overdue grants, open post-incident reviews and, with notifiers, their lag.
pub async fn scrape(app: &std::sync::Arc<crate::Service>) -> crate::ServiceResult<String> {
    use airlock_core::request::RequestState;
    let counts = app.db_untracked(|s| s.count_by_state()).await?;
    let states: Vec<(String, u64)> = RequestState::ALL
        .iter()
        .map(|st| {
            let n = counts.iter().find(|(s, _)| s == st).map_or(0, |(_, n)| *n);
            (st.to_string(), n)
        })
        .collect();
    let pending = app
        .db_untracked(|s| {
            s.list_requests(&airlock_store::RequestFilter {
                state: Some(RequestState::Pending),
                limit: 1000,
                ..Default::default()
            })
        })
        .await?;
    let now = app.now();
    let ages: Vec<i64> = pending
        .iter()
        .map(|r| (now - r.created_at).whole_seconds().max(0))
        .collect();
    let overdue = app
        .db_untracked(move |s| s.count_overdue_grants(now - OVERDUE_AFTER))
        .await?;
    let open_reviews = app.db_untracked(|s| s.count_open_post_reviews()).await?;
    let mut text = app.metrics.render(&states, &ages, overdue);
    text.push_str(&render_breakglass_open(open_reviews));
    if !app.notifiers.is_empty() {
        text.push_str(&app.metrics.render_notify(&crate::notify::lags(app).await?));
    }
    Ok(text)
}

/// The `airlock_breakglass_open_reviews` gauge: post-incident reviews not closed yet.
pub fn render_breakglass_open(open: u64) -> String {
    format!(
        "# HELP airlock_breakglass_open_reviews Break-glass post-incident reviews not closed yet (any grant state).\n\
         # TYPE airlock_breakglass_open_reviews gauge\nairlock_breakglass_open_reviews {open}\n"
    )
}

/// A sink id as a label value: credentials and query strings of webhook
/// URLs are cut (they may hold tokens), quotes and backslashes escaped.
pub fn label(sink: &str) -> String {
    let mut s = sink
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_string();
    if let Some(scheme_end) = s.find("://") {
        let rest = &s[scheme_end + 3..];
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..host_end].rfind('@') {
            s = format!("{}{}", &s[..scheme_end + 3], &rest[at + 1..]);
        }
    }
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_labels_hide_credentials_and_queries() {
        assert_eq!(
            label("webhook:https://u:p@h.example/x?token=1"),
            "webhook:https://h.example/x"
        );
        assert_eq!(label("email"), "email");
        assert_eq!(label("webhook:http://h/\"q"), "webhook:http://h/\\\"q");
    }

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(0.02);
        h.observe(0.7);
        h.observe(9999.0);
        let mut s = String::new();
        h.render("x", "help", &mut s);
        assert!(s.contains("x_bucket{le=\"0.025\"} 1"), "{s}");
        assert!(s.contains("x_bucket{le=\"1\"} 2"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3"), "{s}");
        assert!(s.contains("x_count 3"), "{s}");
    }
}
