//! Drift: access on a target that airlock manages but no live grant backs
//! (removed by the reconciler, audited), and standing access to an
//! entitlement's role held outside airlock (reported only: a human decides).

use std::sync::Arc;

use airlock_core::{ProviderName, RequestId};
use airlock_providers::StandingAccess;
use serde::Serialize;

use crate::Service;

/// An account airlock owns on the target without a grant behind it.
#[derive(Debug, Clone, Serialize)]
pub struct OrphanedAccount {
    /// Provider-side name (role, user, binding).
    pub account: String,
    /// The request its name encodes, if any.
    pub request_id: Option<RequestId>,
}

/// Drift found on one provider.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderDrift {
    pub provider: ProviderName,
    pub kind: &'static str,
    /// Managed by airlock, but no active grant: the reconciler removes these.
    pub orphaned: Vec<OrphanedAccount>,
    /// The entitlement's role held outside airlock: standing privilege.
    pub standing: Vec<StandingAccess>,
    /// Set when the provider could not be inspected (the lists are then partial).
    pub error: Option<String>,
}

/// Inspects every provider (or only `only`), updates the drift gauges and
/// returns what was found. Read-only.
pub async fn report(app: &Arc<Service>, only: Option<&ProviderName>) -> Vec<ProviderDrift> {
    let mut out = Vec::new();
    for (name, provider) in &app.providers {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let mut d = ProviderDrift {
            provider: name.clone(),
            kind: provider.kind(),
            orphaned: Vec::new(),
            standing: Vec::new(),
            error: None,
        };
        match provider.list_managed().await {
            Ok(accounts) => {
                for acct in accounts {
                    let backed = match acct.request_id.clone() {
                        Some(id) => match app.db(move |s| s.get_request(&id)).await {
                            Ok(r) => r.is_some_and(|r| r.grant.phase.may_exist()),
                            // Unsure: keep it and look again next round.
                            Err(_) => true,
                        },
                        None => false,
                    };
                    if !backed {
                        d.orphaned.push(OrphanedAccount {
                            account: acct.account,
                            request_id: acct.request_id,
                        });
                    }
                }
            }
            Err(e) => d.error = Some(e.to_string()),
        }
        let entitlements = app.config.targets_of(name);
        match provider.standing_access(&entitlements).await {
            Ok(s) => d.standing = s,
            Err(e) => {
                let msg = e.to_string();
                d.error = Some(match d.error.take() {
                    Some(prev) => format!("{prev}; {msg}"),
                    None => msg,
                })
            }
        }
        app.metrics.set_drift(
            name.as_str(),
            d.orphaned.len() as u64,
            d.standing.len() as u64,
        );
        out.push(d);
    }
    out
}
