//! The OpenAPI 3.1 document of every route, written by hand. A test in
//! tests/api_native.rs checks it against [`super::ROUTES`] and the running
//! server, so it cannot drift from the route table unnoticed.

use serde_json::{Value, json};

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
    json!({
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
                    "operationId": "health",
                    "responses": { "200": { "description": "Alive", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Status" } } } } }
                }
            },
            "/v1/ready": {
                "get": {
                    "summary": "Readiness: every listener is up and the server is not shutting down. After a damaged store file was recovered, also `degraded` (still 200) until POST /v1/recovery/ack.",
                    "operationId": "ready",
                    "responses": {
                        "200": { "description": "Ready", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Status" } } } },
                        "503": { "description": "Starting or shutting down", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Status" } } } }
                    }
                }
            },
            "/v1/recovery/ack": {
                "post": {
                    "summary": "Acknowledge the recovery of a damaged store file: /v1/ready and /v1/services stop reporting it.",
                    "operationId": "ackRecovery",
                    "responses": { "200": { "description": "What was acknowledged (null: nothing was pending)", "content": { "application/json": { "schema": {
                        "type": "object", "properties": { "acknowledged": { "type": ["object", "null"] } } } } } } }
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "operationId": "openapi",
                    "responses": { "200": { "description": "OpenAPI 3.1 document", "content": { "application/json": {} } } }
                }
            },
            "/v1/services": {
                "get": {
                    "summary": "Every service with its instance counts per datacenter; `recovery` while a store recovery is unacknowledged.",
                    "operationId": "listServices",
                    "parameters": blocking_params(),
                    "responses": {
                        "200": json_ok("Services", "ServiceList"),
                        "400": error_response("Invalid index or wait")
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
                        "409": error_response("Conflicts with what is registered"),
                        "413": error_response("Body larger than the configured limit"),
                        "415": error_response("Body not sent as application/json"),
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
                        "200": json_ok("The instance", "Instance"),
                        "400": error_response("Invalid name"),
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
                        "409": maxine_error("The name maps to a DNS name another Maxine name uses"),
                        "413": maxine_error("Body larger than the configured limit"),
                        "415": maxine_error("Body not sent as application/json"),
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
                        "503": maxine_error("No passing instance")
                    }
                }
            },
            "/api/maxine/serviceops/servers": {
                "get": {
                    "summary": "The passing instances of the local datacenter, in Maxine's registry shape.",
                    "operationId": "maxineServers",
                    "responses": { "200": json_ok("Services by Maxine name", "MaxineServers") }
                }
            },
            "/api/actuator/health": {
                "get": {
                    "summary": "Maxine-compatible health probe.",
                    "operationId": "actuatorHealth",
                    "responses": { "200": { "description": "Up", "content": { "application/json": {
                        "schema": { "type": "object", "properties": { "status": { "const": "UP" } } } } } } }
                }
            },
            "/v1/snapshot": {
                "get": {
                    "summary": "Backup: every instance at one index, as a snapshot file (checksummed; see docs/operations.md). Sent once all of it is durable.",
                    "operationId": "snapshot",
                    "responses": {
                        "200": {
                            "description": "The snapshot file (`maxine snapshot restore FILE` loads it)",
                            "headers": { "X-Maxine-Index": { "$ref": "#/components/headers/Index" } },
                            "content": { "application/octet-stream": { "schema": { "type": "string", "contentEncoding": "binary" } } }
                        },
                        "503": error_response("The latest change could not be made durable; try again")
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
                            "payload_too_large", "unsupported_media_type", "unavailable", "internal"
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
                    "properties": { "status": { "type": "string" }, "degraded": { "type": "object" } }
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
                        "health": { "type": "string", "enum": ["passing", "critical"] },
                        "index": { "type": "integer", "description": "Index of the change that produced this value." },
                        "compat": { "type": "object", "description": "The names a Maxine SDK sent (Maxine-compatible registrations only)." },
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
                        "registeredAt": { "type": "string", "format": "date-time" },
                        "dnsName": { "type": "string", "example": format!("payment-service.{domain}") }
                    }
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
                                    "timeOut": { "type": "integer" }
                                }
                            } }
                        }
                    }
                }
            }
        }
    })
}

/// The parameters of a blocking read (`?index=N&wait=30s`).
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
