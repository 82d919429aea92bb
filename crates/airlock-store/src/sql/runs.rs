//! [`RunStore`] on any [`Db`]. A run's row lock (`FOR UPDATE`) serialises its
//! transitions, so an approved run is claimed by exactly one executor; the
//! rate lock per (principal, rate key) serialises counting and inserting
//! rate-limit events. Lock order: rate or row lock first, the audit head last.

use airlock_core::run::{Run, RunId};
use time::OffsetDateTime;

use super::reviews::RUN_REVIEWS;
use super::{audit, duplicate, params, Db, ListQuery, LockKey, Row, Tx};
use crate::codec;
use crate::runs::{
    due_runs_condition, encode_doc, run_not_found, LeaseChange, NewRun, RateCheck, RateEvent,
    RunChange, RunFilter, RunLease, RunRow, RunStore, RUN_COLUMNS,
};
use crate::{StoreError, StoreResult};

/// Reads a row selected with [`RUN_COLUMNS`].
fn run_row(r: &dyn Row) -> StoreResult<RunRow> {
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

/// Decodes rows with their reviews, fetched in one query.
fn decode_all(tx: &mut dyn Tx, rows: Vec<RunRow>) -> StoreResult<Vec<(Run, RunLease)>> {
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut reviews = RUN_REVIEWS.load(tx, &ids)?;
    rows.into_iter()
        .map(|row| {
            let reviews = reviews.remove(&row.id).unwrap_or_default();
            row.decode(reviews)
        })
        .collect()
}

/// One run and its lease; `FOR UPDATE` locks its row until the transaction ends.
fn load_run(tx: &mut dyn Tx, id: &str, lock: bool) -> StoreResult<Option<(Run, RunLease)>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let rows = tx.rows(&sql, params![id], run_row)?;
    Ok(decode_all(tx, rows)?.pop())
}

/// Locks the pair for this transaction, prunes its old events and returns the
/// times of those inside the window.
fn recent_events(
    tx: &mut dyn Tx,
    rc: &RateCheck,
    now: OffsetDateTime,
) -> StoreResult<Vec<OffsetDateTime>> {
    tx.lock(LockKey::Rate(rc.principal.as_str(), &rc.key))?;
    let start = codec::micros(rc.rate.window_start(now));
    tx.execute(
        "DELETE FROM rate_events WHERE principal = $1 AND rate_key = $2 AND at <= $3",
        params![rc.principal.as_str(), rc.key.as_str(), start],
    )?;
    tx.rows(
        "SELECT at FROM rate_events WHERE principal = $1 AND rate_key = $2 AND at > $3 \
         ORDER BY at DESC LIMIT $4",
        params![
            rc.principal.as_str(),
            rc.key.as_str(),
            start,
            i64::from(rc.rate.count)
        ],
        |r| codec::from_micros(r.get(0)?, "rate event"),
    )
}

/// Counts one event of `rc` at `now`, under `marker` (a run id or an operation's).
fn count_event(
    tx: &mut dyn Tx,
    rc: &RateCheck,
    marker: &str,
    now: OffsetDateTime,
) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO rate_events (principal, rate_key, at, run_id) VALUES ($1, $2, $3, $4)",
        params![
            rc.principal.as_str(),
            rc.key.as_str(),
            codec::micros(now),
            marker
        ],
    )?;
    Ok(())
}

impl<D: Db> RunStore for D {
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
            let doc = encode_doc(r)?;
            tx.execute(
                "INSERT INTO runs (id, state, requester, created_at, updated_at, lapses_at, start_after, \
                 lease_owner, lease_until, cancel_requested, doc) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10)",
                params![
                    r.id.as_str(),
                    r.state.as_str(),
                    r.requester.as_str(),
                    codec::micros(r.created_at),
                    codec::micros(r.updated_at),
                    r.lapses_at.map(codec::micros),
                    new.start_after.map(codec::micros),
                    new.lease.as_ref().map(|(o, _)| o.as_str()),
                    new.lease.as_ref().map(|(_, t)| codec::micros(*t)),
                    &doc,
                ],
            )
            .map_err(duplicate(|| format!("run `{}`", r.id)))?;
            for review in &r.reviews {
                RUN_REVIEWS.insert(tx, r.id.as_str(), review)?;
            }
            if let (true, Some(rc)) = (new.count, rate) {
                count_event(tx, rc, r.id.as_str(), now)?;
            }
            audit::append(tx, self.signer(), &new.audit, now)?;
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
                count_event(tx, rate, marker, now)?;
            }
            audit::append(tx, self.signer(), &ev.audit, now)?;
            Ok(ev.count)
        })
    }

    fn get_run(&self, id: &RunId) -> StoreResult<Option<Run>> {
        Ok(self
            .read(|tx| load_run(tx, id.as_str(), false))?
            .map(|(r, _)| r))
    }

    fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let mut q = ListQuery::new(format!("SELECT {RUN_COLUMNS} FROM runs WHERE TRUE"));
        if let Some(state) = filter.state {
            q.and("state = $?", [state.as_str().into()]);
        }
        if let Some(requester) = &filter.requester {
            q.and("requester = $?", [requester.as_str().into()]);
        }
        let after = filter
            .after
            .as_ref()
            .map(|(at, id)| (codec::micros(*at), id.as_str()));
        let (sql, args) = q.page(
            after,
            codec::effective_limit(filter.limit, codec::MAX_LIST_LIMIT),
        );
        let runs = self.read(|tx| {
            let rows = tx.rows(&sql, &args, run_row)?;
            decode_all(tx, rows)
        })?;
        Ok(runs.into_iter().map(|(r, _)| r).collect())
    }

    fn update_run(
        &self,
        id: &RunId,
        now: OffsetDateTime,
        decide: &mut dyn FnMut(&Run, &RunLease) -> Result<RunChange, airlock_core::Error>,
    ) -> StoreResult<Run> {
        self.write(|tx| {
            // FOR UPDATE: a second claimer of the same run waits here and then sees it running.
            let (current, mut lease) =
                load_run(tx, id.as_str(), true)?.ok_or_else(|| run_not_found(id))?;
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
            let doc = encode_doc(&next)?;
            tx.execute(
                "UPDATE runs SET state = $2, updated_at = $3, lapses_at = $4, start_after = $5, \
                 lease_owner = $6, lease_until = $7, cancel_requested = $8, doc = $9 WHERE id = $1",
                params![
                    id.as_str(),
                    next.state.as_str(),
                    codec::micros(now),
                    next.lapses_at.map(codec::micros),
                    lease.start_after.map(codec::micros),
                    lease.owner.as_deref(),
                    lease.until.map(codec::micros),
                    lease.cancel_requested.as_deref(),
                    &doc,
                ],
            )?;
            if let Some(review) = &change.review {
                RUN_REVIEWS.insert(tx, id.as_str(), review)?;
            }
            if let Some(t) = &change.transcript {
                tx.execute(
                    "INSERT INTO run_transcripts (run_id, body, sha256) VALUES ($1, $2, $3)",
                    params![id.as_str(), &t.bytes, t.sha256.as_str()],
                )
                .map_err(duplicate(|| format!("transcript of run `{id}`")))?;
            }
            audit::append(tx, self.signer(), &change.audit, now)?;
            let (updated, _) =
                load_run(tx, id.as_str(), false)?.ok_or_else(|| run_not_found(id))?;
            Ok(updated)
        })
    }

    fn due_runs(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<RunId>> {
        let sql = format!(
            "SELECT id FROM runs WHERE {} ORDER BY created_at, id LIMIT $2",
            due_runs_condition("$1")
        );
        self.read(|tx| {
            tx.rows(
                &sql,
                params![codec::micros(now), i64::from(limit.max(1))],
                |r| {
                    let s: &str = r.get(0)?;
                    RunId::parse(s).map_err(|e| StoreError::Corrupt(format!("run id `{s}`: {e}")))
                },
            )
        })
    }

    fn run_transcript(&self, id: &RunId) -> StoreResult<Option<Vec<u8>>> {
        self.read(|tx| {
            tx.opt(
                "SELECT body FROM run_transcripts WHERE run_id = $1",
                params![id.as_str()],
                |r| r.get(0),
            )
        })
    }
}
