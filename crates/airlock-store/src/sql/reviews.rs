//! Reviews of requests and of runs: each kind in its own table, loaded for a
//! whole page of rows in one query and inserted one at a time (a reviewer
//! reviews a row once: the unique key refuses a second review).

use std::collections::HashMap;

use airlock_core::request::Review;

use super::{duplicate, params, Tx};
use crate::codec::{self, ReviewRow};
use crate::StoreResult;

/// The statements of one review table.
pub(crate) struct Reviews {
    /// `(owner id, reviewer, decision, comment, at)` of the rows whose owner is in `$1`.
    load: &'static str,
    /// A review of owner `$1`.
    insert: &'static str,
    /// What owns the reviews (for the duplicate message).
    what: &'static str,
}

/// Reviews of requests.
pub(crate) const REQUEST_REVIEWS: Reviews = Reviews {
    load: "SELECT request_id, reviewer, decision, comment, at FROM reviews \
           WHERE request_id = ANY($1) ORDER BY id",
    insert: "INSERT INTO reviews (request_id, reviewer, decision, comment, at) VALUES ($1, $2, $3, $4, $5)",
    what: "request",
};

/// Reviews of runs.
pub(crate) const RUN_REVIEWS: Reviews = Reviews {
    load: "SELECT run_id, reviewer, decision, comment, at FROM run_reviews \
           WHERE run_id = ANY($1) ORDER BY id",
    insert: "INSERT INTO run_reviews (run_id, reviewer, decision, comment, at) VALUES ($1, $2, $3, $4, $5)",
    what: "run",
};

impl Reviews {
    /// The reviews of every owner in `ids`, in the order they were made.
    pub(crate) fn load(
        &self,
        tx: &mut dyn Tx,
        ids: &[String],
    ) -> StoreResult<HashMap<String, Vec<ReviewRow>>> {
        let mut by_id: HashMap<String, Vec<ReviewRow>> = HashMap::new();
        if ids.is_empty() {
            return Ok(by_id);
        }
        tx.query(self.load, params![ids], &mut |r| {
            by_id.entry(r.get(0)?).or_default().push(ReviewRow {
                reviewer: r.get(1)?,
                decision: r.get(2)?,
                comment: r.get(3)?,
                at: r.get(4)?,
            });
            Ok(())
        })?;
        Ok(by_id)
    }

    /// Appends a review of `id`; a second one by the same reviewer is a duplicate.
    pub(crate) fn insert(&self, tx: &mut dyn Tx, id: &str, review: &Review) -> StoreResult<()> {
        tx.execute(
            self.insert,
            params![
                id,
                review.reviewer.as_str(),
                review.decision.as_str(),
                review.comment.as_deref(),
                codec::micros(review.at)
            ],
        )
        .map_err(duplicate(|| {
            format!("review by `{}` on {} `{id}`", review.reviewer, self.what)
        }))?;
        Ok(())
    }
}
