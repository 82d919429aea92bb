//! The IAM allow-policy model of the emulation: the JSON shapes of `Policy`,
//! `Binding` and `Expr`, the documented validation and version rules, and the
//! one kind of condition airlock writes (`request.time` against a timestamp).

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// An IAM allow policy (`google.iam.v1.Policy` in its JSON form).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// 1 without conditions, 3 with; requests may also say 0 (= 1).
    #[serde(default)]
    pub version: i32,
    /// Role bindings; omitted from responses when empty, as Google does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<Binding>,
    /// Data Access audit logging settings (kept opaque).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit_configs: Vec<serde_json::Value>,
    /// Optimistic concurrency token (base64).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
}

/// One role granted to some principals, optionally under a condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Binding {
    /// `roles/...`, `projects/P/roles/...` or `organizations/O/roles/...`.
    pub role: String,
    /// Principals: `user:`, `serviceAccount:`, `group:`, `domain:`, ...
    #[serde(default)]
    pub members: Vec<String>,
    /// When the binding applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Expr>,
}

/// A CEL condition (`google.type.Expr`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expr {
    /// The CEL expression.
    pub expression: String,
    /// Required by IAM for conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Free text (file name and position, for tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

impl Binding {
    /// An unconditional binding.
    pub fn new(role: &str, members: &[&str]) -> Binding {
        Binding {
            role: role.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            condition: None,
        }
    }

    /// The same binding under a condition.
    pub fn with_condition(mut self, title: &str, expression: &str) -> Binding {
        self.condition = Some(Expr {
            expression: expression.into(),
            title: Some(title.into()),
            description: None,
            location: None,
        });
        self
    }
}

impl Policy {
    /// Whether any binding is conditional (which makes the policy version 3).
    pub fn has_conditions(&self) -> bool {
        self.bindings.iter().any(|b| b.condition.is_some())
    }

    /// The version IAM reports for this content: 3 with conditions, else 1.
    pub fn effective_version(&self) -> i32 {
        if self.has_conditions() {
            3
        } else {
            1
        }
    }

    /// Whether `member` holds `role` at `at`: some binding names both and its
    /// condition (if any) is true then.
    pub fn has_role(&self, member: &str, role: &str, at: OffsetDateTime) -> bool {
        self.bindings.iter().any(|b| {
            b.role == role
                && b.members.iter().any(|m| m == member)
                && b.condition
                    .as_ref()
                    .is_none_or(|c| Condition::parse(&c.expression).is_ok_and(|c| c.holds_at(at)))
        })
    }

    /// Number of principal occurrences (what the 1,500-principal limit counts).
    pub fn member_count(&self) -> usize {
        self.bindings.iter().map(|b| b.members.len()).sum()
    }
}

/// Why a policy in a `setIamPolicy` request is refused (HTTP 400 INVALID_ARGUMENT).
pub fn validate(policy: &Policy, member_limit: usize) -> Result<(), PolicyError> {
    if ![0, 1, 3].contains(&policy.version) {
        return Err(format!(
            "Invalid policy version {}: valid values are 0, 1 and 3.",
            policy.version
        )
        .into());
    }
    if policy.has_conditions() && policy.version < 3 {
        return Err(format!(
            "Policy version {} cannot contain conditional role bindings; set version 3. \
             For more information, please refer to https://cloud.google.com/iam/docs/policies#versions.",
            policy.version
        ).into());
    }
    for b in &policy.bindings {
        if !is_role(&b.role) {
            return Err(format!(
                "Role ({}) does not exist in the resource's hierarchy.",
                b.role
            )
            .into());
        }
        if b.members.is_empty() {
            return Err(format!(
                "Binding for role {} has no members; each binding must contain at least one principal.",
                b.role
            ).into());
        }
        if let Some(m) = b.members.iter().find(|m| !is_member(m)) {
            return Err(format!("Invalid principal: {m}").into());
        }
        if let Some(c) = &b.condition {
            if c.title.as_deref().is_none_or(str::is_empty) {
                return Err(format!(
                    "Condition for role {} has no title; IAM conditions require a title.",
                    b.role
                )
                .into());
            }
            Condition::parse(&c.expression).map_err(|why| {
                format!("Condition expression `{}` is invalid: {why}", c.expression)
            })?;
        }
    }
    let n = policy.member_count();
    if n > member_limit {
        return Err(format!(
            "The number of members in the policy ({n}) is larger than the maximum allowed size {member_limit}."
        ).into());
    }
    Ok(())
}

fn is_role(role: &str) -> bool {
    let custom = |prefix: &str| {
        role.strip_prefix(prefix)
            .and_then(|r| r.split_once("/roles/"))
            .is_some_and(|(owner, name)| !owner.is_empty() && !name.is_empty())
    };
    role.strip_prefix("roles/").is_some_and(|r| !r.is_empty())
        || custom("projects/")
        || custom("organizations/")
}

fn is_member(m: &str) -> bool {
    if m == "allUsers" || m == "allAuthenticatedUsers" {
        return true;
    }
    let Some((kind, id)) = m.split_once(':') else {
        return false;
    };
    let email_like = id.contains('@') && !id.starts_with('@') && !id.ends_with('@');
    match kind {
        "user" | "serviceAccount" | "group" => email_like && !id.contains(char::is_whitespace),
        "domain" | "principal" | "principalSet" | "deleted" => !id.is_empty(),
        _ => false,
    }
}

/// The subset of CEL this emulation evaluates: `request.time OP timestamp("T")`
/// clauses joined by `&&`, OP one of `< <= > >=`, T in RFC 3339. That covers
/// the temporary-access conditions IAM documents and the ones airlock writes;
/// anything else is refused with a message naming the limitation.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    clauses: Vec<(Op, OffsetDateTime)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Condition {
    /// Parses an expression of the supported form.
    pub fn parse(expression: &str) -> Result<Condition, PolicyError> {
        let clauses = expression
            .split("&&")
            .map(parse_clause)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Condition { clauses })
    }

    /// Whether every clause holds at `at`.
    pub fn holds_at(&self, at: OffsetDateTime) -> bool {
        self.clauses.iter().all(|(op, t)| match op {
            Op::Lt => at < *t,
            Op::Le => at <= *t,
            Op::Gt => at > *t,
            Op::Ge => at >= *t,
        })
    }
}

fn parse_clause(clause: &str) -> Result<(Op, OffsetDateTime), PolicyError> {
    let unsupported = || {
        format!(
            "`{}` is not of the form request.time < timestamp(\"RFC 3339\") \
             (the only condition form this emulation evaluates)",
            clause.trim()
        )
    };
    let rest = clause
        .trim()
        .strip_prefix("request.time")
        .ok_or_else(unsupported)?
        .trim_start();
    let (op, rest) = [("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)]
        .iter()
        .find_map(|(s, op)| rest.strip_prefix(s).map(|r| (*op, r)))
        .ok_or_else(unsupported)?;
    let arg = rest
        .trim()
        .strip_prefix("timestamp(")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(unsupported)?
        .trim();
    let text = ['"', '\'']
        .iter()
        .find_map(|q| arg.strip_prefix(*q).and_then(|a| a.strip_suffix(*q)))
        .ok_or_else(unsupported)?;
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("timestamp \"{text}\" is not RFC 3339: {e}"))?;
    Ok((op, t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn condition_subset_parses_and_evaluates() {
        let c = Condition::parse(r#"request.time < timestamp("2030-01-01T00:00:00Z")"#).unwrap();
        assert!(c.holds_at(datetime!(2029-12-31 23:59:59 UTC)));
        assert!(!c.holds_at(datetime!(2030-01-01 00:00:00 UTC)));
        let range = Condition::parse(
            "request.time >= timestamp('2030-01-01T00:00:00.000Z') && request.time < timestamp('2030-01-02T00:00:00Z')",
        )
        .unwrap();
        assert!(!range.holds_at(datetime!(2029-12-31 0:00 UTC)));
        assert!(range.holds_at(datetime!(2030-01-01 12:00 UTC)));
        assert!(Condition::parse("resource.name.startsWith('x')").is_err());
        assert!(Condition::parse(r#"request.time < timestamp("tomorrow")"#).is_err());
    }

    #[test]
    fn conditional_bindings_need_version_3_and_a_title() {
        let mut p = Policy {
            version: 1,
            bindings: vec![Binding::new("roles/viewer", &["user:a@example.com"])
                .with_condition("t", r#"request.time < timestamp("2030-01-01T00:00:00Z")"#)],
            ..Default::default()
        };
        assert!(validate(&p, 1500).unwrap_err().0.contains("version 1"));
        p.version = 3;
        assert_eq!(validate(&p, 1500), Ok(()));
        p.bindings[0].condition.as_mut().unwrap().title = None;
        assert!(validate(&p, 1500).unwrap_err().0.contains("title"));
    }

    #[test]
    fn members_and_roles_are_checked() {
        let p = |role: &str, member: &str| Policy {
            version: 1,
            bindings: vec![Binding::new(role, &[member])],
            ..Default::default()
        };
        assert!(validate(&p("roles/viewer", "user:a@example.com"), 1500).is_ok());
        assert!(validate(&p("projects/p/roles/custom", "group:g@example.com"), 1500).is_ok());
        assert!(validate(&p("viewer", "user:a@example.com"), 1500).is_err());
        assert!(validate(&p("roles/viewer", "alice"), 1500).is_err());
        assert!(validate(&p("roles/viewer", "user:alice"), 1500).is_err());
        assert!(validate(&p("roles/viewer", "user:a@example.com"), 0).is_err());
    }
}

/// Why IAM would answer 400 INVALID_ARGUMENT: the text GCP-style clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

impl From<String> for PolicyError {
    fn from(s: String) -> Self {
        PolicyError(s)
    }
}

impl From<&str> for PolicyError {
    fn from(s: &str) -> Self {
        PolicyError(s.to_string())
    }
}

impl From<PolicyError> for String {
    fn from(e: PolicyError) -> String {
        e.0
    }
}
