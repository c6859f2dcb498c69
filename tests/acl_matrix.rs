//! The access-control matrix: every route of `maxine::http::ROUTES` against
//! every kind of credential, on a server whose default policy is deny, with
//! the exact status each must get. One table, one loop; a route missing
//! from the table fails the test, so a new route must state who may use it.
//!
//! Refused requests (any 4xx) must leave the registry exactly as it was:
//! index, instances, ACL objects and the listing a manager sees.

mod common;

use std::collections::BTreeSet;

use common::TestServer;
use common::acl::{
    Cred, Idp, RSA_PUBLIC, alg_none, call, claims, create_token, hs256, put_policy, sign_in,
    unix_now, unknown_secret, users_file, wait_for_self_status,
};
use common::api::Reply;
use maxine::core::{Datacenter, ServiceKey, ServiceName};
use reqwest::Method;
use serde_json::{Value, json};

/// The management token given in the configuration.
const ADMIN_SECRET: &str = "matrix-management-secret-0123456789abcdef";
const VIEWER: (&str, &str) = ("vera", "vera-viewer-password");

/// The credentials: the columns of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Col {
    // Valid credentials (and no credential at all).
    Anonymous,
    /// Policy `service_prefix "" read`, sent as `X-Maxine-Token`.
    Read,
    /// Policy `service "orders" write`: nothing on `payments`.
    OtherService,
    /// Policy `service_prefix "pay" write`.
    Prefix,
    /// A token with the service identity `payments`.
    ServiceIdentity,
    /// The configured management token.
    Management,
    /// RS256 from the identity provider; `groups: [platform]` binds `operator`.
    JwtOperator,
    /// ES256 from the identity provider; its `service` claim is `payments`.
    JwtService,
    /// A viewer signed in through `POST /api/maxine/signin`.
    SignedIn,
    // Credentials that must be refused with 401.
    /// `Authorization: Basic ...`.
    Malformed,
    Unknown,
    /// Created, then deleted.
    Revoked,
    /// Created with `expires_in: 1s`, then waited out.
    Expired,
    /// `exp` a minute ago, beyond the 5 s leeway.
    JwtExpired,
    JwtAlgNone,
    /// HS256 keyed with the RSA public key's PEM bytes.
    JwtKeyConfusion,
    JwtWrongAudience,
    JwtWrongIssuer,
    JwtNoExp,
}

use Col::*;

/// Valid credentials, in the order of [`Row::valid`].
const VALID: [Col; 9] = [
    Anonymous,
    Read,
    OtherService,
    Prefix,
    ServiceIdentity,
    Management,
    JwtOperator,
    JwtService,
    SignedIn,
];

/// Credentials that get [`Row::bad`].
const BAD: [Col; 10] = [
    Malformed,
    Unknown,
    Revoked,
    Expired,
    JwtExpired,
    JwtAlgNone,
    JwtKeyConfusion,
    JwtWrongAudience,
    JwtWrongIssuer,
    JwtNoExp,
];

impl Col {
    /// A DNS-label-safe name, for instance ids made by the column.
    fn label(self) -> String {
        let debug = format!("{self:?}");
        let mut out = String::new();
        for (i, c) in debug.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }
}

/// One route: the request sent for it and the status each credential gets.
struct Row {
    /// `METHOD path` exactly as in `ROUTES`.
    route: &'static str,
    /// Path and query sent. `{col}` is the column's label, `{reader}` the
    /// read token's accessor, `{victim}` a token that may be changed.
    target: &'static str,
    /// JSON body (same placeholders), if any.
    body: Option<&'static str>,
    /// Status per credential of [`VALID`], in its order.
    valid: [u16; 9],
    /// Status of every credential of [`BAD`].
    bad: u16,
}

const REGISTER: &str = r#"{"address": "10.0.0.9", "port": 80, "ttl": "1h"}"#;
const MAXINE_REGISTER: &str = r#"{"hostName": "10.0.0.10", "nodeName": "m-{col}", "serviceName": "payments", "port": 8080, "timeOut": 600}"#;
// Its runs fail (nothing listens there) but never change the registry: the
// matrix checks that refused requests changed nothing.
const CHECK: &str = r#"{"tcp": "127.0.0.1:9", "interval": "1h", "failures_before_critical": 100}"#;
const SIGNIN: &str = r#"{"userName": "vera", "password": "vera-viewer-password"}"#;

#[rustfmt::skip]
const TABLE: &[Row] = &[
    // columns:   anon read othr prfx svc  mgmt jwop jwsv user       bad
    Row { route: "GET /v1/health", target: "/v1/health", body: None,
          valid: [200, 200, 200, 200, 200, 200, 200, 200, 200], bad: 200 },
    Row { route: "GET /v1/ready", target: "/v1/ready", body: None,
          valid: [200, 200, 200, 200, 200, 200, 200, 200, 200], bad: 200 },
    Row { route: "GET /v1/openapi.json", target: "/v1/openapi.json", body: None,
          valid: [200, 200, 200, 200, 200, 200, 200, 200, 200], bad: 200 },
    // The listing is filtered by what the caller may read, never refused.
    Row { route: "GET /v1/services", target: "/v1/services", body: None,
          valid: [200, 200, 200, 200, 200, 200, 200, 200, 200], bad: 401 },
    Row { route: "GET /v1/services/{service}", target: "/v1/services/payments", body: None,
          valid: [403, 200, 403, 200, 200, 200, 200, 200, 200], bad: 401 },
    // Streams: the head only (a stream never ends); the WebSocket route
    // without an upgrade is a 400 once the caller may read.
    Row { route: "GET /v1/events", target: "/v1/events?service=payments", body: None,
          valid: [403, 200, 403, 200, 200, 200, 200, 200, 200], bad: 401 },
    Row { route: "GET /v1/events/ws", target: "/v1/events/ws?service=payments", body: None,
          valid: [403, 400, 403, 400, 400, 400, 400, 400, 400], bad: 401 },
    // Key/value entries: key_prefix rules (the built-in management,
    // operator and viewer policies cover every key); the keys do not
    // exist, so a caller who may read or write gets 404 for GET and DELETE.
    Row { route: "GET /v1/kv/{*key}", target: "/v1/kv/app/missing", body: None,
          valid: [403, 403, 403, 403, 403, 404, 404, 403, 404], bad: 401 },
    Row { route: "PUT /v1/kv/{*key}", target: "/v1/kv/app/m-{col}", body: None,
          valid: [403, 403, 403, 403, 403, 200, 200, 403, 403], bad: 401 },
    Row { route: "DELETE /v1/kv/{*key}", target: "/v1/kv/app/missing", body: None,
          valid: [403, 403, 403, 403, 403, 404, 404, 403, 403], bad: 401 },
    // Counts and timings only: no credential read, like the actuator.
    Row { route: "GET /metrics", target: "/metrics", body: None,
          valid: [200, 200, 200, 200, 200, 200, 200, 200, 200], bad: 200 },
    Row { route: "PUT /v1/services/{service}/instances/{id}", target: "/v1/services/payments/instances/n-{col}", body: Some(REGISTER),
          valid: [403, 403, 403, 200, 200, 200, 200, 200, 403], bad: 401 },
    Row { route: "DELETE /v1/services/{service}/instances/{id}", target: "/v1/services/payments/instances/victim", body: None,
          valid: [403, 403, 403, 200, 200, 200, 200, 200, 403], bad: 401 },
    Row { route: "PUT /v1/services/{service}/instances/{id}/heartbeat", target: "/v1/services/payments/instances/p1/heartbeat", body: None,
          valid: [403, 403, 403, 200, 200, 200, 200, 200, 403], bad: 401 },
    Row { route: "GET /v1/services/{service}/config", target: "/v1/services/payments/config", body: None,
          valid: [403, 200, 403, 200, 200, 200, 200, 200, 200], bad: 401 },
    Row { route: "PUT /v1/services/{service}/config", target: "/v1/services/payments/config", body: Some(r#"{"strategy": "round_robin"}"#),
          valid: [403, 403, 403, 200, 200, 200, 200, 200, 403], bad: 401 },
    Row { route: "POST /v1/services/{service}/outcomes", target: "/v1/services/payments/outcomes", body: Some(r#"{"outcomes": [{"id": "p1", "successes": 1}]}"#),
          valid: [403, 403, 403, 200, 200, 200, 200, 200, 403], bad: 401 },
    Row { route: "POST /api/maxine/serviceops/register", target: "/api/maxine/serviceops/register", body: Some(MAXINE_REGISTER),
          valid: [403, 403, 403, 200, 200, 200, 200, 200, 403], bad: 401 },
    Row { route: "GET /api/maxine/serviceops/discover", target: "/api/maxine/serviceops/discover?serviceName=payments", body: None,
          valid: [403, 302, 403, 302, 302, 302, 302, 302, 302], bad: 401 },
    // As in the Node.js Maxine, the snapshot of servers needs a credential.
    Row { route: "GET /api/maxine/serviceops/servers", target: "/api/maxine/serviceops/servers", body: None,
          valid: [401, 200, 200, 200, 200, 200, 200, 200, 200], bad: 401 },
    // Maxine's settings: operator:read to see them, operator:write to change.
    Row { route: "GET /api/maxine/control/config", target: "/api/maxine/control/config", body: None,
          valid: [403, 403, 403, 403, 403, 200, 200, 403, 403], bad: 401 },
    Row { route: "PUT /api/maxine/control/config", target: "/api/maxine/control/config", body: Some(r#"{"heartBeatTimeout": 5}"#),
          valid: [403, 403, 403, 403, 403, 200, 200, 403, 403], bad: 401 },
    Row { route: "GET /api/actuator/health", target: "/api/actuator/health", body: None,
          valid: [200, 200, 200, 200, 200, 200, 200, 200, 200], bad: 200 },
    // The actuator reads no credential, as in the Node.js Maxine.
    Row { route: "GET /api/actuator/info", target: "/api/actuator/info", body: None,
          valid: [200, 200, 200, 200, 200, 200, 200, 200, 200], bad: 200 },
    Row { route: "GET /api/actuator/metrics", target: "/api/actuator/metrics", body: None,
          valid: [200, 200, 200, 200, 200, 200, 200, 200, 200], bad: 200 },
    // No report to show, whoever asks.
    Row { route: "GET /api/actuator/performance", target: "/api/actuator/performance", body: None,
          valid: [404, 404, 404, 404, 404, 404, 404, 404, 404], bad: 404 },
    // The log routes: operator:read (clear: operator:write), which the
    // management token and the operator JWT have; a signed-in viewer has not.
    Row { route: "GET /api/logs/download", target: "/api/logs/download", body: None,
          valid: [403, 403, 403, 403, 403, 200, 200, 403, 403], bad: 401 },
    Row { route: "GET /api/logs/download/maxine-recent.log", target: "/api/logs/download/maxine-recent.log", body: None,
          valid: [403, 403, 403, 403, 403, 200, 200, 403, 403], bad: 401 },
    Row { route: "GET /api/logs/recent", target: "/api/logs/recent", body: None,
          valid: [403, 403, 403, 403, 403, 200, 200, 403, 403], bad: 401 },
    Row { route: "GET /api/logs/recent/clear", target: "/api/logs/recent/clear", body: None,
          valid: [403, 403, 403, 403, 403, 200, 200, 403, 403], bad: 401 },
    // operator:read and acl:read (a snapshot holds every token's hash).
    Row { route: "GET /v1/snapshot", target: "/v1/snapshot", body: None,
          valid: [403, 403, 403, 403, 403, 200, 403, 403, 403], bad: 401 },
    Row { route: "POST /v1/recovery/ack", target: "/v1/recovery/ack", body: None,
          valid: [403, 403, 403, 403, 403, 200, 200, 403, 403], bad: 401 },
    // Done at start-up from the configured token: refused to everyone.
    Row { route: "POST /v1/acl/bootstrap", target: "/v1/acl/bootstrap", body: None,
          valid: [403, 403, 403, 403, 403, 403, 403, 403, 403], bad: 401 },
    Row { route: "GET /v1/acl/policies", target: "/v1/acl/policies", body: None,
          valid: [403, 403, 403, 403, 403, 200, 403, 403, 403], bad: 401 },
    Row { route: "GET /v1/acl/policies/{name}", target: "/v1/acl/policies/readers", body: None,
          valid: [403, 403, 403, 403, 403, 200, 403, 403, 403], bad: 401 },
    Row { route: "PUT /v1/acl/policies/{name}", target: "/v1/acl/policies/scratch", body: Some(r#"{"rules": {"service": {"scratch": "write"}}}"#),
          valid: [403, 403, 403, 403, 403, 200, 403, 403, 403], bad: 401 },
    Row { route: "DELETE /v1/acl/policies/{name}", target: "/v1/acl/policies/doomed", body: None,
          valid: [403, 403, 403, 403, 403, 200, 403, 403, 403], bad: 401 },
    Row { route: "POST /v1/acl/tokens", target: "/v1/acl/tokens", body: Some(r#"{"description": "by {col}", "policies": ["global-management"]}"#),
          valid: [403, 403, 403, 403, 403, 200, 403, 403, 403], bad: 401 },
    Row { route: "GET /v1/acl/tokens", target: "/v1/acl/tokens", body: None,
          valid: [403, 403, 403, 403, 403, 200, 403, 403, 403], bad: 401 },
    Row { route: "GET /v1/acl/tokens/{accessor}", target: "/v1/acl/tokens/{reader}", body: None,
          valid: [403, 403, 403, 403, 403, 200, 403, 403, 403], bad: 401 },
    Row { route: "PUT /v1/acl/tokens/{accessor}", target: "/v1/acl/tokens/{victim}", body: Some(r#"{"description": "changed by {col}", "policies": ["global-management"]}"#),
          valid: [403, 403, 403, 403, 403, 200, 403, 403, 403], bad: 401 },
    Row { route: "DELETE /v1/acl/tokens/{accessor}", target: "/v1/acl/tokens/{victim}", body: None,
          valid: [403, 403, 403, 403, 403, 200, 403, 403, 403], bad: 401 },
    Row { route: "GET /v1/acl/token/self", target: "/v1/acl/token/self", body: None,
          valid: [200, 200, 200, 200, 200, 200, 200, 200, 200], bad: 401 },
    // DNS client networks hand out policies: acl:read and acl:write, as tokens.
    Row { route: "GET /v1/acl/dns-clients", target: "/v1/acl/dns-clients", body: None,
          valid: [403, 403, 403, 403, 403, 200, 403, 403, 403], bad: 401 },
    Row { route: "GET /v1/acl/dns-clients/{name}", target: "/v1/acl/dns-clients/nobody", body: None,
          valid: [403, 403, 403, 403, 403, 404, 403, 403, 403], bad: 401 },
    Row { route: "PUT /v1/acl/dns-clients/{name}", target: "/v1/acl/dns-clients/m-{col}", body: Some(r#"{"cidrs": ["10.9.0.0/16"], "policies": ["viewer"]}"#),
          valid: [403, 403, 403, 403, 403, 200, 403, 403, 403], bad: 401 },
    Row { route: "DELETE /v1/acl/dns-clients/{name}", target: "/v1/acl/dns-clients/nobody", body: None,
          valid: [403, 403, 403, 403, 403, 404, 403, 403, 403], bad: 401 },
    // TSIG keys hand out a token's policies: acl:read and acl:write.
    Row { route: "GET /v1/acl/tsig-keys", target: "/v1/acl/tsig-keys", body: None,
          valid: [403, 403, 403, 403, 403, 200, 403, 403, 403], bad: 401 },
    Row { route: "GET /v1/acl/tsig-keys/{name}", target: "/v1/acl/tsig-keys/nobody", body: None,
          valid: [403, 403, 403, 403, 403, 404, 403, 403, 403], bad: 401 },
    Row { route: "PUT /v1/acl/tsig-keys/{name}", target: "/v1/acl/tsig-keys/m-{col}", body: Some(r#"{"algorithm": "hmac-sha256", "secret": "bWF4aW5lLXRzaWctc2VjcmV0LTAxMjM0NTY3ODk=", "token": "anonymous"}"#),
          valid: [403, 403, 403, 403, 403, 200, 403, 403, 403], bad: 401 },
    Row { route: "DELETE /v1/acl/tsig-keys/{name}", target: "/v1/acl/tsig-keys/nobody", body: None,
          valid: [403, 403, 403, 403, 403, 404, 403, 403, 403], bad: 401 },
    // Intentions: service:read on the destination to read one (the listing
    // is filtered), service:write on it to change one; none exists, so a
    // caller who may gets 404 for GET and DELETE.
    Row { route: "GET /v1/intentions", target: "/v1/intentions", body: None,
          valid: [200, 200, 200, 200, 200, 200, 200, 200, 200], bad: 401 },
    Row { route: "GET /v1/intentions/{source}/{destination}", target: "/v1/intentions/web/payments", body: None,
          valid: [403, 404, 403, 404, 404, 404, 404, 404, 404], bad: 401 },
    Row { route: "PUT /v1/intentions/{source}/{destination}", target: "/v1/intentions/m-{col}/payments", body: Some(r#"{"action": "deny", "description": "by {col}"}"#),
          valid: [403, 403, 403, 200, 200, 200, 200, 200, 403], bad: 401 },
    Row { route: "DELETE /v1/intentions/{source}/{destination}", target: "/v1/intentions/web/payments", body: None,
          valid: [403, 403, 403, 404, 404, 404, 404, 404, 403], bad: 401 },
    // Blacklists: service:write on the service for services and instances
    // (the listing is filtered by service:read and acl:read), acl:write for
    // networks; none exists, so a caller who may gets 404 for DELETE.
    Row { route: "GET /v1/blacklist", target: "/v1/blacklist", body: None,
          valid: [200, 200, 200, 200, 200, 200, 200, 200, 200], bad: 401 },
    Row { route: "PUT /v1/blacklist/services/{service}", target: "/v1/blacklist/services/pay-{col}", body: Some(r#"{"reason": "by {col}", "ttl": "1h"}"#),
          valid: [403, 403, 403, 200, 403, 200, 200, 403, 403], bad: 401 },
    Row { route: "DELETE /v1/blacklist/services/{service}", target: "/v1/blacklist/services/payments", body: None,
          valid: [403, 403, 403, 404, 404, 404, 404, 404, 403], bad: 401 },
    Row { route: "PUT /v1/blacklist/instances/{service}/{id}", target: "/v1/blacklist/instances/payments/m-{col}", body: Some(r#"{"reason": "by {col}"}"#),
          valid: [403, 403, 403, 200, 200, 200, 200, 200, 403], bad: 401 },
    Row { route: "DELETE /v1/blacklist/instances/{service}/{id}", target: "/v1/blacklist/instances/payments/nobody", body: None,
          valid: [403, 403, 403, 404, 404, 404, 404, 404, 403], bad: 401 },
    Row { route: "PUT /v1/blacklist/cidrs/{cidr}", target: "/v1/blacklist/cidrs/198.51.100.0-24", body: Some(r#"{"reason": "by {col}"}"#),
          valid: [403, 403, 403, 403, 403, 200, 403, 403, 403], bad: 401 },
    Row { route: "DELETE /v1/blacklist/cidrs/{cidr}", target: "/v1/blacklist/cidrs/203.0.113.0%2F24", body: None,
          valid: [403, 403, 403, 403, 403, 404, 403, 403, 403], bad: 401 },
    Row { route: "GET /v1/audit", target: "/v1/audit?limit=5", body: None,
          valid: [403, 403, 403, 403, 403, 200, 403, 403, 403], bad: 401 },
    // Federation: operator:read; any other credential, or none, gets 403.
    // The request names this datacenter as the receiver, which is refused
    // with 400 once authorized (so no stream is left open).
    Row { route: "GET /v1/federation/stream", target: "/v1/federation/stream?since=0&dc=dc1", body: None,
          valid: [403, 403, 403, 403, 403, 400, 400, 403, 403], bad: 403 },
    Row { route: "GET /v1/datacenters", target: "/v1/datacenters", body: None,
          valid: [403, 403, 403, 403, 403, 200, 200, 403, 403], bad: 401 },
    Row { route: "PUT /v1/services/{service}/failover", target: "/v1/services/payments/failover", body: Some(r#"{"datacenters": ["dc9"]}"#),
          valid: [403, 403, 403, 403, 403, 200, 200, 403, 403], bad: 401 },
    // Open to all: the body decides (here the viewer's right password).
    Row { route: "POST /api/maxine/signin", target: "/api/maxine/signin", body: Some(SIGNIN),
          valid: [200, 200, 200, 200, 200, 200, 200, 200, 200], bad: 200 },
    // Only a signed-in user may; this one gives a wrong current password.
    Row { route: "PUT /api/maxine/change-password", target: "/api/maxine/change-password", body: Some(r#"{"password": "not-the-password", "newPassword": "a-new-password-1"}"#),
          valid: [401, 401, 401, 401, 401, 401, 401, 401, 400], bad: 401 },
    // Health checks of an instance are written like the instance (their
    // target: a closed port on loopback; nothing leaves the machine).
    Row { route: "PUT /v1/services/{service}/instances/{id}/checks/{name}", target: "/v1/services/payments/instances/victim/checks/tcp", body: Some(CHECK),
          valid: [403, 403, 403, 200, 200, 200, 200, 200, 403], bad: 401 },
    Row { route: "DELETE /v1/services/{service}/instances/{id}/checks/{name}", target: "/v1/services/payments/instances/victim/checks/doomed", body: None,
          valid: [403, 403, 403, 200, 200, 200, 200, 200, 403], bad: 401 },
];

/// The server and every credential of the matrix.
struct World {
    s: TestServer,
    admin: Cred,
    creds: Vec<(Col, Cred)>,
    reader: String,
    /// A token the matrix may change or delete (made again when deleted).
    victim: String,
    _keys: tempfile::TempDir,
}

impl World {
    async fn start() -> Self {
        let keys = tempfile::tempdir().unwrap();
        let idp = Idp::new(keys.path());
        let users = users_file(keys.path(), &[(VIEWER.0, "viewer", VIEWER.1)]);
        let s = TestServer::start_with(|f| {
            f.acl.default_policy = Some("deny".into());
            f.acl.bootstrap_token = Some(ADMIN_SECRET.into());
            f.acl.users_file = Some(users);
            idp.configure(f);
        })
        .await;
        let base = s.http_base();
        let admin = Cred::Bearer(ADMIN_SECRET.into());
        let h = &s.http;
        put_policy(
            h,
            &base,
            &admin,
            "readers",
            json!({"service_prefix": {"": "read"}}),
        )
        .await;
        put_policy(
            h,
            &base,
            &admin,
            "orders-writer",
            json!({"service": {"orders": "write"}}),
        )
        .await;
        put_policy(
            h,
            &base,
            &admin,
            "pay-writer",
            json!({"service_prefix": {"pay": "write"}}),
        )
        .await;
        let (reader, read) = create_token(h, &base, &admin, json!({"policies": ["readers"]})).await;
        let (_, other) =
            create_token(h, &base, &admin, json!({"policies": ["orders-writer"]})).await;
        let (_, prefix) = create_token(h, &base, &admin, json!({"policies": ["pay-writer"]})).await;
        let (_, service) = create_token(h, &base, &admin, json!({"service": "payments"})).await;

        // Revoked: works, is deleted, and is refused on the very next request.
        let (revoked_accessor, revoked) =
            create_token(h, &base, &admin, json!({"policies": ["global-management"]})).await;
        let revoked = Cred::Bearer(revoked);
        assert_eq!(
            wait_for_self_status(h, &base, &revoked, 200).await.status,
            200
        );
        let r = call(
            h,
            Method::DELETE,
            &format!("{base}/v1/acl/tokens/{revoked_accessor}"),
            &admin,
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");

        // Expired: a one-second token, waited out by polling.
        let (_, expired) = create_token(
            h,
            &base,
            &admin,
            json!({"policies": ["global-management"], "expires_in": "1s"}),
        )
        .await;
        let expired = Cred::Bearer(expired);
        let r = wait_for_self_status(h, &base, &expired, 401).await;
        assert_eq!(r.status, 401, "the token never expired: {r:?}");
        assert!(
            r.body["error"].as_str().unwrap().contains("expired"),
            "{r:?}"
        );

        let viewer = sign_in(h, &base, VIEWER.0, VIEWER.1).await;
        let now = unix_now();
        let platform = json!({"groups": ["platform"]});
        // Tokens that would be an operator's, were they accepted.
        let mallory = |mut extra: Value| {
            extra["groups"] = json!(["platform"]);
            claims("mallory", extra)
        };
        let creds = vec![
            (Anonymous, Cred::None),
            (Read, Cred::Token(read)),
            (OtherService, Cred::Bearer(other)),
            (Prefix, Cred::Bearer(prefix)),
            (ServiceIdentity, Cred::Bearer(service)),
            (Management, admin.clone()),
            (
                JwtOperator,
                Cred::Bearer(idp.rs256(&claims("alice", platform.clone()))),
            ),
            (
                JwtService,
                Cred::Bearer(
                    idp.es256(&claims("payments-workload", json!({"service": "payments"}))),
                ),
            ),
            (SignedIn, Cred::Bearer(viewer)),
            (
                Malformed,
                Cred::Authorization(format!("Basic {}", "dmVyYTp2ZXJh")),
            ),
            (Unknown, Cred::Bearer(unknown_secret())),
            (Revoked, revoked),
            (Expired, expired),
            (
                JwtExpired,
                Cred::Bearer(idp.rs256(&mallory(json!({"iat": now - 3600, "exp": now - 60})))),
            ),
            (JwtAlgNone, Cred::Bearer(alg_none(&mallory(json!({}))))),
            (
                JwtKeyConfusion,
                Cred::Bearer(hs256(&mallory(json!({})), RSA_PUBLIC)),
            ),
            (
                JwtWrongAudience,
                Cred::Bearer(idp.rs256(&mallory(json!({"aud": "someone-else"})))),
            ),
            (
                JwtWrongIssuer,
                Cred::Bearer(idp.rs256(&mallory(json!({"iss": "https://evil.invalid"})))),
            ),
            (
                JwtNoExp,
                Cred::Bearer(idp.rs256(&mallory(json!({"exp": null})))),
            ),
        ];
        let mut w = Self {
            s,
            admin,
            creds,
            reader,
            victim: String::new(),
            _keys: keys,
        };
        w.ensure().await;
        w
    }

    fn url(&self, target: &str) -> String {
        format!("{}{target}", self.s.http_base())
    }

    async fn admin_call(&self, method: Method, target: &str, body: Option<Value>) -> Reply {
        call(
            &self.s.http,
            method,
            &self.url(target),
            &self.admin,
            body.as_ref(),
        )
        .await
    }

    /// Puts back what an allowed request may have removed: the instances
    /// the rows act on, the policy `doomed` and the victim token.
    async fn ensure(&mut self) {
        let key = |s: &str| {
            ServiceKey::new(
                Datacenter::new("dc1").unwrap(),
                ServiceName::new(s).unwrap(),
            )
        };
        for (service, id) in [("payments", "p1"), ("payments", "victim"), ("orders", "o1")] {
            let there = self
                .s
                .registry
                .service(&key(service))
                .is_some_and(|snap| snap.instances.keys().any(|i| i.as_str() == id));
            if !there {
                let r = self
                    .admin_call(
                        Method::PUT,
                        &format!("/v1/services/{service}/instances/{id}"),
                        Some(serde_json::from_str(REGISTER).unwrap()),
                    )
                    .await;
                assert_eq!(r.status, 200, "{r:?}");
            }
        }
        let victim_check = self.s.registry.service(&key("payments")).and_then(|snap| {
            snap.instances
                .values()
                .find(|i| i.id.as_str() == "victim")
                .map(|i| i.checks.get("doomed").is_some())
        });
        if victim_check == Some(false) {
            let r = self
                .admin_call(
                    Method::PUT,
                    "/v1/services/payments/instances/victim/checks/doomed",
                    Some(serde_json::from_str(CHECK).unwrap()),
                )
                .await;
            assert_eq!(r.status, 200, "{r:?}");
        }
        if self.s.registry.policy("doomed").is_none() {
            let rules = json!({"service": {"doomed": "read"}});
            put_policy(
                &self.s.http,
                &self.s.http_base(),
                &self.admin,
                "doomed",
                rules,
            )
            .await;
        }
        if self.s.registry.token(&self.victim).is_none() {
            let body = json!({"description": "the matrix's victim"});
            let (accessor, _) =
                create_token(&self.s.http, &self.s.http_base(), &self.admin, body).await;
            self.victim = accessor;
        }
    }

    /// Everything a refused request must leave as it was.
    async fn state(&self) -> (u64, String, String, Value) {
        let (index, services) = self.s.registry.snapshot();
        let acl = format!("{:?}", self.s.registry.acl_objects());
        let listing = self.admin_call(Method::GET, "/v1/services", None).await;
        assert_eq!(listing.status, 200, "{listing:?}");
        (index, format!("{services:?}"), acl, listing.body)
    }

    fn fill(&self, text: &str, col: Col) -> String {
        text.replace("{col}", &col.label())
            .replace("{reader}", &self.reader)
            .replace("{victim}", &self.victim)
    }
}

fn route_of(r: &maxine::http::RouteSpec) -> String {
    format!("{} {}", r.method, r.path)
}

#[tokio::test]
async fn every_route_answers_every_credential_with_its_exact_status() {
    // The table and the route table name the same routes, once each.
    let routes: BTreeSet<String> = maxine::http::ROUTES.iter().map(route_of).collect();
    let rows: Vec<&str> = TABLE.iter().map(|r| r.route).collect();
    let rowset: BTreeSet<String> = rows.iter().map(|r| r.to_string()).collect();
    assert_eq!(rows.len(), rowset.len(), "a route has two rows");
    let missing: Vec<_> = routes.difference(&rowset).collect();
    assert!(
        missing.is_empty(),
        "routes without a row in the ACL matrix (say who may use them): {missing:?}"
    );
    let unknown: Vec<_> = rowset.difference(&routes).collect();
    assert!(
        unknown.is_empty(),
        "rows for routes that do not exist: {unknown:?}"
    );

    let mut w = World::start().await;
    let columns: BTreeSet<Col> = VALID.iter().chain(&BAD).copied().collect();
    assert_eq!(
        columns.len(),
        w.creds.len(),
        "every credential has one column"
    );

    let mut failures = Vec::new();
    let mut cells = 0;
    for spec in maxine::http::ROUTES {
        let route = route_of(spec);
        let row = TABLE
            .iter()
            .find(|r| r.route == route)
            .expect("checked above");
        let method = Method::from_bytes(spec.method.as_bytes()).unwrap();
        for (col, cred) in w.creds.clone() {
            w.ensure().await;
            let want = match VALID.iter().position(|c| *c == col) {
                Some(i) => row.valid[i],
                None => row.bad,
            };
            let target = w.fill(row.target, col);
            let body: Option<Value> = row
                .body
                .map(|b| serde_json::from_str(&w.fill(b, col)).expect("the row's body is JSON"));
            let before = w.state().await;
            let r = call(
                &w.s.http,
                method.clone(),
                &w.url(&target),
                &cred,
                body.as_ref(),
            )
            .await;
            cells += 1;
            let what = format!("{route} as {col:?} ({} {target})", spec.method);
            if r.status != want {
                failures.push(format!(
                    "{what}: expected {want}, got {} {}",
                    r.status, r.body
                ));
                continue;
            }
            if let Err(e) = check_refusal(&r, &target) {
                failures.push(format!("{what}: {e}: {r:?}"));
            }
            if r.status >= 400 && w.state().await != before {
                failures.push(format!(
                    "{what}: refused with {}, but the registry changed",
                    r.status
                ));
            }
        }
    }
    assert_eq!(cells, TABLE.len() * (VALID.len() + BAD.len()));
    assert!(
        failures.is_empty(),
        "{} of {cells} cells of the ACL matrix are wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What a 401 or 403 must say, in the format of the API the path belongs to.
fn check_refusal(r: &Reply, target: &str) -> Result<(), String> {
    let maxine = target.starts_with("/api/");
    let text = if maxine {
        r.body["message"].as_str()
    } else {
        r.body["error"].as_str()
    };
    match r.status {
        401 => {
            if !r
                .www_authenticate
                .as_deref()
                .is_some_and(|v| v.starts_with("Bearer"))
            {
                return Err("a 401 without WWW-Authenticate: Bearer".into());
            }
            if maxine && r.body != json!({"message": "Unauthorized"}) {
                return Err("Maxine's 401 is exactly {\"message\":\"Unauthorized\"}".into());
            }
            if !maxine && r.body["kind"] != "unauthorized" {
                return Err("kind is not unauthorized".into());
            }
        }
        403 => {
            let text = text.ok_or("a 403 without a text")?;
            let named = text.contains(" lacks ") || target == "/v1/acl/bootstrap";
            if !named {
                return Err(format!("the 403 does not name what is missing: {text:?}"));
            }
            if !maxine && r.body["kind"] != "forbidden" {
                return Err("kind is not forbidden".into());
            }
        }
        _ => {}
    }
    Ok(())
}

/// The 403 names the caller and exactly the permission it lacks.
#[tokio::test]
async fn a_refusal_names_the_token_and_the_missing_permission() {
    let w = World::start().await;
    let cred = |c: Col| w.creds.iter().find(|(k, _)| *k == c).unwrap().1.clone();
    let other_accessor =
        w.s.registry
            .acl_objects()
            .iter()
            .find_map(|o| match o {
                maxine::core::AclObject::Token(t) if t.policies == ["orders-writer"] => {
                    Some(t.accessor.clone())
                }
                _ => None,
            })
            .unwrap();
    let r = call(
        &w.s.http,
        Method::PUT,
        &w.url("/v1/services/payments/instances/x"),
        &cred(OtherService),
        Some(&serde_json::from_str(REGISTER).unwrap()),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        r.body["error"],
        format!(
            "token {other_accessor:?} lacks service:write on \"payments\" \
             (no rule grants it; the default is deny)"
        ),
    );
    let r = call(
        &w.s.http,
        Method::GET,
        &w.url("/v1/acl/tokens"),
        &cred(Read),
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    let text = r.body["error"].as_str().unwrap();
    assert!(
        text.ends_with("lacks acl:read (no rule grants it; the default is deny)"),
        "{text}"
    );
    let r = call(
        &w.s.http,
        Method::GET,
        &w.url("/v1/services/payments"),
        &Cred::None,
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .starts_with("the anonymous token (no credential was sent) lacks service:read"),
        "{r:?}"
    );
}

/// Listings are filtered, not refused: each caller sees what it may read.
#[tokio::test]
async fn listings_show_each_caller_only_the_services_it_may_read() {
    let w = World::start().await;
    let names = |body: &Value| -> Vec<String> {
        body["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    let servers =
        |body: &Value| -> Vec<String> { body.as_object().unwrap().keys().cloned().collect() };
    #[rustfmt::skip]
    let table: &[(Col, &[&str])] = &[
        (Anonymous,       &[]),
        (Read,            &["orders", "payments"]),
        (OtherService,    &["orders"]),
        (Prefix,          &["payments"]),
        // A service identity reads every service, but under the default
        // policy deny no intention lets payments discover orders.
        (ServiceIdentity, &["payments"]),
        (Management,      &["orders", "payments"]),
        (JwtService,      &["payments"]),
        (SignedIn,        &["orders", "payments"]),
    ];
    for (col, want) in table {
        let cred = &w.creds.iter().find(|(k, _)| k == col).unwrap().1;
        let r = call(&w.s.http, Method::GET, &w.url("/v1/services"), cred, None).await;
        assert_eq!(
            (r.status, names(&r.body)),
            (200, want.iter().map(|s| s.to_string()).collect()),
            "{col:?}"
        );
        if *col != Anonymous {
            let r = call(
                &w.s.http,
                Method::GET,
                &w.url("/api/maxine/serviceops/servers"),
                cred,
                None,
            )
            .await;
            assert_eq!(
                (r.status, servers(&r.body)),
                (200, want.iter().map(|s| s.to_string()).collect()),
                "{col:?}"
            );
        }
    }
}
