//! Errors on the wire: `application/problem+json` (RFC 9457).

use serde::{Deserialize, Serialize};

/// Content type of an error body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// An error body. `detail` says what went wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Always `about:blank`: the status says the kind.
    #[serde(rename = "type", default = "about_blank")]
    pub kind: String,
    /// The status's reason phrase.
    #[serde(default)]
    pub title: String,
    /// The HTTP status code.
    #[serde(default)]
    pub status: u16,
    /// What went wrong and what to do, for people.
    #[serde(default)]
    pub detail: String,
    /// For a conflict: the state the object is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_state: Option<String>,
    /// For invalid input: the field at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

fn about_blank() -> String {
    "about:blank".into()
}

impl Problem {
    /// The `detail` of a problem body, or `None` when `body` is not one.
    pub fn detail_of(body: &str) -> Option<String> {
        serde_json::from_str::<Problem>(body)
            .ok()
            .map(|p| p.detail)
            .filter(|d| !d.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_detail() {
        let p = Problem {
            kind: about_blank(),
            title: "Conflict".into(),
            status: 409,
            detail: "request is active; revoke it instead".into(),
            current_state: Some("active".into()),
            field: None,
        };
        let text = serde_json::to_string(&p).unwrap();
        assert!(
            !text.contains("field"),
            "absent fields are left out: {text}"
        );
        assert_eq!(serde_json::from_str::<Problem>(&text).unwrap(), p);
        assert_eq!(
            Problem::detail_of(&text).as_deref(),
            Some("request is active; revoke it instead")
        );
        assert_eq!(Problem::detail_of("upstream proxy error"), None);
        assert_eq!(Problem::detail_of(r#"{"detail":""}"#), None);
    }
}
