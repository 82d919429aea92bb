//! What one grant looks like on the cluster: the binding's name, labels,
//! annotations, roleRef and subject; how an existing object compares with it;
//! and the account strings drift checks pass around. No IO here.

use std::collections::BTreeMap;
use std::fmt;

use airlock_core::RequestId;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use crate::rfc3339_utc;
use crate::GrantSpec;

/// Label every binding airlock creates carries; drift and removal select on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "airlock";
/// Label naming the request a binding belongs to.
pub const REQUEST_LABEL: &str = "airlock.dev/request";
/// Annotation with the grant's end (RFC 3339, UTC), for people and other tools:
/// Kubernetes itself does not act on it.
pub const NOT_AFTER_ANNOTATION: &str = "airlock.dev/not-after";
/// Annotation naming the entitlement granted.
pub const ENTITLEMENT_ANNOTATION: &str = "airlock.dev/entitlement";
/// Annotation naming the requester.
pub const REQUESTER_ANNOTATION: &str = "airlock.dev/requester";
/// Prefix of every binding name airlock creates.
pub const NAME_PREFIX: &str = "airlock-";
/// API group of RBAC objects and of User/Group subjects.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The binding name for a request.
pub fn binding_name(id: &RequestId) -> String {
    format!("{NAME_PREFIX}{id}")
}

/// `label=value` selecting airlock's bindings.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")
}

/// Whether an object carries airlock's managed-by label.
pub fn is_managed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY_VALUE)
}

/// The metadata, roleRef and subject a grant's binding must have.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// `airlock-<request id>`.
    pub name: String,
    /// Labels airlock owns (others on the object are left alone).
    pub labels: BTreeMap<String, String>,
    /// Annotations airlock owns.
    pub annotations: BTreeMap<String, String>,
    /// The ClusterRole bound.
    pub role_ref: RoleRef,
    /// The one subject: the requester as a User.
    pub subject: Subject,
}

/// A grant end that cannot be written as an RFC 3339 annotation.
#[derive(Debug, thiserror::Error)]
#[error("not_after {0} is out of range (years 0-9999)")]
pub struct OutOfRange(time::OffsetDateTime);

impl Desired {
    /// What `grant` needs, binding `cluster_role` to `user_prefix` + requester.
    pub fn for_grant(
        grant: &GrantSpec,
        cluster_role: &str,
        user_prefix: &str,
    ) -> Result<Desired, OutOfRange> {
        let not_after = rfc3339_utc(grant.not_after).ok_or(OutOfRange(grant.not_after))?;
        let labels = BTreeMap::from([
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
            (REQUEST_LABEL.to_owned(), grant.request_id.to_string()),
        ]);
        let annotations = BTreeMap::from([
            (NOT_AFTER_ANNOTATION.to_owned(), not_after),
            (
                ENTITLEMENT_ANNOTATION.to_owned(),
                grant.entitlement.to_string(),
            ),
            (REQUESTER_ANNOTATION.to_owned(), grant.requester.to_string()),
        ]);
        Ok(Desired {
            name: binding_name(&grant.request_id),
            labels,
            annotations,
            role_ref: RoleRef {
                api_group: RBAC_GROUP.into(),
                kind: "ClusterRole".into(),
                name: cluster_role.into(),
            },
            subject: Subject {
                api_group: Some(RBAC_GROUP.into()),
                kind: "User".into(),
                name: format!("{user_prefix}{}", grant.requester),
                namespace: None,
            },
        })
    }

    /// A fresh object to create.
    pub fn object<K: BindingObject>(&self, namespace: Option<&str>) -> K {
        let meta = ObjectMeta {
            name: Some(self.name.clone()),
            namespace: namespace.map(str::to_owned),
            labels: Some(self.labels.clone()),
            annotations: Some(self.annotations.clone()),
            ..ObjectMeta::default()
        };
        K::assemble(meta, self.role_ref.clone(), vec![self.subject.clone()])
    }

    /// Whether `current` already grants exactly this (extra labels and annotations are fine).
    pub fn is_met_by<K: BindingObject>(&self, current: &K) -> bool {
        let meta = current.metadata();
        let has_all = |have: &Option<BTreeMap<String, String>>, want: &BTreeMap<String, String>| {
            let empty = BTreeMap::new();
            let have = have.as_ref().unwrap_or(&empty);
            want.iter().all(|(k, v)| have.get(k) == Some(v))
        };
        current.role_ref() == &self.role_ref
            && current.subjects() == std::slice::from_ref(&self.subject)
            && has_all(&meta.labels, &self.labels)
            && has_all(&meta.annotations, &self.annotations)
    }

    /// `current` rewritten to this grant, keeping its identity (uid and
    /// resourceVersion, so the write is conditional) and foreign labels/annotations.
    pub fn replacement<K: BindingObject>(&self, current: &K) -> K {
        let mut meta = current.metadata().clone();
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .extend(self.labels.clone());
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(self.annotations.clone());
        meta.managed_fields = None;
        K::assemble(meta, self.role_ref.clone(), vec![self.subject.clone()])
    }
}

/// The parts of RoleBinding and ClusterRoleBinding the provider works with.
pub trait BindingObject:
    kube::Resource<DynamicType = ()>
    + k8s_openapi::Metadata<Ty = ObjectMeta>
    + Clone
    + fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The bound role.
    fn role_ref(&self) -> &RoleRef;
    /// Who the role is bound to.
    fn subjects(&self) -> &[Subject];
    /// Builds an object from its parts.
    fn assemble(meta: ObjectMeta, role_ref: RoleRef, subjects: Vec<Subject>) -> Self;
}

impl BindingObject for RoleBinding {
    fn role_ref(&self) -> &RoleRef {
        &self.role_ref
    }
    fn subjects(&self) -> &[Subject] {
        self.subjects.as_deref().unwrap_or_default()
    }
    fn assemble(metadata: ObjectMeta, role_ref: RoleRef, subjects: Vec<Subject>) -> Self {
        RoleBinding {
            metadata,
            role_ref,
            subjects: Some(subjects),
        }
    }
}

impl BindingObject for ClusterRoleBinding {
    fn role_ref(&self) -> &RoleRef {
        &self.role_ref
    }
    fn subjects(&self) -> &[Subject] {
        self.subjects.as_deref().unwrap_or_default()
    }
    fn assemble(metadata: ObjectMeta, role_ref: RoleRef, subjects: Vec<Subject>) -> Self {
        ClusterRoleBinding {
            metadata,
            role_ref,
            subjects: Some(subjects),
        }
    }
}

/// A binding as `list_managed` names it: `rolebinding/NS/NAME` or `clusterrolebinding/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// A RoleBinding in a namespace.
    RoleBinding { namespace: String, name: String },
    /// A ClusterRoleBinding.
    ClusterRoleBinding { name: String },
}

impl Account {
    /// Parses an account string; `None` when it is not one this provider produces.
    pub fn parse(s: &str) -> Option<Account> {
        let ok = |p: &str| !p.is_empty() && !p.contains('/');
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            ["rolebinding", ns, name] if ok(ns) && ok(name) => Some(Account::RoleBinding {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
            }),
            ["clusterrolebinding", name] if ok(name) => Some(Account::ClusterRoleBinding {
                name: (*name).to_owned(),
            }),
            _ => None,
        }
    }

    /// The binding's name.
    pub fn name(&self) -> &str {
        match self {
            Account::RoleBinding { name, .. } | Account::ClusterRoleBinding { name } => name,
        }
    }

    /// The request a binding belongs to: from its name, else from its request label.
    pub fn request_id(&self, meta: &ObjectMeta) -> Option<RequestId> {
        self.name()
            .strip_prefix(NAME_PREFIX)
            .and_then(|id| RequestId::parse(id).ok())
            .or_else(|| {
                let id = meta.labels.as_ref()?.get(REQUEST_LABEL)?;
                RequestId::parse(id).ok()
            })
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::RoleBinding { namespace, name } => write!(f, "rolebinding/{namespace}/{name}"),
            Account::ClusterRoleBinding { name } => write!(f, "clusterrolebinding/{name}"),
        }
    }
}

/// A subject as people read it: `User alice`, `Group sre`, `ServiceAccount ns/name`.
/// A ServiceAccount without a namespace in a RoleBinding means the binding's namespace.
pub fn principal(s: &Subject, binding_namespace: Option<&str>) -> String {
    match s.kind.as_str() {
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .or(binding_namespace)
                .unwrap_or("?");
            format!("ServiceAccount {ns}/{}", s.name)
        }
        kind => format!("{kind} {}", s.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::{OffsetDateTime, UtcOffset};

    #[test]
    fn accounts_round_trip_and_refuse_other_shapes() {
        for s in [
            "rolebinding/payments/airlock-abcdefgh",
            "clusterrolebinding/airlock-abcdefgh",
        ] {
            assert_eq!(Account::parse(s).unwrap().to_string(), s);
        }
        for s in [
            "rolebinding/airlock-x",
            "clusterrolebinding/a/b",
            "role/x",
            "rolebinding//x",
            "",
        ] {
            assert_eq!(Account::parse(s), None, "{s}");
        }
    }

    #[test]
    fn service_accounts_default_to_the_binding_namespace() {
        let sa = Subject {
            kind: "ServiceAccount".into(),
            name: "ci".into(),
            ..Subject::default()
        };
        assert_eq!(
            principal(&sa, Some("payments")),
            "ServiceAccount payments/ci"
        );
        let user = Subject {
            kind: "User".into(),
            name: "oidc:carol".into(),
            ..Subject::default()
        };
        assert_eq!(principal(&user, None), "User oidc:carol");
    }

    #[test]
    fn not_after_is_whole_seconds_in_utc() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_900_000_000_123_456_789)
            .unwrap()
            .to_offset(UtcOffset::from_hms(9, 0, 0).unwrap());
        assert_eq!(rfc3339_utc(t).unwrap(), "2030-03-17T17:46:40Z");
    }
}
