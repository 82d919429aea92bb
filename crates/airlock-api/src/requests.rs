//! Requests as the API answers them (`/api/v1/requests…`, `/api/v1/breakglass`,
//! `/api/v1/grants`). Answers accept unknown fields, so an older CLI keeps
//! working against a newer server; states and decisions stay strings for the
//! same reason (a newer server may know more of them).

use serde::{Deserialize, Serialize};

/// One reviewer's decision, on a request or on a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewView {
    /// Who decided.
    pub reviewer: String,
    /// `approve` or `deny`.
    pub decision: String,
    /// Free text from the reviewer.
    pub comment: Option<String>,
    /// RFC 3339.
    pub at: String,
}

/// The provider side of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantView {
    /// `none`, `applying`, `applied`, `removing` or `removed`.
    pub phase: String,
    /// Failed provider attempts so far (reset on success).
    pub attempts: u32,
    /// The last provider error, for people debugging a stuck grant.
    pub last_error: Option<String>,
    /// RFC 3339: earliest time the reconciler retries.
    pub next_attempt_at: Option<String>,
}

/// A request for an entitlement, with its reviews and grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestView {
    /// Lowercase base32.
    pub id: String,
    /// The entitlement asked for.
    pub entitlement: String,
    /// Who asked.
    pub requester: String,
    /// Why, in the requester's words.
    pub reason: String,
    /// `pending`, `approved`, `active`, `expired`, `revoked`, `denied`,
    /// `withdrawn`, `lapsed` or `failed`.
    pub state: String,
    /// Seconds of access asked for.
    pub requested_duration: u64,
    /// RFC 3339; set once approved: the grant window starts.
    pub not_before: Option<String>,
    /// RFC 3339; set once approved: the grant window ends.
    pub not_after: Option<String>,
    /// Break-glass: no review before, a post-incident review after.
    pub breakglass: bool,
    /// For break-glass: whether someone else closed the post-incident review.
    pub post_review_closed: bool,
    /// Reviews, oldest first.
    pub reviews: Vec<ReviewView>,
    /// Provider progress.
    pub grant: GrantView,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_with_fields_from_a_newer_server_still_reads() {
        let v = serde_json::json!({
            "id": "abcdefgh23", "entitlement": "pg-read", "requester": "alice",
            "reason": "INC-1", "state": "pending", "requested_duration": 1800,
            "not_before": null, "not_after": null, "breakglass": false,
            "post_review_closed": false, "reviews": [],
            "grant": {"phase": "none", "attempts": 0, "last_error": null,
                      "next_attempt_at": null, "added_later": 1},
            "created_at": "2026-12-03T10:00:00Z", "updated_at": "2026-12-03T10:00:00Z",
            "added_later": true,
        });
        let r: RequestView = serde_json::from_value(v).unwrap();
        assert_eq!((r.state.as_str(), r.requested_duration), ("pending", 1800));
        let back = serde_json::to_value(&r).unwrap();
        assert!(back["not_after"].is_null() && back.get("added_later").is_none());
    }
}
