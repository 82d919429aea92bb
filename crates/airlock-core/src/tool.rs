//! The tool proxy's catalog: `[[tool]]`s with ordered `[[tool.rule]]`s that
//! decide a proxied command (allow / approve / deny; first match wins; no
//! match = deny). Parsing and matching only; running is the server's job.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::approval::ApprovalRule;
use crate::config::ConfigError;
use crate::names::ToolName;
use crate::param::{display_value, is_forbidden_char};
use crate::rate::Rate;
use crate::Span;

/// Default run time limit of a tool.
pub const DEFAULT_TOOL_TIMEOUT_SECS: u64 = 300;
/// Default transcript cap (stdout+stderr kept per run).
pub const DEFAULT_TRANSCRIPT_CAP: u64 = 1024 * 1024;
/// Largest transcript cap an operator may configure.
pub const MAX_TRANSCRIPT_CAP: u64 = 64 * 1024 * 1024;
/// Most arguments one proxied command may have.
pub const MAX_EXEC_ARGS: usize = 256;
/// Longest single proxied argument, in bytes.
pub const MAX_EXEC_ARG_LEN: usize = 4096;
/// Most bytes all proxied arguments may add up to.
pub const MAX_EXEC_ARGS_TOTAL: usize = 64 * 1024;

/// Programs that would turn an argument into code: never a tool's `path`.
const SHELL_LIKE: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "csh", "tcsh", "fish", "busybox", "env",
    "sudo", "su", "doas", "xargs",
];

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Runs at once.
    Allow,
    /// Runs after the rule's approvals.
    Approve,
    /// Never runs.
    Deny,
}

impl RuleAction {
    /// Lowercase name as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Allow => "allow",
            RuleAction::Approve => "approve",
            RuleAction::Deny => "deny",
        }
    }
}

/// One element of a rule's `args`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgPattern {
    /// Exactly this argument.
    Literal(String),
    /// `*`: any one argument.
    One,
    /// `**`: any remaining arguments, zero or more (last element only).
    Rest,
}

impl ArgPattern {
    fn parse(s: &str) -> ArgPattern {
        match s {
            "*" => ArgPattern::One,
            "**" => ArgPattern::Rest,
            other => ArgPattern::Literal(other.to_string()),
        }
    }
}

/// Whether `args` match `pattern` (`*` one argument, `**` the rest).
pub fn args_match(pattern: &[ArgPattern], args: &[String]) -> bool {
    let mut i = 0;
    for p in pattern {
        match p {
            ArgPattern::Rest => return true,
            ArgPattern::One => {
                if i >= args.len() {
                    return false;
                }
            }
            ArgPattern::Literal(lit) => {
                if args.get(i) != Some(lit) {
                    return false;
                }
            }
        }
        i += 1;
    }
    i == args.len()
}

/// Which OS user a tool's or operation's program runs as (`run_as`, always stated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    /// `run_as = "server"`: the server's own user, which can read the server's keys.
    Server,
    /// `run_as = "OSUSER"`: that unprivileged OS user.
    User(String),
}

impl RunAs {
    /// The OS user to switch to; `None` for the server's own user.
    pub fn user(&self) -> Option<&str> {
        match self {
            RunAs::Server => None,
            RunAs::User(u) => Some(u),
        }
    }
}

/// Parses a stated `run_as`: `server` or an OS user name. Unset is refused,
/// because running as the server's user silently lets a shell escape in the
/// tool read the signing key and the database credentials.
pub(crate) fn parse_run_as(ctx: &str, raw: Option<&str>) -> Result<RunAs, ConfigError> {
    let Some(u) = raw else {
        return Err(invalid(format!(
            "{ctx}: `run_as` is required: set `run_as = \"OSUSER\"` (an unprivileged user the program \
             runs as), or `run_as = \"server\"` to run it as the server's own user, which can read \
             airlock's keys"
        )));
    };
    if u == "server" {
        return Ok(RunAs::Server);
    }
    let ok = u.len() <= 32
        && u.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        return Err(invalid(format!(
            "{ctx}: run_as `{u}` is not a user name (lowercase letters, digits, _ and -) or `server`"
        )));
    }
    Ok(RunAs::User(u.to_string()))
}

/// `[[tool.rule]]`: one ordered rule of a tool.
#[derive(Debug, Clone)]
pub struct ToolRule {
    /// Position in the tool's list, from 1 (as people count).
    pub number: usize,
    /// The pattern as configured (for messages and the rate-limit key).
    pub args_text: Vec<String>,
    /// The compiled pattern.
    pub args: Vec<ArgPattern>,
    /// What a match does.
    pub action: RuleAction,
    /// For `approve`: who must approve (count 0 for allow/deny).
    pub approvals: ApprovalRule,
    /// Per principal and rule.
    pub rate: Option<Rate>,
    /// Shown when the rule refuses (deny) or asks for approval.
    pub reason: Option<String>,
    /// How long an approve run waits for its approvals before it lapses.
    pub approval_timeout: Span,
}

impl ToolRule {
    /// `rule 2 ["delete", "pod", "*", "-n", "*"]`, for messages.
    pub fn describe(&self) -> String {
        format!("rule {} {:?}", self.number, self.args_text)
    }

    /// The rate-limit key: stable when rules are reordered.
    pub fn rate_key(&self, tool: &ToolName) -> String {
        format!(
            "tool:{tool}:{}",
            serde_json::to_string(&self.args_text).unwrap_or_default()
        )
    }
}

/// `[[tool]]`: a program the proxy may run, with its server-held environment.
#[derive(Debug, Clone)]
pub struct Tool {
    /// What users type after `airlock exec --`.
    pub name: ToolName,
    /// Absolute program path, resolved on the server only.
    pub path: String,
    /// The child's environment (besides PATH and LANG); server-held credentials go here.
    pub env: BTreeMap<String, String>,
    /// Longest a run may take before its process group is killed.
    pub timeout: Span,
    /// Bytes of stdout+stderr kept per run.
    pub transcript_cap: u64,
    /// OS user the program runs as.
    pub run_as: RunAs,
    /// Ordered rules; first match wins.
    pub rules: Vec<ToolRule>,
}

impl Tool {
    /// The first rule matching `args`; `None` means deny.
    pub fn match_rule(&self, args: &[String]) -> Option<&ToolRule> {
        self.rules.iter().find(|r| args_match(&r.args, args))
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.path)
    }
}

/// Checks the arguments of `airlock exec` before matching: bounded, and free
/// of NUL, control and invisible characters (they cannot be shown honestly to
/// reviewers and in transcripts).
pub fn check_exec_args(args: &[String]) -> Result<(), crate::Error> {
    if args.len() > MAX_EXEC_ARGS {
        return Err(crate::Error::invalid(
            "args",
            format!("more than {MAX_EXEC_ARGS} arguments"),
        ));
    }
    let mut total = 0;
    for (i, a) in args.iter().enumerate() {
        total += a.len();
        if a.len() > MAX_EXEC_ARG_LEN {
            return Err(crate::Error::invalid(
                "args",
                format!("argument {} is longer than {MAX_EXEC_ARG_LEN} bytes", i + 1),
            ));
        }
        if let Some(c) = a.chars().find(|c| is_forbidden_char(*c)) {
            return Err(crate::Error::invalid(
                "args",
                format!(
                    "argument {} {} contains the control or invisible character {}",
                    i + 1,
                    display_value(a),
                    c.escape_unicode()
                ),
            ));
        }
    }
    if total > MAX_EXEC_ARGS_TOTAL {
        return Err(crate::Error::invalid(
            "args",
            format!("arguments add up to more than {MAX_EXEC_ARGS_TOTAL} bytes"),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApprovals {
    pub count: u32,
    #[serde(default)]
    pub reviewers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    args: Vec<String>,
    action: String,
    approvals: Option<RawApprovals>,
    rate: Option<Rate>,
    reason: Option<String>,
    approval_timeout: Option<Span>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTool {
    name: ToolName,
    path: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    timeout: Option<Span>,
    transcript_cap: Option<u64>,
    run_as: Option<String>,
    #[serde(default)]
    rule: Vec<toml::Spanned<RawRule>>,
}

/// Converts a byte offset of the configuration text to a 1-based line number.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn invalid(msg: String) -> ConfigError {
    ConfigError::Invalid(msg)
}

/// `approvals = { ... }` into a rule; `count` above 0 needs reviewers.
pub(crate) fn approvals_from(
    ctx: &str,
    a: RawApprovals,
    has_service: bool,
) -> Result<ApprovalRule, ConfigError> {
    // With a service, an empty reviewer list means "the service's owners".
    if a.count > 0 && a.reviewers.is_empty() && !has_service {
        return Err(invalid(format!(
            "{ctx}: approvals.count is {} but approvals.reviewers is empty (list reviewers or set `service`)",
            a.count
        )));
    }
    for r in &a.reviewers {
        crate::principal::check_entry(r)
            .map_err(|e| invalid(format!("{ctx}: approvals.reviewers entry `{r}`: {e}")))?;
    }
    if a.count > 16 {
        return Err(invalid(format!(
            "{ctx}: approvals.count {} is above 16",
            a.count
        )));
    }
    Ok(ApprovalRule {
        count: a.count,
        reviewers: a.reviewers,
    })
}

/// Default approval window of a run.
pub(crate) fn default_approval_timeout() -> Span {
    Span::from_secs(crate::config::DEFAULT_APPROVAL_TIMEOUT_SECS).expect("valid")
}

/// Refuses a `path` that is relative, odd, or a shell-like program.
pub(crate) fn check_program_path(ctx: &str, path: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/') || path.chars().any(is_forbidden_char) || path.len() > 4096 {
        return Err(invalid(format!(
            "{ctx}: path `{path}` must be an absolute program path (no shell is used)"
        )));
    }
    let base = path.rsplit('/').next().unwrap_or("");
    if SHELL_LIKE.contains(&base) {
        return Err(invalid(format!(
            "{ctx}: path `{path}` runs its arguments as commands; airlock never runs a shell — \
             name the real program (e.g. /usr/local/bin/kubectl) or a script that takes fixed arguments"
        )));
    }
    Ok(())
}

fn parse_rule(
    text: &str,
    tool: &ToolName,
    number: usize,
    raw: toml::Spanned<RawRule>,
) -> Result<ToolRule, ConfigError> {
    let line = line_of(text, raw.span().start);
    let ctx = format!("line {line}: [[tool.rule]] {number} of tool `{tool}`");
    let raw = raw.into_inner();
    let action = match raw.action.as_str() {
        "allow" => RuleAction::Allow,
        "approve" => RuleAction::Approve,
        "deny" => RuleAction::Deny,
        other => {
            return Err(invalid(format!(
                "{ctx}: action `{other}` is not allow, approve or deny"
            )))
        }
    };
    if let Some(pos) = raw.args.iter().position(|a| a == "**") {
        if pos + 1 != raw.args.len() {
            return Err(invalid(format!(
                "{ctx}: `**` matches all remaining arguments, so it must be the last element of args"
            )));
        }
    }
    if let Some(a) = raw.args.iter().find(|a| a.chars().any(is_forbidden_char)) {
        return Err(invalid(format!(
            "{ctx}: args element {} contains a control character",
            display_value(a)
        )));
    }
    let approvals = match (action, raw.approvals) {
        (RuleAction::Approve, Some(a)) => {
            let rule = approvals_from(&ctx, a, false)?;
            if rule.count == 0 {
                return Err(invalid(format!(
                    "{ctx}: an approve rule needs approvals.count of at least 1 (use action = \"allow\" otherwise)"
                )));
            }
            rule
        }
        (RuleAction::Approve, None) => {
            return Err(invalid(format!(
                "{ctx}: action = \"approve\" needs `approvals = {{ count = N, reviewers = [..] }}`"
            )))
        }
        (_, Some(_)) => {
            return Err(invalid(format!(
                "{ctx}: `approvals` only applies to action = \"approve\""
            )))
        }
        (_, None) => ApprovalRule {
            count: 0,
            reviewers: vec![],
        },
    };
    if action == RuleAction::Deny && raw.rate.is_some() {
        return Err(invalid(format!(
            "{ctx}: `rate` does not apply to a deny rule"
        )));
    }
    if action != RuleAction::Approve && raw.approval_timeout.is_some() {
        return Err(invalid(format!(
            "{ctx}: `approval_timeout` only applies to action = \"approve\""
        )));
    }
    if let Some(r) = &raw.reason {
        if r.len() > 1024 || r.chars().any(is_forbidden_char) {
            return Err(invalid(format!(
                "{ctx}: reason must be one line of at most 1024 bytes"
            )));
        }
    }
    Ok(ToolRule {
        number,
        args: raw.args.iter().map(|a| ArgPattern::parse(a)).collect(),
        args_text: raw.args,
        action,
        approvals,
        rate: raw.rate,
        reason: raw.reason,
        approval_timeout: raw
            .approval_timeout
            .unwrap_or_else(default_approval_timeout),
    })
}

fn is_env_name(k: &str) -> bool {
    let mut b = k.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Validates the `[[tool]]` entries.
pub(crate) fn parse_tools(
    text: &str,
    raw: Vec<toml::Spanned<RawTool>>,
) -> Result<BTreeMap<ToolName, Tool>, ConfigError> {
    let mut tools = BTreeMap::new();
    for spanned in raw {
        let line = line_of(text, spanned.span().start);
        let t = spanned.into_inner();
        let ctx = format!("line {line}: [[tool]] `{}`", t.name);
        check_program_path(&ctx, &t.path)?;
        for (k, v) in &t.env {
            if !is_env_name(k) || v.contains('\0') {
                return Err(invalid(format!(
                    "{ctx}: env `{k}` must be a name of letters, digits and _ with a value without NUL"
                )));
            }
        }
        let cap = t.transcript_cap.unwrap_or(DEFAULT_TRANSCRIPT_CAP);
        if !(1024..=MAX_TRANSCRIPT_CAP).contains(&cap) {
            return Err(invalid(format!(
                "{ctx}: transcript_cap {cap} must be between 1024 and {MAX_TRANSCRIPT_CAP} bytes"
            )));
        }
        let run_as = parse_run_as(&ctx, t.run_as.as_deref())?;
        let mut rules = Vec::with_capacity(t.rule.len());
        for (i, r) in t.rule.into_iter().enumerate() {
            rules.push(parse_rule(text, &t.name, i + 1, r)?);
        }
        let tool = Tool {
            name: t.name.clone(),
            path: t.path,
            env: t.env,
            timeout: t
                .timeout
                .unwrap_or(Span::from_secs(DEFAULT_TOOL_TIMEOUT_SECS).expect("valid")),
            transcript_cap: cap,
            run_as,
            rules,
        };
        if tools.insert(t.name, tool).is_some() {
            return Err(invalid(format!("{ctx} is defined twice")));
        }
    }
    Ok(tools)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pat(p: &[&str]) -> Vec<ArgPattern> {
        p.iter().map(|s| ArgPattern::parse(s)).collect()
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn star_is_one_argument_and_double_star_the_rest() {
        let p = pat(&["delete", "pod", "*", "-n", "*"]);
        assert!(args_match(
            &p,
            &args(&["delete", "pod", "web", "-n", "pay"])
        ));
        assert!(!args_match(&p, &args(&["delete", "pod", "web", "-n"])));
        assert!(!args_match(
            &p,
            &args(&["delete", "pod", "web", "-n", "pay", "--force"])
        ));
        let g = pat(&["get", "**"]);
        assert!(args_match(&g, &args(&["get"])));
        assert!(args_match(&g, &args(&["get", "pods", "-A"])));
        assert!(!args_match(&g, &args(&["delete", "get"])));
        assert!(args_match(&pat(&[]), &args(&[])));
        assert!(!args_match(&pat(&[]), &args(&["x"])));
        assert!(args_match(&pat(&["**"]), &args(&[])));
    }

    #[test]
    fn exec_args_refuse_nul_newlines_and_bidi_but_allow_options() {
        assert!(check_exec_args(&args(&["get", "pods", "-n", "x", "--all-namespaces"])).is_ok());
        for bad in ["a\0b", "a\nb", "\u{202E}x", "\u{1b}[31m"] {
            assert!(check_exec_args(&args(&["get", bad])).is_err(), "{bad:?}");
        }
        assert!(check_exec_args(&vec!["x".to_string(); 257]).is_err());
        assert!(check_exec_args(&["x".repeat(4097)]).is_err());
    }

    /// Reference matcher: recursive, written independently from `args_match`.
    fn reference(p: &[ArgPattern], a: &[String]) -> bool {
        match (p.first(), a.first()) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(ArgPattern::Rest), _) => true,
            (Some(_), None) => false,
            (Some(ArgPattern::One), Some(_)) => reference(&p[1..], &a[1..]),
            (Some(ArgPattern::Literal(l)), Some(x)) => l == x && reference(&p[1..], &a[1..]),
        }
    }

    fn element() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("*".to_string()),
            Just("-n".to_string())
        ]
    }

    proptest! {
        #[test]
        fn matcher_agrees_with_the_reference(
            mut p in proptest::collection::vec(element(), 0..6),
            rest in any::<bool>(),
            a in proptest::collection::vec(prop_oneof![Just("a".to_string()), Just("b".to_string()), Just("*".to_string()), Just("-n".to_string()), Just("**".to_string())], 0..7),
        ) {
            if rest { p.push("**".into()); }
            let compiled: Vec<ArgPattern> = p.iter().map(|s| ArgPattern::parse(s)).collect();
            prop_assert_eq!(args_match(&compiled, &a), reference(&compiled, &a));
        }
    }
}
