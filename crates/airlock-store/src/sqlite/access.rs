//! [`AccessStore`] on SQLite.

use airlock_core::audit_chain::AuditDraft;
use airlock_core::UserName;
use rusqlite::{params, OptionalExtension};
use time::OffsetDateTime;

use super::{append_audit_tx, db, token_row, SqliteStore};
use crate::access::{AccessStore, BindOutcome, Lock, LockKind, TokenFilter};
use crate::codec::{self, TokenRow, TOKEN_COLUMNS};
use crate::{StoreResult, TokenRecord};

impl AccessStore for SqliteStore {
    fn bind_identity(
        &self,
        issuer: &str,
        subject: &str,
        name: &UserName,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<BindOutcome> {
        self.write(|tx| {
            let bound: Option<String> = tx
                .prepare_cached("SELECT user_name FROM identities WHERE issuer = ?1 AND subject = ?2")
                .map_err(db)?
                .query_row(params![issuer, subject], |r| r.get(0))
                .optional()
                .map_err(db)?;
            if let Some(n) = bound {
                return Ok(BindOutcome::Existing(codec::user_name(&n)?));
            }
            let holder: Option<(String, String)> = tx
                .prepare_cached("SELECT issuer, subject FROM identities WHERE user_name = ?1")
                .map_err(db)?
                .query_row(params![name.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db)?;
            if let Some((issuer, subject)) = holder {
                return Ok(BindOutcome::Taken { issuer, subject });
            }
            tx.prepare_cached(
                "INSERT INTO identities (user_name, issuer, subject, bound_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(db)?
            .execute(params![name.as_str(), issuer, subject, codec::micros(now)])
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
                .prepare_cached("DELETE FROM identities WHERE user_name = ?1")
                .map_err(db)?
                .execute(params![name.as_str()])
                .map_err(db)?;
            if n > 0 {
                append_audit_tx(tx, self.signer.as_ref(), std::slice::from_ref(audit), now)?;
            }
            Ok(n > 0)
        })
    }

    fn put_lock(&self, lock: &Lock, audit: &AuditDraft, now: OffsetDateTime) -> StoreResult<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO locks (kind, name, reason, created_by, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (kind, name) DO UPDATE SET \
                 reason = excluded.reason, created_by = excluded.created_by, \
                 created_at = excluded.created_at, expires_at = excluded.expires_at",
            )
            .map_err(db)?
            .execute(params![
                lock.kind.as_str(),
                lock.name,
                lock.reason,
                lock.created_by,
                codec::micros(lock.created_at),
                lock.expires_at.map(codec::micros),
            ])
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
                .prepare_cached(
                    "DELETE FROM locks WHERE kind = ?1 AND name = ?2 \
                     AND (expires_at IS NULL OR expires_at > ?3)",
                )
                .map_err(db)?
                .execute(params![kind.as_str(), name, codec::micros(now)])
                .map_err(db)?;
            if n > 0 {
                append_audit_tx(tx, self.signer.as_ref(), std::slice::from_ref(audit), now)?;
            }
            Ok(n > 0)
        })
    }

    fn locks(&self, now: OffsetDateTime) -> StoreResult<Vec<Lock>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT kind, name, reason, created_by, created_at, expires_at FROM locks \
                 WHERE expires_at IS NULL OR expires_at > ?1 ORDER BY kind, name",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![codec::micros(now)], |r| {
                Ok(codec::LockRow {
                    kind: r.get(0)?,
                    name: r.get(1)?,
                    reason: r.get(2)?,
                    created_by: r.get(3)?,
                    created_at: r.get(4)?,
                    expires_at: r.get(5)?,
                })
            })
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        rows.into_iter().map(codec::LockRow::decode).collect()
    }

    fn list_tokens(
        &self,
        filter: &TokenFilter,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<TokenRecord>> {
        let (after_at, after_hash) = match &filter.after {
            Some((at, hash)) => (Some(codec::micros(*at)), Some(hash.to_vec())),
            None => (None, None),
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE revoked = 0 AND expires_at > ?1 \
                 AND (?2 IS NULL OR user_name = ?2) \
                 AND (?3 IS NULL OR created_at < ?3 OR (created_at = ?3 AND hash > ?4)) \
                 ORDER BY created_at DESC, hash LIMIT ?5"
            ))
            .map_err(db)?;
        let rows: Vec<TokenRow> = stmt
            .query_map(
                params![
                    codec::micros(now),
                    filter.user.as_ref().map(|u| u.as_str()),
                    after_at,
                    after_hash,
                    codec::effective_limit(filter.limit, codec::MAX_TOKEN_PAGE),
                ],
                token_row,
            )
            .map_err(db)?
            .collect::<Result<_, _>>()
            .map_err(db)?;
        rows.into_iter().map(TokenRow::decode).collect()
    }

    fn touch_token(&self, hash: &[u8; 32], now: OffsetDateTime) -> StoreResult<()> {
        self.write(|tx| {
            tx.prepare_cached("UPDATE tokens SET last_used_at = ?2 WHERE hash = ?1")
                .map_err(db)?
                .execute(params![&hash[..], codec::micros(now)])
                .map_err(db)?;
            Ok(())
        })
    }
}
