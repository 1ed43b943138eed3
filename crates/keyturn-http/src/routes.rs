//! The route table: every endpoint of each listener with its documentation. The routers and the
//! OpenAPI document are both built from these lists, so they cannot disagree about a path or a
//! method.

use axum::http::Method;
use serde_json::json;

use crate::openapi::{problem, schema, Operation, EVERY_METHOD};
use crate::{
    admin, gateway, incident, metrics, openapi, policies, rotation_requests, self_rotate, server, verify, webhooks,
};

const GET: &[Method] = &[Method::GET];
const POST: &[Method] = &[Method::POST];
const PUT: &[Method] = &[Method::PUT];
const DELETE: &[Method] = &[Method::DELETE];

/// Returns the endpoints of the API listener (`--listen`).
pub(crate) fn api_operations() -> Vec<Operation> {
    let limit = json!({ "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 });
    let mut operations = vec![
        Operation::new(GET, "/v1/keys", "list_keys", admin::list_keys)
            .summary("List keys in creation order, a page at a time")
            .scope(admin::KEYS_READ)
            .query("owner", json!({ "type": "string" }), "only keys of this owner")
            .query("state", json!({ "type": "string" }), "only keys in this state now")
            .query(
                "expiring_within",
                json!({ "type": "string" }),
                "only keys still accepted that expire within this duration from now, such as 30d",
            )
            .query(
                "unused_for",
                json!({ "type": "string" }),
                "only keys still accepted and unused for this duration (stale keys), such as 90d",
            )
            .query("limit", limit.clone(), "the page size")
            .query("cursor", json!({ "type": "string" }), "next_cursor of the previous page")
            .response(200, "a page of keys", Some(schema("KeyPage")))
            .response(400, "a query parameter is invalid", Some(problem())),
        Operation::new(POST, "/v1/keys", "create_key", admin::create_key)
            .summary("Create a key and return its token, shown this once")
            .scope(admin::KEYS_WRITE)
            .body(schema("CreateKey"), true)
            .response(201, "the new key with its token; Location names it", Some(schema("IssuedKey"))),
        // A static segment takes precedence over `{key_id}` in axum's router, whatever the order
        // here, and "migration-report" is not a valid key id either.
        Operation::new(GET, "/v1/keys/migration-report", "migration_report", admin::migration_report)
            .summary("List keys in their overlap window, the soonest to end first, with whether clients moved")
            .scope(admin::KEYS_READ)
            .query("owner", json!({ "type": "string" }), "only keys of this owner")
            .query("limit", limit.clone(), "the page size")
            .query("cursor", json!({ "type": "string" }), "next_cursor of the previous page")
            .response(200, "a page of the migration report", Some(schema("MigrationReport")))
            .response(400, "a query parameter is invalid", Some(problem())),
        Operation::new(POST, "/v1/keys/revoke", "revoke_keys", incident::revoke_keys)
            .summary("Revoke every key of an owner or of a list of key ids in one transaction, or list them")
            .scope(admin::KEYS_WRITE)
            .body(schema("RevokeKeys"), true)
            .response(
                200,
                "each selected key with its result; nothing is written with dry_run",
                Some(schema("BulkRevocation")),
            )
            .response(400, "the selection is missing, ambiguous or too large", Some(problem())),
        Operation::new(POST, "/v1/keys/report-leak", "report_leak", incident::report_leak)
            .summary("Revoke the keys of leaked tokens; results never contain a token")
            .scope(admin::KEYS_WRITE)
            .body(schema("LeakReport"), true)
            .response(200, "one result per token, by position and key id", Some(schema("LeakResults")))
            .response(400, "the token list is empty, too long or holds an over-long entry", Some(problem())),
        Operation::new(POST, "/v1/keys/rotation-requests", "request_rotation", rotation_requests::request_rotation)
            .summary("Ask keys to be rotated by a deadline; keys not rotated in time enter grace there")
            .scope(admin::KEYS_WRITE)
            .body(schema("RotationRequest"), true)
            .response(201, "the request was recorded for at least one key", Some(schema("RotationRequestResult")))
            .response(
                200,
                "a dry run, or no selected key could take the request",
                Some(schema("RotationRequestResult")),
            )
            .response(400, "the body, a key id or the deadline is invalid", Some(problem())),
        Operation::new(GET, "/v1/keys/{key_id}", "show_key", admin::show_key)
            .summary("Show a key, without its token")
            .scope(admin::KEYS_READ)
            .response(200, "the key", Some(schema("Key")))
            .response(400, "the key id is invalid", Some(problem()))
            .response(404, "no key has this id", Some(problem())),
        Operation::new(POST, "/v1/keys/{key_id}/rotate", "rotate_key", admin::rotate_key)
            .summary("Rotate a key: issue a successor while the old key works for the overlap")
            .scope(admin::KEYS_WRITE)
            .body(schema("RotateKey"), false)
            .response(201, "the successor with its token, and the old key as predecessor", Some(schema("RotatedKey")))
            .response(404, "no key has this id", Some(problem()))
            .response(409, "the key's state does not allow a rotation", Some(problem())),
        Operation::new(POST, "/v1/keys/{key_id}/revoke", "revoke_key", admin::revoke_key)
            .summary("Revoke a key for good")
            .scope(admin::KEYS_WRITE)
            .body(schema("RevokeKey"), false)
            .response(200, "the revoked key", Some(schema("Key")))
            .response(404, "no key has this id", Some(problem()))
            .response(409, "the key is already revoked", Some(problem())),
        Operation::new(GET, "/v1/audit", "list_audit", admin::list_audit)
            .summary("List audit events in sequence order, a page at a time")
            .scope(admin::AUDIT_READ)
            .query("key_id", json!({ "type": "string" }), "only events of this key")
            .query("event", json!({ "type": "string" }), "only events of this type, such as authn_token_created")
            .query("since", json!({ "type": "string", "format": "date-time" }), "events at or after this instant")
            .query("until", json!({ "type": "string", "format": "date-time" }), "events before this instant")
            .query("limit", limit, "the page size")
            .query("cursor", json!({ "type": "integer" }), "the sequence number after which to continue")
            .response(200, "a page of audit events", Some(schema("AuditPage")))
            .response(400, "a query parameter is invalid", Some(problem())),
        Operation::new(GET, "/v1/policies", "list_policies", policies::list_policies)
            .summary("List the named policies, with the built-in default")
            .scope(admin::KEYS_READ)
            .response(200, "the policies by name", Some(schema("PolicyList"))),
        Operation::new(GET, "/v1/policies/{name}", "show_policy", policies::show_policy)
            .summary("Show one named policy")
            .scope(admin::KEYS_READ)
            .response(200, "the policy", Some(schema("Policy")))
            .response(400, "the name is invalid, or no policy has it", Some(problem())),
        Operation::new(PUT, "/v1/policies/{name}", "put_policy", policies::put_policy)
            .summary("Add or change a named policy, optionally writing it into its live keys")
            .scope(policies::ADMIN)
            .body(schema("PutPolicy"), true)
            .response(200, "the policy was changed or left unchanged", Some(schema("PolicyChange")))
            .response(201, "the policy was added", Some(schema("PolicyChange")))
            .response(400, "a value is invalid", Some(problem()))
            .response(409, "the policy changed while the request ran", Some(problem())),
        Operation::new(GET, "/v1/webhooks", "list_webhooks", webhooks::list)
            .summary("List webhook endpoints, without their secrets")
            .scope(webhooks::ADMIN)
            .response(200, "every endpoint", Some(schema("WebhookList"))),
        Operation::new(POST, "/v1/webhooks", "add_webhook", webhooks::add)
            .summary("Add a webhook endpoint and return its signing secret, shown this once")
            .scope(webhooks::ADMIN)
            .body(schema("AddWebhook"), true)
            .response(201, "the endpoint with its secret", Some(schema("AddedWebhook")))
            .response(400, "the URL, an address or an event type is invalid", Some(problem())),
        Operation::new(DELETE, "/v1/webhooks/{endpoint_id}", "remove_webhook", webhooks::remove)
            .summary("Remove a webhook endpoint with its undelivered messages")
            .scope(webhooks::ADMIN)
            .response(204, "the endpoint was removed", None)
            .response(404, "no endpoint has this id", Some(problem())),
        Operation::new(POST, "/v1/webhooks/{endpoint_id}/test", "test_webhook", webhooks::test)
            .summary("Send a signed webhook_test message to an endpoint now")
            .scope(webhooks::ADMIN)
            .response(200, "what the endpoint answered", Some(schema("WebhookTestResult")))
            .response(400, "the endpoint's URL or address is rejected now", Some(problem()))
            .response(404, "no endpoint has this id", Some(problem())),
        Operation::new(POST, "/v1/self/rotate", "self_rotate", self_rotate::self_rotate)
            .summary("Rotate the calling key itself; send no body")
            .scope("")
            .response(201, "the successor with its token, and the old key as predecessor", Some(schema("RotatedKey")))
            .response(409, "the successor of the key was already used", Some(problem())),
        Operation::new(POST, "/v1/verify", "verify", verify::verify)
            .summary("Verify a client's token against the scopes its route requires")
            .scope(verify::VERIFY)
            .body(schema("VerifyRequest"), true)
            .response(200, "the decision, allowed or not, with the response to send", Some(schema("VerifyDecision"))),
        Operation::new(GET, "/metrics", "metrics", metrics::metrics)
            .summary("Prometheus metrics in the OpenMetrics text format")
            .response(200, "the metrics", None),
        Operation::new(GET, "/openapi.json", "openapi", openapi::serve_document)
            .summary("This OpenAPI document")
            .response(200, "the document", Some(json!({ "type": "object" }))),
    ];
    operations.extend(health_operations());
    operations
}

/// Returns the endpoints of the gateway listener (`--gateway-listen`).
pub(crate) fn gateway_operations() -> Vec<Operation> {
    let mut operations = Vec::new();
    for (path, id) in [("/v1/auth", "auth"), ("/v1/auth/{*path}", "auth_path")] {
        operations.push(
            Operation::new(EVERY_METHOD, path, id, gateway::auth)
                .summary("Authenticate a request forwarded by nginx auth_request or Envoy ext_authz (any method)")
                .scope("")
                .response(
                    204,
                    "the key is allowed; Keyturn-Key-Id, Keyturn-Scopes and the lifecycle headers name it",
                    None,
                )
                .response(400, "a credential header is invalid or the URL carries a token", Some(problem())),
        );
    }
    operations.extend(health_operations());
    operations
}

/// Returns the health checks, which both listeners serve.
fn health_operations() -> Vec<Operation> {
    vec![
        Operation::new(GET, "/healthz", "healthz", server::healthz).summary("Report that the process runs").response(
            200,
            "the process runs",
            Some(schema("Status")),
        ),
        Operation::new(GET, "/readyz", "readyz", server::readyz)
            .summary("Report whether the store responds")
            .response(200, "the store responds", Some(schema("Status")))
            .response(503, "the store cannot be reached; Retry-After: 1", Some(problem())),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::openapi::openapi_path;

    /// Returns the paths that a router serves. axum 0.8 has no API that lists them, so this reads
    /// its `Debug` output, which prints each route as `RouteId(n): "/path"` under `path_router`,
    /// before the `fallback_router` that serves unmatched paths.
    fn served_paths(router: &axum::Router<crate::AppState>) -> BTreeSet<String> {
        let text = format!("{router:?}");
        let (routes, _) = text.split_once("fallback_router").expect("the Debug output names the fallback router");
        let paths: BTreeSet<String> = routes
            .split("RouteId(")
            .filter_map(|part| part.split_once("): \"")?.1.split_once('"').map(|(path, _)| path.to_owned()))
            .filter(|path| !path.contains("__private__"))
            .collect();
        assert!(!paths.is_empty(), "no route found in the router's Debug output:\n{text}");
        paths
    }

    #[test]
    fn document_lists_every_served_route() {
        let document = openapi::document(&api_operations(), &gateway_operations(), "X-API-Key");
        let documented: BTreeSet<String> = document["paths"].as_object().unwrap().keys().cloned().collect();

        for operations in [api_operations(), gateway_operations()] {
            let served = served_paths(&server::routes_of(operations));
            for path in &served {
                assert!(documented.contains(&openapi_path(path)), "{path} is served but not in the document");
            }
        }
        let api = served_paths(&server::routes_of(api_operations()));
        let gateway = served_paths(&server::routes_of(gateway_operations()));
        for path in &documented {
            let served = api.iter().chain(&gateway).any(|served| openapi_path(served) == *path);
            assert!(served, "{path} is in the document but not served");
        }
    }

    #[test]
    fn document_lists_every_method() {
        let document = openapi::document(&api_operations(), &gateway_operations(), "X-API-Key");
        for operation in api_operations().iter().chain(&gateway_operations()) {
            let item = &document["paths"][openapi_path(operation.path)];
            for method in operation.methods {
                let rendered = &item[method.as_str().to_lowercase()];
                assert!(rendered.is_object(), "{method} {} is not in the document", operation.path);
                assert!(rendered["responses"].as_object().is_some_and(|responses| !responses.is_empty()));
            }
        }
    }
}
