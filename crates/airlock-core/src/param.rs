//! Operation parameters and argv templates. A value is checked against its
//! typed rule (pattern, enum, int range) and the hard rules every value obeys
//! (bounded size, no control or bidi characters, no leading `-` unless the
//! parameter allows it); a template substitutes `{param}` inside one argv
//! element only, so no value can ever add an argument.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use regex::Regex;

/// Longest parameter value accepted, in bytes.
pub const MAX_PARAM_LEN: usize = 256;

/// Most parameters one operation may declare.
pub const MAX_PARAMS: usize = 32;

/// What a parameter accepts.
#[derive(Debug, Clone)]
pub enum ParamKind {
    /// Text that is one of `choices` (if set) and matches `pattern` in full (if set).
    Text {
        pattern: Option<Regex>,
        choices: Option<Vec<String>>,
    },
    /// A decimal integer within `min..=max`, passed on in canonical form.
    Int { min: i64, max: i64 },
}

/// One declared parameter (`[operation.params.NAME]`).
#[derive(Debug, Clone)]
pub struct ParamSpec {
    /// The name used in `{name}` placeholders and `--param name=value`.
    pub name: String,
    /// What values are accepted.
    pub kind: ParamKind,
    /// Whether a value may start with `-` (off by default: it would read as an option).
    pub allow_leading_dash: bool,
    /// Shown in `airlock operation list`.
    pub description: String,
    /// Used when the caller gives no value; absent = required.
    pub default: Option<String>,
    /// Whether a template uses it; an unused parameter is never required.
    pub used: bool,
}

/// A refused parameter value: which parameter, the value (escaped) and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter `{param}`: {value} {rule}")]
pub struct ParamError {
    /// The parameter's name.
    pub param: String,
    /// The offending value, escaped and shortened for display.
    pub value: String,
    /// The rule it broke.
    pub rule: String,
}

impl From<ParamError> for crate::Error {
    /// `invalid params.deployment: "web; rm -rf /" does not match the pattern ...`
    fn from(e: ParamError) -> Self {
        crate::Error::invalid(
            format!("params.{}", e.param),
            format!("{} {}", e.value, e.rule),
        )
    }
}

/// A value as it may be shown in messages and logs: quoted, control and
/// bidi characters escaped, at most 80 characters.
pub fn display_value(v: &str) -> String {
    let mut out = String::from("\"");
    for (i, c) in v.chars().enumerate() {
        if i == 80 {
            out.push_str("...");
            break;
        }
        if is_forbidden_char(c) || c == '"' || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// Characters no parameter or proxied argument may contain: ASCII/C1 controls
/// (NUL, newline, escape, ...) and the invisible format characters that make a
/// value display differently from what runs (bidi overrides, zero-width).
pub fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{061C}')
}

impl ParamSpec {
    /// Checks `raw` and returns the value to substitute (canonical for ints).
    pub fn check(&self, raw: &str) -> Result<String, ParamError> {
        let err = |rule: String| ParamError {
            param: self.name.clone(),
            value: display_value(raw),
            rule,
        };
        if raw.is_empty() {
            return Err(err("must not be empty".into()));
        }
        if raw.len() > MAX_PARAM_LEN {
            return Err(err(format!("is longer than {MAX_PARAM_LEN} bytes")));
        }
        if let Some(c) = raw.chars().find(|c| is_forbidden_char(*c)) {
            return Err(err(format!(
                "contains the control or invisible character {}",
                c.escape_unicode()
            )));
        }
        let value = match &self.kind {
            ParamKind::Text { pattern, choices } => {
                if let Some(choices) = choices {
                    if !choices.iter().any(|c| c == raw) {
                        return Err(err(format!("must be one of {}", choices.join(", "))));
                    }
                }
                if let Some(p) = pattern {
                    if !p.is_match(raw) {
                        return Err(err(format!(
                            "does not match the pattern `{}`",
                            unanchor(p.as_str())
                        )));
                    }
                }
                raw.to_string()
            }
            ParamKind::Int { min, max } => {
                let n: i64 = raw
                    .strip_prefix('+')
                    .unwrap_or(raw)
                    .parse()
                    .ok()
                    .filter(|_| {
                        raw.bytes().enumerate().all(|(i, b)| {
                            b.is_ascii_digit() || (i == 0 && (b == b'-' || b == b'+'))
                        })
                    })
                    .ok_or_else(|| err("is not a whole number".into()))?;
                if n < *min || n > *max {
                    return Err(err(format!("must be between {min} and {max}")));
                }
                n.to_string()
            }
        };
        if value.starts_with('-') && !self.allow_leading_dash {
            return Err(err(
                "must not start with `-` (it would be read as an option)".into(),
            ));
        }
        Ok(value)
    }

    /// A one-line description of what the parameter accepts.
    pub fn accepts(&self) -> String {
        match &self.kind {
            ParamKind::Text {
                choices: Some(c), ..
            } => format!("one of {}", c.join(", ")),
            ParamKind::Text {
                pattern: Some(p), ..
            } => format!("matching {}", unanchor(p.as_str())),
            ParamKind::Text { .. } => "text".into(),
            ParamKind::Int { min, max } => format!("integer {min}..={max}"),
        }
    }
}

/// The operator's pattern as written (we anchor it as `^(?:...)$` when compiling).
fn unanchor(p: &str) -> &str {
    p.strip_prefix("^(?:")
        .and_then(|s| s.strip_suffix(")$"))
        .unwrap_or(p)
}

/// Compiles an operator pattern so that it must match the whole value.
pub fn full_match_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

/// Checks the caller's values against the declared parameters: unknown names
/// are refused, missing ones take their default or are refused.
pub fn check_all(
    specs: &BTreeMap<String, ParamSpec>,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, crate::Error> {
    if let Some(unknown) = given.keys().find(|k| !specs.contains_key(*k)) {
        let known: Vec<&str> = specs.keys().map(String::as_str).collect();
        return Err(crate::Error::invalid(
            format!("params.{}", display_value(unknown).trim_matches('"')),
            format!(
                "unknown parameter; this operation takes: {}",
                if known.is_empty() {
                    "no parameters".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    let mut out = BTreeMap::new();
    for (name, spec) in specs {
        let value = match (given.get(name), &spec.default) {
            (Some(v), _) => spec.check(v)?,
            (None, Some(d)) => spec.check(d)?,
            (None, None) if !spec.used => continue,
            (None, None) => {
                return Err(crate::Error::invalid(
                    format!("params.{name}"),
                    format!(
                        "parameter `{name}` is required ({}); pass --param {name}=VALUE",
                        spec.accepts()
                    ),
                ))
            }
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// One piece of a template element.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Param(String),
}

/// One argv element with `{param}` placeholders (`{{` and `}}` are literal braces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    source: String,
}

/// Why a template element does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("argument `{element}`: {why}")]
pub struct TemplateError {
    element: String,
    why: &'static str,
}

fn is_param_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Template {
    /// Parses one element such as `deployment/{deployment}`.
    pub fn parse(element: &str) -> Result<Template, TemplateError> {
        let err = |why| TemplateError {
            element: element.chars().take(80).collect(),
            why,
        };
        if element.contains('\0') {
            return Err(err("contains NUL"));
        }
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = element.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) => name.push(ch),
                            None => {
                                return Err(err(
                                    "`{` without a closing `}` (write `{{` for a literal brace)",
                                ))
                            }
                        }
                    }
                    if !is_param_name(&name) {
                        return Err(err("placeholder names are letters, digits, `_` and `-`"));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Param(name));
                }
                '}' => {
                    return Err(err(
                        "`}` without an opening `{` (write `}}` for a literal brace)",
                    ))
                }
                other => lit.push(other),
            }
        }
        if !lit.is_empty() || parts.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template {
            parts,
            source: element.to_string(),
        })
    }

    /// Names of the parameters this element uses.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Param(n) => Some(n.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// The element as written in the catalog.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The element with values substituted; a missing value renders empty
    /// (callers check values first with [`check_all`]).
    pub fn render(&self, values: &BTreeMap<String, String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Param(n) => out.push_str(values.get(n).map(String::as_str).unwrap_or("")),
            }
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Renders a template list: exactly one output element per template element.
pub fn render_argv(templates: &[Template], values: &BTreeMap<String, String>) -> Vec<String> {
    templates.iter().map(|t| t.render(values)).collect()
}

/// Every parameter name used by `templates`.
pub fn used_params(templates: &[Template]) -> BTreeSet<String> {
    templates
        .iter()
        .flat_map(|t| t.params().map(str::to_string))
        .collect()
}

/// Hostile parameter values: shell metacharacters, option injection, path
/// tricks, control and invisible characters, huge values. Unit and
/// end-to-end tests feed every one through validation and templating.
pub const HOSTILE_VALUES: &[&str] = &[
    "x; rm -rf /",
    "x && id",
    "x || id",
    "x | id",
    "$(id)",
    "${IFS}id",
    "`id`",
    "x\nid",
    "x\r\nid",
    "x\0id",
    "--kubeconfig=/x",
    "-n",
    "-",
    "--",
    "-rf",
    "*",
    "?",
    "[a-z]*",
    "~",
    "../..",
    "../../etc/passwd",
    "/etc/shadow",
    "x y",
    "'x'",
    "\"x\"",
    "x\\",
    "\u{202E}gpj.exe",
    "x\u{200B}y",
    "\u{1b}[31mred",
    "x\ty",
    "payments\u{0}",
    "a=b c=d",
    ">/tmp/pwned",
    "<(id)",
    "%s%s%s%n",
    "{deployment}",
    "deployment/{namespace}",
    "ünïcødé",
    "x\u{85}y",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn text(pattern: &str) -> ParamSpec {
        ParamSpec {
            name: "deployment".into(),
            kind: ParamKind::Text {
                pattern: Some(full_match_regex(pattern).unwrap()),
                choices: None,
            },
            allow_leading_dash: false,
            description: String::new(),
            default: None,
            used: true,
        }
    }

    #[test]
    fn pattern_must_match_the_whole_value() {
        let p = text("[a-z]+");
        assert_eq!(p.check("web").unwrap(), "web");
        let e = p.check("web; rm -rf /").unwrap_err();
        assert_eq!(e.param, "deployment");
        assert!(e.to_string().contains("web; rm -rf /"), "{e}");
        assert!(e.rule.contains("[a-z]+"), "{e}");
    }

    #[test]
    fn control_bidi_and_leading_dash_are_refused_even_if_the_pattern_allows_them() {
        let p = text("(?s).*");
        for bad in [
            "a\nb",
            "a\0b",
            "\u{202E}gnp.exe",
            "x\u{200B}",
            "-n",
            "--kubeconfig=/x",
            "",
        ] {
            assert!(p.check(bad).is_err(), "{bad:?} accepted");
        }
        let mut dash = text("(?s).*");
        dash.allow_leading_dash = true;
        assert_eq!(dash.check("-n").unwrap(), "-n");
    }

    #[test]
    fn ints_are_bounded_and_canonical() {
        let p = ParamSpec {
            name: "replicas".into(),
            kind: ParamKind::Int { min: 1, max: 50 },
            allow_leading_dash: false,
            description: String::new(),
            default: None,
            used: true,
        };
        assert_eq!(p.check("007").unwrap(), "7");
        assert_eq!(p.check("+3").unwrap(), "3");
        for bad in ["0", "51", "1e3", "3 ", "0x10", "-1", "99999999999999999999"] {
            assert!(p.check(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn templates_substitute_inside_one_element() {
        let t = Template::parse("deployment/{deployment}").unwrap();
        let mut v = BTreeMap::new();
        v.insert("deployment".to_string(), "a b c".to_string());
        assert_eq!(t.render(&v), "deployment/a b c");
        assert_eq!(Template::parse("{{x}}").unwrap().render(&v), "{x}");
        assert!(Template::parse("{oops").is_err());
        assert!(Template::parse("x}").is_err());
        assert!(Template::parse("{a b}").is_err());
        assert_eq!(Template::parse("").unwrap().render(&v), "");
    }

    #[test]
    fn unknown_and_missing_parameters_are_refused() {
        let mut specs = BTreeMap::new();
        specs.insert("deployment".to_string(), text("[a-z]+"));
        let mut given = BTreeMap::new();
        assert!(check_all(&specs, &given)
            .unwrap_err()
            .to_string()
            .contains("required"));
        given.insert("deployment".into(), "web".into());
        given.insert("namespace".into(), "x".into());
        assert!(check_all(&specs, &given)
            .unwrap_err()
            .to_string()
            .contains("unknown parameter"));
    }
}
