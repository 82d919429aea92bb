//! Slack approvals through the real binary, against the local emulation of
//! chat.postMessage / chat.update / users.info / response_url (no Slack can
//! be reached here; airlock's code path is the production one, only
//! `api_base` points at the emulation). Interaction callbacks are signed
//! exactly as Slack signs them.

use std::time::{Duration, Instant};

use airlock_emulators::slack::{Failure, Message, SignedInteraction, SlackEmulator};
use serde_json::Value;

use crate::kit::*;

const TOKEN: &str = "xoxb-e2e-bot-token";
const SECRET: &str = "e2e-signing-secret-8f742231b10e";
const ALICE: &str = "U0ALICE01";
const BOB: &str = "U0BOB0001";
const CAROL: &str = "U0CAROL01";
const MALLORY: &str = "U0MALLORY";

/// Slack runs in this test's own runtime; the server is the real binary.
struct World {
    _rt: tokio::runtime::Runtime,
    emu: SlackEmulator,
    s: Server,
    alice: String,
}

fn world(db: Db) -> World {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emu = rt.block_on(SlackEmulator::start(TOKEN));
    emu.add_channel("#payments-oncall");
    emu.add_channel("#airlock");
    emu.add_user(ALICE, "alice", Some("alice@example.com"));
    // bob's Slack email differs from airlock's: he is mapped by slack_id.
    emu.add_user(BOB, "bob", Some("bob@personal.example"));
    // carol is mapped by email (case differs on purpose).
    emu.add_user(CAROL, "carol", Some("Carol@Example.com"));
    emu.add_user(MALLORY, "mallory", Some("mallory@example.com"));
    let mut setup = Setup::new(db);
    setup.extra = format!(
        r##"
[[user]]
name = "bob"
slack_id = "{BOB}"

[[user]]
name = "carol"
email = "carol@example.com"

[notify.slack]
bot_token = "{TOKEN}"
signing_secret_file = "slack-signing-secret"
api_base = "{api}"
channel = "#airlock"
team_id = "{team}"

[[service]]
name = "payments"
owners = ["payments-eng"]
slack_channel = "#payments-oncall"

[[entitlement]]
name = "payments-svc-write"
description = "Write access to payments, owned by the payments service"
provider = "pg-main"
role = "{WRITER_ROLE}"
max_duration = "1h"
service = "payments"
approvals = {{ count = 1 }}

[[entitlement]]
name = "slack-two-person"
provider = "pg-main"
role = "{WRITER_ROLE}"
max_duration = "1h"
approvals = {{ count = 2, reviewers = ["payments-eng", "carol"] }}
"##,
        api = emu.api_base(),
        team = airlock_emulators::slack::TEAM_ID
    );
    let s = Server::start_with_files(setup, &[("slack-signing-secret", &format!("{SECRET}\n"))]);
    let alice = s.token("alice");
    World {
        _rt: rt,
        emu,
        s,
        alice,
    }
}

fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl World {
    fn request(&self, entitlement: &str) -> String {
        let r = self.s.json(
            &self.alice,
            &[
                "request",
                entitlement,
                "--for",
                "10m",
                "--reason",
                "INC-42 <b>&co",
            ],
        );
        id_of(&r)
    }

    /// The one message about `id` in `channel`.
    fn message(&self, channel: &str, id: &str) -> Message {
        self.message_within(15, channel, id)
    }

    fn message_within(&self, secs: u64, channel: &str, id: &str) -> Message {
        eventually(
            secs,
            &format!("a Slack message about {id} in {channel}"),
            || {
                let found: Vec<Message> = self
                    .emu
                    .messages(channel)
                    .into_iter()
                    .filter(|m| m.blocks.to_string().contains(id))
                    .collect();
                assert!(found.len() <= 1, "posted twice: {found:?}");
                found.into_iter().next()
            },
        )
    }

    fn click(
        &self,
        user: &str,
        action: &str,
        id: &str,
        at: &Message,
        ts: i64,
        secret: &str,
    ) -> (SignedInteraction, String) {
        let url = self.emu.new_response_url();
        let i = SignedInteraction::button_click(
            secret,
            ts,
            user,
            action,
            id,
            &at.channel,
            &at.ts,
            &url,
        );
        (i, url)
    }

    /// Posts `i` and returns what the clicker was told at `url`.
    fn hear(&self, i: &SignedInteraction, url: &str) -> String {
        let (status, _, body) = self.post(i);
        assert_eq!(status, 200, "{body}");
        let path = url
            .split_once("/actions/")
            .map(|(_, p)| format!("/actions/{p}"))
            .unwrap();
        let post = eventually(10, "the response_url post", || {
            self.emu
                .response_posts()
                .into_iter()
                .find(|p| p.path == path)
        });
        assert_eq!(post.body["response_type"], "ephemeral");
        post.body["text"].as_str().unwrap().to_string()
    }

    fn post(&self, i: &SignedInteraction) -> (u16, String, String) {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let res = agent
            .post(&format!("{}/api/v1/slack/interactions", self.s.addr))
            .set("Content-Type", "application/x-www-form-urlencoded")
            .set("X-Slack-Request-Timestamp", &i.timestamp)
            .set("X-Slack-Signature", &i.signature)
            .send_string(&i.body);
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("transport error: {e}"),
        };
        let status = resp.status();
        let ctype = resp.content_type().to_string();
        (status, ctype, resp.into_string().unwrap_or_default())
    }

    /// Clicks and returns what the clicker was told (ephemerally).
    fn click_and_hear(&self, user: &str, action: &str, id: &str, at: &Message) -> String {
        let (i, url) = self.click(user, action, id, at, now(), SECRET);
        self.hear(&i, &url)
    }

    fn show(&self, id: &str) -> Value {
        self.s.json(&self.alice, &["show", id])
    }
}

fn buttons(m: &Message) -> Vec<Value> {
    m.blocks
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn slack_request_is_posted_to_the_service_channel_and_approved_by_a_signed_click_then_updated_in_place(
) {
    let w = world(Db::Sqlite);
    let id = w.request("payments-svc-write");
    let m = w.message("#payments-oncall", &id);
    assert!(
        w.emu.messages("#airlock").is_empty(),
        "service channel wins over the default"
    );
    let b = buttons(&m);
    assert_eq!(b.len(), 2, "{}", m.blocks);
    assert_eq!(b[0]["action_id"], "airlock_request_approve");
    assert_eq!(b[1]["action_id"], "airlock_request_deny");
    assert!(b.iter().all(|x| x["value"] == id.as_str()));
    let text = m.blocks.to_string();
    assert!(
        text.contains("alice") && text.contains("payments-svc-write") && text.contains("10m"),
        "{text}"
    );
    assert!(
        text.contains("INC-42 &lt;b&gt;&amp;co"),
        "reason escaped: {text}"
    );

    // ACCEPTANCE: a bad signature is refused (401) and changes nothing.
    let (forged, _) = w.click(
        BOB,
        "airlock_request_approve",
        &id,
        &m,
        now(),
        "not-the-secret",
    );
    let (status, ctype, body) = w.post(&forged);
    assert_eq!(status, 401, "{body}");
    assert_eq!(ctype, "application/problem+json");
    assert!(body.contains("signing_secret"), "{body}");
    // The same body with a signature for another body.
    let (good, _) = w.click(BOB, "airlock_request_approve", &id, &m, now(), SECRET);
    let (other, _) = w.click(BOB, "airlock_request_deny", &id, &m, now(), SECRET);
    let spliced = SignedInteraction {
        signature: other.signature,
        ..good
    };
    assert_eq!(w.post(&spliced).0, 401);

    // ACCEPTANCE: a stale (> 5 min) timestamp is refused even when correctly signed.
    let (stale, _) = w.click(BOB, "airlock_request_approve", &id, &m, now() - 301, SECRET);
    let (status, _, body) = w.post(&stale);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("5 minutes"), "{body}");
    std::thread::sleep(Duration::from_millis(500));
    let r = w.show(&id);
    assert_eq!(r["state"], "pending");
    assert_eq!(r["reviews"].as_array().unwrap().len(), 0);
    assert!(
        w.emu.response_posts().is_empty(),
        "refused callbacks get no answer"
    );

    // ACCEPTANCE: the requester's own Slack user (mapped by email) is refused as self-approval.
    let told = w.click_and_hear(ALICE, "airlock_request_approve", &id, &m);
    assert!(told.contains("cannot review your own request"), "{told}");
    assert_eq!(w.show(&id)["state"], "pending");

    // An unknown Slack user is refused with what to do.
    let told = w.click_and_hear(MALLORY, "airlock_request_approve", &id, &m);
    assert!(
        told.contains("does not know Slack user U0MALLORY") && told.contains("slack_id"),
        "{told}"
    );

    // bob (mapped by slack_id) approves: same rules as the API, then active.
    let told = w.click_and_hear(BOB, "airlock_request_approve", &id, &m);
    assert!(told.contains("recorded"), "{told}");
    w.s.wait_for(&w.alice, &id, 15, |r| r["state"] == "active");

    // The same message (same ts) now says who approved and that it is active, without buttons.
    let updated = eventually(15, "the message to show the grant active", || {
        let now = w.message("#payments-oncall", &id);
        now.blocks.to_string().contains("*Active*").then_some(now)
    });
    assert_eq!(updated.ts, m.ts);
    let text = updated.blocks.to_string();
    assert!(text.contains("approved by *bob*"), "{text}");
    assert!(buttons(&updated).is_empty(), "{text}");
    assert!(w.emu.updates().iter().all(|u| u.ts == m.ts));

    // The audit log says the review came from Slack.
    let out = w.s.cli(&w.s.admin, &["audit", "export"]);
    let reviewed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "request.reviewed" && e["subject"] == format!("request:{id}"))
        .collect();
    assert_eq!(reviewed.len(), 1, "{reviewed:?}");
    assert_eq!(reviewed[0]["actor"], "bob");
    assert_eq!(reviewed[0]["data"]["surface"], "slack");
}

#[test]
fn slack_two_of_m_needs_two_distinct_slack_users_and_lands_in_the_default_channel() {
    let w = world(Db::Postgres);
    let id = w.request("slack-two-person");
    let m = w.message("#airlock", &id);
    let told = w.click_and_hear(BOB, "airlock_request_approve", &id, &m);
    assert!(told.contains("pending"), "{told}");
    eventually(15, "the message to show one of two approvals", || {
        w.message("#airlock", &id)
            .blocks
            .to_string()
            .contains("1 of 2 approvals (*bob*)")
            .then_some(())
    });
    // The same Slack user again does not count twice.
    let told = w.click_and_hear(BOB, "airlock_request_approve", &id, &m);
    assert!(told.contains("refused"), "{told}");
    assert_eq!(w.show(&id)["state"], "pending");
    // carol is found by her Slack profile email through users.info.
    let told = w.click_and_hear(CAROL, "airlock_request_approve", &id, &m);
    assert!(told.contains("recorded"), "{told}");
    w.s.wait_for(&w.alice, &id, 15, |r| r["state"] == "active");
    assert!(w.emu.stats().users_info >= 1);
    let text = eventually(15, "the message to show the grant active", || {
        let t = w.message("#airlock", &id).blocks.to_string();
        t.contains("*Active*").then_some(t)
    });
    assert!(text.contains("*bob*, *carol*"), "{text}");
}

#[test]
fn slack_outage_delays_but_does_not_lose_the_message_even_across_a_restart() {
    let mut w = world(Db::Sqlite);
    w.emu.fail_next(u32::MAX, Failure::ServerError);
    let id = w.request("payments-svc-write");
    eventually(10, "airlock to try Slack during the outage", || {
        (w.emu.stats().failures >= 2).then_some(())
    });
    w.s.kill9();
    w.s.boot();
    std::thread::sleep(Duration::from_millis(500));
    assert!(w.emu.messages("#payments-oncall").is_empty());
    // Slack comes back, rate limiting at first. The restarted process takes
    // over the delivery lease once the old process's lease (30 s) runs out.
    w.emu.fail_next(2, Failure::RateLimited { retry_after: 1 });
    let m = w.message_within(60, "#payments-oncall", &id);
    assert_eq!(buttons(&m).len(), 2);
    let bob = w.s.token("bob");
    w.s.json(&bob, &["review", &id, "--approve"]);
    w.s.wait_for(&w.alice, &id, 15, |r| r["state"] == "active");
    let text = eventually(15, "the message to show the grant active", || {
        let t = w.message("#payments-oncall", &id).blocks.to_string();
        t.contains("*Active*").then_some(t)
    });
    assert!(text.contains("approved by *bob*"), "{text}");
    assert_eq!(
        w.emu.messages("#payments-oncall").len(),
        1,
        "posted exactly once"
    );
}

#[test]
fn slack_clicks_from_another_workspace_external_members_or_unconfirmed_emails_are_refused() {
    let w = world(Db::Sqlite);
    let id = w.request("slack-two-person");
    let m = w.message("#airlock", &id);
    let click_in = |team: &str, user_team: &str, user: &str| {
        let url = w.emu.new_response_url();
        let i = SignedInteraction::button_click_in(
            team,
            user_team,
            SECRET,
            now(),
            user,
            "airlock_request_approve",
            &id,
            &m.channel,
            &m.ts,
            &url,
        );
        w.hear(&i, &url)
    };
    // bob is a reviewer, mapped by slack_id: but not through another workspace.
    let told = click_in("T0OTHER99", "T0OTHER99", BOB);
    assert!(told.contains("workspace T0OTHER99"), "{told}");
    let told = click_in(airlock_emulators::slack::TEAM_ID, "T0EXTERNAL", BOB);
    assert!(told.contains("external (Slack Connect)"), "{told}");
    // An external member with carol's email, whose payload claims our team:
    // users.info says otherwise, so the email maps nobody.
    w.emu.add_external_user(
        "U0EXTERNAL",
        "carol",
        Some("carol@example.com"),
        "T0EXTERNAL",
    );
    let told = w.click_and_hear("U0EXTERNAL", "airlock_request_approve", &id, &m);
    assert!(told.contains("belongs to another workspace"), "{told}");
    // carol herself, while her Slack email is unconfirmed.
    w.emu.unconfirm_email(CAROL);
    let told = w.click_and_hear(CAROL, "airlock_request_approve", &id, &m);
    assert!(told.contains("email is not confirmed"), "{told}");
    assert_eq!(w.show(&id)["state"], "pending");
    assert!(w.show(&id)["reviews"].as_array().unwrap().is_empty());
}
