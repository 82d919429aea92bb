//! [`RunStore`] on PostgreSQL, shared by replicas. A run's row lock
//! (`FOR UPDATE`) serialises its transitions, so an approved run is claimed
//! by exactly one executor; a transaction-scoped advisory lock per
//! (principal, rate key) serialises counting and inserting rate-limit events.
//! Lock order: advisory or row lock first, the audit head last.

use airlock_core::run::{Run, RunId};
use postgres::types::ToSql;
use postgres::{GenericClient, Row, Transaction};
use time::OffsetDateTime;

use super::{append_audit_tx, col, db, is_unique_violation, PgStore};
use crate::codec::{self, ReviewRow};
use crate::runs::{
    due_runs_condition, encode_doc, run_not_found, LeaseChange, NewRun, RateCheck, RateEvent,
    RunChange, RunFilter, RunLease, RunRow, RunStore, RUN_COLUMNS,
};
use crate::{StoreError, StoreResult};

fn read_run_row(r: &Row) -> Result<RunRow, postgres::Error> {
    Ok(RunRow {
        id: r.try_get(0)?,
        state: r.try_get(1)?,
        doc: r.try_get(2)?,
        lease_owner: r.try_get(3)?,
        lease_until: r.try_get(4)?,
        start_after: r.try_get(5)?,
        cancel_requested: r.try_get(6)?,
    })
}

/// Decodes rows with their reviews, fetched in one query.
fn decode_all(c: &mut impl GenericClient, rows: &[Row]) -> StoreResult<Vec<(Run, RunLease)>> {
    let rows: Vec<RunRow> = rows
        .iter()
        .map(|r| read_run_row(r).map_err(col))
        .collect::<StoreResult<_>>()?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let review_rows = c
        .query(
            "SELECT run_id, reviewer, decision, comment, at FROM run_reviews WHERE run_id = ANY($1) ORDER BY id",
            &[&ids],
        )
        .map_err(db)?;
    let mut by_id: std::collections::HashMap<String, Vec<ReviewRow>> = Default::default();
    for r in review_rows {
        let run_id: String = r.try_get(0).map_err(col)?;
        by_id.entry(run_id).or_default().push(ReviewRow {
            reviewer: r.try_get(1).map_err(col)?,
            decision: r.try_get(2).map_err(col)?,
            comment: r.try_get(3).map_err(col)?,
            at: r.try_get(4).map_err(col)?,
        });
    }
    rows.into_iter()
        .map(|row| {
            let reviews = by_id.remove(&row.id).unwrap_or_default();
            row.decode(reviews)
        })
        .collect()
}

fn load_run(
    c: &mut impl GenericClient,
    id: &str,
    lock: bool,
) -> StoreResult<Option<(Run, RunLease)>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let rows = c.query(&sql, &[&id]).map_err(db)?;
    Ok(decode_all(c, &rows)?.pop())
}

fn insert_review(
    tx: &mut Transaction<'_>,
    id: &RunId,
    review: &airlock_core::request::Review,
) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO run_reviews (run_id, reviewer, decision, comment, at) VALUES ($1, $2, $3, $4, $5)",
        &[&id.as_str(), &review.reviewer.as_str(), &review.decision.as_str(), &review.comment, &codec::micros(review.at)],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Duplicate(format!("review by `{}` on run `{id}`", review.reviewer))
        } else {
            db(e)
        }
    })?;
    Ok(())
}

/// Locks the pair for this transaction, prunes its old events and returns the
/// times of those inside the window.
fn recent_events(
    tx: &mut Transaction<'_>,
    rc: &RateCheck,
    now: OffsetDateTime,
) -> StoreResult<Vec<OffsetDateTime>> {
    // Keyed by schema too, so stores in different schemas never wait on each other.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('airlock-rate:' || current_schema() || ':' || $1 || ':' || $2))",
        &[&rc.principal.as_str(), &rc.key],
    )
    .map_err(db)?;
    let start = codec::micros(rc.rate.window_start(now));
    tx.execute(
        "DELETE FROM rate_events WHERE principal = $1 AND rate_key = $2 AND at <= $3",
        &[&rc.principal.as_str(), &rc.key, &start],
    )
    .map_err(db)?;
    let rows = tx
        .query(
            "SELECT at FROM rate_events WHERE principal = $1 AND rate_key = $2 AND at > $3 \
             ORDER BY at DESC LIMIT $4",
            &[
                &rc.principal.as_str(),
                &rc.key,
                &start,
                &i64::from(rc.rate.count),
            ],
        )
        .map_err(db)?;
    rows.iter()
        .map(|r| {
            let us: i64 = r.try_get(0).map_err(col)?;
            codec::from_micros(us, "rate event")
        })
        .collect()
}

impl RunStore for PgStore {
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
            let owner = new.lease.as_ref().map(|(o, _)| o.as_str());
            let until = new.lease.as_ref().map(|(_, t)| codec::micros(*t));
            tx.execute(
                "INSERT INTO runs (id, state, requester, created_at, updated_at, lapses_at, start_after, \
                 lease_owner, lease_until, cancel_requested, doc) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10)",
                &[
                    &r.id.as_str(),
                    &r.state.as_str(),
                    &r.requester.as_str(),
                    &codec::micros(r.created_at),
                    &codec::micros(r.updated_at),
                    &r.lapses_at.map(codec::micros),
                    &new.start_after.map(codec::micros),
                    &owner,
                    &until,
                    &encode_doc(r)?,
                ],
            )
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
                tx.execute(
                    "INSERT INTO rate_events (principal, rate_key, at, run_id) VALUES ($1, $2, $3, $4)",
                    &[&rc.principal.as_str(), &rc.key, &codec::micros(now), &r.id.as_str()],
                )
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
                tx.execute(
                    "INSERT INTO rate_events (principal, rate_key, at, run_id) VALUES ($1, $2, $3, $4)",
                    &[&rate.principal.as_str(), &rate.key, &codec::micros(now), &marker],
                )
                .map_err(db)?;
            }
            append_audit_tx(tx, self.signer.as_ref(), &ev.audit, now)?;
            Ok(ev.count)
        })
    }

    fn get_run(&self, id: &RunId) -> StoreResult<Option<Run>> {
        Ok(load_run(&mut *self.pool.get()?, id.as_str(), false)?.map(|(r, _)| r))
    }

    fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let state = filter.state.map(|s| s.as_str());
        let requester = filter.requester.as_ref().map(|r| r.as_str());
        let limit = codec::effective_limit(filter.limit, codec::MAX_LIST_LIMIT);
        let after = filter
            .after
            .as_ref()
            .map(|(at, id)| (codec::micros(*at), id.as_str()));
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE TRUE");
        let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(s) = &state {
            args.push(s);
            sql.push_str(&format!(" AND state = ${}", args.len()));
        }
        if let Some(r) = &requester {
            args.push(r);
            sql.push_str(&format!(" AND requester = ${}", args.len()));
        }
        if let Some((at, id)) = &after {
            args.push(at);
            args.push(id);
            sql.push_str(&format!(
                " AND (created_at < ${0} OR (created_at = ${0} AND id > ${1}))",
                args.len() - 1,
                args.len()
            ));
        }
        args.push(&limit);
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id LIMIT ${}",
            args.len()
        ));
        let mut conn = self.pool.get()?;
        let rows = conn.query(&sql, &args).map_err(db)?;
        Ok(decode_all(&mut *conn, &rows)?
            .into_iter()
            .map(|(r, _)| r)
            .collect())
    }

    fn update_run(
        &self,
        id: &RunId,
        now: OffsetDateTime,
        decide: &mut dyn FnMut(&Run, &RunLease) -> Result<RunChange, airlock_core::Error>,
    ) -> StoreResult<Run> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction().map_err(db)?;
        // FOR UPDATE: a second claimer of the same run waits here and then sees it running.
        let (current, mut lease) =
            load_run(&mut tx, id.as_str(), true)?.ok_or_else(|| run_not_found(id))?;
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
        tx.execute(
            "UPDATE runs SET state = $2, updated_at = $3, lapses_at = $4, start_after = $5, \
             lease_owner = $6, lease_until = $7, cancel_requested = $8, doc = $9 WHERE id = $1",
            &[
                &id.as_str(),
                &next.state.as_str(),
                &codec::micros(now),
                &next.lapses_at.map(codec::micros),
                &lease.start_after.map(codec::micros),
                &lease.owner,
                &lease.until.map(codec::micros),
                &lease.cancel_requested,
                &encode_doc(&next)?,
            ],
        )
        .map_err(db)?;
        if let Some(review) = &change.review {
            insert_review(&mut tx, id, review)?;
        }
        if let Some(t) = &change.transcript {
            tx.execute(
                "INSERT INTO run_transcripts (run_id, body, sha256) VALUES ($1, $2, $3)",
                &[&id.as_str(), &t.bytes, &t.sha256],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Duplicate(format!("transcript of run `{id}`"))
                } else {
                    db(e)
                }
            })?;
        }
        append_audit_tx(&mut tx, self.signer.as_ref(), &change.audit, now)?;
        let (updated, _) =
            load_run(&mut tx, id.as_str(), false)?.ok_or_else(|| run_not_found(id))?;
        tx.commit().map_err(db)?;
        Ok(updated)
    }

    fn due_runs(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<RunId>> {
        let sql = format!(
            "SELECT id FROM runs WHERE {} ORDER BY created_at, id LIMIT $2",
            due_runs_condition("$1")
        );
        let rows = self
            .pool
            .get()?
            .query(&sql, &[&codec::micros(now), &i64::from(limit.max(1))])
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let s: String = r.try_get(0).map_err(col)?;
                RunId::parse(&s).map_err(|e| StoreError::Corrupt(format!("run id `{s}`: {e}")))
            })
            .collect()
    }

    fn run_transcript(&self, id: &RunId) -> StoreResult<Option<Vec<u8>>> {
        let row = self
            .pool
            .get()?
            .query_opt(
                "SELECT body FROM run_transcripts WHERE run_id = $1",
                &[&id.as_str()],
            )
            .map_err(db)?;
        row.map(|r| r.try_get(0).map_err(col)).transpose()
    }
}
