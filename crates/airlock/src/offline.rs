//! Commands that read the store or catalog directly, with no server running:
//! `audit verify --offline`, `audit export --offline`, `audit pubkey --offline`,
//! `policy test`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;

use airlock_core::audit_chain::{ChainVerifier, VerifyReport};
use airlock_core::note::VerifierKey;
use airlock_core::policy::{Action, DecisionContext, PolicyEngine};
use airlock_core::{GroupName, Span, UserName};
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::serve::resolve;
use crate::Output;

fn open_existing(
    config: &Path,
) -> Result<(
    crate::serve::Resolved,
    std::sync::Arc<dyn airlock_store::Store>,
)> {
    let r = resolve(config, None)?;
    if let Some(path) = r.database_url.strip_prefix("sqlite://") {
        if !Path::new(path).exists() {
            bail!(
                "database {path} does not exist: nothing to verify (is the config the server's?)"
            );
        }
    }
    let store = airlock_store::open(&r.database_url, None).map_err(|e| anyhow!("{e}"))?;
    Ok((r, store))
}

/// A saved checkpoint to check the log against (`--since`), and an optional pinned key.
pub struct Since {
    pub saved: String,
    pub key: Option<String>,
}

/// Verifies the chain straight from the database. Reading and hashing run on
/// two threads so the check costs about as much as the slower of the two.
/// With `since`, also proves the log extends the saved checkpoint.
pub fn verify(
    config: &Path,
    since: Option<Since>,
) -> Result<(VerifyReport, Option<crate::tlog::SinceReport>)> {
    let (r, store) = open_existing(config)?;
    let every = r.config.server.checkpoint_every;
    let origin = r.config.server.audit_origin();
    let key =
        airlock_service::keys::ServerKeys::load_public(&r.data_dir).map_err(|e| anyhow!("{e}"))?;
    if key.is_none() {
        eprintln!(
            "warning: no signing key in {}; checkpoint signatures are not checked",
            r.data_dir.display()
        );
    }
    let checkpoints = store.audit_checkpoints().map_err(|e| anyhow!("{e}"))?;
    let head = store.audit_head().map_err(|e| anyhow!("{e}"))?;
    // Events travel to the hashing thread in batches packed into one buffer,
    // so reading a million events costs no million allocations.
    #[derive(Default)]
    struct Batch {
        seqs: Vec<u64>,
        hashes: Vec<[u8; 32]>,
        ends: Vec<usize>,
        bodies: Vec<u8>,
    }
    const BATCH: usize = 8192;
    let (tx, rx) = mpsc::sync_channel::<Batch>(4);
    let latest = checkpoints.iter().rev().find_map(|c| c.note.clone());
    let keep = since.is_some();
    let hasher = std::thread::spawn(move || {
        let mut v = ChainVerifier::new(key, checkpoints).require_every(every);
        if keep {
            v = v.keep_leaves();
        }
        for b in rx {
            let mut start = 0;
            for i in 0..b.seqs.len() {
                v.feed(b.seqs[i], &b.bodies[start..b.ends[i]], &b.hashes[i]);
                start = b.ends[i];
            }
        }
        v
    });
    let mut batch = Batch::default();
    let mut send_failed = false;
    store
        .audit_scan(&mut |seq, body, hash| {
            let mut h = [0u8; 32];
            if hash.len() == 32 {
                h.copy_from_slice(hash);
            } else {
                // A hash of the wrong length can never match; keep one that fails.
                h[0] = 1;
            }
            batch.seqs.push(seq);
            batch.hashes.push(h);
            batch.bodies.extend_from_slice(body);
            batch.ends.push(batch.bodies.len());
            if batch.seqs.len() == BATCH && tx.send(std::mem::take(&mut batch)).is_err() {
                send_failed = true;
                return false;
            }
            true
        })
        .map_err(|e| anyhow!("{e}"))?;
    if !batch.seqs.is_empty() && !send_failed {
        let _ = tx.send(batch);
    }
    drop(tx);
    let v = hasher
        .join()
        .map_err(|_| anyhow!("verifier thread panicked"))?;
    let (report, leaves) = v.finish_with_leaves(head);
    let Some(since) = since else {
        return Ok((report, None));
    };
    let (vk, pinned) = crate::tlog::choose_key(since.key.as_deref(), || {
        let k = key.ok_or_else(|| {
            anyhow!(
                "no signing key in {}: pass the key you saved with --key",
                r.data_dir.display()
            )
        })?;
        VerifierKey::new(&origin, k).map_err(|e| anyhow!("{e}"))
    })?;
    // The verifier kept every leaf: the proof is computed here, from the events themselves.
    let check = crate::tlog::check_since(&since.saved, latest.as_deref(), &vk, pinned, |m, n| {
        if (leaves.len() as u64) < n {
            bail!("the chain is broken before event {n} (see the verify report)");
        }
        let mut tree: &[airlock_core::merkle::Hash] = &leaves;
        airlock_core::merkle::consistency_proof(m, n, &mut tree).map_err(|e| anyhow!("{e}"))
    });
    Ok((report, Some(check)))
}

/// Prints events after `since` as JSON Lines.
pub fn export(config: &Path, since: u64) -> Result<()> {
    let (_, store) = open_existing(config)?;
    let mut since = since;
    loop {
        let page = store
            .audit_events(since, 5000)
            .map_err(|e| anyhow!("{e}"))?;
        for e in &page {
            let ev = e
                .to_event()
                .ok_or_else(|| anyhow!("event {} does not decode", e.seq))?;
            say!("{}", serde_json::to_string(&ev)?);
        }
        match page.last() {
            Some(last) if page.len() == 5000 => since = last.seq,
            _ => return Ok(()),
        }
    }
}

/// The public key from the data dir: hex, and as a note verifier key.
pub fn pubkey(config: &Path) -> Result<(String, String)> {
    let r = resolve(config, None)?;
    let key = airlock_service::keys::ServerKeys::load_public(&r.data_dir)
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| {
            anyhow!(
                "no signing key in {} (start the server once)",
                r.data_dir.display()
            )
        })?;
    let vk = VerifierKey::new(&r.config.server.audit_origin(), key)
        .map_err(|e| anyhow!("[server] audit_origin: {e}"))?;
    Ok((hex_encode(&key.to_bytes()), vk.encode()))
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: Option<String>,
    principal: String,
    #[serde(default)]
    groups: Vec<String>,
    action: String,
    entitlement: String,
    #[serde(default)]
    context: CaseContext,
    expect: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CaseContext {
    duration: Option<String>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    mfa: bool,
    #[serde(default)]
    hour: u8,
    requester: Option<String>,
}

/// Runs operator policy test cases; exit 1 on any mismatch.
pub fn policy_test(out: Output, file: &Path, config: &Path) -> Result<i32> {
    let r = resolve(config, None)?;
    let engine =
        PolicyEngine::new(&r.config, r.policy_text.as_deref()).map_err(|e| anyhow!("{e}"))?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let cases: Cases = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let mut results = vec![];
    let mut failed = 0;
    for (i, c) in cases.cases.iter().enumerate() {
        let name = c.name.clone().unwrap_or_else(|| format!("case {}", i + 1));
        let action = Action::parse(&c.action).ok_or_else(|| {
            anyhow!(
                "{name}: action `{}` is not request, review or breakglass",
                c.action
            )
        })?;
        let mut ent = r
            .config
            .entitlement(&c.entitlement)
            .map_err(|e| anyhow!("{name}: {e}"))?
            .clone();
        // Reviewers as the server would route them (file services only offline).
        ent.approvals = r
            .config
            .services
            .effective_rule(&ent.approvals, ent.service.as_ref());
        let ent = &ent;
        let user = UserName::parse(&c.principal).map_err(|e| anyhow!("{name}: {e}"))?;
        let groups = c
            .groups
            .iter()
            .map(|g| GroupName::parse(g))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("{name}: {e}"))?;
        let mut principal = r.config.principal(user, &groups, false);
        principal.mfa = c.context.mfa;
        let duration = match &c.context.duration {
            Some(d) => d
                .parse::<Span>()
                .map_err(|e| anyhow!("{name}: {e}"))?
                .as_secs(),
            None => ent.max_duration.as_secs(),
        };
        let ctx = DecisionContext {
            duration,
            reason: c.context.reason.clone(),
            mfa: c.context.mfa,
            hour: c.context.hour,
            requester: c.context.requester.clone(),
        };
        let want = match c.expect.as_str() {
            "allow" => true,
            "deny" => false,
            other => bail!("{name}: expect must be allow or deny, not `{other}`"),
        };
        let d = engine.decide(&principal, action, ent, &ctx);
        let pass = d.allowed == want;
        if !pass {
            failed += 1;
        }
        results.push(BTreeMap::from([
            ("name", serde_json::json!(name)),
            ("pass", serde_json::json!(pass)),
            ("expected", serde_json::json!(c.expect)),
            (
                "got",
                serde_json::json!(if d.allowed { "allow" } else { "deny" }),
            ),
            ("policies", serde_json::json!(d.policies)),
        ]));
    }
    let summary =
        serde_json::json!({"passed": results.len() - failed, "failed": failed, "cases": results});
    match out {
        Output::Json => say!("{}", serde_json::to_string_pretty(&summary)?),
        Output::Text => {
            for c in &results {
                let mark = if c["pass"] == true { "ok  " } else { "FAIL" };
                say!(
                    "{mark} {} (expected {}, got {}; policies {})",
                    c["name"].as_str().unwrap_or(""),
                    c["expected"].as_str().unwrap_or(""),
                    c["got"].as_str().unwrap_or(""),
                    c["policies"]
                );
            }
            say!("{} passed, {} failed", results.len() - failed, failed);
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
