//! The object store behind the emulated endpoints: the generic registry's
//! create / get / list / update / delete semantics (`registry/generic/registry/store.go`)
//! over an in-memory map, with one global resourceVersion counter like etcd's revision.
//! Every operation runs under one lock, so each is atomic as an etcd transaction is.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::object::{self, Binding, Resource};
use super::selector::Selector;
use super::status::{self, ApiError};

const OPTIMISTIC_LOCK_MSG: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// Namespaces every fresh cluster has.
pub const DEFAULT_NAMESPACES: &[&str] =
    &["default", "kube-node-lease", "kube-public", "kube-system"];

/// `DeleteOptions.preconditions`.
#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    /// Delete only if the object still has this uid.
    pub uid: Option<String>,
    /// Delete only if the object is still at this resourceVersion.
    pub resource_version: Option<String>,
}

/// Which objects a list returns.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub labels: Selector,
    /// `fieldSelector` terms on `metadata.name` / `metadata.namespace`: (field, value, equal?).
    pub fields: Vec<(String, String, bool)>,
    /// `limit` (0 = no limit).
    pub limit: usize,
    /// `continue` token from a previous page.
    pub continue_token: Option<String>,
}

type Key = (Resource, String, String);

/// All emulated state.
#[derive(Debug)]
pub struct Store {
    revision: u64,
    namespaces: BTreeSet<String>,
    objects: BTreeMap<Key, Binding>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            revision: 1,
            namespaces: DEFAULT_NAMESPACES.iter().map(|s| s.to_string()).collect(),
            objects: BTreeMap::new(),
        }
    }
}

fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn new_uid() -> String {
    let mut b: [u8; 16] = rand::thread_rng().gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `names.SimpleNameGenerator`: five characters from an alphabet without vowels.
fn generated_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

impl Store {
    /// Adds a namespace (creates in missing namespaces are refused, as NamespaceLifecycle does).
    pub fn add_namespace(&mut self, ns: &str) {
        self.namespaces.insert(ns.to_owned());
    }

    fn key(resource: Resource, ns: Option<&str>, name: &str) -> Key {
        (resource, ns.unwrap_or_default().to_owned(), name.to_owned())
    }

    /// The request namespace must agree with the object's (`EnsureObjectNamespaceMatchesRequestNamespace`).
    fn match_namespace(ns: Option<&str>, b: &mut Binding) -> Result<(), ApiError> {
        let want = ns.unwrap_or_default();
        if b.metadata.namespace.is_empty() {
            b.metadata.namespace = want.to_owned();
        } else if b.metadata.namespace != want {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        Ok(())
    }

    fn admit_namespace(&self, resource: Resource, ns: Option<&str>) -> Result<(), ApiError> {
        match ns {
            Some(ns) if resource.namespaced() && !self.namespaces.contains(ns) => {
                Err(ApiError::not_found("namespaces", "", ns))
            }
            _ => Ok(()),
        }
    }

    /// The part of create shared with create-on-update: system fields, validation, uniqueness.
    fn insert_new(
        &mut self,
        resource: Resource,
        ns: Option<&str>,
        mut b: Binding,
        dry_run: bool,
    ) -> Result<Binding, ApiError> {
        if b.metadata.name.is_empty() && !b.metadata.generate_name.is_empty() {
            b.metadata.name = format!("{}{}", b.metadata.generate_name, generated_suffix());
        }
        b.metadata.uid = new_uid();
        b.metadata.creation_timestamp = Some(now_rfc3339());
        let errs = object::validate(resource, &b);
        if !errs.is_empty() {
            return Err(ApiError::invalid(resource.kind(), &b.metadata.name, &errs));
        }
        let key = Store::key(resource, ns, &b.metadata.name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(
                resource.plural(),
                &b.metadata.name,
            ));
        }
        if dry_run {
            return Ok(b);
        }
        self.revision += 1;
        b.metadata.resource_version = self.revision.to_string();
        self.objects.insert(key, b.clone());
        Ok(b)
    }

    /// `POST` a new object.
    pub fn create(
        &mut self,
        resource: Resource,
        ns: Option<&str>,
        mut b: Binding,
        dry_run: bool,
    ) -> Result<Binding, ApiError> {
        Store::match_namespace(ns, &mut b)?;
        self.admit_namespace(resource, ns)?;
        if !b.metadata.resource_version.is_empty() {
            // etcd3 store.Create refuses this; the registry surfaces it as a 500.
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        self.insert_new(resource, ns, b, dry_run)
    }

    /// `GET` one object.
    pub fn get(
        &self,
        resource: Resource,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Binding, ApiError> {
        self.objects
            .get(&Store::key(resource, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource.plural(), status::GROUP, name))
    }

    /// `GET` a collection (one namespace, or all when `ns` is `None`), as a `…List`.
    pub fn list(
        &self,
        resource: Resource,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Value, ApiError> {
        let start = match &opts.continue_token {
            Some(t) => Some(unhex(t).and_then(|s| {
                let (ns, name) = s.split_once('\0')?;
                Some((ns.to_owned(), name.to_owned()))
            }).ok_or_else(|| {
                ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
            })?),
            None => None,
        };
        let mut items = Vec::new();
        let mut next = None;
        for ((r, obj_ns, name), b) in &self.objects {
            if *r != resource || ns.is_some_and(|want| want != obj_ns) {
                continue;
            }
            if let Some((sns, sname)) = &start {
                if (obj_ns, name) <= (sns, sname) {
                    continue;
                }
            }
            let empty = BTreeMap::new();
            if !opts
                .labels
                .matches(b.metadata.labels.as_ref().unwrap_or(&empty))
            {
                continue;
            }
            let fields_ok = opts.fields.iter().all(|(field, value, equal)| {
                let actual = if field == "metadata.name" {
                    name
                } else {
                    obj_ns
                };
                (actual == value) == *equal
            });
            if !fields_ok {
                continue;
            }
            if opts.limit > 0 && items.len() == opts.limit {
                next = Some(hex(&format!(
                    "{}\0{}",
                    items_last_ns(&items),
                    items_last_name(&items)
                )));
                break;
            }
            let mut item = serde_json::to_value(b).unwrap_or(Value::Null);
            // Items of a list carry no apiVersion/kind on the wire.
            if let Some(o) = item.as_object_mut() {
                o.remove("apiVersion");
                o.remove("kind");
            }
            items.push(item);
        }
        let mut metadata = json!({"resourceVersion": self.revision.to_string()});
        if let Some(token) = next {
            metadata["continue"] = json!(token);
        }
        Ok(json!({
            "kind": format!("{}List", resource.kind()),
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": metadata,
            "items": items,
        }))
    }

    /// `PUT` an object: optimistic concurrency on resourceVersion, uid as a
    /// precondition, create when absent (RBAC allows create-on-update). The
    /// flag says whether it was created.
    pub fn update(
        &mut self,
        resource: Resource,
        ns: Option<&str>,
        name: &str,
        mut b: Binding,
        dry_run: bool,
    ) -> Result<(Binding, bool), ApiError> {
        if b.metadata.name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                b.metadata.name
            )));
        }
        Store::match_namespace(ns, &mut b)?;
        let key = Store::key(resource, ns, name);
        let existing = self.objects.get(&key).cloned();
        if !b.metadata.uid.is_empty() {
            let have = existing
                .as_ref()
                .map(|e| e.metadata.uid.as_str())
                .unwrap_or("");
            if have != b.metadata.uid {
                return Err(ApiError::conflict(
                    resource.plural(),
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {}, UID in object meta: {have}",
                        b.metadata.uid
                    ),
                ));
            }
        }
        let Some(old) = existing else {
            self.admit_namespace(resource, ns)?;
            b.metadata.resource_version.clear();
            return self
                .insert_new(resource, ns, b, dry_run)
                .map(|created| (created, true));
        };
        if !b.metadata.resource_version.is_empty() {
            if b.metadata.resource_version.parse::<u64>().is_err() {
                return Err(ApiError::bad_request(format!(
                    "invalid resource version: {}",
                    status::quote(&b.metadata.resource_version)
                )));
            }
            if b.metadata.resource_version != old.metadata.resource_version {
                return Err(ApiError::conflict(
                    resource.plural(),
                    name,
                    OPTIMISTIC_LOCK_MSG,
                ));
            }
        }
        // rest.BeforeUpdate: system fields come from the stored object.
        b.metadata.resource_version = old.metadata.resource_version.clone();
        b.metadata.uid = old.metadata.uid.clone();
        b.metadata.creation_timestamp = old.metadata.creation_timestamp.clone();
        b.metadata.generate_name = old.metadata.generate_name.clone();
        let errs = object::validate_update(resource, &b, &old);
        if !errs.is_empty() {
            return Err(ApiError::invalid(resource.kind(), name, &errs));
        }
        // A write that changes nothing is not written and keeps its resourceVersion.
        if b == old || dry_run {
            return Ok((b, false));
        }
        self.revision += 1;
        b.metadata.resource_version = self.revision.to_string();
        self.objects.insert(key, b.clone());
        Ok((b, false))
    }

    /// `DELETE` an object; answers the registry's Success Status.
    pub fn delete(
        &mut self,
        resource: Resource,
        ns: Option<&str>,
        name: &str,
        pre: &Preconditions,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let key = Store::key(resource, ns, name);
        let Some(old) = self.objects.get(&key) else {
            return Err(ApiError::not_found(resource.plural(), status::GROUP, name));
        };
        if let Some(uid) = &pre.uid {
            if *uid != old.metadata.uid {
                return Err(ApiError::conflict(
                    resource.plural(),
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        old.metadata.uid
                    ),
                ));
            }
        }
        if let Some(rv) = &pre.resource_version {
            if *rv != old.metadata.resource_version {
                return Err(ApiError::conflict(
                    resource.plural(),
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        old.metadata.resource_version
                    ),
                ));
            }
        }
        let uid = old.metadata.uid.clone();
        if !dry_run {
            self.objects.remove(&key);
            self.revision += 1;
        }
        Ok(status::delete_success(resource.plural(), name, &uid))
    }

    /// Every stored object of `resource`, in key order (for test inspection).
    pub fn all(&self, resource: Resource) -> Vec<Binding> {
        self.objects
            .iter()
            .filter(|((r, _, _), _)| *r == resource)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

fn items_last_ns(items: &[Value]) -> String {
    items
        .last()
        .and_then(|i| i["metadata"]["namespace"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn items_last_name(items: &[Value]) -> String {
    items
        .last()
        .and_then(|i| i["metadata"]["name"].as_str())
        .unwrap_or_default()
        .to_owned()
}
