//! Approval rules: N distinct approvers from the named reviewers, never the
//! requester, one deny ends it. Hard rules here cannot be widened by policy.
//! Requests and runs are both [`Reviewable`]: the same checks, the same tally
//! and the same "is it in this reviewer's queue" answer serve the API, the web
//! UI and Slack for both.

use std::collections::BTreeSet;

use crate::names::UserName;
use crate::principal::Principal;
use crate::request::{Request, Review, ReviewDecision};

/// `approvals = { count = N, reviewers = ["group-or-user", ...] }`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApprovalRule {
    /// Distinct approvals needed (0 = approved on request).
    pub count: u32,
    /// Groups or users whose members may review.
    pub reviewers: Vec<String>,
}

/// Where a request stands after its reviews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tally {
    /// More approvals are needed.
    Waiting { have: u32, need: u32 },
    /// The rule is satisfied.
    Approved,
    /// Someone denied.
    Denied,
}

/// Anything decided by reviewers under an [`ApprovalRule`]: requests and runs.
pub trait Reviewable {
    /// Who asked (never a reviewer of their own).
    fn requester(&self) -> &UserName;
    /// Reviews so far, oldest first.
    fn reviews(&self) -> &[Review];
    /// Whether it waits for reviews (pending).
    fn awaits_review(&self) -> bool;
    /// The current state's name, for refusals.
    fn state_name(&self) -> &str;
}

impl Reviewable for Request {
    fn requester(&self) -> &UserName {
        &self.requester
    }
    fn reviews(&self) -> &[Review] {
        &self.reviews
    }
    fn awaits_review(&self) -> bool {
        self.state == crate::request::RequestState::Pending
    }
    fn state_name(&self) -> &str {
        self.state.as_str()
    }
}

impl ApprovalRule {
    /// Whether `item` is in `p`'s review queue: it waits for reviews, `p` is a
    /// named reviewer, not its requester, and has not reviewed it yet. The one
    /// answer every surface shows (a form, a button, a queue entry).
    pub fn awaits_review_by(&self, p: &Principal, item: &impl Reviewable) -> bool {
        item.awaits_review() && self.names_reviewer(p) && self.check_reviewer(p, item).is_ok()
    }

    /// Whether the catalog names `p` as a reviewer (ignoring who the requester is).
    pub fn names_reviewer(&self, p: &Principal) -> bool {
        self.reviewers.iter().any(|r| p.matches(r))
    }

    /// Hard checks before a review is recorded: never oneself, never twice.
    pub fn check_reviewer(
        &self,
        reviewer: &Principal,
        item: &impl Reviewable,
    ) -> Result<(), crate::Error> {
        if reviewer.name == *item.requester() {
            return Err(crate::Error::forbidden(
                "you cannot review your own request; ask another reviewer",
            ));
        }
        if item.reviews().iter().any(|r| r.reviewer == reviewer.name) {
            return Err(crate::Error::Conflict {
                current_state: item.state_name().to_string(),
                message: format!("{} has already reviewed this request", reviewer.name),
            });
        }
        Ok(())
    }

    /// Whether `closer` may close the post-incident review of break-glass
    /// `request`: never its requester, never twice, and only a named reviewer
    /// or an admin. No reviewers named means an admin only, never anyone.
    pub fn check_post_review_closer(
        &self,
        closer: &Principal,
        request: &Request,
    ) -> Result<(), crate::Error> {
        if closer.name == request.requester {
            return Err(crate::Error::forbidden(
                "you cannot close the post-incident review of your own break-glass access; another reviewer must",
            ));
        }
        if request.post_review_closed || request.reviews.iter().any(|r| r.reviewer == closer.name) {
            return Err(crate::Error::Conflict {
                current_state: request.state.to_string(),
                message: "the post-incident review is already closed".into(),
            });
        }
        if !(self.names_reviewer(closer) || closer.admin) {
            let by = if self.reviewers.is_empty() {
                "an admin (the catalog names no reviewers: fix the service's owners)".to_string()
            } else {
                self.reviewers.join(", ")
            };
            return Err(crate::Error::forbidden(format!(
                "only {by} may close the post-incident review of `{}`",
                request.entitlement
            )));
        }
        Ok(())
    }

    /// Counts distinct approvers other than the requester; any deny wins.
    pub fn tally(&self, item: &impl Reviewable) -> Tally {
        self.tally_with(item, None)
    }

    /// [`tally`](Self::tally) as it would be with `next` recorded too (decided
    /// before the review is written, in the same transaction).
    pub fn tally_with(&self, item: &impl Reviewable, next: Option<&Review>) -> Tally {
        let requester = item.requester();
        let reviews: Vec<&Review> = item.reviews().iter().chain(next).collect();
        if reviews
            .iter()
            .any(|r| r.decision == ReviewDecision::Deny && r.reviewer != *requester)
        {
            return Tally::Denied;
        }
        let approvers: BTreeSet<_> = reviews
            .iter()
            .filter(|r| r.decision == ReviewDecision::Approve && r.reviewer != *requester)
            .map(|r| &r.reviewer)
            .collect();
        let have = approvers.len() as u32;
        if have >= self.count {
            Tally::Approved
        } else {
            Tally::Waiting {
                have,
                need: self.count,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::*;
    use crate::{EntitlementName, Span, UserName};
    use proptest::prelude::*;
    use time::OffsetDateTime;

    fn user(n: &str) -> UserName {
        UserName::parse(n).unwrap()
    }

    fn request(requester: &str, reviews: &[(&str, ReviewDecision)]) -> Request {
        let t = OffsetDateTime::UNIX_EPOCH;
        Request {
            id: RequestId::parse("abcdefgh").unwrap(),
            entitlement: EntitlementName::parse("e").unwrap(),
            requester: user(requester),
            reason: String::new(),
            state: RequestState::Pending,
            requested_duration: Span::from_secs(60).unwrap(),
            not_before: None,
            not_after: None,
            breakglass: false,
            post_review_closed: false,
            reviews: reviews
                .iter()
                .map(|(r, d)| Review {
                    reviewer: user(r),
                    decision: *d,
                    comment: None,
                    at: t,
                })
                .collect(),
            grant: GrantStatus {
                phase: GrantPhase::None,
                attempts: 0,
                last_error: None,
                next_attempt_at: None,
            },
            created_at: t,
            updated_at: t,
            secret_salt: vec![],
        }
    }

    fn principal(n: &str) -> Principal {
        Principal {
            name: user(n),
            groups: Default::default(),
            email: None,
            admin: false,
            mfa: false,
        }
    }

    #[test]
    fn requester_cannot_approve_own_request() {
        let rule = ApprovalRule {
            count: 1,
            reviewers: vec!["alice".into()],
        };
        let r = request("alice", &[]);
        assert!(matches!(
            rule.check_reviewer(&principal("alice"), &r),
            Err(crate::Error::Forbidden { .. })
        ));
    }

    #[test]
    fn post_incident_review_is_closed_by_a_named_reviewer_or_admin_only() {
        let rule = ApprovalRule {
            count: 0,
            reviewers: vec!["bob".into()],
        };
        let mut r = request("alice", &[]);
        r.breakglass = true;
        assert!(rule
            .check_post_review_closer(&principal("alice"), &r)
            .is_err());
        assert!(rule
            .check_post_review_closer(&principal("carol"), &r)
            .is_err());
        assert!(rule.check_post_review_closer(&principal("bob"), &r).is_ok());
        let mut admin = principal("dave");
        admin.admin = true;
        assert!(rule.check_post_review_closer(&admin, &r).is_ok());
        let nobody = ApprovalRule {
            count: 0,
            reviewers: vec![],
        };
        assert!(
            nobody
                .check_post_review_closer(&principal("bob"), &r)
                .is_err(),
            "no reviewers named is nobody, not anybody"
        );
        r.post_review_closed = true;
        assert!(rule
            .check_post_review_closer(&principal("bob"), &r)
            .is_err());
    }

    #[test]
    fn two_of_m_needs_two_distinct_approvers() {
        let rule = ApprovalRule {
            count: 2,
            reviewers: vec!["sre".into()],
        };
        let r = request("alice", &[("bob", ReviewDecision::Approve)]);
        assert_eq!(rule.tally(&r), Tally::Waiting { have: 1, need: 2 });
        assert!(
            rule.check_reviewer(&principal("bob"), &r).is_err(),
            "bob may not review twice"
        );
        let r = request(
            "alice",
            &[
                ("bob", ReviewDecision::Approve),
                ("carol", ReviewDecision::Approve),
            ],
        );
        assert_eq!(rule.tally(&r), Tally::Approved);
    }

    #[test]
    fn the_queue_answer_is_one_for_every_surface() {
        let rule = ApprovalRule {
            count: 2,
            reviewers: vec!["bob".into(), "carol".into()],
        };
        let r = request("alice", &[("bob", ReviewDecision::Approve)]);
        assert!(rule.awaits_review_by(&principal("carol"), &r));
        assert!(
            !rule.awaits_review_by(&principal("bob"), &r),
            "bob has reviewed it already"
        );
        assert!(
            !rule.awaits_review_by(&principal("alice"), &r),
            "own request"
        );
        assert!(!rule.awaits_review_by(&principal("dave"), &r), "not named");
        let mut done = r.clone();
        done.state = RequestState::Denied;
        assert!(
            !rule.awaits_review_by(&principal("carol"), &done),
            "not pending"
        );
        let next = Review {
            reviewer: user("carol"),
            decision: ReviewDecision::Approve,
            comment: None,
            at: OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(rule.tally_with(&r, Some(&next)), Tally::Approved);
        assert_eq!(rule.tally(&r), Tally::Waiting { have: 1, need: 2 });
    }

    #[test]
    fn one_deny_ends_it() {
        let rule = ApprovalRule {
            count: 2,
            reviewers: vec!["sre".into()],
        };
        let r = request(
            "alice",
            &[
                ("bob", ReviewDecision::Approve),
                ("carol", ReviewDecision::Deny),
            ],
        );
        assert_eq!(rule.tally(&r), Tally::Denied);
    }

    proptest! {
        #[test]
        fn requester_reviews_never_count(n in 1u32..4, own in 0usize..5) {
            let rule = ApprovalRule { count: n, reviewers: vec!["g".into()] };
            let reviews: Vec<_> = (0..own).map(|_| ("alice", ReviewDecision::Approve)).collect();
            prop_assert_eq!(rule.tally(&request("alice", &reviews)), Tally::Waiting { have: 0, need: n });
        }
    }
}
