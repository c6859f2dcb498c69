//! Who is asking, beyond the source address (docs/security.md#who-is-asking):
//! the EDNS Client Subnet a trusted recursor forwards stands for the asker,
//! and the reply echoes it with the scope the answer depends on, so that
//! the recursor caches one answer per subnet; a real unbound with its
//! subnet cache shows it end to end.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::TestServer;
use common::acl::{Cred, call};
use common::client::{ClientProcess, program};
use common::process::free_port;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use reqwest::Method;
use serde_json::json;

const ADMIN_SECRET: &str = "identity-tests-admin-secret-0123456789abcdef";
/// The trusted recursor's address (`dns.trusted_recursors`).
const RECURSOR: &str = "127.0.0.53";
/// Another source, not trusted.
const UNTRUSTED: &str = "127.0.0.54";
/// In the client network `readers` (viewer: reads every service).
const READER: &str = "127.0.0.31";
/// In the client network `others` (no policies: reads nothing).
const OTHER: &str = "127.0.0.32";
const DB: &str = "127.0.0.23";

/// A server with the default policy deny, `RECURSOR` trusted, `db`
/// registered, and the two client networks.
async fn fixture() -> TestServer {
    fixture_with_ttl(None).await
}

/// [`fixture`] with this TTL for records and negative answers.
async fn fixture_with_ttl(ttl: Option<Duration>) -> TestServer {
    let s = TestServer::start_with(|f| {
        f.acl.default_policy = Some("deny".into());
        f.acl.bootstrap_token = Some(ADMIN_SECRET.into());
        f.dns.trusted_recursors = vec![format!("{RECURSOR}/32")];
        if let Some(ttl) = ttl {
            f.dns.ttl = maxine::config::DurationValue(ttl);
            f.dns.negative_ttl = Some(maxine::config::DurationValue(ttl));
        }
    })
    .await;
    let admin = Cred::Bearer(ADMIN_SECRET.into());
    let r = call(
        &s.http,
        Method::PUT,
        &format!("{}/v1/services/db/instances/db-1", s.http_base()),
        &admin,
        Some(&json!({"address": DB, "port": 5432})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    networks(&s, READER, OTHER).await;
    s
}

/// The client network `readers` (viewer) holds `reader`, `others` (no
/// policies) holds `other`.
async fn networks(s: &TestServer, reader: &str, other: &str) {
    let admin = Cred::Bearer(ADMIN_SECRET.into());
    for (name, addr, policies) in [
        ("readers", reader, json!(["viewer"])),
        ("others", other, json!([])),
    ] {
        let r = call(
            &s.http,
            Method::PUT,
            &format!("{}/v1/acl/dns-clients/{name}", s.http_base()),
            &admin,
            Some(&json!({"cidrs": [format!("{addr}/32")], "policies": policies})),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
}

/// A query with EDNS and, when given, a Client Subnet option of `family`,
/// `source` prefix and these address bytes (written as given, so that
/// malformed options can be sent too).
fn query_with_subnet(name: &str, subnet: Option<(u16, u8, &[u8])>) -> Vec<u8> {
    let mut q = common::query(name, RecordType::A, Some((1232, 0)));
    if let Some((family, source, addr)) = subnet {
        let mut opt = 8u16.to_be_bytes().to_vec();
        opt.extend(((4 + addr.len()) as u16).to_be_bytes());
        opt.extend(family.to_be_bytes());
        opt.extend([source, 0]);
        opt.extend(addr);
        let n = q.len();
        q[n - 2..].copy_from_slice(&(opt.len() as u16).to_be_bytes());
        q.extend(opt);
    }
    q
}

/// One UDP exchange from `from`; the raw reply.
async fn exchange(s: &TestServer, from: &str, q: &[u8]) -> Vec<u8> {
    common::udp_from(s.dns_addr, from, q).await
}

/// `db.maxine.` A from `from` with `subnet`: the rcode, the addresses and
/// the echoed Client Subnet (address, source, scope).
async fn ask_db(
    s: &TestServer,
    from: &str,
    subnet: Option<(u16, u8, &[u8])>,
) -> (ResponseCode, Vec<String>, Option<(IpAddr, u8, u8)>) {
    let raw = exchange(s, from, &query_with_subnet("db.maxine.", subnet)).await;
    let m = Message::from_vec(&raw).expect("a well-formed reply");
    let echo = m
        .edns
        .as_ref()
        .and_then(|e| match e.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(c)) => Some((c.addr(), c.source_prefix(), c.scope_prefix())),
            _ => None,
        });
    let addrs = m
        .answers
        .iter()
        .map(|r| r.data.to_string())
        .collect::<Vec<_>>();
    (m.metadata.response_code, addrs, echo)
}

fn v4(a: &str) -> [u8; 4] {
    a.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

#[tokio::test]
async fn a_trusted_recursors_client_subnet_decides_the_answer_and_its_scope() {
    let s = fixture().await;
    let ip = |a: &str| a.parse::<IpAddr>().unwrap();
    // The recursor itself is anonymous: refused (default deny).
    let (rc, _, echo) = ask_db(&s, RECURSOR, None).await;
    assert_eq!((rc, echo), (ResponseCode::Refused, None));
    // With the subnet of a reader (a whole address): answered, scope /32.
    let (rc, addrs, echo) = ask_db(&s, RECURSOR, Some((1, 32, &v4(READER)))).await;
    assert_eq!(rc, ResponseCode::NoError);
    assert_eq!(addrs, vec![DB.to_string()]);
    assert_eq!(echo, Some((ip(READER), 32, 32)));
    // With the subnet of the other network: no data for that subnet
    // (scope /32: not everyone's answer), the SOA for the negative TTL and
    // EDE 18 saying why. Not REFUSED, which a recursor throws away.
    let raw = exchange(
        &s,
        RECURSOR,
        &query_with_subnet("db.maxine.", Some((1, 32, &v4(OTHER)))),
    )
    .await;
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty(), "{m:?}");
    assert_eq!(m.authorities.len(), 1, "the SOA");
    let edns = m.edns.as_ref().expect("an OPT record");
    match edns.option(EdnsCode::Subnet) {
        Some(EdnsOption::Subnet(c)) => {
            assert_eq!(
                (c.addr(), c.source_prefix(), c.scope_prefix()),
                (ip(OTHER), 32, 32)
            )
        }
        other => panic!("no Client Subnet echo: {other:?}"),
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    // EDE (option 15), info code 18.
    assert!(hex.contains("000f00"), "no EDE in {hex}");
    assert!(hex.contains("0012"), "no info code 18 in {hex}");
    // A /24 that no client network holds whole: anonymous, scope /24.
    let (rc, addrs, echo) = ask_db(&s, RECURSOR, Some((1, 24, &[127, 0, 0]))).await;
    assert_eq!((rc, addrs.len()), (ResponseCode::NoError, 0));
    assert_eq!(echo, Some((ip("127.0.0.0"), 24, 24)));
    // A /0 subnet asks in the recursor's own name: anonymous, REFUSED.
    let (rc, _, echo) = ask_db(&s, RECURSOR, Some((1, 0, &[]))).await;
    assert_eq!(rc, ResponseCode::Refused);
    assert_eq!(echo, Some((ip("0.0.0.0"), 0, 0)));
    // The zone's own records do not depend on the subnet: scope 0.
    let raw = exchange(
        &s,
        RECURSOR,
        &query_with_subnet("maxine.", Some((1, 32, &v4(OTHER)))),
    )
    .await;
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    match m.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet)) {
        Some(EdnsOption::Subnet(c)) => assert_eq!(c.scope_prefix(), 0),
        other => panic!("no Client Subnet echo: {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn an_untrusted_sources_client_subnet_is_ignored() {
    let s = fixture().await;
    let ip = |a: &str| a.parse::<IpAddr>().unwrap();
    // From an untrusted source the reader's subnet does not count: the
    // source is anonymous, and the echo's scope 0 says the answer does
    // not depend on the subnet.
    let (rc, _, echo) = ask_db(&s, UNTRUSTED, Some((1, 32, &v4(READER)))).await;
    assert_eq!(rc, ResponseCode::Refused);
    assert_eq!(echo, Some((ip(READER), 32, 0)));
    // Nor does an other's subnet take a reader's answer away.
    let (rc, addrs, echo) = ask_db(&s, READER, Some((1, 32, &v4(OTHER)))).await;
    assert_eq!((rc, addrs), (ResponseCode::NoError, vec![DB.to_string()]));
    assert_eq!(echo, Some((ip(OTHER), 32, 0)));
    // Without the option, the source address as before.
    let (rc, _, echo) = ask_db(&s, READER, None).await;
    assert_eq!((rc, echo), (ResponseCode::NoError, None));
    s.stop().await;
}

#[tokio::test]
async fn a_malformed_client_subnet_is_formerr_from_any_source() {
    let s = fixture().await;
    for from in [RECURSOR, UNTRUSTED] {
        for (what, bad) in [
            ("family 3", (3u16, 8u8, &[1u8][..])),
            ("prefix 33", (1, 33, &[127, 0, 0, 1, 0][..])),
            ("bits beyond the prefix", (1, 20, &[127, 0, 0x1F][..])),
            ("address too short", (1, 24, &[127, 0][..])),
            ("IPv6 prefix 129", (2, 129, &[0xfd; 17][..])),
        ] {
            let raw = exchange(&s, from, &query_with_subnet("db.maxine.", Some(bad))).await;
            let m = Message::from_vec(&raw).expect("a well-formed FORMERR");
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::FormErr,
                "{what} from {from}"
            );
        }
    }
    // And the server still answers.
    let (rc, _, _) = ask_db(&s, READER, None).await;
    assert_eq!(rc, ResponseCode::NoError);
    s.stop().await;
}

/// unbound on a free loopback port with its subnet cache, sending
/// `maxine.` to Maxine from `RECURSOR` with each client's whole address as
/// the Client Subnet.
fn start_unbound(maxine: &TestServer) -> (ClientProcess, SocketAddr) {
    let bin = program("unbound", "unbound");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("unbound.conf");
    std::fs::write(
        &conf,
        format!(
            r#"server:
    interface: 127.0.0.1
    port: {port}
    outgoing-interface: {RECURSOR}
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    do-ip6: no
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    module-config: "subnetcache iterator"
    send-client-subnet: 127.0.0.1
    client-subnet-always-forward: yes
    max-client-subnet-ipv4: 32
    qname-minimisation: no
stub-zone:
    name: "maxine."
    stub-addr: 127.0.0.1@{maxine}
remote-control:
    control-enable: no
"#,
            dir = dir.path().display(),
            maxine = maxine.dns_addr.port(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&conf);
    (
        ClientProcess::spawn("unbound", cmd, dir),
        ([127, 0, 0, 1], port).into(),
    )
}

/// `db.maxine.` A asked of the resolver at `at` from `from`; `None`
/// while no reply comes within a second.
async fn via(at: SocketAddr, from: &str) -> Option<(ResponseCode, Vec<String>)> {
    let src: IpAddr = from.parse().unwrap();
    let sock = tokio::net::UdpSocket::bind(SocketAddr::new(src, 0))
        .await
        .unwrap();
    sock.send_to(&common::query("db.maxine.", RecordType::A, None), at)
        .await
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let m = Message::from_vec(&buf[..n]).ok()?;
    let addrs = m.answers.iter().map(|r| r.data.to_string()).collect();
    Some((m.metadata.response_code, addrs))
}

#[tokio::test]
async fn unbound_with_its_subnet_cache_keeps_one_answer_per_client() {
    // Answers live an hour in unbound's cache: what it answers from there
    // does not depend on how fast this test runs.
    let maxine = fixture_with_ttl(Some(Duration::from_secs(3600))).await;
    let (unbound, at) = start_unbound(&maxine);
    // The reader finds db through unbound (once unbound is up).
    unbound
        .wait_for("the reader's answer through unbound", || async move {
            via(at, READER)
                .await
                .is_some_and(|(rc, a)| rc == ResponseCode::NoError && a == [DB])
        })
        .await;
    // The other client, through the same unbound, gets no address: its
    // subnet's answer, not the reader's.
    let nothing = (ResponseCode::NoError, vec![]);
    assert_eq!(via(at, OTHER).await.expect("unbound answers"), nothing);
    // Asked again, from unbound's cache, each keeps its own answer.
    for _ in 0..3 {
        let reader = via(at, READER).await.expect("unbound answers");
        assert_eq!(reader, (ResponseCode::NoError, vec![DB.to_string()]));
        assert_eq!(via(at, OTHER).await.expect("unbound answers"), nothing);
    }
    // An unknown source (anonymous) gets nothing either.
    assert_eq!(
        via(at, "127.0.0.99").await.expect("unbound answers"),
        nothing
    );
    // Each answer is in unbound's cache for its own client: when Maxine's
    // networks swap, unbound still hands each client the answer it cached
    // for that client (for the TTL), never the other's.
    networks(&maxine, OTHER, READER).await;
    let (rc, addrs, _) = ask_db(&maxine, RECURSOR, Some((1, 32, &v4(OTHER)))).await;
    assert_eq!((rc, addrs), (ResponseCode::NoError, vec![DB.to_string()]));
    for _ in 0..3 {
        let reader = via(at, READER).await.expect("unbound answers");
        assert_eq!(reader, (ResponseCode::NoError, vec![DB.to_string()]));
        assert_eq!(via(at, OTHER).await.expect("unbound answers"), nothing);
    }
    // A client unbound has not asked for yet gets Maxine's answer of now.
    networks(&maxine, "127.0.0.33", READER).await;
    let fresh = via(at, "127.0.0.33").await.expect("unbound answers");
    assert_eq!(fresh, (ResponseCode::NoError, vec![DB.to_string()]));
    drop(unbound);
    maxine.stop().await;
}

/// `dig` signing with `key` (`algorithm:name:base64`, as `dig -y` takes
/// it), from `from`: its whole output.
async fn dig_signed(s: &TestServer, from: &str, key: Option<&str>) -> String {
    let mut cmd = tokio::process::Command::new("dig");
    cmd.arg(format!("@{}", s.dns_addr.ip()))
        .arg("-p")
        .arg(s.dns_addr.port().to_string())
        .arg("-b")
        .arg(from)
        .args(["+norec", "+tries=2", "+time=2", "db.maxine.", "A"]);
    if let Some(k) = key {
        cmd.arg("-y").arg(k);
    }
    let out = cmd
        .output()
        .await
        .expect("dig runs (apt-get install dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_query_signed_with_a_tsig_key_is_asked_as_its_token() {
    use base64::Engine;
    let s = fixture().await;
    let admin = Cred::Bearer(ADMIN_SECRET.into());
    let base = s.http_base();
    let token = call(
        &s.http,
        Method::POST,
        &format!("{base}/v1/acl/tokens"),
        &admin,
        Some(&json!({"policies": ["viewer"], "description": "ops, by dig"})),
    )
    .await;
    assert_eq!(token.status, 200, "{:?}", token.body);
    let accessor = token.body["accessor"].as_str().unwrap().to_string();
    let secret =
        base64::engine::general_purpose::STANDARD.encode(b"identity-tests-tsig-secret-0123456789");
    let put = |name: &'static str, body: serde_json::Value| {
        let (s, admin) = (&s, &admin);
        async move {
            call(
                &s.http,
                Method::PUT,
                &format!("{}/v1/acl/tsig-keys/{name}", s.http_base()),
                admin,
                Some(&body),
            )
            .await
        }
    };
    let r = put(
        "ops.key",
        json!({"algorithm": "hmac-sha256", "secret": secret, "token": accessor}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["name"], "ops.key");
    // Key names compare as DNS names: without case or the final dot.
    let got = call(
        &s.http,
        Method::GET,
        &format!("{base}/v1/acl/tsig-keys/OPS.Key."),
        &admin,
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.body["name"], "ops.key");
    assert!(
        r.body.get("secret").is_none(),
        "never the secret: {:?}",
        r.body
    );
    // Bad keys are 400s that say why.
    for (body, why) in [
        (
            json!({"secret": "not base64!", "token": accessor}),
            "base64",
        ),
        (json!({"secret": secret, "token": "no-such-token"}), "token"),
        (
            json!({"algorithm": "hmac-md5", "secret": secret, "token": accessor}),
            "algorithm",
        ),
        (json!({"secret": "c2hvcnQ=", "token": accessor}), "secret"),
        (
            json!({"secret": secret, "token": accessor, "extra": 1}),
            "extra",
        ),
    ] {
        let r = put("bad.key", body).await;
        assert_eq!(r.status, 400, "{why}: {:?}", r.body);
        assert!(r.body.to_string().contains(why), "{why}: {:?}", r.body);
    }
    let listed = call(
        &s.http,
        Method::GET,
        &format!("{base}/v1/acl/tsig-keys"),
        &admin,
        None,
    )
    .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["tsig_keys"][0]["token"], accessor.as_str());
    assert!(
        !listed.body.to_string().contains(&secret),
        "no secret in the listing"
    );

    const STRANGER: &str = "127.0.0.99";
    // Signed with the key: the token's viewer policy reads db, and dig
    // verifies the reply's signature (it says so when it cannot).
    let signed = dig_signed(&s, STRANGER, Some(&format!("hmac-sha256:ops.key:{secret}"))).await;
    assert!(signed.contains("status: NOERROR"), "{signed}");
    assert!(signed.contains(DB), "{signed}");
    assert!(signed.contains("TSIG PSEUDOSECTION"), "{signed}");
    assert!(!signed.contains("Couldn't verify"), "{signed}");
    assert!(!signed.contains("WARNING"), "{signed}");
    // Durable: the key verifies after a restart too.
    let s = s.restart().await;
    let signed = dig_signed(&s, STRANGER, Some(&format!("hmac-sha256:ops.key:{secret}"))).await;
    assert!(
        signed.contains(DB) && !signed.contains("WARNING"),
        "{signed}"
    );
    // The same question unsigned, from the same address: anonymous.
    let plain = dig_signed(&s, STRANGER, None).await;
    assert!(plain.contains("status: REFUSED"), "{plain}");
    // A wrong secret: NOTAUTH, TSIG error BADSIG (unsigned, RFC 8945 5.2).
    let wrong =
        base64::engine::general_purpose::STANDARD.encode(b"not-the-identity-tests-tsig-secret");
    let bad = dig_signed(&s, STRANGER, Some(&format!("hmac-sha256:ops.key:{wrong}"))).await;
    assert!(bad.contains("status: NOTAUTH"), "{bad}");
    assert!(bad.contains("BADSIG"), "{bad}");
    assert!(!bad.contains(DB), "{bad}");
    // A key Maxine does not know: NOTAUTH, BADKEY.
    let unknown = dig_signed(
        &s,
        STRANGER,
        Some(&format!("hmac-sha256:other.key:{secret}")),
    )
    .await;
    assert!(unknown.contains("status: NOTAUTH"), "{unknown}");
    assert!(unknown.contains("BADKEY"), "{unknown}");
    // The key's algorithm is part of the key: another one is BADKEY too.
    let other_alg = dig_signed(&s, STRANGER, Some(&format!("hmac-sha512:ops.key:{secret}"))).await;
    assert!(other_alg.contains("BADKEY"), "{other_alg}");
    // Deleting the key: its signed queries are BADKEY from the next one on.
    let r = call(
        &s.http,
        Method::DELETE,
        &format!("{}/v1/acl/tsig-keys/ops.key", s.http_base()),
        &admin,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let gone = dig_signed(&s, STRANGER, Some(&format!("hmac-sha256:ops.key:{secret}"))).await;
    assert!(gone.contains("BADKEY"), "{gone}");

    // A key signs as its token only while the token lives: BADKEY once the
    // token expires, and once it is deleted.
    for (name, token_body) in [
        (
            "brief.key",
            json!({"policies": ["viewer"], "expires_in": "3s"}),
        ),
        ("deleted.key", json!({"policies": ["viewer"]})),
    ] {
        let token = call(
            &s.http,
            Method::POST,
            &format!("{}/v1/acl/tokens", s.http_base()),
            &admin,
            Some(&token_body),
        )
        .await;
        assert_eq!(token.status, 200, "{:?}", token.body);
        let accessor = token.body["accessor"].as_str().unwrap().to_string();
        let r = call(
            &s.http,
            Method::PUT,
            &format!("{}/v1/acl/tsig-keys/{name}", s.http_base()),
            &admin,
            Some(&json!({"algorithm": "hmac-sha256", "secret": secret, "token": accessor})),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let key = format!("hmac-sha256:{name}:{secret}");
        let signed = dig_signed(&s, STRANGER, Some(&key)).await;
        assert!(
            signed.contains(DB) && !signed.contains("WARNING"),
            "{name}: {signed}"
        );
        if name == "deleted.key" {
            let r = call(
                &s.http,
                Method::DELETE,
                &format!("{}/v1/acl/tokens/{accessor}", s.http_base()),
                &admin,
                None,
            )
            .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
        }
        // Bounded: the token's 3 s, then a little.
        let mut last = String::new();
        for _ in 0..40 {
            last = dig_signed(&s, STRANGER, Some(&key)).await;
            if last.contains("BADKEY") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(
            last.contains("BADKEY") && !last.contains(DB),
            "{name}: {last}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn a_signature_outside_the_fudge_is_badtime_and_the_error_is_signed() {
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
    use hickory_proto::rr::{Name, TSigner};
    let s = fixture().await;
    let admin = Cred::Bearer(ADMIN_SECRET.into());
    let secret = b"identity-tests-tsig-secret-0123456789".to_vec();
    let r = call(
        &s.http,
        Method::PUT,
        &format!("{}/v1/acl/tsig-keys/clock.key", s.http_base()),
        &admin,
        Some(&json!({
            "secret": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &secret),
            "token": "anonymous"
        })),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let signer = TSigner::new(
        secret,
        TsigAlgorithm::HmacSha256,
        Name::from_ascii("clock.key.").unwrap(),
        300,
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ask = |time: u64| {
        let (s, signer) = (&s, &signer);
        async move {
            let mut m = Message::query();
            m.metadata.id = 0x7153;
            m.add_query(Query::query(
                Name::from_ascii("maxine.").unwrap(),
                RecordType::SOA,
            ));
            m.finalize(signer, time).unwrap();
            let raw = exchange(s, UNTRUSTED, &m.to_vec().unwrap()).await;
            Message::from_vec(&raw).expect("a well-formed reply")
        }
    };
    // Signed now: answered, and the reply carries a MAC.
    let ok = ask(now).await;
    assert_eq!(ok.metadata.response_code, ResponseCode::NoError);
    let sig = ok.signature.as_ref().expect("a signed reply");
    assert!(
        !sig.data.mac.is_empty() && sig.data.error.is_none(),
        "{sig:?}"
    );
    // Signed an hour ago: NOTAUTH, BADTIME, and that reply is signed too
    // (RFC 8945 5.2.3).
    let late = ask(now - 3600).await;
    assert_eq!(late.metadata.response_code, ResponseCode::NotAuth);
    let sig = late.signature.as_ref().expect("a TSIG record in the error");
    assert_eq!(sig.data.error, Some(TsigError::BadTime), "{sig:?}");
    assert!(!sig.data.mac.is_empty(), "BADTIME is signed");
    s.stop().await;
}
