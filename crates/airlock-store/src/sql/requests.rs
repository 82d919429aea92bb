//! [`Store`] on any [`Db`]: requests, their background work, certificates,
//! and the audit and token calls (written in `audit.rs` and `access.rs`).

use airlock_core::audit_chain::{AuditDraft, Checkpoint, SealedEvent};
use airlock_core::request::{Request, RequestId, RequestState};
use time::OffsetDateTime;

use super::reviews::REQUEST_REVIEWS;
use super::{access, audit, duplicate, params, Db, ListQuery, Row, Tx};
use crate::codec::{self, RequestRow, REQUEST_COLUMNS};
use crate::{
    CertificateRecord, Change, RequestFilter, Store, StoreError, StoreResult, TokenRecord,
};

/// Reads a row selected with [`REQUEST_COLUMNS`].
fn request_row(r: &dyn Row) -> StoreResult<RequestRow> {
    Ok(RequestRow {
        id: r.get(0)?,
        entitlement: r.get(1)?,
        requester: r.get(2)?,
        reason: r.get(3)?,
        state: r.get(4)?,
        requested_duration: r.get(5)?,
        not_before: r.get(6)?,
        not_after: r.get(7)?,
        breakglass: r.get(8)?,
        post_review_closed: r.get(9)?,
        grant_phase: r.get(10)?,
        grant_attempts: r.get(11)?,
        grant_last_error: r.get(12)?,
        grant_next_attempt_at: r.get(13)?,
        created_at: r.get(14)?,
        updated_at: r.get(15)?,
        secret_salt: r.get(16)?,
    })
}

/// Decodes rows and attaches their reviews, fetched in one query.
fn with_reviews(tx: &mut dyn Tx, rows: Vec<RequestRow>) -> StoreResult<Vec<Request>> {
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut reviews = REQUEST_REVIEWS.load(tx, &ids)?;
    rows.into_iter()
        .map(|row| {
            let rows = reviews.remove(&row.id).unwrap_or_default();
            let decoded = rows
                .into_iter()
                .map(codec::ReviewRow::decode)
                .collect::<StoreResult<_>>()?;
            row.decode(decoded)
        })
        .collect()
}

/// One request; `FOR UPDATE` locks its row until the transaction ends.
fn load_request(tx: &mut dyn Tx, id: &str, lock: bool) -> StoreResult<Option<Request>> {
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM requests WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let rows = tx.rows(&sql, params![id], request_row)?;
    Ok(with_reviews(tx, rows)?.pop())
}

impl<D: Db> Store for D {
    fn create_request(
        &self,
        request: &Request,
        lapses_at: OffsetDateTime,
        audit: &[AuditDraft],
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let r = request;
        let sql = format!(
            "INSERT INTO requests ({REQUEST_COLUMNS}, lapses_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
        );
        self.write(|tx| {
            tx.execute(
                &sql,
                params![
                    r.id.as_str(),
                    r.entitlement.as_str(),
                    r.requester.as_str(),
                    r.reason.as_str(),
                    r.state.as_str(),
                    r.requested_duration.as_secs() as i64,
                    r.not_before.map(codec::micros),
                    r.not_after.map(codec::micros),
                    r.breakglass,
                    r.post_review_closed,
                    r.grant.phase.as_str(),
                    i64::from(r.grant.attempts),
                    r.grant.last_error.as_deref(),
                    r.grant.next_attempt_at.map(codec::micros),
                    codec::micros(r.created_at),
                    codec::micros(r.updated_at),
                    &r.secret_salt,
                    codec::micros(lapses_at),
                ],
            )
            .map_err(duplicate(|| format!("request `{}`", r.id)))?;
            for review in &r.reviews {
                REQUEST_REVIEWS.insert(tx, r.id.as_str(), review)?;
            }
            audit::append(tx, self.signer(), audit, now)
        })
    }

    fn get_request(&self, id: &RequestId) -> StoreResult<Option<Request>> {
        self.read(|tx| load_request(tx, id.as_str(), false))
    }

    fn list_requests(&self, filter: &RequestFilter) -> StoreResult<Vec<Request>> {
        let mut q = ListQuery::new(format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE TRUE"));
        if let Some(state) = filter.state {
            q.and("state = $?", [state.as_str().into()]);
        }
        if let Some(requester) = &filter.requester {
            q.and("requester = $?", [requester.as_str().into()]);
        }
        if let Some(ents) = &filter.entitlements {
            // One list parameter instead of a variable-length IN list keeps the statement cacheable.
            q.and("entitlement = ANY($?)", [ents.as_slice().into()]);
        }
        if filter.open_post_review {
            q.and("breakglass AND NOT post_review_closed", []);
        }
        if let Some((user, ents)) = &filter.visible_to {
            q.and(
                "(requester = $? OR entitlement = ANY($?))",
                [user.as_str().into(), ents.as_slice().into()],
            );
        }
        let after = filter
            .after
            .as_ref()
            .map(|(at, id)| (codec::micros(*at), id.as_str()));
        let (sql, args) = q.page(
            after,
            codec::effective_limit(filter.limit, codec::MAX_LIST_LIMIT),
        );
        self.read(|tx| {
            let rows = tx.rows(&sql, &args, request_row)?;
            with_reviews(tx, rows)
        })
    }

    fn update_request(
        &self,
        id: &RequestId,
        now: OffsetDateTime,
        decide: &mut dyn FnMut(&Request) -> Result<Change, airlock_core::Error>,
    ) -> StoreResult<Request> {
        self.write(|tx| {
            // FOR UPDATE: concurrent deciders on this request queue here and each sees the previous one's result.
            let current =
                load_request(tx, id.as_str(), true)?.ok_or_else(|| codec::not_found(id))?;
            let change = decide(&current)?;
            if change.is_empty() {
                return Ok(current);
            }
            let mut next = current;
            change.apply_to(&mut next);
            tx.execute(
                "UPDATE requests SET state = $2, not_before = $3, not_after = $4, post_review_closed = $5, \
                 grant_phase = $6, grant_attempts = $7, grant_last_error = $8, grant_next_attempt_at = $9, updated_at = $10, \
                 lease_owner = CASE WHEN $11 THEN NULL ELSE lease_owner END, \
                 lease_until = CASE WHEN $11 THEN NULL ELSE lease_until END \
                 WHERE id = $1",
                params![
                    id.as_str(),
                    next.state.as_str(),
                    next.not_before.map(codec::micros),
                    next.not_after.map(codec::micros),
                    next.post_review_closed,
                    next.grant.phase.as_str(),
                    i64::from(next.grant.attempts),
                    next.grant.last_error.as_deref(),
                    next.grant.next_attempt_at.map(codec::micros),
                    codec::micros(now),
                    change.release_lease,
                ],
            )?;
            if let Some(review) = &change.review {
                REQUEST_REVIEWS.insert(tx, id.as_str(), review)?;
            }
            audit::append(tx, self.signer(), &change.audit, now)?;
            load_request(tx, id.as_str(), false)?.ok_or_else(|| codec::not_found(id))
        })
    }

    fn claim_work(
        &self,
        now: OffsetDateTime,
        owner: &str,
        lease: time::Duration,
        limit: u32,
    ) -> StoreResult<Vec<Request>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        static SQL: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| codec::claim_sql(REQUEST_COLUMNS));
        let sql: &str = &SQL;
        let until = codec::micros(now.saturating_add(lease));
        self.write(|tx| {
            let mut rows = tx.rows(
                sql,
                params![codec::micros(now), owner, until, i64::from(limit)],
                request_row,
            )?;
            // RETURNING has no defined order; hand work out oldest first.
            rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            with_reviews(tx, rows)
        })
    }

    fn next_due(&self) -> StoreResult<Option<OffsetDateTime>> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(codec::next_due_sql);
        let due: Option<i64> = self.read(|tx| tx.one(&SQL, &[], |r| r.get(0)))?;
        due.map(|us| codec::from_micros(us, "next due")).transpose()
    }

    fn append_audit(&self, audit: &[AuditDraft], now: OffsetDateTime) -> StoreResult<()> {
        self.write(|tx| audit::append(tx, self.signer(), audit, now))
    }

    fn audit_events(&self, since: u64, limit: u32) -> StoreResult<Vec<SealedEvent>> {
        audit::events(self, since, limit)
    }

    fn audit_scan(&self, visit: &mut dyn FnMut(u64, &[u8], &[u8]) -> bool) -> StoreResult<()> {
        audit::scan(self, visit)
    }

    fn audit_checkpoints(&self) -> StoreResult<Vec<Checkpoint>> {
        audit::checkpoints(self)
    }

    fn audit_head(&self) -> StoreResult<Option<u64>> {
        audit::head(self)
    }

    fn audit_latest_checkpoint(&self) -> StoreResult<Option<Checkpoint>> {
        audit::latest_checkpoint(self)
    }

    fn audit_checkpoints_after(&self, after: u64, limit: u32) -> StoreResult<Vec<Checkpoint>> {
        audit::checkpoints_after(self, after, limit)
    }

    fn audit_sign_head(&self, now: OffsetDateTime) -> StoreResult<Option<Checkpoint>> {
        audit::sign_head(self, now)
    }

    fn insert_token(
        &self,
        token: &TokenRecord,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        access::insert_token(self, token, audit, now)
    }

    fn find_token(&self, hash: &[u8; 32]) -> StoreResult<Option<TokenRecord>> {
        access::find_token(self, hash)
    }

    fn revoke_token(
        &self,
        hash: &[u8; 32],
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        access::revoke_token(self, hash, audit, now)
    }

    fn count_by_state(&self) -> StoreResult<Vec<(RequestState, u64)>> {
        let rows = self.read(|tx| {
            tx.rows(
                "SELECT state, COUNT(*) FROM requests GROUP BY state",
                &[],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })?;
        codec::counts(rows)
    }

    fn count_open_post_reviews(&self) -> StoreResult<u64> {
        let n: i64 = self.read(|tx| {
            tx.one(
                "SELECT COUNT(*) FROM requests WHERE breakglass AND NOT post_review_closed",
                &[],
                |r| r.get(0),
            )
        })?;
        Ok(n.max(0) as u64)
    }

    fn count_overdue_grants(&self, before: OffsetDateTime) -> StoreResult<u64> {
        let n: i64 = self.read(|tx| {
            tx.one(
                "SELECT COUNT(*) FROM requests WHERE state = 'active' AND not_after < $1",
                params![codec::micros(before)],
                |r| r.get(0),
            )
        })?;
        Ok(n.max(0) as u64)
    }

    fn issue_certificate(
        &self,
        cert: &CertificateRecord,
        audit: &mut dyn FnMut(u64) -> AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        self.write(|tx| {
            let serial: i64 = tx.one(
                "INSERT INTO certificates (provider, request_id, key_id, valid_before, issued_at) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING serial",
                params![
                    cert.provider.as_str(),
                    cert.request_id.as_str(),
                    cert.key_id.as_str(),
                    codec::micros(cert.valid_before),
                    codec::micros(now),
                ],
                |r| r.get(0),
            )?;
            let serial = u64::try_from(serial)
                .map_err(|_| StoreError::Corrupt("negative certificate serial".into()))?;
            audit::append(tx, self.signer(), &[audit(serial)], now)?;
            Ok(serial)
        })
    }

    fn revoked_certificates(&self, provider: &str, now: OffsetDateTime) -> StoreResult<Vec<u64>> {
        self.read(|tx| {
            tx.rows(
                "SELECT c.serial FROM certificates c JOIN requests r ON r.id = c.request_id \
                 WHERE c.provider = $1 AND c.valid_before > $2 AND r.state <> 'active' \
                 ORDER BY c.serial",
                params![provider, codec::micros(now)],
                |r| {
                    u64::try_from(r.get::<i64>(0)?)
                        .map_err(|_| StoreError::Corrupt("negative serial".into()))
                },
            )
        })
    }

    fn ping(&self) -> StoreResult<()> {
        self.read(|tx| tx.one("SELECT 1", &[], |_| Ok(())))
    }
}
