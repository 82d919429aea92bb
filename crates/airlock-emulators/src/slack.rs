//! Slack Web API emulation: `chat.postMessage`, `chat.update`, `users.info`
//! and interaction `response_url`s, on one 127.0.0.1 port inside the test
//! process, plus a builder of signed `block_actions` callbacks.
//!
//! Behaviour follows Slack's documentation: the bot token goes in
//! `Authorization: Bearer` (or a `token` form field); a missing token answers
//! `not_authed`, a wrong one `invalid_auth` — with HTTP 200 and `"ok": false`
//! as Slack does; JSON and form bodies are accepted (users.info: query or
//! form only); channels may be given as `#name` or id to postMessage but only
//! as id to chat.update; Block Kit is checked for the rules a message must
//! meet (known block types, ≤ 50 blocks, section text ≤ 3000, buttons'
//! action_id ≤ 255 and value ≤ 2000, unique action and block ids) and
//! refused with `invalid_blocks`; rate limiting answers HTTP 429 with
//! `Retry-After` and `{"ok":false,"error":"ratelimited"}`.

mod blocks;
mod interaction;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

pub use interaction::{form_encode, SignedInteraction};

/// A workspace member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Member id (`U…`).
    pub id: String,
    /// Handle.
    pub name: String,
    /// Profile email (`None`: the member has none visible).
    pub email: Option<String>,
    /// Deactivated.
    pub deleted: bool,
    /// The member's own workspace (another one: an external Slack Connect member).
    pub team_id: String,
    /// Whether the member confirmed their email address.
    pub email_confirmed: bool,
}

/// A message as it stands now.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Channel id.
    pub channel: String,
    /// Timestamp (its id).
    pub ts: String,
    /// Fallback text.
    pub text: String,
    /// Block Kit blocks (`[]` when none).
    pub blocks: Value,
    /// How many times chat.update changed it.
    pub edits: u32,
}

/// A post to a response_url.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsePost {
    /// Which response_url (its path).
    pub path: String,
    /// The JSON body.
    pub body: Value,
}

/// How the next calls fail (an outage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// HTTP 500 with an HTML body, as a load balancer would answer.
    ServerError,
    /// HTTP 429, `Retry-After: secs`, `{"ok":false,"error":"ratelimited"}`.
    RateLimited { retry_after: u64 },
}

/// Counters a test can read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub posts: u64,
    pub updates: u64,
    pub users_info: u64,
    /// Calls answered with a [`Failure`].
    pub failures: u64,
    /// Calls answered `"ok": false`.
    pub errors: u64,
}

struct Inner {
    token: String,
    users: Vec<User>,
    /// name (without `#`) → id
    channels: HashMap<String, String>,
    messages: Vec<Message>,
    updates: Vec<Message>,
    responses: Vec<ResponsePost>,
    failing: Option<(Failure, u32)>,
    clock: u64,
    next_channel: u32,
    next_response: u32,
    stats: Stats,
}

/// A running emulation. Dropping it stops the server.
pub struct SlackEmulator {
    inner: Arc<Mutex<Inner>>,
    base_url: String,
    task: tokio::task::JoinHandle<()>,
}

/// The bot user id messages are posted as.
pub const BOT_USER: &str = "U0AIRLOCKB";
/// The bot id.
pub const BOT_ID: &str = "B0AIRLOCK1";
/// The workspace id.
pub const TEAM_ID: &str = "T0AIRLOCK1";

impl SlackEmulator {
    /// Starts on 127.0.0.1 with an ephemeral port; `bot_token` is the only valid token.
    pub async fn start(bot_token: &str) -> SlackEmulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the Slack emulation");
        let base_url = format!("http://{}", listener.local_addr().expect("address"));
        let inner = Arc::new(Mutex::new(Inner {
            token: bot_token.into(),
            users: vec![],
            channels: HashMap::new(),
            messages: vec![],
            updates: vec![],
            responses: vec![],
            failing: None,
            clock: 1_700_000_000_000_000,
            next_channel: 0,
            next_response: 0,
            stats: Stats::default(),
        }));
        let app = Router::new()
            .route("/api/{method}", any(api))
            .route("/actions/{team}/{id}/{secret}", post(response_url))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SlackEmulator {
            inner,
            base_url,
            task,
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The Web API base (`[notify.slack] api_base`), e.g. `http://127.0.0.1:PORT/api`.
    pub fn api_base(&self) -> String {
        format!("{}/api", self.base_url)
    }

    /// Adds a member.
    pub fn add_user(&self, id: &str, name: &str, email: Option<&str>) {
        self.inner().users.push(User {
            id: id.into(),
            name: name.into(),
            email: email.map(str::to_string),
            deleted: false,
            team_id: TEAM_ID.into(),
            email_confirmed: true,
        });
    }

    /// Adds a member of another workspace, seen through Slack Connect.
    pub fn add_external_user(&self, id: &str, name: &str, email: Option<&str>, team_id: &str) {
        self.add_user(id, name, email);
        if let Some(u) = self.inner().users.iter_mut().find(|u| u.id == id) {
            u.team_id = team_id.into();
        }
    }

    /// Marks a member's email as not confirmed (users.info `is_email_confirmed: false`).
    pub fn unconfirm_email(&self, id: &str) {
        if let Some(u) = self.inner().users.iter_mut().find(|u| u.id == id) {
            u.email_confirmed = false;
        }
    }

    /// Deactivates a member (users.info then says `deleted: true`).
    pub fn deactivate_user(&self, id: &str) {
        if let Some(u) = self.inner().users.iter_mut().find(|u| u.id == id) {
            u.deleted = true;
        }
    }

    /// Creates channel `#name` (the bot is a member); returns its id.
    pub fn add_channel(&self, name: &str) -> String {
        let mut i = self.inner();
        i.next_channel += 1;
        let id = format!("C0{:08}", i.next_channel);
        i.channels
            .insert(name.trim_start_matches('#').into(), id.clone());
        id
    }

    /// The id of channel `#name`.
    pub fn channel_id(&self, name: &str) -> Option<String> {
        self.inner()
            .channels
            .get(name.trim_start_matches('#'))
            .cloned()
    }

    /// Messages in a channel (by `#name` or id), oldest first, as they stand now.
    pub fn messages(&self, channel: &str) -> Vec<Message> {
        let id = self.channel_id(channel).unwrap_or_else(|| channel.into());
        self.inner()
            .messages
            .iter()
            .filter(|m| m.channel == id)
            .cloned()
            .collect()
    }

    /// Every successful chat.update, in order (the message as updated).
    pub fn updates(&self) -> Vec<Message> {
        self.inner().updates.clone()
    }

    /// A new response_url for an interaction.
    pub fn new_response_url(&self) -> String {
        let mut i = self.inner();
        i.next_response += 1;
        format!(
            "{}/actions/{TEAM_ID}/{}/r{:06}",
            self.base_url, i.next_response, i.next_response
        )
    }

    /// Everything posted to response_urls, in order.
    pub fn response_posts(&self) -> Vec<ResponsePost> {
        self.inner().responses.clone()
    }

    /// The next `count` Web API calls fail with `failure` (an outage).
    pub fn fail_next(&self, count: u32, failure: Failure) {
        self.inner().failing = (count > 0).then_some((failure, count));
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.inner().stats
    }
}

impl Drop for SlackEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn slack_error(error: &str) -> Response {
    Json(json!({"ok": false, "error": error})).into_response()
}

/// Arguments from the query string, a form body or a JSON body.
fn arguments(
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    json_ok: bool,
) -> Result<Map<String, Value>, &'static str> {
    let mut args = Map::new();
    if let Some(q) = query {
        for (k, v) in interaction::form_decode(q).ok_or("invalid_form_data")? {
            args.insert(k, Value::String(v));
        }
    }
    if body.is_empty() {
        return Ok(args);
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if ctype.starts_with("application/json") {
        if !json_ok {
            // Read methods ignore JSON bodies.
            return Ok(args);
        }
        let v: Value = serde_json::from_slice(body).map_err(|_| "invalid_json")?;
        let Value::Object(m) = v else {
            return Err("invalid_json");
        };
        args.extend(m);
    } else if ctype.starts_with("application/x-www-form-urlencoded") {
        let text = std::str::from_utf8(body).map_err(|_| "invalid_form_data")?;
        for (k, v) in interaction::form_decode(text).ok_or("invalid_form_data")? {
            args.insert(k, Value::String(v));
        }
    } else if ctype.is_empty() {
        return Err("missing_post_type");
    } else {
        return Err("invalid_post_type");
    }
    Ok(args)
}

async fn api(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut i = lock(&inner);
    if let Some((failure, left)) = i.failing {
        i.failing = (left > 1).then(|| (failure, left - 1));
        i.stats.failures += 1;
        return match failure {
            Failure::ServerError => (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>Internal Server Error</body></html>",
            )
                .into_response(),
            Failure::RateLimited { retry_after } => {
                let mut r = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(json!({"ok": false, "error": "ratelimited"})),
                )
                    .into_response();
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from(retry_after));
                r
            }
        };
    }
    let json_ok = method != "users.info";
    let args = match arguments(&headers, query.as_deref(), &body, json_ok) {
        Ok(a) => a,
        Err(e) => return fail(&mut i, e),
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let token = bearer.or_else(|| {
        args.get("token")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    match token {
        None => return fail(&mut i, "not_authed"),
        Some(t) if t != i.token => return fail(&mut i, "invalid_auth"),
        Some(_) => {}
    }
    let out = match method.as_str() {
        "chat.postMessage" => post_message(&mut i, &args),
        "chat.update" => update(&mut i, &args),
        "users.info" => users_info(&mut i, &args),
        _ => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"ok": false, "error": "unknown_method"})),
            )
                .into_response()
        }
    };
    match out {
        Ok(v) => Json(v).into_response(),
        Err((error, errors)) => {
            i.stats.errors += 1;
            let mut v = json!({"ok": false, "error": error});
            if !errors.is_empty() {
                v["errors"] = json!(errors);
            }
            Json(v).into_response()
        }
    }
}

fn fail(i: &mut Inner, error: &str) -> Response {
    i.stats.errors += 1;
    slack_error(error)
}

/// A Slack error code and its `errors` details.
type SlackFailure = (&'static str, Vec<String>);
type Outcome = Result<Value, SlackFailure>;

fn err(e: &'static str) -> SlackFailure {
    (e, vec![])
}

/// Text, blocks (JSON array or, from forms, a JSON string) and their checks.
fn content(
    args: &Map<String, Value>,
    required: bool,
) -> Result<(Option<String>, Option<Value>), SlackFailure> {
    let text = match args.get("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(err("invalid_arguments")),
    };
    let blocks = match args.get("blocks") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(serde_json::from_str::<Value>(s).map_err(|_| ("invalid_blocks_format", vec![]))?)
        }
        Some(v) => Some(v.clone()),
    };
    if let Some(b) = &blocks {
        blocks::validate(b).map_err(|errors| ("invalid_blocks", errors))?;
    }
    let empty_blocks = blocks
        .as_ref()
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty());
    if required && text.as_deref().is_none_or(str::is_empty) && empty_blocks {
        return Err(err("no_text"));
    }
    if text.as_ref().is_some_and(|t| t.chars().count() > 40_000) {
        return Err(err("msg_too_long"));
    }
    Ok((text, blocks))
}

fn resolve_channel(i: &Inner, channel: &str, by_name: bool) -> Option<String> {
    if i.channels.values().any(|id| id == channel) {
        return Some(channel.into());
    }
    if by_name {
        return i.channels.get(channel.trim_start_matches('#')).cloned();
    }
    None
}

fn message_json(m: &Message) -> Value {
    json!({"type": "message", "subtype": "bot_message", "text": m.text, "user": BOT_USER,
           "bot_id": BOT_ID, "team": TEAM_ID, "ts": m.ts, "blocks": m.blocks})
}

fn post_message(i: &mut Inner, args: &Map<String, Value>) -> Outcome {
    let channel = args
        .get("channel")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(id) = resolve_channel(i, channel, true) else {
        return Err(err("channel_not_found"));
    };
    let (text, blocks) = content(args, true)?;
    i.clock += 1;
    let ts = format!("{}.{:06}", i.clock / 1_000_000, i.clock % 1_000_000);
    let m = Message {
        channel: id.clone(),
        ts: ts.clone(),
        text: text.unwrap_or_default(),
        blocks: blocks.unwrap_or_else(|| json!([])),
        edits: 0,
    };
    let v = json!({"ok": true, "channel": id, "ts": ts, "message": message_json(&m)});
    i.messages.push(m);
    i.stats.posts += 1;
    Ok(v)
}

fn update(i: &mut Inner, args: &Map<String, Value>) -> Outcome {
    let channel = args
        .get("channel")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // chat.update takes channel ids only, not names.
    let Some(id) = resolve_channel(i, channel, false) else {
        return Err(err("channel_not_found"));
    };
    let ts = args
        .get("ts")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let (text, blocks) = content(args, false)?;
    let Some(m) = i
        .messages
        .iter_mut()
        .find(|m| m.channel == id && m.ts == ts)
    else {
        return Err(err("message_not_found"));
    };
    if text.is_none() && blocks.is_none() {
        return Err(err("no_text"));
    }
    if let Some(t) = text {
        m.text = t;
    }
    // Without `blocks` the previous ones stay, as documented.
    if let Some(b) = blocks {
        m.blocks = b;
    }
    m.edits += 1;
    let v =
        json!({"ok": true, "channel": id, "ts": ts, "text": m.text, "message": message_json(m)});
    let copy = m.clone();
    i.updates.push(copy);
    i.stats.updates += 1;
    Ok(v)
}

fn users_info(i: &mut Inner, args: &Map<String, Value>) -> Outcome {
    i.stats.users_info += 1;
    let id = args.get("user").and_then(Value::as_str).unwrap_or_default();
    let Some(u) = i.users.iter().find(|u| u.id == id) else {
        return Err(err("user_not_found"));
    };
    let mut profile = json!({"real_name": u.name, "display_name": u.name, "team": u.team_id});
    if let Some(e) = &u.email {
        profile["email"] = json!(e);
    }
    let mut user = json!({"id": u.id, "team_id": u.team_id, "name": u.name,
        "deleted": u.deleted, "real_name": u.name, "is_bot": false, "is_admin": false,
        "is_email_confirmed": u.email_confirmed, "profile": profile});
    if u.team_id != TEAM_ID {
        // What users.info says of a Slack Connect member seen from our workspace.
        user["is_stranger"] = json!(true);
    }
    Ok(json!({"ok": true, "user": user}))
}

async fn response_url(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path((team, id, secret)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    let parsed = serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(Value::is_object);
    let (true, Some(body)) = (is_json, parsed) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
    };
    if body.get("text").is_none() && body.get("blocks").is_none() {
        return (StatusCode::BAD_REQUEST, "no_text").into_response();
    }
    lock(&inner).responses.push(ResponsePost {
        path: format!("/actions/{team}/{id}/{secret}"),
        body,
    });
    (StatusCode::OK, "ok").into_response()
}
