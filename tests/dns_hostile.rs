//! Hostile and malformed packets: Maxine never panics, answers with the
//! right rcode or drops the packet, and keeps serving.

mod common;

use common::{TestServer, query};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::json;

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn rcode_of(reply: &[u8]) -> u8 {
    reply[3] & 0x0F
}

#[tokio::test]
async fn specific_malformations_get_formerr() {
    let s = TestServer::start().await;
    let good = query("a.maxine.", RecordType::A, None);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // Question cut short.
    cases.push(("truncated question", good[..good.len() - 3].to_vec()));
    // A compression pointer in the question that points at itself.
    let mut p = good[..12].to_vec();
    p.extend([0xC0, 0x0C, 0, 1, 0, 1]);
    cases.push(("pointer loop in question", p));
    // Extended label type (0x40).
    let mut p = good[..12].to_vec();
    p.extend([0x41, b'a', 0, 0, 1, 0, 1]);
    cases.push(("extended label type", p));
    // A name longer than 255 bytes.
    let mut p = good[..12].to_vec();
    for _ in 0..5 {
        p.push(63);
        p.extend([b'x'; 63]);
    }
    p.extend([0, 0, 1, 0, 1]);
    cases.push(("name over 255 bytes", p));
    // ARCOUNT says one record but none follows.
    let mut p = good.clone();
    p[11] = 1;
    cases.push(("missing additional record", p));
    // An additional record whose length runs past the end.
    let mut p = good.clone();
    p[11] = 1;
    p.extend([0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 50, 1, 2]);
    cases.push(("record overruns the packet", p));
    // An OPT record in the answer section.
    let mut p = good.clone();
    p[7] = 1;
    p.extend([0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 0]);
    cases.push(("OPT outside the additional section", p));
    // Malformed EDNS Client Subnet options (RFC 7871 7.1.1): FORMERR.
    let ecs = |family: u16, source: u8, addr: &[u8]| {
        let mut p = query("a.maxine.", RecordType::A, Some((1232, 0)));
        let mut opt = vec![0, 8];
        opt.extend(((4 + addr.len()) as u16).to_be_bytes());
        opt.extend(family.to_be_bytes());
        opt.extend([source, 0]);
        opt.extend(addr);
        let n = p.len();
        p[n - 2..].copy_from_slice(&(opt.len() as u16).to_be_bytes());
        p.extend(opt);
        p
    };
    cases.push(("client subnet of family 3", ecs(3, 8, &[10])));
    cases.push(("client subnet /33", ecs(1, 33, &[10, 0, 0, 1, 0])));
    cases.push(("client subnet /129", ecs(2, 129, &[0xfd; 17])));
    cases.push(("client subnet bits past /20", ecs(1, 20, &[10, 0, 0x1F])));
    cases.push(("client subnet address too long", ecs(1, 8, &[10, 0])));
    let mut p = ecs(1, 24, &[10, 0, 0]);
    let n = p.len();
    p[n - 9] = 200; // the option's length runs past the OPT's data
    cases.push(("client subnet option overruns", p));
    // A TSIG record that is not the last one (RFC 8945 5.1).
    let mut p = query("a.maxine.", RecordType::A, Some((1232, 0)));
    let opt = p.split_off(p.len() - 11);
    p[11] = 2;
    p.extend([3, b'k', b'e', b'y', 0, 0, 250, 0, 255, 0, 0, 0, 0, 0, 0]);
    p.extend(opt);
    cases.push(("TSIG before the OPT record", p));
    // A last TSIG record of 2000 bytes of junk: not a TSIG, FORMERR (and
    // no reply squeezed below its header by the room kept for a TSIG).
    let mut p = query("a.maxine.", RecordType::A, None);
    p[11] = 1;
    p.extend([3, b'k', b'e', b'y', 0, 0, 250, 0, 255, 0, 0, 0, 0]);
    p.extend(2000u16.to_be_bytes());
    p.extend((0..2000).map(|i| (i * 7) as u8));
    cases.push(("a huge junk TSIG record", p));
    for (what, packet) in cases {
        let reply = s
            .udp_raw(&packet)
            .await
            .unwrap_or_else(|| panic!("{what}: no reply"));
        assert_eq!(rcode_of(&reply), 1, "{what}: FORMERR");
        assert_eq!(&reply[..2], &packet[..2], "{what}: id echoed");
        assert_eq!(reply[2] & 0x80, 0x80, "{what}: QR");
    }
    // A compression loop in an additional record is stepped over without
    // following it: the query is answered normally.
    let mut p = query("maxine.", RecordType::SOA, None);
    p[11] = 1;
    let at = p.len() as u8;
    p.extend([0xC0, at, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
    let m = Message::from_vec(&s.udp_raw(&p).await.unwrap()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    // Too short to carry a header: dropped.
    assert_eq!(s.udp_raw(&[0x12, 0x34, 0x01]).await, None);
}

#[tokio::test]
async fn random_and_mutated_packets_never_break_the_server() {
    let s = TestServer::start().await;
    s.register("payments", "a", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let base = query("payments.maxine.", RecordType::A, Some((1232, 0)));
    let mut with_ecs = base.clone();
    let n = with_ecs.len();
    with_ecs[n - 2..].copy_from_slice(&11u16.to_be_bytes());
    with_ecs.extend([0, 8, 0, 7, 0, 1, 24, 0, 10, 1, 2]);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut sent = Vec::new();
    for i in 0..4000 {
        let packet = if i % 2 == 0 {
            let len = (rng.next() % 300) as usize;
            (0..len).map(|_| rng.next() as u8).collect::<Vec<u8>>()
        } else {
            // Every other mutation starts from a query with a Client Subnet.
            let mut p = if i % 4 == 1 {
                base.clone()
            } else {
                with_ecs.clone()
            };
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() as usize) % p.len();
                p[at] = rng.next() as u8;
            }
            if rng.next().is_multiple_of(4) {
                p.truncate((rng.next() as usize) % p.len());
            }
            p
        };
        sock.send_to(&packet, s.dns_addr).await.unwrap();
        sent.push(packet);
        if i % 200 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Every reply that came back is a well-formed DNS message answering one
    // of the packets (same ID), and never has QR=0.
    let mut buf = vec![0u8; 65_535];
    let mut replies = 0;
    while let Ok(Ok((n, _))) = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        sock.recv_from(&mut buf),
    )
    .await
    {
        let r = &buf[..n];
        assert!(n >= 12 && r[2] & 0x80 != 0, "a reply, not a query");
        Message::from_vec(r).unwrap_or_else(|e| panic!("malformed reply {r:02x?}: {e}"));
        assert!(sent.iter().any(|p| p.len() >= 2 && p[..2] == r[..2]));
        replies += 1;
    }
    assert!(
        replies > 100,
        "the mutated queries were mostly answered ({replies})"
    );
    // Still serving.
    let m = s.ask("payments.maxine.", RecordType::A).await;
    assert_eq!(m.answers.len(), 1);
    // Over TCP too, including a garbage frame on the same connection.
    let replies = s
        .tcp_raw(&[
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
            query("payments.maxine.", RecordType::A, None),
        ])
        .await;
    assert_eq!(rcode_of(&replies[0]), 1);
    assert_eq!(Message::from_vec(&replies[1]).unwrap().answers.len(), 1);
}
