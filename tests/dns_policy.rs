//! Who may find whom on DNS: intentions, read rules and DNS client
//! networks decide each answer by who asks (docs/security.md). Queries
//! are sent from chosen 127.0.0.x source addresses, as the instances
//! registered at those addresses would send them.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::TestServer;
use common::acl::{Cred, call};
use common::api::{delete, get, put};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use reqwest::Method;
use serde_json::{Value, json};

const WEB: &str = "127.0.0.21";
const API: &str = "127.0.0.22";
const DB: &str = "127.0.0.23";
/// No instance is registered here.
const STRANGER: &str = "127.0.0.99";
const ADMIN_SECRET: &str = "policy-tests-admin-secret-0123456789abcdef";

/// One UDP question from `from`, with or without EDNS; the raw reply.
async fn raw_from(
    s: &TestServer,
    from: &str,
    name: &str,
    rtype: RecordType,
    edns: bool,
) -> Vec<u8> {
    let q = common::query(name, rtype, edns.then_some((1232, 0)));
    common::udp_from(s.dns_addr, from, &q).await
}

async fn ask_from(s: &TestServer, from: &str, name: &str, rtype: RecordType) -> Message {
    Message::from_vec(&raw_from(s, from, name, rtype, false).await).expect("a well-formed reply")
}

/// The same question over TCP from `from`.
async fn ask_tcp_from(s: &TestServer, from: &str, name: &str, rtype: RecordType) -> Message {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let mut c = sock.connect(s.dns_addr).await.unwrap();
    let q = common::query(name, rtype, None);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend(&q);
    c.write_all(&framed).await.unwrap();
    let len = c.read_u16().await.unwrap() as usize;
    let mut buf = vec![0; len];
    c.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

fn rcode(m: &Message) -> ResponseCode {
    m.metadata.response_code
}

/// Whether `from` gets `db`'s A and SRV answers (true), or is refused
/// both (false); anything else fails the test.
async fn finds_db(s: &TestServer, from: &str) -> bool {
    let a = ask_from(s, from, "db.maxine.", RecordType::A).await;
    let srv = ask_from(s, from, "_db._tcp.maxine.", RecordType::SRV).await;
    match (rcode(&a), rcode(&srv)) {
        (ResponseCode::NoError, ResponseCode::NoError) => {
            assert_eq!(
                common::lines(&a.answers),
                vec![format!("db.maxine. 5 IN A {DB}")]
            );
            assert_eq!(srv.answers.len(), 1, "{srv:?}");
            true
        }
        (ResponseCode::Refused, ResponseCode::Refused) => {
            assert!(a.answers.is_empty() && srv.answers.is_empty());
            false
        }
        other => panic!("A and SRV of db from {from} disagree: {other:?}"),
    }
}

async fn put_intention(
    s: &TestServer,
    cred: &Cred,
    source: &str,
    dest: &str,
    body: Value,
) -> common::api::Reply {
    call(
        &s.http,
        Method::PUT,
        &format!("{}/v1/intentions/{source}/{dest}", s.http_base()),
        cred,
        Some(&body),
    )
    .await
}

async fn register_three(s: &TestServer) {
    s.register("web", "web-1", json!({"address": WEB, "port": 80}))
        .await;
    s.register("api", "api-1", json!({"address": API, "port": 80}))
        .await;
    s.register("db", "db-1", json!({"address": DB, "port": 5432}))
        .await;
}

#[tokio::test]
async fn an_instance_of_web_is_refused_db_while_an_instance_of_api_finds_it() {
    let s = TestServer::start().await;
    register_three(&s).await;
    // Policy off: everyone finds everything.
    for from in [WEB, API, STRANGER] {
        assert!(finds_db(&s, from).await, "{from} before any intention");
    }
    let r = put_intention(
        &s,
        &Cred::None,
        "web",
        "db",
        json!({"action": "deny", "description": "web talks to api only"}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["action"], "deny");
    // The very next query follows the acknowledged change.
    assert!(!finds_db(&s, WEB).await);
    assert!(finds_db(&s, API).await);
    assert!(
        finds_db(&s, STRANGER).await,
        "no identity: intentions do not apply"
    );
    // Over TCP too.
    let tcp = ask_tcp_from(&s, WEB, "db.maxine.", RecordType::A).await;
    assert_eq!(rcode(&tcp), ResponseCode::Refused);
    // Its own service and the rest of the zone stay answered.
    let own = ask_from(&s, WEB, "web.maxine.", RecordType::A).await;
    assert_eq!(
        common::lines(&own.answers),
        vec![format!("web.maxine. 5 IN A {WEB}")]
    );
    let soa = ask_from(&s, WEB, "maxine.", RecordType::SOA).await;
    assert_eq!(rcode(&soa), ResponseCode::NoError);
    assert_eq!(soa.answers.len(), 1);
    // Names below the service (the instance name) are refused as well.
    let inst = ask_from(&s, WEB, "db-1.db.dc1.maxine.", RecordType::A).await;
    assert_eq!(rcode(&inst), ResponseCode::Refused);
    // Flipping the intention changes the very next answer, both ways.
    let r = put_intention(&s, &Cred::None, "web", "db", json!({"action": "allow"})).await;
    assert_eq!(r.status, 200);
    assert!(finds_db(&s, WEB).await);
    let r = put_intention(&s, &Cred::None, "web", "db", json!({"action": "deny"})).await;
    assert_eq!(r.status, 200);
    assert!(!finds_db(&s, WEB).await);
    let r = delete(&s, "/v1/intentions/web/db").await;
    assert_eq!(r.status, 200);
    assert!(finds_db(&s, WEB).await);
    // An instance that leaves takes its identity with it.
    let r = put_intention(&s, &Cred::None, "web", "db", json!({"action": "deny"})).await;
    assert_eq!(r.status, 200);
    let r = delete(&s, "/v1/services/web/instances/web-1").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(finds_db(&s, WEB).await, "no longer an instance of web");
    s.stop().await;
}

#[tokio::test]
async fn the_most_specific_intention_decides_on_dns() {
    let s = TestServer::start().await;
    register_three(&s).await;
    let set = |src: &'static str, action: &'static str| {
        let s = &s;
        async move {
            let r = put_intention(s, &Cred::None, src, "db", json!({ "action": action })).await;
            assert_eq!(r.status, 200, "{:?}", r.body);
        }
    };
    set("*", "deny").await; // */db deny
    assert!(!finds_db(&s, WEB).await && !finds_db(&s, API).await);
    set("api", "allow").await; // api/db allow beats */db
    assert!(!finds_db(&s, WEB).await && finds_db(&s, API).await);
    // web/* allow is less specific than... nothing for web -> db but */db: it wins.
    let r = put_intention(&s, &Cred::None, "web", "*", json!({"action": "allow"})).await;
    assert_eq!(r.status, 200);
    assert!(finds_db(&s, WEB).await, "web/* beats */db");
    let list = get(&s, "/v1/intentions").await;
    assert_eq!(list.status, 200);
    let pairs: Vec<(String, String)> = list.body["intentions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["source"].as_str().unwrap().into(),
                i["destination"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        vec![
            ("*".to_string(), "db".to_string()),
            ("api".into(), "db".into()),
            ("web".into(), "*".into())
        ]
    );
    let one = get(&s, "/v1/intentions/*/db").await;
    assert_eq!(
        (one.status, one.body["action"].as_str()),
        (200, Some("deny"))
    );
    s.stop().await;
}

/// The Python interpreter with dnspython: the test venv if there is one.
fn test_python() -> std::path::PathBuf {
    let venv =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

#[tokio::test]
async fn a_refusal_is_refused_with_extended_error_18_that_dnspython_reads() {
    let s = TestServer::start().await;
    register_three(&s).await;
    assert_eq!(
        put_intention(&s, &Cred::None, "web", "db", json!({"action": "deny"}))
            .await
            .status,
        200
    );
    let with_edns = raw_from(&s, WEB, "db.maxine.", RecordType::A, true).await;
    let m = Message::from_vec(&with_edns).unwrap();
    assert_eq!(rcode(&m), ResponseCode::Refused);
    assert!(
        !m.metadata.authoritative,
        "a refusal is no authoritative answer"
    );
    let script = r#"
import sys, dns.message, dns.rcode, dns.edns
m = dns.message.from_wire(bytes.fromhex(sys.argv[1]))
codes = [int(o.code) for o in m.options if o.otype == dns.edns.OptionType.EDE]
texts = [o.text for o in m.options if o.otype == dns.edns.OptionType.EDE]
print(dns.rcode.to_text(m.rcode()), codes, texts, m.question[0].name)
"#;
    let hex: String = with_edns.iter().map(|b| format!("{b:02x}")).collect();
    let out = std::process::Command::new(test_python())
        .args(["-c", script, &hex])
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dnspython failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.trim(),
        "REFUSED [18] ['not allowed by policy'] db.maxine."
    );
    // Without EDNS: REFUSED, and no OPT record to carry an EDE in.
    let plain =
        Message::from_vec(&raw_from(&s, WEB, "db.maxine.", RecordType::A, false).await).unwrap();
    assert_eq!(rcode(&plain), ResponseCode::Refused);
    assert!(plain.additionals.is_empty() && plain.edns.is_none());
    s.stop().await;
}

#[tokio::test]
async fn intention_inputs_are_checked_with_clear_400s() {
    let s = TestServer::start().await;
    let long = "x".repeat(600);
    for (src, dst, body, says) in [
        ("web", "db", json!({"action": "maybe"}), "neither"),
        ("web", "db", json!({}), "action"),
        ("web", "db", json!({"action": "allow", "extra": 1}), "extra"),
        (
            "web",
            "db",
            json!({"action": "allow", "description": long}),
            "description",
        ),
        ("we_b", "db", json!({"action": "allow"}), "source"),
        ("web", "**", json!({"action": "allow"}), "destination"),
    ] {
        let r = put_intention(&s, &Cred::None, src, dst, body).await;
        assert_eq!(r.status, 400, "{src}/{dst}: {:?}", r.body);
        assert!(
            r.body.to_string().contains(says),
            "{src}/{dst}: {:?} lacks {says}",
            r.body
        );
    }
    let missing = delete(&s, "/v1/intentions/web/db").await;
    assert_eq!(missing.status, 404);
    let bad_net = put(
        &s,
        "/v1/acl/dns-clients/office",
        json!({"cidrs": ["10.0.0.1/8"], "policies": []}),
    )
    .await;
    assert_eq!(bad_net.status, 400, "{:?}", bad_net.body);
    let no_policy = put(
        &s,
        "/v1/acl/dns-clients/office",
        json!({"cidrs": ["10.0.0.0/8"], "policies": ["nope"]}),
    )
    .await;
    assert_eq!(no_policy.status, 400, "{:?}", no_policy.body);
    s.stop().await;
}

/// With the default policy deny: anonymous askers see the zone's static
/// records only, a client network sees what its policies let it read, and
/// an instance sees what intentions allow (their default is the ACL's).
/// All of it survives a restart.
#[tokio::test]
async fn with_default_deny_only_declared_askers_see_services_and_it_survives_a_restart() {
    let s = TestServer::start_with(|f| {
        f.acl.default_policy = Some("deny".into());
        f.acl.bootstrap_token = Some(ADMIN_SECRET.into());
    })
    .await;
    let admin = Cred::Bearer(ADMIN_SECRET.into());
    for (svc, id, addr) in [("web", "web-1", WEB), ("db", "db-1", DB)] {
        let r = call(
            &s.http,
            Method::PUT,
            &format!("{}/v1/services/{svc}/instances/{id}", s.http_base()),
            &admin,
            Some(&json!({"address": addr, "port": 80})),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    // Anonymous: refused the service, answered the zone's own data.
    assert!(!finds_db(&s, STRANGER).await);
    let soa = ask_from(&s, STRANGER, "maxine.", RecordType::SOA).await;
    assert_eq!((rcode(&soa), soa.answers.len()), (ResponseCode::NoError, 1));
    // web: intentions default to deny.
    assert!(!finds_db(&s, WEB).await);
    // An anonymous writer may not declare intentions.
    let r = put_intention(&s, &Cred::None, "web", "db", json!({"action": "allow"})).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = put_intention(&s, &admin, "web", "db", json!({"action": "allow"})).await;
    assert_eq!(r.status, 200);
    assert!(finds_db(&s, WEB).await);
    // A client network with the viewer policy reads every service.
    let r = call(
        &s.http,
        Method::PUT,
        &format!("{}/v1/acl/dns-clients/ops", s.http_base()),
        &admin,
        Some(&json!({"cidrs": ["127.0.0.128/26"], "policies": ["viewer"]})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(finds_db(&s, "127.0.0.130").await);
    assert!(
        !finds_db(&s, STRANGER).await,
        "127.0.0.99 is outside 127.0.0.128/26"
    );
    let listed = call(
        &s.http,
        Method::GET,
        &format!("{}/v1/acl/dns-clients", s.http_base()),
        &admin,
        None,
    )
    .await;
    assert_eq!(
        listed.body["dns_clients"][0]["cidrs"],
        json!(["127.0.0.128/26"])
    );
    // Audited like every ACL change, the refused write too.
    let audit = call(
        &s.http,
        Method::GET,
        &format!("{}/v1/audit?limit=1000", s.http_base()),
        &admin,
        None,
    )
    .await;
    assert_eq!(audit.status, 200, "{:?}", audit.body);
    let records = audit.body["records"].as_array().unwrap();
    let about = |resource: &str| {
        records
            .iter()
            .filter(|r| r["resource"] == resource)
            .map(|r| r["outcome"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert!(!about("intention:web->db").is_empty(), "{records:?}");
    assert!(!about("dns-client:ops").is_empty(), "{records:?}");
    // Durable: the same after a restart.
    let s = s.restart().await;
    assert!(finds_db(&s, WEB).await);
    assert!(finds_db(&s, "127.0.0.130").await);
    assert!(!finds_db(&s, STRANGER).await);
    // Removing the network takes its askers back to anonymous.
    let r = call(
        &s.http,
        Method::DELETE,
        &format!("{}/v1/acl/dns-clients/ops", s.http_base()),
        &admin,
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!finds_db(&s, "127.0.0.130").await);
    s.stop().await;
}

/// The HTTP discovery routes decide as DNS does: a caller without a
/// credential has the identity of the instances at its address, a token
/// its service identity; other credentials read by their policies alone.
#[tokio::test]
async fn the_http_discovery_routes_apply_the_intentions_too() {
    let s = TestServer::start().await;
    register_three(&s).await;
    let from = |addr: &str| {
        reqwest::Client::builder()
            .local_address(addr.parse::<IpAddr>().unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    };
    let (web, api, stranger) = (from(WEB), from(API), from(STRANGER));
    let base = s.http_base();
    let get = |c: &reqwest::Client, path: &str, cred: &Cred| {
        let (c, url, cred) = (c.clone(), format!("{base}{path}"), cred.clone());
        async move { call(&c, Method::GET, &url, &cred, None).await }
    };
    let discover = "/api/maxine/serviceops/discover?serviceName=db";
    let listed = |body: &Value| -> Vec<String> {
        body["services"]
            .as_array()
            .expect("services")
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    // Before any intention web finds db on every route.
    assert_eq!(get(&web, "/v1/services/db", &Cred::None).await.status, 200);
    assert_eq!(get(&web, discover, &Cred::None).await.status, 302);
    let r = put_intention(&s, &Cred::None, "web", "db", json!({"action": "deny"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The next request follows it: web is refused, naming the intention.
    let r = get(&web, "/v1/services/db", &Cred::None).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let why = r.body.to_string();
    assert!(why.contains("web") && why.contains("db"), "{why}");
    assert_eq!(get(&web, discover, &Cred::None).await.status, 403);
    let all = get(&web, "/v1/services", &Cred::None).await;
    assert_eq!(listed(&all.body), ["api", "web"], "db is left out");
    // Its own service, api, and askers without an identity are answered.
    assert_eq!(get(&web, "/v1/services/web", &Cred::None).await.status, 200);
    assert_eq!(get(&api, "/v1/services/db", &Cred::None).await.status, 200);
    assert_eq!(get(&api, discover, &Cred::None).await.status, 302);
    assert_eq!(
        get(&stranger, "/v1/services/db", &Cred::None).await.status,
        200
    );
    let all = get(&stranger, "/v1/services", &Cred::None).await;
    assert_eq!(listed(&all.body), ["api", "db", "web"]);
    // A token's service identity decides wherever it is used from.
    let token = |service: &str| {
        let (http, url) = (s.http.clone(), format!("{base}/v1/acl/tokens"));
        let body = json!({ "service": service });
        async move {
            let r = call(&http, Method::POST, &url, &Cred::None, Some(&body)).await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            Cred::Bearer(r.body["secret"].as_str().expect("a secret").into())
        }
    };
    let (as_web, as_api) = (token("web").await, token("api").await);
    assert_eq!(get(&stranger, "/v1/services/db", &as_web).await.status, 403);
    assert_eq!(get(&stranger, discover, &as_web).await.status, 403);
    assert_eq!(get(&web, "/v1/services/db", &as_api).await.status, 200);
    // Allowing it again opens every route at once.
    let r = put_intention(&s, &Cred::None, "web", "db", json!({"action": "allow"})).await;
    assert_eq!(r.status, 200);
    assert_eq!(get(&web, "/v1/services/db", &Cred::None).await.status, 200);
    assert_eq!(get(&web, discover, &Cred::None).await.status, 302);
    assert_eq!(get(&stranger, discover, &as_web).await.status, 302);
    s.stop().await;
}
