//! Runs the shared conformance suite on SQLite and on PostgreSQL. PostgreSQL
//! tests need `AIRLOCK_TEST_PG_URL`; they fail (never skip) without it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{SystemTime, UNIX_EPOCH};

use airlock_core::audit_chain::CheckpointSigner;
use airlock_store::{PgStore, SqliteStore, Store};

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sqlite_store(signer: Option<CheckpointSigner>) -> Arc<dyn Store> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // A directory that does not exist yet, so `open` must create it.
    let dir = std::env::temp_dir().join(format!(
        "airlock-store-test-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    ));
    let path = dir.join("airlock.db");
    Arc::new(
        SqliteStore::open(path.to_str().expect("utf-8 temp path"), signer)
            .expect("open SQLite store"),
    )
}

fn pg_url() -> String {
    std::env::var("AIRLOCK_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "AIRLOCK_TEST_PG_URL is not set: run ./scripts/test (it starts PostgreSQL), or set \
             AIRLOCK_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/postgres to run the PostgreSQL conformance tests"
        )
    })
}

/// Schemas are named `t_<unix secs>_<random>` so old ones can be told apart and dropped.
fn drop_stale_schemas(admin: &mut postgres::Client) {
    let cutoff = unix_secs().saturating_sub(3600);
    let rows = admin
        .query(
            "SELECT nspname FROM pg_namespace WHERE nspname ~ '^t_[0-9]+_[0-9a-f]+$'",
            &[],
        )
        .expect("list test schemas");
    for row in rows {
        let name: String = row.get(0);
        let created: u64 = name
            .split('_')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX);
        if created < cutoff {
            let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"));
        }
    }
}

fn pg_store(signer: Option<CheckpointSigner>) -> Arc<dyn Store> {
    static CLEANUP: Once = Once::new();
    let url = pg_url();
    let mut admin = postgres::Client::connect(&url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to AIRLOCK_TEST_PG_URL ({url}): {e}"));
    CLEANUP.call_once(|| drop_stale_schemas(&mut admin));
    let schema = format!("t_{}_{:016x}", unix_secs(), rand::random::<u64>());
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .expect("create test schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    let store_url = format!("{url}{sep}options=-csearch_path%3D{schema}");
    Arc::new(PgStore::open(&store_url, signer).expect("open PostgreSQL store"))
}

mod sqlite {
    use super::sqlite_store;
    airlock_store::store_conformance_tests!(sqlite_store);
    airlock_store::run_store_conformance_tests!(sqlite_store);
}

mod pg {
    use super::pg_store;
    airlock_store::store_conformance_tests!(pg_store);
    airlock_store::run_store_conformance_tests!(pg_store);
}

#[test]
fn pg_store_tables_land_in_the_schema_named_by_the_url() {
    let url = pg_url();
    let schema = format!("t_{}_{:016x}", unix_secs(), rand::random::<u64>());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .expect("create schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    let store_url = format!("{url}{sep}options=-csearch_path%3D{schema}");
    drop(PgStore::open(&store_url, None).expect("open"));
    // Opening again (a second replica) finds the schema migrated and changes nothing.
    drop(PgStore::open(&store_url, None).expect("reopen"));
    let n: i64 = admin
        .query_one(
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'requests'",
            &[&schema],
        )
        .expect("count")
        .get(0);
    assert_eq!(n, 1);
    let _ = admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
}

/// The reconciler's due-work queries read only the due rows: with 200,000
/// requests of which 50 are due (100,000 old, 100,000 active grants ending
/// later), PostgreSQL plans no sequential scan of `requests`.
#[test]
fn pg_due_work_queries_use_indexes_with_200k_requests() {
    let url = pg_url();
    let schema = format!("t_{}_{:016x}", unix_secs(), rand::random::<u64>());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .expect("create schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    drop(
        PgStore::open(&format!("{url}{sep}options=-csearch_path%3D{schema}"), None).expect("open"),
    );
    let insert = |prefix: &str, state: &str, not_after: &str, created: i64, n: i64| {
        format!(
            "INSERT INTO {schema}.requests (id, entitlement, requester, reason, state, requested_duration, \
             not_before, not_after, breakglass, post_review_closed, grant_phase, grant_attempts, \
             created_at, updated_at, lapses_at) \
             SELECT '{prefix}' || g, 'e', 'u', 'r', '{state}', 60, 1, {not_after}, false, false, \
             CASE WHEN '{state}' = 'expired' THEN 'removed' ELSE 'applied' END, 0, {created} + g, {created} + g, 0 \
             FROM generate_series(1, {n}) g;"
        )
    };
    admin
        .batch_execute(&format!(
            "{}{}{}ANALYZE {schema}.requests;",
            insert("h", "expired", "2", 0, 100_000),
            insert("a", "active", "9000000000000000 + g", 200_000, 100_000),
            insert("d", "active", "5", 300_000, 50),
        ))
        .expect("fill requests");
    let (claim, next_due) = airlock_store::due_work_sql();
    let mut tx = admin.transaction().expect("tx");
    tx.batch_execute(&format!("SET LOCAL search_path = {schema}"))
        .expect("search_path");
    let plan = |tx: &mut postgres::Transaction,
                sql: &str,
                params: &[&(dyn postgres::types::ToSql + Sync)]|
     -> String {
        let rows = tx
            .query(&format!("EXPLAIN (ANALYZE, TIMING OFF) {sql}"), params)
            .unwrap_or_else(|e| panic!("explain {sql}: {e}"));
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let claimed = plan(&mut tx, &claim, &[&1000i64, &"explain", &2000i64, &64i64]);
    let due = plan(&mut tx, &next_due, &[]);
    tx.rollback().expect("rollback");
    println!("claim_work:\n{claimed}\n\nnext_due:\n{due}");
    for (what, p) in [("claim_work", &claimed), ("next_due", &due)] {
        assert!(!p.contains("Seq Scan"), "{what} scans requests:\n{p}");
        // Nothing reads rows it then throws away by the thousand.
        let wasted = p
            .lines()
            .filter_map(|l| l.split("Rows Removed by Filter: ").nth(1))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        assert!(wasted < 1000, "{what} filters {wasted} rows:\n{p}");
    }
    assert!(
        claimed.contains("rows=50"),
        "the claim takes the 50 due rows:\n{claimed}"
    );
    let _ = admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
}
