//! Instance quotas: a token's `max_instances` bounds how many instances
//! requests with it may hold (429 beyond, naming the limit), and the
//! anonymous token's quota bounds requests without a credential.

mod common;

use common::TestServer;
use common::acl::{Cred, call, create_token, put_policy};
use common::api::Reply;
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN_SECRET: &str = "quota-management-secret-0123456789abcdef";

async fn start() -> (TestServer, Cred) {
    let s = TestServer::start_with(|f| {
        f.acl.default_policy = Some("deny".into());
        f.acl.bootstrap_token = Some(ADMIN_SECRET.into());
    })
    .await;
    (s, Cred::Bearer(ADMIN_SECRET.into()))
}

fn instance(address: &str) -> Value {
    json!({"address": address, "port": 80, "ttl": "1h"})
}

async fn register(s: &TestServer, cred: &Cred, service: &str, id: &str, address: &str) -> Reply {
    let url = format!("{}/v1/services/{service}/instances/{id}", s.http_base());
    call(&s.http, Method::PUT, &url, cred, Some(&instance(address))).await
}

async fn deregister(s: &TestServer, cred: &Cred, service: &str, id: &str) -> Reply {
    let url = format!("{}/v1/services/{service}/instances/{id}", s.http_base());
    call(&s.http, Method::DELETE, &url, cred, None).await
}

/// The index, the instances and the ACL objects: what a 429 must not change.
fn state(s: &TestServer) -> (u64, String, String) {
    let (index, services) = s.registry.snapshot();
    (
        index,
        format!("{services:?}"),
        format!("{:?}", s.registry.acl_objects()),
    )
}

fn assert_quota(r: &Reply, holder: &str, limit: u32) {
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.body["kind"], "quota_exceeded", "{r:?}");
    let text = r.body["error"].as_str().unwrap();
    assert!(
        text.contains(&format!("{holder:?} may hold at most {limit} instances"))
            && text.contains("max_instances"),
        "{text}"
    );
}

#[tokio::test]
async fn a_token_holds_at_most_max_instances_and_deregistering_frees_a_place() {
    let (s, admin) = start().await;
    // Instances of others do not count against the token.
    for id in ["a1", "a2", "a3"] {
        assert_eq!(
            register(&s, &admin, "payments", id, "10.0.0.1")
                .await
                .status,
            200
        );
    }
    let (accessor, secret) = create_token(
        &s.http,
        &s.http_base(),
        &admin,
        json!({"service": "payments", "max_instances": 2}),
    )
    .await;
    let q = Cred::Bearer(secret);
    assert_eq!(
        register(&s, &q, "payments", "q1", "10.0.1.1").await.status,
        200
    );
    assert_eq!(
        register(&s, &q, "payments", "q2", "10.0.1.2").await.status,
        200
    );

    let before = state(&s);
    let r = register(&s, &q, "payments", "q3", "10.0.1.3").await;
    assert_quota(&r, &accessor, 2);
    // Taking over someone else's instance is one more, too.
    let r = register(&s, &q, "payments", "a1", "10.0.1.9").await;
    assert_quota(&r, &accessor, 2);
    // The Maxine-compatible registration is bound by the same quota.
    let url = format!("{}/api/maxine/serviceops/register", s.http_base());
    let body =
        json!({"hostName": "10.0.1.4", "nodeName": "q4", "serviceName": "payments", "port": 80});
    let r = call(&s.http, Method::POST, &url, &q, Some(&body)).await;
    assert_eq!(r.status, 429, "{r:?}");
    let message = r.body["message"].as_str().unwrap();
    assert!(message.contains("at most 2 instances"), "{message}");
    assert_eq!(
        state(&s),
        before,
        "refused registrations changed the registry"
    );

    // Replacing one of its own is no more than before.
    let r = register(&s, &q, "payments", "q1", "10.0.1.11").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["address"], "10.0.1.11", "{r:?}");

    // Deregistering frees a place, whoever deregisters.
    assert_eq!(deregister(&s, &admin, "payments", "q2").await.status, 200);
    assert_eq!(
        register(&s, &q, "payments", "q3", "10.0.1.3").await.status,
        200
    );
    assert_quota(
        &register(&s, &q, "payments", "q4", "10.0.1.4").await,
        &accessor,
        2,
    );
    assert_eq!(deregister(&s, &q, "payments", "q1").await.status, 200);
    assert_eq!(
        register(&s, &q, "payments", "q4", "10.0.1.4").await.status,
        200
    );
    assert_eq!(s.registry.holdings(Some(&accessor)), 2);
}

#[tokio::test]
async fn the_anonymous_tokens_quota_applies_to_requests_without_a_credential() {
    let (s, admin) = start().await;
    let base = s.http_base();
    put_policy(
        &s.http,
        &base,
        &admin,
        "writers",
        json!({"service_prefix": {"": "write"}}),
    )
    .await;
    let url = format!("{base}/v1/acl/tokens/anonymous");
    let body = json!({"policies": ["writers"], "max_instances": 1});
    let r = call(&s.http, Method::PUT, &url, &admin, Some(&body)).await;
    assert_eq!(
        (r.status, &r.body["max_instances"]),
        (200, &json!(1)),
        "{r:?}"
    );

    assert_eq!(
        register(&s, &Cred::None, "web", "w1", "10.0.2.1")
            .await
            .status,
        200
    );
    let before = state(&s);
    assert_quota(
        &register(&s, &Cred::None, "web", "w2", "10.0.2.2").await,
        "anonymous",
        1,
    );
    assert_eq!(state(&s), before);
    // A credential has its own quota (none here).
    assert_eq!(
        register(&s, &admin, "web", "w2", "10.0.2.2").await.status,
        200
    );
    // The anonymous requests' instance is replaced, then removed: a place again.
    assert_eq!(
        register(&s, &Cred::None, "web", "w1", "10.0.2.9")
            .await
            .status,
        200
    );
    assert_eq!(deregister(&s, &Cred::None, "web", "w1").await.status, 200);
    assert_eq!(
        register(&s, &Cred::None, "web", "w3", "10.0.2.3")
            .await
            .status,
        200
    );
    assert_eq!(
        s.registry.holdings(None),
        1,
        "requests without a token hold one"
    );
}
