//! The IAM policy as airlock reads and edits it. Fields airlock does not know
//! are kept verbatim (`rest`), so writing a policy back never loses what
//! someone else put there. Edits touch only bindings whose condition title
//! is airlock's (`airlock <request id>`). Pure: time is passed in.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// Condition titles of the bindings airlock owns start with this.
pub const TITLE_PREFIX: &str = "airlock ";

/// An IAM allow policy (`google.iam.v1.Policy`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Policy format version; airlock always writes 3 (conditions).
    #[serde(default)]
    pub version: i32,
    /// Role bindings (Google omits the field when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<Binding>,
    /// Optimistic-concurrency token from the read, sent back on write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Everything else (`auditConfigs`, ...), kept as read.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One role granted to principals, optionally under a condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    /// `roles/...` or a custom role.
    pub role: String,
    /// `user:...`, `group:...`, ...
    #[serde(default)]
    pub members: Vec<String>,
    /// When the binding applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Expr>,
    /// Unknown fields, kept as read.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A condition (`google.type.Expr`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expr {
    /// CEL expression.
    #[serde(default)]
    pub expression: String,
    /// Short name; airlock's is `airlock <request id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Unknown fields (`location`, ...), kept as read.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The condition title of a request's binding.
pub fn title(request_id: &str) -> String {
    format!("{TITLE_PREFIX}{request_id}")
}

/// `request.time < timestamp("…Z")` with `not_after` in UTC, rounded down to
/// the second so access never outlives the grant.
pub fn expiry_expression(not_after: OffsetDateTime) -> String {
    let utc = not_after
        .to_offset(UtcOffset::UTC)
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond");
    let text = utc
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .expect("a UTC time formats");
    format!("request.time < timestamp(\"{text}\")")
}

/// The end of access an expression of airlock's form states, if it has that form.
pub fn expiry_of(expression: &str) -> Option<OffsetDateTime> {
    let arg = expression
        .trim()
        .strip_prefix("request.time")?
        .trim_start()
        .strip_prefix('<')?
        .trim_start()
        .strip_prefix("timestamp(")?
        .strip_suffix(')')?
        .trim();
    let text = ['"', '\'']
        .iter()
        .find_map(|q| arg.strip_prefix(*q)?.strip_suffix(*q))?;
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

impl Binding {
    /// airlock's binding: `role` for `member` until `not_after`, titled for the request.
    pub fn airlock(
        role: &str,
        member: &str,
        request_id: &str,
        description: String,
        not_after: OffsetDateTime,
    ) -> Binding {
        Binding {
            role: role.into(),
            members: vec![member.into()],
            condition: Some(Expr {
                expression: expiry_expression(not_after),
                title: Some(title(request_id)),
                description: Some(description),
                rest: Map::new(),
            }),
            rest: Map::new(),
        }
    }

    /// The condition title, if any.
    pub fn title(&self) -> Option<&str> {
        self.condition.as_ref().and_then(|c| c.title.as_deref())
    }

    /// Whether airlock owns this binding (its condition title says so).
    pub fn is_airlock(&self) -> bool {
        self.title().is_some_and(|t| t.starts_with(TITLE_PREFIX))
    }

    /// Whether this is an airlock binding whose stated expiry is at or before `now`.
    fn is_expired_airlock(&self, now: OffsetDateTime) -> bool {
        self.is_airlock()
            && self
                .condition
                .as_ref()
                .and_then(|c| expiry_of(&c.expression))
                .is_some_and(|t| t <= now)
    }

    /// Same grant as `other`: role, members (emails compare case-insensitively),
    /// title and expression. The description is informational.
    fn grants_same_as(&self, other: &Binding) -> bool {
        let cond = |b: &Binding| {
            b.condition
                .as_ref()
                .map(|c| (c.title.clone(), c.expression.clone()))
        };
        self.role == other.role
            && self.members.len() == other.members.len()
            && self
                .members
                .iter()
                .zip(&other.members)
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
            && cond(self) == cond(other)
    }

    /// The drift account name: `<role> <members,...> <title>` (the title last,
    /// as it is the only part that may hold spaces).
    pub fn account(&self) -> String {
        format!(
            "{} {} {}",
            self.role,
            self.members.join(","),
            self.title().unwrap_or_default()
        )
    }
}

impl Policy {
    /// Makes `want` present exactly once among the bindings titled like it,
    /// replacing a stale one (other role, member or expiry). Returns whether
    /// anything changed.
    pub fn ensure(&mut self, want: &Binding) -> bool {
        let t = want.title();
        let same_title = |b: &Binding| b.title() == t;
        let exact = self
            .bindings
            .iter()
            .filter(|b| b.grants_same_as(want))
            .count();
        let titled = self.bindings.iter().filter(|b| same_title(b)).count();
        if exact == 1 && titled == 1 {
            return false;
        }
        self.bindings.retain(|b| !same_title(b));
        self.bindings.push(want.clone());
        true
    }

    /// Removes every binding with condition title `title`; returns whether any was there.
    pub fn remove_titled(&mut self, title: &str) -> bool {
        let before = self.bindings.len();
        self.bindings.retain(|b| b.title() != Some(title));
        self.bindings.len() != before
    }

    /// Removes the airlock binding whose drift account name is `account`.
    pub fn remove_account(&mut self, account: &str) -> bool {
        let before = self.bindings.len();
        self.bindings
            .retain(|b| !(b.is_airlock() && b.account() == account));
        self.bindings.len() != before
    }

    /// Removes airlock bindings that have expired by `now` (they grant nothing
    /// but count against the policy size limit), except one titled `keep`.
    /// Returns how many went.
    pub fn remove_expired(&mut self, now: OffsetDateTime, keep: Option<&str>) -> usize {
        let before = self.bindings.len();
        self.bindings
            .retain(|b| !b.is_expired_airlock(now) || (keep.is_some() && b.title() == keep));
        before - self.bindings.len()
    }

    /// Bindings airlock owns.
    pub fn airlock_bindings(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.iter().filter(|b| b.is_airlock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn ours(id: &str, member: &str, until: OffsetDateTime) -> Binding {
        Binding::airlock("roles/viewer", member, id, "d".into(), until)
    }

    fn theirs(role: &str, member: &str) -> Binding {
        Binding {
            role: role.into(),
            members: vec![member.into()],
            condition: None,
            rest: Map::new(),
        }
    }

    #[test]
    fn expression_is_utc_seconds_rounded_down() {
        let t = datetime!(2030-05-06 09:10:11.999 +02:00);
        let e = expiry_expression(t);
        assert_eq!(e, "request.time < timestamp(\"2030-05-06T07:10:11Z\")");
        assert_eq!(expiry_of(&e), Some(datetime!(2030-05-06 07:10:11 UTC)));
        assert_eq!(
            expiry_of("request.time > timestamp(\"2030-05-06T07:10:11Z\")"),
            None
        );
        assert_eq!(expiry_of("resource.name == 'x'"), None);
    }

    #[test]
    fn ensure_is_idempotent_and_replaces_a_stale_binding() {
        let until = datetime!(2030-01-01 0:00 UTC);
        let mut p = Policy {
            bindings: vec![theirs("roles/owner", "user:o@example.com")],
            ..Default::default()
        };
        assert!(p.ensure(&ours("r1", "user:a@example.com", until)));
        assert!(!p.ensure(&ours("r1", "user:A@example.com", until)));
        assert_eq!(p.bindings.len(), 2);
        let later = datetime!(2030-01-02 0:00 UTC);
        assert!(p.ensure(&ours("r1", "user:a@example.com", later)));
        assert_eq!(p.bindings.len(), 2);
        assert_eq!(p.bindings[0], theirs("roles/owner", "user:o@example.com"));
    }

    #[test]
    fn only_expired_airlock_bindings_are_cleaned() {
        let now = datetime!(2030-01-01 12:00 UTC);
        let mut foreign_expired = theirs("roles/viewer", "user:x@example.com");
        foreign_expired.condition = Some(Expr {
            expression: expiry_expression(datetime!(2020-01-01 0:00 UTC)),
            title: Some("temporary".into()),
            description: None,
            rest: Map::new(),
        });
        let mut p = Policy {
            bindings: vec![
                ours("old", "user:a@example.com", datetime!(2030-01-01 11:00 UTC)),
                ours(
                    "live",
                    "user:a@example.com",
                    datetime!(2030-01-01 13:00 UTC),
                ),
                ours(
                    "mine",
                    "user:a@example.com",
                    datetime!(2030-01-01 11:00 UTC),
                ),
                foreign_expired.clone(),
            ],
            ..Default::default()
        };
        assert_eq!(p.remove_expired(now, Some("airlock mine")), 1);
        let titles: Vec<_> = p.bindings.iter().filter_map(|b| b.title()).collect();
        assert_eq!(titles, ["airlock live", "airlock mine", "temporary"]);
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let text = r#"{"version":3,"etag":"BwX=","auditConfigs":[{"service":"allServices"}],
            "bindings":[{"role":"roles/viewer","members":["user:a@example.com"],
            "condition":{"expression":"true","title":"t","location":"f.tf:3"},"future":1}]}"#;
        let p: Policy = serde_json::from_str(text).unwrap();
        let back: serde_json::Value = serde_json::to_value(&p).unwrap();
        let orig: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn account_names_round_trip_through_remove_account() {
        let until = datetime!(2030-01-01 0:00 UTC);
        let b = ours("r1", "user:a@example.com", until);
        assert_eq!(b.account(), "roles/viewer user:a@example.com airlock r1");
        let mut p = Policy {
            bindings: vec![b.clone(), theirs("roles/viewer", "user:a@example.com")],
            ..Default::default()
        };
        assert!(!p.remove_account("roles/viewer user:a@example.com "));
        assert!(p.remove_account(&b.account()));
        assert_eq!(p.bindings.len(), 1);
    }
}
