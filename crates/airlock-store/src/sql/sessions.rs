//! [`SessionStore`] on any [`Db`].

use airlock_core::audit_chain::AuditDraft;
use airlock_core::request::RequestId;
use airlock_core::session::{EndReason, Session, SessionId, SessionKind};
use airlock_core::{EntitlementName, UserName};
use time::OffsetDateTime;

use super::{audit, duplicate, params, Db, ListQuery, Row};
use crate::codec;
use crate::sessions::{SessionEnd, SessionFilter, SessionStore, SessionWatch, MAX_CHUNK};
use crate::{StoreError, StoreResult};

const COLUMNS: &str =
    "id, request_id, entitlement, username, kind, replica, started_at, ended_at, \
     bytes_up, bytes_down, end_reason, recording_sha256, terminate_requested, lease_until";

fn corrupt(what: &str, v: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("gateway session {what} `{v}`"))
}

fn count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Reads a row selected with [`COLUMNS`].
fn session_row(r: &dyn Row) -> StoreResult<Session> {
    let id: String = r.get(0)?;
    let request: String = r.get(1)?;
    let entitlement: String = r.get(2)?;
    let user: String = r.get(3)?;
    let kind: String = r.get(4)?;
    let end_reason: Option<String> = r.get(10)?;
    let ended_at: Option<i64> = r.get(7)?;
    let bytes_up: i64 = r.get(8)?;
    let bytes_down: i64 = r.get(9)?;
    Ok(Session {
        id: SessionId::parse(&id).map_err(|_| corrupt("id", &id))?,
        request_id: RequestId::parse(&request).map_err(|_| corrupt("request", &request))?,
        entitlement: EntitlementName::parse(&entitlement)
            .map_err(|_| corrupt("entitlement", &entitlement))?,
        user: UserName::parse(&user).map_err(|_| corrupt("user", &user))?,
        kind: SessionKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        replica: r.get(5)?,
        started_at: codec::from_micros(r.get(6)?, "session start")?,
        ended_at: ended_at
            .map(|t| codec::from_micros(t, "session end"))
            .transpose()?,
        bytes_up: u64::try_from(bytes_up).map_err(|_| corrupt("bytes_up", bytes_up))?,
        bytes_down: u64::try_from(bytes_down).map_err(|_| corrupt("bytes_down", bytes_down))?,
        end_reason: end_reason
            .map(|e| EndReason::parse(&e).ok_or_else(|| corrupt("end reason", &e)))
            .transpose()?,
        recording_sha256: r.get(11)?,
        terminate_requested: r.get(12)?,
        lease_until: codec::from_micros(r.get(13)?, "session lease")?,
    })
}

impl<D: Db> SessionStore for D {
    fn start_session(
        &self,
        s: &Session,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO gateway_sessions ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, 0, 0, NULL, NULL, NULL, $8)"
        );
        self.write(|tx| {
            tx.execute(
                &sql,
                params![
                    s.id.as_str(),
                    s.request_id.as_str(),
                    s.entitlement.as_str(),
                    s.user.as_str(),
                    s.kind.as_str(),
                    s.replica.as_str(),
                    codec::micros(s.started_at),
                    codec::micros(s.lease_until),
                ],
            )
            .map_err(duplicate(|| format!("session `{}`", s.id)))?;
            audit::append(tx, self.signer(), std::slice::from_ref(audit), now)
        })
    }

    fn append_recording(&self, id: &SessionId, seq: u64, body: &[u8]) -> StoreResult<()> {
        if body.len() > MAX_CHUNK {
            return Err(StoreError::Unavailable(format!(
                "recording chunk of {} bytes is over the {MAX_CHUNK}-byte limit",
                body.len()
            )));
        }
        self.write(|tx| {
            tx.execute(
                "INSERT INTO gateway_recordings (session_id, seq, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (session_id, seq) DO NOTHING",
                params![id.as_str(), count(seq), body],
            )?;
            Ok(())
        })
    }

    fn watch_sessions(
        &self,
        ids: &[String],
        lease_until: Option<OffsetDateTime>,
    ) -> StoreResult<Vec<SessionWatch>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let watch = |tx: &mut dyn super::Tx| {
            tx.rows(
                "SELECT s.id, s.terminate_requested, r.state FROM gateway_sessions s \
                 JOIN requests r ON r.id = s.request_id WHERE s.id = ANY($1)",
                params![ids],
                |r| {
                    let id: String = r.get(0)?;
                    Ok(SessionWatch {
                        id: SessionId::parse(&id).map_err(|_| corrupt("id", &id))?,
                        terminate_requested: r.get(1)?,
                        request_state: codec::parse_state(r.get(2)?)?,
                    })
                },
            )
        };
        match lease_until {
            None => self.read(watch),
            Some(until) => self.write(|tx| {
                tx.execute(
                    "UPDATE gateway_sessions SET lease_until = $1 \
                     WHERE id = ANY($2) AND ended_at IS NULL",
                    params![codec::micros(until), ids],
                )?;
                watch(tx)
            }),
        }
    }

    fn end_session(
        &self,
        id: &SessionId,
        end: &SessionEnd,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE gateway_sessions SET ended_at = $1, end_reason = $2, bytes_up = $3, \
                 bytes_down = $4, recording_sha256 = $5 WHERE id = $6 AND ended_at IS NULL",
                params![
                    codec::micros(now),
                    end.reason.as_str(),
                    count(end.bytes_up),
                    count(end.bytes_down),
                    end.recording_sha256.as_str(),
                    id.as_str(),
                ],
            )?;
            if n == 0 {
                return Ok(false);
            }
            audit::append(tx, self.signer(), std::slice::from_ref(audit), now)?;
            Ok(true)
        })
    }

    fn get_session(&self, id: &SessionId) -> StoreResult<Option<Session>> {
        let sql = format!("SELECT {COLUMNS} FROM gateway_sessions WHERE id = $1");
        self.read(|tx| tx.opt(&sql, params![id.as_str()], session_row))
    }

    fn list_sessions(&self, f: &SessionFilter) -> StoreResult<Vec<Session>> {
        let mut q = ListQuery::new(format!("SELECT {COLUMNS} FROM gateway_sessions WHERE TRUE"));
        if let Some(r) = &f.request {
            q.and("request_id = $?", [r.as_str().into()]);
        }
        if let Some((user, entitlements)) = &f.scope {
            q.and(
                "(username = $? OR entitlement = ANY($?))",
                [user.as_str().into(), entitlements.as_slice().into()],
            );
        }
        if let Some(replica) = &f.replica {
            q.and("replica = $?", [replica.as_str().into()]);
        }
        if f.open {
            q.and("ended_at IS NULL", []);
        }
        let limit = match f.limit {
            0 => 100,
            n => n.min(1000),
        };
        let (mut sql, mut args) = (q.sql, q.args);
        args.push(i64::from(limit).into());
        sql.push_str(&format!(
            " ORDER BY started_at DESC, id LIMIT ${}",
            args.len()
        ));
        self.read(|tx| tx.rows(&sql, &args, session_row))
    }

    fn session_recording(&self, id: &SessionId) -> StoreResult<Vec<u8>> {
        self.reader(|tx| {
            let mut out = Vec::new();
            tx.query(
                "SELECT body FROM gateway_recordings WHERE session_id = $1 ORDER BY seq",
                params![id.as_str()],
                &mut |r| {
                    out.extend_from_slice(r.get::<&[u8]>(0)?);
                    Ok(())
                },
            )?;
            Ok(out)
        })
    }

    fn request_session_terminate(
        &self,
        id: &SessionId,
        by: &str,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE gateway_sessions SET terminate_requested = $1 \
                 WHERE id = $2 AND ended_at IS NULL",
                params![by, id.as_str()],
            )?;
            if n == 0 {
                return Ok(false);
            }
            audit::append(tx, self.signer(), std::slice::from_ref(audit), now)?;
            Ok(true)
        })
    }

    fn abandoned_sessions(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<Session>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM gateway_sessions WHERE ended_at IS NULL AND lease_until < $1 \
             ORDER BY lease_until LIMIT $2"
        );
        self.read(|tx| {
            tx.rows(
                &sql,
                params![codec::micros(now), i64::from(limit.clamp(1, 1000))],
                session_row,
            )
        })
    }
}
