//! [`AccessStore`] on any [`Db`], and the token calls of [`Store`](crate::Store).
//! Identity binding takes the identity lock, so two replicas racing to bind
//! one name cannot both win (the unique keys would also refuse one).

use airlock_core::audit_chain::AuditDraft;
use airlock_core::UserName;
use time::OffsetDateTime;

use super::{audit, duplicate, params, Db, LockKey, Row};
use crate::access::{AccessStore, BindOutcome, Lock, LockKind, TokenFilter};
use crate::codec::{self, LockRow, TokenRow, TOKEN_COLUMNS};
use crate::{StoreResult, TokenRecord};

/// Reads a row selected with [`TOKEN_COLUMNS`].
fn token_row(r: &dyn Row) -> StoreResult<TokenRecord> {
    TokenRow {
        hash: r.get(0)?,
        user: r.get(1)?,
        groups: r.get(2)?,
        admin: r.get(3)?,
        created_by: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        revoked: r.get(7)?,
        mfa: r.get(8)?,
        parent: r.get(9)?,
        last_used_at: r.get(10)?,
    }
    .decode()
}

/// Stores a token and its audit event.
pub(crate) fn insert_token(
    db: &impl Db,
    token: &TokenRecord,
    audit: &AuditDraft,
    now: OffsetDateTime,
) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL)"
    );
    let groups = codec::encode_groups(&token.groups);
    db.write(|tx| {
        tx.execute(
            &sql,
            params![
                &token.hash[..],
                token.user.as_str(),
                &groups,
                token.admin,
                token.created_by.as_str(),
                codec::micros(token.created_at),
                codec::micros(token.expires_at),
                token.revoked,
                token.mfa,
                token.parent.as_ref().map(|p| &p[..]),
            ],
        )
        .map_err(duplicate(|| "token".into()))?;
        audit::append(tx, db.signer(), std::slice::from_ref(audit), now)
    })
}

/// Looks a token up by its hash.
pub(crate) fn find_token(db: &impl Db, hash: &[u8; 32]) -> StoreResult<Option<TokenRecord>> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1");
    db.read(|tx| tx.opt(&sql, params![&hash[..]], token_row))
}

/// Revokes a token and the web sessions started from it.
pub(crate) fn revoke_token(
    db: &impl Db,
    hash: &[u8; 32],
    audit: &AuditDraft,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    db.write(|tx| {
        let n = tx.execute(
            "UPDATE tokens SET revoked = TRUE WHERE hash = $1 AND NOT revoked",
            params![&hash[..]],
        )?;
        if n == 1 {
            let sessions = tx.execute(
                "UPDATE tokens SET revoked = TRUE WHERE parent = $1 AND NOT revoked",
                params![&hash[..]],
            )?;
            let audit = codec::with_sessions_ended(audit, sessions as usize);
            audit::append(tx, db.signer(), std::slice::from_ref(&audit), now)?;
        }
        Ok(n == 1)
    })
}

impl<D: Db> AccessStore for D {
    fn bind_identity(
        &self,
        issuer: &str,
        subject: &str,
        name: &UserName,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<BindOutcome> {
        self.write(|tx| {
            tx.lock(LockKey::Identity)?;
            let bound: Option<String> = tx.opt(
                "SELECT user_name FROM identities WHERE issuer = $1 AND subject = $2",
                params![issuer, subject],
                |r| r.get(0),
            )?;
            if let Some(n) = bound {
                return Ok(BindOutcome::Existing(codec::user_name(&n)?));
            }
            let holder = tx.opt(
                "SELECT issuer, subject FROM identities WHERE user_name = $1",
                params![name.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if let Some((issuer, subject)) = holder {
                return Ok(BindOutcome::Taken { issuer, subject });
            }
            tx.execute(
                "INSERT INTO identities (user_name, issuer, subject, bound_at) VALUES ($1, $2, $3, $4)",
                params![name.as_str(), issuer, subject, codec::micros(now)],
            )?;
            audit::append(tx, self.signer(), std::slice::from_ref(audit), now)?;
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
            let n = tx.execute(
                "DELETE FROM identities WHERE user_name = $1",
                params![name.as_str()],
            )?;
            if n > 0 {
                audit::append(tx, self.signer(), std::slice::from_ref(audit), now)?;
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
                params![
                    lock.kind.as_str(),
                    lock.name.as_str(),
                    lock.reason.as_str(),
                    lock.created_by.as_str(),
                    codec::micros(lock.created_at),
                    lock.expires_at.map(codec::micros),
                ],
            )?;
            audit::append(tx, self.signer(), std::slice::from_ref(audit), now)
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
            let n = tx.execute(
                "DELETE FROM locks WHERE kind = $1 AND name = $2 \
                 AND (expires_at IS NULL OR expires_at > $3)",
                params![kind.as_str(), name, codec::micros(now)],
            )?;
            if n > 0 {
                audit::append(tx, self.signer(), std::slice::from_ref(audit), now)?;
            }
            Ok(n > 0)
        })
    }

    fn locks(&self, now: OffsetDateTime) -> StoreResult<Vec<Lock>> {
        self.read(|tx| {
            tx.rows(
                "SELECT kind, name, reason, created_by, created_at, expires_at FROM locks \
                 WHERE expires_at IS NULL OR expires_at > $1 ORDER BY kind, name",
                params![codec::micros(now)],
                |r| {
                    LockRow {
                        kind: r.get(0)?,
                        name: r.get(1)?,
                        reason: r.get(2)?,
                        created_by: r.get(3)?,
                        created_at: r.get(4)?,
                        expires_at: r.get(5)?,
                    }
                    .decode()
                },
            )
        })
    }

    fn list_tokens(
        &self,
        filter: &TokenFilter,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<TokenRecord>> {
        let (after_at, after_hash) = match &filter.after {
            Some((at, hash)) => (Some(codec::micros(*at)), Some(&hash[..])),
            None => (None, None),
        };
        // The CASTs give PostgreSQL a type for parameters that may be NULL.
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE NOT revoked AND expires_at > $1 \
             AND (CAST($2 AS TEXT) IS NULL OR user_name = $2) \
             AND (CAST($3 AS BIGINT) IS NULL OR created_at < $3 OR (created_at = $3 AND hash > $4)) \
             ORDER BY created_at DESC, hash LIMIT $5"
        );
        self.read(|tx| {
            tx.rows(
                &sql,
                params![
                    codec::micros(now),
                    filter.user.as_ref().map(|u| u.as_str()),
                    after_at,
                    after_hash,
                    codec::effective_limit(filter.limit, codec::MAX_TOKEN_PAGE),
                ],
                token_row,
            )
        })
    }

    fn touch_token(&self, hash: &[u8; 32], now: OffsetDateTime) -> StoreResult<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE tokens SET last_used_at = $2 WHERE hash = $1",
                params![&hash[..], codec::micros(now)],
            )?;
            Ok(())
        })
    }
}
