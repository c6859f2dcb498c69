//! Arbitrary bytes into the DNS request handler: it must never panic, and
//! every reply it writes must be a well-formed DNS message with QR set,
//! within the size limit of its transport.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use maxine::core::{QueryContext, Transport};
use maxine::dns::ReadyAnswers;

fn answers() -> &'static ReadyAnswers {
    static A: OnceLock<ReadyAnswers> = OnceLock::new();
    // Services with 1 to 60 instances: small answers, truncated ones, SRV.
    A.get_or_init(|| maxine::dns::testing::sample(20, 60, 32).1)
}

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        let tcp = transport == Transport::Tcp;
        let ctx = QueryContext::new(Some([127, 0, 0, 1].into()), transport);
        if answers().respond_unguarded(data, &mut out, ctx) {
            assert!(out.len() >= 12 && out[2] & 0x80 != 0, "reply with QR set");
            let limit = if tcp { 65_535 } else { 1232 };
            assert!(out.len() <= limit, "reply over the size limit");
            if let Err(e) = hickory_proto::op::Message::from_vec(&out) {
                panic!("malformed reply {out:02x?} to {data:02x?}: {e}");
            }
        }
    }
});
