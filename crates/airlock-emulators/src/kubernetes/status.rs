//! `Status` bodies (`apiVersion: v1`) exactly as the API server's
//! `k8s.io/apimachinery/pkg/api/errors` constructors shape them, plus the
//! field errors that `Invalid` carries as `details.causes`.

use serde_json::{json, Value};

/// The API group every emulated resource belongs to.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// An error answer: the HTTP status and its `Status` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code (also `code` in the body).
    pub code: u16,
    /// The `Status` object.
    pub body: Value,
}

/// `group/resource` as the API server prints it in messages (`rolebindings.rbac.authorization.k8s.io`).
fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    fn failure(code: u16, reason: &str, message: String, details: Option<Value>) -> ApiError {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        });
        if let Some(details) = details {
            body["details"] = details;
        }
        ApiError { code, body }
    }

    /// `errors.NewNotFound`: details.kind is the *resource*, as the real server sends it.
    pub fn not_found(resource: &str, group: &str, name: &str) -> ApiError {
        ApiError::failure(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(resource, group)),
            Some(json!({"name": name, "group": group, "kind": resource})),
        )
    }

    /// `errors.NewAlreadyExists` (create of a name that is taken).
    pub fn already_exists(resource: &str, name: &str) -> ApiError {
        ApiError::failure(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(resource, GROUP)),
            Some(json!({"name": name, "group": GROUP, "kind": resource})),
        )
    }

    /// `errors.NewConflict` (stale resourceVersion, failed precondition).
    pub fn conflict(resource: &str, name: &str, why: &str) -> ApiError {
        ApiError::failure(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(resource, GROUP)
            ),
            Some(json!({"name": name, "group": GROUP, "kind": resource})),
        )
    }

    /// `errors.NewInvalid`: details.kind is the *Kind*; one cause per field error.
    pub fn invalid(kind: &str, name: &str, errors: &[FieldError]) -> ApiError {
        let mut unique: Vec<&FieldError> = Vec::new();
        for e in errors {
            if !unique.contains(&e) {
                unique.push(e);
            }
        }
        let rendered: Vec<String> = unique.iter().map(|e| e.to_string()).collect();
        // ErrorList.ToAggregate: one error prints bare, several in brackets.
        let aggregate = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let causes: Vec<Value> = unique
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.body(), "field": e.field}))
            .collect();
        ApiError::failure(
            422,
            "Invalid",
            format!("{kind}.{GROUP} \"{name}\" is invalid: {aggregate}"),
            Some(json!({"name": name, "group": GROUP, "kind": kind, "causes": causes})),
        )
    }

    /// `errors.NewBadRequest` (undecodable body, name/namespace mismatch, bad selector).
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::failure(400, "BadRequest", message.into(), None)
    }

    /// What the authentication filter answers when no known bearer token came.
    pub fn unauthorized() -> ApiError {
        ApiError::failure(401, "Unauthorized", "Unauthorized".into(), None)
    }

    /// `errors.NewForbidden` with the RBAC authorizer's message.
    pub fn forbidden(
        user: &str,
        verb: &str,
        resource: &str,
        name: Option<&str>,
        namespace: Option<&str>,
    ) -> ApiError {
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".into(),
        };
        let why = format!(
            "User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{GROUP}\" {scope}"
        );
        let what = qualified(resource, GROUP);
        let message = match name {
            Some(n) => format!("{what} \"{n}\" is forbidden: {why}"),
            None => format!("{what} is forbidden: {why}"),
        };
        let mut details = json!({"group": GROUP, "kind": resource});
        if let Some(n) = name {
            details["name"] = json!(n);
        }
        ApiError::failure(403, "Forbidden", message, Some(details))
    }

    /// A path the server does not serve.
    pub fn path_not_found() -> ApiError {
        ApiError::failure(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            Some(json!({})),
        )
    }

    /// A verb the resource does not support (or this emulation does not implement).
    pub fn method_not_allowed() -> ApiError {
        ApiError::failure(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            Some(json!({})),
        )
    }

    /// `errors.NewInternalError`.
    pub fn internal(message: &str) -> ApiError {
        ApiError::failure(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
            Some(json!({"causes": [{"message": message}]})),
        )
    }

    /// What an overloaded or half-started server answers (injected outages).
    pub fn outage(code: u16) -> ApiError {
        match code {
            429 => ApiError::failure(
                429,
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later"
                    .into(),
                Some(json!({"retryAfterSeconds": 1})),
            ),
            500 => ApiError::internal("etcdserver: request timed out"),
            504 => ApiError::failure(
                504,
                "Timeout",
                "the server was unable to return a response in the time allotted, but may still be processing the request".into(),
                Some(json!({})),
            ),
            _ => ApiError::failure(
                code,
                "ServiceUnavailable",
                "the server is currently unable to handle the request".into(),
                Some(json!({})),
            ),
        }
    }
}

/// What the generic registry answers to a delete that removed the object
/// immediately: a Success Status whose details.kind is the resource.
pub fn delete_success(resource: &str, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": GROUP, "kind": resource, "uid": uid},
    })
}

/// One `field.Error` from apimachinery's validation package.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// JSON path of the field (`roleRef.name`, `subjects[0].apiGroup`).
    pub field: String,
    /// What is wrong with it.
    pub kind: FieldErrorKind,
}

/// The field error types the emulated validation produces.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldErrorKind {
    /// `field.Required(path, detail)`.
    Required(String),
    /// `field.Invalid(path, value, detail)`; the value as the server renders it.
    Invalid { value: String, detail: String },
    /// `field.NotSupported(path, value, supported)`.
    NotSupported {
        value: String,
        supported: Vec<String>,
    },
    /// `field.Forbidden(path, detail)`.
    Forbidden(String),
}

impl FieldError {
    /// `field.Required`.
    pub fn required(field: impl Into<String>, detail: &str) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Required(detail.into()),
        }
    }

    /// `field.Invalid` with a string value (rendered quoted, as Go's `%q`).
    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid {
                value: quote(value),
                detail: detail.into(),
            },
        }
    }

    /// `field.Invalid` with a value rendered by the caller (structs print as Go's `%#v`).
    pub fn invalid_raw(field: impl Into<String>, value: String, detail: &str) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid {
                value,
                detail: detail.into(),
            },
        }
    }

    /// `field.NotSupported`.
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::NotSupported {
                value: value.into(),
                supported: supported.iter().map(|s| s.to_string()).collect(),
            },
        }
    }

    /// `field.Forbidden`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Forbidden(detail.into()),
        }
    }

    /// `details.causes[].reason`.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required(_) => "FieldValueRequired",
            FieldErrorKind::Invalid { .. } => "FieldValueInvalid",
            FieldErrorKind::NotSupported { .. } => "FieldValueNotSupported",
            FieldErrorKind::Forbidden(_) => "FieldValueForbidden",
        }
    }

    /// `field.Error.ErrorBody()`: the message without the field path.
    pub fn body(&self) -> String {
        match &self.kind {
            FieldErrorKind::Required(d) if d.is_empty() => "Required value".into(),
            FieldErrorKind::Required(d) => format!("Required value: {d}"),
            FieldErrorKind::Invalid { value, detail } => {
                format!("Invalid value: {value}: {detail}")
            }
            FieldErrorKind::NotSupported { value, supported } => {
                let list: Vec<String> = supported.iter().map(|s| quote(s)).collect();
                format!(
                    "Unsupported value: {}: supported values: {}",
                    quote(value),
                    list.join(", ")
                )
            }
            FieldErrorKind::Forbidden(d) => format!("Forbidden: {d}"),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Go's `%q` for the plain strings these messages carry.
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}
