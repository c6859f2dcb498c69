//! Maxine as real DNS clients see it: `dig` and hickory-resolver, over UDP
//! and TCP.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use common::TestServer;
use hickory_proto::rr::RecordType;
use serde_json::json;

async fn fixture() -> TestServer {
    let s = TestServer::start().await;
    s.register(
        "payments",
        "web-1",
        json!({"address": "10.0.1.1", "port": 8080, "version": "2.1.0"}),
    )
    .await;
    s.register(
        "payments",
        "web-2",
        json!({"address": "10.0.1.2", "port": 8081, "version": "2.2.0"}),
    )
    .await;
    s.register(
        "payments",
        "web-3",
        json!({"address": "fd00::3", "port": 9090, "version": "3.0.0"}),
    )
    .await;
    s
}

#[tokio::test]
async fn dig_resolves_addresses_srv_and_errors() {
    let s = fixture().await;
    let out = s.dig(&["payments.maxine", "A"]).await;
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains("flags: qr aa;"), "{out}");
    assert!(
        out.contains("10.0.1.1") && out.contains("10.0.1.2"),
        "{out}"
    );

    let out = s.dig(&["_payments._tcp.maxine", "SRV"]).await;
    assert!(
        out.contains("SRV\t1 1 8080 web-1.payments.dc1.maxine."),
        "{out}"
    );
    assert!(out.contains("ADDITIONAL SECTION"), "{out}");
    assert!(
        out.contains("web-3.payments.dc1.maxine. 5\tIN\tAAAA\tfd00::3"),
        "{out}"
    );

    let out = s.dig(&["v2.payments.dc1.maxine", "SRV", "+tcp"]).await;
    assert!(out.contains("ANSWER: 2,"), "{out}");
    for srv in [
        "v2.payments.dc1.maxine.\t5\tIN\tSRV\t1 1 8080 web-1.payments.dc1.maxine.",
        "v2.payments.dc1.maxine.\t5\tIN\tSRV\t1 1 8081 web-2.payments.dc1.maxine.",
    ] {
        assert!(out.contains(srv), "{srv} missing:\n{out}");
    }
    assert!(!out.contains("web-3"), "version 3 is not v2:\n{out}");

    let out = s.dig(&["nothing.maxine", "A"]).await;
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert!(
        out.contains("AUTHORITY SECTION") && out.contains("SOA"),
        "{out}"
    );

    let out = s.dig(&["example.org", "A"]).await;
    assert!(out.contains("status: REFUSED"), "{out}");

    // dig sends EDNS by default; +noedns leaves it out, and so do we.
    // (An answer must come: no reply at all has no OPT either.)
    let out = s.dig(&["payments.maxine", "+noedns"]).await;
    assert!(
        out.contains("status: NOERROR") && out.contains("10.0.1.1"),
        "{out}"
    );
    assert!(!out.contains("OPT PSEUDOSECTION"), "{out}");
    let out = s
        .dig(&["payments.maxine", "+edns=1", "+noednsnegotiation"])
        .await;
    assert!(out.contains("status: BADVERS"), "{out}");
}

#[tokio::test]
async fn hickory_resolver_finds_addresses_and_srv_over_udp_and_tcp() {
    let s = fixture().await;
    for tcp in [false, true] {
        let r = s.resolver(tcp);
        let ips: BTreeSet<IpAddr> = r
            .lookup_ip("payments.maxine.")
            .await
            .expect("lookup_ip")
            .iter()
            .collect();
        let want: BTreeSet<IpAddr> = ["10.0.1.1", "10.0.1.2", "fd00::3"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(ips, want, "tcp={tcp}");

        let srv = r
            .lookup("_payments._tcp.maxine.", RecordType::SRV)
            .await
            .expect("srv");
        let mut answers: Vec<_> = srv.answers().iter().map(|r| r.data.to_string()).collect();
        answers.sort();
        assert_eq!(
            answers,
            [
                "1 1 8080 web-1.payments.dc1.maxine.",
                "1 1 8081 web-2.payments.dc1.maxine.",
                "1 1 9090 web-3.payments.dc1.maxine.",
            ],
            "tcp={tcp}"
        );
        let mut glue: Vec<_> = srv.additionals().iter().map(|r| r.to_string()).collect();
        glue.sort();
        assert_eq!(
            glue,
            [
                "web-1.payments.dc1.maxine. 5 IN A 10.0.1.1",
                "web-2.payments.dc1.maxine. 5 IN A 10.0.1.2",
                "web-3.payments.dc1.maxine. 5 IN AAAA fd00::3",
            ],
            "targets' addresses come along (tcp={tcp})"
        );

        let err = r.lookup("gone.maxine.", RecordType::A).await.unwrap_err();
        assert!(err.is_nx_domain(), "{err}");
        let err = r
            .lookup("payments.maxine.", RecordType::TXT)
            .await
            .unwrap_err();
        assert!(err.is_no_records_found() && !err.is_nx_domain(), "{err}");
    }
}

#[tokio::test]
async fn maxine_lookup_subcommand_resolves_like_a_client() {
    let s = fixture().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_maxine"))
        .args([
            "lookup",
            "v2-1.payments.maxine",
            "A",
            "--dns",
            &s.dns_addr.to_string(),
        ])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("10.0.1.1") && !text.contains("10.0.1.2"),
        "{text}"
    );
}
