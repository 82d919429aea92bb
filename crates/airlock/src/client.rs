//! The HTTP client side of the CLI: one blocking agent, problem+json errors
//! turned into one-line messages.

use std::time::Duration;

use airlock_api::page::next_link;
use airlock_api::Problem;
use anyhow::{anyhow, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Talks to `AIRLOCK_ADDR` with `AIRLOCK_TOKEN`.
pub struct Client {
    agent: ureq::Agent,
    /// Without an overall timeout: a run's output may stream for as long as the tool runs.
    streaming: ureq::Agent,
    addr: String,
    token: Option<String>,
}

impl Client {
    /// A client for `addr` (e.g. `http://127.0.0.1:8080`).
    pub fn new(addr: &str, token: Option<String>) -> Client {
        // The server labels time-to-access metrics by surface from this.
        let ua = concat!("airlock-cli/", env!("CARGO_PKG_VERSION"));
        let agent = ureq::AgentBuilder::new()
            .user_agent(ua)
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build();
        Client {
            agent,
            streaming: ureq::AgentBuilder::new()
                .user_agent(ua)
                .timeout_connect(Duration::from_secs(5))
                .build(),
            addr: addr.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// The server address (`AIRLOCK_ADDR`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The bearer token, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<ureq::Response> {
        self.send_on(&self.agent, method, path, body)
    }

    /// Sends on `agent`; error statuses become one-line messages with the
    /// server's problem detail, transport errors say what to check.
    fn send_on(
        &self,
        agent: &ureq::Agent,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ureq::Response> {
        let url = format!("{}{path}", self.addr);
        let mut req = agent.request(method, &url);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let resp = match body {
            Some(b) => req.send_json(b.clone()),
            None => req.call(),
        };
        match resp {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                let detail = Problem::detail_of(&text).unwrap_or(text);
                let hint = if code == 401 && self.token.is_none() {
                    " (set AIRLOCK_TOKEN)"
                } else {
                    ""
                };
                Err(anyhow!("{detail}{hint} [HTTP {code}]"))
            }
            Err(ureq::Error::Transport(t)) => Err(anyhow!(
                "cannot reach airlock at {}: {t} (is `airlock serve` running? set AIRLOCK_ADDR)",
                self.addr
            )),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let text = self.send(method, path, body)?.into_string()?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// GET a binary document (e.g. a KRL), at most `limit` bytes.
    pub fn get_bytes(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        self.send("GET", path, None)?
            .into_reader()
            .take(limit + 1)
            .read_to_end(&mut out)?;
        if out.len() as u64 > limit {
            return Err(anyhow!("response from {path} is larger than {limit} bytes"));
        }
        Ok(out)
    }

    /// GET a JSON document.
    pub fn get(&self, path: &str) -> Result<Value> {
        self.call("GET", path, None)
    }

    /// GET a JSON array and every further page its `Link: <…>; rel="next"`
    /// headers name (RFC 8288), concatenated; stops after `max_pages`.
    pub fn get_all(&self, path: &str, max_pages: usize) -> Result<Value> {
        let mut items = Vec::new();
        let mut next = Some(path.to_string());
        for _ in 0..max_pages {
            let Some(p) = next.take() else { break };
            let resp = self.send("GET", &p, None)?;
            next = resp.header("link").and_then(next_link);
            match serde_json::from_str(&resp.into_string()?)? {
                Value::Array(page) => items.extend(page),
                other => return Err(anyhow!("expected a JSON list from {p}, got {other}")),
            }
        }
        Ok(Value::Array(items))
    }

    /// GET a JSON document of a known shape.
    pub fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call_as("GET", path, None::<&()>)
    }

    /// POST a typed body; the answer is of a known shape.
    pub fn post_as<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.call_as("POST", path, Some(body))
    }

    /// DELETE a resource; the answer is of a known shape.
    pub fn delete_as<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call_as("DELETE", path, None::<&()>)
    }

    fn call_as<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let body = body.map(serde_json::to_value).transpose()?;
        let text = self.send(method, path, body.as_ref())?.into_string()?;
        decode_answer(
            &format!("the server's answer to {method} {path}"),
            text.as_bytes(),
        )
    }

    /// POST a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.call("POST", path, Some(body))
    }

    /// Sends a request whose response may be a long stream (a run's output);
    /// error statuses become the same one-line messages as other calls.
    pub fn stream(&self, method: &str, path: &str, body: Option<&Value>) -> Result<ureq::Response> {
        self.send_on(&self.streaming, method, path, body)
    }
}

/// Decodes an answer of a known shape; `what` names it in the error (an older
/// CLI meets a server whose answers changed: say to upgrade, not a serde error alone).
pub fn decode_answer<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| anyhow!("{what} is not what this CLI expects ({e}); upgrade airlock"))
}
