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
