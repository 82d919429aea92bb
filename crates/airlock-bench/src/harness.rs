//! The server under test, started in-process exactly as `airlock serve` wires
//! it (`App::new` + `app::run` with the reconciler on), and a small blocking
//! HTTP client for the real API.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_server::{App, ServeOptions};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tokio::runtime::Runtime;

/// Name of the entitlement in every bench catalog.
pub const ENTITLEMENT: &str = "bench-db";

/// The people of every bench catalog: alice requests, bob (group `reviewers`) approves.
pub const PEOPLE: &str = r#"[[user]]
name = "alice"

[[user]]
name = "bob"

[[group]]
name = "reviewers"
members = ["bob"]
"#;

/// The catalog: alice requests, bob (group `reviewers`) approves, one
/// entitlement on a real PostgreSQL provider.
pub fn catalog(pg_url: &str, role_prefix: &str, ent_role: &str, server: &str) -> String {
    format!(
        r#"[server]
{server}

{PEOPLE}
[providers.bench-pg]
kind = "postgres"
url = "{pg_url}"
role_prefix = "{role_prefix}"

[[entitlement]]
name = "{ENTITLEMENT}"
provider = "bench-pg"
role = "{ent_role}"
max_duration = "8h"
approvals = {{ count = 1, reviewers = ["reviewers"] }}
"#
    )
}

/// A running in-process server. Dropping it stops the runtime (API and reconciler).
pub struct Server {
    rt: Option<Runtime>,
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub admin_token: String,
}

impl Server {
    /// Opens the store (migrating it), builds the app and serves on 127.0.0.1:0.
    pub fn start(catalog: &str, data_dir: &Path, database_url: &str) -> Result<Server> {
        let config = airlock_providers::ValidatedConfig::parse(catalog)
            .map_err(|e| anyhow!("bench catalog: {e}"))?;
        let admin_token = airlock_server::auth::new_token();
        let app = App::new(ServeOptions {
            config,
            policy_text: None,
            data_dir: data_dir.to_path_buf(),
            config_dir: data_dir.to_path_buf(),
            database_url: database_url.to_string(),
            admin_token_hashes: vec![airlock_server::auth::hash_token(&admin_token)],
            replica_id: "airlock-bench".into(),
        })
        .map_err(|e| anyhow!("App::new: {e}"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        rt.spawn(airlock_server::app::run(
            app.clone(),
            listener,
            true,
            std::future::pending(),
        ));
        let server = Server {
            rt: Some(rt),
            addr,
            app,
            admin_token,
        };
        server.wait_healthy()?;
        Ok(server)
    }

    fn wait_healthy(&self) -> Result<()> {
        wait_healthy(&format!("http://{}", self.addr), Duration::from_secs(10))
    }

    /// The API client for this server.
    pub fn api(&self) -> Api {
        Api::new(&format!("http://{}", self.addr))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// Polls `/healthz` until it answers.
pub fn wait_healthy(base: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(1))
        .build();
    loop {
        if agent.get(&format!("{base}/healthz")).call().is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("server at {base} did not answer /healthz within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Blocking JSON client with keep-alive (one per thread).
pub struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(base: &str) -> Api {
        Api {
            base: base.to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
        }
    }

    /// A fresh connection pool to the same server.
    pub fn fork(&self) -> Api {
        Api::new(&self.base)
    }

    fn finish(r: Result<ureq::Response, ureq::Error>, what: &str) -> Result<Value> {
        match r {
            Ok(resp) => resp.into_json().with_context(|| format!("{what}: body")),
            Err(ureq::Error::Status(code, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                bail!("{what}: HTTP {code}: {body}")
            }
            Err(e) => Err(anyhow!("{what}: {e}")),
        }
    }

    /// POST a JSON body with a bearer token.
    pub fn post(&self, path: &str, token: &str, body: Value) -> Result<Value> {
        let r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {token}"))
            .send_json(body);
        Self::finish(r, path)
    }

    /// GET with a bearer token.
    pub fn get(&self, path: &str, token: &str) -> Result<Value> {
        let r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {token}"))
            .call();
        Self::finish(r, path)
    }

    /// A user token made with the admin token (`POST /api/v1/tokens`).
    pub fn token_for(&self, admin: &str, user: &str) -> Result<String> {
        let v = self.post("/api/v1/tokens", admin, json!({ "user": user }))?;
        v["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("token response without token: {v}"))
    }
}
