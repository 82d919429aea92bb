//! Block Kit checks a message must pass (the documented limits that matter
//! for interactive messages). Errors read like Slack's: a reason and a JSON
//! pointer.

use std::collections::HashSet;

use serde_json::Value;

/// Block types a message may carry.
const MESSAGE_BLOCKS: &[&str] = &[
    "section",
    "divider",
    "image",
    "actions",
    "context",
    "header",
    "rich_text",
    "file",
    "video",
    "markdown",
];
/// Interactive elements an actions block may hold.
const ACTION_ELEMENTS: &[&str] = &[
    "button",
    "checkboxes",
    "datepicker",
    "datetimepicker",
    "multi_static_select",
    "multi_users_select",
    "multi_conversations_select",
    "multi_channels_select",
    "multi_external_select",
    "overflow",
    "radio_buttons",
    "static_select",
    "external_select",
    "users_select",
    "conversations_select",
    "channels_select",
    "timepicker",
];

/// Checks a `blocks` array; every problem found, as Slack lists them.
pub fn validate(blocks: &Value) -> Result<(), Vec<String>> {
    let mut errors = vec![];
    let Some(list) = blocks.as_array() else {
        return Err(vec!["must be an array [json-pointer:/blocks]".into()]);
    };
    if list.len() > 50 {
        errors.push("no more than 50 items allowed [json-pointer:/blocks]".into());
    }
    let mut block_ids = HashSet::new();
    let mut action_ids = HashSet::new();
    for (n, b) in list.iter().enumerate() {
        let at = format!("/blocks/{n}");
        let mut e = |why: &str, path: &str| errors.push(format!("{why} [json-pointer:{at}{path}]"));
        let kind = b["type"].as_str().unwrap_or_default();
        if !b.is_object() {
            e("must provide an object", "");
            continue;
        }
        if !MESSAGE_BLOCKS.contains(&kind) {
            e("unsupported type", "/type");
            continue;
        }
        if let Some(id) = b.get("block_id") {
            match id.as_str() {
                Some(s) if !s.is_empty() && s.chars().count() <= 255 => {
                    if !block_ids.insert(s.to_string()) {
                        e("duplicate block_id", "/block_id");
                    }
                }
                _ => e("must be a string of 1 to 255 characters", "/block_id"),
            }
        }
        match kind {
            "section" => {
                let has_text = b.get("text").is_some();
                let has_fields = b.get("fields").is_some();
                if !has_text && !has_fields {
                    e("must provide text or fields", "");
                }
                if has_text {
                    text_object(&b["text"], &["plain_text", "mrkdwn"], 3000, &mut e, "/text");
                }
                if has_fields {
                    match b["fields"].as_array() {
                        Some(f) if !f.is_empty() && f.len() <= 10 => {
                            for (k, t) in f.iter().enumerate() {
                                text_object(
                                    t,
                                    &["plain_text", "mrkdwn"],
                                    2000,
                                    &mut e,
                                    &format!("/fields/{k}"),
                                );
                            }
                        }
                        _ => e("must provide 1 to 10 items", "/fields"),
                    }
                }
                if let Some(acc) = b.get("accessory") {
                    element(acc, &mut action_ids, &mut e, "/accessory");
                }
            }
            "header" => text_object(&b["text"], &["plain_text"], 150, &mut e, "/text"),
            "context" => match b["elements"].as_array() {
                Some(els) if !els.is_empty() && els.len() <= 10 => {
                    for (k, t) in els.iter().enumerate() {
                        if t["type"] != "image" {
                            text_object(
                                t,
                                &["plain_text", "mrkdwn"],
                                3000,
                                &mut e,
                                &format!("/elements/{k}"),
                            );
                        }
                    }
                }
                _ => e("must provide 1 to 10 items", "/elements"),
            },
            "actions" => match b["elements"].as_array() {
                Some(els) if !els.is_empty() && els.len() <= 25 => {
                    for (k, el) in els.iter().enumerate() {
                        element(el, &mut action_ids, &mut e, &format!("/elements/{k}"));
                    }
                }
                _ => e("must provide 1 to 25 items", "/elements"),
            },
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn text_object(t: &Value, kinds: &[&str], max: usize, e: &mut impl FnMut(&str, &str), at: &str) {
    let kind = t["type"].as_str().unwrap_or_default();
    if !kinds.contains(&kind) {
        e(&format!("must be one of {kinds:?}"), &format!("{at}/type"));
    }
    match t["text"].as_str() {
        Some(s) if !s.is_empty() && s.chars().count() <= max => {}
        Some(s) if !s.is_empty() => e(
            &format!("must be less than {} characters", max + 1),
            &format!("{at}/text"),
        ),
        _ => e("must be a non-empty string", &format!("{at}/text")),
    }
}

fn element(el: &Value, action_ids: &mut HashSet<String>, e: &mut impl FnMut(&str, &str), at: &str) {
    let kind = el["type"].as_str().unwrap_or_default();
    if !ACTION_ELEMENTS.contains(&kind) {
        e("unsupported type", &format!("{at}/type"));
        return;
    }
    if let Some(id) = el.get("action_id") {
        match id.as_str() {
            Some(s) if !s.is_empty() && s.chars().count() <= 255 => {
                if !action_ids.insert(s.to_string()) {
                    e("duplicate action_id", &format!("{at}/action_id"));
                }
            }
            _ => e(
                "must be a string of 1 to 255 characters",
                &format!("{at}/action_id"),
            ),
        }
    }
    if kind == "button" {
        text_object(&el["text"], &["plain_text"], 75, e, &format!("{at}/text"));
        if let Some(v) = el.get("value") {
            if v.as_str().is_none_or(|s| s.chars().count() > 2000) {
                e(
                    "must be a string of at most 2000 characters",
                    &format!("{at}/value"),
                );
            }
        }
        if let Some(s) = el.get("style") {
            if s != "primary" && s != "danger" {
                e("must be primary or danger", &format!("{at}/style"));
            }
        }
    }
}
