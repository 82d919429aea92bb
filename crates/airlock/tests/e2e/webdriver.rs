//! A minimal W3C WebDriver client (JSON over HTTP with ureq) driving Debian's
//! headless Chromium through chromedriver: sessions, navigation, CSS lookup,
//! clicks, typing, text, scripts, cookies and screenshots. No heavy crate.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// The W3C key naming an element in responses.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process on a free loopback port (killed on drop).
pub struct Chromedriver {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Chromedriver {
    /// Starts `$AIRLOCK_TEST_CHROMEDRIVER` and waits until it answers `/status`.
    pub fn start() -> Chromedriver {
        let bin = std::env::var("AIRLOCK_TEST_CHROMEDRIVER").unwrap_or_else(|_| {
            panic!("AIRLOCK_TEST_CHROMEDRIVER is not set: run the web UI tests through ./scripts/test (it installs chromium + chromium-driver)")
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver {bin}: {e}"));
        // Drain its stdout so it never blocks on a full pipe.
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || for _ in BufReader::new(out).lines() {});
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = ureq::get(&format!("{url}/status")).call() {
                if r.into_json::<Value>()
                    .map(|v| v["value"]["ready"] == true)
                    .unwrap_or(false)
                {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Chromedriver { child, url }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session (its own profile, so its own cookies); deleted on drop.
pub struct Browser {
    base: String,
    agent: ureq::Agent,
}

/// A found element.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Browser {
    /// A new headless Chromium session.
    pub fn new(driver: &Chromedriver) -> Browser {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--window-size=1280,900"
            ]}
        }}});
        let v = send(
            &agent,
            "POST",
            &format!("{}/session", driver.url),
            Some(caps),
        )
        .unwrap_or_else(|e| panic!("new WebDriver session failed: {e}"));
        let id = v["sessionId"].as_str().expect("sessionId").to_string();
        Browser {
            base: format!("{}/session/{id}", driver.url),
            agent,
        }
    }

    /// A WebDriver command on this session; `Err` carries the driver's error.
    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        send(&self.agent, method, &format!("{}{path}", self.base), body)
    }

    fn must(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.cmd(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// Navigates and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(json!({ "url": url })));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.must("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The document title.
    pub fn title(&self) -> String {
        self.must("GET", "/title", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's HTML as the browser sees it now.
    pub fn source(&self) -> String {
        self.must("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Elements matching a CSS selector now.
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let v = self.must(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT_KEY].as_str())
                    .map(|id| self.element(id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first element matching `css`, waiting up to 10 s for it.
    pub fn find(&self, css: &str) -> Element<'_> {
        self.wait_for(css, Duration::from_secs(10))
    }

    /// The first element matching `css`, waiting up to `timeout`.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element<'_> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find_all(css).into_iter().next() {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element matches `{css}` at {} after {timeout:?}; page:\n{}",
                self.url(),
                self.source()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the text of `css` satisfies `pred`; returns it.
    pub fn wait_text(&self, css: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self
                .find_all(css)
                .first()
                .map(|e| e.text())
                .unwrap_or_default();
            if pred(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "text of `{css}` is still {text:?} after {timeout:?} at {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs synchronous JavaScript in the page and returns its value.
    pub fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        self.must(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The value of cookie `name` (HttpOnly cookies included), if set.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cmd("GET", &format!("/cookie/{name}"), None)
            .ok()
            .and_then(|v| v["value"].as_str().map(str::to_string))
    }

    /// Saves a PNG screenshot as `target/test-artifacts/web/{name}.png`, prints and returns the path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.must("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).expect("create artifacts dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        println!("screenshot: {}", path.display());
        path
    }

    fn element(&self, id: &str) -> Element<'_> {
        Element {
            browser: self,
            id: id.to_string(),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = send(&self.agent, "DELETE", &self.base, None);
    }
}

impl Element<'_> {
    /// Clicks it.
    pub fn click(&self) {
        self.browser.must(
            "POST",
            &format!("/element/{}/click", self.id),
            Some(json!({})),
        );
    }

    /// Types `text` into it.
    pub fn send_keys(&self, text: &str) {
        self.browser.must(
            "POST",
            &format!("/element/{}/value", self.id),
            Some(json!({ "text": text })),
        );
    }

    /// Its rendered text.
    pub fn text(&self) -> String {
        self.browser
            .cmd("GET", &format!("/element/{}/text", self.id), None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// An attribute or property value.
    pub fn attr(&self, name: &str) -> Option<String> {
        self.browser
            .must(
                "GET",
                &format!("/element/{}/attribute/{name}", self.id),
                None,
            )
            .as_str()
            .map(str::to_string)
    }
}

/// `target/test-artifacts/web` of this workspace.
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("test-artifacts").join("web")
}

fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let req = agent.request(method, url);
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let v: Value = match res {
        Ok(r) => r.into_json().map_err(|e| e.to_string())?,
        Err(ureq::Error::Status(code, r)) => {
            let v: Value = r.into_json().unwrap_or(Value::Null);
            return Err(format!("HTTP {code}: {}", v["value"]));
        }
        Err(e) => return Err(e.to_string()),
    };
    Ok(v["value"].clone())
}
