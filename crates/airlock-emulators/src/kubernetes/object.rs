//! RoleBinding / ClusterRoleBinding as the API server decodes, defaults and
//! validates them (`pkg/apis/rbac/v1/defaults.go`, `pkg/apis/rbac/validation`,
//! `ValidateObjectMeta`). Fields the server does not know are dropped on decode.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::names;
use super::status::{quote, ApiError, FieldError, GROUP};

/// Which of the two binding resources a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `rolebindings` (namespaced).
    RoleBindings,
    /// `clusterrolebindings` (cluster-scoped).
    ClusterRoleBindings,
}

impl Resource {
    /// The plural resource name used in URLs and `Status` details.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::RoleBindings => "rolebindings",
            Resource::ClusterRoleBindings => "clusterrolebindings",
        }
    }

    /// The object kind.
    pub fn kind(self) -> &'static str {
        match self {
            Resource::RoleBindings => "RoleBinding",
            Resource::ClusterRoleBindings => "ClusterRoleBinding",
        }
    }

    /// Whether objects live in a namespace.
    pub fn namespaced(self) -> bool {
        self == Resource::RoleBindings
    }
}

/// The stored form of a binding.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<Vec<Subject>>,
    #[serde(default)]
    pub role_ref: RoleRef,
}

/// The subset of ObjectMeta that RBAC objects carry here.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub generate_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    // Go clients send `"creationTimestamp": null`.
    #[serde(default)]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// `rbacv1.Subject`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// `rbacv1.RoleRef`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    #[serde(default)]
    pub api_group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

impl RoleRef {
    /// Go's `%#v` of the internal type, as "cannot change roleRef" prints it.
    fn go_repr(&self) -> String {
        format!(
            "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
            quote(&self.api_group),
            quote(&self.kind),
            quote(&self.name)
        )
    }
}

const API_VERSION: &str = "rbac.authorization.k8s.io/v1";

/// Decodes a request body into a binding of `resource`, or the 400 the
/// server answers for bodies it cannot decode as that type.
pub fn decode(resource: Resource, body: &[u8]) -> Result<Binding, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "couldn't get version/kind; json parse error: expected an object",
        ));
    }
    if let Some(v) = value.get("apiVersion").and_then(|v| v.as_str()) {
        if v != API_VERSION {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({API_VERSION})"
            )));
        }
    }
    if let Some(k) = value.get("kind").and_then(|v| v.as_str()) {
        if k != resource.kind() {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                resource.kind()
            )));
        }
    }
    let mut b: Binding = serde_json::from_value(value).map_err(|e| {
        let kind = resource.kind();
        ApiError::bad_request(format!(
            "{kind} in version \"v1\" cannot be handled as a {kind}: {e}"
        ))
    })?;
    b.api_version = Some(API_VERSION.into());
    b.kind = Some(resource.kind().into());
    default(&mut b);
    Ok(b)
}

/// `SetDefaults_RoleBinding` / `SetDefaults_Subject`.
fn default(b: &mut Binding) {
    if b.role_ref.api_group.is_empty() {
        b.role_ref.api_group = GROUP.into();
    }
    for s in b.subjects.iter_mut().flatten() {
        if s.api_group.is_empty() && (s.kind == "User" || s.kind == "Group") {
            s.api_group = GROUP.into();
        }
    }
    // An explicitly empty list and an absent one are the same object.
    if b.subjects.as_ref().is_some_and(|s| s.is_empty()) {
        b.subjects = None;
    }
}

/// `ValidateRoleBinding` / `ValidateClusterRoleBinding` plus object meta.
pub fn validate(resource: Resource, b: &Binding) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let m = &b.metadata;
    if m.name.is_empty() && m.generate_name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    }
    for msg in names::path_segment(&m.name) {
        errs.push(FieldError::invalid("metadata.name", &m.name, &msg));
    }
    if resource.namespaced() {
        if m.namespace.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for msg in names::dns1123_label(&m.namespace) {
                errs.push(FieldError::invalid(
                    "metadata.namespace",
                    &m.namespace,
                    &msg,
                ));
            }
        }
    } else if !m.namespace.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    for (k, v) in m.labels.iter().flatten() {
        for msg in names::qualified_name(k) {
            errs.push(FieldError::invalid("metadata.labels", k, &msg));
        }
        for msg in names::label_value(v) {
            errs.push(FieldError::invalid("metadata.labels", v, &msg));
        }
    }
    let mut annotation_bytes = 0;
    for (k, v) in m.annotations.iter().flatten() {
        annotation_bytes += k.len() + v.len();
        for msg in names::qualified_name(&k.to_ascii_lowercase()) {
            errs.push(FieldError::invalid("metadata.annotations", k, &msg));
        }
    }
    if annotation_bytes > 256 * 1024 {
        errs.push(FieldError {
            field: "metadata.annotations".into(),
            kind: super::status::FieldErrorKind::Invalid {
                value: String::from("\"\""),
                detail: "must have at most 262144 bytes".into(),
            },
        });
    }
    let r = &b.role_ref;
    if r.api_group != GROUP {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            &r.api_group,
            &[GROUP],
        ));
    }
    let kinds: &[&str] = if resource.namespaced() {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&r.kind.as_str()) {
        errs.push(FieldError::not_supported("roleRef.kind", &r.kind, kinds));
    }
    if r.name.is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    } else {
        for msg in names::path_segment(&r.name) {
            errs.push(FieldError::invalid("roleRef.name", &r.name, &msg));
        }
    }
    for (i, s) in b.subjects.iter().flatten().enumerate() {
        let path = format!("subjects[{i}]");
        if s.name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name"), ""));
        }
        match s.kind.as_str() {
            "ServiceAccount" => {
                if !s.name.is_empty() {
                    for msg in names::dns1123_subdomain(&s.name) {
                        errs.push(FieldError::invalid(format!("{path}.name"), &s.name, &msg));
                    }
                }
                if !s.api_group.is_empty() {
                    errs.push(FieldError::not_supported(
                        format!("{path}.apiGroup"),
                        &s.api_group,
                        &[""],
                    ));
                }
                if !resource.namespaced() && s.namespace.is_empty() {
                    errs.push(FieldError::required(format!("{path}.namespace"), ""));
                }
            }
            "User" | "Group" => {
                if s.api_group != GROUP {
                    errs.push(FieldError::not_supported(
                        format!("{path}.apiGroup"),
                        &s.api_group,
                        &[GROUP],
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                format!("{path}.kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    errs
}

/// `Validate…BindingUpdate`: the create rules, immutable meta and roleRef.
pub fn validate_update(resource: Resource, new: &Binding, old: &Binding) -> Vec<FieldError> {
    let mut errs = validate(resource, new);
    if new.metadata.namespace != old.metadata.namespace {
        errs.push(FieldError::invalid(
            "metadata.namespace",
            &new.metadata.namespace,
            "field is immutable",
        ));
    }
    if new.role_ref != old.role_ref {
        errs.push(FieldError::invalid_raw(
            "roleRef",
            new.role_ref.go_repr(),
            "cannot change roleRef",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_subjects_and_role_ref_get_the_rbac_group_by_default() {
        let b = decode(
            Resource::RoleBindings,
            br#"{"metadata":{"name":"x","namespace":"n"},"roleRef":{"kind":"ClusterRole","name":"edit"},
                "subjects":[{"kind":"User","name":"a"},{"kind":"ServiceAccount","name":"s"}]}"#,
        )
        .unwrap();
        assert_eq!(b.role_ref.api_group, GROUP);
        let s = b.subjects.unwrap();
        assert_eq!(s[0].api_group, GROUP);
        assert_eq!(s[1].api_group, "");
    }

    #[test]
    fn cluster_role_bindings_only_reference_cluster_roles_and_need_sa_namespaces() {
        let b = decode(
            Resource::ClusterRoleBindings,
            br#"{"metadata":{"name":"x"},"roleRef":{"kind":"Role","name":"r"},
                "subjects":[{"kind":"ServiceAccount","name":"s"}]}"#,
        )
        .unwrap();
        let fields: Vec<String> = validate(Resource::ClusterRoleBindings, &b)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, vec!["roleRef.kind", "subjects[0].namespace"]);
    }

    #[test]
    fn wrong_types_are_bad_requests() {
        let e = decode(
            Resource::RoleBindings,
            br#"{"metadata":{"name":"x"},"subjects":"nope"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(e.body["reason"], "BadRequest");
    }
}
