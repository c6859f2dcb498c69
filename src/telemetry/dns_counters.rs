//! The DNS front end's counters, written on the query path and read at
//! scrape time.
//!
//! Each UDP worker owns one [`DnsSlot`] that only it writes, with plain
//! `Relaxed` loads and stores (no read-modify-write, no shared cache line:
//! a slot is aligned to 128 bytes); the scrape sums the slots. The TCP front
//! end runs on many tasks, so its one slot is written with `fetch_add`
//! (TCP queries are few beside UDP's). With metrics off the workers get no
//! slot at all and count nothing.
//!
//! What a query came to is read from the response bytes (the rcode and TC
//! bit of the header, the type of the question), so the answer path needs
//! no changes to be counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

/// The query types counted by name; every other type is `other`.
pub const QTYPES: [(u16, &str); 10] = [
    (1, "A"),
    (28, "AAAA"),
    (33, "SRV"),
    (16, "TXT"),
    (12, "PTR"),
    (6, "SOA"),
    (2, "NS"),
    (5, "CNAME"),
    (255, "ANY"),
    (0, "other"),
];

/// The response codes counted by name (by their number 0..=5); others are
/// `other`.
pub const RCODES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other",
];

/// Upper bounds (bytes) of the answer size buckets.
pub const SIZE_BUCKETS: [u64; 7] = [64, 128, 256, 512, 1232, 4096, 65535];

const CELLS: usize = QTYPES.len() * RCODES.len();

/// One writer's counters. See the module docs for who writes how.
#[repr(align(128))]
#[derive(Debug)]
pub struct DnsSlot {
    /// Written by several tasks at once (TCP): `fetch_add`.
    shared: bool,
    transport: &'static str,
    /// Responses by (query type, rcode).
    queries: [AtomicU64; CELLS],
    truncated: AtomicU64,
    /// Responses by size bucket (not cumulative; the scrape adds them up).
    sizes: [AtomicU64; SIZE_BUCKETS.len()],
    size_sum: AtomicU64,
    shed: AtomicU64,
    rate_limited: AtomicU64,
}

impl DnsSlot {
    fn new(transport: &'static str, shared: bool) -> Self {
        Self {
            shared,
            transport,
            queries: std::array::from_fn(|_| AtomicU64::new(0)),
            truncated: AtomicU64::new(0),
            sizes: std::array::from_fn(|_| AtomicU64::new(0)),
            size_sum: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        }
    }

    #[inline]
    fn bump(&self, c: &AtomicU64, n: u64) {
        if self.shared {
            c.fetch_add(n, Ordering::Relaxed);
        } else {
            // The only writer: no read-modify-write needed.
            c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        }
    }

    /// Counts a response about to be sent (its final bytes: after rate
    /// limiting's truncation, if any).
    #[inline]
    pub fn answered(&self, response: &[u8]) {
        let (qtype, rcode, truncated) = classify(response);
        self.bump(&self.queries[qtype * RCODES.len() + rcode], 1);
        if truncated {
            self.bump(&self.truncated, 1);
        }
        let len = response.len() as u64;
        let bucket = SIZE_BUCKETS
            .iter()
            .position(|b| len <= *b)
            .unwrap_or(SIZE_BUCKETS.len() - 1);
        self.bump(&self.sizes[bucket], 1);
        self.bump(&self.size_sum, len);
    }

    /// A query dropped because it waited too long in the socket buffer.
    #[inline]
    pub fn shed(&self) {
        self.bump(&self.shed, 1);
    }

    /// A response dropped or truncated by rate limiting.
    #[inline]
    pub fn rate_limited(&self) {
        self.bump(&self.rate_limited, 1);
    }
}

/// (query type position in [`QTYPES`], rcode position in [`RCODES`], TC).
fn classify(r: &[u8]) -> (usize, usize, bool) {
    let other_type = QTYPES.len() - 1;
    if r.len() < 12 {
        return (other_type, RCODES.len() - 1, false);
    }
    let truncated = r[2] & 0x02 != 0;
    let rcode = usize::from(r[3] & 0x0f).min(RCODES.len() - 1);
    let qdcount = u16::from_be_bytes([r[4], r[5]]);
    let mut qtype = other_type;
    if qdcount > 0 {
        let mut at = 12;
        while let Some(&len) = r.get(at) {
            if len == 0 {
                at += 1;
                break;
            }
            if len & 0xc0 != 0 {
                at += 2;
                break;
            }
            at += 1 + usize::from(len);
        }
        if let (Some(&hi), Some(&lo)) = (r.get(at), r.get(at + 1)) {
            let t = u16::from_be_bytes([hi, lo]);
            qtype = QTYPES
                .iter()
                .position(|(n, _)| *n == t && t != 0)
                .unwrap_or(other_type);
        }
    }
    (qtype, rcode, truncated)
}

/// Every slot, for the scrape. Cloning copies one `Arc`.
#[derive(Clone, Debug, Default)]
pub struct DnsCounters {
    slots: Arc<Mutex<Vec<Arc<DnsSlot>>>>,
}

impl DnsCounters {
    /// A slot for one UDP worker thread (only it may write it).
    pub fn udp_worker(&self) -> Arc<DnsSlot> {
        self.add(DnsSlot::new("udp", false))
    }

    /// The one slot of the TCP front end (written by every connection).
    pub fn tcp(&self) -> Arc<DnsSlot> {
        self.add(DnsSlot::new("tcp", true))
    }

    fn add(&self, slot: DnsSlot) -> Arc<DnsSlot> {
        let slot = Arc::new(slot);
        self.lock().push(slot.clone());
        slot
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<DnsSlot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A counter by transport: name, help, its sum.
type Simple = (&'static str, &'static str, fn(&Sums) -> u64);

/// Sums of the slots of one transport.
#[derive(Default)]
struct Sums {
    queries: Vec<u64>,
    truncated: u64,
    sizes: [u64; SIZE_BUCKETS.len()],
    size_sum: u64,
    shed: u64,
    rate_limited: u64,
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Collector for DnsCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut by_transport: Vec<(&'static str, Sums)> = Vec::new();
        for slot in self.lock().iter() {
            let at = match by_transport.iter().position(|(t, _)| *t == slot.transport) {
                Some(at) => at,
                None => {
                    by_transport.push((
                        slot.transport,
                        Sums {
                            queries: vec![0; CELLS],
                            ..Sums::default()
                        },
                    ));
                    by_transport.len() - 1
                }
            };
            let s = &mut by_transport[at].1;
            for (sum, c) in s.queries.iter_mut().zip(&slot.queries) {
                *sum += load(c);
            }
            s.truncated += load(&slot.truncated);
            for (sum, c) in s.sizes.iter_mut().zip(&slot.sizes) {
                *sum += load(c);
            }
            s.size_sum += load(&slot.size_sum);
            s.shed += load(&slot.shed);
            s.rate_limited += load(&slot.rate_limited);
        }

        let mut m = encoder.encode_descriptor(
            "maxine_dns_responses",
            "DNS responses sent, by query type, response code and transport.",
            None,
            MetricType::Counter,
        )?;
        for (transport, s) in &by_transport {
            for (cell, n) in s.queries.iter().enumerate() {
                if *n == 0 {
                    continue;
                }
                let labels = [
                    ("type", QTYPES[cell / RCODES.len()].1),
                    ("rcode", RCODES[cell % RCODES.len()]),
                    ("transport", transport),
                ];
                ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        let simple: [Simple; 3] = [
            (
                "maxine_dns_truncated",
                "DNS responses sent truncated (TC=1), by transport.",
                |s| s.truncated,
            ),
            (
                "maxine_dns_shed",
                "DNS queries dropped unanswered because they waited longer than dns.max_queue_delay.",
                |s| s.shed,
            ),
            (
                "maxine_dns_rate_limited",
                "DNS responses dropped or truncated by response rate limiting.",
                |s| s.rate_limited,
            ),
        ];
        for (name, help, get) in simple {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (transport, s) in &by_transport {
                ConstCounter::new(get(s)).encode(m.encode_family(&[("transport", *transport)])?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "maxine_dns_response_size_bytes",
            "Size of DNS responses sent, in bytes, by transport.",
            None,
            MetricType::Histogram,
        )?;
        for (transport, s) in &by_transport {
            // The encoder adds the buckets up itself.
            let buckets: Vec<(f64, u64)> = SIZE_BUCKETS
                .iter()
                .zip(s.sizes)
                .map(|(b, n)| (*b as f64, n))
                .collect();
            let count = s.sizes.iter().sum();
            m.encode_family(&[("transport", *transport)])?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                s.size_sum as f64,
                count,
                &buckets,
                None,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(qtype: u16, rcode: u8, tc: bool) -> Vec<u8> {
        let mut r = vec![
            0x12,
            0x34,
            0x84 | if tc { 0x02 } else { 0 },
            rcode,
            0,
            1,
            0,
            0,
        ];
        r.extend([0, 0, 0, 0]);
        r.extend([
            3, b'w', b'e', b'b', 6, b'm', b'a', b'x', b'i', b'n', b'e', 0,
        ]);
        r.extend(qtype.to_be_bytes());
        r.extend([0, 1]);
        r
    }

    #[test]
    fn responses_are_classified_by_their_question_type_rcode_and_tc_bit() {
        assert_eq!(classify(&response(1, 0, false)), (0, 0, false));
        assert_eq!(classify(&response(33, 3, true)), (2, 3, true));
        assert_eq!(classify(&response(99, 9, false)), (9, 6, false));
        assert_eq!(classify(&[1, 2, 3]), (9, 6, false));
        // Every named type at its place in the table; type 0 is `other`.
        for (at, (t, _)) in QTYPES.iter().enumerate() {
            assert_eq!(classify(&response(*t, 0, false)).0, at, "type {t}");
        }
        assert_eq!(classify(&response(0, 0, false)).0, QTYPES.len() - 1);
        // A question cut short: the type is unknown, nothing panics.
        assert_eq!(classify(&response(1, 0, false)[..20]), (9, 0, false));
    }

    #[test]
    fn the_scrape_sums_every_workers_slot() {
        let c = DnsCounters::default();
        let (a, b, t) = (c.udp_worker(), c.udp_worker(), c.tcp());
        a.answered(&response(1, 0, false));
        b.answered(&response(1, 0, false));
        t.answered(&response(33, 3, true));
        a.shed();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(c));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"maxine_dns_responses_total{type="A",rcode="NOERROR",transport="udp"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"maxine_dns_responses_total{type="SRV",rcode="NXDOMAIN",transport="tcp"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"maxine_dns_truncated_total{transport="tcp"} 1"#));
        assert!(text.contains(r#"maxine_dns_shed_total{transport="udp"} 1"#));
    }
}
