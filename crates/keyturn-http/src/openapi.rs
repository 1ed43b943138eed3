//! The OpenAPI 3.1 document served at `/openapi.json`. It is generated from the route table in
//! `routes.rs`, which also builds the routers. Each [`Operation`] carries the handler that the
//! router mounts and the description that the document prints, so a route cannot be served
//! without appearing in the document. Schemas of request and response bodies are written here by
//! hand, next to the members that `json.rs`, `verify.rs` and `error.rs` read and write.

use axum::extract::State;
use axum::handler::Handler;
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, on, MethodFilter, MethodRouter};
use serde_json::{json, Map, Value};

use crate::AppState;

/// The methods that `/v1/auth` documents. The handler accepts any method, so a gateway can
/// forward the original one, but OpenAPI can name only these.
pub(crate) const EVERY_METHOD: &[Method] = &[
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
    Method::PATCH,
    Method::TRACE,
];

/// One route of the service: the handler that the router mounts and its documentation.
pub(crate) struct Operation {
    /// The path in axum's syntax: `{name}` for a segment, `{*name}` for the rest of the path.
    pub path: &'static str,
    pub methods: &'static [Method],
    pub handler: MethodRouter<AppState>,
    id: &'static str,
    summary: &'static str,
    /// The reserved scope that the caller's key needs; `Some("")` when any valid key may call.
    scope: Option<&'static str>,
    parameters: Vec<Value>,
    body: Option<Value>,
    responses: Vec<(u16, &'static str, Option<Value>)>,
}

impl Operation {
    /// Describes `handler` serving `methods` at `path`. [`EVERY_METHOD`] mounts it for any method.
    pub(crate) fn new<H, T>(methods: &'static [Method], path: &'static str, id: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let handler = if methods == EVERY_METHOD {
            any(handler)
        } else {
            let filters = methods.iter().map(|method| {
                MethodFilter::try_from(method.clone()).unwrap_or_else(|_| panic!("unsupported method {method}"))
            });
            let filter = filters.reduce(MethodFilter::or).expect("an operation has at least one method");
            on(filter, handler)
        };
        Operation {
            path,
            methods,
            handler,
            id,
            summary: "",
            scope: None,
            parameters: Vec::new(),
            body: None,
            responses: Vec::new(),
        }
    }

    pub(crate) fn summary(mut self, summary: &'static str) -> Self {
        self.summary = summary;
        self
    }

    /// Requires an API key holding `scope`, or any valid key when `scope` is empty, and documents
    /// the 401 and 403 rejections.
    pub(crate) fn scope(mut self, scope: &'static str) -> Self {
        self.scope = Some(scope);
        self.responses.push((401, "the API key is missing, invalid, expired, rotated or revoked", Some(problem())));
        let forbidden = if scope.is_empty() {
            "the key may not do this; the problem's code says why"
        } else {
            "the key lacks the scope"
        };
        self.responses.push((403, forbidden, Some(problem())));
        self.responses.push((
            429,
            "the client address failed verification too often; a valid key still passes, other keys \
             may retry after Retry-After seconds",
            Some(problem()),
        ));
        self.responses.push((500, "an internal error; the server log has the cause", Some(problem())));
        self.responses.push((503, "the store cannot be reached; Retry-After: 1", Some(problem())));
        self
    }

    /// Documents a query parameter of type `schema`.
    pub(crate) fn query(mut self, name: &str, schema: Value, description: &str) -> Self {
        self.parameters.push(json!({ "name": name, "in": "query", "description": description, "schema": schema }));
        self
    }

    /// Documents a JSON request body; `required` is false when an empty body takes the defaults.
    pub(crate) fn body(mut self, schema: Value, required: bool) -> Self {
        self.body = Some(json!({ "required": required, "content": { "application/json": { "schema": schema } } }));
        self.responses.push((400, "the body or a parameter is invalid", Some(problem())));
        self.responses.push((413, "the body is larger than --max-body-bytes", Some(problem())));
        self.responses.push((415, "the body is not application/json", Some(problem())));
        self
    }

    /// Documents a response; `schema` is the JSON body, a problem, or none.
    pub(crate) fn response(mut self, status: u16, description: &'static str, schema: Option<Value>) -> Self {
        self.responses.push((status, description, schema));
        self
    }

    /// Renders the operation object for `method`.
    fn render(&self, method: &Method, listener: &str) -> Value {
        let mut parameters = self.parameters.clone();
        for name in path_parameters(self.path) {
            let description = if self.path.contains("{*") { "any path, slashes included" } else { "a key id" };
            parameters.push(json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } }));
        }

        let mut responses = Map::new();
        let common: [(u16, &str); 2] = [
            (408, "the request took longer than --request-timeout"),
            (431, "the headers are larger than --max-header-bytes"),
        ];
        let documented =
            self.responses.iter().map(|(status, description, schema)| (*status, *description, schema.clone()));
        for (status, description, schema) in
            documented.chain(common.map(|(status, text)| (status, text, Some(problem()))))
        {
            let mut response = json!({ "description": description });
            if let Some(schema) = schema {
                let media_type = if schema == problem() { "application/problem+json" } else { "application/json" };
                response["content"] = json!({ media_type: { "schema": schema } });
            }
            responses.entry(status.to_string()).or_insert(response);
        }

        let mut operation = json!({
            "operationId": if self.methods.len() > 1 { format!("{}_{}", self.id, method.as_str().to_lowercase()) } else { self.id.to_owned() },
            "summary": self.summary,
            "parameters": parameters,
            "responses": responses,
            "x-keyturn-listener": listener,
        });
        if let Some(body) = &self.body {
            operation["requestBody"] = body.clone();
        }
        match self.scope {
            Some(scope) => {
                operation["security"] = json!([{ "bearer": [] }, { "apiKey": [] }]);
                if !scope.is_empty() {
                    operation["x-keyturn-scope"] = json!(scope);
                }
            }
            None => operation["security"] = json!([]),
        }
        operation
    }
}

/// Converts an axum path to an OpenAPI path: `{*rest}` becomes `{rest}`.
pub(crate) fn openapi_path(path: &str) -> String {
    path.replace("{*", "{")
}

fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| name.trim_start_matches('*'))
}

/// Builds the document from the operations of the API listener and of the gateway listener.
/// An operation on both listeners (the health checks) is documented once.
pub(crate) fn document(api: &[Operation], gateway: &[Operation], api_key_header: &str) -> Value {
    let mut paths = Map::new();
    let listeners =
        api.iter().map(|operation| (operation, "api")).chain(gateway.iter().map(|operation| (operation, "gateway")));
    for (operation, listener) in listeners {
        let on_both = api.iter().any(|other| other.path == operation.path)
            && gateway.iter().any(|other| other.path == operation.path);
        let listener = if on_both { "api, gateway" } else { listener };
        let item = paths.entry(openapi_path(operation.path)).or_insert_with(|| json!({}));
        for method in operation.methods {
            let key = method.as_str().to_lowercase();
            if item.get(&key).is_none() {
                item[key] = operation.render(method, listener);
            }
        }
    }

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "keyturn",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP service of keyturn (`keyturn serve`). `x-keyturn-listener` names the listener that serves an operation: `api` (--listen) or `gateway` (--gateway-listen). `x-keyturn-scope` names the reserved scope the caller's key needs; `keyturn:admin` grants every one.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "apiKey": { "type": "apiKey", "in": "header", "name": api_key_header },
            },
            "schemas": schemas(),
        },
    })
}

/// Serves `/openapi.json`.
pub(crate) async fn serve_document(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], state.openapi.clone()).into_response()
}

/// Returns a reference to the schema `name` under `components.schemas`.
pub(crate) fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Returns the schema reference of the problem+json body of every error response.
pub(crate) fn problem() -> Value {
    schema("Problem")
}

fn schemas() -> Value {
    let string = json!({ "type": "string" });
    let nullable_string = json!({ "type": ["string", "null"] });
    let instant = json!({ "type": ["string", "null"], "format": "date-time" });
    let duration =
        json!({ "type": "string", "description": "whole amounts with units d, h, m, s, ms, such as 90d or 1h30m" });
    let scopes = json!({ "type": "array", "items": { "type": "string" } });

    let key_members = json!({
        "key_id": string, "name": string, "owner": nullable_string, "scopes": scopes,
        "state": { "type": "string", "enum": [
            "active", "expiring", "grace", "superseded", "rotation_requested", "expired", "rotated", "revoked",
        ] },
        "state_deadline": instant, "created_at": instant, "expires_at": instant, "grace": duration,
        "grace_ends_at": instant, "warn_before": duration, "revoked_at": instant,
        "revocation_reason": nullable_string, "rotated_at": instant, "overlap_ends_at": instant,
        "rotation_requested_at": instant, "rotation_deadline": instant,
        "successor_id": nullable_string, "predecessor_id": nullable_string, "first_used_at": instant,
        "last_used_at": instant, "metadata": { "type": "object" },
        "policy": string, "overlap_after_first_use": { "type": ["string", "null"] },
    });
    let mut issued_members = key_members.clone();
    issued_members["token"] = json!({ "type": "string", "description": "the new token, shown this once" });
    let mut rotated_members = issued_members.clone();
    rotated_members["predecessor"] = schema("Key");
    let policy_members = json!({
        "name": string, "max_lifetime": duration, "grace": duration, "warn_before": duration,
        "default_overlap": duration, "self_rotation": { "type": "boolean" }, "max_chain_lifetime": duration,
        "rotate_every": { "type": ["string", "null"] }, "overlap_after_first_use": { "type": ["string", "null"] },
    });
    let mut put_members = policy_members.clone();
    if let Some(members) = put_members.as_object_mut() {
        members.remove("name");
        members.insert("rotate_every".to_owned(), duration.clone());
        members.insert("overlap_after_first_use".to_owned(), duration.clone());
        members.insert("apply_to_existing".to_owned(), json!({ "type": "boolean" }));
    }
    let required_keys: Vec<&String> =
        key_members.as_object().map(|members| members.keys().collect()).unwrap_or_default();

    json!({
        "Problem": {
            "type": "object",
            "description": "An RFC 9457 problem; `type` is urn:keyturn:problem:<code>",
            "required": ["type", "title", "status", "detail", "code"],
            "properties": {
                "type": string, "title": string, "status": { "type": "integer" }, "detail": string, "code": string,
                "key_id": { "type": "string", "description": "the key the problem is about, where one is" },
            },
        },
        "Key": { "type": "object", "required": required_keys, "properties": key_members },
        "IssuedKey": { "type": "object", "properties": issued_members },
        "RotatedKey": { "type": "object", "properties": rotated_members },
        "KeyPage": {
            "type": "object",
            "properties": { "keys": { "type": "array", "items": schema("Key") }, "next_cursor": nullable_string },
        },
        "MigrationReport": {
            "type": "object",
            "properties": {
                "keys": { "type": "array", "items": { "type": "object", "properties": {
                    "key_id": string, "name": string, "owner": nullable_string,
                    "rotated_at": { "type": "string", "format": "date-time" },
                    "overlap_ends_at": { "type": "string", "format": "date-time" },
                    "last_used_at": instant, "last_client_addr": nullable_string,
                    "uses_since_rotation": { "type": "integer", "minimum": 0 },
                    "successor_id": string, "successor_first_used_at": instant,
                    "status": { "type": "string", "enum": ["moved", "both", "not_moved"] },
                } } },
                "next_cursor": nullable_string,
            },
        },
        "AuditPage": {
            "type": "object",
            "properties": {
                "events": { "type": "array", "items": { "type": "object", "properties": {
                    "seq": { "type": "integer" }, "at": instant, "event": string, "key_id": nullable_string,
                    "actor": string, "client_addr": nullable_string, "reason": nullable_string, "details": { "type": "object" },
                } } },
                "next_cursor": { "type": ["integer", "null"] },
            },
        },
        "CreateKey": {
            "type": "object", "additionalProperties": false, "required": ["name"],
            "properties": {
                "name": string, "owner": string, "scopes": scopes, "metadata": { "type": "object" },
                "expires_in": duration, "expires_at": { "type": "string", "format": "date-time" },
                "no_expiry": { "type": "boolean" }, "grace": duration, "warn_before": duration,
                "self_rotation": { "type": "boolean" }, "max_chain_lifetime": duration,
                "policy": { "type": "string", "description": "a named policy [default: default]" },
            },
        },
        "RotateKey": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "overlap": duration, "expires_in": duration, "expires_at": { "type": "string", "format": "date-time" },
                "replace_unused_successor": { "type": "boolean" }, "overlap_after_first_use": duration,
            },
        },
        "Policy": { "type": "object", "properties": policy_members.clone() },
        "PolicyList": { "type": "object", "properties": { "policies": { "type": "array", "items": schema("Policy") } } },
        "PutPolicy": { "type": "object", "additionalProperties": false, "properties": put_members },
        "PolicyChange": {
            "type": "object",
            "properties": {
                "policy": schema("Policy"),
                "action": { "type": "string", "enum": ["added", "changed", "unchanged"] },
                "changes": { "type": "array", "items": { "type": "object", "properties": {
                    "field": string, "old": string, "new": string,
                } } },
                "keys_updated": { "type": "integer", "minimum": 0 },
            },
        },
        "RevokeKey": { "type": "object", "additionalProperties": false, "properties": { "reason": string } },
        "RevokeKeys": {
            "type": "object", "additionalProperties": false,
            "description": "exactly one of owner, policy and key_ids; an unknown policy is a 400 unknown_policy",
            "properties": {
                "owner": string,
                "policy": { "type": "string", "description": "a named policy: every key that references it" },
                "key_ids": { "type": "array", "items": string, "maxItems": 10_000 },
                "reason": string,
                "dry_run": { "type": "boolean", "default": false },
            },
        },
        "BulkRevocation": {
            "type": "object",
            "properties": {
                "dry_run": { "type": "boolean" },
                "keys": { "type": "array", "items": { "type": "object", "properties": {
                    "key_id": string, "name": string, "owner": nullable_string, "state": string,
                    "result": { "type": ["string", "null"], "enum": ["revoked", "already_revoked", null] },
                } } },
                "missing_key_ids": { "type": "array", "items": string },
                "revoked": { "type": "integer" },
                "already_revoked": { "type": "integer" },
            },
        },
        "LeakReport": {
            "type": "object", "additionalProperties": false, "required": ["tokens"],
            "properties": {
                "tokens": { "type": "array", "items": string, "minItems": 1, "maxItems": 1000 },
                "source": string,
                "reason": string,
            },
        },
        "LeakResults": {
            "type": "object",
            "properties": { "results": { "type": "array", "items": { "type": "object", "properties": {
                "line": { "type": "integer", "description": "the token's position in tokens, from 1" },
                "key_id": nullable_string,
                "status": { "type": "string", "enum": ["revoked", "already_revoked", "not_found", "pepper_missing"] },
                "detail": string,
            } } } },
        },
        "AddWebhook": {
            "type": "object", "additionalProperties": false, "required": ["url"],
            "properties": {
                "url": { "type": "string", "description": "an https URL; http only to loopback with allow_private_network" },
                "events": { "type": "array", "items": string, "description": "notifiable event types; empty for all" },
                "allow_private_network": { "type": "boolean", "default": false },
            },
        },
        "Webhook": {
            "type": "object",
            "properties": {
                "id": string, "url": string, "events": { "type": "array", "items": string },
                "allow_private_network": { "type": "boolean" }, "enabled": { "type": "boolean" },
                "disabled_reason": nullable_string, "created_at": instant,
                "secrets": { "type": "array", "items": { "type": "object", "properties": {
                    "created_at": instant, "expires_at": instant } } },
            },
        },
        "AddedWebhook": {
            "allOf": [schema("Webhook"), { "type": "object", "properties": {
                "secret": { "type": "string", "description": "whsec_ and base64; shown only in this response" } } }],
        },
        "WebhookList": { "type": "object", "properties": { "webhooks": { "type": "array", "items": schema("Webhook") } } },
        "WebhookTestResult": {
            "type": "object",
            "properties": {
                "delivered": { "type": "boolean" },
                "status": { "type": ["integer", "null"] },
                "result": { "type": "string", "description": "the status line or the error" },
            },
        },
        "RotationRequest": {
            "type": "object", "additionalProperties": false, "required": ["by"],
            "description": "exactly one of owner, policy and key_ids; an unknown policy is a 400 unknown_policy",
            "properties": {
                "owner": string,
                "policy": { "type": "string", "description": "a named policy: every key that references it" },
                "key_ids": { "type": "array", "items": string },
                "by": { "type": "string", "description": "an RFC 3339 instant, or a duration from now such as 14d" },
                "reason": string, "dry_run": { "type": "boolean", "default": false },
            },
        },
        "RotationRequestResult": {
            "type": "object",
            "properties": {
                "dry_run": { "type": "boolean" }, "requested": { "type": "integer", "minimum": 0 },
                "keys": { "type": "array", "items": { "type": "object", "properties": {
                    "key_id": string,
                    "status": { "type": "string", "enum": ["requested", "already_rotated", "revoked", "expired", "not_found"] },
                    "rotation_deadline": instant, "expires_at": instant, "successor_id": nullable_string,
                } } },
            },
        },
        "VerifyRequest": {
            "type": "object", "additionalProperties": false, "required": ["token"],
            "properties": { "token": string, "scopes": scopes },
        },
        "VerifyDecision": {
            "type": "object",
            "properties": {
                "allowed": { "type": "boolean" }, "outcome": string, "key_id": nullable_string,
                "owner": nullable_string, "scopes": { "type": ["array", "null"], "items": string },
                "expires_at": instant, "missing_scopes": scopes, "headers": { "type": "object" },
                "rejection": { "type": ["object", "null"], "properties": {
                    "status": { "type": "integer" }, "headers": { "type": "object" }, "body": string,
                } },
            },
        },
        "Status": { "type": "object", "properties": { "status": string } },
    })
}
