//! The request lifecycle. `RequestState::apply` is the only way to move a
//! request; every other module asks it, so an illegal transition cannot happen
//! silently anywhere.
//!
//! ```text
//! pending ──approve──▶ approved ──activate──▶ active ──expire──▶ expired
//!    │ └─deny──▶ denied          └─fail──▶ failed   └─revoke──▶ revoked
//!    ├─withdraw──▶ withdrawn
//!    └─lapse──▶ lapsed
//! ```

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use time::OffsetDateTime;

use crate::names::{EntitlementName, UserName};
use crate::Span;

/// Opaque request identifier (lowercase base32, also used in provider account names).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RequestId(String);

impl RequestId {
    /// Validates an id as found in a URL or CLI argument.
    pub fn parse(s: &str) -> Result<Self, crate::Error> {
        if (8..=40).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            Ok(RequestId(s.to_owned()))
        } else {
            Err(crate::Error::not_found(format!(
                "request `{}`",
                s.chars().take(40).collect::<String>()
            )))
        }
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a request is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    Pending,
    Approved,
    Active,
    Expired,
    Revoked,
    Denied,
    Withdrawn,
    Lapsed,
    Failed,
}

/// Something that moves a request from one state to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transition {
    /// Enough approvals were collected.
    Approve,
    /// A reviewer said no.
    Deny,
    /// The requester took it back.
    Withdraw,
    /// Nobody decided within the approval window.
    Lapse,
    /// The provider applied the grant.
    Activate,
    /// The provider could not apply the grant.
    Fail,
    /// `not_after` passed.
    Expire,
    /// Someone ended the grant early.
    Revoke,
}

/// A transition that the current state does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {transition:?} a request that is {from}")]
pub struct TransitionError {
    /// The state the request is in.
    pub from: RequestState,
    /// What was attempted.
    pub transition: Transition,
}

impl From<TransitionError> for crate::Error {
    fn from(e: TransitionError) -> Self {
        crate::Error::Conflict {
            current_state: e.from.to_string(),
            message: format!("cannot {} this request", e.transition.verb()),
        }
    }
}

impl Transition {
    /// Every transition, for exhaustive tests.
    pub const ALL: [Transition; 8] = [
        Transition::Approve,
        Transition::Deny,
        Transition::Withdraw,
        Transition::Lapse,
        Transition::Activate,
        Transition::Fail,
        Transition::Expire,
        Transition::Revoke,
    ];
    /// The verb used in messages.
    pub fn verb(self) -> &'static str {
        match self {
            Transition::Approve => "approve",
            Transition::Deny => "deny",
            Transition::Withdraw => "withdraw",
            Transition::Lapse => "lapse",
            Transition::Activate => "activate",
            Transition::Fail => "fail",
            Transition::Expire => "expire",
            Transition::Revoke => "revoke",
        }
    }
}

impl RequestState {
    /// Every state, for exhaustive tests and metrics.
    pub const ALL: [RequestState; 9] = [
        RequestState::Pending,
        RequestState::Approved,
        RequestState::Active,
        RequestState::Expired,
        RequestState::Revoked,
        RequestState::Denied,
        RequestState::Withdrawn,
        RequestState::Lapsed,
        RequestState::Failed,
    ];

    /// The state after `t`, or why `t` is not allowed now.
    pub fn apply(self, t: Transition) -> Result<RequestState, TransitionError> {
        use RequestState as S;
        use Transition as T;
        let next = match (self, t) {
            (S::Pending, T::Approve) => S::Approved,
            (S::Pending, T::Deny) => S::Denied,
            (S::Pending, T::Withdraw) => S::Withdrawn,
            (S::Pending, T::Lapse) => S::Lapsed,
            (S::Approved, T::Activate) => S::Active,
            (S::Approved, T::Fail) => S::Failed,
            (S::Active, T::Expire) => S::Expired,
            (S::Active, T::Revoke) => S::Revoked,
            (from, transition) => return Err(TransitionError { from, transition }),
        };
        Ok(next)
    }

    /// No transition leaves a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RequestState::Expired
                | RequestState::Revoked
                | RequestState::Denied
                | RequestState::Withdrawn
                | RequestState::Lapsed
                | RequestState::Failed
        )
    }

    /// Lowercase name as used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Active => "active",
            RequestState::Expired => "expired",
            RequestState::Revoked => "revoked",
            RequestState::Denied => "denied",
            RequestState::Withdrawn => "withdrawn",
            RequestState::Lapsed => "lapsed",
            RequestState::Failed => "failed",
        }
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RequestState {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, crate::Error> {
        RequestState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                crate::Error::invalid(
                    "state",
                    format!("`{s}` is not one of pending, approved, active, expired, revoked, denied, withdrawn, lapsed, failed"),
                )
            })
    }
}

/// Where the provider side of a grant is. Intent is recorded before a provider
/// call (`applying`, `removing`) so a crash mid-call is finished on restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantPhase {
    /// Nothing was asked of the provider yet.
    None,
    /// Apply was decided; the provider may or may not have done it yet.
    Applying,
    /// The provider confirmed the grant exists.
    Applied,
    /// Removal was decided; the provider may or may not have done it yet.
    Removing,
    /// The provider confirmed the grant is gone.
    Removed,
}

impl GrantPhase {
    /// Lowercase name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantPhase::None => "none",
            GrantPhase::Applying => "applying",
            GrantPhase::Applied => "applied",
            GrantPhase::Removing => "removing",
            GrantPhase::Removed => "removed",
        }
    }
    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<GrantPhase> {
        [
            GrantPhase::None,
            GrantPhase::Applying,
            GrantPhase::Applied,
            GrantPhase::Removing,
            GrantPhase::Removed,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
    /// Whether the provider may hold an account for this grant (drift must keep it).
    pub fn may_exist(self) -> bool {
        matches!(
            self,
            GrantPhase::Applying | GrantPhase::Applied | GrantPhase::Removing
        )
    }
}

/// An approve or deny decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewDecision {
    Approve,
    Deny,
}

impl ReviewDecision {
    /// Lowercase name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewDecision::Approve => "approve",
            ReviewDecision::Deny => "deny",
        }
    }

    /// Parses `approve` or `deny` (the API, form and stored spelling).
    pub fn parse(s: &str) -> Result<ReviewDecision, crate::Error> {
        match s {
            "approve" => Ok(ReviewDecision::Approve),
            "deny" => Ok(ReviewDecision::Deny),
            other => Err(crate::Error::invalid(
                "decision",
                format!("`{other}` is not approve or deny"),
            )),
        }
    }
}

/// One reviewer's decision on a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Review {
    /// Who decided.
    pub reviewer: UserName,
    /// Approve or deny.
    pub decision: ReviewDecision,
    /// Free text from the reviewer.
    pub comment: Option<String>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// The provider side of an approved request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GrantStatus {
    /// Provider progress.
    pub phase: GrantPhase,
    /// Failed provider attempts so far (reset on success).
    pub attempts: u32,
    /// The last provider error, for people debugging a stuck grant.
    pub last_error: Option<String>,
    /// Earliest time the reconciler retries.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
}

/// A principal's request for an entitlement, with its reviews and grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Request {
    pub id: RequestId,
    pub entitlement: EntitlementName,
    pub requester: UserName,
    pub reason: String,
    pub state: RequestState,
    /// Seconds of access asked for.
    pub requested_duration: Span,
    /// Set when the request is approved: the grant window.
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    /// Break-glass requests skip review and carry a post-incident review.
    pub breakglass: bool,
    /// For break-glass: whether someone else closed the post-incident review.
    pub post_review_closed: bool,
    pub reviews: Vec<Review>,
    pub grant: GrantStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Random bytes mixed into this grant's secret derivation, so the key
    /// file alone does not give a grant's password; stored, never shown.
    /// Empty for requests made before salts existed (they derive as before).
    #[serde(skip)]
    pub secret_salt: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reachable() -> Vec<(RequestState, RequestState)> {
        use RequestState as S;
        vec![
            (S::Pending, S::Approved),
            (S::Pending, S::Denied),
            (S::Pending, S::Withdrawn),
            (S::Pending, S::Lapsed),
            (S::Approved, S::Active),
            (S::Approved, S::Failed),
            (S::Active, S::Expired),
            (S::Active, S::Revoked),
        ]
    }

    #[test]
    fn only_the_documented_edges_exist() {
        let mut edges = vec![];
        for s in RequestState::ALL {
            for t in Transition::ALL {
                if let Ok(n) = s.apply(t) {
                    edges.push((s, n));
                }
            }
        }
        edges.sort();
        let mut want = reachable();
        want.sort();
        assert_eq!(edges, want);
    }

    #[test]
    fn terminal_states_have_no_way_out() {
        for s in RequestState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for t in Transition::ALL {
                let e = s.apply(t).unwrap_err();
                assert_eq!(e.from, s);
            }
        }
    }

    #[test]
    fn rejection_names_the_current_state() {
        let e: crate::Error = RequestState::Denied
            .apply(Transition::Approve)
            .unwrap_err()
            .into();
        assert!(e.to_string().contains("current state: denied"), "{e}");
    }

    proptest! {
        #[test]
        fn no_event_sequence_reaches_an_illegal_state(seq in proptest::collection::vec(0usize..8, 0..40)) {
            let mut s = RequestState::Pending;
            let mut history = vec![s];
            for i in seq {
                if let Ok(n) = s.apply(Transition::ALL[i]) {
                    prop_assert!(reachable().contains(&(s, n)));
                    s = n;
                    history.push(s);
                }
            }
            // A request never returns to an earlier state and never activates without approval.
            let pos = |x| history.iter().position(|h| *h == x);
            if let Some(a) = pos(RequestState::Active) {
                prop_assert!(pos(RequestState::Approved).is_some_and(|p| p < a));
            }
            let mut dedup = history.clone();
            dedup.dedup();
            prop_assert_eq!(dedup.len(), history.len());
            prop_assert!(history.len() <= 4);
        }
    }

    #[test]
    fn state_names_round_trip() {
        for s in RequestState::ALL {
            assert_eq!(s.as_str().parse::<RequestState>().unwrap(), s);
        }
        assert!("bogus".parse::<RequestState>().is_err());
    }
}
