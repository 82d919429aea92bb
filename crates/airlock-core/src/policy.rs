//! Authorization decisions: the catalog's verdict (requesters, reviewers,
//! break-glass flag) enters Cedar as `context.catalog_allows`, and one built-in
//! policy permits when it is true. Operator policies (`[server] policy`) add
//! `forbid`s to narrow or `permit`s to widen. Hard rules (never self-approve)
//! live in `approval` and cannot be widened here.
//!
//! Entities: `User::"name"` in `Group::"g"`; `Entitlement::"name"` with
//! attributes `provider`, `breakglass`, `max_duration` (seconds).
//! Actions: `Action::"request"`, `Action::"review"`, `Action::"breakglass"`.
//! Context: `catalog_allows`, `duration` (seconds), `reason`, `mfa`,
//! `hour` (UTC 0-23), `requester` (for review).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, Policy, PolicySet, Request as CedarRequest, ResourceConstraint,
    RestrictedExpression,
};

use crate::config::{Config, Entitlement};
use crate::principal::Principal;

mod proxy;
pub use proxy::{ProxyAction, ProxyContext, ProxyResource};

const BUILTIN: &str = r#"@id("airlock-catalog")
permit(principal, action, resource) when { context.catalog_allows };"#;

/// What is being decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Ask for an entitlement.
    Request,
    /// Approve or deny someone else's request.
    Review,
    /// Self-activate a break-glass entitlement.
    Breakglass,
}

impl Action {
    /// The Cedar action id.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Request => "request",
            Action::Review => "review",
            Action::Breakglass => "breakglass",
        }
    }
    /// Parses a Cedar action id.
    pub fn parse(s: &str) -> Option<Action> {
        [Action::Request, Action::Review, Action::Breakglass]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// Facts about the situation a decision is made in.
#[derive(Clone, Debug, Default)]
pub struct DecisionContext {
    /// Seconds of access asked for.
    pub duration: u64,
    /// The request's reason.
    pub reason: String,
    /// Whether the principal logged in with MFA.
    pub mfa: bool,
    /// Hour of day, UTC.
    pub hour: u8,
    /// For reviews: who asked.
    pub requester: Option<String>,
}

/// The outcome, with the policies that determined it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// Allowed or not.
    pub allowed: bool,
    /// Ids of the policies that determined the outcome (`@id` annotation, else Cedar's id).
    pub policies: Vec<String>,
    /// Policy evaluation errors (an erroring policy is skipped, as Cedar does).
    pub errors: Vec<String>,
}

/// Error loading operator policies.
#[derive(Debug, thiserror::Error)]
#[error("policy file does not parse: {0}")]
pub struct PolicyError(String);

/// Compiled policies plus prebuilt catalog entities.
pub struct PolicyEngine {
    policies: PolicySet,
    /// Policies whose scope can match, per action and (for policies naming
    /// one entitlement) per entitlement: a policy whose scope cannot match
    /// never changes Cedar's answer, so skipping it keeps decisions fast.
    scoped: HashMap<(Action, Option<String>), PolicySet>,
    authorizer: Authorizer,
    entitlement_entities: HashMap<String, Entity>,
}

const ACTIONS: [Action; 3] = [Action::Request, Action::Review, Action::Breakglass];

fn action_may_match(p: &Policy, action: &EntityUid) -> bool {
    match p.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(a) => &a == action,
        ActionConstraint::In(list) => list.contains(action),
    }
}

/// The entitlement a policy is pinned to with `resource == Entitlement::"x"`, if any.
fn pinned_entitlement(p: &Policy) -> Option<String> {
    match p.resource_constraint() {
        ResourceConstraint::Eq(uid) if uid.type_name().to_string() == "Entitlement" => {
            Some(uid.id().unescaped().to_string())
        }
        _ => None,
    }
}

fn index(all: &PolicySet) -> Result<HashMap<(Action, Option<String>), PolicySet>, PolicyError> {
    let mut scoped = HashMap::new();
    for action in ACTIONS {
        let a_uid = uid("Action", action.as_str());
        let matching: Vec<&Policy> = all
            .policies()
            .filter(|p| action_may_match(p, &a_uid))
            .collect();
        let generic: Vec<Policy> = matching
            .iter()
            .filter(|p| pinned_entitlement(p).is_none())
            .map(|p| (*p).clone())
            .collect();
        let mut pinned: HashMap<String, Vec<Policy>> = HashMap::new();
        for p in &matching {
            if let Some(e) = pinned_entitlement(p) {
                pinned.entry(e).or_default().push((*p).clone());
            }
        }
        let build =
            |ps: Vec<Policy>| PolicySet::from_policies(ps).map_err(|e| PolicyError(e.to_string()));
        scoped.insert((action, None), build(generic.clone())?);
        for (e, ps) in pinned {
            scoped.insert(
                (action, Some(e)),
                build(generic.iter().cloned().chain(ps).collect())?,
            );
        }
    }
    Ok(scoped)
}

fn uid(ty: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(
        EntityTypeName::from_str(ty).expect("static entity type names are valid"),
        EntityId::new(id),
    )
}

fn entitlement_entity(e: &Entitlement) -> Entity {
    let attrs = HashMap::from([
        (
            "provider".to_string(),
            RestrictedExpression::new_string(e.provider.to_string()),
        ),
        (
            "breakglass".to_string(),
            RestrictedExpression::new_bool(e.breakglass),
        ),
        (
            "max_duration".to_string(),
            RestrictedExpression::new_long(e.max_duration.as_secs() as i64),
        ),
    ]);
    Entity::new(uid("Entitlement", e.name.as_str()), attrs, HashSet::new())
        .expect("literal attributes always evaluate")
}

impl PolicyEngine {
    /// Builds the engine from the catalog and optional operator policy text.
    pub fn new(
        config: &Config,
        operator_policies: Option<&str>,
    ) -> Result<PolicyEngine, PolicyError> {
        let mut text = BUILTIN.to_string();
        if let Some(p) = operator_policies {
            // Parse alone first so errors point at the operator's own lines.
            PolicySet::from_str(p).map_err(|e| PolicyError(format!("{e:?}")))?;
            text.push('\n');
            text.push_str(p);
        }
        let policies = PolicySet::from_str(&text).map_err(|e| PolicyError(format!("{e:?}")))?;
        let entitlement_entities = config
            .entitlements
            .values()
            .map(|e| (e.name.to_string(), entitlement_entity(e)))
            .collect();
        let scoped = index(&policies)?;
        Ok(PolicyEngine {
            policies,
            scoped,
            authorizer: Authorizer::new(),
            entitlement_entities,
        })
    }

    /// Number of policies in force (built-in included).
    pub fn policy_count(&self) -> usize {
        self.policies.policies().count()
    }

    /// The catalog's own verdict, before Cedar.
    pub fn catalog_allows(
        principal: &Principal,
        action: Action,
        e: &Entitlement,
        ctx: &DecisionContext,
    ) -> bool {
        let may_request =
            e.requesters.is_empty() || e.requesters.iter().any(|r| principal.matches(r));
        match action {
            Action::Request => may_request && !e.breakglass,
            // Never "anyone": a break-glass entitlement without requesters is refused at start-up,
            // and is refused here too should one ever get through.
            Action::Breakglass => may_request && e.breakglass && !e.requesters.is_empty(),
            Action::Review => {
                let not_self = ctx.requester.as_deref() != Some(principal.name.as_str());
                // No reviewers named: anyone may review, unless a service was
                // meant to supply them and did not (fail closed).
                let named = if e.approvals.reviewers.is_empty() {
                    e.service.is_none()
                } else {
                    e.approvals.names_reviewer(principal)
                };
                not_self && named
            }
        }
    }

    /// Decides whether `principal` may do `action` on `entitlement`.
    pub fn decide(
        &self,
        principal: &Principal,
        action: Action,
        e: &Entitlement,
        ctx: &DecisionContext,
    ) -> Decision {
        let catalog = Self::catalog_allows(principal, action, e, ctx);
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
            Err(err) => {
                return Decision {
                    allowed: false,
                    policies: vec![],
                    errors: vec![err.to_string()],
                }
            }
        }
        let resource = self
            .entitlement_entities
            .get(e.name.as_str())
            .cloned()
            .unwrap_or_else(|| entitlement_entity(e));
        let r_uid = resource.uid();
        ents.push(resource);
        let entities = match Entities::from_entities(ents, None) {
            Ok(x) => x,
            Err(err) => {
                return Decision {
                    allowed: false,
                    policies: vec![],
                    errors: vec![err.to_string()],
                }
            }
        };
        let context = Context::from_pairs([
            (
                "catalog_allows".to_string(),
                RestrictedExpression::new_bool(catalog),
            ),
            (
                "duration".to_string(),
                RestrictedExpression::new_long(ctx.duration as i64),
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
        ]);
        let context = match context {
            Ok(c) => c,
            Err(err) => {
                return Decision {
                    allowed: false,
                    policies: vec![],
                    errors: vec![err.to_string()],
                }
            }
        };
        let request =
            match CedarRequest::new(p_uid, uid("Action", action.as_str()), r_uid, context, None) {
                Ok(r) => r,
                Err(err) => {
                    return Decision {
                        allowed: false,
                        policies: vec![],
                        errors: vec![err.to_string()],
                    }
                }
            };
        let set = self
            .scoped
            .get(&(action, Some(e.name.to_string())))
            .or_else(|| self.scoped.get(&(action, None)))
            .unwrap_or(&self.policies);
        let resp = self.authorizer.is_authorized(&request, set, &entities);
        let policies = resp
            .diagnostics()
            .reason()
            .map(|id| {
                set.policy(id)
                    .and_then(|p| p.annotation("id").map(str::to_string))
                    .unwrap_or_else(|| id.to_string())
            })
            .collect();
        let errors = resp.diagnostics().errors().map(|e| e.to_string()).collect();
        Decision {
            allowed: resp.decision() == CedarDecision::Allow,
            policies,
            errors,
        }
    }

    /// A one-line refusal for people: which rule said no and what to do.
    pub fn explain_refusal(action: Action, e: &Entitlement, d: &Decision) -> String {
        let by = if d.policies.is_empty() {
            "no policy permits it".to_string()
        } else {
            format!("forbidden by policy {}", d.policies.join(", "))
        };
        match action {
            Action::Request if e.breakglass => {
                format!(
                    "`{}` is a break-glass entitlement: use `airlock breakglass {}`",
                    e.name, e.name
                )
            }
            Action::Breakglass if !e.breakglass => {
                format!(
                    "`{}` is not a break-glass entitlement: use `airlock request {}`",
                    e.name, e.name
                )
            }
            Action::Request | Action::Breakglass => format!(
                "you may not request `{}` ({by}); requesters are: {}",
                e.name,
                if e.requesters.is_empty() {
                    "anyone".into()
                } else {
                    e.requesters.join(", ")
                }
            ),
            Action::Review => format!(
                "you may not review requests for `{}` ({by}); reviewers are: {}",
                e.name,
                e.approvals.reviewers.join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserName;

    const CONF: &str = r#"
[[group]]
name = "payments-eng"
members = ["alice", "bob"]
[providers.pg]
kind = "postgres"
url = "postgres://x@127.0.0.1/db"
[[entitlement]]
name = "pay"
provider = "pg"
role = "r"
max_duration = "1h"
requesters = ["payments-eng"]
approvals = { count = 1, reviewers = ["payments-eng"] }
"#;

    fn setup(policy: Option<&str>) -> (Config, PolicyEngine) {
        let c = Config::parse(CONF).unwrap();
        let e = PolicyEngine::new(&c, policy).unwrap();
        (c, e)
    }

    #[test]
    fn catalog_requesters_decide_without_operator_policies() {
        let (c, eng) = setup(None);
        let e = c.entitlement("pay").unwrap();
        let alice = c.principal(UserName::parse("alice").unwrap(), &[], false);
        let mallory = c.principal(UserName::parse("mallory").unwrap(), &[], false);
        let ctx = DecisionContext {
            duration: 600,
            ..Default::default()
        };
        assert!(eng.decide(&alice, Action::Request, e, &ctx).allowed);
        assert!(!eng.decide(&mallory, Action::Request, e, &ctx).allowed);
    }

    #[test]
    fn operator_forbid_narrows_the_catalog() {
        let (c, eng) = setup(Some(
            r#"@id("no-long-without-mfa")
forbid(principal, action == Action::"request", resource) when { context.duration > 1800 && !context.mfa };"#,
        ));
        let e = c.entitlement("pay").unwrap();
        let alice = c.principal(UserName::parse("alice").unwrap(), &[], false);
        let short = DecisionContext {
            duration: 600,
            ..Default::default()
        };
        let long = DecisionContext {
            duration: 3600,
            ..Default::default()
        };
        assert!(eng.decide(&alice, Action::Request, e, &short).allowed);
        let d = eng.decide(&alice, Action::Request, e, &long);
        assert!(!d.allowed);
        assert_eq!(d.policies, vec!["no-long-without-mfa".to_string()]);
    }

    #[test]
    fn reviewer_must_be_named_and_not_the_requester() {
        let (c, eng) = setup(None);
        let e = c.entitlement("pay").unwrap();
        let bob = c.principal(UserName::parse("bob").unwrap(), &[], false);
        let ctx = |r: &str| DecisionContext {
            requester: Some(r.into()),
            ..Default::default()
        };
        assert!(eng.decide(&bob, Action::Review, e, &ctx("alice")).allowed);
        assert!(!eng.decide(&bob, Action::Review, e, &ctx("bob")).allowed);
        let carol = c.principal(UserName::parse("carol").unwrap(), &[], false);
        assert!(!eng.decide(&carol, Action::Review, e, &ctx("alice")).allowed);
    }

    #[test]
    fn policies_pinned_to_an_entitlement_or_action_apply_only_there() {
        let text = CONF.replace("[[entitlement]]\nname = \"pay\"", "[[entitlement]]\nname = \"other\"\nprovider = \"pg\"\nrole = \"r\"\nmax_duration = \"1h\"\napprovals = { count = 1, reviewers = [\"payments-eng\"] }\n\n[[entitlement]]\nname = \"pay\"");
        let c = Config::parse(&text).unwrap();
        let eng = PolicyEngine::new(
            &c,
            Some(
                r#"@id("pay-frozen")
forbid(principal, action == Action::"request", resource == Entitlement::"pay");
@id("no-reviews-at-night")
forbid(principal, action in [Action::"review"], resource) when { context.hour < 6 };"#,
            ),
        )
        .unwrap();
        let alice = c.principal(UserName::parse("alice").unwrap(), &[], false);
        let bob = c.principal(UserName::parse("bob").unwrap(), &[], false);
        let day = DecisionContext {
            hour: 12,
            requester: Some("alice".into()),
            ..Default::default()
        };
        let night = DecisionContext {
            hour: 3,
            requester: Some("alice".into()),
            ..Default::default()
        };
        let pay = c.entitlement("pay").unwrap();
        let other = c.entitlement("other").unwrap();
        let d = eng.decide(&alice, Action::Request, pay, &day);
        assert_eq!(
            (d.allowed, d.policies.clone()),
            (false, vec!["pay-frozen".to_string()])
        );
        assert!(eng.decide(&alice, Action::Request, other, &day).allowed);
        assert!(
            eng.decide(&bob, Action::Review, pay, &day).allowed,
            "request-only forbid does not touch reviews"
        );
        assert!(!eng.decide(&bob, Action::Review, other, &night).allowed);
    }

    #[test]
    fn bad_policy_text_is_an_error() {
        let c = Config::parse(CONF).unwrap();
        assert!(PolicyEngine::new(&c, Some("permit(principal, action")).is_err());
    }
}
