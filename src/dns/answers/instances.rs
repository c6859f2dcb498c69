//! The instance names below a service name (`<id>.<service>.<dc>.<zone>`),
//! in one sorted buffer searched by id.

use super::super::encoded::{AT_QNAME, offset};

/// The instance names below a service name: each instance's id label and
/// its address record, back to back in one buffer, sorted by id for a
/// binary search. A name per instance in the map would cost a key, a node
/// and a section each; this costs the bytes.
///
/// One allocation (none when empty): `[n: u32][entries: n x (id end,
/// record end, record type): 3 x u32][ids and records]` (little-endian),
/// where instance `i`'s id starts where instance `i - 1`'s record ends, and
/// a record type of 0 means no address record (a host-name instance).
#[derive(Clone, Debug, Default)]
pub(super) struct InstanceTable {
    buf: Box<[u8]>,
}

impl InstanceTable {
    /// `instances`: (lowercase id label, address record type and tail) in
    /// id order; each record gets the question pointer as owner.
    pub(super) fn new<'a>(
        instances: impl Iterator<Item = (&'a [u8], Option<(u16, &'a [u8])>)> + Clone,
    ) -> Self {
        let (mut n, mut size) = (0, 0);
        for (id, rec) in instances.clone() {
            n += 1;
            size += id.len() + rec.map_or(0, |(_, r)| AT_QNAME.len() + r.len());
        }
        if n == 0 {
            return Self::default();
        }
        let data_at = 4 + 12 * n;
        let mut buf = vec![0u8; data_at];
        buf.reserve_exact(size);
        buf[..4].copy_from_slice(&offset(n).to_le_bytes());
        for (i, (id, rec)) in instances.enumerate() {
            buf.extend_from_slice(id);
            let id_end = offset(buf.len() - data_at);
            let rtype = rec.map_or(0, |(t, r)| {
                buf.extend_from_slice(&AT_QNAME);
                buf.extend_from_slice(r);
                t
            });
            let rec_end = offset(buf.len() - data_at);
            let at = 4 + 12 * i;
            buf[at..at + 4].copy_from_slice(&id_end.to_le_bytes());
            buf[at + 4..at + 8].copy_from_slice(&rec_end.to_le_bytes());
            buf[at + 8..at + 12].copy_from_slice(&u32::from(rtype).to_le_bytes());
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

    /// Instance `i`'s (id end, record end, record type), offsets into the
    /// ids and records.
    pub(super) fn entry(&self, i: usize) -> (usize, usize, u16) {
        let at = 4 + 12 * i;
        let rtype = u16::try_from(self.u32_at(at + 8)).unwrap_or(0);
        (
            self.u32_at(at) as usize,
            self.u32_at(at + 4) as usize,
            rtype,
        )
    }

    /// The instance whose id is `label` (lowercase): its record type and
    /// record (empty for none).
    pub(super) fn find(&self, label: &[u8]) -> Option<(u16, &[u8])> {
        let n = self.len();
        let data = self.buf.get(4 + 12 * n..)?;
        let start = |i: usize| if i == 0 { 0 } else { self.entry(i - 1).1 };
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (id_end, rec_end, rtype) = self.entry(mid);
            match data[start(mid)..id_end].cmp(label) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some((rtype, &data[id_end..rec_end])),
            }
        }
        None
    }
}
