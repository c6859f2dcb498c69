//! The OpenAPI 3.1 document of every route, written by hand. A test in
//! tests/api_native.rs checks it against [`super::ROUTES`] and the running
//! server, so it cannot drift from the route table unnoticed.

use serde_json::{Value, json};

use super::acl::{MAX_PASSWORD_BYTES, MIN_NEW_PASSWORD_CHARS};
use crate::core::acl::{MAX_DESCRIPTION_LEN, MAX_POLICY_NAME_LEN, MAX_RULES, MAX_TOKEN_POLICIES};
use crate::core::{Datacenter, InstanceId, ServiceName};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn maxine_error(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/MaxineMessage" } } }
    })
}

/// One of the shared answers in `components/responses`.
fn shared(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

/// A 200 with a JSON body of `schema`, without the index header (routes
/// that do not read the registry).
fn plain_ok(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

fn json_ok(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "headers": { "X-Maxine-Index": { "$ref": "#/components/headers/Index" } },
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

/// A DNS label of at most `max` characters (upper case is folded by the
/// server), never shaped like a version selector: the rule of
/// `core::labels`, as a JSON Schema.
fn label_schema(max: usize, example: &str) -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": max,
        "pattern": "^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$",
        "not": { "pattern": SELECTOR_PATTERN },
        "example": example
    })
}

/// A version selector: `v2`, `v2-1`, `v2-1-3`.
const SELECTOR_PATTERN: &str = "^[vV][0-9]+(-[0-9]+){0,2}$";

/// The document, with DNS name examples in `domain`.
pub fn document(domain: &str) -> Value {
    let mut doc = registry_document(domain);
    let paths = doc["paths"].as_object_mut().expect("paths");
    if let Value::Object(acl) = acl_paths() {
        paths.extend(acl);
    }
    if let Value::Object(ops) = operator_paths() {
        paths.extend(ops);
    }
    if let Value::Object(checks) = check_paths() {
        paths.extend(checks);
    }
    if let Value::Object(fed) = federation_paths() {
        paths.extend(fed);
    }
    if let Value::Object(p) = policy_paths() {
        paths.extend(p);
    }
    if let Value::Object(p) = blacklist_paths() {
        paths.extend(p);
    }
    if let Some(list) = paths
        .get_mut("/v1/services")
        .and_then(|p| p["get"]["parameters"].as_array_mut())
    {
        list.push(json!({ "name": "dc", "in": "query", "required": false,
            "description": "Only the services of this datacenter.",
            "schema": label_schema(Datacenter::MAX_LEN, "dc2") }));
    }
    let components = doc["components"].as_object_mut().expect("components");
    components.insert("securitySchemes".into(), security_schemes());
    components.insert("responses".into(), shared_responses());
    let schemas = components["schemas"].as_object_mut().expect("schemas");
    if let Value::Object(acl) = acl_schemas() {
        schemas.extend(acl);
    }
    if let Value::Object(checks) = check_schemas() {
        schemas.extend(checks);
    }
    if let Value::Object(p) = policy_schemas() {
        schemas.extend(p);
    }
    if let Value::Object(p) = blacklist_schemas() {
        schemas.extend(p);
    }
    // Any credential, or none (the anonymous token); operations that read
    // no credential say `security: []`.
    doc["security"] = json!([{ "bearer": [] }, { "token": [] }, {}]);
    // Answers that come before routing, so every operation can give them:
    // a request head hyper cannot read (400, e.g. a control character in
    // a header), and a Host the API does not answer to (421, in the format
    // of the API the path belongs to).
    for (path, item) in doc["paths"].as_object_mut().expect("paths") {
        let misdirected = if path.starts_with("/api/") {
            shared("MaxineMisdirectedHost")
        } else {
            shared("MisdirectedHost")
        };
        for op in item.as_object_mut().expect("path item").values_mut() {
            let responses = op["responses"].as_object_mut().expect("responses");
            responses
                .entry("400")
                .or_insert_with(|| shared("UnreadableRequest"));
            responses.insert("421".into(), misdirected.clone());
        }
    }
    doc
}

/// The registry's routes, the probes and this document.
fn registry_document(domain: &str) -> Value {
    let service_param = json!({
        "name": "service", "in": "path", "required": true,
        "description": format!(
            "Service name: one DNS label (lowercase letters, digits, '-') of at most {} characters \
             (one less than a label: the SRV name is _<service>._tcp), not shaped like a version selector.",
            ServiceName::MAX_LEN
        ),
        "schema": label_schema(ServiceName::MAX_LEN, "payments")
    });
    let id_param = json!({
        "name": "id", "in": "path", "required": true,
        "description": format!(
            "Instance id, unique within the service: one DNS label of at most {} characters.",
            InstanceId::MAX_LEN
        ),
        "schema": label_schema(InstanceId::MAX_LEN, "payments-1")
    });
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Maxine API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "DNS-first service discovery. Instances registered here are served by DNS under the zone `{domain}`. \
                 Errors of the native API are {{\"error\": ..., \"kind\": ...}}; those of the Maxine-compatible API are {{\"message\": ...}}."
            )
        },
        "paths": {
            "/v1/health": {
                "get": {
                    "summary": "Liveness: the process is up.",
                    "operationId": "health", "security": [],
                    "responses": { "200": { "description": "Alive", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Status" } } } } }
                }
            },
            "/v1/ready": {
                "get": {
                    "summary": "Readiness: every listener is up and the server is not shutting down. After a damaged store file was recovered, also `degraded` (still 200) until POST /v1/recovery/ack. With an etcd store: 503 `catching up` while the node loads or replays the registry (DNS answers from its last local state), and `registry: read-only` (still 200) while etcd does not answer.",
                    "operationId": "ready", "security": [],
                    "responses": {
                        "200": { "description": "Ready", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Status" } } } },
                        "503": { "description": "Starting or shutting down", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Status" } } } }
                    }
                }
            },
            "/v1/recovery/ack": {
                "post": {
                    "summary": "Acknowledge the recovery of a damaged store file: /v1/ready and /v1/services stop reporting it. Needs operator:write.",
                    "operationId": "ackRecovery",
                    "responses": {
                        "200": { "description": "What was acknowledged (null: nothing was pending)", "content": { "application/json": { "schema": {
                            "type": "object", "properties": { "acknowledged": { "type": ["object", "null"] } } } } } },
                        "401": shared("Unauthorized"),
                        "403": shared("Forbidden")
                    }
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "operationId": "openapi", "security": [],
                    "responses": { "200": { "description": "OpenAPI 3.1 document", "content": { "application/json": {} } } }
                }
            },
            "/v1/events": {
                "get": {
                    "summary": "The change feed as Server-Sent Events: with since=0 (or an index older than the server keeps) a `snapshot` event first, then one `change` event per change (its id is the change's index); a consumer that falls too far behind gets `resync` and the stream ends. Resume with Last-Event-ID. Only services the caller may read.",
                    "operationId": "events",
                    "parameters": events_params(),
                    "responses": {
                        "200": { "description": "An endless text/event-stream", "content": { "text/event-stream": { "schema": { "type": "string" } } } },
                        "400": error_response("Invalid since, service or Last-Event-ID"),
                        "401": shared("Unauthorized"),
                        "403": shared("Forbidden")
                    }
                }
            },
            "/v1/events/ws": {
                "get": {
                    "summary": "The messages of GET /v1/events over a WebSocket: one JSON text message each, with `type` (snapshot, change, resync) and `index`.",
                    "operationId": "eventsWs",
                    "parameters": events_params(),
                    "responses": {
                        "101": { "description": "Switching to the WebSocket protocol" },
                        "400": error_response("Not an upgrade request, or invalid parameters"),
                        "401": shared("Unauthorized"),
                        "403": shared("Forbidden")
                    }
                }
            },
            "/v1/kv/{key}": {
                "get": {
                    "summary": "The raw value of a key (X-Maxine-Index: the index that wrote it); with recurse, every entry under the prefix the caller may read, as JSON. Needs key:read (key_prefix rules).",
                    "operationId": "kvGet",
                    "parameters": [
                        kv_key_param(),
                        { "name": "recurse", "in": "query", "required": false, "description": "List every key starting with the path.", "schema": { "type": "string" } },
                        blocking_params()[0].clone(),
                        blocking_params()[1].clone()
                    ],
                    "responses": {
                        "200": { "description": "The value, or with recurse the entries",
                                 "headers": { "X-Maxine-Index": { "$ref": "#/components/headers/Index" } },
                                 "content": {
                                    "application/octet-stream": { "schema": { "type": "string" } },
                                    "application/json": { "schema": { "type": "array", "items": { "type": "object",
                                        "properties": { "key": { "type": "string" }, "value": { "type": "string", "contentEncoding": "base64" },
                                                        "index": { "type": "integer" }, "create_index": { "type": "integer" } } } } } } },
                        "400": error_response("Invalid key, index or wait"),
                        "401": shared("Unauthorized"),
                        "403": shared("Forbidden"),
                        "404": error_response("No such key")
                    }
                },
                "put": {
                    "summary": "Writes the raw body as the key's value (at most 512 KiB). With cas, only while the key's index is cas (0: only if absent). Needs key:write.",
                    "operationId": "kvPut",
                    "parameters": [ kv_key_param(), kv_cas_param() ],
                    "requestBody": { "required": false, "content": { "application/octet-stream": { "schema": { "type": "string", "maxLength": 524288 } } } },
                    "responses": {
                        "200": { "description": "Written", "content": { "application/json": { "schema": { "type": "object",
                            "properties": { "key": { "type": "string" }, "index": { "type": "integer" } } } } } },
                        "400": error_response("Invalid key or cas"),
                        "401": shared("Unauthorized"),
                        "403": shared("Forbidden"),
                        "404": error_response("No route: the key is empty"),
                        "409": error_response("cas does not match the key's index: nothing was changed"),
                        "413": error_response("The value is larger than 512 KiB"),
                        "503": error_response("The store is unavailable")
                    }
                },
                "delete": {
                    "summary": "Removes a key. With cas, only while the key's index is cas. Needs key:write.",
                    "operationId": "kvDelete",
                    "parameters": [ kv_key_param(), kv_cas_param() ],
                    "responses": {
                        "200": { "description": "Removed", "content": { "application/json": { "schema": { "type": "object",
                            "properties": { "key": { "type": "string" }, "index": { "type": "integer" }, "deleted": { "type": "boolean" } } } } } },
                        "400": error_response("Invalid key or cas"),
                        "401": shared("Unauthorized"),
                        "403": shared("Forbidden"),
                        "404": error_response("No such key"),
                        "409": error_response("cas does not match the key's index: nothing was changed"),
                        "503": error_response("The store is unavailable")
                    }
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Every metric in the Prometheus text format (docs/operations.md lists them).",
                    "operationId": "metrics", "security": [],
                    "responses": { "200": { "description": "Prometheus text format 0.0.4", "content": { "text/plain": { "schema": { "type": "string" } } } } }
                }
            },
            "/v1/services": {
                "get": {
                    "summary": "Every service with its instance counts per datacenter; `recovery` while a store recovery is unacknowledged.",
                    "operationId": "listServices",
                    "parameters": blocking_params(),
                    "responses": {
                        "200": json_ok("Services the caller may read", "ServiceList"),
                        "400": error_response("Invalid index or wait"),
                        "401": shared("Unauthorized")
                    }
                }
            },
            "/v1/services/{service}": {
                "get": {
                    "summary": "The instances of one service.",
                    "operationId": "getService",
                    "parameters": [
                        service_param,
                        { "name": "version", "in": "query", "required": false,
                          "description": "Version selector: v2 matches 2.x.y, v2-1 matches 2.1.x, v2-1-3 matches 2.1.3.",
                          "schema": { "type": "string", "pattern": SELECTOR_PATTERN, "maxLength": 63, "example": "v2" } },
                        { "name": "dc", "in": "query", "required": false,
                          "description": "Datacenter; default the local one.",
                          "schema": label_schema(Datacenter::MAX_LEN, "dc1") },
                        { "name": "healthy", "in": "query", "required": false,
                          "description": "Only passing instances. Default false.",
                          "schema": { "type": "boolean" } },
                        blocking_params()[0].clone(),
                        blocking_params()[1].clone()
                    ],
                    "responses": {
                        "200": json_ok("The service and its instances", "ServiceInstances"),
                        "400": error_response("Invalid name, selector, datacenter or flag"),
                        "401": shared("Unauthorized"),
                        "403": shared("Forbidden"),
                        "404": error_response("The service has no instances in that datacenter")
                    }
                }
            },
            "/v1/services/{service}/instances/{id}": {
                "put": {
                    "summary": "Register an instance, or replace it. It is passing, with a full TTL.",
                    "operationId": "register",
                    "parameters": [service_param, id_param],
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Registration" } } }
                    },
                    "responses": {
                        "200": json_ok("The stored instance", "Instance"),
                        "400": error_response("Malformed JSON, unknown field, invalid name, address, port, weight or TTL"),
                        "401": shared("Unauthorized"),
                        "403": shared("Forbidden"),
                        "409": error_response("Conflicts with what is registered"),
                        "413": error_response("Body larger than the configured limit"),
                        "415": error_response("Body not sent as application/json"),
                        "429": shared("QuotaExceeded"),
                        "503": error_response("The store could not make the change durable; it was undone")
                    }
                },
                "delete": {
                    "summary": "Deregister an instance.",
                    "operationId": "deregister",
                    "parameters": [service_param, id_param],
                    "responses": {
                        "200": json_ok("Removed; the index of the removal", "IndexOnly"),
                        "400": error_response("Invalid name"),
                        "401": shared("Unauthorized"),
                        "403": shared("Forbidden"),
                        "404": error_response("No such instance"),
                        "503": error_response("The store could not make the change durable; it was undone")
                    }
                }
            },
            "/v1/services/{service}/instances/{id}/heartbeat": {
                "put": {
                    "summary": "Heartbeat: the instance gets a full TTL from now (a critical one turns passing).",
                    "operationId": "heartbeat",
                    "parameters": [service_param, id_param],
                    "responses": {
                        "200": json_ok("The instance's status after the beat, its TTL and the index", "HeartbeatAck"),
                        "400": error_response("Invalid name"),
                        "401": shared("Unauthorized"),
                        "403": shared("Forbidden"),
                        "404": error_response("No such instance"),
                        "503": error_response("The instance was critical and its revival could not be made durable")
                    }
                }
            },
            "/api/maxine/serviceops/register": {
                "post": {
                    "summary": "Maxine-compatible registration; posting it again is the heartbeat.",
                    "operationId": "maxineRegister",
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/MaxineRegistration" } } }
                    },
                    "responses": {
                        "200": json_ok("The stored registration, in Maxine's shape", "MaxineRegistered"),
                        "400": maxine_error("Missing or invalid field"),
                        "401": shared("MaxineUnauthorized"),
                        "403": shared("MaxineForbidden"),
                        "409": maxine_error("The name maps to a DNS name another Maxine name uses"),
                        "413": maxine_error("Body larger than the configured limit"),
                        "415": maxine_error("Body not sent as application/json"),
                        "429": shared("MaxineQuotaExceeded"),
                        "503": maxine_error("The store could not make the change durable; it was undone")
                    }
                }
            },
            "/api/maxine/serviceops/discover": {
                "get": {
                    "summary": "Redirect (302) to the next passing instance of a service, round robin.",
                    "operationId": "maxineDiscover",
                    "parameters": [
                        { "name": "serviceName", "in": "query", "required": true,
                          "description": "The Maxine service name (mapped to its DNS name).",
                          "schema": { "type": "string", "example": "Payment_Service" } },
                        { "name": "endPoint", "in": "query", "required": false,
                          "description": "Appended to the instance's address ('/' added in front when missing).",
                          "schema": { "type": "string", "example": "/api/pay" } }
                    ],
                    "responses": {
                        "302": { "description": "Location is the instance's address plus endPoint",
                                 "headers": { "Location": { "schema": { "type": "string" } } } },
                        "400": maxine_error("serviceName missing"),
                        "401": shared("MaxineUnauthorized"),
                        "403": shared("MaxineForbidden"),
                        "503": maxine_error("No passing instance")
                    }
                }
            },
            "/api/maxine/serviceops/servers": {
                "get": {
                    "summary": "The passing instances of the local datacenter, in Maxine's registry shape. Needs a credential (as in Maxine, a signed-in user); lists only the services the caller may read.",
                    "operationId": "maxineServers",
                    "responses": {
                        "200": json_ok("Services by Maxine name", "MaxineServers"),
                        "401": shared("MaxineUnauthorized")
                    }
                }
            },
            "/api/maxine/control/config": {
                "get": {
                    "summary": "Maxine-compatible settings (the SDKs' getConfig): the heartbeat timeout of registrations that send none, discover's default server selection strategy, and fixed values for what Maxine does not change at run time. Needs operator:read.",
                    "operationId": "maxineGetConfig",
                    "responses": {
                        "200": plain_ok("The settings, in Maxine's shape", "MaxineConfig"),
                        "401": shared("MaxineUnauthorized"),
                        "403": shared("MaxineForbidden")
                    }
                },
                "put": {
                    "summary": "Maxine-compatible settings change (the SDKs' updateConfig): each field it knows is answered with Maxine's status text; others are left out. Changes last until the server stops and are audited. Needs operator:write.",
                    "operationId": "maxinePutConfig",
                    "requestBody": json_body("MaxineConfigUpdate"),
                    "responses": {
                        "200": plain_ok("Each known field with \"Success\", \"Type Error\" or \"Wrong value Or Invalid value\"", "MaxineConfigAnswer"),
                        "400": maxine_error("The body is not a JSON object"),
                        "401": shared("MaxineUnauthorized"),
                        "403": shared("MaxineForbidden"),
                        "503": maxine_error("The audit log could not be written; nothing was changed")
                    }
                }
            },
            "/api/actuator/health": {
                "get": {
                    "summary": "Maxine-compatible health probe.",
                    "operationId": "actuatorHealth", "security": [],
                    "responses": { "200": { "description": "Up", "content": { "application/json": {
                        "schema": { "type": "object", "properties": { "status": { "const": "UP" } } } } } } }
                }
            },
            "/v1/snapshot": {
                "get": {
                    "summary": "Backup: every instance and access-control object (token hashes, policies, users) at one index, as a snapshot file (checksummed; see docs/operations.md). Sent once all of it is durable. Needs operator:read and acl:read.",
                    "operationId": "snapshot",
                    "responses": {
                        "200": {
                            "description": "The snapshot file (`maxine snapshot restore FILE` loads it)",
                            "headers": { "X-Maxine-Index": { "$ref": "#/components/headers/Index" } },
                            "content": { "application/octet-stream": { "schema": { "type": "string", "contentEncoding": "binary" } } }
                        },
                        "401": shared("Unauthorized"),
                        "403": shared("Forbidden"),
                        "503": error_response("The latest change could not be made durable, or as many snapshots as allowed are being sent (with Retry-After); try again")
                    }
                }
            }
        },
        "components": {
            "headers": {
                "Index": {
                    "description": "The registry's change index after the request.",
                    "schema": { "type": "integer", "minimum": 0 }
                }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "kind"],
                    "properties": {
                        "error": { "type": "string", "description": "What was wrong, for people." },
                        "kind": { "type": "string", "enum": [
                            "bad_request", "not_found", "no_route", "method_not_allowed", "conflict",
                            "unauthorized", "forbidden", "misdirected_host", "quota_exceeded",
                            "payload_too_large", "uri_too_long", "headers_too_large", "request_timeout",
                            "unsupported_media_type", "unavailable", "internal"
                        ] }
                    }
                },
                "MaxineMessage": {
                    "type": "object",
                    "required": ["message"],
                    "properties": { "message": { "type": "string" } }
                },
                "Status": {
                    "type": "object",
                    "properties": { "status": { "type": "string" }, "degraded": { "type": "object" }, "registry": { "type": "string", "description": "With an etcd store: read-only while etcd does not answer (writes fail with 503)" }, "detail": { "type": "string" } }
                },
                "IndexOnly": {
                    "type": "object",
                    "properties": { "index": { "type": "integer" } }
                },
                "Registration": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["address", "port"],
                    "properties": {
                        "address": { "type": "string", "description": "IP address (v4 or v6).", "example": "10.0.0.7" },
                        "port": { "type": "integer", "minimum": 1, "maximum": 65535 },
                        "version": { "type": ["string", "null"], "example": "2.1.0" },
                        "tags": { "type": ["array", "null"], "items": { "type": "string" }, "maxItems": 32 },
                        "metadata": { "type": ["object", "null"], "additionalProperties": { "type": "string" }, "maxProperties": 64 },
                        "weight": { "type": ["integer", "null"], "minimum": 1, "maximum": 65535, "default": 1 },
                        "ttl": {
                            "description": "Heartbeat TTL, 1 s to 24 h: seconds, or a duration string. Default 30 s. null: the default.",
                            "oneOf": [ { "type": "number", "minimum": 1, "maximum": 86400 }, { "type": "string", "example": "30s" }, { "type": "null" } ]
                        },
                        "checks": {
                            "type": ["array", "null"], "maxItems": 8,
                            "description": "Health checks (docs/health.md); each needs a name.",
                            "items": { "$ref": "#/components/schemas/CheckDefinition" }
                        }
                    }
                },
                "Instance": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "string" },
                        "service": { "type": "string" },
                        "datacenter": { "type": "string" },
                        "address": { "type": "string" },
                        "port": { "type": "integer" },
                        "version": { "type": "string" },
                        "tags": { "type": "array", "items": { "type": "string" } },
                        "metadata": { "type": "object", "additionalProperties": { "type": "string" } },
                        "weight": { "type": "integer" },
                        "ttl": { "type": "number", "description": "Seconds." },
                        "health": { "type": "string", "enum": ["passing", "warning", "critical"],
                                    "description": "Its status: the worst of its checks." },
                        "index": { "type": "integer", "description": "Index of the change that produced this value." },
                        "checks": {
                            "type": "array", "description": "The implicit ttl check first, then the defined ones.",
                            "items": { "$ref": "#/components/schemas/CheckStatus" }
                        },
                        "compat": {
                            "type": "object",
                            "description": "What a Maxine SDK sent (Maxine-compatible registrations only).",
                            "properties": {
                                "serviceName": { "type": "string" },
                                "nodeName": { "type": "string" },
                                "hostName": { "type": "string" },
                                "ssl": { "type": "boolean" },
                                "path": { "type": "string" },
                                "healthCheckPath": { "type": "string", "description": "As sent; \"\" when none. An HTTP check named health-check-path on the instance's address." }
                            }
                        },
                        "resolution": {
                            "type": "object",
                            "description": "Instances registered by host name only: what Maxine resolved the name to. Out of DNS answers unless resolved.",
                            "properties": {
                                "state": { "type": "string", "enum": ["pending", "resolved", "unresolved"] },
                                "addresses": { "type": "array", "items": { "type": "string" }, "description": "When resolved." },
                                "error": { "type": "string", "description": "When unresolved: why." },
                                "since": { "type": "string", "format": "date-time", "description": "When this outcome was first seen." }
                            }
                        },
                        "dns": {
                            "type": "object",
                            "properties": {
                                "name": { "type": "string", "example": format!("payments.{domain}") },
                                "srv": { "type": "string", "example": format!("_payments._tcp.{domain}") },
                                "instance": { "type": "string", "example": format!("payments-1.payments.dc1.{domain}") }
                            }
                        }
                    }
                },
                "ServiceInstances": {
                    "type": "object",
                    "properties": {
                        "service": { "type": "string" },
                        "datacenter": { "type": "string" },
                        "index": { "type": "integer" },
                        "dns": { "type": "object", "properties": { "name": { "type": "string" }, "srv": { "type": "string" } } },
                        "instances": { "type": "array", "items": { "$ref": "#/components/schemas/Instance" } }
                    }
                },
                "ServiceList": {
                    "type": "object",
                    "properties": {
                        "index": { "type": "integer" },
                        "services": { "type": "array", "items": {
                            "type": "object",
                            "properties": {
                                "name": { "type": "string" },
                                "datacenters": { "type": "object", "additionalProperties": {
                                    "type": "object",
                                    "properties": { "total": { "type": "integer" }, "passing": { "type": "integer" } }
                                } }
                            }
                        } }
                    }
                },
                "MaxineRegistration": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["hostName", "nodeName", "serviceName"],
                    "properties": {
                        "hostName": { "type": "string", "minLength": 1, "maxLength": 255, "description": "IP or host name, optionally with http:// or https://.", "example": "10.0.0.7" },
                        "nodeName": { "type": "string", "minLength": 1, "maxLength": 255, "description": format!("Free name, mapped to the instance id (cut to {} characters).", InstanceId::MAX_LEN), "example": "node-x-1" },
                        "serviceName": { "type": "string", "minLength": 1, "maxLength": 255, "description": format!("Free name, mapped to the DNS service name (cut to {} characters).", ServiceName::MAX_LEN), "example": "Payment_Service" },
                        "port": { "type": ["integer", "string", "null"], "description": "1 to 65535, a number or a string of digits; default 80 (443 with ssl)." },
                        "ssl": { "type": ["boolean", "null"], "default": false },
                        "timeOut": { "type": ["integer", "string", "null"], "description": "Seconds; the instance expires timeOut + 0.5 s after the last post.", "default": 5 },
                        "weight": { "type": ["integer", "string", "null"], "minimum": 1, "maximum": 10, "default": 1 },
                        "path": { "type": ["string", "null"], "example": "/api" },
                        "healthCheckPath": { "type": ["string", "null"], "maxLength": 1024, "example": "/health",
                                             "description": "Where the node answers a health check; kept as sent and shown in the listings. Nothing probes it yet." },
                        "version": { "type": ["string", "null"], "example": "2.1.0" },
                        "namespace": { "type": ["string", "null"], "description": "Kept as the metadata entry namespace." },
                        "metadata": { "type": ["object", "null"], "description": "Stored as instance metadata." }
                    }
                },
                "MaxineRegistered": {
                    "type": "object",
                    "properties": {
                        "hostName": { "type": "string" },
                        "nodeName": { "type": "string" },
                        "serviceName": { "type": "string" },
                        "timeOut": { "type": "integer" },
                        "weight": { "type": "integer" },
                        "address": { "type": "string", "example": "http://10.0.0.7:8080/api" },
                        "healthCheckPath": { "type": "string", "description": "As sent; \"\" when none." },
                        "registeredAt": { "type": "string", "format": "date-time" },
                        "dnsName": { "type": "string", "example": format!("payment-service.{domain}") }
                    }
                },
                "MaxineConfig": {
                    "type": "object",
                    "properties": {
                        "logAsync": { "type": "boolean" },
                        "heartBeatTimeout": { "type": "integer", "minimum": 1, "description": "Seconds: the timeOut of a registration that sends none." },
                        "logJsonPrettify": { "type": "boolean" },
                        "actuatorEnabled": { "type": "boolean" },
                        "statusMonitorEnabled": { "type": "boolean" },
                        "serverSelectionStrategy": { "type": "object", "properties": {
                            "name": { "type": "string", "example": "RR" },
                            "code": { "type": ["string", "null"] },
                            "message": { "type": "string" }
                        } },
                        "logFormat": { "type": "object", "properties": {
                            "name": { "enum": ["JSON", "PLAIN"] },
                            "code": { "type": "string" },
                            "message": { "type": "string" }
                        } },
                        "port": { "type": "integer" }
                    }
                },
                "MaxineConfigUpdate": {
                    "type": "object",
                    "properties": {
                        "heartBeatTimeout": { "type": "integer", "minimum": 1 },
                        "serverSelectionStrategy": { "enum": ["RR", "CH", "RH", "RANDOM", "WRR", "STICKY"] },
                        "logFormat": { "enum": ["JSON", "PLAIN"], "description": "Only the format in use is accepted." },
                        "logAsync": { "type": "boolean", "description": "Accepted and ignored." },
                        "logJsonPrettify": { "type": "boolean", "description": "Accepted and ignored." }
                    }
                },
                "MaxineConfigAnswer": {
                    "type": "object",
                    "additionalProperties": { "enum": ["Success", "Type Error", "Wrong value Or Invalid value"] }
                },
                "MaxineServers": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {
                            "offset": { "type": "integer" },
                            "dnsName": { "type": "string" },
                            "nodes": { "type": "object", "additionalProperties": {
                                "type": "object",
                                "properties": {
                                    "nodeName": { "type": "string" },
                                    "parentNode": { "type": "string" },
                                    "address": { "type": "string" },
                                    "timeOut": { "type": "integer" },
                                    "healthCheckPath": { "type": "string" }
                                }
                            } }
                        }
                    }
                }
            }
        }
    });
    add_balance(&mut doc, &service_param);
    doc["components"]["schemas"]["HeartbeatAck"] = json!({
        "type": "object",
        "properties": {
            "id": { "type": "string" },
            "health": { "type": "string", "enum": ["passing", "warning", "critical"],
                        "description": "The instance's status after the beat." },
            "ttl": { "type": "number", "description": "The instance's TTL in seconds: the next beat is due within it." },
            "index": { "type": "integer", "description": "The registry's index (the revival's, when the beat revived a critical instance)." }
        }
    });
    doc
}

/// The Node.js Maxine's actuator and log routes (the health probe is in
/// [`registry_document`]).
fn operator_paths() -> Value {
    let text_ok = |description: &str| json!({ "description": description, "content": { "text/plain": { "schema": { "type": "string" } } } });
    json!({
        "/api/actuator/info": {
            "get": {
                "summary": "Maxine-compatible build information.",
                "operationId": "actuatorInfo", "security": [],
                "responses": { "200": { "description": "The build", "content": { "application/json": { "schema": {
                    "type": "object",
                    "properties": { "build": { "type": "object", "properties": {
                        "name": { "type": "string", "example": "maxine" },
                        "description": { "type": "string" },
                        "version": { "type": "string", "example": env!("CARGO_PKG_VERSION") }
                    } } }
                } } } } }
            }
        },
        "/api/actuator/metrics": {
            "get": {
                "summary": "Maxine-compatible process metrics: resident memory and uptime.",
                "operationId": "actuatorMetrics", "security": [],
                "responses": { "200": { "description": "Memory and uptime", "content": { "application/json": { "schema": {
                    "type": "object",
                    "properties": {
                        "mem": { "type": "object", "properties": { "rss": { "type": "integer", "description": "Resident bytes (left out where the system does not tell)." } } },
                        "uptime": { "type": "number", "description": "Seconds since the API started." }
                    }
                } } } } }
            }
        },
        "/api/actuator/performance": {
            "get": {
                "summary": "Maxine-compatible performance report: there is none to show, so this is always 404, as the Node.js Maxine answers without a report URL.",
                "operationId": "actuatorPerformance", "security": [],
                "responses": { "404": maxine_error("No performance report (`Performance report URL is not configured.`)") }
            }
        },
        "/api/logs/download": {
            "get": {
                "summary": "The downloadable log files by name, each with the path it is downloaded from. Needs operator:read.",
                "operationId": "logFiles",
                "responses": {
                    "200": { "description": "File name -> path", "content": { "application/json": { "schema": {
                        "type": "object", "additionalProperties": { "type": "string" },
                        "example": { super::logs::RECENT_FILE: super::logs::RECENT_FILE_PATH }
                    } } } },
                    "401": shared("MaxineUnauthorized"),
                    "403": shared("MaxineForbidden")
                }
            }
        },
        super::logs::RECENT_FILE_PATH: {
            "get": {
                "summary": "The recent log lines as a text file, oldest first. Needs operator:read.",
                "operationId": "logDownload",
                "responses": {
                    "200": text_ok("The lines, one event per line"),
                    "401": shared("MaxineUnauthorized"),
                    "403": shared("MaxineForbidden")
                }
            }
        },
        "/api/logs/recent": {
            "get": {
                "summary": format!(
                    "The last {} log lines of the server (those its log level lets through). Needs operator:read.",
                    crate::telemetry::recent::DEFAULT_LINES
                ),
                "operationId": "recentLogs",
                "responses": {
                    "200": { "description": "The lines joined by \\n, oldest first", "content": { "application/json": { "schema": {
                        "type": "object", "properties": { "logs": { "type": "string" } }
                    } } } },
                    "401": shared("MaxineUnauthorized"),
                    "403": shared("MaxineForbidden")
                }
            }
        },
        "/api/logs/recent/clear": {
            "get": {
                "summary": "Forget the recent log lines (a GET, as in the Node.js Maxine); the line saying who cleared them is the first of the new ones. Needs operator:write.",
                "operationId": "clearRecentLogs",
                "responses": {
                    "200": { "description": "Cleared; no body" },
                    "401": shared("MaxineUnauthorized"),
                    "403": shared("MaxineForbidden")
                }
            }
        }
    })
}

/// Federation: the change stream peers read, datacenters, failover orders
/// (docs/federation.md).
fn federation_paths() -> Value {
    json!({
        "/v1/federation/stream": {
            "get": {
                "summary": "This datacenter's changes for a peer: a snapshot when since is 0 or older than what is kept, then deltas in index order and keep-alives, as length-prefixed frames (docs/federation.md). Needs a token with operator:read; anything else gets 403.",
                "operationId": "federationStream",
                "parameters": [
                    { "name": "since", "in": "query", "required": false,
                      "description": "The sender's change index the receiver has applied; 0: from a snapshot.",
                      "schema": { "type": "integer", "minimum": 0, "maximum": 9007199254740991_u64 } },
                    { "name": "dc", "in": "query", "required": false,
                      "description": "The receiver's datacenter (its own data is never sent back).",
                      "schema": label_schema(Datacenter::MAX_LEN, "dc1") }
                ],
                "responses": {
                    "200": {
                        "description": "An endless stream of frames",
                        "content": { "application/vnd.maxine.federation": { "schema": { "type": "string", "contentEncoding": "binary" } } }
                    },
                    "400": error_response("Invalid since or dc"),
                    "401": shared("Unauthorized"),
                    "403": error_response("No valid token with operator permission")
                }
            }
        },
        "/v1/datacenters": {
            "get": {
                "summary": "This datacenter and every one known from federation: reachable, stale, round-trip time, replication lag (indexes and seconds), last contact, services and instances; the failover order. Needs operator:read.",
                "operationId": "datacenters",
                "responses": {
                    "200": {
                        "description": "Datacenters",
                        "headers": { "X-Maxine-Index": { "$ref": "#/components/headers/Index" } },
                        "content": { "application/json": { "schema": { "type": "object", "properties": {
                            "datacenters": { "type": "array", "items": { "type": "object", "properties": {
                                "name": { "type": "string" },
                                "local": { "type": "boolean" },
                                "reachable": { "type": "boolean" },
                                "stale": { "type": "boolean" },
                                "rtt_ms": { "type": ["number", "null"] },
                                "lag_indexes": { "type": "integer" },
                                "lag_seconds": { "type": "number" },
                                "last_contact_ms": { "type": ["integer", "null"] },
                                "services": { "type": "integer" },
                                "instances": { "type": "integer" }
                            } } },
                            "failover": { "type": "object" }
                        } } } }
                    },
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden")
                }
            }
        },
        "/v1/services/{service}/failover": {
            "put": {
                "summary": "The service's own failover order (null: back to the configured one). Kept in <data_dir>/federation/failover.json. Needs operator:write.",
                "operationId": "putFailover",
                "parameters": [
                    { "name": "service", "in": "path", "required": true,
                      "description": "Service name: one DNS label.",
                      "schema": label_schema(62, "payments") }
                ],
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "additionalProperties": false,
                    "properties": { "datacenters": {
                        "type": ["array", "null"], "maxItems": 64,
                        "items": label_schema(Datacenter::MAX_LEN, "dc2")
                    } }
                } } } },
                "responses": {
                    "200": {
                        "description": "The order now in force",
                        "headers": { "X-Maxine-Index": { "$ref": "#/components/headers/Index" } },
                        "content": { "application/json": { "schema": { "type": "object" } } }
                    },
                    "400": error_response("Malformed JSON, unknown field, invalid service or datacenter, or the local datacenter listed"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "413": error_response("Body larger than the configured limit"),
                    "415": error_response("Body not sent as application/json"),
                    "503": error_response("The order could not be saved")
                }
            }
        }
    })
}

/// The parameters of a blocking read (`?index=N&wait=30s`).
/// The key of the key/value routes.
fn kv_key_param() -> Value {
    json!({ "name": "key", "in": "path", "required": true,
                    "description": "A path: segments of ASCII letters, digits, '-', '_', '.' separated by '/', at most 512 bytes. With recurse: a prefix (may be empty or end with '/').",
                    "schema": { "type": "string", "maxLength": 512, "example": "app/payments/timeout" } })
}

/// `?cas=` of the key/value writes.
fn kv_cas_param() -> Value {
    json!({ "name": "cas", "in": "query", "required": false,
            "description": "Compare-and-set: the key's current index (0: the key must not exist).",
            "schema": { "type": "integer", "minimum": 0 } })
}

/// The query of the event streams.
fn events_params() -> Value {
    json!([
        { "name": "since", "in": "query", "required": false,
          "description": "The index of the last change the consumer has; 0 (default): a snapshot first.",
          "schema": { "type": "integer", "minimum": 0 } },
        { "name": "service", "in": "query", "required": false,
          "description": "Only this service's changes.",
          "schema": { "type": "string", "maxLength": 63 } }
    ])
}

fn blocking_params() -> Vec<Value> {
    vec![
        json!({ "name": "index", "in": "query", "required": false,
                "description": "Blocking read: answer once the index (X-Maxine-Index) passes this value, or when wait runs out.",
                "schema": { "type": "integer", "minimum": 0 } }),
        json!({ "name": "wait", "in": "query", "required": false,
                "description": "Longest wait of a blocking read, e.g. 30s; default 5m, at most 10m.",
                "schema": { "type": "string", "example": "30s" } }),
    ]
}

/// `Authorization: Bearer` and `X-Maxine-Token`.
fn security_schemes() -> Value {
    json!({
        "bearer": {
            "type": "http", "scheme": "bearer",
            "description": "A token secret, a sign-in token from POST /api/maxine/signin, or a JWT of the configured identity provider."
        },
        "token": {
            "type": "apiKey", "in": "header", "name": "X-Maxine-Token",
            "description": "A token secret (used when Authorization is absent)."
        }
    })
}

/// The access-control answers every guarded route shares, in both formats.
fn shared_responses() -> Value {
    let challenge = json!({
        "WWW-Authenticate": { "description": "Bearer realm=\"maxine\"", "schema": { "type": "string" } }
    });
    let mut unauthorized = error_response(
        "No valid credential: malformed, unknown, expired or deleted (none at all is the anonymous token)",
    );
    unauthorized["headers"] = challenge.clone();
    let mut maxine_unauthorized =
        maxine_error("No valid credential (`{\"message\": \"Unauthorized\"}`, as Maxine answers)");
    maxine_unauthorized["headers"] = challenge;
    json!({
        "UnreadableRequest": {
            "description": "The request head could not be read as HTTP (e.g. a control character in a header); the body carries both error formats",
            "content": { "application/json": { "schema": { "allOf": [
                { "$ref": "#/components/schemas/Error" },
                { "$ref": "#/components/schemas/MaxineMessage" }
            ] } } }
        },
        "Unauthorized": unauthorized,
        "Forbidden": error_response("The credential lacks a permission; the text names it, e.g. token \"…\" lacks service:write on \"payments\""),
        "MisdirectedHost": error_response("The Host header is not one of the API's names (http.allowed_hosts; DNS rebinding)"),
        "QuotaExceeded": error_response("The token already holds its max_instances; the text names the limit"),
        "MaxineUnauthorized": maxine_unauthorized,
        "MaxineForbidden": maxine_error("The credential lacks a permission; the text names it"),
        "MaxineMisdirectedHost": maxine_error("The Host header is not one of the API's names (http.allowed_hosts)"),
        "MaxineQuotaExceeded": maxine_error("The token already holds its max_instances; the text names the limit")
    })
}

/// A JSON request body of `schema`.
fn json_body(schema: &str) -> Value {
    json!({
        "required": true,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

/// The access-control routes: bootstrap, policies, tokens, the audit log,
/// and the Maxine-compatible sign-in.
fn acl_paths() -> Value {
    let name_param = json!({
        "name": "name", "in": "path", "required": true,
        "description": format!("Policy name: 1 to {MAX_POLICY_NAME_LEN} letters, digits, '-', '_' or '.'."),
        "schema": { "type": "string", "pattern": format!("^[A-Za-z0-9._-]{{1,{MAX_POLICY_NAME_LEN}}}$"), "example": "payments-deploy" }
    });
    let accessor_param = json!({
        "name": "accessor", "in": "path", "required": true,
        "description": "The token's public id (never its secret); `anonymous` is the token of requests without a credential.",
        "schema": { "type": "string", "minLength": 1, "maxLength": MAX_POLICY_NAME_LEN, "example": "6f1c1f0e-4a63-4f0b-9a51-2a7c8d0e9b12" }
    });
    let unavailable =
        || error_response("The store could not make the change durable; it was undone");
    json!({
        "/v1/acl/bootstrap": { "post": {
            "summary": "Create the first management token (policy global-management), once. Needs no permission; the answer holds the secret, shown this once.",
            "operationId": "aclBootstrap",
            "responses": {
                "200": json_ok("The management token, with its secret", "TokenCreated"),
                "401": shared("Unauthorized"),
                "403": error_response("Bootstrap was already done; the text names its token's accessor"),
                "503": unavailable()
            }
        } },
        "/v1/acl/policies": { "get": {
            "summary": "Every policy, the built-in ones included. Needs acl:read.",
            "operationId": "listPolicies",
            "responses": {
                "200": json_ok("The policies", "PolicyList"),
                "401": shared("Unauthorized"),
                "403": shared("Forbidden")
            }
        } },
        "/v1/acl/policies/{name}": {
            "get": {
                "summary": "One policy. Needs acl:read.",
                "operationId": "getPolicy",
                "parameters": [name_param],
                "responses": {
                    "200": json_ok("The policy", "Policy"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "404": error_response("No such policy")
                }
            },
            "put": {
                "summary": "Create or replace a policy. Needs acl:write.",
                "operationId": "putPolicy",
                "parameters": [name_param],
                "requestBody": json_body("PolicyBody"),
                "responses": {
                    "200": json_ok("The stored policy", "Policy"),
                    "400": error_response("Malformed JSON, unknown field, invalid name, rule or description"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "409": error_response("A built-in policy cannot be changed"),
                    "413": error_response("Body larger than the configured limit"),
                    "415": error_response("Body not sent as application/json"),
                    "503": unavailable()
                }
            },
            "delete": {
                "summary": "Delete a policy; tokens that name it lose what it granted. Needs acl:write.",
                "operationId": "deletePolicy",
                "parameters": [name_param],
                "responses": {
                    "200": json_ok("Removed; the index of the removal", "IndexOnly"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "404": error_response("No such policy"),
                    "409": error_response("A built-in policy cannot be deleted"),
                    "503": unavailable()
                }
            }
        },
        "/v1/acl/tokens": {
            "post": {
                "summary": "Create a token. Needs acl:write. The answer holds the secret, shown this once: only its SHA-256 is kept.",
                "operationId": "createToken",
                "requestBody": json_body("TokenBody"),
                "responses": {
                    "200": json_ok("The token, with its secret", "TokenCreated"),
                    "400": error_response("Malformed JSON, unknown field, invalid service name, duration or description, or a policy the token names does not exist"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "413": error_response("Body larger than the configured limit"),
                    "415": error_response("Body not sent as application/json"),
                    "503": unavailable()
                }
            },
            "get": {
                "summary": "Every token, the anonymous one included, without secrets. Needs acl:read.",
                "operationId": "listTokens",
                "responses": {
                    "200": json_ok("The tokens", "TokenList"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden")
                }
            }
        },
        "/v1/acl/tokens/{accessor}": {
            "get": {
                "summary": "One token, without its secret. Needs acl:read.",
                "operationId": "getToken",
                "parameters": [accessor_param],
                "responses": {
                    "200": json_ok("The token", "Token"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "404": error_response("No such token")
                }
            },
            "put": {
                "summary": "Replace what a token carries (the body replaces every field; the secret stays). Needs acl:write. `anonymous` sets what requests without a credential may do.",
                "operationId": "updateToken",
                "parameters": [accessor_param],
                "requestBody": json_body("TokenBody"),
                "responses": {
                    "200": json_ok("The stored token", "Token"),
                    "400": error_response("Malformed JSON, unknown field, invalid service name, duration or description, or a policy the token names does not exist"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "404": error_response("No such token"),
                    "413": error_response("Body larger than the configured limit"),
                    "415": error_response("Body not sent as application/json"),
                    "503": unavailable()
                }
            },
            "delete": {
                "summary": "Delete a token: its secret stops working at once. Needs acl:write.",
                "operationId": "deleteToken",
                "parameters": [accessor_param],
                "responses": {
                    "200": json_ok("Removed; the index of the removal", "IndexOnly"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "404": error_response("No such token"),
                    "409": error_response("The anonymous token cannot be deleted (change its policies instead)"),
                    "503": unavailable()
                }
            }
        },
        "/v1/acl/token/self": { "get": {
            "summary": "What the caller's own credential is and grants. Needs no permission.",
            "operationId": "tokenSelf",
            "responses": {
                "200": plain_ok("The caller's token (without secret), JWT subject or sign-in user", "TokenSelf"),
                "401": shared("Unauthorized")
            }
        } },
        "/v1/audit": { "get": {
            "summary": "Audit records after `since`, oldest first. Needs audit:read.",
            "operationId": "audit",
            "parameters": [
                { "name": "since", "in": "query", "required": false,
                  "description": "Records with a greater seq (default 0: from the first). Pass the previous answer's next.",
                  "schema": { "type": "integer", "minimum": 0 } },
                { "name": "limit", "in": "query", "required": false,
                  "description": "At most this many records (default 100; 1 to 1000, others are clamped).",
                  "schema": { "type": "integer", "minimum": 0 } }
            ],
            "responses": {
                "200": plain_ok("A page of records", "AuditPage"),
                "400": error_response("Invalid or unknown query parameter"),
                "401": shared("Unauthorized"),
                "403": shared("Forbidden"),
                "404": error_response("This server keeps no audit log (memory store)")
            }
        } },
        "/api/maxine/signin": { "post": {
            "summary": "Maxine-compatible sign-in: a user of acl.users_file or MAXINE_ADMIN_USERNAME gets a 30-minute token for Authorization: Bearer.",
            "operationId": "maxineSignin",
            "security": [],
            "requestBody": json_body("MaxineSignin"),
            "responses": {
                "200": plain_ok("The sign-in token and the user's role", "MaxineSignedIn"),
                "400": maxine_error("userName or password missing (also for a body that is not JSON)"),
                "401": shared("MaxineUnauthorized")
            }
        } },
        "/api/maxine/change-password": { "put": {
            "summary": "A signed-in user changes their password; their earlier sign-in tokens stop working.",
            "operationId": "maxineChangePassword",
            "requestBody": json_body("MaxineChangePassword"),
            "responses": {
                "200": json_ok("Changed (`{\"message\": \"successfully updated password\"}`)", "MaxineMessage"),
                "400": maxine_error("A password missing, the current one wrong, or the new one shorter than 8 characters"),
                "401": shared("MaxineUnauthorized"),
                "409": maxine_error("The user is set by MAXINE_ADMIN_USERNAME and MAXINE_ADMIN_PASSWORD"),
                "503": maxine_error("The store could not make the change durable; it was undone")
            }
        } },
    })
}

/// The schemas of the access-control routes.
fn acl_schemas() -> Value {
    let access = json!({ "$ref": "#/components/schemas/Access" });
    let token_props = json!({
        "accessor": { "type": "string", "description": "Public id: `anonymous`, or a UUID." },
        "description": { "type": "string" },
        "policies": { "type": "array", "items": { "type": "string" } },
        "service": { "type": ["string", "null"], "description": "Service identity: write on this service, read on every service." },
        "expires_at": { "type": ["string", "null"], "format": "date-time" },
        "max_instances": { "type": ["integer", "null"], "minimum": 0 },
        "created_at": { "type": ["string", "null"], "format": "date-time" },
        "index": { "type": "integer", "description": "Index of the change that produced this value." }
    });
    let token_fields = [
        "accessor",
        "description",
        "policies",
        "service",
        "expires_at",
        "max_instances",
        "created_at",
        "index",
    ];
    let mut created_props = token_props.clone();
    created_props["secret"] = json!({
        "type": "string",
        "description": "The secret to send as Authorization: Bearer. Shown this once; only its SHA-256 is kept."
    });
    let mut created_required = token_fields.to_vec();
    created_required.push("secret");
    let mut self_props = token_props.clone();
    self_props["jwt_subject"] =
        json!({ "type": "string", "description": "For a JWT of the identity provider: its sub." });
    self_props["user"] =
        json!({ "type": "string", "description": "For a sign-in token: the user." });
    self_props["granted_policies"] = json!({ "type": "array", "items": { "type": "string" },
        "description": "The policies that exist and apply (a JWT's bindings and a user's role included)." });
    self_props["service_identity"] = json!({ "type": ["string", "null"] });
    json!({
        "Access": {
            "type": "string", "enum": ["deny", "read", "write"],
            "description": "write implies read; deny refuses both."
        },
        "Rules": {
            "type": "object",
            "additionalProperties": false,
            "description": "For a service the most specific matching rule decides: an exact name beats every prefix, a longer prefix a shorter one; at equal specificity deny wins. No matching rule: the default policy.",
            "properties": {
                "service": {
                    "type": "object", "description": "Exact service names.",
                    "maxProperties": MAX_RULES,
                    "propertyNames": { "pattern": "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", "maxLength": ServiceName::MAX_LEN },
                    "additionalProperties": access.clone(),
                    "example": { "payments": "write" }
                },
                "service_prefix": {
                    "type": "object", "description": "Service name prefixes; \"\" matches every service.",
                    "maxProperties": MAX_RULES,
                    "propertyNames": { "pattern": "^[a-z0-9-]*$", "maxLength": ServiceName::MAX_LEN },
                    "additionalProperties": access.clone(),
                    "example": { "": "read" }
                },
                "key_prefix": {
                    "type": "object", "description": "Key/value key prefixes (GET/PUT/DELETE /v1/kv/...); \"\" matches every key; the longest matching prefix decides.",
                    "maxProperties": MAX_RULES,
                    "propertyNames": { "maxLength": 512 },
                    "additionalProperties": access.clone(),
                    "example": { "app/payments/": "write" }
                },
                "acl": { "allOf": [access.clone()], "description": "Tokens and policies." },
                "operator": { "allOf": [access.clone()], "description": "Snapshots, recovery acknowledgement." },
                "audit": { "allOf": [access], "description": "Reading the audit log." }
            }
        },
        "PolicyBody": {
            "type": "object",
            "additionalProperties": false,
            "required": ["rules"],
            "properties": {
                "description": { "type": "string", "maxLength": MAX_DESCRIPTION_LEN },
                "rules": { "$ref": "#/components/schemas/Rules" }
            }
        },
        "Policy": {
            "type": "object",
            "required": ["name", "description", "rules", "builtin", "index"],
            "properties": {
                "name": { "type": "string" },
                "description": { "type": "string" },
                "rules": { "$ref": "#/components/schemas/Rules" },
                "builtin": { "type": "boolean", "description": "global-management, operator and viewer: cannot be changed or deleted." },
                "index": { "type": "integer" }
            }
        },
        "PolicyList": {
            "type": "object",
            "properties": { "policies": { "type": "array", "items": { "$ref": "#/components/schemas/Policy" } } }
        },
        "TokenBody": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "description": { "type": "string", "maxLength": MAX_DESCRIPTION_LEN },
                "policies": { "type": "array", "maxItems": MAX_TOKEN_POLICIES, "items": { "type": "string" }, "example": ["viewer"] },
                "service": { "type": ["string", "null"], "description": "A service identity: write on this service, read on every service.", "example": "payments" },
                "expires_in": { "type": ["string", "null"], "description": "Lifetime: a duration such as 24h (or seconds, as text); none: the token does not expire.", "example": "24h" },
                "max_instances": { "type": ["integer", "null"], "minimum": 0, "maximum": u32::MAX,
                    "description": "Most instances registrations with this token may hold at once (429 beyond)." }
            }
        },
        "Token": {
            "type": "object",
            "required": token_fields,
            "properties": token_props
        },
        "TokenCreated": {
            "type": "object",
            "required": created_required,
            "properties": created_props
        },
        "TokenList": {
            "type": "object",
            "properties": { "tokens": { "type": "array", "items": { "$ref": "#/components/schemas/Token" } } }
        },
        "TokenSelf": {
            "type": "object",
            "required": ["granted_policies", "service_identity"],
            "properties": self_props
        },
        "AuditRecord": {
            "type": "object",
            "required": ["seq", "time", "time_ms", "index", "actor", "client", "action", "resource", "outcome", "detail", "prev"],
            "properties": {
                "seq": { "type": "integer", "minimum": 1 },
                "time": { "type": "string", "format": "date-time" },
                "time_ms": { "type": "integer" },
                "index": { "type": ["integer", "null"], "description": "The change index of a mutation; null for a denial." },
                "actor": { "type": "string", "example": "token:6f1c1f0e-4a63-4f0b-9a51-2a7c8d0e9b12" },
                "client": { "type": ["string", "null"] },
                "action": { "type": "string", "example": "registered" },
                "resource": { "type": "string", "example": "service:payments/instance:payments-1@dc1" },
                "outcome": { "type": "string", "example": "ok" },
                "detail": { "type": ["string", "null"] },
                "coalesced": { "type": "integer", "description": "Only on a record standing for denials not recorded one by one: how many." },
                "prev": { "type": "string", "pattern": "^[0-9a-f]{64}$", "description": "SHA-256 of the previous line." }
            }
        },
        "AuditPage": {
            "type": "object",
            "required": ["records", "next"],
            "properties": {
                "records": { "type": "array", "items": { "$ref": "#/components/schemas/AuditRecord" } },
                "next": { "type": "integer", "description": "The since of the next page." }
            }
        },
        "MaxineSignin": {
            "type": "object",
            "required": ["userName", "password"],
            "properties": {
                "userName": { "type": "string", "minLength": 1, "maxLength": MAX_PASSWORD_BYTES },
                "password": { "type": "string", "minLength": 1, "maxLength": MAX_PASSWORD_BYTES }
            }
        },
        "MaxineSignedIn": {
            "type": "object",
            "required": ["accessToken", "role"],
            "properties": {
                "accessToken": { "type": "string", "description": "Send as Authorization: Bearer; valid 30 minutes." },
                "role": { "type": "string", "enum": ["viewer", "operator", "admin"] }
            }
        },
        "MaxineChangePassword": {
            "type": "object",
            "required": ["password", "newPassword"],
            "properties": {
                "password": { "type": "string", "minLength": 1, "maxLength": MAX_PASSWORD_BYTES },
                "newPassword": { "type": "string", "minLength": MIN_NEW_PASSWORD_CHARS, "maxLength": MAX_PASSWORD_BYTES }
            }
        },
    })
}

/// The routes of health check definitions (docs/health.md).
fn check_paths() -> Value {
    let name = |n: &str, d: &str| {
        json!({ "name": n, "in": "path", "required": true, "description": d,
                "schema": { "type": "string", "maxLength": 63 } })
    };
    let params = json!([
        name("service", "Service name (a DNS label)."),
        name("id", "Instance id (a DNS label)."),
        name("name", "Check name (a DNS label; not ttl).")
    ]);
    json!({
        "/v1/services/{service}/instances/{id}/checks/{name}": {
            "put": {
                "summary": "Define a health check of an instance, or replace the one of that name.",
                "operationId": "putCheck",
                "parameters": params,
                "requestBody": {
                    "required": true,
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/CheckDefinition" } } }
                },
                "responses": {
                    "200": json_ok("The instance with its checks", "Instance"),
                    "400": error_response("Malformed JSON, unknown field, invalid name, target, duration or threshold; a script check without --enable-script-checks"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "404": error_response("No such instance"),
                    "409": error_response("The name is the instance's healthCheckPath check"),
                    "413": error_response("Body larger than the configured limit"),
                    "415": error_response("Body not sent as application/json"),
                    "503": error_response("The store could not make the change durable; it was undone")
                }
            },
            "delete": {
                "summary": "Remove a health check of an instance.",
                "operationId": "deleteCheck",
                "parameters": params,
                "responses": {
                    "200": json_ok("The instance with its remaining checks", "Instance"),
                    "400": error_response("Invalid name"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "404": error_response("No such instance or check"),
                    "409": error_response("The check is the instance's healthCheckPath check"),
                    "503": error_response("The store could not make the change durable; it was undone")
                }
            }
        }
    })
}

/// The schemas of health checks.
fn check_schemas() -> Value {
    let duration = |d: &str| {
        json!({ "description": d,
                "oneOf": [ { "type": "number", "minimum": 0 }, { "type": "string", "example": "10s" }, { "type": "null" } ] })
    };
    json!({
        "CheckDefinition": {
            "type": "object",
            "additionalProperties": false,
            "description": "Exactly one of http, tcp, grpc or args gives the kind.",
            "properties": {
                "name": { "type": ["string", "null"], "maxLength": 63, "example": "http",
                          "description": "DNS label, unique within the instance; in a PUT, the path's (may be left out)." },
                "http": { "type": ["string", "null"], "maxLength": 2048, "example": "http://127.0.0.1:8080/health",
                          "description": "HTTP(S) URL: 2xx passing, 429 warning, anything else critical." },
                "method": { "type": ["string", "null"], "maxLength": 16, "default": "GET" },
                "headers": { "type": ["object", "null"], "maxProperties": 16, "additionalProperties": { "type": "string", "maxLength": 1024 } },
                "tcp": { "type": ["string", "null"], "example": "127.0.0.1:5432", "description": "ip:port: passing once connected." },
                "grpc": { "type": ["string", "null"], "example": "127.0.0.1:50051", "description": "ip:port of a grpc.health.v1.Health server (plain HTTP/2)." },
                "grpc_service": { "type": ["string", "null"], "maxLength": 256 },
                "args": { "type": ["array", "null"], "maxItems": 32, "items": { "type": "string", "maxLength": 1024 },
                          "description": "Script check: argv, no shell; exit 0 passing, 1 warning, else critical. Needs --enable-script-checks." },
                "ttl": { "description": "Refused: the ttl check is implicit (the registration's ttl)." },
                "interval": duration("1 s to 24 h. Default 10 s."),
                "timeout": duration("100 ms to the interval. Default 5 s (or the interval if shorter)."),
                "success_before_passing": { "type": ["integer", "null"], "minimum": 1, "maximum": 100, "default": 1 },
                "failures_before_critical": { "type": ["integer", "null"], "minimum": 1, "maximum": 100, "default": 1 },
                "deregister_critical_after": duration("Critical this long (1 s to 7 days): the instance is deregistered. Default: never.")
            }
        },
        "CheckStatus": {
            "type": "object",
            "properties": {
                "name": { "type": "string" },
                "kind": { "type": "string", "enum": ["ttl", "http", "tcp", "grpc", "script"] },
                "status": { "type": "string", "enum": ["passing", "warning", "critical"] },
                "ttl": { "type": "number", "description": "The ttl check: the instance's TTL, in seconds." },
                "http": { "type": "string" },
                "method": { "type": "string" },
                "headers": { "type": "array", "items": { "type": "string" }, "description": "Header names (values are not shown)." },
                "tcp": { "type": "string" },
                "grpc": { "type": "string" },
                "grpc_service": { "type": "string" },
                "args": { "type": "array", "items": { "type": "string" } },
                "interval": { "type": "number" },
                "timeout": { "type": "number" },
                "success_before_passing": { "type": "integer" },
                "failures_before_critical": { "type": "integer" },
                "deregister_critical_after": { "type": "number" },
                "output": { "type": "string", "maxLength": 4096, "description": "What the latest run said." },
                "checked_at": { "type": "string", "format": "date-time" }
            }
        }
    })
}

/// The routes of a service's load-balancing settings and outcome reports,
/// and their schemas (apart, to keep one `json!` within the macro's
/// recursion limit).
fn add_balance(doc: &mut Value, service_param: &Value) {
    let paths = json!({
            "/v1/services/{service}/config": {
                "get": {
                    "summary": "A service's load-balancing settings in effect (its own, else the defaults).",
                    "operationId": "getServiceConfig",
                    "parameters": [service_param],
                    "responses": {
                        "200": json_ok("The settings", "ServiceConfig"),
                        "400": error_response("Invalid name"),
                        "401": shared("Unauthorized"),
                        "403": shared("Forbidden")
                    }
                },
                "put": {
                    "summary": "Set a service's strategy and panic threshold (absent or null: the configuration's default). Kept while the service has no instances.",
                    "operationId": "putServiceConfig",
                    "parameters": [service_param],
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ServiceConfigBody" } } }
                    },
                    "responses": {
                        "200": json_ok("The settings now", "ServiceConfig"),
                        "400": error_response("Malformed JSON, unknown field, unknown strategy or a threshold out of range"),
                        "401": shared("Unauthorized"),
                        "403": shared("Forbidden"),
                        "413": error_response("Body larger than the configured limit"),
                        "415": error_response("Body not sent as application/json"),
                        "503": error_response("The store could not make the change durable; it was undone")
                    }
                }
            },
            "/v1/services/{service}/outcomes": {
                "post": {
                    "summary": "Report per-instance successes and failures (outlier ejection): consecutive failures eject an instance from answers for a while.",
                    "operationId": "reportOutcomes",
                    "parameters": [service_param],
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Outcomes" } } }
                    },
                    "responses": {
                        "200": json_ok("What the report came to", "OutcomesReported"),
                        "400": error_response("Malformed JSON, unknown field, invalid id, an id listed twice, a count or latency out of range, or more than 1000 entries"),
                        "401": shared("Unauthorized"),
                        "403": shared("Forbidden"),
                        "404": error_response("The service has no instances"),
                        "413": error_response("Body larger than the configured limit"),
                        "415": error_response("Body not sent as application/json")
                    }
                }
            }
    });
    let schemas = json!({
                "ServiceConfigBody": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "strategy": { "type": ["string", "null"], "enum": ["round_robin", "weighted", "random", "sticky", "nearest", null] },
                        "panic_threshold": { "type": ["integer", "null"], "minimum": 0, "maximum": 100 }
                    }
                },
                "ServiceConfig": {
                    "type": "object",
                    "required": ["service", "datacenter", "strategy", "panic_threshold", "configured", "index"],
                    "properties": {
                        "service": { "type": "string" },
                        "datacenter": { "type": "string" },
                        "strategy": { "type": "string", "enum": ["round_robin", "weighted", "random", "sticky", "nearest"] },
                        "panic_threshold": { "type": "integer", "minimum": 0, "maximum": 100 },
                        "configured": {
                            "type": "object",
                            "properties": {
                                "strategy": { "type": ["string", "null"] },
                                "panic_threshold": { "type": ["integer", "null"] }
                            }
                        },
                        "index": { "type": "integer" }
                    }
                },
                "Outcomes": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["outcomes"],
                    "properties": {
                        "outcomes": {
                            "type": "array", "minItems": 1, "maxItems": 1000,
                            "items": {
                                "type": "object",
                                "additionalProperties": false,
                                "required": ["id"],
                                "properties": {
                                    "id": { "type": "string", "maxLength": 63, "description": "An instance id of the service." },
                                    "successes": { "type": ["integer", "null"], "minimum": 0, "maximum": 1000000 },
                                    "failures": { "type": ["integer", "null"], "minimum": 0, "maximum": 1000000 },
                                    "latency_ms": { "type": ["number", "null"], "minimum": 0, "maximum": 3600000 }
                                }
                            }
                        }
                    }
                },
                "OutcomesReported": {
                    "type": "object",
                    "properties": {
                        "index": { "type": "integer" },
                        "ejected": { "type": "array", "items": { "type": "string" } },
                        "unknown": { "type": "array", "items": { "type": "string" } }
                    }
                }
    });
    for (k, v) in paths.as_object().expect("an object") {
        doc["paths"][k] = v.clone();
    }
    for (k, v) in schemas.as_object().expect("an object") {
        doc["components"]["schemas"][k] = v.clone();
    }
}

/// Intentions and DNS client networks (who may find whom).
fn policy_paths() -> Value {
    let side = |name: &str, what: &str| {
        json!({
            "name": name, "in": "path", "required": true,
            "description": format!("The {what} service, or `*` for every service."),
            "schema": { "anyOf": [ { "const": "*" }, label_schema(ServiceName::MAX_LEN, "db") ] }
        })
    };
    let sides = json!([side("source", "asking"), side("destination", "asked-for")]);
    let tsig_name = json!({
        "name": "name", "in": "path", "required": true,
        "description": "The key's name: a DNS name (lowercase labels of letters, digits, '-' or '_'), as clients sign with it.",
        "schema": { "type": "string", "pattern": "^[a-z0-9_-]{1,63}(\\.[a-z0-9_-]{1,63})*$", "maxLength": 253, "example": "ops.key" }
    });
    let name_param = json!({
        "name": "name", "in": "path", "required": true,
        "description": format!("DNS client network name: 1 to {MAX_POLICY_NAME_LEN} letters, digits, '-', '_' or '.'."),
        "schema": { "type": "string", "pattern": format!("^[A-Za-z0-9._-]{{1,{MAX_POLICY_NAME_LEN}}}$"), "example": "office" }
    });
    let unavailable =
        || error_response("The store could not make the change durable; it was undone");
    json!({
        "/v1/intentions": { "get": {
            "summary": "Every intention whose destination the caller may read (service:read).",
            "operationId": "listIntentions",
            "responses": {
                "200": json_ok("The intentions", "IntentionList"),
                "401": shared("Unauthorized")
            }
        } },
        "/v1/intentions/{source}/{destination}": {
            "get": {
                "summary": "One intention. Needs service:read on the destination.",
                "operationId": "getIntention",
                "parameters": sides.clone(),
                "responses": {
                    "200": json_ok("The intention", "Intention"),
                    "400": error_response("A side is neither a service name nor `*`"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "404": error_response("No such intention")
                }
            },
            "put": {
                "summary": "Create or replace an intention: whether DNS askers with the source's service identity get answers about the destination. Needs service:write on the destination. In effect for the next query after the answer.",
                "operationId": "putIntention",
                "parameters": sides.clone(),
                "requestBody": json_body("IntentionBody"),
                "responses": {
                    "200": json_ok("The stored intention", "Intention"),
                    "400": error_response("Malformed JSON, unknown field, an action other than allow or deny, a side that is neither a service name nor `*`, or a description too long"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "413": error_response("Body larger than the configured limit"),
                    "415": error_response("Body not sent as application/json"),
                    "503": unavailable()
                }
            },
            "delete": {
                "summary": "Delete an intention. Needs service:write on the destination.",
                "operationId": "deleteIntention",
                "parameters": sides,
                "responses": {
                    "200": json_ok("Removed; the index of the removal", "IndexOnly"),
                    "400": error_response("A side is neither a service name nor `*`"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "404": error_response("No such intention"),
                    "503": unavailable()
                }
            }
        },
        "/v1/acl/dns-clients": { "get": {
            "summary": "Every DNS client network. Needs acl:read.",
            "operationId": "listDnsClients",
            "responses": {
                "200": json_ok("The DNS client networks", "DnsClientList"),
                "401": shared("Unauthorized"),
                "403": shared("Forbidden")
            }
        } },
        "/v1/acl/dns-clients/{name}": {
            "get": {
                "summary": "One DNS client network. Needs acl:read.",
                "operationId": "getDnsClient",
                "parameters": [name_param.clone()],
                "responses": {
                    "200": json_ok("The DNS client network", "DnsClient"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "404": error_response("No such DNS client network")
                }
            },
            "put": {
                "summary": "Create or replace a DNS client network: DNS askers from these networks (that are no registered instance) get these policies. Needs acl:write.",
                "operationId": "putDnsClient",
                "parameters": [name_param.clone()],
                "requestBody": json_body("DnsClientBody"),
                "responses": {
                    "200": json_ok("The stored DNS client network", "DnsClient"),
                    "400": error_response("Malformed JSON, unknown field, invalid name or network, or a policy that does not exist"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "413": error_response("Body larger than the configured limit"),
                    "415": error_response("Body not sent as application/json"),
                    "503": unavailable()
                }
            },
            "delete": {
                "summary": "Delete a DNS client network. Needs acl:write.",
                "operationId": "deleteDnsClient",
                "parameters": [name_param],
                "responses": {
                    "200": json_ok("Removed; the index of the removal", "IndexOnly"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "404": error_response("No such DNS client network"),
                    "503": unavailable()
                }
            }
        },
        "/v1/acl/tsig-keys": { "get": {
            "summary": "Every TSIG key, without secrets. Needs acl:read.",
            "operationId": "listTsigKeys",
            "responses": {
                "200": json_ok("The TSIG keys", "TsigKeyList"),
                "401": shared("Unauthorized"),
                "403": shared("Forbidden")
            }
        } },
        "/v1/acl/tsig-keys/{name}": {
            "get": {
                "summary": "One TSIG key, without its secret. Needs acl:read.",
                "operationId": "getTsigKey",
                "parameters": [tsig_name.clone()],
                "responses": {
                    "200": json_ok("The TSIG key", "TsigKey"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "404": error_response("No such TSIG key")
                }
            },
            "put": {
                "summary": "Create or replace a TSIG key: DNS queries signed with it (RFC 8945) are asked as the token it is bound to. Needs acl:write.",
                "operationId": "putTsigKey",
                "parameters": [tsig_name.clone()],
                "requestBody": json_body("TsigKeyBody"),
                "responses": {
                    "200": json_ok("The stored TSIG key, without its secret", "TsigKey"),
                    "400": error_response("Malformed JSON, unknown field, invalid name, algorithm or secret, or a token that does not exist"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "413": error_response("Body larger than the configured limit"),
                    "415": error_response("Body not sent as application/json"),
                    "503": unavailable()
                }
            },
            "delete": {
                "summary": "Delete a TSIG key. Needs acl:write.",
                "operationId": "deleteTsigKey",
                "parameters": [tsig_name],
                "responses": {
                    "200": json_ok("Removed; the index of the removal", "IndexOnly"),
                    "401": shared("Unauthorized"),
                    "403": shared("Forbidden"),
                    "404": error_response("No such TSIG key"),
                    "503": unavailable()
                }
            }
        }
    })
}

/// Blacklists: services, instances and networks Maxine refuses.
fn blacklist_paths() -> Value {
    let service = json!({
        "name": "service", "in": "path", "required": true,
        "description": "Service name (one DNS label).",
        "schema": label_schema(ServiceName::MAX_LEN, "payments")
    });
    let id = json!({
        "name": "id", "in": "path", "required": true,
        "description": "Instance id (one DNS label).",
        "schema": label_schema(InstanceId::MAX_LEN, "payments-1")
    });
    let cidr = json!({
        "name": "cidr", "in": "path", "required": true,
        "description": "A network in CIDR form with the host bits clear: `10.0.0.0/8` sent as `10.0.0.0%2F8`, or `10.0.0.0-8`.",
        "schema": { "type": "string", "example": "10.0.0.0-8" }
    });
    let unavailable =
        || error_response("The store could not make the change durable; it was undone");
    let put = |what: &str, op: &str, params: Value| {
        json!({
            "summary": format!("Blacklist {what}: it cannot register, and what is registered leaves every DNS and API answer before the answer to this request. Optional ttl: the entry lifts itself then."),
            "operationId": op,
            "parameters": params,
            "requestBody": json_body("BlacklistBody"),
            "responses": {
                "200": json_ok("The stored entry", "BlacklistEntry"),
                "400": error_response("Malformed JSON, unknown field, no reason, a reason too long, a bad ttl, or a bad name or network"),
                "401": shared("Unauthorized"),
                "403": shared("Forbidden"),
                "413": error_response("Body larger than the configured limit"),
                "415": error_response("Body not sent as application/json"),
                "503": unavailable()
            }
        })
    };
    let delete = |op: &str, params: Value| {
        json!({
            "summary": "Lift a blacklist entry.",
            "operationId": op,
            "parameters": params,
            "responses": {
                "200": json_ok("Removed; the index of the removal", "IndexOnly"),
                "400": error_response("A bad name or network"),
                "401": shared("Unauthorized"),
                "403": shared("Forbidden"),
                "404": error_response("No such entry"),
                "503": unavailable()
            }
        })
    };
    json!({
        "/v1/blacklist": { "get": {
            "summary": "Every blacklist entry the caller may read (service:read on its service; acl:read for networks), with its expiry.",
            "operationId": "listBlacklist",
            "responses": {
                "200": json_ok("The entries", "BlacklistList"),
                "401": shared("Unauthorized")
            }
        } },
        "/v1/blacklist/services/{service}": {
            "put": put("a service (needs service:write on it)", "putBlacklistService", json!([service.clone()])),
            "delete": delete("deleteBlacklistService", json!([service.clone()]))
        },
        "/v1/blacklist/instances/{service}/{id}": {
            "put": put("one instance (needs service:write on its service)", "putBlacklistInstance", json!([service.clone(), id.clone()])),
            "delete": delete("deleteBlacklistInstance", json!([service, id]))
        },
        "/v1/blacklist/cidrs/{cidr}": {
            "put": put("a network; queries from it are also refused (needs acl:write)", "putBlacklistCidr", json!([cidr.clone()])),
            "delete": delete("deleteBlacklistCidr", json!([cidr]))
        }
    })
}

fn blacklist_schemas() -> Value {
    json!({
        "BlacklistBody": {
            "type": "object",
            "additionalProperties": false,
            "required": ["reason"],
            "properties": {
                "reason": { "type": "string", "maxLength": crate::core::blacklist::MAX_REASON_LEN, "example": "compromised host" },
                "ttl": { "type": "string", "description": "A duration (`10m`, `1h 30m`) or seconds, 1s to 366 days; none: until deleted.", "example": "10m" }
            }
        },
        "BlacklistEntry": {
            "type": "object",
            "required": ["kind", "reason", "created_at", "expires_at", "expires_in_seconds", "index"],
            "properties": {
                "kind": { "type": "string", "enum": ["service", "instance", "cidr"] },
                "service": { "type": "string" },
                "id": { "type": "string" },
                "cidr": { "type": "string" },
                "reason": { "type": "string" },
                "created_at": { "type": "string", "format": "date-time" },
                "expires_at": { "type": ["string", "null"], "format": "date-time" },
                "expires_in_seconds": { "type": ["integer", "null"] },
                "index": { "type": "integer" }
            }
        },
        "BlacklistList": {
            "type": "object",
            "required": ["blacklist"],
            "properties": { "blacklist": { "type": "array", "items": { "$ref": "#/components/schemas/BlacklistEntry" } } }
        }
    })
}

fn policy_schemas() -> Value {
    let side = json!({ "type": "string", "description": "A service name, or `*`." });
    json!({
        "IntentionBody": {
            "type": "object",
            "additionalProperties": false,
            "required": ["action"],
            "properties": {
                "action": { "type": "string", "enum": ["allow", "deny"] },
                "description": { "type": "string", "maxLength": MAX_DESCRIPTION_LEN }
            }
        },
        "Intention": {
            "type": "object",
            "required": ["source", "destination", "action", "description", "index"],
            "properties": {
                "source": side.clone(),
                "destination": side,
                "action": { "type": "string", "enum": ["allow", "deny"] },
                "description": { "type": "string" },
                "index": { "type": "integer" }
            }
        },
        "IntentionList": {
            "type": "object",
            "required": ["intentions"],
            "properties": { "intentions": { "type": "array", "items": { "$ref": "#/components/schemas/Intention" } } }
        },
        "DnsClientBody": {
            "type": "object",
            "additionalProperties": false,
            "required": ["cidrs"],
            "properties": {
                "cidrs": { "type": "array", "minItems": 1, "maxItems": crate::core::intention::MAX_CLIENT_CIDRS,
                           "items": { "type": "string", "example": "10.1.0.0/16" } },
                "policies": { "type": "array", "maxItems": MAX_TOKEN_POLICIES, "items": { "type": "string" } }
            }
        },
        "DnsClient": {
            "type": "object",
            "required": ["name", "cidrs", "policies", "index"],
            "properties": {
                "name": { "type": "string" },
                "cidrs": { "type": "array", "items": { "type": "string" } },
                "policies": { "type": "array", "items": { "type": "string" } },
                "index": { "type": "integer" }
            }
        },
        "DnsClientList": {
            "type": "object",
            "required": ["dns_clients"],
            "properties": { "dns_clients": { "type": "array", "items": { "$ref": "#/components/schemas/DnsClient" } } }
        },
        "TsigKeyBody": {
            "type": "object",
            "additionalProperties": false,
            "required": ["secret", "token"],
            "properties": {
                "algorithm": { "type": "string", "enum": crate::core::tsig::ALGORITHMS, "default": "hmac-sha256" },
                "secret": { "type": "string", "description": "The shared secret in base64, 16 to 512 bytes.", "example": "bWF4aW5lLXRzaWctc2VjcmV0LTAxMjM0NTY3ODk=" },
                "token": { "type": "string", "description": "The accessor of the token whose policies signed queries get." }
            }
        },
        "TsigKey": {
            "type": "object",
            "required": ["name", "algorithm", "token", "index"],
            "properties": {
                "name": { "type": "string" },
                "algorithm": { "type": "string" },
                "token": { "type": "string" },
                "index": { "type": "integer" }
            }
        },
        "TsigKeyList": {
            "type": "object",
            "required": ["tsig_keys"],
            "properties": { "tsig_keys": { "type": "array", "items": { "$ref": "#/components/schemas/TsigKey" } } }
        }
    })
}
