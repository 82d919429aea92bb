//! Benchmark (issue 4, #4): 20 concurrent GCP IAM grants on one policy
//! against the in-process emulation. Two ways to race: 20 independent
//! provider instances (as 20 airlock replicas would; only etags and retries
//! keep them from losing each other's bindings) and 20 grants through one
//! instance (serialized in-process). The floor is 20 sequential grants by one
//! writer. Every round checks that all 20 bindings landed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_core::{EntitlementName, ProviderName, RequestId, UserName};
use airlock_emulators::gcp::{Binding, GcpEmulator, Policy};
use airlock_providers::gcp_iam::GcpIamProvider;
use airlock_providers::gcp_iam::{Config, Target};
use airlock_providers::EntitlementTarget;
use airlock_providers::{GrantSpec, Provider, ProviderContext};
use anyhow::{anyhow, bail, Context, Result};
use time::OffsetDateTime;

use crate::report::{Met, Row};
use crate::Ctx;

const GRANTS: usize = 20;
const ROUNDS: usize = 10;
const ROLE: &str = "roles/spanner.databaseUser";
const SA: &str = "airlock@bench.iam.gserviceaccount.com";

/// What one way of racing measured over all rounds.
#[derive(Default)]
struct Outcome {
    walls: Vec<Duration>,
    retries: Vec<u32>,
}

impl Outcome {
    fn wall_ms(&self) -> f64 {
        let total: Duration = self.walls.iter().sum();
        total.as_secs_f64() * 1000.0 / self.walls.len().max(1) as f64
    }

    fn retries_text(&self) -> String {
        let n = self.retries.len().max(1) as f64;
        let mean = self.retries.iter().map(|&r| f64::from(r)).sum::<f64>() / n;
        let max = self.retries.iter().copied().max().unwrap_or(0);
        format!("retries/grant mean {mean:.2}, max {max}")
    }
}

/// Runs the benchmark.
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (independent, shared, floor) = rt.block_on(measure(ctx))?;
    let floor_ms = floor.wall_ms();
    let row = |what: &str, o: &Outcome| {
        Row {
        figure: format!("GCP IAM: {GRANTS} concurrent grants on one policy, {what} (emulation, {ROUNDS} rounds)"),
        measured: format!(
            "all {} landed; {}; wall {:.1} ms",
            o.retries.len(),
            o.retries_text(),
            o.wall_ms()
        ),
        peer: format!("{GRANTS} sequential grants, one writer: {floor_ms:.1} ms"),
        ratio: format!("{:.2}×", o.wall_ms() / floor_ms),
        goal: "all land; retries reported".into(),
        met: Met::from(o.retries.len() == GRANTS * ROUNDS),
    }
    };
    Ok(vec![
        row("20 independent writers (etag retries)", &independent),
        row("one provider (serialized in-process)", &shared),
    ])
}

async fn measure(ctx: &Ctx) -> Result<(Outcome, Outcome, Outcome)> {
    let emu = GcpEmulator::start().await;
    let dir = ctx.work_dir.join("gcp");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("sa.json"),
        emu.create_service_account_key(SA).to_string(),
    )?;
    let build = |resource: &str| -> Result<Arc<GcpIamProvider>> {
        let config = Config {
            resource: resource.into(),
            credentials: Some("sa.json".into()),
            endpoint: Some(emu.endpoint().into()),
        };
        let p = GcpIamProvider::new(
            ProviderName::parse("bench-gcp")?,
            &config,
            &ProviderContext {
                config_dir: dir.clone(),
                data_dir: dir.clone(),
            },
        )
        .map_err(|e| anyhow!(e))?;
        Ok(Arc::new(p))
    };
    let (mut independent, mut shared, mut floor) =
        (Outcome::default(), Outcome::default(), Outcome::default());
    for round in 0..ROUNDS {
        for (mode, out) in [
            ("sequential", &mut floor),
            ("independent", &mut independent),
            ("shared", &mut shared),
        ] {
            let resource = format!("projects/bench-{mode}-{round}");
            emu.seed_policy(
                &resource,
                Policy {
                    bindings: vec![Binding::new("roles/owner", &["user:owner@example.com"])],
                    ..Default::default()
                },
            );
            let providers: Vec<Arc<GcpIamProvider>> = match mode {
                "independent" => (0..GRANTS)
                    .map(|_| build(&resource))
                    .collect::<Result<_>>()?,
                _ => vec![build(&resource)?],
            };
            // Tokens are fetched before timing: the race is about the policy.
            for p in &providers {
                p.check()
                    .await
                    .context("provider check against the emulation")?;
            }
            let grants: Vec<GrantSpec> = (0..GRANTS)
                .map(|i| grant(round, i))
                .collect::<Result<_>>()?;
            let t = Instant::now();
            let retries = if mode == "sequential" {
                // On a worker like the concurrent tasks, so both pay the same thread hops.
                let p = providers[0].clone();
                tokio::spawn(async move {
                    let mut r = Vec::new();
                    for g in &grants {
                        r.push(p.apply_counting(g).await?);
                    }
                    Ok::<_, airlock_providers::ProviderError>(r)
                })
                .await??
            } else {
                let tasks: Vec<_> = grants
                    .into_iter()
                    .enumerate()
                    .map(|(i, g)| {
                        let p = providers[i % providers.len()].clone();
                        tokio::spawn(async move { p.apply_counting(&g).await })
                    })
                    .collect();
                let mut r = Vec::new();
                for task in tasks {
                    r.push(task.await??);
                }
                r
            };
            out.walls.push(t.elapsed());
            let now = OffsetDateTime::now_utc();
            for i in 0..GRANTS {
                if !emu.has_role(&resource, &member(round, i), ROLE, now) {
                    bail!("{mode} round {round}: grant {i} was lost");
                }
            }
            if !emu.has_role(&resource, "user:owner@example.com", "roles/owner", now) {
                bail!("{mode} round {round}: the owner binding was lost");
            }
            out.retries.extend(retries);
        }
    }
    Ok((independent, shared, floor))
}

fn member(round: usize, i: usize) -> String {
    format!("user:u{round}x{i}@example.com")
}

fn grant(round: usize, i: usize) -> Result<GrantSpec> {
    Ok(GrantSpec {
        request_id: RequestId::parse(&format!("bench{round:03}x{i:04}"))?,
        requester: UserName::parse("alice")?,
        email: Some(member(round, i).trim_start_matches("user:").to_owned()),
        entitlement: EntitlementName::parse("bench-gcp")?,
        target: EntitlementTarget::GcpIam(Target { role: ROLE.into() }),
        not_after: OffsetDateTime::now_utc() + Duration::from_secs(3600),
        secret: [0; 32],
    })
}
