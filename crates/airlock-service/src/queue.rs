//! The reviewer queue, written once for the API (`?to_review=true`, the CLI's
//! `airlock list --to-review`) and the web Reviews page: pending requests a
//! principal is named to decide, and open post-incident reviews of break-glass
//! access they may close. Who may close one is decided by the same check the
//! review itself runs, so the queue never offers what would be refused.

use std::sync::Arc;

use airlock_core::request::{Request, RequestState};
use airlock_core::Principal;
use airlock_store::RequestFilter;

use crate::Service;
use crate::ServiceError;

/// What waits for one reviewer, newest first in each part.
#[derive(Debug, Default)]
pub struct ReviewQueue {
    /// Pending requests `who` is named to review and has not reviewed yet.
    pub pending: Vec<Request>,
    /// Break-glass requests (any state) whose post-incident review `who` may close.
    pub post_incident: Vec<Request>,
}

impl ReviewQueue {
    /// Both parts in one list, newest first, at most `limit`.
    pub fn into_list(self, limit: usize) -> Vec<Request> {
        let mut all = self.pending;
        all.extend(self.post_incident);
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        all.truncate(limit);
        all
    }

    /// How many items wait in total.
    pub fn len(&self) -> usize {
        self.pending.len() + self.post_incident.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The queue of `who`, each part capped at `limit`.
pub async fn for_reviewer(
    app: &Arc<Service>,
    who: &Principal,
    limit: u32,
) -> Result<ReviewQueue, ServiceError> {
    let (mut pending_ents, mut breakglass_ents) = (Vec::new(), Vec::new());
    for e in app.config.entitlements.values() {
        let rule = app.approval_rule(&e.approvals, e.service.as_ref());
        if e.breakglass {
            if rule.names_reviewer(who) || who.admin {
                breakglass_ents.push(e.name.to_string());
            }
        } else if rule.names_reviewer(who) {
            pending_ents.push(e.name.to_string());
        }
    }
    let pending = RequestFilter {
        state: Some(RequestState::Pending),
        entitlements: Some(pending_ents),
        limit,
        ..Default::default()
    };
    let open = RequestFilter {
        open_post_review: true,
        entitlements: Some(breakglass_ents),
        limit,
        ..Default::default()
    };
    let (mut pending, mut post_incident) = app
        .db(move |s| Ok((s.list_requests(&pending)?, s.list_requests(&open)?)))
        .await?;
    pending.retain(|r| {
        app.config
            .entitlement(r.entitlement.as_str())
            .is_ok_and(|e| {
                app.approval_rule(&e.approvals, e.service.as_ref())
                    .awaits_review_by(who, r)
            })
    });
    post_incident.retain(|r| {
        app.config
            .entitlement(r.entitlement.as_str())
            .is_ok_and(|e| {
                app.approval_rule(&e.approvals, e.service.as_ref())
                    .check_post_review_closer(who, r)
                    .is_ok()
            })
    });
    Ok(ReviewQueue {
        pending,
        post_incident,
    })
}
