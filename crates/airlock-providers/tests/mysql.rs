//! The MariaDB provider against a real server (`AIRLOCK_TEST_MYSQL_URL`, set by
//! `./scripts/test`, which starts a throwaway MariaDB with the event scheduler
//! on). Each test owns a random prefix, role, schema and its own airlock user
//! holding exactly the privileges docs/providers/mysql.md lists, so tests run
//! in parallel without touching each other and the documented grants are
//! proven sufficient.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use airlock_core::{ProviderName, RequestId, UserName};
use airlock_providers::mysql::MysqlProvider;
use airlock_providers::mysql::{Config, Target};
use airlock_providers::{CatalogTarget, EntitlementTarget};
use airlock_providers::{GrantSpec, Provider, ProviderError};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use time::OffsetDateTime;

fn mysql_url() -> String {
    std::env::var("AIRLOCK_TEST_MYSQL_URL").unwrap_or_else(|_| {
        panic!(
            "AIRLOCK_TEST_MYSQL_URL is not set: run ./scripts/test (it starts a throwaway MariaDB with \
             the event scheduler on), or ./scripts/test -- cargo test -p airlock-providers --test mysql"
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

fn base_opts() -> Opts {
    let opts = Opts::from_url(&mysql_url()).expect("AIRLOCK_TEST_MYSQL_URL parses");
    OptsBuilder::from_opts(opts).prefer_socket(false).into()
}

async fn admin() -> Conn {
    let mut c = Conn::new(base_opts())
        .await
        .expect("connect to AIRLOCK_TEST_MYSQL_URL");
    c.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .unwrap();
    c
}

/// Connects as `user` with `password`, in `schema` if given.
async fn login_as(user: &str, password: &str) -> Result<Conn, mysql_async::Error> {
    let opts = OptsBuilder::from_opts(base_opts())
        .user(Some(user))
        .pass(Some(password))
        .db_name(None::<String>);
    match tokio::time::timeout(Duration::from_secs(10), Conn::new(opts)).await {
        Ok(r) => r,
        Err(_) => panic!("login as {user} did not finish within 10s"),
    }
}

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
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

/// One test's world: an admin connection, an airlock user with the documented
/// privileges, a provider connecting as it, an entitlement role (administered
/// by the airlock user) that may write `schema.t` and nothing else.
struct Fixture {
    admin: Conn,
    t: String,
    provider: Arc<MysqlProvider>,
    prefix: String,
    role: String,
    schema: String,
    airlock_user: String,
    airlock_password: String,
    /// Made by hand, dropped by the admin at cleanup: `name`@'host' / `name`.
    extra_users: Vec<String>,
    extra_roles: Vec<String>,
    /// Their bare names (cleanup leaves them to the admin).
    extra_names: Vec<String>,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with(|_| {}).await
    }

    async fn with(tweak: impl FnOnce(&mut Config)) -> Fixture {
        let t = token();
        let mut admin = admin().await;
        let (prefix, role, schema) = (format!("t{t}_"), format!("e{t}_writer"), format!("s{t}"));
        let (airlock_user, airlock_password) = (format!("a{t}_admin"), format!("pw-{t}"));
        admin
            .query_drop(format!(
                "CREATE USER `{airlock_user}`@`%` IDENTIFIED BY '{airlock_password}'; \
                 GRANT CREATE USER, CONNECTION ADMIN ON *.* TO `{airlock_user}`@`%`; \
                 GRANT EVENT ON `mysql`.* TO `{airlock_user}`@`%`; \
                 GRANT SELECT ON mysql.user TO `{airlock_user}`@`%`; \
                 GRANT SELECT ON mysql.roles_mapping TO `{airlock_user}`@`%`; \
                 GRANT UPDATE ON mysql.* TO `{airlock_user}`@`%`; \
                 CREATE ROLE `{role}` WITH ADMIN `{airlock_user}`@`%`; \
                 CREATE DATABASE `{schema}`; \
                 CREATE TABLE `{schema}`.t (x int); CREATE TABLE `{schema}`.other (x int); \
                 GRANT SELECT, INSERT ON `{schema}`.t TO `{role}`"
            ))
            .await
            .unwrap();
        let mut config = Config {
            url: airlock_url(&airlock_user, &airlock_password, ""),
            role_prefix: Some(prefix.clone()),
            ..Default::default()
        };
        tweak(&mut config);
        let name = ProviderName::parse(&format!("db-{t}")).unwrap();
        let provider = Arc::new(MysqlProvider::new(name, &config).unwrap());
        Fixture {
            admin,
            t,
            provider,
            prefix,
            role,
            schema,
            airlock_user,
            airlock_password,
            extra_users: vec![],
            extra_roles: vec![],
            extra_names: vec![],
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
            target: EntitlementTarget::Mysql(Target {
                role: self.role.clone(),
            }),
            not_after,
            secret,
        }
    }

    fn account(&self, g: &GrantSpec) -> String {
        format!("{}{}", self.prefix, g.request_id)
    }

    async fn user_exists(&mut self, user: &str) -> bool {
        let n: Option<i64> = self
            .admin
            .exec_first(
                "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = '%'",
                (user,),
            )
            .await
            .unwrap();
        n == Some(1)
    }

    /// (MAX_USER_CONNECTIONS, default role, holds the entitlement role)
    async fn user_state(&mut self, user: &str) -> (i64, String, bool) {
        let row: Option<(i64, String, i64)> = self
            .admin
            .exec_first(
                "SELECT u.max_user_connections, u.default_role, \
                        (SELECT COUNT(*) FROM mysql.roles_mapping m \
                          WHERE m.User = u.User AND m.Host = u.Host AND m.Role = ?) \
                   FROM mysql.user u WHERE u.User = ? AND u.Host = '%'",
                (&self.role, user),
            )
            .await
            .unwrap();
        let (limit, default_role, member) =
            row.unwrap_or_else(|| panic!("user {user}@% not found"));
        (limit, default_role, member == 1)
    }

    /// The expiry event's time (UTC text) and schema, if it exists.
    async fn event_at(&mut self, schema: &str, user: &str) -> Option<String> {
        self.admin
            .exec_first(
                "SELECT DATE_FORMAT(EXECUTE_AT, '%Y-%m-%d %H:%i:%s') FROM information_schema.EVENTS \
                  WHERE EVENT_SCHEMA = ? AND EVENT_NAME = ? AND TIME_ZONE = '+00:00'",
                (schema, user),
            )
            .await
            .unwrap()
    }

    /// Connects with the credentials the provider hands out.
    async fn login(&self, g: &GrantSpec) -> Result<Conn, mysql_async::Error> {
        let creds = self.provider.credentials_json(g);
        login_as(
            creds["username"].as_str().unwrap(),
            creds["password"].as_str().unwrap(),
        )
        .await
    }

    /// Creates a user (or role, `host` None) with any name, as the admin.
    async fn create_user(&mut self, name: &str, host: Option<&str>) {
        let quoted = format!("`{}`", name.replace('`', "``"));
        let sql = match host {
            Some(h) => format!("CREATE USER {quoted}@'{h}'"),
            None => format!("CREATE ROLE {quoted}"),
        };
        self.admin.query_drop(sql).await.unwrap();
        self.extra_names.push(name.to_owned());
        match host {
            Some(h) => self.extra_users.push(format!("{quoted}@'{h}'")),
            None => self.extra_roles.push(quoted),
        }
    }

    /// Runs statements as airlock's user, which alone administers the role.
    async fn as_airlock(&self, sql: String) {
        let mut c = login_as(&self.airlock_user, &self.airlock_password)
            .await
            .unwrap();
        c.query_drop(sql).await.unwrap();
    }

    async fn cleanup(mut self) {
        for acct in self.provider.list_managed().await.unwrap() {
            if !self.extra_names.contains(&acct.account) {
                self.provider.remove_account(&acct.account).await.unwrap();
            }
        }
        let mut sql = format!(
            "DROP USER IF EXISTS `{}`@`%`; DROP ROLE IF EXISTS `{}`; DROP DATABASE IF EXISTS `{}`",
            self.airlock_user, self.role, self.schema
        );
        for u in &self.extra_users {
            sql.push_str(&format!("; DROP USER IF EXISTS {u}"));
        }
        for r in &self.extra_roles {
            sql.push_str(&format!("; DROP ROLE IF EXISTS {r}"));
        }
        self.admin.query_drop(sql).await.unwrap();
    }
}

fn airlock_url(user: &str, password: &str, schema: &str) -> String {
    let opts = base_opts();
    format!(
        "mysql://{user}:{password}@{}:{}/{schema}",
        opts.ip_or_hostname(),
        opts.tcp_port()
    )
}

/// Serializes the tests that depend on the server-wide event scheduler, across
/// processes (nextest runs each test in its own): a MariaDB named lock held by
/// the admin connection.
async fn scheduler_lock(admin: &mut Conn) {
    let got: Option<i64> = admin
        .query_first("SELECT GET_LOCK('airlock_test_event_scheduler', 120)")
        .await
        .unwrap();
    assert_eq!(got, Some(1), "could not take the event scheduler test lock");
}

#[tokio::test]
async fn apply_creates_a_user_with_default_role_connection_limit_and_expiry_event() {
    let mut f = Fixture::with(|c| c.connection_limit = Some(3)).await;
    let g = f.grant(in_secs(3600));
    let user = f.account(&g);
    f.provider.apply(&g).await.unwrap();

    let (limit, default_role, member) = f.user_state(&user).await;
    assert_eq!(limit, 3);
    assert_eq!(default_role, f.role);
    assert!(member);
    let at = g
        .not_after
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap();
    assert_eq!(
        f.event_at("mysql", &user).await.as_deref(),
        Some(at.as_str()),
        "the event fires at not_after in UTC, to the second"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn derived_password_logs_in_with_exactly_the_roles_privileges() {
    let f = Fixture::new().await;
    let g = f.grant(in_secs(3600));
    let user = f.account(&g);
    f.provider.apply(&g).await.unwrap();

    let creds = f.provider.credentials_json(&g);
    assert_eq!(creds["username"], user.as_str());
    let port = base_opts().tcp_port();
    assert_eq!(creds["port"], port);
    assert_eq!(
        creds["expires_at"],
        g.not_after
            .replace_nanosecond(0)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    let wrong = login_as(&user, "not-the-password").await.unwrap_err();
    assert_eq!(server_code(&wrong), Some(1045), "{wrong}");

    let mut c = f.login(&g).await.expect("login with the derived password");
    let (who, role): (String, String) = c
        .query_first("SELECT CURRENT_USER(), CURRENT_ROLE()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(who, format!("{user}@%"));
    assert_eq!(role, f.role, "the entitlement role is active by default");
    c.query_drop(format!("INSERT INTO `{}`.t VALUES (1)", f.schema))
        .await
        .expect("the role may write t");
    let denied = c
        .query_drop(format!("INSERT INTO `{}`.other VALUES (1)", f.schema))
        .await
        .unwrap_err();
    assert_eq!(server_code(&denied), Some(1142), "{denied}");
    drop(c);
    f.cleanup().await;
}

#[tokio::test]
async fn max_user_connections_caps_concurrent_sessions() {
    let f = Fixture::with(|c| c.connection_limit = Some(2)).await;
    let g = f.grant(in_secs(3600));
    f.provider.apply(&g).await.unwrap();
    let first = f.login(&g).await.expect("first session");
    let second = f.login(&g).await.expect("second session");
    let third = f
        .login(&g)
        .await
        .expect_err("a third session exceeds the limit");
    assert!(
        third.to_string().contains("max_user_connections"),
        "{third}"
    );
    drop((first, second));
    f.cleanup().await;
}

#[tokio::test]
async fn apply_twice_is_idempotent_and_a_retry_repairs_a_half_done_grant() {
    let mut f = Fixture::new().await;
    let mut g = f.grant(in_secs(600));
    let user = f.account(&g);
    f.provider.apply(&g).await.unwrap();
    let before = (
        show_grants(&mut f.admin, &user).await,
        f.user_state(&user).await,
        f.event_at("mysql", &user).await,
    );
    f.provider.apply(&g).await.unwrap();
    let after = (
        show_grants(&mut f.admin, &user).await,
        f.user_state(&user).await,
        f.event_at("mysql", &user).await,
    );
    assert_eq!(before, after, "a second apply changes nothing");
    assert_eq!(after.1 .0, 10, "default connection limit");

    // A crash after CREATE USER: another password, no role, no default, no event.
    f.as_airlock(format!(
        "REVOKE `{role}` FROM `{user}`@`%`; SET DEFAULT ROLE NONE FOR `{user}`@`%`; \
             ALTER USER `{user}`@`%` IDENTIFIED BY 'other' WITH MAX_USER_CONNECTIONS 1; \
             DROP EVENT mysql.`{user}`",
        role = f.role
    ))
    .await;
    g.not_after = in_secs(1200);
    f.provider.apply(&g).await.unwrap();
    let (limit, default_role, member) = f.user_state(&user).await;
    assert_eq!(
        (limit, default_role.as_str(), member),
        (10, f.role.as_str(), true)
    );
    assert!(
        f.event_at("mysql", &user).await.is_some(),
        "event recreated"
    );
    f.login(&g).await.expect("the derived password works again");
    f.cleanup().await;
}

async fn show_grants(admin: &mut Conn, user: &str) -> Vec<String> {
    admin
        .query(format!("SHOW GRANTS FOR `{user}`@`%`"))
        .await
        .unwrap()
}

#[tokio::test]
async fn remove_kills_a_live_session_and_drops_user_and_event() {
    let mut f = Fixture::new().await;
    let g = f.grant(in_secs(3600));
    let user = f.account(&g);
    f.provider.apply(&g).await.unwrap();
    let mut session = f.login(&g).await.expect("login");
    session.query_drop("SELECT 1").await.unwrap();

    f.provider.remove(&g).await.unwrap();
    assert!(!f.user_exists(&user).await, "user dropped");
    assert!(f.event_at("mysql", &user).await.is_none(), "event dropped");
    let deadline = Instant::now() + Duration::from_secs(5);
    while session.query_drop("SELECT 1").await.is_ok() {
        assert!(Instant::now() < deadline, "the live session was not killed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = f.login(&g).await.expect_err("cannot log in after remove");
    assert_eq!(server_code(&err), Some(1045), "{err}");

    f.provider.remove(&g).await.expect("remove twice is fine");
    let never = f.grant(in_secs(60));
    f.provider
        .remove(&never)
        .await
        .expect("remove of a never-applied grant is fine");
    f.cleanup().await;
}

#[tokio::test]
async fn native_expiry_drops_the_user_and_kills_its_session_without_airlock() {
    let mut f = Fixture::new().await;
    scheduler_lock(&mut f.admin).await;
    f.provider.check().await.unwrap();
    assert_eq!(
        f.provider.native_expiry_enabled(),
        Some(true),
        "the test server must run with the event scheduler ON: use ./scripts/test"
    );
    let g = f.grant(in_secs(3));
    let user = f.account(&g);
    f.provider.apply(&g).await.unwrap();
    let mut session = f.login(&g).await.expect("login while valid");
    session.query_drop("SELECT 1").await.unwrap();

    // airlock makes no call from now on; the server alone must end access.
    let wait = (g.not_after - OffsetDateTime::now_utc()).whole_milliseconds();
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.user_exists(&user).await {
        assert!(
            Instant::now() < deadline,
            "the event did not drop the user by not_after + 10s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while session.query_drop("SELECT 1").await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the event did not kill the live session"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = f.login(&g).await.expect_err("login fails after not_after");
    assert_eq!(server_code(&err), Some(1045), "{err}");
    assert!(
        f.event_at("mysql", &user).await.is_none(),
        "the one-shot event is gone (ON COMPLETION NOT PRESERVE)"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn without_the_event_scheduler_check_passes_apply_works_and_it_warns_once() {
    let mut f = Fixture::new().await;
    scheduler_lock(&mut f.admin).await;
    f.admin
        .query_drop("SET GLOBAL event_scheduler = OFF")
        .await
        .unwrap();
    let logs = Arc::new(StdMutex::new(Vec::<u8>::new()));
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || LogSink(sink.clone()))
        .finish();
    let outcome = {
        let _guard = tracing::subscriber::set_default(subscriber);
        let p = f.provider.clone();
        let g = f.grant(in_secs(3600));
        let result = async {
            p.check().await?;
            p.check().await?;
            p.apply(&g).await?;
            Ok::<_, ProviderError>(())
        }
        .await;
        let login = f.login(&g).await.map(drop);
        (result, login, p.native_expiry_enabled(), g)
    };
    f.admin
        .query_drop("SET GLOBAL event_scheduler = ON")
        .await
        .unwrap();
    let (result, login, enabled, g) = outcome;
    result.expect("check and apply work without the scheduler");
    login.expect("the grant works");
    assert_eq!(enabled, Some(false));
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert_eq!(
        logs.matches("event scheduler is OFF").count(),
        1,
        "warned exactly once: {logs}"
    );
    assert!(logs.contains("SET GLOBAL event_scheduler = ON") && logs.contains("my.cnf"));
    f.provider.remove(&g).await.unwrap();
    f.cleanup().await;
}

/// Collects formatted log lines for assertions.
struct LogSink(Arc<StdMutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn events_go_to_the_schema_the_url_names() {
    let t = token();
    let mut f = Fixture::new().await;
    let events = format!("ev{t}");
    f.admin
        .query_drop(format!(
            "CREATE DATABASE `{events}`; GRANT EVENT ON `{events}`.* TO `{}`@`%`",
            f.airlock_user
        ))
        .await
        .unwrap();
    let url = airlock_url(&f.airlock_user, &f.airlock_password, &events);
    let p = MysqlProvider::new(
        ProviderName::parse("db-events").unwrap(),
        &Config {
            url,
            role_prefix: Some(f.prefix.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let g = f.grant(in_secs(600));
    p.apply(&g).await.unwrap();
    assert!(f.event_at(&events, &f.account(&g)).await.is_some());
    assert!(f.event_at("mysql", &f.account(&g)).await.is_none());
    p.remove(&g).await.unwrap();
    assert!(f.event_at(&events, &f.account(&g)).await.is_none());
    f.admin
        .query_drop(format!("DROP DATABASE `{events}`"))
        .await
        .unwrap();
    f.cleanup().await;
}

#[tokio::test]
async fn list_managed_finds_prefixed_users_and_orphan_events_only() {
    let mut f = Fixture::new().await;
    let (a, b, c) = (
        f.grant(in_secs(600)),
        f.grant(in_secs(600)),
        f.grant(in_secs(600)),
    );
    for g in [&a, &b, &c] {
        f.provider.apply(g).await.unwrap();
    }
    // c's user vanished by hand; its expiry event is still airlock's to clean up.
    f.admin
        .query_drop(format!("DROP USER `{}`@`%`", f.account(&c)))
        .await
        .unwrap();
    // `_` is a LIKE wildcard: a name differing only there must not match.
    let lookalike = format!("{}x{}", f.prefix.trim_end_matches('_'), "lookalike1");
    let odd = format!("{}Not-An-Id", f.prefix);
    let local_only = format!("{}localonly1", f.prefix);
    let role = format!("{}arole", f.prefix);
    f.create_user(&lookalike, Some("%")).await;
    f.create_user(&odd, Some("%")).await;
    f.create_user(&local_only, Some("localhost")).await;
    f.create_user(&role, None).await;

    let got: Vec<_> = f
        .provider
        .list_managed()
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.account, m.request_id))
        .collect();
    let mut want = vec![
        (f.account(&a), Some(a.request_id.clone())),
        (f.account(&b), Some(b.request_id.clone())),
        (f.account(&c), Some(c.request_id.clone())),
        (odd.clone(), None),
    ];
    want.sort();
    assert_eq!(got, want);

    f.provider.remove_account(&f.account(&c)).await.unwrap();
    assert!(f.event_at("mysql", &f.account(&c)).await.is_none());
    f.cleanup().await;
}

#[tokio::test]
async fn remove_account_refuses_outside_the_prefix_airlock_itself_and_superusers() {
    let mut f = Fixture::new().await;
    let err = f.provider.remove_account(&f.role).await.unwrap_err();
    assert!(refused_detail(err).contains("role_prefix"));
    assert!(f.provider.remove_account(&f.prefix).await.is_err());

    let boss = format!("{}boss", f.prefix);
    f.create_user(&boss, Some("%")).await;
    f.admin
        .query_drop(format!("GRANT SUPER ON *.* TO `{boss}`@`%`"))
        .await
        .unwrap();
    let msg = refused_detail(f.provider.remove_account(&boss).await.unwrap_err());
    assert!(msg.contains("SUPER"), "{msg}");
    assert!(f.user_exists(&boss).await);

    // A provider whose prefix also covers airlock's own user never lists nor removes it.
    let own_prefix = format!("a{}_", f.t);
    let p = MysqlProvider::new(
        ProviderName::parse("db-own").unwrap(),
        &Config {
            url: airlock_url(&f.airlock_user, &f.airlock_password, ""),
            role_prefix: Some(own_prefix),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(p.list_managed().await.unwrap().is_empty());
    let msg = refused_detail(p.remove_account(&f.airlock_user).await.unwrap_err());
    assert!(msg.contains("connects as"), "{msg}");
    let airlock_user = f.airlock_user.clone();
    assert!(f.user_exists(&airlock_user).await);
    f.cleanup().await;
}

#[tokio::test]
async fn hostile_names_are_quoted_not_executed() {
    let mut f = Fixture::new().await;
    let victim = format!("v{}", f.t);
    f.create_user(&victim, Some("%")).await;

    // A drift account inside the prefix whose name tries to break out.
    let hostile_user = format!("{}x`@`%`; DROP USER `{victim}`@`%`; -- '\"\\", f.prefix);
    f.create_user(&hostile_user, Some("%")).await;
    assert!(f
        .provider
        .list_managed()
        .await
        .unwrap()
        .iter()
        .any(|m| m.account == hostile_user && m.request_id.is_none()));
    f.provider.remove_account(&hostile_user).await.unwrap();
    assert!(!f.user_exists(&hostile_user).await);
    assert!(
        f.user_exists(&victim).await,
        "the quoted name did not inject"
    );

    // An entitlement role with backticks and quotes in its name.
    let hostile_role = format!("{}`; DROP USER `{victim}`@`%`; -- '", f.role);
    let q = format!("`{}`", hostile_role.replace('`', "``"));
    f.admin
        .query_drop(format!(
            "CREATE ROLE {q} WITH ADMIN `{}`@`%`",
            f.airlock_user
        ))
        .await
        .unwrap();
    f.extra_roles.push(q);
    let mut g = f.grant(in_secs(600));
    g.target = EntitlementTarget::Mysql(Target {
        role: hostile_role.clone(),
    });
    f.provider.apply(&g).await.unwrap();
    f.provider.apply(&g).await.unwrap();
    let default_role: Option<String> = f
        .admin
        .exec_first(
            "SELECT default_role FROM mysql.user WHERE User = ? AND Host = '%'",
            (f.account(&g),),
        )
        .await
        .unwrap();
    assert_eq!(default_role.as_deref(), Some(hostile_role.as_str()));
    assert!(f.user_exists(&victim).await);
    f.provider.remove(&g).await.unwrap();
    f.cleanup().await;
}

#[tokio::test]
async fn standing_access_reports_holders_outside_airlock_only() {
    let mut f = Fixture::new().await;
    let g = f.grant(in_secs(600));
    f.provider.apply(&g).await.unwrap();
    let (bob, carol, team) = (
        format!("bob{}", f.t),
        format!("carol{}", f.t),
        format!("team{}", f.t),
    );
    f.create_user(&bob, Some("%")).await;
    f.create_user(&carol, Some("10.0.0.%")).await;
    // Roles made WITH ADMIN airlock's user: their creator (root) would
    // otherwise hold them too, and rightly be reported.
    f.admin
        .query_drop(format!(
            "CREATE ROLE `{team}` WITH ADMIN `{}`@`%`",
            f.airlock_user
        ))
        .await
        .unwrap();
    f.extra_roles.push(format!("`{team}`"));
    f.as_airlock(format!(
        "GRANT `{role}` TO `{bob}`@`%`; GRANT `{role}` TO `{team}`; \
         GRANT `{team}` TO `{carol}`@`10.0.0.%`",
        role = f.role
    ))
    .await;
    let entitlement = CatalogTarget {
        entitlement: airlock_core::EntitlementName::parse("payments-db-write").unwrap(),
        provider: f.provider.name().clone(),
        target: EntitlementTarget::Mysql(Target {
            role: f.role.clone(),
        }),
    };
    let got = f.provider.standing_access(&[entitlement]).await.unwrap();
    let got: Vec<_> = got
        .iter()
        .map(|a| {
            (
                a.entitlement.as_str(),
                a.principal.as_str(),
                a.detail.as_str(),
            )
        })
        .collect();
    let bob_p = format!("{bob}@%");
    let carol_p = format!("{carol}@10.0.0.%");
    let direct = format!("user holds role {} outside airlock", f.role);
    let via = format!(
        "user holds role {} through role {team}, outside airlock",
        f.role
    );
    assert_eq!(
        got,
        vec![
            ("payments-db-write", bob_p.as_str(), direct.as_str()),
            ("payments-db-write", carol_p.as_str(), via.as_str()),
        ],
        "neither the grant user nor airlock's own user (admin of the role) is reported"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn missing_role_or_admin_option_is_refused_and_leaves_no_user() {
    let mut f = Fixture::new().await;
    let mut g = f.grant(in_secs(600));
    g.target = EntitlementTarget::Mysql(Target {
        role: format!("nope{}", f.t),
    });
    let msg = refused_detail(f.provider.apply(&g).await.unwrap_err());
    assert!(
        msg.contains(&format!("role nope{} does not exist", f.t))
            && msg.contains("CREATE ROLE")
            && msg.contains("fix the entitlement"),
        "{msg}"
    );
    let user = f.account(&g);
    assert!(!f.user_exists(&user).await, "no half-created user");
    assert!(f.event_at("mysql", &user).await.is_none());

    // A role airlock's user cannot administer.
    let foreign = format!("foreign{}", f.t);
    f.create_user(&foreign, None).await;
    let mut g = f.grant(in_secs(600));
    g.target = EntitlementTarget::Mysql(Target {
        role: foreign.clone(),
    });
    let msg = refused_detail(f.provider.apply(&g).await.unwrap_err());
    assert!(msg.contains("WITH ADMIN OPTION"), "{msg}");
    let user = f.account(&g);
    assert!(!f.user_exists(&user).await, "no half-created user");
    f.cleanup().await;
}

#[tokio::test]
async fn missing_connection_admin_is_reported_by_check_and_remove() {
    let mut f = Fixture::new().await;
    f.admin
        .query_drop(format!(
            "REVOKE CONNECTION ADMIN ON *.* FROM `{}`@`%`",
            f.airlock_user
        ))
        .await
        .unwrap();
    let msg = refused_detail(f.provider.check().await.unwrap_err());
    assert!(msg.contains("GRANT CONNECTION ADMIN ON *.*"), "{msg}");
    let g = f.grant(in_secs(600));
    f.provider.apply(&g).await.unwrap();
    let msg = refused_detail(f.provider.remove(&g).await.unwrap_err());
    assert!(msg.contains("sessions may remain"), "{msg}");
    assert!(
        !f.user_exists(&f.account(&g)).await,
        "the user is gone all the same"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn concurrent_grants_share_one_connection() {
    let mut f = Fixture::new().await;
    let grants: Vec<_> = (0..16).map(|_| f.grant(in_secs(600))).collect();
    let mut tasks = Vec::new();
    for g in grants {
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
    let sessions: Option<i64> = f
        .admin
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ?",
            (&f.airlock_user,),
        )
        .await
        .unwrap();
    assert_eq!(sessions, Some(1));
    assert!(f.provider.list_managed().await.unwrap().is_empty());
    f.cleanup().await;
}

#[tokio::test]
async fn a_killed_connection_is_replaced_transparently() {
    let mut f = Fixture::new().await;
    f.provider.check().await.unwrap();
    let ids: Vec<u64> = f
        .admin
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?",
            (&f.airlock_user,),
        )
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    f.admin
        .query_drop(format!("KILL CONNECTION {}", ids[0]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let g = f.grant(in_secs(600));
    f.provider.apply(&g).await.unwrap();
    assert!(f.user_exists(&f.account(&g)).await);
    f.cleanup().await;
}

#[tokio::test]
async fn wrong_password_in_the_url_is_refused_without_echoing_it() {
    let f = Fixture::new().await;
    let p = MysqlProvider::new(
        ProviderName::parse("db-badpw").unwrap(),
        &Config {
            url: airlock_url(&f.airlock_user, "hunter2-wrong", ""),
            ..Default::default()
        },
    )
    .unwrap();
    let msg = refused_detail(p.check().await.unwrap_err());
    assert!(
        msg.contains("check the user and password in `url`"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
    f.cleanup().await;
}

#[tokio::test]
async fn unreachable_server_fails_fast_and_is_retryable() {
    // Needs no server: nothing listens on port 1.
    let p = MysqlProvider::new(
        ProviderName::parse("db-main").unwrap(),
        &Config {
            url: "mysql://root@127.0.0.1:1/".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let err = p.check().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .starts_with("provider db-main unreachable: "),
        "{err}"
    );
    let g = GrantSpec {
        request_id: RequestId::parse("abcdefgh1").unwrap(),
        requester: UserName::parse("alice").unwrap(),
        email: None,
        entitlement: airlock_core::EntitlementName::parse("payments-db-write").unwrap(),
        target: EntitlementTarget::Mysql(Target { role: "r".into() }),
        not_after: in_secs(60),
        secret: [1; 32],
    };
    for result in [
        p.apply(&g).await,
        p.remove(&g).await,
        p.list_managed().await.map(drop),
    ] {
        assert!(
            matches!(result, Err(ProviderError::Unreachable { .. })),
            "{result:?}"
        );
    }
}
