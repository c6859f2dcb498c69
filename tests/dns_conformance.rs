//! DNS behaviour of a real Maxine, over real sockets: the naming grammar, the
//! RFC rules for errors, EDNS, truncation and TCP, checked from raw replies.
//! Expected records are written as zone-file lines.

mod common;

use std::collections::BTreeSet;

use common::{TestServer, lines, query};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::json;

/// Three instances of `payments` (two IPv4 of version 2, one IPv6 of
/// version 3) and one of `billing`.
async fn fixture() -> TestServer {
    fixture_with(|_| {}).await
}

/// The fixture's services on a server configured by `tweak`.
async fn fixture_with(tweak: impl FnOnce(&mut maxine::config::ConfigFile)) -> TestServer {
    let s = TestServer::start_with(tweak).await;
    s.register(
        "payments",
        "web-1",
        json!({"address": "10.0.1.1", "port": 8080, "version": "2.1.0", "weight": 10}),
    )
    .await;
    s.register(
        "payments",
        "web-2",
        json!({"address": "10.0.1.2", "port": 8080, "version": "2.2.0", "weight": 5}),
    )
    .await;
    s.register(
        "payments",
        "web-3",
        json!({"address": "fd00::3", "port": 9090, "version": "3.0.0"}),
    )
    .await;
    s.register(
        "billing",
        "b-1",
        json!({"address": "10.0.2.1", "port": 7000}),
    )
    .await;
    s
}

fn sorted(expected: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// The three sections of a reply are exactly the case's records, and the
/// reply has no OPT (the queries of the tables carry none).
fn assert_sections(m: &Message, c: &Case, what: &str) {
    assert_eq!(lines(&m.answers), sorted(c.answers), "{what}: answers");
    assert_eq!(
        lines(&m.authorities),
        sorted(c.authority),
        "{what}: authority"
    );
    assert_eq!(
        lines(&m.additionals),
        sorted(c.additional),
        "{what}: additional"
    );
    assert!(m.edns.is_none(), "{what}: no OPT without one in the query");
}

struct Case {
    name: &'static str,
    qtype: RecordType,
    rcode: ResponseCode,
    answers: &'static [&'static str],
    authority: &'static [&'static str],
    additional: &'static [&'static str],
}

const SOA_NEG: &str = "maxine. 5 IN SOA ns.maxine. hostmaster.maxine. 1 3600 600 86400 5";

#[tokio::test]
async fn naming_grammar_table() {
    use RecordType::*;
    let s = fixture().await;
    let cases = [
        Case {
            name: "payments.maxine.",
            qtype: A,
            rcode: ResponseCode::NoError,
            answers: &[
                "payments.maxine. 5 IN A 10.0.1.1",
                "payments.maxine. 5 IN A 10.0.1.2",
            ],
            authority: &[],
            additional: &[],
        },
        Case {
            name: "payments.maxine.",
            qtype: AAAA,
            rcode: ResponseCode::NoError,
            answers: &["payments.maxine. 5 IN AAAA fd00::3"],
            authority: &[],
            additional: &[],
        },
        Case {
            name: "_payments._tcp.maxine.",
            qtype: SRV,
            rcode: ResponseCode::NoError,
            answers: &[
                "_payments._tcp.maxine. 5 IN SRV 1 10 8080 web-1.payments.dc1.maxine.",
                "_payments._tcp.maxine. 5 IN SRV 1 5 8080 web-2.payments.dc1.maxine.",
                "_payments._tcp.maxine. 5 IN SRV 1 1 9090 web-3.payments.dc1.maxine.",
            ],
            authority: &[],
            additional: &[
                "web-1.payments.dc1.maxine. 5 IN A 10.0.1.1",
                "web-2.payments.dc1.maxine. 5 IN A 10.0.1.2",
                "web-3.payments.dc1.maxine. 5 IN AAAA fd00::3",
            ],
        },
        Case {
            name: "_payments._tcp.dc1.maxine.",
            qtype: SRV,
            rcode: ResponseCode::NoError,
            answers: &[
                "_payments._tcp.dc1.maxine. 5 IN SRV 1 10 8080 web-1.payments.dc1.maxine.",
                "_payments._tcp.dc1.maxine. 5 IN SRV 1 5 8080 web-2.payments.dc1.maxine.",
                "_payments._tcp.dc1.maxine. 5 IN SRV 1 1 9090 web-3.payments.dc1.maxine.",
            ],
            authority: &[],
            additional: &[
                "web-1.payments.dc1.maxine. 5 IN A 10.0.1.1",
                "web-2.payments.dc1.maxine. 5 IN A 10.0.1.2",
                "web-3.payments.dc1.maxine. 5 IN AAAA fd00::3",
            ],
        },
        Case {
            name: "v2.payments.dc1.maxine.",
            qtype: SRV,
            rcode: ResponseCode::NoError,
            answers: &[
                "v2.payments.dc1.maxine. 5 IN SRV 1 10 8080 web-1.payments.dc1.maxine.",
                "v2.payments.dc1.maxine. 5 IN SRV 1 5 8080 web-2.payments.dc1.maxine.",
            ],
            authority: &[],
            additional: &[
                "web-1.payments.dc1.maxine. 5 IN A 10.0.1.1",
                "web-2.payments.dc1.maxine. 5 IN A 10.0.1.2",
            ],
        },
        Case {
            name: "v2-1.payments.maxine.",
            qtype: A,
            rcode: ResponseCode::NoError,
            answers: &["v2-1.payments.maxine. 5 IN A 10.0.1.1"],
            authority: &[],
            additional: &[],
        },
        Case {
            name: "v3.payments.maxine.",
            qtype: A,
            rcode: ResponseCode::NoError,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        Case {
            name: "payments.dc1.maxine.",
            qtype: A,
            rcode: ResponseCode::NoError,
            answers: &[
                "payments.dc1.maxine. 5 IN A 10.0.1.1",
                "payments.dc1.maxine. 5 IN A 10.0.1.2",
            ],
            authority: &[],
            additional: &[],
        },
        Case {
            name: "web-2.payments.dc1.maxine.",
            qtype: A,
            rcode: ResponseCode::NoError,
            answers: &["web-2.payments.dc1.maxine. 5 IN A 10.0.1.2"],
            authority: &[],
            additional: &[],
        },
        // Instance names exist with the datacenter only, and hold the
        // instance's address: other types are NODATA.
        Case {
            name: "web-3.payments.dc1.maxine.",
            qtype: AAAA,
            rcode: ResponseCode::NoError,
            answers: &["web-3.payments.dc1.maxine. 5 IN AAAA fd00::3"],
            authority: &[],
            additional: &[],
        },
        Case {
            name: "web-3.payments.dc1.maxine.",
            qtype: A,
            rcode: ResponseCode::NoError,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        Case {
            name: "web-2.payments.dc1.maxine.",
            qtype: SRV,
            rcode: ResponseCode::NoError,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        Case {
            name: "web-2.payments.maxine.",
            qtype: A,
            rcode: ResponseCode::NXDomain,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        Case {
            name: "web-2._payments._tcp.dc1.maxine.",
            qtype: A,
            rcode: ResponseCode::NXDomain,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        Case {
            name: "web-9.payments.dc1.maxine.",
            qtype: A,
            rcode: ResponseCode::NXDomain,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        Case {
            name: "web-2.billing.dc1.maxine.",
            qtype: A,
            rcode: ResponseCode::NXDomain,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        Case {
            name: "billing.maxine.",
            qtype: A,
            rcode: ResponseCode::NoError,
            answers: &["billing.maxine. 5 IN A 10.0.2.1"],
            authority: &[],
            additional: &[],
        },
        // Negative answers carry the SOA with TTL = min(SOA TTL, MINIMUM).
        Case {
            name: "nope.maxine.",
            qtype: A,
            rcode: ResponseCode::NXDomain,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        Case {
            name: "v9.payments.maxine.",
            qtype: A,
            rcode: ResponseCode::NXDomain,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        // Version selectors apply to plain service names only.
        Case {
            name: "v2._payments._tcp.maxine.",
            qtype: SRV,
            rcode: ResponseCode::NXDomain,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        Case {
            name: "v2.web-1.payments.dc1.maxine.",
            qtype: A,
            rcode: ResponseCode::NXDomain,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        Case {
            name: "payments.dc9.maxine.",
            qtype: A,
            rcode: ResponseCode::NXDomain,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        Case {
            name: "payments.maxine.",
            qtype: TXT,
            rcode: ResponseCode::NoError,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        Case {
            name: "billing.maxine.",
            qtype: AAAA,
            rcode: ResponseCode::NoError,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        // Empty non-terminals exist: NODATA, not NXDOMAIN.
        Case {
            name: "_tcp.maxine.",
            qtype: A,
            rcode: ResponseCode::NoError,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        Case {
            name: "_tcp.dc1.maxine.",
            qtype: SRV,
            rcode: ResponseCode::NoError,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        Case {
            name: "dc1.maxine.",
            qtype: A,
            rcode: ResponseCode::NoError,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        // Static zone data.
        Case {
            name: "maxine.",
            qtype: SOA,
            rcode: ResponseCode::NoError,
            answers: &["maxine. 3600 IN SOA ns.maxine. hostmaster.maxine. 1 3600 600 86400 5"],
            authority: &[],
            additional: &[],
        },
        Case {
            name: "maxine.",
            qtype: NS,
            rcode: ResponseCode::NoError,
            answers: &["maxine. 3600 IN NS ns.maxine."],
            authority: &[],
            additional: &["ns.maxine. 3600 IN A 127.0.0.1"],
        },
        Case {
            name: "maxine.",
            qtype: A,
            rcode: ResponseCode::NoError,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
    ];
    for c in cases {
        let m = s.ask(c.name, c.qtype).await;
        let what = format!("{} {:?}", c.name, c.qtype);
        assert_eq!(m.metadata.response_code, c.rcode, "{what}");
        assert!(m.metadata.authoritative, "{what}: AA");
        assert!(m.metadata.recursion_desired, "{what}: RD echoed");
        assert!(!m.metadata.recursion_available, "{what}: RA");
        assert_sections(&m, &c, &what);
    }
}

#[tokio::test]
async fn out_of_zone_and_non_in_class_are_refused_without_aa() {
    let s = fixture().await;
    let m = s.ask("example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.authoritative && m.answers.is_empty());
    // A name that merely ends in the same letters is not in the zone.
    let m = s.ask("notmaxine.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    // Class CH.
    let mut q = query("payments.maxine.", RecordType::A, None);
    let n = q.len();
    q[n - 1] = 3;
    let m = Message::from_vec(&s.udp_raw(&q).await.unwrap()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.answers.is_empty());
}

#[tokio::test]
async fn malformed_queries_get_formerr_and_responses_are_never_answered() {
    let s = fixture().await;
    let good = query("payments.maxine.", RecordType::A, None);
    for qd in [0u8, 2] {
        let mut q = good.clone();
        q[5] = qd;
        let r = s.udp_raw(&q).await.expect("a reply");
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::FormErr,
            "QDCOUNT {qd}"
        );
        assert_eq!(m.metadata.id, 0x4d58);
    }
    // Two OPT records.
    let mut q = query("payments.maxine.", RecordType::A, Some((1232, 0)));
    q[11] = 2;
    q.extend([0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 0]);
    let r = s.udp_raw(&q).await.expect("a reply");
    assert_eq!(r[3] & 0x0F, 1, "FORMERR for two OPT records");
    // QR=1: a response is never answered.
    let mut q = good.clone();
    q[2] |= 0x80;
    assert_eq!(s.udp_raw(&q).await, None);
    // The server is still answering.
    assert_eq!(
        s.ask("payments.maxine.", RecordType::A).await.answers.len(),
        2
    );
}

#[tokio::test]
async fn unknown_opcodes_get_notimp_without_rd_or_cd() {
    let s = fixture().await;
    for opcode in [1u8, 2, 4, 5, 15] {
        let mut q = query("payments.maxine.", RecordType::A, None);
        q[2] = (opcode << 3) | 0x01; // RD
        q[3] = 0x10; // CD
        let r = s.udp_raw(&q).await.expect("a reply");
        assert_eq!(r[3] & 0x0F, 4, "NOTIMP for opcode {opcode}");
        assert_eq!((r[2] >> 3) & 0x0F, opcode, "opcode echoed");
        assert_eq!(r[2] & 0x01, 0, "RD not echoed");
        assert_eq!(r[3] & 0x10, 0, "CD not echoed");
        assert_eq!(r[2] & 0x80, 0x80, "QR set");
    }
}

#[tokio::test]
async fn zone_transfers_are_refused_over_udp_and_tcp() {
    let s = fixture().await;
    for t in [RecordType::AXFR, RecordType::IXFR] {
        let q = query("maxine.", t, None);
        let m = Message::from_vec(&s.udp_raw(&q).await.unwrap()).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{t:?} udp");
        let r = s.tcp_raw(&[q]).await;
        let m = Message::from_vec(&r[0]).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{t:?} tcp");
        assert!(m.answers.is_empty());
    }
}

#[tokio::test]
async fn edns_is_echoed_only_when_asked_with_our_size_and_badvers_above_version_zero() {
    let s = fixture().await;
    let r = s
        .udp_raw(&query("payments.maxine.", RecordType::A, Some((4096, 0))))
        .await
        .unwrap();
    let m = Message::from_vec(&r).unwrap();
    let edns = m.edns.as_ref().expect("OPT in the reply");
    assert_eq!(edns.max_payload(), 1232);
    assert_eq!(m.answers.len(), 2);

    let r = s
        .udp_raw(&query("payments.maxine.", RecordType::A, Some((4096, 1))))
        .await
        .unwrap();
    let m = Message::from_vec(&r).unwrap();
    // BADVERS is extended rcode 16: header rcode 0, OPT upper bits 1.
    assert_eq!(u16::from(m.metadata.response_code), 16);
    assert_eq!(r[3] & 0x0F, 0);
    assert!(m.edns.is_some() && m.answers.is_empty());

    // An unknown option (code 65001) is not echoed: our OPT has RDLEN 0.
    let mut q = query("payments.maxine.", RecordType::A, None);
    q[11] = 1;
    q.extend([
        0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 6, 0xFD, 0xE9, 0, 2, 0xAB, 0xCD,
    ]);
    let r = s.udp_raw(&q).await.unwrap();
    assert_eq!(
        &r[r.len() - 11..r.len() - 2],
        &[0, 0, 41, 4, 0xD0, 0, 0, 0, 0]
    );
    assert_eq!(&r[r.len() - 2..], &[0, 0], "no options in our OPT");
}

#[tokio::test]
async fn question_case_is_echoed_byte_exact() {
    let s = fixture().await;
    let q = query("PaYmEnTs.MaXiNe.", RecordType::A, None);
    let r = s.udp_raw(&q).await.unwrap();
    assert_eq!(&r[12..q.len()], &q[12..], "question copied as sent");
    let m = Message::from_vec(&r).unwrap();
    assert_eq!(m.answers.len(), 2);
}

/// RFC 8482 and docs/dns.md: ANY is answered with one RRset, and that RRset
/// whole: A is preferred, then AAAA, then SRV; a name with only static data
/// gives its first static RRset (by type code). Names without data answer as for any other
/// type (NODATA or NXDOMAIN, with the SOA).
#[tokio::test]
async fn any_is_answered_with_exactly_one_whole_rrset() {
    use RecordType::*;
    let s = fixture().await;
    let cases = [
        // A and AAAA exist: the whole A RRset, no AAAA.
        Case {
            name: "payments.maxine.",
            qtype: ANY,
            rcode: ResponseCode::NoError,
            answers: &[
                "payments.maxine. 5 IN A 10.0.1.1",
                "payments.maxine. 5 IN A 10.0.1.2",
            ],
            authority: &[],
            additional: &[],
        },
        Case {
            name: "_payments._tcp.maxine.",
            qtype: ANY,
            rcode: ResponseCode::NoError,
            answers: &[
                "_payments._tcp.maxine. 5 IN A 10.0.1.1",
                "_payments._tcp.maxine. 5 IN A 10.0.1.2",
            ],
            authority: &[],
            additional: &[],
        },
        Case {
            name: "billing.maxine.",
            qtype: ANY,
            rcode: ResponseCode::NoError,
            answers: &["billing.maxine. 5 IN A 10.0.2.1"],
            authority: &[],
            additional: &[],
        },
        // A version whose instances have only IPv6: its AAAA RRset, not
        // the service's A RRset.
        Case {
            name: "v3.payments.maxine.",
            qtype: ANY,
            rcode: ResponseCode::NoError,
            answers: &["v3.payments.maxine. 5 IN AAAA fd00::3"],
            authority: &[],
            additional: &[],
        },
        Case {
            name: "v2-2.payments.maxine.",
            qtype: ANY,
            rcode: ResponseCode::NoError,
            answers: &["v2-2.payments.maxine. 5 IN A 10.0.1.2"],
            authority: &[],
            additional: &[],
        },
        // An instance name: its address record.
        Case {
            name: "web-3.payments.dc1.maxine.",
            qtype: ANY,
            rcode: ResponseCode::NoError,
            answers: &["web-3.payments.dc1.maxine. 5 IN AAAA fd00::3"],
            authority: &[],
            additional: &[],
        },
        // The apex has only static data: one of its RRsets (the zone's
        // first by type code, NS, with its glue), not the NS and the SOA.
        Case {
            name: "maxine.",
            qtype: ANY,
            rcode: ResponseCode::NoError,
            answers: &["maxine. 3600 IN NS ns.maxine."],
            authority: &[],
            additional: &["ns.maxine. 3600 IN A 127.0.0.1"],
        },
        // No data, no name: as for any type.
        Case {
            name: "dc1.maxine.",
            qtype: ANY,
            rcode: ResponseCode::NoError,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
        Case {
            name: "nope.maxine.",
            qtype: ANY,
            rcode: ResponseCode::NXDomain,
            answers: &[],
            authority: &[SOA_NEG],
            additional: &[],
        },
    ];
    for c in cases {
        let q = query(c.name, c.qtype, None);
        let raw = s.udp_raw(&q).await.expect("a reply");
        let m = Message::from_vec(&raw).expect("a well-formed reply");
        let what = format!("{} ANY", c.name);
        assert_eq!(m.metadata.id, 0x4d58, "{what}: id echoed");
        assert_eq!(m.metadata.response_code, c.rcode, "{what}");
        assert!(m.metadata.authoritative, "{what}: AA");
        assert!(!m.metadata.truncation, "{what}: TC");
        assert!(m.metadata.recursion_desired, "{what}: RD echoed");
        assert!(!m.metadata.recursion_available, "{what}: RA");
        // Header counts as sent: one question, then the sections.
        let count = |at: usize| u16::from_be_bytes([raw[at], raw[at + 1]]) as usize;
        assert_eq!(
            (count(4), count(6), count(8), count(10)),
            (1, c.answers.len(), c.authority.len(), c.additional.len()),
            "{what}: QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT"
        );
        assert_eq!(&raw[12..q.len()], &q[12..], "{what}: question echoed");
        let types: BTreeSet<_> = m.answers.iter().map(|r| r.record_type()).collect();
        assert!(types.len() <= 1, "{what}: one RRset, got {types:?}");
        assert_sections(&m, &c, &what);
    }
    // The same over TCP, where no size limit could excuse a partial RRset.
    let q = query("payments.maxine.", ANY, None);
    let m = Message::from_vec(&s.tcp_raw(&[q]).await[0]).unwrap();
    assert_eq!(
        lines(&m.answers),
        sorted(&[
            "payments.maxine. 5 IN A 10.0.1.1",
            "payments.maxine. 5 IN A 10.0.1.2",
        ]),
        "ANY over TCP"
    );
    assert!(m.metadata.authoritative && m.authorities.is_empty() && m.additionals.is_empty());
}

#[tokio::test]
async fn answers_rotate_between_queries() {
    // Each UDP worker keeps its own rotation; with one, every query
    // advances the same one (with one per core, 8 queries could each land
    // on a different worker on a large machine).
    let s = fixture_with(|c| c.dns.udp_workers = 1).await;
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let m = s.ask("payments.maxine.", RecordType::A).await;
        firsts.insert(m.answers[0].to_string());
    }
    assert_eq!(firsts.len(), 2, "both instances lead an answer: {firsts:?}");
}

/// 40 IPv6 instances: 32 AAAA records (the default cap) are 896 bytes.
async fn big_service(s: &TestServer) {
    for i in 0..40 {
        s.register(
            "big",
            &format!("n{i}"),
            json!({"address": format!("fd00::{i:x}"), "port": 80}),
        )
        .await;
    }
}

#[tokio::test]
async fn answers_that_do_not_fit_are_truncated_to_header_and_question() {
    let s = fixture().await;
    big_service(&s).await;
    let q = query("big.maxine.", RecordType::AAAA, None);
    let r = s.udp_raw(&q).await.unwrap();
    assert!(r.len() <= 512);
    assert_eq!(r[2] & 0x02, 0x02, "TC set");
    assert_eq!(&r[4..12], &[0, 1, 0, 0, 0, 0, 0, 0], "question only");
    assert_eq!(r.len(), q.len(), "header and question, nothing else");

    // With EDNS the limit is min(client, 1232): 896 bytes fit.
    let r = s
        .udp_raw(&query("big.maxine.", RecordType::AAAA, Some((4096, 0))))
        .await
        .unwrap();
    let m = Message::from_vec(&r).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 32);
    // A client size of 600 does not fit them: TC with the OPT kept.
    let r = s
        .udp_raw(&query("big.maxine.", RecordType::AAAA, Some((600, 0))))
        .await
        .unwrap();
    let m = Message::from_vec(&r).unwrap();
    assert!(m.metadata.truncation && m.answers.is_empty() && m.edns.is_some());

    // The same question over TCP gets the full answer: every instance,
    // not the UDP window of dns.max_records.
    let r = s.tcp_raw(&[q]).await;
    let m = Message::from_vec(&r[0]).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 40);
}

/// `dns.max_records` goes up to 200 because that many SRV records with the
/// longest names there can be (63-character ids, a 62-character service,
/// a 63-character datacenter, a 61-character zone) fit in one TCP answer.
#[tokio::test]
async fn the_most_srv_records_allowed_with_the_longest_names_fit_in_one_tcp_answer() {
    let (service, dc, zone) = ("s".repeat(62), "d".repeat(63), "z".repeat(61));
    let s = TestServer::start_with(|c| {
        c.dns.max_records = maxine::config::MAX_DNS_RECORDS;
        c.datacenter = dc.clone();
        c.domain = zone.clone();
        c.dns.zone_dir = None; // the built-in zone, for this domain
    })
    .await;
    for i in 0..maxine::config::MAX_DNS_RECORDS {
        let id = format!("{i:03}{}", "i".repeat(60));
        s.register(&service, &id, json!({"address": "10.0.0.1", "port": 80}))
            .await;
    }
    let q = query(
        &format!("_{service}._tcp.{dc}.{zone}."),
        RecordType::SRV,
        None,
    );
    let r = s.tcp_raw(&[q]).await;
    let m = Message::from_vec(&r[0]).unwrap();
    assert!(!m.metadata.truncation, "{} bytes", r[0].len());
    assert_eq!(m.answers.len(), maxine::config::MAX_DNS_RECORDS);
    assert!(
        r[0].len() > 50_000,
        "the names were long: {} bytes",
        r[0].len()
    );
}

#[tokio::test]
async fn srv_additional_records_are_dropped_before_the_answer_is_truncated() {
    let s = TestServer::start_with(|c| c.dns.max_records = 20).await;
    big_service(&s).await;
    // 20 SRV records (760 bytes) fit in 1232 bytes but their AAAA glue does not.
    let r = s
        .udp_raw(&query(
            "_big._tcp.maxine.",
            RecordType::SRV,
            Some((1232, 0)),
        ))
        .await
        .unwrap();
    let m = Message::from_vec(&r).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 20);
    assert!(!m.additionals.is_empty() && m.additionals.len() < 20);
    assert!(r.len() <= 1232);
    // What is kept is glue for the answer's own targets, whole records only
    // (the reply parsed, and its counts matched).
    let targets: BTreeSet<String> = m
        .answers
        .iter()
        .map(|a| match &a.data {
            hickory_proto::rr::RData::SRV(srv) => srv.target.to_string(),
            other => panic!("not an SRV answer: {other:?}"),
        })
        .collect();
    for g in &m.additionals {
        assert_eq!(g.record_type(), RecordType::AAAA, "{g}");
        assert!(targets.contains(&g.name.to_string()), "{g} is no target");
    }
}

#[tokio::test]
async fn tcp_answers_pipelined_queries_in_order() {
    let s = fixture().await;
    let mut qs = Vec::new();
    for (i, name) in ["payments.maxine.", "nope.maxine.", "billing.maxine."]
        .iter()
        .enumerate()
    {
        let mut q = query(name, RecordType::A, None);
        q[0..2].copy_from_slice(&(i as u16 + 1).to_be_bytes());
        qs.push(q);
    }
    let replies = s.tcp_raw(&qs).await;
    let ms: Vec<Message> = replies
        .iter()
        .map(|r| Message::from_vec(r).unwrap())
        .collect();
    assert_eq!(
        ms.iter().map(|m| m.metadata.id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        lines(&ms[0].answers),
        [
            "payments.maxine. 5 IN A 10.0.1.1",
            "payments.maxine. 5 IN A 10.0.1.2"
        ]
    );
    assert_eq!(ms[1].metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(lines(&ms[2].answers), ["billing.maxine. 5 IN A 10.0.2.1"]);
}

#[tokio::test]
async fn idle_tcp_connections_are_closed() {
    use tokio::io::AsyncReadExt;
    let s = TestServer::start_with(|c| {
        c.dns.tcp_idle_timeout =
            maxine::config::DurationValue(std::time::Duration::from_millis(200));
    })
    .await;
    let mut conn = tokio::net::TcpStream::connect(s.dns_addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf))
        .await
        .expect("closed well before 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "EOF");
}

/// Opens a connection, sends a query and tells whether the server closed
/// it instead of answering.
async fn new_connection_is_closed(s: &TestServer) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(s.dns_addr).await.unwrap();
    let q = query("maxine.", RecordType::SOA, None);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend(q);
    let _ = c.write_all(&framed).await;
    let mut buf = [0u8; 2];
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(2), c.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn tcp_connections_per_client_are_capped() {
    let s = TestServer::start_with(|c| c.dns.tcp_max_connections_per_ip = 2).await;
    let _a = tokio::net::TcpStream::connect(s.dns_addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(s.dns_addr).await.unwrap();
    // Give the acceptor time to count both before the third arrives.
    assert_eventually!(
        new_connection_is_closed(&s).await,
        "a third connection from the same address is closed"
    );
    drop((_a, _b));
    // Once the others are gone, connections are accepted again.
    assert_eventually!(
        {
            let q = [query("maxine.", RecordType::SOA, None)];
            tokio::time::timeout(std::time::Duration::from_secs(2), s.tcp_raw(&q))
                .await
                .is_ok_and(|r| {
                    let m = Message::from_vec(&r[0]).expect("a well-formed reply");
                    m.metadata.response_code == ResponseCode::NoError && m.answers.len() == 1
                })
        },
        "accepted again"
    );
}

#[tokio::test]
async fn registration_is_in_dns_as_soon_as_the_api_acknowledges_it() {
    let s = TestServer::start().await;
    for i in 0..30 {
        let svc = format!("svc{i}");
        s.register(
            &svc,
            "a",
            json!({"address": format!("10.9.0.{i}"), "port": 80}),
        )
        .await;
        // No waiting: the very next query must see it.
        let m = s.ask(&format!("{svc}.maxine."), RecordType::A).await;
        assert_eq!(
            lines(&m.answers),
            [format!("{svc}.maxine. 5 IN A 10.9.0.{i}")],
            "{svc} visible at once"
        );
    }
    // Deregistration too.
    let r = s
        .http
        .delete(format!("{}/v1/services/svc0/instances/a", s.http_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = s.ask("svc0.maxine.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

/// A change re-encodes only the instances it touches: the service's sets
/// and every instance name must still be exactly right afterwards. Small
/// services are encoded whole on each change and larger ones merged with
/// what was encoded before, so the same changes run with `pad` more
/// instances (version 3, untouched) to cover both.
async fn change_one_instance_of_a_service(pad: usize) {
    let s = TestServer::start().await;
    let pads: Vec<String> = (0..pad).map(|i| format!("p{i}")).collect();
    for id in &pads {
        s.register(
            "shop",
            id,
            json!({"address": pad_ip(id), "port": 80, "version": "3.0.0"}),
        )
        .await;
    }
    for (id, addr) in [("a", "10.5.0.1"), ("b", "10.5.0.2"), ("c", "fd00::5")] {
        s.register(
            "shop",
            id,
            json!({"address": addr, "port": 80, "version": "1.0.0"}),
        )
        .await;
    }
    // b moves and changes version; a goes; d comes.
    s.register(
        "shop",
        "b",
        json!({"address": "10.5.0.22", "port": 81, "version": "2.0.0"}),
    )
    .await;
    let r = s
        .http
        .delete(format!("{}/v1/services/shop/instances/a", s.http_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.register(
        "shop",
        "d",
        json!({"address": "10.5.0.4", "port": 80, "version": "1.0.0"}),
    )
    .await;
    // What the untouched instances add to the service's sets.
    let with_pads = |own: &[&str], pad_line: &dyn Fn(&str) -> String| {
        let mut v: Vec<String> = own.iter().map(|l| l.to_string()).collect();
        v.extend(pads.iter().map(|id| pad_line(id)));
        v.sort();
        v
    };
    let a = s.ask("shop.maxine.", RecordType::A).await;
    let want = with_pads(
        &[
            "shop.maxine. 5 IN A 10.5.0.22",
            "shop.maxine. 5 IN A 10.5.0.4",
        ],
        &|id| format!("shop.maxine. 5 IN A {}", pad_ip(id)),
    );
    assert_eq!(lines(&a.answers), want, "with {pad} more");
    let cases: [(&str, RecordType, &[&str]); 6] = [
        (
            "shop.maxine.",
            RecordType::AAAA,
            &["shop.maxine. 5 IN AAAA fd00::5"],
        ),
        (
            "v1.shop.maxine.",
            RecordType::A,
            &["v1.shop.maxine. 5 IN A 10.5.0.4"],
        ),
        (
            "v2.shop.maxine.",
            RecordType::A,
            &["v2.shop.maxine. 5 IN A 10.5.0.22"],
        ),
        (
            "b.shop.dc1.maxine.",
            RecordType::A,
            &["b.shop.dc1.maxine. 5 IN A 10.5.0.22"],
        ),
        (
            "c.shop.dc1.maxine.",
            RecordType::AAAA,
            &["c.shop.dc1.maxine. 5 IN AAAA fd00::5"],
        ),
        (
            "d.shop.dc1.maxine.",
            RecordType::A,
            &["d.shop.dc1.maxine. 5 IN A 10.5.0.4"],
        ),
    ];
    for (name, qtype, want) in cases {
        let m = s.ask(name, qtype).await;
        assert_eq!(
            lines(&m.answers),
            sorted(want),
            "{name} {qtype} with {pad} more"
        );
    }
    // Over TCP: with the padding, the additional records outgrow 512 bytes.
    let q = query("_shop._tcp.maxine.", RecordType::SRV, None);
    let srv = Message::from_vec(&s.tcp_raw(&[q]).await[0]).unwrap();
    let want = with_pads(
        &[
            "_shop._tcp.maxine. 5 IN SRV 1 1 81 b.shop.dc1.maxine.",
            "_shop._tcp.maxine. 5 IN SRV 1 1 80 c.shop.dc1.maxine.",
            "_shop._tcp.maxine. 5 IN SRV 1 1 80 d.shop.dc1.maxine.",
        ],
        &|id| format!("_shop._tcp.maxine. 5 IN SRV 1 1 80 {id}.shop.dc1.maxine."),
    );
    assert_eq!(lines(&srv.answers), want, "with {pad} more");
    let want = with_pads(
        &[
            "b.shop.dc1.maxine. 5 IN A 10.5.0.22",
            "c.shop.dc1.maxine. 5 IN AAAA fd00::5",
            "d.shop.dc1.maxine. 5 IN A 10.5.0.4",
        ],
        &|id| format!("{id}.shop.dc1.maxine. 5 IN A {}", pad_ip(id)),
    );
    assert_eq!(lines(&srv.additionals), want, "with {pad} more");
    let gone = s.ask("a.shop.dc1.maxine.", RecordType::A).await;
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
    // The last instance going takes every name with it.
    for id in pads.iter().map(String::as_str).chain(["b", "c", "d"]) {
        let r = s
            .http
            .delete(format!("{}/v1/services/shop/instances/{id}", s.http_base()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for name in [
        "shop.maxine.",
        "_shop._tcp.maxine.",
        "shop.dc1.maxine.",
        "d.shop.dc1.maxine.",
    ] {
        let m = s.ask(name, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
    }
}

/// The address of padding instance `p<i>`.
fn pad_ip(id: &str) -> String {
    format!("10.6.0.{}", &id[1..])
}

#[tokio::test]
async fn changing_one_instance_of_a_small_service_leaves_the_others_answered_as_before() {
    change_one_instance_of_a_service(0).await;
}

#[tokio::test]
async fn changing_one_instance_of_a_large_service_leaves_the_others_answered_as_before() {
    // Ten instances and more: the builder keeps their encoding between changes.
    change_one_instance_of_a_service(8).await;
}

#[tokio::test]
async fn empty_non_terminals_come_and_go_with_the_services_under_them() {
    let s = TestServer::start().await;
    let code = |m: Message| m.metadata.response_code;
    assert_eq!(
        code(s.ask("_tcp.maxine.", RecordType::A).await),
        ResponseCode::NXDomain
    );
    s.register("one", "a", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    s.register("two", "a", json!({"address": "10.0.0.2", "port": 80}))
        .await;
    for ent in ["_tcp.maxine.", "_tcp.dc1.maxine.", "dc1.maxine."] {
        assert_eq!(
            code(s.ask(ent, RecordType::A).await),
            ResponseCode::NoError,
            "{ent}"
        );
    }
    let delete = |svc: &'static str| {
        s.http
            .delete(format!("{}/v1/services/{svc}/instances/a", s.http_base()))
            .send()
    };
    assert_eq!(delete("one").await.unwrap().status(), 200);
    // `two` still holds them up.
    assert_eq!(
        code(s.ask("_tcp.maxine.", RecordType::A).await),
        ResponseCode::NoError
    );
    assert_eq!(delete("two").await.unwrap().status(), 200);
    for ent in ["_tcp.maxine.", "_tcp.dc1.maxine.", "dc1.maxine."] {
        assert_eq!(
            code(s.ask(ent, RecordType::A).await),
            ResponseCode::NXDomain,
            "{ent}"
        );
    }
    s.register("one", "a", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    assert_eq!(
        code(s.ask("_tcp.maxine.", RecordType::A).await),
        ResponseCode::NoError
    );
    assert_eq!(s.ask("one.maxine.", RecordType::A).await.answers.len(), 1);
}

#[tokio::test]
async fn a_service_cannot_take_a_name_of_the_static_zone() {
    let s = TestServer::start().await;
    let r = s
        .http
        .put(format!("{}/v1/services/ns/instances/a", s.http_base()))
        .json(&json!({"address": "10.6.6.6", "port": 80}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let m = s.ask("ns.maxine.", RecordType::A).await;
    assert_eq!(lines(&m.answers), ["ns.maxine. 3600 IN A 127.0.0.1"]);
}

#[tokio::test]
async fn rejected_queries_with_edns_carry_an_opt_and_other_classes_are_refused() {
    let s = fixture().await;
    // NOTIMP for a query with EDNS: our OPT comes along.
    let mut q = query("payments.maxine.", RecordType::A, Some((1232, 0)));
    q[2] = 5 << 3;
    let r = s.udp_raw(&q).await.unwrap();
    assert_eq!(r[3] & 0x0F, 4);
    assert_eq!(&r[10..12], &[0, 1], "one additional record: the OPT");
    assert_eq!(&r[12..15], &[0, 0, 41]);
    // An OPT whose owner is not the root is malformed.
    let mut q = query("payments.maxine.", RecordType::A, None);
    q[11] = 1;
    q.extend([1, b'x', 0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 0]);
    let r = s.udp_raw(&q).await.unwrap();
    assert_eq!(r[3] & 0x0F, 1, "FORMERR");
    // Classes ANY and NONE are refused like CH.
    for class in [255u8, 254] {
        let mut q = query("payments.maxine.", RecordType::A, None);
        let n = q.len();
        q[n - 1] = class;
        let m = Message::from_vec(&s.udp_raw(&q).await.unwrap()).unwrap();
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::Refused,
            "class {class}"
        );
    }
    // QR=1 over TCP: no reply, and the connection goes on.
    let replies = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        // Only one reply may come, so read one.
        let mut c = tokio::net::TcpStream::connect(s.dns_addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut bytes = Vec::new();
        let mut r = query("payments.maxine.", RecordType::A, None);
        r[2] |= 0x80;
        for p in [r, query("payments.maxine.", RecordType::A, None)] {
            bytes.extend((p.len() as u16).to_be_bytes());
            bytes.extend(p);
        }
        c.write_all(&bytes).await.unwrap();
        let len = c.read_u16().await.unwrap() as usize;
        let mut buf = vec![0; len];
        c.read_exact(&mut buf).await.unwrap();
        buf
    })
    .await
    .unwrap();
    let m = Message::from_vec(&replies).unwrap();
    assert_eq!(
        m.answers.len(),
        2,
        "the response was skipped, the query answered"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_hold_its_connection_or_shutdown() {
    use tokio::io::AsyncWriteExt;
    let s = TestServer::start_with(|c| {
        c.dns.tcp_idle_timeout =
            maxine::config::DurationValue(std::time::Duration::from_millis(300));
    })
    .await;
    big_service(&s).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut c = sock.connect(s.dns_addr).await.unwrap();
    let q = query("_big._tcp.maxine.", RecordType::SRV, None);
    let mut bytes = Vec::new();
    for _ in 0..2000 {
        bytes.extend((q.len() as u16).to_be_bytes());
        bytes.extend(&q);
    }
    // Send everything, read nothing.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), c.write_all(&bytes)).await;
    tokio::time::timeout(std::time::Duration::from_secs(5), s.stop())
        .await
        .expect("shutdown is not held up by a client that does not read");
}

#[tokio::test]
async fn tcp_connections_in_total_are_capped() {
    let s = TestServer::start_with(|c| c.dns.tcp_max_connections = 2).await;
    let _a = tokio::net::TcpStream::connect(s.dns_addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(s.dns_addr).await.unwrap();
    assert_eventually!(
        new_connection_is_closed(&s).await,
        "a third connection is closed"
    );
}

/// A server dropped with its runtime (as every test's server is: the
/// shutdown task never runs again) stops its UDP worker threads and frees
/// the port.
#[test]
fn udp_workers_stop_when_the_runtime_of_their_server_ends() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let s = TestServer::start().await;
        assert!(
            s.udp_raw(&query("maxine.", RecordType::SOA, None))
                .await
                .is_some()
        );
        s.dns_addr
    });
    drop(rt);
    let start = std::time::Instant::now();
    while std::net::UdpSocket::bind(addr).is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "the UDP port is still held"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
