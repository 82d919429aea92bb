//! Benchmark 3: `PolicyEngine::decide` latency with a catalog of 1,000
//! entitlements and 100 operator Cedar policies.

use std::time::Instant;

use airlock_core::config::{Config, Entitlement};
use airlock_core::policy::{Action, DecisionContext, PolicyEngine};
use airlock_core::{GroupName, Principal, UserName};
use anyhow::{anyhow, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::report::{Met, Row};
use crate::util::{percentile, sorted};
use crate::Ctx;

const ENTITLEMENTS: usize = 1000;
const POLICIES: usize = 100;
const GROUPS: usize = 20;
/// The limit, microseconds.
const LIMIT_US: f64 = 100.0;

/// Runs the benchmark: the operator policies, then the built-in policy alone
/// (to show how much of the cost is per-call setup rather than evaluation).
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let config = Config::parse(&catalog()).map_err(|e| anyhow!("catalog: {e}"))?;
    let engine = PolicyEngine::new(&config, Some(&policies())).map_err(|e| anyhow!("{e}"))?;
    let (lat, allowed) = measure(&engine, &config, ctx.decisions);
    let (p50, p99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
    let bare = PolicyEngine::new(&config, None).map_err(|e| anyhow!("{e}"))?;
    let (bare_lat, _) = measure(&bare, &config, ctx.decisions / 4);
    Ok(vec![
        Row {
            figure: format!(
                "PolicyEngine::decide, {ENTITLEMENTS} entitlements, {} Cedar policies ({} calls)",
                engine.policy_count(),
                lat.len()
            ),
            measured: format!(
                "p99 {p99:.1} µs (p50 {p50:.1} µs; {:.0}% allowed)",
                100.0 * allowed as f64 / lat.len() as f64
            ),
            peer: format!("limit: {LIMIT_US:.0} µs"),
            ratio: format!("{:.2}", LIMIT_US / p99),
            goal: "p99 ≤ 100 µs".into(),
            met: Met::from(p99 <= LIMIT_US),
        },
        Row::info(
            format!(
                "PolicyEngine::decide, same catalog, built-in policy only ({} calls)",
                bare_lat.len()
            ),
            format!(
                "p99 {:.1} µs (p50 {:.1} µs)",
                percentile(&bare_lat, 99.0),
                percentile(&bare_lat, 50.0)
            ),
        ),
    ])
}

/// Times `calls` decisions over random principals, actions, entitlements and
/// contexts (after 1,000 uncounted warm-up calls); returns sorted latencies in
/// µs and how many were allowed.
fn measure(engine: &PolicyEngine, config: &Config, calls: usize) -> (Vec<f64>, usize) {
    let ents: Vec<&Entitlement> = config.entitlements.values().collect();
    let principals: Vec<Principal> = (0..50).map(principal).collect();
    let mut rng = StdRng::seed_from_u64(7);
    let mut lat = Vec::with_capacity(calls);
    let mut allowed = 0usize;
    for i in 0..calls + 1000 {
        let p = &principals[rng.gen_range(0..principals.len())];
        let e = ents[rng.gen_range(0..ents.len())];
        let action = [Action::Request, Action::Review, Action::Breakglass][rng.gen_range(0..3)];
        let dc = DecisionContext {
            duration: rng.gen_range(60..8 * 3600),
            reason: "INC-1234 bench".into(),
            mfa: rng.gen_bool(0.5),
            hour: rng.gen_range(0..24),
            requester: (action == Action::Review).then(|| format!("user{}", rng.gen_range(0..50))),
        };
        let t = Instant::now();
        let d = engine.decide(p, action, e, &dc);
        let us = t.elapsed().as_secs_f64() * 1e6;
        if i >= 1000 {
            lat.push(us);
            allowed += usize::from(d.allowed);
        }
    }
    (sorted(lat), allowed)
}

fn principal(i: usize) -> Principal {
    let groups = (0..3)
        .map(|k| GroupName::parse(&format!("g{}", (i * 7 + k * 3) % GROUPS)).expect("valid"))
        .collect();
    Principal {
        name: UserName::parse(&format!("user{i}")).expect("valid"),
        groups,
        email: Some(format!("user{i}@example.com")),
        admin: false,
        mfa: i.is_multiple_of(2),
    }
}

/// 1,000 entitlements over 4 providers, some break-glass, mixed reviewers.
fn catalog() -> String {
    let mut s = String::from("[server]\n");
    for p in 0..4 {
        s.push_str(&format!(
            "[providers.pg-{p}]\nkind = \"postgres\"\nurl = \"postgres://airlock@db{p}.example:5432/app\"\n"
        ));
    }
    for i in 0..ENTITLEMENTS {
        let breakglass = i % 50 == 0;
        let approvals = if breakglass {
            String::new()
        } else {
            format!(
                "approvals = {{ count = {}, reviewers = [\"g{}\", \"g{}\"] }}\n",
                1 + i % 2,
                i % GROUPS,
                (i + 5) % GROUPS
            )
        };
        let requesters = if i % 3 == 0 {
            format!(
                "requesters = [\"g{}\", \"g{}\"]\n",
                i % GROUPS,
                (i + 1) % GROUPS
            )
        } else {
            String::new()
        };
        s.push_str(&format!(
            "[[entitlement]]\nname = \"svc-{i}-write\"\nprovider = \"pg-{}\"\nrole = \"svc_{i}_writer\"\n\
             max_duration = \"{}h\"\nbreakglass = {breakglass}\n{approvals}{requesters}",
            i % 4,
            1 + i % 8
        ));
    }
    s
}

/// 100 operator policies: forbids and permits with when-conditions on
/// duration, MFA, hour, group membership and entitlement attributes.
fn policies() -> String {
    let mut s = String::new();
    for i in 0..POLICIES {
        let g = i % GROUPS;
        let e = (i * 37) % ENTITLEMENTS;
        let body = match i % 5 {
            0 => format!(
                "forbid(principal, action == Action::\"request\", resource) when {{ context.duration > {} && !context.mfa }};",
                3600 + 60 * i
            ),
            1 => format!(
                "permit(principal in Group::\"g{g}\", action == Action::\"request\", resource == Entitlement::\"svc-{e}-write\") \
                 when {{ context.hour >= 8 && context.hour < 18 && context.duration <= resource.max_duration }};"
            ),
            2 => format!(
                "forbid(principal, action, resource) when {{ resource.breakglass && context.hour < {} }} \
                 unless {{ principal in Group::\"g{g}\" }};",
                i % 7
            ),
            3 => format!(
                "forbid(principal, action == Action::\"review\", resource) when {{ resource.max_duration > {} && !context.mfa && resource.provider == \"pg-{}\" }};",
                3600 * (1 + i % 8),
                i % 4
            ),
            _ => format!(
                "permit(principal in Group::\"g{g}\", action == Action::\"review\", resource) \
                 when {{ context.mfa && context.requester != \"user{}\" && resource.provider == \"pg-{}\" }};",
                i % 50,
                i % 4
            ),
        };
        s.push_str(&format!("@id(\"op-{i}\")\n{body}\n"));
    }
    s
}
