//! The instance names below a service name (`<id>.<service>.<dc>.<zone>`),
//! in one sorted buffer searched by id.

use super::super::encoded::{A_TAIL, AAAA_TAIL, AT_QNAME, InstanceWire, offset};
use super::super::wire::types;

/// The instance names below a service name: each instance's id label and
/// its address records (A, then AAAA, each with the question pointer as
/// owner), back to back in one buffer, sorted by id for a binary search. A
/// name per instance in the map would cost a key, a node and a section
/// each; this costs the bytes.
///
/// One allocation (none when empty): `[n: u32][entries: n x (id end, A
/// records end, AAAA records end): 3 x u32][ids and records]`
/// (little-endian), where instance `i`'s id starts where instance `i - 1`'s
/// records end. Records have fixed sizes per type, so the lengths give the
/// counts; an instance with none (a host name not resolved) answers NODATA.
#[derive(Clone, Debug, Default)]
pub(super) struct InstanceTable {
    buf: Box<[u8]>,
}

/// Bytes of one A and one AAAA record in the table.
const A_RECORD: usize = AT_QNAME.len() + A_TAIL;
const AAAA_RECORD: usize = AT_QNAME.len() + AAAA_TAIL;

/// What an instance name holds: its A and AAAA records, each run with its
/// count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct InstanceRecords<'a> {
    pub(super) a: &'a [u8],
    pub(super) aaaa: &'a [u8],
}

impl<'a> InstanceRecords<'a> {
    /// The records of type `rtype` and their count (empty for none).
    pub(super) fn of_type(&self, rtype: u16) -> (&'a [u8], u16) {
        match rtype {
            types::A => (self.a, (self.a.len() / A_RECORD) as u16),
            types::AAAA => (self.aaaa, (self.aaaa.len() / AAAA_RECORD) as u16),
            _ => (&[], 0),
        }
    }
}

impl InstanceTable {
    /// `instances`: (lowercase id label, records) in id order.
    pub(super) fn new<'a>(
        instances: impl Iterator<Item = (&'a [u8], InstanceWire<'a>)> + Clone,
    ) -> Self {
        let (mut n, mut size) = (0, 0);
        for (id, w) in instances.clone() {
            n += 1;
            size += id.len()
                + w.addr_count(types::A) * A_RECORD
                + w.addr_count(types::AAAA) * AAAA_RECORD;
        }
        if n == 0 {
            return Self::default();
        }
        let data_at = 4 + 12 * n;
        let mut buf = vec![0u8; data_at];
        buf.reserve_exact(size);
        buf[..4].copy_from_slice(&offset(n).to_le_bytes());
        for (i, (id, w)) in instances.enumerate() {
            let mut ends = [0u32; 3];
            buf.extend_from_slice(id);
            ends[0] = offset(buf.len() - data_at);
            for (k, rtype) in [types::A, types::AAAA].into_iter().enumerate() {
                for tail in w.addr_tails(rtype) {
                    buf.extend_from_slice(&AT_QNAME);
                    buf.extend_from_slice(tail);
                }
                ends[k + 1] = offset(buf.len() - data_at);
            }
            let at = 4 + 12 * i;
            for (k, end) in ends.iter().enumerate() {
                buf[at + 4 * k..at + 4 * k + 4].copy_from_slice(&end.to_le_bytes());
            }
        }
        Self {
            buf: buf.into_boxed_slice(),
        }
    }

    pub(super) fn u32_at(&self, at: usize) -> u32 {
        let b: [u8; 4] = self.buf[at..at + 4].try_into().expect("four bytes");
        u32::from_le_bytes(b)
    }

    pub(super) fn len(&self) -> usize {
        if self.buf.is_empty() {
            0
        } else {
            self.u32_at(0) as usize
        }
    }

    /// Instance `i`'s (id end, A records end, AAAA records end), offsets
    /// into the ids and records.
    pub(super) fn entry(&self, i: usize) -> (usize, usize, usize) {
        let at = 4 + 12 * i;
        (
            self.u32_at(at) as usize,
            self.u32_at(at + 4) as usize,
            self.u32_at(at + 8) as usize,
        )
    }

    /// The instance whose id is `label` (lowercase): its records.
    pub(super) fn find(&self, label: &[u8]) -> Option<InstanceRecords<'_>> {
        let n = self.len();
        let data = self.buf.get(4 + 12 * n..)?;
        let start = |i: usize| if i == 0 { 0 } else { self.entry(i - 1).2 };
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (id_end, a_end, aaaa_end) = self.entry(mid);
            match data[start(mid)..id_end].cmp(label) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    return Some(InstanceRecords {
                        a: &data[id_end..a_end],
                        aaaa: &data[a_end..aaaa_end],
                    });
                }
            }
        }
        None
    }
}
