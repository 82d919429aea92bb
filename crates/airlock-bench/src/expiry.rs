//! Benchmark 2: expiry lag. N active grants sit in the store (created through
//! the Store API; the matching PostgreSQL roles created up front with raw SQL,
//! named as the provider names them), their `not_after` spread over a window,
//! with the real reconciler and the real PostgreSQL provider removing them.
//! Lag per grant = time of its `grant.removed` audit event − `not_after`.
//! Also reports the RSS of this process (the server runs in-process).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_core::audit_chain::AuditDraft;
use airlock_core::request::{GrantPhase, GrantStatus, Request, RequestState};
use airlock_core::{EntitlementName, RequestId, Span, UserName};
use airlock_store::Store;
use anyhow::{anyhow, Result};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::harness::{self, Server, ENTITLEMENT};
use crate::report::{Met, Row};
use crate::util::{mib, percentile, request_id, rss_kib, sorted, unique_tag};
use crate::{pg, Ctx};

/// Grants created first with a far `not_after`, to time the insert rate.
const PROBE: usize = 100;
/// p99 goal, seconds.
const GOAL_P99: f64 = 1.0;

/// Runs the benchmark; returns its rows.
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let tag = unique_tag();
    let prefix = format!("alx_{tag}_");
    let ent_role = format!("alxrole_{tag}");
    let dir = ctx.work_dir.join(format!("expiry-{tag}"));
    std::fs::create_dir_all(&dir)?;
    let mut admin = pg::connect(&ctx.pg_url)?;
    pg::create_role(&mut admin, &ent_role)?;
    let result = measure(ctx, &dir, &prefix, &ent_role);
    let _ = pg::drop_roles(&mut admin, &prefix, &[&ent_role]);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(ctx: &Ctx, dir: &std::path::Path, prefix: &str, ent_role: &str) -> Result<Vec<Row>> {
    let n = ctx.grants;
    let catalog = harness::catalog(&ctx.pg_url, prefix, ent_role, "");
    let db_url = format!("sqlite://{}", dir.join("airlock.db").display());
    let server = Server::start(&catalog, dir, &db_url)?;
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle = rss_kib(None)?;
    let store = server.app.store.clone();

    // Roles for the measured grants, as the provider would have created them.
    let ids: Vec<RequestId> = (0..n - PROBE).map(|_| request_id()).collect();
    let names: Vec<String> = ids.iter().map(|id| format!("{prefix}{id}")).collect();
    let t = Instant::now();
    let until = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut admin = pg::connect(&ctx.pg_url)?;
    pg::create_login_roles(&mut admin, &names, ent_role, &until.format(&Rfc3339)?)?;
    eprintln!(
        "  created {} PostgreSQL roles in {:.1} s",
        names.len(),
        t.elapsed().as_secs_f64()
    );

    // Probe grants (far not_after) time the insert rate for the schedule.
    let t = Instant::now();
    let far = OffsetDateTime::now_utc() + time::Duration::hours(1);
    for _ in 0..PROBE {
        insert_active(store.as_ref(), &request_id(), far)?;
    }
    let per_insert = t.elapsed().as_secs_f64() / PROBE as f64;
    let lead = per_insert * (n - PROBE) as f64 * 1.3 + 3.0;
    let base = OffsetDateTime::now_utc() + time::Duration::seconds_f64(lead);
    let window = ctx.expiry_window.as_secs_f64();
    eprintln!(
        "  inserting {} active grants ({:.1} ms each), expiring over {window:.0} s from +{lead:.1} s",
        ids.len(),
        per_insert * 1e3
    );
    let mut not_after: HashMap<String, OffsetDateTime> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let t = base + time::Duration::seconds_f64(window * i as f64 / ids.len() as f64);
        insert_active(store.as_ref(), id, t)?;
        not_after.insert(id.to_string(), t);
    }
    let slack = (base - OffsetDateTime::now_utc()).as_seconds_f64();
    std::thread::sleep(Duration::from_millis(300));
    let rss_full = rss_kib(None)?;
    eprintln!("  all {n} grants active; first expiry in {slack:.1} s");

    let deadline = base + time::Duration::seconds_f64(window + ctx.expiry_grace.as_secs_f64());
    let lags = collect_lags(&store, &not_after, deadline)?;
    drop(server);
    Ok(rows(ctx, &lags, not_after.len(), slack, rss_idle, rss_full))
}

/// Stores one active grant with its provider side applied.
fn insert_active(store: &dyn Store, id: &RequestId, not_after: OffsetDateTime) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    let r = Request {
        id: id.clone(),
        entitlement: EntitlementName::parse(ENTITLEMENT)?,
        requester: UserName::parse("alice")?,
        reason: "bench".into(),
        state: RequestState::Active,
        requested_duration: Span::from_secs(3600).expect("valid"),
        not_before: Some(now),
        not_after: Some(not_after),
        breakglass: false,
        post_review_closed: false,
        reviews: vec![],
        grant: GrantStatus {
            phase: GrantPhase::Applied,
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
        },
        created_at: now,
        updated_at: now,
        secret_salt: vec![],
    };
    let audit = AuditDraft::new(
        "grant.applied",
        "system",
        format!("request:{id}"),
        json!({"provider": "bench-pg", "not_after": not_after.format(&Rfc3339)?}),
    );
    store
        .create_request(&r, now + time::Duration::hours(24), &[audit], now)
        .map_err(|e| anyhow!("create_request: {e}"))
}

/// Follows the audit log until every measured grant is removed (or the
/// deadline); returns lags in seconds (negative = removed early).
fn collect_lags(
    store: &Arc<dyn Store>,
    not_after: &HashMap<String, OffsetDateTime>,
    deadline: OffsetDateTime,
) -> Result<Vec<f64>> {
    let mut since = store.audit_head().map_err(|e| anyhow!("{e}"))?.unwrap_or(0);
    let mut lags = Vec::with_capacity(not_after.len());
    while lags.len() < not_after.len() && OffsetDateTime::now_utc() < deadline {
        let page = store
            .audit_events(since, 10_000)
            .map_err(|e| anyhow!("{e}"))?;
        if page.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        since = page.last().map(|e| e.seq).unwrap_or(since);
        for ev in page.iter().filter_map(|e| e.to_event()) {
            if ev.kind != "grant.removed" {
                continue;
            }
            let id = ev.subject.trim_start_matches("request:");
            if let Some(na) = not_after.get(id) {
                let at = OffsetDateTime::parse(&ev.at, &Rfc3339)?;
                lags.push((at - *na).as_seconds_f64());
            }
        }
    }
    Ok(lags)
}

fn rows(ctx: &Ctx, lags: &[f64], expected: usize, slack: f64, idle: u64, full: u64) -> Vec<Row> {
    let done = lags.len();
    let lags = sorted(lags.to_vec());
    let (p50, p99, max) = (
        percentile(&lags, 50.0),
        percentile(&lags, 99.0),
        lags.last().copied().unwrap_or(f64::NAN),
    );
    let missing = expected - done;
    let note = if missing > 0 {
        format!(
            "; {missing} of {expected} not removed within the window + {:?}",
            ctx.expiry_grace
        )
    } else {
        String::new()
    };
    let late = if slack < 0.0 {
        format!("; store filled {:.1} s late", -slack)
    } else {
        String::new()
    };
    let grants = ctx.grants;
    let window = ctx.expiry_window.as_secs();
    vec![
        Row {
            figure: format!(
                "expiry lag p99 (grant.removed − not_after), {grants} active grants, {expected} expiring over {window} s, real PostgreSQL provider, SQLite store"
            ),
            measured: format!("p99 {p99:.3} s (p50 {p50:.3} s, max {max:.3} s, {done} removed{note}{late})"),
            peer: "limit: 1 s".into(),
            ratio: if p99 > 0.0 { format!("{:.2}", GOAL_P99 / p99) } else { "–".into() },
            goal: "p99 ≤ 1 s".into(),
            met: Met::from(missing == 0 && p99 <= GOAL_P99),
        },
        Row::info("RSS, in-process server (bench process, /proc/self VmRSS), idle", mib(idle)),
        Row::info(format!("RSS, in-process server (bench process), {grants} active grants"), mib(full)),
    ]
}
