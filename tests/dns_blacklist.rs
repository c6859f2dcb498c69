//! Blacklists: a listed service or instance cannot register and is gone
//! from every DNS and API answer as soon as the entry is acknowledged; a
//! listed network cannot register and is refused every DNS query
//! (docs/security.md "Blacklists"). Queries are sent from chosen
//! 127.0.0.x source addresses.

mod common;

use std::time::Duration;

use common::TestServer;
use common::acl::{Cred, call};
use common::api::get;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use reqwest::Method;
use serde_json::{Value, json};

const WEB1: &str = "127.0.0.41";
const WEB2: &str = "127.0.0.42";
const DB: &str = "127.0.0.43";
/// In the blacklisted network 127.0.0.96/30.
const BAD: &str = "127.0.0.97";
/// Outside it.
const GOOD: &str = "127.0.0.100";

/// One UDP question (with EDNS) from `from`; the raw reply.
async fn raw_from(s: &TestServer, from: &str, name: &str, rtype: RecordType) -> Vec<u8> {
    let q = common::query(name, rtype, Some((1232, 0)));
    common::udp_from(s.dns_addr, from, &q).await
}

async fn ask_from(s: &TestServer, from: &str, name: &str, rtype: RecordType) -> Message {
    Message::from_vec(&raw_from(s, from, name, rtype).await).expect("a well-formed reply")
}

fn rcode(m: &Message) -> ResponseCode {
    m.metadata.response_code
}

async fn api(
    s: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> common::api::Reply {
    call(
        &s.http,
        method,
        &format!("{}{path}", s.http_base()),
        &Cred::None,
        body.as_ref(),
    )
    .await
}

async fn register(s: &TestServer, service: &str, id: &str, addr: &str) -> common::api::Reply {
    api(
        s,
        Method::PUT,
        &format!("/v1/services/{service}/instances/{id}"),
        Some(json!({"address": addr, "port": 80})),
    )
    .await
}

/// The A records of `name` (sorted), as seen from GOOD; empty on NXDOMAIN.
async fn a_of(s: &TestServer, name: &str) -> Vec<String> {
    let m = ask_from(s, GOOD, name, RecordType::A).await;
    assert!(
        matches!(rcode(&m), ResponseCode::NoError | ResponseCode::NXDomain),
        "{name}: {m:?}"
    );
    let mut l = common::lines(&m.answers);
    l.sort();
    l
}

#[tokio::test]
async fn a_blacklisted_instance_cannot_register_and_is_gone_from_dns_at_once() {
    let s = TestServer::start().await;
    assert_eq!(register(&s, "web", "web-1", WEB1).await.status, 200);
    assert_eq!(register(&s, "web", "web-2", WEB2).await.status, 200);
    assert_eq!(a_of(&s, "web.maxine.").await.len(), 2);

    let r = api(
        &s,
        Method::PUT,
        "/v1/blacklist/instances/web/web-1",
        Some(json!({"reason": "compromised host", "ttl": "10m"})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["kind"], "instance");
    assert_eq!(r.body["id"], "web-1");
    assert!(r.body["expires_at"].is_string(), "{:?}", r.body);
    // At once: A, SRV and the instance's own name.
    assert_eq!(
        a_of(&s, "web.maxine.").await,
        vec![format!("web.maxine. 5 IN A {WEB2}")]
    );
    let srv = ask_from(&s, GOOD, "_web._tcp.maxine.", RecordType::SRV).await;
    assert_eq!(srv.answers.len(), 1, "{srv:?}");
    let own = ask_from(&s, GOOD, "web-1.web.dc1.maxine.", RecordType::A).await;
    assert_eq!(rcode(&own), ResponseCode::NXDomain, "{own:?}");
    assert_eq!(a_of(&s, "web-2.web.dc1.maxine.").await.len(), 1);
    // And from the API.
    let list = api(&s, Method::GET, "/v1/services/web", None).await;
    assert!(!list.body.to_string().contains("web-1"), "{:?}", list.body);

    // Registering again is refused, naming the entry and its reason.
    let r = register(&s, "web", "web-1", WEB1).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let text = r.body.to_string();
    assert!(
        text.contains("instance web/web-1") && text.contains("compromised host"),
        "{text}"
    );
    // On the Maxine-compatible route too (its heartbeat is a registration).
    let r = api(
        &s,
        Method::POST,
        "/api/maxine/serviceops/register",
        Some(json!({"hostName": WEB1, "nodeName": "web-1", "serviceName": "web", "port": 80})),
    )
    .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert!(
        r.body.to_string().contains("compromised host"),
        "{:?}",
        r.body
    );
    // Other instances still register.
    assert_eq!(register(&s, "web", "web-3", WEB1).await.status, 200);

    // The list shows the entry and its expiry.
    let r = api(&s, Method::GET, "/v1/blacklist", None).await;
    assert_eq!(r.status, 200);
    let entries = r.body["blacklist"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{:?}", r.body);
    let left = entries[0]["expires_in_seconds"].as_u64().unwrap();
    assert!((1..=600).contains(&left), "{left}");
    assert_eq!(entries[0]["reason"], "compromised host");

    // Lifting the entry lets it register again.
    let r = api(
        &s,
        Method::DELETE,
        "/v1/blacklist/instances/web/web-1",
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(register(&s, "web", "web-1", WEB1).await.status, 200);
    let r = api(
        &s,
        Method::DELETE,
        "/v1/blacklist/instances/web/web-1",
        None,
    )
    .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    s.stop().await;
}

#[tokio::test]
async fn a_blacklisted_service_is_gone_from_dns_and_the_api() {
    let s = TestServer::start().await;
    assert_eq!(register(&s, "db", "db-1", DB).await.status, 200);
    assert_eq!(register(&s, "web", "web-1", WEB1).await.status, 200);
    assert_eq!(a_of(&s, "db.maxine.").await.len(), 1);
    let r = api(
        &s,
        Method::PUT,
        "/v1/blacklist/services/db",
        Some(json!({"reason": "decommissioned"})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["expires_at"].is_null());
    assert!(a_of(&s, "db.maxine.").await.is_empty());
    assert!(a_of(&s, "db-1.db.dc1.maxine.").await.is_empty());
    let srv = ask_from(&s, GOOD, "_db._tcp.maxine.", RecordType::SRV).await;
    assert!(srv.answers.is_empty(), "{srv:?}");
    assert_eq!(
        a_of(&s, "web.maxine.").await.len(),
        1,
        "other services stay"
    );
    let list = api(&s, Method::GET, "/v1/services", None).await;
    assert!(!list.body.to_string().contains("db-1"), "{:?}", list.body);
    let found = api(
        &s,
        Method::GET,
        "/api/maxine/serviceops/discover?serviceName=db",
        None,
    )
    .await;
    assert_ne!(found.status, 200, "{:?}", found.body);
    let r = register(&s, "db", "db-2", DB).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert!(r.body.to_string().contains("decommissioned"));
    // Lifting it: registrations (heartbeats that re-register) bring it back.
    let r = api(&s, Method::DELETE, "/v1/blacklist/services/db", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(register(&s, "db", "db-1", DB).await.status, 200);
    assert_eq!(a_of(&s, "db.maxine.").await.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_blacklisted_network_is_refused_queries_and_registrations() {
    let s = TestServer::start().await;
    assert_eq!(register(&s, "web", "web-1", WEB1).await.status, 200);
    // Host bits set, nonsense, unknown fields, a long reason: 400.
    for (path, body) in [
        (
            "/v1/blacklist/cidrs/127.0.0.97%2F30",
            json!({"reason": "x"}),
        ),
        ("/v1/blacklist/cidrs/127.0.0.97-30", json!({"reason": "x"})),
        ("/v1/blacklist/cidrs/nonsense", json!({"reason": "x"})),
        ("/v1/blacklist/cidrs/127.0.0.96-33", json!({"reason": "x"})),
        (
            "/v1/blacklist/cidrs/127.0.0.96-30",
            json!({"reason": "x", "extra": 1}),
        ),
        (
            "/v1/blacklist/cidrs/127.0.0.96-30",
            json!({"reason": "x", "ttl": "soon"}),
        ),
        (
            "/v1/blacklist/cidrs/127.0.0.96-30",
            json!({"reason": "x", "ttl": "0s"}),
        ),
        (
            "/v1/blacklist/cidrs/127.0.0.96-30",
            json!({"reason": "y".repeat(513)}),
        ),
        ("/v1/blacklist/cidrs/127.0.0.96-30", json!({"ttl": "1m"})),
        (
            "/v1/blacklist/services/not%20a%20name",
            json!({"reason": "x"}),
        ),
    ] {
        let r = api(&s, Method::PUT, path, Some(body)).await;
        assert_eq!(r.status, 400, "{path}: {:?}", r.body);
    }
    let before = ask_from(&s, BAD, "web.maxine.", RecordType::A).await;
    assert_eq!(rcode(&before), ResponseCode::NoError);

    let r = api(
        &s,
        Method::PUT,
        "/v1/blacklist/cidrs/127.0.0.96%2F30",
        Some(json!({"reason": "scanning"})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["cidr"], "127.0.0.96/30");
    // Every question from the network is refused, with EDE 18.
    for (name, rtype) in [
        ("web.maxine.", RecordType::A),
        ("_web._tcp.maxine.", RecordType::SRV),
        ("maxine.", RecordType::SOA),
    ] {
        let raw = raw_from(&s, BAD, name, rtype).await;
        let m = Message::from_vec(&raw).unwrap();
        assert_eq!(rcode(&m), ResponseCode::Refused, "{name}");
        assert!(m.answers.is_empty());
        let ede = [0x00u8, 0x0f];
        assert!(
            raw.windows(2).any(|w| w == ede)
                && raw
                    .windows(29)
                    .any(|w| w == b"source network is blacklisted"),
            "no EDE 18 in {raw:?}"
        );
    }
    // Another source is answered.
    assert_eq!(a_of(&s, "web.maxine.").await.len(), 1);
    // Registrations from the network are refused.
    let r = register(&s, "web", "web-9", "127.0.0.98").await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert!(r.body.to_string().contains("scanning"), "{:?}", r.body);
    // The other form of the path names the same entry.
    let r = api(
        &s,
        Method::DELETE,
        "/v1/blacklist/cidrs/127.0.0.96-30",
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let after = ask_from(&s, BAD, "web.maxine.", RecordType::A).await;
    assert_eq!(rcode(&after), ResponseCode::NoError);
    assert_eq!(register(&s, "web", "web-9", "127.0.0.98").await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn entries_survive_a_restart_and_lift_themselves_when_they_expire() {
    let s = TestServer::start().await;
    for (path, body) in [
        ("/v1/blacklist/services/db", json!({"reason": "kept"})),
        (
            "/v1/blacklist/instances/web/web-1",
            json!({"reason": "for a while", "ttl": "3s"}),
        ),
        (
            "/v1/blacklist/cidrs/127.0.0.96-30",
            json!({"reason": "briefly", "ttl": "1s"}),
        ),
    ] {
        let r = api(&s, Method::PUT, path, Some(body)).await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
    }
    // Down for longer than the network's ttl: lifted at start.
    let (config, dir) = s.stop_keeping_data().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = TestServer::start_config(config, dir).await;
    assert_eq!(register(&s, "db", "db-1", DB).await.status, 403, "kept");
    assert_eventually!(
        rcode(&ask_from(&s, BAD, "maxine.", RecordType::SOA).await) == ResponseCode::NoError,
        "the expired network is lifted after the restart"
    );
    // The instance's entry lifts itself within its ttl (and a second).
    let r = register(&s, "web", "web-1", WEB1).await;
    assert!(
        r.status == 403 || r.status == 200,
        "{}: {:?}",
        r.status,
        r.body
    );
    assert_eventually!(
        register(&s, "web", "web-1", WEB1).await.status == 200,
        "the instance's entry expires"
    );
    let r = api(&s, Method::GET, "/v1/blacklist", None).await;
    let entries = r.body["blacklist"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["service"], "db");
    // Lifting is audited as a change by the system: the journal has it,
    // so a second restart keeps the lifted entries lifted.
    let s = s.restart().await;
    let r = api(&s, Method::GET, "/v1/blacklist", None).await;
    assert_eq!(r.body["blacklist"].as_array().unwrap().len(), 1);
    assert_eq!(register(&s, "db", "db-1", DB).await.status, 403);
    s.stop().await;
}

const ADMIN_SECRET: &str = "blacklist-tests-admin-secret-0123456789abcdef";

/// Blacklist changes are audited: the operator's put and the lift at expiry.
#[tokio::test]
async fn blacklist_changes_are_audited_and_need_their_permission() {
    let s = TestServer::start_with(|f| {
        f.acl.default_policy = Some("deny".into());
        f.acl.bootstrap_token = Some(ADMIN_SECRET.into());
    })
    .await;
    let admin = Cred::Bearer(ADMIN_SECRET.into());
    let url = format!("{}/v1/blacklist/cidrs/127.0.0.96-30", s.http_base());
    let body = json!({"reason": "scanning", "ttl": "1s"});
    let r = call(&s.http, Method::PUT, &url, &Cred::None, Some(&body)).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = call(&s.http, Method::PUT, &url, &admin, Some(&body)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let listed = get(&s, "/v1/blacklist").await;
    assert_eq!(
        listed.body["blacklist"],
        json!([]),
        "acl:read to see networks"
    );
    let audit_about = || async {
        let audit = call(
            &s.http,
            Method::GET,
            &format!("{}/v1/audit?limit=1000", s.http_base()),
            &admin,
            None,
        )
        .await;
        assert_eq!(audit.status, 200, "{:?}", audit.body);
        audit.body["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["resource"] == "blacklist:cidr:127.0.0.96/30")
            .cloned()
            .collect::<Vec<_>>()
    };
    // The put by the operator's token, and the lift at expiry by Maxine.
    assert_eventually!(
        audit_about()
            .await
            .iter()
            .any(|r| r["action"] == "acl.delete" && r["actor"] == "system"),
        "the lift at expiry is audited: {:?}",
        audit_about().await
    );
    let records = audit_about().await;
    assert!(
        records.iter().any(|r| r["action"] == "acl.put"
            && r["actor"].as_str().unwrap_or("").starts_with("token:")
            && r["outcome"] == "ok"),
        "{records:?}"
    );
    s.stop().await;
}
