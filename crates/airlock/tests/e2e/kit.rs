//! Test kit: boots the real `airlock` binary on 127.0.0.1:0 against a temp
//! SQLite file or a fresh PostgreSQL schema, with a real PostgreSQL provider
//! (unique role prefix per test), and drives it through the real CLI.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_airlock");

/// Which store a server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub fn pg_url() -> String {
    std::env::var("AIRLOCK_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("AIRLOCK_TEST_PG_URL is not set: run ./scripts/test (it starts a throwaway PostgreSQL) or point it at a server")
    })
}

pub fn pg() -> postgres::Client {
    postgres::Client::connect(&pg_url(), postgres::NoTls).expect("connect to AIRLOCK_TEST_PG_URL")
}

pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}{}{:x}{}",
        std::process::id() % 10000,
        t % 0xffffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Host and port of AIRLOCK_TEST_PG_URL (for login checks).
pub fn pg_host_port() -> (String, u16) {
    let cfg: postgres::Config = pg_url().parse().unwrap();
    let host = match &cfg.get_hosts()[0] {
        postgres::config::Host::Tcp(h) => h.clone(),
        #[allow(unreachable_patterns)]
        _ => "127.0.0.1".into(),
    };
    (host, cfg.get_ports().first().copied().unwrap_or(5432))
}

/// Tries a password login as `user`; Ok(()) if it works.
pub fn login(user: &str, password: &str, database: &str) -> Result<(), String> {
    let (host, port) = pg_host_port();
    let mut c = postgres::Config::new();
    c.host(&host)
        .port(port)
        .user(user)
        .password(password)
        .dbname(database);
    c.connect_timeout(Duration::from_secs(5));
    match c.connect(postgres::NoTls) {
        Ok(mut client) => client
            .simple_query("SELECT 1")
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

pub fn role_exists(name: &str) -> bool {
    pg().query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&name])
        .unwrap()
        .get::<_, i64>(0)
        == 1
}

/// The entitlement role every test grants (created once, idempotently).
pub const WRITER_ROLE: &str = "airlock_e2e_writer";

pub fn ensure_writer_role() {
    let _ = pg().batch_execute(&format!(
        "DO $$ BEGIN CREATE ROLE {WRITER_ROLE} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    ));
}

/// A running server plus everything needed to restart it.
pub struct Server {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub addr: String,
    pub admin: String,
    pub role_prefix: String,
    pub db: Db,
    /// PostgreSQL schema holding the store (for `Db::Postgres`).
    pub schema: Option<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub log: PathBuf,
    owns_dir: bool,
}

/// What to put in a test server's config.
pub struct Setup {
    pub db: Db,
    /// Extra TOML appended after the default catalog.
    pub extra: String,
    /// Replace the default catalog entirely (still gets [server]).
    pub catalog: Option<String>,
    pub env: Vec<(String, String)>,
    pub server_extra: String,
    /// PostgreSQL store only: reach the database through this loopback port
    /// (a forwarder the test can cut) instead of AIRLOCK_TEST_PG_URL's.
    pub store_port: Option<u16>,
    /// PostgreSQL store only: this URL as it is (its default schema), e.g.
    /// the multi-host URL of the failover pair.
    pub store_url: Option<String>,
}

impl Setup {
    pub fn new(db: Db) -> Setup {
        Setup {
            db,
            extra: String::new(),
            catalog: None,
            env: vec![],
            server_extra: String::new(),
            store_port: None,
            store_url: None,
        }
    }
}

/// The default catalog: alice and bob in payments-eng, carol outside it.
pub fn default_catalog(prefix: &str) -> String {
    format!(
        r#"
[[user]]
name = "alice"
email = "alice@example.com"

[[group]]
name = "payments-eng"
members = ["alice", "bob"]

[providers.pg-main]
kind = "postgres"
url = "{url}"
role_prefix = "{prefix}"

[[entitlement]]
name = "payments-db-write"
description = "Write access to the payments table"
provider = "pg-main"
role = "{WRITER_ROLE}"
max_duration = "1h"
approvals = {{ count = 1, reviewers = ["payments-eng"] }}
reason = {{ required = true, pattern = "^(INC|CHG)-[0-9]+" }}

[[entitlement]]
name = "two-person"
provider = "pg-main"
role = "{WRITER_ROLE}"
max_duration = "1h"
approval_timeout = "2s"
approvals = {{ count = 2, reviewers = ["payments-eng", "user:carol"] }}

[[entitlement]]
name = "payments-breakglass"
provider = "pg-main"
role = "{WRITER_ROLE}"
max_duration = "30m"
breakglass = true
requesters = ["payments-eng"]
approvals = {{ count = 1, reviewers = ["payments-eng"] }}
"#,
        url = pg_url()
    )
}

impl Server {
    pub fn start(setup: Setup) -> Server {
        Self::start_with_files(setup, &[])
    }

    /// Like `start`, with extra files written next to the config first.
    pub fn start_with_files(setup: Setup, files: &[(&str, &str)]) -> Server {
        ensure_writer_role();
        let dir = std::env::temp_dir().join(unique("airlock-e2e-"));
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = unique("e2e").to_lowercase().replace('-', "") + "_";
        let mut schema_name = None;
        let database = match setup.db {
            Db::Sqlite => "sqlite://airlock.db".to_string(),
            Db::Postgres if setup.store_url.is_some() => setup.store_url.clone().unwrap(),
            Db::Postgres => {
                let schema = unique("s");
                schema_name = Some(schema.clone());
                pg().batch_execute(&format!("CREATE SCHEMA {schema}"))
                    .unwrap();
                let sep = if pg_url().contains('?') { '&' } else { '?' };
                let url = match setup.store_port {
                    Some(port) => {
                        let (_, real) = pg_host_port();
                        pg_url().replacen(&format!(":{real}/"), &format!(":{port}/"), 1)
                    }
                    None => pg_url(),
                };
                format!("{url}{sep}options=-csearch_path%3D{schema}")
            }
        };
        let catalog = setup.catalog.unwrap_or_else(|| default_catalog(&prefix));
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndatabase = \"{database}\"\ndrift_interval = \"1s\"\ncheckpoint_every = 5\n{}\n{catalog}\n{}",
            setup.server_extra, setup.extra
        );
        let path = dir.join("airlock.toml");
        std::fs::write(&path, config).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let admin = format!("alk_bootstrap_{}", unique("t"));
        let mut s = Server {
            log: dir.join("server.log"),
            dir,
            config: path,
            addr: String::new(),
            admin,
            role_prefix: prefix,
            db: setup.db,
            schema: schema_name,
            env: setup.env,
            child: None,
            owns_dir: true,
        };
        s.boot();
        s
    }

    /// A second replica: same config, store and keys, its own port and log.
    pub fn replica(&self) -> Server {
        let mut s = Server {
            dir: self.dir.clone(),
            config: self.config.clone(),
            addr: String::new(),
            admin: self.admin.clone(),
            role_prefix: self.role_prefix.clone(),
            db: self.db,
            schema: self.schema.clone(),
            env: self.env.clone(),
            child: None,
            log: self.dir.join("replica.log"),
            owns_dir: false,
        };
        s.boot();
        s
    }

    /// Starts (or restarts) the process and waits for its address.
    pub fn boot(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .env("AIRLOCK_BOOTSTRAP_TOKEN", &self.admin)
            .env("AIRLOCK_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn airlock serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("airlock listening on ")
            .unwrap_or_else(|| panic!("server did not start: {line:?}; log: {}", self.log_text()))
            .to_string();
        self.addr = addr;
        self.child = Some(child);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as `systemctl stop` or a Kubernetes rollout sends it; waits
    /// up to `secs` for the process to exit (then `kill -9` and panics).
    pub fn terminate(&mut self, secs: u64) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server is running");
        let sent = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "server did not exit within {secs}s of SIGTERM; log: {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn set_env(&mut self, env: Vec<(String, String)>) {
        self.env = env;
    }

    /// Runs the CLI with a token.
    pub fn cli(&self, token: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("AIRLOCK_ADDR", &self.addr)
            .env("AIRLOCK_TOKEN", token)
            .env_remove("AIRLOCK_CONFIG")
            .output()
            .expect("run airlock")
    }

    /// Runs the CLI with `--output json`, asserting success, and parses stdout.
    pub fn json(&self, token: &str, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let out = self.cli(token, &a);
        assert!(
            out.status.success(),
            "airlock {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// A token for `user` created by the admin.
    pub fn token(&self, user: &str) -> String {
        self.json(&self.admin, &["token", "create", "--user", user])["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Requests `payments-db-write`, has `reviewer` approve it and waits until
    /// the grant is active; returns the request id.
    /// A pending request for `payments-db-write`; returns its id.
    pub fn pending_request(&self, requester: &str, duration: &str, reason: &str) -> String {
        id_of(&self.json(
            requester,
            &[
                "request",
                "payments-db-write",
                "--for",
                duration,
                "--reason",
                reason,
            ],
        ))
    }

    pub fn active_grant(
        &self,
        requester: &str,
        reviewer: &str,
        duration: &str,
        reason: &str,
    ) -> String {
        let r = self.json(
            requester,
            &[
                "request",
                "payments-db-write",
                "--for",
                duration,
                "--reason",
                reason,
            ],
        );
        let id = id_of(&r);
        self.json(reviewer, &["review", &id, "--approve"]);
        self.wait_for(requester, &id, 10, |r| r["state"] == "active");
        id
    }

    /// Polls a request until `pred` holds (or panics after `secs`).
    pub fn wait_for(
        &self,
        token: &str,
        id: &str,
        secs: u64,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.json(token, &["show", id]);
            if pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {id}: {r}\nlog: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Audit events (kinds) for a subject.
    pub fn audit_kinds(&self, subject: &str) -> Vec<String> {
        let out = self.cli(&self.admin, &["audit", "export"]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["subject"] == subject)
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect()
    }

    /// Raw HTTP call (for bad-input tests).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String, Value) {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let mut req = agent.request(method, &format!("{}{path}", self.addr));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let res = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("transport error: {e}"),
        };
        let status = resp.status();
        let ctype = resp.content_type().to_string();
        let text = resp.into_string().unwrap_or_default();
        (
            status,
            ctype,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn offline(&self, args: &[&str]) -> Output {
        let mut a = args.to_vec();
        a.extend(["--offline", "--config", self.config.to_str().unwrap()]);
        Command::new(BIN).args(a).output().unwrap()
    }

    /// Runs SQL directly against this server's store (tamper tests).
    pub fn store_sql(&self, sql: &str) {
        match self.db {
            Db::Sqlite => {
                let c = rusqlite::Connection::open(self.dir.join("airlock.db")).unwrap();
                c.execute_batch(sql).unwrap();
            }
            Db::Postgres => {
                let mut c = pg();
                c.batch_execute(&format!(
                    "SET search_path = {}; {sql}",
                    self.schema.as_deref().unwrap()
                ))
                .unwrap();
            }
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if !self.owns_dir {
            return;
        }
        // Remove roles this server's provider created (tests share one cluster).
        if let Ok(mut c) = postgres::Client::connect(&pg_url(), postgres::NoTls) {
            if let Ok(rows) = c.query(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)",
                &[&self.role_prefix],
            ) {
                for r in rows {
                    let name: String = r.get(0);
                    let _ = c.batch_execute(&format!("DROP ROLE IF EXISTS \"{name}\""));
                }
            }
            if let Some(schema) = &self.schema {
                let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
            }
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// Generates one test per store from a body taking `Db`.
#[macro_export]
macro_rules! both_stores {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn sqlite() {
                ($body)($crate::kit::Db::Sqlite)
            }
            #[test]
            fn postgres() {
                ($body)($crate::kit::Db::Postgres)
            }
        }
    };
}

/// Starts `serve` on a config expected to be refused; returns its stderr.
pub fn serve_error(config: &str) -> String {
    let dir = std::env::temp_dir().join(unique("airlock-provcfg-"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("airlock.toml");
    std::fs::write(&cfg, config).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env("AIRLOCK_BOOTSTRAP_TOKEN", "alk_x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
    stderr(&out)
}
