//! Benchmark 5: PostgreSQL provider grant+revoke pairs per second
//! (`PostgresProvider::apply` + `remove`) next to raw `CREATE ROLE … LOGIN
//! PASSWORD … VALID UNTIL …` + `DROP ROLE` on one tokio-postgres connection.
//! Both serial; run alternately in two rounds to share any drift.

use std::time::{Duration, Instant};

use airlock_core::{ProviderName, UserName};
use airlock_providers::postgres::PostgresProvider;
use airlock_providers::postgres::{Config, Target};
use airlock_providers::EntitlementTarget;
use airlock_providers::{GrantSpec, Provider};
use anyhow::{anyhow, Result};
use rand::RngCore;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::report::{pct, Met, Row};
use crate::util::{request_id, unique_tag};
use crate::{pg, Ctx};

const GOAL: f64 = 0.8;

/// Runs the benchmark.
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let tag = unique_tag();
    let prefix = format!("alp_{tag}_");
    let ent_role = format!("alprole_{tag}");
    let mut admin = pg::connect(&ctx.pg_url)?;
    pg::create_role(&mut admin, &ent_role)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(measure(ctx, &prefix, &ent_role));
    drop(rt);
    let _ = pg::drop_roles(&mut admin, &prefix, &[&ent_role]);
    let (provider, raw) = result?;
    Ok(vec![Row {
        figure: format!("PostgreSQL provider apply+remove pairs, serial ({} pairs)", ctx.pairs),
        measured: format!("{provider:.1} pairs/s"),
        peer: format!("raw CREATE ROLE … LOGIN PASSWORD … VALID UNTIL + DROP ROLE, 1 connection: {raw:.1} pairs/s"),
        ratio: pct(provider, raw),
        goal: format!("≥ {:.0}%", GOAL * 100.0),
        met: Met::from(provider >= GOAL * raw),
    }])
}

async fn measure(ctx: &Ctx, prefix: &str, ent_role: &str) -> Result<(f64, f64)> {
    let provider = PostgresProvider::new(
        ProviderName::parse("bench-pg")?,
        &Config {
            url: ctx.pg_url.clone(),
            role_prefix: Some(prefix.into()),
            ..Default::default()
        },
    )
    .map_err(|e| anyhow!(e))?;
    let (client, conn) = tokio_postgres::connect(&ctx.pg_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    // Warm both paths (connect, prepare).
    provider_pairs(&provider, ent_role, 1).await?;
    raw_pairs(&client, prefix, 1).await?;
    let half = ctx.pairs / 2;
    let (mut tp, mut tr) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..2 {
        tr += raw_pairs(&client, prefix, half).await?;
        tp += provider_pairs(&provider, ent_role, half).await?;
    }
    let n = (2 * half) as f64;
    Ok((n / tp.as_secs_f64(), n / tr.as_secs_f64()))
}

async fn provider_pairs(p: &PostgresProvider, ent_role: &str, n: usize) -> Result<Duration> {
    let t = Instant::now();
    for _ in 0..n {
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let spec = GrantSpec {
            request_id: request_id(),
            requester: UserName::parse("alice")?,
            email: None,
            entitlement: airlock_core::EntitlementName::parse("bench")?,
            target: EntitlementTarget::Postgres(Target {
                role: ent_role.into(),
            }),
            not_after: OffsetDateTime::now_utc() + time::Duration::hours(1),
            secret,
        };
        p.apply(&spec).await?;
        p.remove(&spec).await?;
    }
    Ok(t.elapsed())
}

async fn raw_pairs(c: &tokio_postgres::Client, prefix: &str, n: usize) -> Result<Duration> {
    let t = Instant::now();
    for _ in 0..n {
        let name = format!("{prefix}raw{}", request_id());
        let until = (OffsetDateTime::now_utc() + time::Duration::hours(1)).format(&Rfc3339)?;
        let mut pw = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut pw);
        let pw: String = pw.iter().map(|b| format!("{b:02x}")).collect();
        c.batch_execute(&format!(
            "CREATE ROLE {name} LOGIN PASSWORD '{pw}' VALID UNTIL '{until}'"
        ))
        .await?;
        c.batch_execute(&format!("DROP ROLE {name}")).await?;
    }
    Ok(t.elapsed())
}
