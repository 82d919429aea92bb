use airlock_core::request::{GrantPhase, GrantStatus, Review};
use airlock_core::{EntitlementName, Span, UserName};
use time::macros::datetime;

use super::*;

fn request(reason: &str) -> Request {
    let now = datetime!(2026-11-23 10:00 UTC);
    Request {
        id: airlock_core::request::RequestId::parse("abcdefghijklmnop").unwrap(),
        entitlement: EntitlementName::parse("payments-db-write").unwrap(),
        requester: UserName::parse("alice").unwrap(),
        reason: reason.into(),
        state: RequestState::Pending,
        requested_duration: "30m".parse::<Span>().unwrap(),
        not_before: None,
        not_after: None,
        breakglass: false,
        post_review_closed: false,
        reviews: vec![],
        grant: GrantStatus {
            phase: GrantPhase::None,
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
        },
        created_at: now,
        updated_at: now,
        secret_salt: vec![],
    }
}

fn rule(count: u32) -> ApprovalRule {
    ApprovalRule {
        count,
        reviewers: vec!["payments-eng".into()],
    }
}

fn all_text(m: &Message) -> String {
    m.blocks.to_string()
}

fn actions(m: &Message) -> Vec<Value> {
    m.blocks
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "actions")
        .cloned()
        .collect()
}

#[test]
fn control_characters_in_reasons_are_escaped_per_mrkdwn_rules() {
    let m = request_message(
        &request("INC-1 <!channel> <https://evil.example|click> & co > x"),
        &rule(1),
        "",
    );
    let t = all_text(&m);
    assert!(
        t.contains("INC-1 &lt;!channel&gt; &lt;https://evil.example|click&gt; &amp; co &gt; x"),
        "{t}"
    );
    assert!(
        !t.contains("<!channel>") && !t.contains("<https://evil"),
        "{t}"
    );
    assert_eq!(escape("a&b<c>d"), "a&amp;b&lt;c&gt;d");
}

#[test]
fn a_pending_request_shows_what_who_why_how_long_and_two_buttons_carrying_its_id() {
    let m = request_message(&request("INC-4211 db is on fire"), &rule(2), "Write access");
    let t = all_text(&m);
    for want in [
        "*alice*",
        "payments-db-write",
        "30m",
        "INC-4211 db is on fire",
        "Write access",
        "waiting for 2 approvals",
    ] {
        assert!(t.contains(want), "{want} missing in {t}");
    }
    let a = actions(&m);
    assert_eq!(a.len(), 1);
    let els = a[0]["elements"].as_array().unwrap();
    assert_eq!(els.len(), 2);
    assert_eq!(els[0]["action_id"], APPROVE_REQUEST);
    assert_eq!(els[1]["action_id"], DENY_REQUEST);
    assert!(els.iter().all(|b| b["value"] == "abcdefghijklmnop"));
    assert!(m.text.contains("alice") && m.text.contains("payments-db-write"));
}

#[test]
fn buttons_disappear_and_the_approvers_show_once_the_request_is_not_pending() {
    let mut r = request("INC-1");
    r.reviews.push(Review {
        reviewer: UserName::parse("bob").unwrap(),
        decision: ReviewDecision::Approve,
        comment: None,
        at: r.created_at,
    });
    r.state = RequestState::Active;
    r.not_after = Some(datetime!(2026-11-23 10:30 UTC));
    let m = request_message(&r, &rule(1), "");
    assert!(actions(&m).is_empty());
    let t = all_text(&m);
    assert!(
        t.contains("*Active*") && t.contains("approved by *bob*"),
        "{t}"
    );
    assert!(t.contains("2026-11-23T10:30:00Z"), "{t}");
}

#[test]
fn partial_approvals_show_who_approved_so_far() {
    let mut r = request("INC-1");
    r.reviews.push(Review {
        reviewer: UserName::parse("bob").unwrap(),
        decision: ReviewDecision::Approve,
        comment: None,
        at: r.created_at,
    });
    let t = all_text(&request_message(&r, &rule(2), ""));
    assert!(t.contains("1 of 2 approvals (*bob*)"), "{t}");
}

#[test]
fn break_glass_is_loud_and_has_no_buttons() {
    let mut r = request("INC-9 outage");
    r.breakglass = true;
    r.state = RequestState::Approved;
    let m = request_message(&r, &rule(1), "");
    assert!(m.text.starts_with("BREAK-GLASS"), "{}", m.text);
    assert!(all_text(&m).contains(":rotating_light:"));
    assert!(actions(&m).is_empty());
}

#[test]
fn long_reasons_are_cut_so_every_section_stays_within_slacks_limit() {
    let long = "<&>".repeat(5000) + &"\n".repeat(500);
    let m = request_message(&request(&long), &rule(1), &"d".repeat(5000));
    for b in m.blocks.as_array().unwrap() {
        if let Some(t) = b["text"]["text"].as_str() {
            assert!(t.chars().count() <= MAX_SECTION_TEXT, "{}", t.len());
            assert!(
                !t.ends_with("&am…") && !t.ends_with("&l…"),
                "entity cut: {t}"
            );
        }
    }
    assert!(m.text.chars().count() <= 300);
}
