//! The PostgreSQL provider against a real server (`AIRLOCK_TEST_PG_URL`, set by
//! `./scripts/test`). Each test owns a random role prefix, so tests may run in
//! parallel against one server without touching each other's roles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_core::{ProviderName, RequestId, UserName};
use airlock_providers::postgres::{Config, PostgresProvider, Target};
use airlock_providers::{EntitlementTarget, GrantSpec, Provider, ProviderError};
use time::OffsetDateTime;
use tokio_postgres::{Client, NoTls};

fn pg_url() -> String {
    std::env::var("AIRLOCK_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "AIRLOCK_TEST_PG_URL is not set: run ./scripts/test (it starts a throwaway PostgreSQL \
             with password auth), or ./scripts/test -- cargo test -p airlock-providers"
        )
    })
}

/// A short random token, unique per call in this process.
fn token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed =
        (nanos ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n;
    format!("{:010x}", mixed & 0xff_ffff_ffff)
}

/// One test's world: an admin connection, a provider with its own prefix and
/// an entitlement role that does not start with that prefix.
struct Fixture {
    admin: Client,
    provider: Arc<PostgresProvider>,
    prefix: String,
    role: String,
    extra_roles: Vec<String>,
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn admin() -> Client {
    let config: tokio_postgres::Config = pg_url().parse().expect("AIRLOCK_TEST_PG_URL parses");
    connect(&config)
        .await
        .expect("connect to AIRLOCK_TEST_PG_URL")
}

fn provider_config(url: &str, prefix: &str) -> Config {
    Config {
        url: url.into(),
        role_prefix: Some(prefix.into()),
        ..Default::default()
    }
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with_limit(None).await
    }

    async fn with_limit(connection_limit: Option<u32>) -> Fixture {
        let t = token();
        let prefix = format!("t{t}_");
        let role = format!("e{t}_writer");
        let admin = admin().await;
        admin
            .batch_execute(&format!("CREATE ROLE {role} NOLOGIN"))
            .await
            .unwrap();
        let mut config = provider_config(&pg_url(), &prefix);
        config.connection_limit = connection_limit;
        let name = ProviderName::parse(&format!("pg-{t}")).unwrap();
        let provider = Arc::new(PostgresProvider::new(name, &config).unwrap());
        Fixture {
            admin,
            provider,
            prefix,
            role,
            extra_roles: vec![],
        }
    }

    fn grant(&self, not_after: OffsetDateTime) -> GrantSpec {
        let mut secret = [0u8; 32];
        for (i, b) in token().bytes().cycle().take(32).enumerate() {
            secret[i] = b.wrapping_mul(i as u8 + 1);
        }
        GrantSpec {
            request_id: RequestId::parse(&format!("req{}", token())).unwrap(),
            requester: UserName::parse("alice").unwrap(),
            email: Some("alice@example.com".into()),
            entitlement: airlock_core::EntitlementName::parse("payments-db-write").unwrap(),
            target: EntitlementTarget::Postgres(Target {
                role: self.role.clone(),
            }),
            not_after,
            secret,
        }
    }

    fn account(&self, g: &GrantSpec) -> String {
        format!("{}{}", self.prefix, g.request_id)
    }

    async fn role_exists(&self, name: &str) -> bool {
        self.admin
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
                &[&name],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// (can login, valid until as unix seconds, connection limit, member of the entitlement role)
    async fn role_state(&self, account: &str) -> (bool, Option<i64>, i32, bool) {
        let row = self
            .admin
            .query_one(
                "SELECT r.rolcanlogin, extract(epoch FROM r.rolvaliduntil)::int8, r.rolconnlimit,
                        EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                                 WHERE m.member = r.oid AND g.rolname = $2)
                   FROM pg_roles r WHERE r.rolname = $1",
                &[&account, &self.role],
            )
            .await
            .unwrap_or_else(|e| panic!("role {account} not found: {e}"));
        (row.get(0), row.get(1), row.get(2), row.get(3))
    }

    /// Connects as the grant's role with the password from `credentials`.
    async fn login(&self, g: &GrantSpec) -> Result<Client, tokio_postgres::Error> {
        let creds = self.provider.credentials_json(g);
        self.login_with(
            creds["username"].as_str().unwrap(),
            creds["password"].as_str().unwrap(),
        )
        .await
    }

    async fn login_with(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let mut config: tokio_postgres::Config = pg_url().parse().unwrap();
        config
            .user(user)
            .password(password)
            .connect_timeout(Duration::from_secs(5));
        connect(&config).await
    }

    /// Fails the test when the server lets anyone in without a password:
    /// VALID UNTIL is only enforced by password authentication.
    async fn assert_passwords_are_checked(&self, account: &str) {
        if let Ok(client) = self.login_with(account, "not-the-password").await {
            drop(client);
            panic!(
                "the server at AIRLOCK_TEST_PG_URL accepted a wrong password for {account}: its pg_hba.conf \
                 uses `trust`, under which VALID UNTIL is not enforced. Run ./scripts/test, which starts a \
                 cluster with `host all all 127.0.0.1/32 scram-sha-256`"
            );
        }
    }

    async fn cleanup(self) {
        for acct in self.provider.list_managed().await.unwrap() {
            self.provider.remove_account(&acct.account).await.unwrap();
        }
        for r in self.extra_roles.iter().chain([&self.role]) {
            let sql: String = self
                .admin
                .query_one("SELECT format('DROP ROLE IF EXISTS %I', $1::text)", &[r])
                .await
                .unwrap()
                .get(0);
            self.admin.batch_execute(&sql).await.unwrap();
        }
    }
}

fn in_secs(secs: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::seconds(secs)
}

fn refused_detail(e: ProviderError) -> String {
    match &e {
        ProviderError::Refused { .. } => {
            assert!(!e.is_retryable());
            e.to_string()
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn apply_creates_a_login_role_with_membership_and_valid_until() {
    let f = Fixture::with_limit(Some(3)).await;
    let g = f.grant(in_secs(3600));
    f.provider.apply(&g).await.unwrap();

    let (login, until, limit, member) = f.role_state(&f.account(&g)).await;
    assert!(login, "role can log in");
    assert_eq!(
        until,
        Some(g.not_after.unix_timestamp()),
        "VALID UNTIL is not_after (to the second)"
    );
    assert_eq!(limit, 3);
    assert!(member, "member of the entitlement role");
    f.cleanup().await;
}

#[tokio::test]
async fn apply_twice_is_fine_and_a_retry_refreshes_expiry_and_membership() {
    let f = Fixture::new().await;
    let mut g = f.grant(in_secs(600));
    let account = f.account(&g);
    f.provider.apply(&g).await.unwrap();
    f.provider.apply(&g).await.unwrap();
    assert_eq!(
        f.role_state(&account).await.2,
        10,
        "default connection limit"
    );

    // A crash left the role half-done: no membership, old expiry.
    f.admin
        .batch_execute(&format!("REVOKE {} FROM {account}", f.role))
        .await
        .unwrap();
    g.not_after = in_secs(1200);
    f.provider.apply(&g).await.unwrap();
    let (login, until, _, member) = f.role_state(&account).await;
    assert!(login && member);
    assert_eq!(until, Some(g.not_after.unix_timestamp()));
    f.cleanup().await;
}

#[tokio::test]
async fn derived_password_logs_in_until_native_expiry_ends_it_without_airlock() {
    let f = Fixture::new().await;
    let g = f.grant(in_secs(2));
    let account = f.account(&g);
    f.provider.apply(&g).await.unwrap();
    f.assert_passwords_are_checked(&account).await;

    let creds = f.provider.credentials_json(&g);
    assert_eq!(creds["username"], account.as_str());
    assert_eq!(
        creds["expires_at"],
        g.not_after
            .replace_nanosecond(0)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    let client = f
        .login(&g)
        .await
        .expect("login with the derived password while valid");
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, account);
    assert!(client
        .query_one("SELECT pg_has_role(current_user, $1, 'MEMBER')", &[&f.role])
        .await
        .unwrap()
        .get::<_, bool>(0));
    drop(client);

    // airlock does nothing now; the server alone must end access.
    let wait = (g.not_after.replace_nanosecond(0).unwrap() - OffsetDateTime::now_utc())
        .whole_milliseconds();
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64 + 1200)).await;
    let err = f
        .login(&g)
        .await
        .expect_err("login must fail after VALID UNTIL");
    let msg = err
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| err.to_string());
    assert!(msg.contains("password authentication failed"), "{msg}");
    assert!(
        f.role_exists(&account).await,
        "the role is still there: expiry was native"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn remove_terminates_a_live_session_keeps_its_objects_and_drops_the_role() {
    let f = Fixture::new().await;
    let g = f.grant(in_secs(3600));
    let account = f.account(&g);
    let schema = format!("{}s", f.role);
    f.admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; GRANT USAGE, CREATE ON SCHEMA {schema} TO {}",
            f.role
        ))
        .await
        .unwrap();
    f.provider.apply(&g).await.unwrap();
    let session = f.login(&g).await.expect("login");
    session
        .batch_execute(&format!(
            "CREATE TABLE {schema}.made_during_incident (x int)"
        ))
        .await
        .unwrap();

    f.provider.remove(&g).await.unwrap();
    assert!(!f.role_exists(&account).await, "role dropped");
    let deadline = Instant::now() + Duration::from_secs(5);
    while session.simple_query("SELECT 1").await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the live session was not terminated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let owner: String = f
        .admin
        .query_one(
            &format!("SELECT tableowner::text FROM pg_tables WHERE schemaname = '{schema}'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        owner, "postgres",
        "the grantee's table is kept, owned by airlock's user"
    );
    assert!(f.login(&g).await.is_err(), "cannot log in after remove");

    f.provider.remove(&g).await.unwrap();
    f.admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    f.cleanup().await;
}

#[tokio::test]
async fn remove_twice_and_remove_of_a_never_applied_grant_are_fine() {
    let f = Fixture::new().await;
    let g = f.grant(in_secs(60));
    f.provider.remove(&g).await.unwrap();
    f.provider.apply(&g).await.unwrap();
    f.provider.remove(&g).await.unwrap();
    f.provider.remove(&g).await.unwrap();
    assert!(!f.role_exists(&f.account(&g)).await);
    f.cleanup().await;
}

#[tokio::test]
async fn list_managed_finds_only_prefixed_roles_and_parses_request_ids() {
    let mut f = Fixture::new().await;
    let (a, b) = (f.grant(in_secs(60)), f.grant(in_secs(60)));
    f.provider.apply(&a).await.unwrap();
    f.provider.apply(&b).await.unwrap();
    // `_` is a LIKE wildcard: a name differing only there must not match.
    let lookalike = format!("{}x{}", f.prefix.trim_end_matches('_'), "lookalike1");
    let odd = format!("{}Not-An-Id", f.prefix);
    for r in [&lookalike, &odd] {
        let sql: String = f
            .admin
            .query_one("SELECT format('CREATE ROLE %I', $1::text)", &[r])
            .await
            .unwrap()
            .get(0);
        f.admin.batch_execute(&sql).await.unwrap();
        f.extra_roles.push(r.clone());
    }

    let mut found = f.provider.list_managed().await.unwrap();
    found.sort_by(|x, y| x.account.cmp(&y.account));
    let mut want = vec![
        (f.account(&a), Some(a.request_id.clone())),
        (f.account(&b), Some(b.request_id.clone())),
        (odd.clone(), None),
    ];
    want.sort();
    let got: Vec<_> = found
        .into_iter()
        .map(|m| (m.account, m.request_id))
        .collect();
    assert_eq!(got, want);
    f.cleanup().await;
}

#[tokio::test]
async fn remove_account_refuses_names_outside_the_prefix_and_removes_hostile_ones_inside_it() {
    let f = Fixture::new().await;
    let err = f.provider.remove_account(&f.role).await.unwrap_err();
    assert!(refused_detail(err).contains("role_prefix"));
    assert!(
        f.role_exists(&f.role).await,
        "the entitlement role is untouched"
    );
    assert!(
        f.provider.remove_account(&f.prefix).await.is_err(),
        "the bare prefix is not an account"
    );

    let hostile = format!("{}x\"; DROP ROLE {}; --'", f.prefix, f.role);
    let sql: String = f
        .admin
        .query_one(
            "SELECT format('CREATE ROLE %I LOGIN', $1::text)",
            &[&hostile],
        )
        .await
        .unwrap()
        .get(0);
    f.admin.batch_execute(&sql).await.unwrap();
    assert!(f
        .provider
        .list_managed()
        .await
        .unwrap()
        .iter()
        .any(|m| m.account == hostile && m.request_id.is_none()));
    f.provider.remove_account(&hostile).await.unwrap();
    assert!(!f.role_exists(&hostile).await);
    assert!(
        f.role_exists(&f.role).await,
        "the quoted name did not inject"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn missing_entitlement_role_is_refused_with_a_hint() {
    let f = Fixture::new().await;
    let mut g = f.grant(in_secs(60));
    g.target = EntitlementTarget::Postgres(Target {
        role: "payments_writer_missing".into(),
    });
    let msg = refused_detail(f.provider.apply(&g).await.unwrap_err());
    assert!(
        msg.contains("role payments_writer_missing does not exist")
            && msg.contains("CREATE ROLE payments_writer_missing NOLOGIN")
            && msg.contains("fix the entitlement"),
        "{msg}"
    );
    assert!(!f.role_exists(&f.account(&g)).await, "nothing was created");
    f.cleanup().await;
}

#[tokio::test]
async fn hostile_entitlement_role_names_are_quoted_not_executed() {
    let mut f = Fixture::new().await;
    let victim = f.role.clone();
    let hostile = format!("{victim}\"; DROP ROLE {victim}; --'x'");
    let sql: String = f
        .admin
        .query_one(
            "SELECT format('CREATE ROLE %I NOLOGIN', $1::text)",
            &[&hostile],
        )
        .await
        .unwrap()
        .get(0);
    f.admin.batch_execute(&sql).await.unwrap();
    f.extra_roles.push(hostile.clone());

    let mut g = f.grant(in_secs(60));
    g.target = EntitlementTarget::Postgres(Target {
        role: hostile.clone(),
    });
    f.provider.apply(&g).await.unwrap();
    f.provider.apply(&g).await.unwrap();
    let member: bool = f
        .admin
        .query_one(
            "SELECT pg_has_role($1, $2, 'MEMBER')",
            &[&f.account(&g), &hostile],
        )
        .await
        .unwrap()
        .get(0);
    assert!(member, "granted exactly the oddly named role");
    assert!(f.role_exists(&victim).await);

    g.target = EntitlementTarget::Postgres(Target {
        role: format!("nope'); DROP ROLE {victim}; --"),
    });
    f.provider.remove(&g).await.unwrap();
    assert!(f.provider.apply(&g).await.is_err());
    assert!(f.role_exists(&victim).await);
    assert!(
        RequestId::parse("abc'def\"gh").is_err(),
        "request ids cannot carry quotes at all"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn concurrent_grants_share_one_connection() {
    let f = Fixture::new().await;
    let grants: Vec<_> = (0..16).map(|_| f.grant(in_secs(60))).collect();
    let mut tasks = Vec::new();
    for g in grants.clone() {
        let p = f.provider.clone();
        tasks.push(tokio::spawn(async move {
            p.apply(&g).await?;
            p.apply(&g).await?;
            p.remove(&g).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let backends: i64 = f
        .admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&format!("airlock {}", f.provider.name())],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(backends, 1);
    assert!(f.provider.list_managed().await.unwrap().is_empty());
    f.cleanup().await;
}

#[tokio::test]
async fn a_killed_connection_is_replaced_transparently() {
    let f = Fixture::new().await;
    f.provider.check().await.unwrap();
    let app = format!("airlock {}", f.provider.name());
    let killed: i64 = f
        .admin
        .query_one("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", &[&app])
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let g = f.grant(in_secs(60));
    f.provider.apply(&g).await.unwrap();
    assert!(f.role_exists(&f.account(&g)).await);
    f.cleanup().await;
}

#[tokio::test]
async fn check_passes_against_a_live_server() {
    let f = Fixture::new().await;
    f.provider.check().await.unwrap();
    f.cleanup().await;
}

#[tokio::test]
async fn unreachable_server_fails_fast_and_is_retryable() {
    // Needs no database: nothing listens on port 1.
    let name = ProviderName::parse("pg-main").unwrap();
    let p = PostgresProvider::new(
        name,
        &provider_config("postgres://postgres@127.0.0.1:1/postgres", "x_"),
    )
    .unwrap();
    let started = Instant::now();
    let err = p.check().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .starts_with("provider pg-main unreachable: "),
        "{err}"
    );
    let g = GrantSpec {
        request_id: RequestId::parse("abcdefgh1").unwrap(),
        requester: UserName::parse("alice").unwrap(),
        email: None,
        entitlement: airlock_core::EntitlementName::parse("payments-db-write").unwrap(),
        target: EntitlementTarget::Postgres(Target { role: "r".into() }),
        not_after: in_secs(60),
        secret: [1; 32],
    };
    assert!(matches!(
        p.apply(&g).await,
        Err(ProviderError::Unreachable { .. })
    ));
    assert!(matches!(
        p.remove(&g).await,
        Err(ProviderError::Unreachable { .. })
    ));
    assert!(matches!(
        p.list_managed().await,
        Err(ProviderError::Unreachable { .. })
    ));
}

#[tokio::test]
async fn a_role_held_by_objects_in_another_database_is_locked_out_and_named() {
    let f = Fixture::new().await;
    let g = f.grant(in_secs(3600));
    let account = f.account(&g);
    f.provider.apply(&g).await.unwrap();
    let db = format!("{}db", f.prefix);
    f.admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let mut other: tokio_postgres::Config = pg_url().parse().unwrap();
    other.dbname(&db);
    let other = connect(&other).await.unwrap();
    other
        .batch_execute(&format!(
            "CREATE TABLE kept (x int); ALTER TABLE kept OWNER TO {account}"
        ))
        .await
        .unwrap();

    let msg = refused_detail(f.provider.remove(&g).await.unwrap_err());
    assert!(msg.contains(&db), "the error names the database: {msg}");
    let (login, ..) = f.role_state(&account).await;
    assert!(
        !login,
        "the role can no longer log in even though it could not be dropped"
    );

    drop(other);
    tokio::time::sleep(Duration::from_millis(200)).await;
    f.admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
    f.provider.remove(&g).await.unwrap();
    assert!(!f.role_exists(&account).await);
    f.cleanup().await;
}
