//! Cedar decisions for the tool proxy. The catalog's verdict (a rule or
//! operation allows it, the reviewer is named) enters as
//! `context.catalog_allows`; operator policies can only narrow it with
//! `forbid` (or widen with `permit`), exactly as for entitlements.
//!
//! Entities: `Tool::"name"` (attribute `path`), `Operation::"name"` (attribute `tool`).
//! Actions: `Action::"exec"` on a Tool, `Action::"operation"` on an Operation,
//! `Action::"review"` on the Tool or Operation of a run being reviewed.
//! Context: `catalog_allows`, `reason`, `mfa`, `hour`, `requester` (reviews),
//! `args` (the proxied arguments, a set of strings), `params` (a record),
//! `rule_action` (`allow` or `approve`).

use std::collections::{BTreeMap, HashMap, HashSet};

use cedar_policy::{
    Context, Entities, Entity, EntityUid, Request as CedarRequest, RestrictedExpression,
};

use super::{uid, Decision, PolicyEngine};
use crate::operation::Operation;
use crate::principal::Principal;
use crate::tool::Tool;

/// What is being decided about the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyAction {
    /// Run a command through a tool (`airlock exec`).
    Exec,
    /// Run a catalog operation.
    Operation,
    /// Approve or deny someone else's run.
    Review,
}

impl ProxyAction {
    /// The Cedar action id.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyAction::Exec => "exec",
            ProxyAction::Operation => "operation",
            ProxyAction::Review => "review",
        }
    }
}

/// What the decision is about.
#[derive(Clone, Copy, Debug)]
pub enum ProxyResource<'a> {
    Tool(&'a Tool),
    Operation(&'a Operation),
}

/// Facts about the situation.
#[derive(Clone, Debug, Default)]
pub struct ProxyContext {
    pub reason: String,
    pub mfa: bool,
    /// Hour of day, UTC.
    pub hour: u8,
    /// For reviews: who asked.
    pub requester: Option<String>,
    /// The proxied arguments (exec) or rendered arguments (operation).
    pub args: Vec<String>,
    /// Operation parameters.
    pub params: BTreeMap<String, String>,
    /// `allow` or `approve`.
    pub rule_action: String,
}

fn refused(err: impl ToString) -> Decision {
    Decision {
        allowed: false,
        policies: vec![],
        errors: vec![err.to_string()],
    }
}

fn resource_entity(r: ProxyResource<'_>) -> Entity {
    let (uid, attrs) = match r {
        ProxyResource::Tool(t) => (
            uid("Tool", t.name.as_str()),
            HashMap::from([(
                "path".to_string(),
                RestrictedExpression::new_string(t.path.clone()),
            )]),
        ),
        ProxyResource::Operation(o) => (
            uid("Operation", o.name.as_str()),
            HashMap::from([(
                "tool".to_string(),
                RestrictedExpression::new_string(o.tool.to_string()),
            )]),
        ),
    };
    Entity::new(uid, attrs, HashSet::new()).expect("literal attributes always evaluate")
}

impl PolicyEngine {
    /// Decides whether `principal` may do `action` on a tool or operation.
    /// `catalog_allows` is the catalog's own verdict (a matching allow/approve
    /// rule, an existing operation, or a named reviewer who is not the requester).
    pub fn decide_proxy(
        &self,
        principal: &Principal,
        action: ProxyAction,
        resource: ProxyResource<'_>,
        catalog_allows: bool,
        ctx: &ProxyContext,
    ) -> Decision {
        let p_uid = uid("User", principal.name.as_str());
        let group_uids: HashSet<EntityUid> = principal
            .groups
            .iter()
            .map(|g| uid("Group", g.as_str()))
            .collect();
        let mut ents: Vec<Entity> = group_uids
            .iter()
            .map(|g| Entity::new_no_attrs(g.clone(), HashSet::new()))
            .collect();
        let p_attrs = HashMap::from([
            (
                "admin".to_string(),
                RestrictedExpression::new_bool(principal.admin),
            ),
            (
                "email".to_string(),
                RestrictedExpression::new_string(principal.email.clone().unwrap_or_default()),
            ),
        ]);
        match Entity::new(p_uid.clone(), p_attrs, group_uids) {
            Ok(p) => ents.push(p),
            Err(e) => return refused(e),
        }
        let res = resource_entity(resource);
        let r_uid = res.uid();
        ents.push(res);
        let entities = match Entities::from_entities(ents, None) {
            Ok(x) => x,
            Err(e) => return refused(e),
        };
        let params = RestrictedExpression::new_record(
            ctx.params
                .iter()
                .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone()))),
        );
        let params = match params {
            Ok(p) => p,
            Err(e) => return refused(e),
        };
        let context = Context::from_pairs([
            (
                "catalog_allows".to_string(),
                RestrictedExpression::new_bool(catalog_allows),
            ),
            (
                "reason".to_string(),
                RestrictedExpression::new_string(ctx.reason.clone()),
            ),
            ("mfa".to_string(), RestrictedExpression::new_bool(ctx.mfa)),
            (
                "hour".to_string(),
                RestrictedExpression::new_long(ctx.hour as i64),
            ),
            (
                "requester".to_string(),
                RestrictedExpression::new_string(ctx.requester.clone().unwrap_or_default()),
            ),
            (
                "args".to_string(),
                RestrictedExpression::new_set(
                    ctx.args
                        .iter()
                        .map(|a| RestrictedExpression::new_string(a.clone())),
                ),
            ),
            ("params".to_string(), params),
            (
                "rule_action".to_string(),
                RestrictedExpression::new_string(ctx.rule_action.clone()),
            ),
        ]);
        let context = match context {
            Ok(c) => c,
            Err(e) => return refused(e),
        };
        let request =
            match CedarRequest::new(p_uid, uid("Action", action.as_str()), r_uid, context, None) {
                Ok(r) => r,
                Err(e) => return refused(e),
            };
        let resp = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        let policies = resp
            .diagnostics()
            .reason()
            .map(|id| {
                self.policies
                    .policy(id)
                    .and_then(|p| p.annotation("id").map(str::to_string))
                    .unwrap_or_else(|| id.to_string())
            })
            .collect();
        let errors = resp.diagnostics().errors().map(|e| e.to_string()).collect();
        Decision {
            allowed: resp.decision() == cedar_policy::Decision::Allow,
            policies,
            errors,
        }
    }

    /// A one-line refusal: which policy said no.
    pub fn explain_proxy_refusal(action: ProxyAction, what: &str, d: &Decision) -> String {
        let by = if d.policies.is_empty() {
            "no policy permits it".to_string()
        } else {
            format!("forbidden by policy {}", d.policies.join(", "))
        };
        match action {
            ProxyAction::Exec => format!("you may not run `{what}` ({by})"),
            ProxyAction::Operation => format!("you may not run operation `{what}` ({by})"),
            ProxyAction::Review => format!("you may not review runs of `{what}` ({by})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::UserName;

    const CONF: &str = r#"
[[group]]
name = "sre"
members = ["bob"]
[[tool]]
name = "kubectl"
path = "/usr/local/bin/kubectl"
run_as = "server"
[[tool.rule]]
args = ["get", "**"]
action = "allow"
[[operation]]
name = "restart"
tool = "kubectl"
run_as = "server"
args = ["rollout", "restart", "deployment/{d}"]
approvals = { count = 0 }
[operation.params.d]
pattern = "[a-z]+"
"#;

    #[test]
    fn operator_forbid_beats_the_catalog_for_exec_and_operations() {
        let c = Config::parse(CONF).unwrap();
        let eng = PolicyEngine::new(
            &c,
            Some(
                r#"@id("no-secrets")
forbid(principal, action == Action::"exec", resource == Tool::"kubectl") when { context.args.contains("secrets") };
@id("sre-only-ops")
forbid(principal, action == Action::"operation", resource) unless { principal in Group::"sre" };"#,
            ),
        )
        .unwrap();
        let alice = c.principal(UserName::parse("alice").unwrap(), &[], false);
        let bob = c.principal(UserName::parse("bob").unwrap(), &[], false);
        let tool = c.tools.values().next().unwrap();
        let op = c.operations.values().next().unwrap();
        let ctx = |args: &[&str]| ProxyContext {
            args: args.iter().map(|s| s.to_string()).collect(),
            rule_action: "allow".into(),
            ..Default::default()
        };
        let exec = |args| {
            eng.decide_proxy(
                &alice,
                ProxyAction::Exec,
                ProxyResource::Tool(tool),
                true,
                &ctx(args),
            )
        };
        assert!(exec(&["get", "pods"]).allowed);
        let d = exec(&["get", "secrets"]);
        assert_eq!(
            (d.allowed, d.policies),
            (false, vec!["no-secrets".to_string()])
        );
        assert!(
            !eng.decide_proxy(
                &alice,
                ProxyAction::Exec,
                ProxyResource::Tool(tool),
                false,
                &ctx(&["get"])
            )
            .allowed,
            "nothing permits what the catalog does not"
        );
        let run_op = |p: &Principal| {
            eng.decide_proxy(
                p,
                ProxyAction::Operation,
                ProxyResource::Operation(op),
                true,
                &ctx(&[]),
            )
            .allowed
        };
        assert!(!run_op(&alice));
        assert!(run_op(&bob));
    }
}
