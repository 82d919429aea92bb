//! [`AccessStore`] on PostgreSQL. The identity binding runs under a
//! transaction-scoped advisory lock on the name, so two replicas racing to
//! bind one name cannot both win (the unique keys would also refuse one).

use airlock_core::audit_chain::AuditDraft;
use airlock_core::UserName;
use time::OffsetDateTime;

use super::{append_audit_tx, col, db, token_row, PgStore};
use crate::access::{AccessStore, BindOutcome, Lock, LockKind, TokenFilter};
use crate::codec::{self, TOKEN_COLUMNS};
use crate::{StoreResult, TokenRecord};

impl AccessStore for PgStore {
    fn bind_identity(
        &self,
        issuer: &str,
        subject: &str,
        name: &UserName,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<BindOutcome> {
        self.write(|tx| {
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('airlock-identity'))",
                &[],
            )
            .map_err(db)?;
            if let Some(r) = tx
                .query_opt(
                    "SELECT user_name FROM identities WHERE issuer = $1 AND subject = $2",
                    &[&issuer, &subject],
                )
                .map_err(db)?
            {
                let n: String = r.try_get(0).map_err(col)?;
                return Ok(BindOutcome::Existing(codec::user_name(&n)?));
            }
            if let Some(r) = tx
                .query_opt(
                    "SELECT issuer, subject FROM identities WHERE user_name = $1",
                    &[&name.as_str()],
                )
                .map_err(db)?
            {
                return Ok(BindOutcome::Taken {
                    issuer: r.try_get(0).map_err(col)?,
                    subject: r.try_get(1).map_err(col)?,
                });
            }
            tx.execute(
                "INSERT INTO identities (user_name, issuer, subject, bound_at) VALUES ($1, $2, $3, $4)",
                &[&name.as_str(), &issuer, &subject, &codec::micros(now)],
            )
            .map_err(db)?;
            append_audit_tx(tx, self.signer.as_ref(), std::slice::from_ref(audit), now)?;
            Ok(BindOutcome::Bound)
        })
    }

    fn unbind_identity(
        &self,
        name: &UserName,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.write(|tx| {
            let n = tx
                .execute(
                    "DELETE FROM identities WHERE user_name = $1",
                    &[&name.as_str()],
                )
                .map_err(db)?;
            if n > 0 {
                append_audit_tx(tx, self.signer.as_ref(), std::slice::from_ref(audit), now)?;
            }
            Ok(n > 0)
        })
    }

    fn put_lock(&self, lock: &Lock, audit: &AuditDraft, now: OffsetDateTime) -> StoreResult<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO locks (kind, name, reason, created_by, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (kind, name) DO UPDATE SET \
                 reason = excluded.reason, created_by = excluded.created_by, \
                 created_at = excluded.created_at, expires_at = excluded.expires_at",
                &[
                    &lock.kind.as_str(),
                    &lock.name,
                    &lock.reason,
                    &lock.created_by,
                    &codec::micros(lock.created_at),
                    &lock.expires_at.map(codec::micros),
                ],
            )
            .map_err(db)?;
            append_audit_tx(tx, self.signer.as_ref(), std::slice::from_ref(audit), now)
        })
    }

    fn remove_lock(
        &self,
        kind: LockKind,
        name: &str,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.write(|tx| {
            let n = tx
                .execute(
                    "DELETE FROM locks WHERE kind = $1 AND name = $2 \
                     AND (expires_at IS NULL OR expires_at > $3)",
                    &[&kind.as_str(), &name, &codec::micros(now)],
                )
                .map_err(db)?;
            if n > 0 {
                append_audit_tx(tx, self.signer.as_ref(), std::slice::from_ref(audit), now)?;
            }
            Ok(n > 0)
        })
    }

    fn locks(&self, now: OffsetDateTime) -> StoreResult<Vec<Lock>> {
        let rows = self
            .pool
            .get()?
            .query(
                "SELECT kind, name, reason, created_by, created_at, expires_at FROM locks \
                 WHERE expires_at IS NULL OR expires_at > $1 ORDER BY kind, name",
                &[&codec::micros(now)],
            )
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                codec::LockRow {
                    kind: r.try_get(0).map_err(col)?,
                    name: r.try_get(1).map_err(col)?,
                    reason: r.try_get(2).map_err(col)?,
                    created_by: r.try_get(3).map_err(col)?,
                    created_at: r.try_get(4).map_err(col)?,
                    expires_at: r.try_get(5).map_err(col)?,
                }
                .decode()
            })
            .collect()
    }

    fn list_tokens(
        &self,
        filter: &TokenFilter,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<TokenRecord>> {
        let user = filter.user.as_ref().map(|u| u.as_str());
        let (after_at, after_hash) = match &filter.after {
            Some((at, hash)) => (Some(codec::micros(*at)), Some(hash.to_vec())),
            None => (None, None),
        };
        let limit = codec::effective_limit(filter.limit, codec::MAX_TOKEN_PAGE);
        let rows = self
            .pool
            .get()?
            .query(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE NOT revoked AND expires_at > $1 \
                     AND ($2::text IS NULL OR user_name = $2) \
                     AND ($3::bigint IS NULL OR created_at < $3 OR (created_at = $3 AND hash > $4)) \
                     ORDER BY created_at DESC, hash LIMIT $5"
                ),
                &[&codec::micros(now), &user, &after_at, &after_hash, &limit],
            )
            .map_err(db)?;
        rows.iter().map(|r| token_row(r)?.decode()).collect()
    }

    fn touch_token(&self, hash: &[u8; 32], now: OffsetDateTime) -> StoreResult<()> {
        self.pool
            .get()?
            .execute(
                "UPDATE tokens SET last_used_at = $2 WHERE hash = $1",
                &[&&hash[..], &codec::micros(now)],
            )
            .map_err(db)?;
        Ok(())
    }
}
