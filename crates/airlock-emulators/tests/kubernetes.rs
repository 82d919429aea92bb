//! The Kubernetes emulation's REST semantics, over real HTTP: these pin the
//! behaviour the provider relies on (status codes, `Status` bodies,
//! resourceVersion rules, label selectors) to what the API server documents.

use airlock_emulators::kubernetes::{self, Handle, Resource};
use serde_json::{json, Value};

const RB: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings";
const CRB: &str = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings";

/// The emulator on its own runtime, driven by a blocking client from the test thread.
struct Api {
    _rt: tokio::runtime::Runtime,
    handle: Handle,
    agent: ureq::Agent,
}

impl Api {
    fn new() -> Api {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.block_on(kubernetes::start());
        Api {
            _rt: rt,
            handle,
            agent: ureq::AgentBuilder::new().build(),
        }
    }

    fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .agent
            .request(method, &format!("{}{path}", self.handle.url));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let result = match body {
            Some(b) => req.send_json(b.clone()),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let code = resp.status();
        let text = resp.into_string().unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.call_as(Some(&self.handle.token), method, path, body)
    }
}

fn binding(name: &str, role: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}],
    })
}

fn cluster_binding(name: &str) -> Value {
    let mut b = binding(name, "view", json!({}));
    b["kind"] = json!("ClusterRoleBinding");
    b
}

fn assert_status(body: &Value, code: u16, reason: &str) {
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["apiVersion"], "v1", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
}

#[test]
fn create_answers_201_with_server_fields_and_a_second_create_409_already_exists() {
    let api = Api::new();
    let (code, created) = api.call("POST", RB, Some(&binding("b1", "edit", json!({"a": "1"}))));
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["kind"], "RoleBinding");
    assert_eq!(created["metadata"]["namespace"], "default");
    assert_eq!(created["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    assert!(created["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    let (code, body) = api.call("POST", RB, Some(&binding("b1", "edit", json!({}))));
    assert_eq!(code, 409);
    assert_status(&body, 409, "AlreadyExists");
    assert_eq!(
        body["message"],
        "rolebindings.rbac.authorization.k8s.io \"b1\" already exists"
    );
    assert_eq!(
        body["details"],
        json!({"name": "b1", "group": "rbac.authorization.k8s.io", "kind": "rolebindings"})
    );
}

#[test]
fn get_of_a_missing_binding_is_404_not_found() {
    let api = Api::new();
    let (code, body) = api.call("GET", &format!("{RB}/nope"), None);
    assert_eq!(code, 404);
    assert_status(&body, 404, "NotFound");
    assert_eq!(
        body["message"],
        "rolebindings.rbac.authorization.k8s.io \"nope\" not found"
    );
    let (code, body) = api.call("GET", &format!("{CRB}/nope"), None);
    assert_eq!(code, 404);
    assert_eq!(body["details"]["kind"], "clusterrolebindings");
}

#[test]
fn create_in_a_missing_namespace_is_404_for_the_namespace() {
    let api = Api::new();
    let path = "/apis/rbac.authorization.k8s.io/v1/namespaces/payments/rolebindings";
    let (code, body) = api.call("POST", path, Some(&binding("b", "edit", json!({}))));
    assert_eq!(code, 404);
    assert_eq!(body["message"], "namespaces \"payments\" not found");
    api.handle.add_namespace("payments");
    let (code, _) = api.call("POST", path, Some(&binding("b", "edit", json!({}))));
    assert_eq!(code, 201);
}

#[test]
fn requests_without_a_known_token_are_401_and_the_read_only_identity_gets_403_on_writes() {
    let api = Api::new();
    let (code, body) = api.call_as(None, "GET", RB, None);
    assert_eq!(code, 401);
    assert_status(&body, 401, "Unauthorized");
    let (code, _) = api.call_as(Some("wrong"), "GET", RB, None);
    assert_eq!(code, 401);

    let ro = api.handle.read_only_token.clone();
    let (code, _) = api.call_as(Some(&ro), "GET", RB, None);
    assert_eq!(code, 200);
    let (code, body) = api.call_as(
        Some(&ro),
        "POST",
        RB,
        Some(&binding("b", "edit", json!({}))),
    );
    assert_eq!(code, 403);
    assert_status(&body, 403, "Forbidden");
    assert_eq!(
        body["message"],
        format!(
            "rolebindings.rbac.authorization.k8s.io is forbidden: User \"{}\" cannot create resource \"rolebindings\" in API group \"rbac.authorization.k8s.io\" in the namespace \"default\"",
            kubernetes::READ_ONLY_USER
        )
    );
}

#[test]
fn invalid_objects_are_422_with_one_cause_per_field() {
    let api = Api::new();
    let mut b = binding("bad%name", "edit", json!({}));
    b.as_object_mut().unwrap().remove("roleRef");
    let (code, body) = api.call("POST", RB, Some(&b));
    assert_eq!(code, 422, "{body}");
    assert_status(&body, 422, "Invalid");
    assert_eq!(body["details"]["kind"], "RoleBinding");
    let fields: Vec<&str> = body["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec!["metadata.name", "roleRef.kind", "roleRef.name"]
    );
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("RoleBinding.rbac.authorization.k8s.io \"bad%name\" is invalid: [metadata.name: Invalid value: \"bad%name\": may not contain '%'"));

    // A ClusterRoleBinding may only reference a ClusterRole.
    let mut crb = cluster_binding("c");
    crb["roleRef"]["kind"] = json!("Role");
    let (code, body) = api.call("POST", CRB, Some(&crb));
    assert_eq!(code, 422);
    assert_eq!(
        body["message"],
        "ClusterRoleBinding.rbac.authorization.k8s.io \"c\" is invalid: roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\""
    );

    // Labels must be valid label keys and values.
    let (code, body) = api.call(
        "POST",
        RB,
        Some(&binding("l", "edit", json!({"a": "not ok!"}))),
    );
    assert_eq!(code, 422);
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.labels");
}

#[test]
fn undecodable_bodies_and_mismatched_names_are_400() {
    let api = Api::new();
    let mut b = binding("x", "edit", json!({}));
    b["subjects"] = json!("alice");
    let (code, body) = api.call("POST", RB, Some(&b));
    assert_eq!(code, 400);
    assert_status(&body, 400, "BadRequest");
    let mut b = binding("x", "edit", json!({}));
    b["metadata"]["namespace"] = json!("other");
    let (code, body) = api.call("POST", RB, Some(&b));
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );
    let (code, body) = api.call(
        "PUT",
        &format!("{RB}/y"),
        Some(&binding("x", "edit", json!({}))),
    );
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "the name of the object (x) does not match the name on the URL (y)"
    );
}

#[test]
fn update_checks_resource_version_and_keeps_role_ref_immutable() {
    let api = Api::new();
    let (_, created) = api.call("POST", RB, Some(&binding("u", "edit", json!({}))));
    let rv0 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut changed = created.clone();
    changed["subjects"][0]["name"] = json!("bob");
    let (code, updated) = api.call("PUT", &format!("{RB}/u"), Some(&changed));
    assert_eq!(code, 200, "{updated}");
    let rv1 = updated["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(rv1.parse::<u64>().unwrap() > rv0.parse::<u64>().unwrap());
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(updated["subjects"][0]["name"], "bob");

    // The stale version loses.
    let (code, body) = api.call("PUT", &format!("{RB}/u"), Some(&changed));
    assert_eq!(code, 409);
    assert_status(&body, 409, "Conflict");
    assert_eq!(
        body["message"],
        "Operation cannot be fulfilled on rolebindings.rbac.authorization.k8s.io \"u\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // Writing the same object again is not a write.
    let (code, same) = api.call("PUT", &format!("{RB}/u"), Some(&updated));
    assert_eq!(code, 200);
    assert_eq!(same["metadata"]["resourceVersion"], rv1.as_str());

    // roleRef cannot change.
    let mut other_role = updated.clone();
    other_role["roleRef"]["name"] = json!("admin");
    let (code, body) = api.call("PUT", &format!("{RB}/u"), Some(&other_role));
    assert_eq!(code, 422);
    assert_eq!(
        body["message"],
        "RoleBinding.rbac.authorization.k8s.io \"u\" is invalid: roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"ClusterRole\", Name:\"admin\"}: cannot change roleRef"
    );

    // Without a resourceVersion the update is unconditional (RBAC allows it).
    let mut unconditional = updated.clone();
    unconditional["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    unconditional["subjects"][0]["name"] = json!("carol");
    let (code, _) = api.call("PUT", &format!("{RB}/u"), Some(&unconditional));
    assert_eq!(code, 200);
}

#[test]
fn put_to_a_missing_binding_creates_it_unless_a_uid_precondition_says_otherwise() {
    let api = Api::new();
    let (code, created) = api.call(
        "PUT",
        &format!("{RB}/p"),
        Some(&binding("p", "edit", json!({}))),
    );
    assert_eq!(code, 201, "{created}");
    let mut stale = binding("q", "edit", json!({}));
    stale["metadata"]["uid"] = created["metadata"]["uid"].clone();
    let (code, body) = api.call("PUT", &format!("{RB}/q"), Some(&stale));
    assert_eq!(code, 409, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("Precondition failed: UID in precondition"));
}

#[test]
fn delete_answers_a_success_status_then_404_and_honours_preconditions() {
    let api = Api::new();
    let (_, created) = api.call("POST", CRB, Some(&cluster_binding("d")));
    let uid = created["metadata"]["uid"].clone();

    let (code, body) = api.call(
        "DELETE",
        &format!("{CRB}/d"),
        Some(&json!({"preconditions": {"resourceVersion": "1"}})),
    );
    assert_eq!(code, 409, "{body}");
    assert_status(&body, 409, "Conflict");

    let (code, body) = api.call("DELETE", &format!("{CRB}/d"), None);
    assert_eq!(code, 200);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["status"], "Success");
    assert_eq!(
        body["details"],
        json!({"name": "d", "group": "rbac.authorization.k8s.io", "kind": "clusterrolebindings", "uid": uid})
    );
    let (code, body) = api.call("DELETE", &format!("{CRB}/d"), None);
    assert_eq!(code, 404);
    assert_status(&body, 404, "NotFound");
}

#[test]
fn lists_filter_by_label_selector_across_namespaces_and_page_with_continue() {
    let api = Api::new();
    api.handle.add_namespace("payments");
    let payments = "/apis/rbac.authorization.k8s.io/v1/namespaces/payments/rolebindings";
    api.call(
        "POST",
        RB,
        Some(&binding(
            "a",
            "edit",
            json!({"managed": "airlock", "tier": "1"}),
        )),
    );
    api.call(
        "POST",
        RB,
        Some(&binding("b", "edit", json!({"managed": "other"}))),
    );
    api.call("POST", RB, Some(&binding("c", "edit", json!({}))));
    api.call(
        "POST",
        payments,
        Some(&binding("d", "edit", json!({"managed": "airlock"}))),
    );

    let names = |query: &str, path: &str| -> Vec<String> {
        let (code, list) = api.call("GET", &format!("{path}?labelSelector={query}"), None);
        assert_eq!(code, 200, "{query}: {list}");
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = "/apis/rbac.authorization.k8s.io/v1/rolebindings";
    assert_eq!(names("managed%3Dairlock", all), vec!["a", "d"]);
    assert_eq!(names("managed%3D%3Dairlock", RB), vec!["a"]);
    assert_eq!(names("managed%21%3Dairlock", RB), vec!["b", "c"]);
    assert_eq!(names("managed", RB), vec!["a", "b"]);
    assert_eq!(names("%21managed", RB), vec!["c"]);
    assert_eq!(names("managed%3Dairlock%2Ctier%3D1", all), vec!["a"]);
    assert_eq!(
        names("managed%20in%20(other%2Cairlock)", RB),
        vec!["a", "b"]
    );

    let (code, list) = api.call(
        "GET",
        &format!("{all}?fieldSelector=metadata.name%3Dd"),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(list["items"][0]["metadata"]["namespace"], "payments");
    let (code, list) = api.call(
        "GET",
        &format!("{all}?fieldSelector=metadata.namespace%21%3Ddefault"),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (code, _) = api.call("GET", &format!("{all}?fieldSelector=spec.x%3D1"), None);
    assert_eq!(code, 400);

    let (code, body) = api.call("GET", &format!("{RB}?labelSelector=a%3Db%3Dc"), None);
    assert_eq!(code, 400);
    assert_status(&body, 400, "BadRequest");

    let (_, list) = api.call("GET", all, None);
    assert_eq!(list["kind"], "RoleBindingList");
    assert_eq!(list["apiVersion"], "rbac.authorization.k8s.io/v1");
    assert!(list["metadata"]["resourceVersion"].is_string());
    assert!(
        list["items"][0].get("kind").is_none(),
        "list items carry no kind"
    );

    let (_, page1) = api.call("GET", &format!("{all}?limit=3"), None);
    assert_eq!(page1["items"].as_array().unwrap().len(), 3);
    let token = page1["metadata"]["continue"].as_str().unwrap().to_owned();
    let (_, page2) = api.call("GET", &format!("{all}?limit=3&continue={token}"), None);
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert_eq!(page2["items"][0]["metadata"]["name"], "d");
    assert!(page2["metadata"].get("continue").is_none());
}

#[test]
fn dry_run_validates_without_storing() {
    let api = Api::new();
    let (code, _) = api.call(
        "POST",
        &format!("{RB}?dryRun=All"),
        Some(&binding("dry", "edit", json!({}))),
    );
    assert_eq!(code, 201);
    assert!(api
        .handle
        .get(Resource::RoleBindings, Some("default"), "dry")
        .is_none());
}

#[test]
fn unknown_paths_unsupported_verbs_and_outages_answer_status_bodies() {
    let api = Api::new();
    let (code, body) = api.call("GET", "/apis/rbac.authorization.k8s.io/v1/roles", None);
    assert_eq!(code, 404);
    assert_status(&body, 404, "NotFound");
    let (code, body) = api.call("PATCH", &format!("{RB}/x"), Some(&json!({})));
    assert_eq!(code, 405);
    assert_status(&body, 405, "MethodNotAllowed");
    api.handle.set_outage(Some(503));
    let (code, body) = api.call("GET", RB, None);
    assert_eq!(code, 503);
    assert_status(&body, 503, "ServiceUnavailable");
    api.handle.set_outage(None);
    let (code, _) = api.call("GET", RB, None);
    assert_eq!(code, 200);
}

#[test]
fn resource_versions_grow_globally_across_resources() {
    let api = Api::new();
    let (_, a) = api.call("POST", RB, Some(&binding("a", "edit", json!({}))));
    let (_, b) = api.call("POST", CRB, Some(&cluster_binding("b")));
    let v = |x: &Value| {
        x["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(v(&b) > v(&a));
    let (_, list) = api.call("GET", CRB, None);
    assert_eq!(
        list["metadata"]["resourceVersion"],
        b["metadata"]["resourceVersion"]
    );
}
