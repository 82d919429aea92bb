//! [`RunStore`] on SQLite. Every write runs under `BEGIN IMMEDIATE`, which
//! takes the database write lock before reading: rate-limit counts, claims
//! and reviews see the state they will write over.

use airlock_core::run::{Run, RunId};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use time::OffsetDateTime;

use super::{append_audit_tx, db, is_unique_violation, SqliteStore};
use crate::codec::{self, ReviewRow};
use crate::runs::{
    due_runs_condition, encode_doc, run_not_found, LeaseChange, NewRun, RateCheck, RateEvent,
    RunChange, RunFilter, RunLease, RunRow, RunStore, RUN_COLUMNS,
};
use crate::{StoreError, StoreResult};

fn read_run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        state: r.get(1)?,
        doc: r.get(2)?,
        lease_owner: r.get(3)?,
        lease_until: r.get(4)?,
        start_after: r.get(5)?,
        cancel_requested: r.get(6)?,
    })
}

fn load_reviews(conn: &Connection, id: &str) -> StoreResult<Vec<ReviewRow>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT reviewer, decision, comment, at FROM run_reviews WHERE run_id = ?1 ORDER BY id",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map([id], |r| {
            Ok(ReviewRow {
                reviewer: r.get(0)?,
                decision: r.get(1)?,
                comment: r.get(2)?,
                at: r.get(3)?,
            })
        })
        .map_err(db)?;
    rows.map(|r| r.map_err(db)).collect()
}

fn decode_all(conn: &Connection, rows: Vec<RunRow>) -> StoreResult<Vec<Run>> {
    rows.into_iter()
        .map(|row| {
            let reviews = load_reviews(conn, &row.id)?;
            row.decode(reviews).map(|(run, _)| run)
        })
        .collect()
}

fn load_run(conn: &Connection, id: &str) -> StoreResult<Option<(Run, RunLease)>> {
    let row = conn
        .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))
        .map_err(db)?
        .query_row([id], read_run_row)
        .optional()
        .map_err(db)?;
    row.map(|row| {
        let reviews = load_reviews(conn, &row.id)?;
        row.decode(reviews)
    })
    .transpose()
}

fn insert_review(
    tx: &Transaction<'_>,
    id: &RunId,
    review: &airlock_core::request::Review,
) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO run_reviews (run_id, reviewer, decision, comment, at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(db)?
    .execute(params![
        id.as_str(),
        review.reviewer.as_str(),
        review.decision.as_str(),
        review.comment,
        codec::micros(review.at)
    ])
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Duplicate(format!("review by `{}` on run `{id}`", review.reviewer))
        } else {
            db(e)
        }
    })?;
    Ok(())
}

/// Times of the pair's events inside the window, after pruning older ones.
fn recent_events(
    tx: &Transaction<'_>,
    rc: &RateCheck,
    now: OffsetDateTime,
) -> StoreResult<Vec<OffsetDateTime>> {
    let start = codec::micros(rc.rate.window_start(now));
    tx.prepare_cached(
        "DELETE FROM rate_events WHERE principal = ?1 AND rate_key = ?2 AND at <= ?3",
    )
    .map_err(db)?
    .execute(params![rc.principal.as_str(), rc.key, start])
    .map_err(db)?;
    let mut stmt = tx
        .prepare_cached(
            "SELECT at FROM rate_events WHERE principal = ?1 AND rate_key = ?2 AND at > ?3 \
             ORDER BY at DESC LIMIT ?4",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(
            params![
                rc.principal.as_str(),
                rc.key,
                start,
                i64::from(rc.rate.count)
            ],
            |r| r.get::<_, i64>(0),
        )
        .map_err(db)?;
    rows.map(|r| {
        r.map_err(db)
            .and_then(|us| codec::from_micros(us, "rate event"))
    })
    .collect()
}

fn lease_columns(lease: &RunLease) -> (Option<&str>, Option<i64>, Option<i64>, Option<&str>) {
    (
        lease.owner.as_deref(),
        lease.until.map(codec::micros),
        lease.start_after.map(codec::micros),
        lease.cancel_requested.as_deref(),
    )
}

impl RunStore for SqliteStore {
    fn create_run(
        &self,
        rate: Option<&RateCheck>,
        now: OffsetDateTime,
        decide: &mut dyn FnMut(&[OffsetDateTime]) -> NewRun,
    ) -> StoreResult<Run> {
        self.write(|tx| {
            let recent = match rate {
                Some(rc) => recent_events(tx, rc, now)?,
                None => Vec::new(),
            };
            let new = decide(&recent);
            let r = &new.run;
            let lease = RunLease {
                owner: new.lease.as_ref().map(|(o, _)| o.clone()),
                until: new.lease.as_ref().map(|(_, t)| *t),
                start_after: new.start_after,
                cancel_requested: None,
            };
            let (owner, until, start_after, cancel) = lease_columns(&lease);
            tx.prepare_cached(
                "INSERT INTO runs (id, state, requester, created_at, updated_at, lapses_at, start_after, \
                 lease_owner, lease_until, cancel_requested, doc) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .map_err(db)?
            .execute(params![
                r.id.as_str(),
                r.state.as_str(),
                r.requester.as_str(),
                codec::micros(r.created_at),
                codec::micros(r.updated_at),
                r.lapses_at.map(codec::micros),
                start_after,
                owner,
                until,
                cancel,
                encode_doc(r)?,
            ])
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Duplicate(format!("run `{}`", r.id))
                } else {
                    db(e)
                }
            })?;
            for review in &r.reviews {
                insert_review(tx, &r.id, review)?;
            }
            if let (true, Some(rc)) = (new.count, rate) {
                tx.prepare_cached(
                    "INSERT INTO rate_events (principal, rate_key, at, run_id) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(db)?
                .execute(params![
                    rc.principal.as_str(),
                    rc.key,
                    codec::micros(now),
                    r.id.as_str()
                ])
                .map_err(db)?;
            }
            append_audit_tx(tx, self.signer.as_ref(), &new.audit, now)?;
            Ok(new.run)
        })
    }

    fn record_rate_event(
        &self,
        rate: &RateCheck,
        marker: &str,
        now: OffsetDateTime,
        decide: &mut dyn FnMut(&[OffsetDateTime]) -> RateEvent,
    ) -> StoreResult<bool> {
        self.write(|tx| {
            let recent = recent_events(tx, rate, now)?;
            let ev = decide(&recent);
            if ev.count {
                tx.prepare_cached(
                    "INSERT INTO rate_events (principal, rate_key, at, run_id) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(db)?
                .execute(params![
                    rate.principal.as_str(),
                    rate.key,
                    codec::micros(now),
                    marker
                ])
                .map_err(db)?;
            }
            append_audit_tx(tx, self.signer.as_ref(), &ev.audit, now)?;
            Ok(ev.count)
        })
    }

    fn get_run(&self, id: &RunId) -> StoreResult<Option<Run>> {
        Ok(load_run(&self.conn(), id.as_str())?.map(|(r, _)| r))
    }

    fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        if let Some(state) = filter.state {
            args.push(Box::new(state.as_str()));
            sql.push_str(&format!(" AND state = ?{}", args.len()));
        }
        if let Some(requester) = &filter.requester {
            args.push(Box::new(requester.as_str().to_owned()));
            sql.push_str(&format!(" AND requester = ?{}", args.len()));
        }
        if let Some((at, id)) = &filter.after {
            args.push(Box::new(codec::micros(*at)));
            args.push(Box::new(id.as_str().to_owned()));
            sql.push_str(&format!(
                " AND (created_at < ?{0} OR (created_at = ?{0} AND id > ?{1}))",
                args.len() - 1,
                args.len()
            ));
        }
        args.push(Box::new(codec::effective_limit(
            filter.limit,
            codec::MAX_LIST_LIMIT,
        )));
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id LIMIT ?{}",
            args.len()
        ));
        let conn = self.conn();
        let rows = conn
            .prepare_cached(&sql)
            .map_err(db)?
            .query_map(rusqlite::params_from_iter(args.iter()), read_run_row)
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        decode_all(&conn, rows)
    }

    fn update_run(
        &self,
        id: &RunId,
        now: OffsetDateTime,
        decide: &mut dyn FnMut(&Run, &RunLease) -> Result<RunChange, airlock_core::Error>,
    ) -> StoreResult<Run> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let (current, mut lease) = load_run(&tx, id.as_str())?.ok_or_else(|| run_not_found(id))?;
        let change = decide(&current, &lease)?;
        if change.is_empty() {
            return Ok(current);
        }
        let mut next = current;
        change.apply_to(&mut next, now);
        match &change.lease {
            Some(LeaseChange::Hold(owner, until)) => {
                lease.owner = Some(owner.clone());
                lease.until = Some(*until);
            }
            Some(LeaseChange::Release) => {
                lease.owner = None;
                lease.until = None;
            }
            None => {}
        }
        if let Some(t) = change.start_after {
            lease.start_after = Some(t);
        }
        if let Some(who) = &change.cancel_requested {
            lease.cancel_requested = Some(who.clone());
        }
        let (owner, until, start_after, cancel) = lease_columns(&lease);
        tx.prepare_cached(
            "UPDATE runs SET state = ?2, updated_at = ?3, lapses_at = ?4, start_after = ?5, \
             lease_owner = ?6, lease_until = ?7, cancel_requested = ?8, doc = ?9 WHERE id = ?1",
        )
        .map_err(db)?
        .execute(params![
            id.as_str(),
            next.state.as_str(),
            codec::micros(now),
            next.lapses_at.map(codec::micros),
            start_after,
            owner,
            until,
            cancel,
            encode_doc(&next)?,
        ])
        .map_err(db)?;
        if let Some(review) = &change.review {
            insert_review(&tx, id, review)?;
        }
        if let Some(t) = &change.transcript {
            tx.prepare_cached(
                "INSERT INTO run_transcripts (run_id, body, sha256) VALUES (?1, ?2, ?3)",
            )
            .map_err(db)?
            .execute(params![id.as_str(), t.bytes, t.sha256])
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Duplicate(format!("transcript of run `{id}`"))
                } else {
                    db(e)
                }
            })?;
        }
        append_audit_tx(&tx, self.signer.as_ref(), &change.audit, now)?;
        let (updated, _) = load_run(&tx, id.as_str())?.ok_or_else(|| run_not_found(id))?;
        tx.commit().map_err(db)?;
        Ok(updated)
    }

    fn due_runs(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<RunId>> {
        let sql = format!(
            "SELECT id FROM runs WHERE {} ORDER BY created_at, id LIMIT ?2",
            due_runs_condition("?1")
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
        let rows = stmt
            .query_map(params![codec::micros(now), i64::from(limit.max(1))], |r| {
                r.get::<_, String>(0)
            })
            .map_err(db)?;
        rows.map(|r| {
            r.map_err(db).and_then(|s| {
                RunId::parse(&s).map_err(|e| StoreError::Corrupt(format!("run id `{s}`: {e}")))
            })
        })
        .collect()
    }

    fn run_transcript(&self, id: &RunId) -> StoreResult<Option<Vec<u8>>> {
        self.conn()
            .prepare_cached("SELECT body FROM run_transcripts WHERE run_id = ?1")
            .map_err(db)?
            .query_row([id.as_str()], |r| r.get(0))
            .optional()
            .map_err(db)
    }
}
