//! The audit log as a transparency log, server side: the once-a-second tree
//! head signer and Merkle proofs for the API. The maths is in
//! `airlock_core::merkle`; this module only feeds it stored events.
//!
//! Proofs use a [`SubtreeCache`] in memory: the root of every complete block of
//! 256 events and of every complete subtree above them (about 0.25 bytes per
//! event, so 1 MB covers four million events), extended from the store as the
//! log grows. Hashes inside one block are recomputed from its 256 stored bodies
//! when a proof needs them, so a proof costs one or two block reads, not a scan.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_core::audit_chain::CheckpointSigner;
use airlock_core::merkle::{self, CachedTree, Hash, SubtreeCache, BLOCK};
use airlock_store::{Store, StoreError, StoreResult};

use crate::Service;

/// How often the background task looks for an unsigned head.
pub const SIGN_EVERY: Duration = Duration::from_secs(1);

/// Signer and proof cache of one server.
pub struct Tlog {
    /// Signs tree heads with the server's audit key.
    pub signer: CheckpointSigner,
    cache: Mutex<SubtreeCache>,
}

/// Why a proof cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The sizes or index asked for are not in the log.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Tlog {
    /// A transparency log signing with `signer`.
    pub fn new(signer: CheckpointSigner) -> Tlog {
        Tlog {
            signer,
            cache: Mutex::new(SubtreeCache::new()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, SubtreeCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads events the cache has not seen, up to at least `size`.
    fn extend(store: &dyn Store, cache: &mut SubtreeCache, size: u64) -> StoreResult<()> {
        while cache.size() < size {
            let page = store.audit_events(cache.size(), 10_000)?;
            if page.is_empty() {
                break;
            }
            for e in page {
                if e.seq != cache.size() + 1 {
                    return Err(StoreError::Corrupt(format!(
                        "audit event {} is missing",
                        cache.size() + 1
                    )));
                }
                cache.push(merkle::leaf_hash(&e.body));
            }
        }
        if cache.size() < size {
            return Err(StoreError::Corrupt(format!(
                "the log has {} events, fewer than {size}",
                cache.size()
            )));
        }
        Ok(())
    }

    /// Runs `f` over the cache extended to `size`, with a block reader.
    fn with_tree<T>(
        &self,
        store: &dyn Store,
        size: u64,
        f: impl FnOnce(&mut CachedTree<'_>) -> T,
    ) -> StoreResult<T> {
        let mut cache = self.cache();
        Tlog::extend(store, &mut cache, size)?;
        let mut memo: HashMap<u64, Vec<Hash>> = HashMap::new();
        let mut failed = None;
        let mut read = |b: u64| -> Vec<Hash> {
            memo.entry(b)
                .or_insert_with(|| match store.audit_events(b * BLOCK, BLOCK as u32) {
                    Ok(p) => p.iter().map(|e| merkle::leaf_hash(&e.body)).collect(),
                    Err(e) => {
                        failed = Some(e);
                        Vec::new()
                    }
                })
                .clone()
        };
        let out = f(&mut CachedTree {
            cache: &cache,
            block_leaves: &mut read,
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Consistency proof from tree size `from` to `to` (RFC 9162 §2.1.4).
    pub fn consistency(
        &self,
        store: &dyn Store,
        from: u64,
        to: u64,
    ) -> Result<Vec<Hash>, ProofError> {
        if from == 0 || from > to {
            return Err(ProofError::Invalid(format!(
                "cannot prove consistency from size {from} to size {to}: need 0 < from <= to"
            )));
        }
        self.with_tree(store, to, |t| merkle::consistency_proof(from, to, t))?
            .map_err(|e| ProofError::Invalid(e.to_string()))
    }

    /// Inclusion proof of leaf `index` in the tree of `size` (RFC 9162 §2.1.3).
    pub fn inclusion(
        &self,
        store: &dyn Store,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, ProofError> {
        self.with_tree(store, size, |t| merkle::inclusion_proof(index, size, t))?
            .map_err(|e| ProofError::Invalid(e.to_string()))
    }
}

/// Signs a tree head whenever the head moved since the last checkpoint, at
/// least once a second while the log grows; every replica runs it and the
/// store makes a second signature of the same size a no-op. Signing appends
/// nothing to the chain (an event would move the head and call for another
/// signature); tree heads are not sent to notification sinks yet.
pub async fn run(app: Arc<Service>) {
    loop {
        tokio::time::sleep(SIGN_EVERY).await;
        let now = app.now();
        match app.db_untracked(move |s| s.audit_sign_head(now)).await {
            Ok(Some(cp)) => tracing::debug!(size = cp.seq, "signed audit tree head"),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot sign the audit tree head; retrying")
            }
        }
    }
}
