//! `[[operation]]`: a named, parameterised production action (Clutch-style
//! guardrails) run through a `[[tool]]`: validated parameters, argv templates,
//! an optional dry run, approvals and a rate limit.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::approval::ApprovalRule;
use crate::config::ConfigError;
use crate::names::{OperationName, ToolName};
use crate::param::{
    check_all, full_match_regex, render_argv, used_params, ParamKind, ParamSpec, Template,
    MAX_PARAMS,
};
use crate::rate::Rate;
use crate::tool::{
    approvals_from, default_approval_timeout, line_of, parse_run_as, RawApprovals, RunAs, Tool,
};
use crate::Span;

/// A catalog operation.
#[derive(Debug, Clone)]
pub struct Operation {
    pub name: OperationName,
    pub description: String,
    /// The tool whose program, environment and timeout it uses.
    pub tool: ToolName,
    /// The argv after the program, with `{param}` placeholders.
    pub args: Vec<Template>,
    /// Run when a run is created, so reviewers see its output.
    pub dry_run_args: Option<Vec<Template>>,
    /// Who must approve (count 0: runs at once).
    pub approvals: ApprovalRule,
    /// Per principal and operation.
    pub rate: Option<Rate>,
    /// Declared parameters by name.
    pub params: BTreeMap<String, ParamSpec>,
    /// How long a run waits for approvals before it lapses.
    pub approval_timeout: Span,
    /// Service that owns it: default reviewers and where notifications go.
    pub service: Option<crate::ServiceName>,
    /// OS user its runs (and dry runs) execute as, instead of the tool's.
    pub run_as: RunAs,
}

/// The argv an operation will run for validated parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Canonical parameter values.
    pub params: BTreeMap<String, String>,
    /// Program path followed by the rendered args.
    pub argv: Vec<String>,
    /// Program path followed by the rendered dry-run args, if the operation has one.
    pub dry_run_argv: Option<Vec<String>>,
}

impl Operation {
    /// Validates the caller's parameters and renders both argvs.
    pub fn prepare(
        &self,
        tool: &Tool,
        given: &BTreeMap<String, String>,
    ) -> Result<Prepared, crate::Error> {
        let params = check_all(&self.params, given)?;
        let with_path = |templates: &[Template]| {
            let mut argv = Vec::with_capacity(templates.len() + 1);
            argv.push(tool.path.clone());
            argv.extend(render_argv(templates, &params));
            argv
        };
        Ok(Prepared {
            argv: with_path(&self.args),
            dry_run_argv: self.dry_run_args.as_deref().map(with_path),
            params,
        })
    }

    /// The rate-limit key.
    pub fn rate_key(&self) -> String {
        format!("operation:{}", self.name)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    #[serde(rename = "type")]
    kind: Option<String>,
    pattern: Option<String>,
    #[serde(rename = "enum")]
    choices: Option<Vec<String>>,
    min: Option<i64>,
    max: Option<i64>,
    #[serde(default)]
    allow_leading_dash: bool,
    #[serde(default)]
    description: String,
    default: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOperation {
    name: OperationName,
    #[serde(default)]
    description: String,
    tool: ToolName,
    args: Vec<String>,
    dry_run_args: Option<Vec<String>>,
    approvals: Option<RawApprovals>,
    rate: Option<Rate>,
    #[serde(default)]
    params: BTreeMap<String, RawParam>,
    approval_timeout: Option<Span>,
    service: Option<crate::ServiceName>,
    run_as: Option<String>,
}

fn invalid(msg: String) -> ConfigError {
    ConfigError::Invalid(msg)
}

fn parse_param(ctx: &str, name: &str, p: RawParam) -> Result<ParamSpec, ConfigError> {
    let ctx = format!("{ctx}: params.{name}");
    let kind = match p.kind.as_deref().unwrap_or("string") {
        "string" => {
            if p.min.is_some() || p.max.is_some() {
                return Err(invalid(format!("{ctx}: min/max apply to type = \"int\"")));
            }
            if p.pattern.is_none() && p.choices.is_none() {
                return Err(invalid(format!(
                    "{ctx}: a string parameter needs `pattern` or `enum` (free text is not accepted)"
                )));
            }
            let pattern = p
                .pattern
                .as_deref()
                .map(|s| full_match_regex(s).map_err(|e| invalid(format!("{ctx}: pattern: {e}"))))
                .transpose()?;
            if let Some(c) = &p.choices {
                if c.is_empty() {
                    return Err(invalid(format!("{ctx}: enum is empty")));
                }
            }
            ParamKind::Text {
                pattern,
                choices: p.choices,
            }
        }
        "int" => {
            if p.pattern.is_some() || p.choices.is_some() {
                return Err(invalid(format!(
                    "{ctx}: pattern/enum apply to type = \"string\""
                )));
            }
            let (Some(min), Some(max)) = (p.min, p.max) else {
                return Err(invalid(format!(
                    "{ctx}: type = \"int\" needs both min and max"
                )));
            };
            if min > max {
                return Err(invalid(format!("{ctx}: min {min} is above max {max}")));
            }
            if min < 0 && !p.allow_leading_dash {
                return Err(invalid(format!(
                    "{ctx}: min is negative, so set allow_leading_dash = true (negative values start with `-`)"
                )));
            }
            ParamKind::Int { min, max }
        }
        other => {
            return Err(invalid(format!(
                "{ctx}: type `{other}` is not string or int"
            )))
        }
    };
    let spec = ParamSpec {
        name: name.to_string(),
        kind,
        allow_leading_dash: p.allow_leading_dash,
        description: p.description,
        default: p.default,
        used: true,
    };
    // Every value the catalog itself supplies must pass the same checks as a caller's.
    if let ParamKind::Text {
        choices: Some(c), ..
    } = &spec.kind
    {
        for v in c {
            let mut probe = spec.clone();
            probe.kind = ParamKind::Text {
                pattern: None,
                choices: None,
            };
            probe
                .check(v)
                .map_err(|e| invalid(format!("{ctx}: enum value {} {}", e.value, e.rule)))?;
        }
    }
    if let Some(d) = &spec.default {
        spec.check(d)
            .map_err(|e| invalid(format!("{ctx}: default {} {}", e.value, e.rule)))?;
    }
    Ok(spec)
}

fn templates(ctx: &str, key: &str, args: &[String]) -> Result<Vec<Template>, ConfigError> {
    args.iter()
        .map(|a| Template::parse(a).map_err(|e| invalid(format!("{ctx}: {key}: {e}"))))
        .collect()
}

/// Validates the `[[operation]]` entries against the tools.
pub(crate) fn parse_operations(
    text: &str,
    raw: Vec<toml::Spanned<RawOperation>>,
    tools: &BTreeMap<ToolName, Tool>,
) -> Result<BTreeMap<OperationName, Operation>, ConfigError> {
    let mut out = BTreeMap::new();
    for spanned in raw {
        let line = line_of(text, spanned.span().start);
        let o = spanned.into_inner();
        let ctx = format!("line {line}: [[operation]] `{}`", o.name);
        if !tools.contains_key(&o.tool) {
            return Err(invalid(format!(
                "{ctx}: tool `{}` is not defined as a [[tool]]",
                o.tool
            )));
        }
        let run_as = parse_run_as(&ctx, o.run_as.as_deref())?;
        if o.params.len() > MAX_PARAMS {
            return Err(invalid(format!("{ctx}: more than {MAX_PARAMS} parameters")));
        }
        let mut params = BTreeMap::new();
        for (name, p) in o.params {
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                || name.is_empty()
            {
                return Err(invalid(format!(
                    "{ctx}: parameter name `{name}` must be letters, digits, _ and -"
                )));
            }
            let spec = parse_param(&ctx, &name, p)?;
            params.insert(name, spec);
        }
        let args = templates(&ctx, "args", &o.args)?;
        let dry_run_args = o
            .dry_run_args
            .as_deref()
            .map(|a| templates(&ctx, "dry_run_args", a))
            .transpose()?;
        let mut used = used_params(&args);
        if let Some(d) = &dry_run_args {
            let in_dry = used_params(d);
            if let Some(extra) = in_dry.difference(&used).next() {
                return Err(invalid(format!(
                    "{ctx}: dry_run_args uses `{{{extra}}}` which args does not: the dry run must preview the real command"
                )));
            }
            used.extend(in_dry);
        }
        if let Some(undeclared) = used.iter().find(|u| !params.contains_key(*u)) {
            return Err(invalid(format!(
                "{ctx}: `{{{undeclared}}}` is used but not declared under [operation.params.{undeclared}]"
            )));
        }
        // A declared parameter no template uses is accepted (and checked if
        // given) but never required: it cannot change what runs.
        for (name, spec) in params.iter_mut() {
            spec.used = used.contains(name);
        }
        let approvals = match o.approvals {
            Some(a) => approvals_from(&ctx, a, o.service.is_some())?,
            None => {
                return Err(invalid(format!(
                    "{ctx}: `approvals = {{ count = N, reviewers = [..] }}` is required (count = 0 runs without approval)"
                )))
            }
        };
        let op = Operation {
            name: o.name.clone(),
            description: o.description,
            tool: o.tool,
            args,
            dry_run_args,
            approvals,
            rate: o.rate,
            params,
            approval_timeout: o.approval_timeout.unwrap_or_else(default_approval_timeout),
            service: o.service,
            run_as,
        };
        if out.insert(o.name, op).is_some() {
            return Err(invalid(format!("{ctx} is defined twice")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::param::HOSTILE_VALUES;
    use crate::tool::RuleAction;
    use proptest::prelude::*;

    /// The configuration from the issue, verbatim.
    pub const ISSUE_SAMPLE: &str = r#"
[[tool]]
name = "kubectl"                       # what users type after `airlock exec --`
path = "/usr/local/bin/kubectl"        # absolute; resolved on the server only
env = { KUBECONFIG = "/etc/airlock/kubeconfig" }   # server-held credentials
timeout = "5m"
run_as = "airlock-tools"               # OS user it runs as; "server" = the server's own user

# Rules are matched in order against the arguments after the tool name: "*" matches
# one argument, "**" any remaining arguments (zero or more); first match wins, none = deny.
[[tool.rule]]
args = ["get", "**"]
action = "allow"
[[tool.rule]]
args = ["delete", "pod", "*", "-n", "*"]
action = "approve"                     # needs approvals before it runs
approvals = { count = 1, reviewers = ["sre"] }
rate = "5/10m"                         # per principal and rule
[[tool.rule]]
args = ["delete", "**"]
action = "deny"
reason = "deleting anything but a pod goes through a pull request"

[[operation]]
name = "restart-deployment"
description = "Rolling restart of one deployment"
tool = "kubectl"
args = ["rollout", "restart", "deployment/{deployment}", "-n", "{namespace}"]
dry_run_args = ["rollout", "restart", "deployment/{deployment}", "-n", "{namespace}", "--dry-run=server"]
approvals = { count = 1, reviewers = ["sre"] }
rate = "3/1h"
run_as = "airlock-tools"               # stated for every operation too
[operation.params.namespace]
enum = ["payments", "ledger"]
[operation.params.deployment]
pattern = "^[a-z0-9-]{1,63}$"
[operation.params.replicas]            # typed: int with bounds, for other operations
type = "int"
min = 1
max = 50
"#;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn sample() -> Config {
        Config::parse(ISSUE_SAMPLE).unwrap()
    }

    #[test]
    fn the_issue_sample_parses_and_decides_as_documented() {
        let c = sample();
        let k = c.tools.values().next().unwrap();
        assert_eq!(k.path, "/usr/local/bin/kubectl");
        assert_eq!(k.timeout.as_secs(), 300);
        assert_eq!(k.env["KUBECONFIG"], "/etc/airlock/kubeconfig");
        let action = |a: &[&str]| k.match_rule(&args(a)).map(|r| r.action);
        assert_eq!(action(&["get", "pods", "-A"]), Some(RuleAction::Allow));
        let del = k
            .match_rule(&args(&["delete", "pod", "web-1", "-n", "payments"]))
            .unwrap();
        assert_eq!(
            (del.action, del.number, del.approvals.count),
            (RuleAction::Approve, 2, 1)
        );
        assert_eq!(del.rate.unwrap().to_string(), "5 per 10m");
        assert_eq!(
            action(&["delete", "deployment", "web"]),
            Some(RuleAction::Deny)
        );
        assert_eq!(action(&["exec", "-it", "x"]), None, "no match = deny");
        let op = c.operations.values().next().unwrap();
        assert_eq!(op.rate.unwrap().to_string(), "3 per 1h");
        let mut p = BTreeMap::new();
        p.insert("deployment".to_string(), "web".to_string());
        p.insert("namespace".to_string(), "payments".to_string());
        let prep = op.prepare(k, &p).unwrap();
        assert_eq!(
            prep.argv,
            args(&[
                "/usr/local/bin/kubectl",
                "rollout",
                "restart",
                "deployment/web",
                "-n",
                "payments"
            ])
        );
        assert_eq!(
            prep.dry_run_argv.unwrap().last().unwrap(),
            "--dry-run=server"
        );
    }

    #[test]
    fn the_documented_configuration_parses() {
        let doc = include_str!("../../../docs/tool-proxy.md");
        let block = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("docs/tool-proxy.md has a toml block");
        assert_eq!(
            block.trim(),
            ISSUE_SAMPLE.trim(),
            "the doc shows the issue's configuration"
        );
        Config::parse(block).unwrap();
    }

    #[test]
    fn a_declared_but_unused_parameter_is_optional_but_still_checked() {
        let c = sample();
        let (k, op) = (
            c.tools.values().next().unwrap(),
            c.operations.values().next().unwrap(),
        );
        let mut p = BTreeMap::new();
        p.insert("deployment".to_string(), "web".to_string());
        p.insert("namespace".to_string(), "payments".to_string());
        assert_eq!(
            op.prepare(k, &p).unwrap().argv.len(),
            6,
            "replicas is not required"
        );
        p.insert("replicas".to_string(), "99".to_string());
        assert!(op
            .prepare(k, &p)
            .unwrap_err()
            .to_string()
            .contains("between 1 and 50"));
    }

    #[test]
    fn an_invalid_parameter_names_parameter_value_and_rule() {
        let c = sample();
        let (k, op) = (
            c.tools.values().next().unwrap(),
            c.operations.values().next().unwrap(),
        );
        let mut p = BTreeMap::new();
        p.insert("deployment".to_string(), "x; rm -rf /".to_string());
        p.insert("namespace".to_string(), "payments".to_string());
        let e = op.prepare(k, &p).unwrap_err().to_string();
        assert!(
            e.contains("deployment")
                && e.contains("x; rm -rf /")
                && e.contains("^[a-z0-9-]{1,63}$"),
            "{e}"
        );
        p.insert("deployment".to_string(), "web".to_string());
        p.insert("namespace".to_string(), "kube-system".to_string());
        let e = op.prepare(k, &p).unwrap_err().to_string();
        assert!(
            e.contains("namespace") && e.contains("one of payments, ledger"),
            "{e}"
        );
    }

    #[test]
    fn catalog_mistakes_are_refused_with_their_line() {
        let cases = [
            (
                ISSUE_SAMPLE.replace("action = \"allow\"", "action = \"permit\""),
                "line 11",
                "permit",
            ),
            (
                ISSUE_SAMPLE.replace("args = [\"get\", \"**\"]", "args = [\"**\", \"get\"]"),
                "line 11",
                "last element",
            ),
            (
                ISSUE_SAMPLE.replace(
                    "approvals = { count = 1, reviewers = [\"sre\"] }\nrate = \"5/10m\"",
                    "rate = \"5/10m\"",
                ),
                "line 14",
                "approvals",
            ),
            (
                ISSUE_SAMPLE.replace("/usr/local/bin/kubectl", "/bin/sh"),
                "line 2",
                "never runs a shell",
            ),
            (
                ISSUE_SAMPLE.replace("/usr/local/bin/kubectl", "kubectl"),
                "line 2",
                "absolute",
            ),
            (
                ISSUE_SAMPLE.replace("tool = \"kubectl\"", "tool = \"helm\""),
                "line 24",
                "helm",
            ),
            (
                ISSUE_SAMPLE.replace("{namespace}", "{ns}"),
                "line 24",
                "`{ns}` is used but not declared",
            ),
            (
                ISSUE_SAMPLE.replace(
                    "pattern = \"^[a-z0-9-]{1,63}$\"",
                    "description = \"free text\"",
                ),
                "line 24",
                "pattern` or `enum",
            ),
            (
                ISSUE_SAMPLE.replace("rate = \"3/1h\"", "rate = \"3 per hour\""),
                "line 31",
                "not a rate",
            ),
            (
                ISSUE_SAMPLE.replace("timeout = \"5m\"", "timeout = \"5m\"\ntimeot = \"1m\""),
                "line 7",
                "timeot",
            ),
            (
                ISSUE_SAMPLE.replace(
                    "enum = [\"payments\", \"ledger\"]",
                    "enum = [\"payments\", \"-n\"]",
                ),
                "line 24",
                "must not start with `-`",
            ),
        ];
        for (text, line, what) in cases {
            let e = Config::parse(&text).unwrap_err().to_string();
            assert!(
                e.contains(line) && e.contains(what),
                "want {line} and {what:?} in: {e}"
            );
        }
    }

    #[test]
    fn tools_and_operations_without_run_as_are_refused_by_name() {
        let text = ISSUE_SAMPLE.replace(
            "run_as = \"airlock-tools\"               # OS user it runs as; \"server\" = the server's own user\n",
            "",
        );
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("[[tool]] `kubectl`") && e.contains("run_as = \"server\""),
            "{e}"
        );
        let text = ISSUE_SAMPLE.replace(
            "run_as = \"airlock-tools\"               # stated for every operation too\n",
            "",
        );
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("[[operation]] `restart-deployment`") && e.contains("run_as"),
            "{e}"
        );
        let text = ISSUE_SAMPLE.replace("run_as = \"airlock-tools\" ", "run_as = \"Root!\" ");
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains("not a user name"), "{e}");
    }

    #[test]
    fn run_as_server_is_explicit_and_an_operation_states_its_own() {
        use crate::tool::RunAs;
        let c = sample();
        assert_eq!(
            c.tools.values().next().unwrap().run_as,
            RunAs::User("airlock-tools".into())
        );
        let text = ISSUE_SAMPLE.replace(
            "run_as = \"airlock-tools\"               # stated",
            "run_as = \"server\"               # stated",
        );
        let c = Config::parse(&text).unwrap();
        let op = c.operations.values().next().unwrap();
        assert_eq!(op.run_as, RunAs::Server);
        assert_eq!(op.run_as.user(), None);
    }

    #[test]
    fn int_params_are_typed_and_bounded() {
        let text = format!(
            "{ISSUE_SAMPLE}\n[[operation]]\nname = \"scale\"\ntool = \"kubectl\"\nrun_as = \"server\"\nargs = [\"scale\", \"--replicas={{replicas}}\"]\napprovals = {{ count = 0 }}\n[operation.params.replicas]\ntype = \"int\"\nmin = 1\nmax = 50\n"
        );
        let c = Config::parse(&text).unwrap();
        let k = c.tools.values().next().unwrap();
        let op = c
            .operations
            .get(&crate::OperationName::parse("scale").unwrap())
            .unwrap();
        let mut p = BTreeMap::new();
        p.insert("replicas".to_string(), "07".to_string());
        assert_eq!(op.prepare(k, &p).unwrap().argv[2], "--replicas=7");
        p.insert("replicas".to_string(), "51".to_string());
        assert!(op
            .prepare(k, &p)
            .unwrap_err()
            .to_string()
            .contains("between 1 and 50"));
    }

    #[test]
    fn hostile_corpus_is_refused_or_stays_one_element() {
        assert!(HOSTILE_VALUES.len() >= 30);
        let c = sample();
        let (k, op) = (
            c.tools.values().next().unwrap(),
            c.operations.values().next().unwrap(),
        );
        for v in HOSTILE_VALUES {
            for param in ["deployment", "namespace"] {
                let mut p = BTreeMap::new();
                p.insert("deployment".to_string(), "web".to_string());
                p.insert("namespace".to_string(), "payments".to_string());
                p.insert(param.to_string(), v.to_string());
                match op.prepare(k, &p) {
                    Err(e) => assert!(e.to_string().contains(param), "{e}"),
                    Ok(prep) => {
                        assert_eq!(prep.argv.len(), 6, "{v:?} changed the argv length");
                        assert!(!prep.argv[5].starts_with('-'));
                    }
                }
            }
        }
    }

    fn any_value() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(HOSTILE_VALUES).prop_map(str::to_string),
            any::<String>(),
            "[ -~]{0,40}",
        ]
    }

    proptest! {
        #[test]
        fn templating_never_changes_argv_length(
            elements in proptest::collection::vec(prop_oneof![
                Just("{a}".to_string()), Just("x{a}y".to_string()), Just("{a}{b}".to_string()),
                Just("lit".to_string()), Just("--flag={b}".to_string()), Just("{{}}".to_string())], 0..8),
            a in any_value(), b in any_value(),
        ) {
            let templates: Vec<crate::param::Template> = elements.iter().map(|e| crate::param::Template::parse(e).unwrap()).collect();
            let mut values = BTreeMap::new();
            values.insert("a".to_string(), a);
            values.insert("b".to_string(), b);
            prop_assert_eq!(crate::param::render_argv(&templates, &values).len(), elements.len());
        }

        #[test]
        fn validated_values_never_add_an_argument_or_an_option(v in any_value(), which in any::<bool>()) {
            let c = sample();
            let (k, op) = (c.tools.values().next().unwrap(), c.operations.values().next().unwrap());
            let mut p = BTreeMap::new();
            p.insert("deployment".to_string(), "web".to_string());
            p.insert("namespace".to_string(), "payments".to_string());
            p.insert(if which { "deployment" } else { "namespace" }.to_string(), v.clone());
            if let Ok(prep) = op.prepare(k, &p) {
                prop_assert_eq!(prep.argv.len(), 6);
                prop_assert!(prep.argv.iter().skip(1).filter(|a| a.starts_with('-')).count() == 1, "only the literal -n");
                prop_assert!(!prep.argv.iter().any(|a| a.chars().any(crate::param::is_forbidden_char)));
            }
        }
    }
}
