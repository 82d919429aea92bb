//! The Slack emulation checked against Slack's documented wire behaviour:
//! bearer or form token (`not_authed`, `invalid_auth` with HTTP 200), JSON
//! and form bodies, channel names resolved for postMessage but not for
//! chat.update, Block Kit limits (`invalid_blocks`), users.info's profile
//! email, rate limiting (429 + Retry-After), response_url posts, and signed
//! interactions. Requests are built by hand, independent of airlock's client.

use airlock_emulators::slack::{form_encode, Failure, SignedInteraction, SlackEmulator};
use serde_json::{json, Value};

const TOKEN: &str = "xoxb-1-test";

async fn emu() -> SlackEmulator {
    let e = SlackEmulator::start(TOKEN).await;
    e.add_channel("#payments-oncall");
    e.add_user("U024BE7LH", "bob", Some("bob@example.com"));
    e
}

async fn call_json(
    e: &SlackEmulator,
    method: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("{}/{method}", e.api_base()))
        .header("Content-Type", "application/json; charset=utf-8")
        .body(body.to_string());
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

#[tokio::test]
async fn tokens_are_required_and_checked_with_slacks_error_codes() {
    let e = emu().await;
    let body = json!({"channel": "#payments-oncall", "text": "hi"});
    assert_eq!(
        call_json(&e, "chat.postMessage", None, body.clone()).await,
        (200, json!({"ok": false, "error": "not_authed"}))
    );
    assert_eq!(
        call_json(&e, "chat.postMessage", Some("xoxb-wrong"), body.clone()).await,
        (200, json!({"ok": false, "error": "invalid_auth"}))
    );
    // A form body may carry the token instead of the header.
    let form = format!("token={TOKEN}&channel=%23payments-oncall&text=hi");
    let v: Value = reqwest::Client::new()
        .post(format!("{}/chat.postMessage", e.api_base()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["ok"], true, "{v}");
}

#[tokio::test]
async fn post_message_resolves_channel_names_and_answers_with_the_id_and_ts() {
    let e = emu().await;
    let id = e.channel_id("#payments-oncall").unwrap();
    let (_, v) = call_json(
        &e,
        "chat.postMessage",
        Some(TOKEN),
        json!({"channel": "#payments-oncall", "text": "t", "blocks": [section("hello")]}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["channel"], id.as_str());
    assert_eq!(v["message"]["text"], "t");
    assert!(v["ts"].as_str().unwrap().contains('.'));
    let (_, v2) = call_json(
        &e,
        "chat.postMessage",
        Some(TOKEN),
        json!({"channel": id, "text": "again"}),
    )
    .await;
    assert_ne!(v["ts"], v2["ts"], "timestamps identify messages");
    assert_eq!(e.messages("#payments-oncall").len(), 2);
    for (body, error) in [
        (
            json!({"channel": "#nope", "text": "x"}),
            "channel_not_found",
        ),
        (json!({"text": "x"}), "channel_not_found"),
        (json!({"channel": id}), "no_text"),
    ] {
        let (_, v) = call_json(&e, "chat.postMessage", Some(TOKEN), body).await;
        assert_eq!(v["error"], error);
    }
}

#[tokio::test]
async fn block_kit_limits_are_enforced_as_invalid_blocks() {
    let e = emu().await;
    let button = |id: &str, value: &str| json!({"type": "button", "action_id": id, "value": value, "text": {"type": "plain_text", "text": "Go"}});
    let cases = vec![
        (json!([{"type": "bogus"}]), "unsupported type"),
        (
            json!((0..51).map(|_| section("x")).collect::<Vec<_>>()),
            "no more than 50",
        ),
        (json!([section(&"x".repeat(3001))]), "less than 3001"),
        (
            json!([{"type": "actions", "elements": [button(&"a".repeat(256), "v")]}]),
            "action_id",
        ),
        (
            json!([{"type": "actions", "elements": [button("a", &"v".repeat(2001))]}]),
            "value",
        ),
        (
            json!([{"type": "actions", "elements": [button("a", "v"), button("a", "w")]}]),
            "duplicate action_id",
        ),
        (json!([{"type": "section"}]), "text or fields"),
    ];
    for (blocks, why) in cases {
        let (_, v) = call_json(
            &e,
            "chat.postMessage",
            Some(TOKEN),
            json!({"channel": "#payments-oncall", "text": "x", "blocks": blocks}),
        )
        .await;
        assert_eq!(v["error"], "invalid_blocks", "{why}: {v}");
        assert!(v["errors"].to_string().contains(why), "{why}: {v}");
    }
    let ok = json!([section(&"x".repeat(3000)), {"type": "actions", "elements": [button("a", &"v".repeat(2000)), button("b", "v")]}]);
    let (_, v) = call_json(
        &e,
        "chat.postMessage",
        Some(TOKEN),
        json!({"channel": "#payments-oncall", "text": "x", "blocks": ok}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
}

#[tokio::test]
async fn update_needs_a_channel_id_and_an_existing_message_and_keeps_blocks_when_omitted() {
    let e = emu().await;
    let (_, posted) = call_json(
        &e,
        "chat.postMessage",
        Some(TOKEN),
        json!({"channel": "#payments-oncall", "text": "a", "blocks": [section("one")]}),
    )
    .await;
    let (ch, ts) = (posted["channel"].clone(), posted["ts"].clone());
    let (_, v) = call_json(
        &e,
        "chat.update",
        Some(TOKEN),
        json!({"channel": "#payments-oncall", "ts": ts, "text": "b"}),
    )
    .await;
    assert_eq!(
        v["error"], "channel_not_found",
        "names are not accepted by chat.update"
    );
    let (_, v) = call_json(
        &e,
        "chat.update",
        Some(TOKEN),
        json!({"channel": ch, "ts": "1.000001", "text": "b"}),
    )
    .await;
    assert_eq!(v["error"], "message_not_found");
    let (_, v) = call_json(
        &e,
        "chat.update",
        Some(TOKEN),
        json!({"channel": ch, "ts": ts, "text": "b"}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    let m = &e.messages("#payments-oncall")[0];
    assert_eq!((m.text.as_str(), m.edits), ("b", 1));
    assert_eq!(m.blocks, json!([section("one")]));
    let (_, v) = call_json(
        &e,
        "chat.update",
        Some(TOKEN),
        json!({"channel": ch, "ts": ts, "blocks": []}),
    )
    .await;
    assert_eq!(v["ok"], true);
    assert_eq!(e.messages("#payments-oncall")[0].blocks, json!([]));
    assert_eq!(e.updates().len(), 2);
}

#[tokio::test]
async fn users_info_returns_the_profile_email_and_refuses_unknown_users() {
    let e = emu().await;
    let get = |user: &str| {
        reqwest::Client::new()
            .get(format!("{}/users.info?user={user}", e.api_base()))
            .bearer_auth(TOKEN)
            .send()
    };
    let v: Value = get("U024BE7LH").await.unwrap().json().await.unwrap();
    assert_eq!(v["user"]["profile"]["email"], "bob@example.com");
    assert_eq!(v["user"]["deleted"], false);
    let v: Value = get("U000000").await.unwrap().json().await.unwrap();
    assert_eq!(v["error"], "user_not_found");
    e.deactivate_user("U024BE7LH");
    let v: Value = get("U024BE7LH").await.unwrap().json().await.unwrap();
    assert_eq!(v["user"]["deleted"], true);
}

#[tokio::test]
async fn outages_answer_500_or_429_with_retry_after_then_recover() {
    let e = emu().await;
    let body = json!({"channel": "#payments-oncall", "text": "x"});
    e.fail_next(2, Failure::RateLimited { retry_after: 7 });
    for _ in 0..2 {
        let r = reqwest::Client::new()
            .post(format!("{}/chat.postMessage", e.api_base()))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "7");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "ratelimited");
    }
    e.fail_next(1, Failure::ServerError);
    assert_eq!(
        reqwest::Client::new()
            .post(format!("{}/chat.postMessage", e.api_base()))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        500
    );
    assert_eq!(
        call_json(&e, "chat.postMessage", Some(TOKEN), body).await.1["ok"],
        true
    );
    assert_eq!(e.stats().failures, 3);
}

#[tokio::test]
async fn response_urls_record_json_posts() {
    let e = emu().await;
    let url = e.new_response_url();
    let r = reqwest::Client::new()
        .post(&url)
        .json(&json!({"response_type": "ephemeral", "text": "done"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::Client::new()
        .post(&url)
        .body("text=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let posts = e.response_posts();
    assert_eq!(posts.len(), 1);
    assert!(url.ends_with(&posts[0].path));
    assert_eq!(posts[0].body["text"], "done");
}

#[test]
fn interactions_are_form_encoded_and_signed_like_slacks() {
    let i = SignedInteraction::button_click(
        "secret",
        1_700_000_000,
        "U1",
        "approve",
        "req1",
        "C1",
        "1.2",
        "http://x/actions/T/1/r",
    );
    assert_eq!(i.timestamp, "1700000000");
    assert_eq!(
        i.signature,
        airlock_core::notify::slack_signature(b"secret", "1700000000", i.body.as_bytes())
    );
    let encoded = i.body.strip_prefix("payload=").unwrap();
    assert!(!encoded.contains('{') && !encoded.contains('"'));
    assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
}
