//! Benchmark 3 of issue 4: MariaDB provider grant+revoke pairs per second
//! (`MysqlProvider::apply` + `remove`: user, role, default role, connection
//! limit, expiry event; then drop, event drop, kill) next to raw `CREATE USER
//! … IDENTIFIED BY …` + `DROP USER` on one connection to the same server.
//! Both serial; run alternately in two rounds to share any drift. A third,
//! informational peer sends the provider's own statements by hand (same two
//! round trips per pair), which separates client overhead from server work.
//!
//! Server: `AIRLOCK_BENCH_MYSQL_URL`, else `AIRLOCK_TEST_MYSQL_URL` (set by
//! `scripts/test`), else `mysql://root@127.0.0.1:3306/` if it answers.

use std::time::{Duration, Instant};

use airlock_core::{ProviderName, UserName};
use airlock_providers::mysql::MysqlProvider;
use airlock_providers::mysql::{Config, Target};
use airlock_providers::EntitlementTarget;
use airlock_providers::{GrantSpec, Provider};
use anyhow::{anyhow, Context, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use rand::RngCore;
use time::OffsetDateTime;

use crate::report::{pct, Met, Row};
use crate::util::{request_id, unique_tag};
use crate::Ctx;

const GOAL: f64 = 0.8;
const DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306/";

/// Runs the benchmark.
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(ctx))
}

async fn connect(url: &str) -> Result<Conn> {
    let opts = Opts::from_url(url).context("the MariaDB URL does not parse")?;
    let opts = OptsBuilder::from_opts(opts).prefer_socket(false);
    let conn = tokio::time::timeout(Duration::from_secs(5), Conn::new(opts))
        .await
        .context("MariaDB did not answer within 5s")??;
    Ok(conn)
}

async fn server() -> Result<(String, Conn)> {
    for var in ["AIRLOCK_BENCH_MYSQL_URL", "AIRLOCK_TEST_MYSQL_URL"] {
        if let Ok(url) = std::env::var(var) {
            let conn = connect(&url)
                .await
                .with_context(|| format!("connect to {var}"))?;
            return Ok((url, conn));
        }
    }
    match connect(DEFAULT_URL).await {
        Ok(conn) => Ok((DEFAULT_URL.into(), conn)),
        Err(e) => Err(e.context(
            "no MariaDB: set AIRLOCK_BENCH_MYSQL_URL, or run `scripts/test -- bench/run --only mysql` \
             (it starts a throwaway MariaDB)",
        )),
    }
}

async fn bench(ctx: &Ctx) -> Result<Vec<Row>> {
    let (url, mut admin) = server().await?;
    let tag = unique_tag();
    let prefix = format!("alb_{tag}_");
    let role = format!("albrole_{tag}");
    admin.query_drop(format!("CREATE ROLE `{role}`")).await?;
    let provider = MysqlProvider::new(
        ProviderName::parse("bench-mysql")?,
        &Config {
            url,
            role_prefix: Some(prefix.clone()),
            ..Default::default()
        },
    )
    .map_err(|e| anyhow!(e))?;
    let result = measure(ctx, &provider, &mut admin, &prefix, &role).await;
    // Leave nothing behind, whatever happened.
    if let Ok(accounts) = provider.list_managed().await {
        for a in accounts {
            let _ = provider.remove_account(&a.account).await;
        }
    }
    let _ = admin
        .query_drop(format!("DROP ROLE IF EXISTS `{role}`"))
        .await;
    let (p, raw, same) = result?;
    let scheduler = match provider.native_expiry_enabled() {
        Some(true) => "event scheduler ON",
        _ => "event scheduler OFF",
    };
    Ok(vec![Row {
        figure: format!(
            "MariaDB provider apply+remove pairs, serial ({} pairs, {scheduler})",
            ctx.pairs
        ),
        measured: format!("{p:.1} pairs/s"),
        peer: format!("raw CREATE USER … IDENTIFIED BY + DROP USER, 1 connection: {raw:.1} pairs/s"),
        ratio: pct(p, raw),
        goal: format!("≥ {:.0}%", GOAL * 100.0),
        met: Met::from(p >= GOAL * raw),
    }, Row {
        figure: "MariaDB provider vs its own 7 statements sent by hand (client overhead)".into(),
        measured: format!("{p:.1} pairs/s"),
        peer: format!("CREATE USER, GRANT, SET DEFAULT ROLE, CREATE EVENT; then DROP USER, DROP EVENT, KILL USER (2 round trips): {same:.1} pairs/s"),
        ratio: pct(p, same),
        goal: "–".into(),
        met: Met::Info,
    }])
}

async fn measure(
    ctx: &Ctx,
    provider: &MysqlProvider,
    admin: &mut Conn,
    prefix: &str,
    role: &str,
) -> Result<(f64, f64, f64)> {
    // Warm every path (connect, first statements).
    provider_pairs(provider, role, 1).await?;
    raw_pairs(admin, prefix, 1).await?;
    same_statements_pairs(admin, prefix, role, 1).await?;
    let half = ctx.pairs / 2;
    let (mut tp, mut tr, mut ts) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..2 {
        tr += raw_pairs(admin, prefix, half).await?;
        tp += provider_pairs(provider, role, half).await?;
        ts += same_statements_pairs(admin, prefix, role, half).await?;
    }
    let n = (2 * half) as f64;
    Ok((
        n / tp.as_secs_f64(),
        n / tr.as_secs_f64(),
        n / ts.as_secs_f64(),
    ))
}

async fn provider_pairs(p: &MysqlProvider, role: &str, n: usize) -> Result<Duration> {
    let t = Instant::now();
    for _ in 0..n {
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let spec = GrantSpec {
            request_id: request_id(),
            requester: UserName::parse("alice")?,
            email: None,
            entitlement: airlock_core::EntitlementName::parse("bench")?,
            target: EntitlementTarget::Mysql(Target { role: role.into() }),
            not_after: OffsetDateTime::now_utc() + time::Duration::hours(1),
            secret,
        };
        p.apply(&spec).await?;
        p.remove(&spec).await?;
    }
    Ok(t.elapsed())
}

async fn raw_pairs(c: &mut Conn, prefix: &str, n: usize) -> Result<Duration> {
    let t = Instant::now();
    for _ in 0..n {
        let name = format!("{prefix}raw{}", request_id());
        let mut pw = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut pw);
        let pw: String = pw.iter().map(|b| format!("{b:02x}")).collect();
        c.query_drop(format!("CREATE USER `{name}`@`%` IDENTIFIED BY '{pw}'"))
            .await?;
        c.query_drop(format!("DROP USER `{name}`@`%`")).await?;
    }
    Ok(t.elapsed())
}

/// The statements the provider sends for one grant and its removal, by hand.
async fn same_statements_pairs(
    c: &mut Conn,
    prefix: &str,
    role: &str,
    n: usize,
) -> Result<Duration> {
    // PASSWORD('pw'): the provider also sends a precomputed hash.
    const HASH: &str = "*D821809F681A40A6E379B50D0463EFAE20BDD122";
    let t = Instant::now();
    for _ in 0..n {
        let name = format!("{prefix}same{}", request_id());
        let (u, e) = (format!("`{name}`@`%`"), format!("`mysql`.`{name}`"));
        c.query_drop(format!(
            "CREATE USER {u} IDENTIFIED BY PASSWORD '{HASH}' WITH MAX_USER_CONNECTIONS 10; \
             GRANT `{role}` TO {u}; SET DEFAULT ROLE `{role}` FOR {u}; \
             CREATE OR REPLACE EVENT {e} ON SCHEDULE AT GREATEST(TIMESTAMP '2037-01-01 00:00:00', \
             CURRENT_TIMESTAMP + INTERVAL 1 SECOND) ON COMPLETION NOT PRESERVE \
             DO BEGIN DROP USER IF EXISTS {u}; KILL HARD USER {u}; END"
        ))
        .await?;
        c.query_drop(format!(
            "DROP USER IF EXISTS {u}; DROP EVENT IF EXISTS {e}; KILL HARD USER {u}"
        ))
        .await?;
    }
    Ok(t.elapsed())
}
