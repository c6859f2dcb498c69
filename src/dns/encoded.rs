//! The answer builder's copy of each service's instances, encoded as DNS
//! records: what a change of the service rebuilds the service's record sets
//! from.
//!
//! A service's instances live in one buffer, in id order, so that building
//! its sets reads memory front to back instead of following a pointer per
//! instance, and a change copies the unchanged instances in runs.

use std::ops::Range;

use super::wire::types;
use crate::core::InstanceId;

/// Where the target name starts in an SRV record: pointer, type, class,
/// TTL, RDLENGTH, then priority, weight and port.
pub(super) const SRV_TARGET_AT: usize = SRV_PRIORITY_AT + 6;

/// Where the priority is in an SRV record: pointer, type, class, TTL,
/// RDLENGTH.
pub(crate) const SRV_PRIORITY_AT: usize = 2 + 10;

/// The owner of every pre-encoded record: a pointer to the question name.
pub(super) const AT_QNAME: [u8; 2] = [0xC0, 0x0C];

/// The length of an A record's tail (type, class, TTL, RDLENGTH, RDATA).
pub(super) const A_TAIL: usize = 10 + 4;
/// The length of an AAAA record's tail.
pub(super) const AAAA_TAIL: usize = 10 + 16;

/// One instance's records: the SRV record, owner a pointer to the question
/// (`C0 0C`): the local tier's priority, the instance's weight and port, and
/// its target, the instance name, uncompressed (RFC 2782 forbids compressing
/// it); then its address records, A first, then AAAA: the first as a tail
/// (type to RDATA) only, each further one as the instance name and a tail.
/// So everything from the target on is, verbatim, the additional records an
/// SRV answer carries for it, and set building copies them in one piece.
///
/// An IP instance has one address record; one registered by a host name
/// has those of its resolved addresses (none while unresolved: then it is
/// in no answer but its name's, which has no data).
#[derive(Clone, Copy, Debug)]
pub(super) struct InstanceWire<'a> {
    buf: &'a [u8],
    srv_len: u16,
    /// How many A and AAAA records follow the SRV record.
    a: u8,
    aaaa: u8,
}

impl<'a> InstanceWire<'a> {
    pub(super) fn srv(&self) -> &'a [u8] {
        &self.buf[..self.srv_len as usize]
    }

    /// How many address records of type `rtype` it has.
    pub(super) fn addr_count(&self, rtype: u16) -> usize {
        match rtype {
            types::A => self.a as usize,
            types::AAAA => self.aaaa as usize,
            _ => 0,
        }
    }

    /// The tails (type to RDATA) of its address records of type `rtype`.
    pub(super) fn addr_tails(&self, rtype: u16) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        let name_len = self.srv_len as usize - SRV_TARGET_AT;
        let (skip, n, len) = match rtype {
            types::A => (0, self.a as usize, A_TAIL),
            types::AAAA => (self.a as usize, self.aaaa as usize, AAAA_TAIL),
            _ => (0, 0, 0),
        };
        let buf = self.buf;
        let first = self.srv_len as usize + skip * (name_len + A_TAIL);
        // Record j's tail starts after the SRV record, the j tails before it
        // and the j names before them (record 0's name is the SRV target).
        (0..n).map(move |k| {
            let at = first + k * (name_len + len);
            &buf[at..at + len]
        })
    }

    /// The target's address records, complete, for the additional section,
    /// and how many there are; None when it has none.
    pub(super) fn additional(&self) -> Option<(&'a [u8], u16)> {
        let n = u16::from(self.a) + u16::from(self.aaaa);
        (n > 0).then(|| (&self.buf[SRV_TARGET_AT..], n))
    }
}

/// What an encoder reports of the records it appended (see
/// [`EncodedInstances::push`]).
pub(super) struct Encoding {
    pub srv_len: u16,
    /// How many A and AAAA records follow the SRV record (see [`InstanceWire`]).
    pub a: u8,
    pub aaaa: u8,
}

struct Entry<V> {
    id: InstanceId,
    /// The instance value encoded. An unchanged instance is the same value
    /// (see [`SameValue`]): change detection does not depend on what the
    /// change index means (local, replicated or a shared log's revision).
    value: V,
    /// Where this instance's bytes end; they start where the previous
    /// instance's end: the id label, then the records ([`InstanceWire`]).
    end: u32,
    id_len: u8,
    srv_len: u16,
    a: u8,
    aaaa: u8,
}

/// Whether two values of an instance are one value: for registry
/// instances, one allocation (values are immutable but for their
/// heartbeat deadline, which DNS does not encode).
pub(super) trait SameValue: Clone {
    fn same(&self, other: &Self) -> bool;
}

impl SameValue for std::sync::Arc<crate::core::Instance> {
    fn same(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(self, other)
    }
}

/// Test values: a number stands for a value.
#[cfg(test)]
impl SameValue for u64 {
    fn same(&self, other: &Self) -> bool {
        self == other
    }
}

/// A service's instances, encoded, in id order, with the values encoded.
pub(super) struct EncodedInstances<V> {
    entries: Vec<Entry<V>>,
    bytes: Vec<u8>,
}

impl<V> Default for EncodedInstances<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            bytes: Vec::new(),
        }
    }
}

impl<V: SameValue> EncodedInstances<V> {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.entries[i - 1].end as usize
        }
    }

    /// The id label of instance `i` (lowercase, as ids are stored).
    pub(super) fn id(&self, i: usize) -> &[u8] {
        let at = self.start(i);
        &self.bytes[at..at + self.entries[i].id_len as usize]
    }

    pub(super) fn wire(&self, i: usize) -> InstanceWire<'_> {
        let e = &self.entries[i];
        InstanceWire {
            buf: &self.bytes[self.start(i) + e.id_len as usize..e.end as usize],
            srv_len: e.srv_len,
            a: e.a,
            aaaa: e.aaaa,
        }
    }

    /// Appends an instance: its id label, then whatever `encode` appends
    /// (the records of [`InstanceWire`]).
    pub(super) fn push(
        &mut self,
        id: &InstanceId,
        value: V,
        encode: impl FnOnce(&mut Vec<u8>) -> Encoding,
    ) {
        self.bytes.extend_from_slice(id.as_str().as_bytes());
        let e = encode(&mut self.bytes);
        self.entries.push(Entry {
            id: id.clone(),
            value,
            end: offset(self.bytes.len()),
            // A DNS label: at most 63 bytes.
            id_len: id.as_str().len() as u8,
            srv_len: e.srv_len,
            a: e.a,
            aaaa: e.aaaa,
        });
    }

    /// These instances updated to `next` (id order): unchanged instances
    /// (the same value) are moved over, their bytes copied in runs;
    /// `encode` appends the records of the changed and new ones. Consumes
    /// `self`, so that moving an unchanged entry touches no reference count.
    pub(super) fn merge<'n>(
        self,
        next: impl ExactSizeIterator<Item = (&'n InstanceId, &'n V)>,
        mut encode: impl FnMut(&V, &mut Vec<u8>) -> Encoding,
    ) -> Self
    where
        V: 'n,
    {
        let mut out = EncodedInstances {
            entries: Vec::with_capacity(next.len()),
            bytes: Vec::with_capacity(self.bytes.len() + 128),
        };
        let old_bytes = self.bytes;
        let mut old = self.entries.into_iter();
        // Where the next old entry's bytes start, and the run of old bytes
        // waiting to be copied.
        let mut old_at = 0usize;
        let mut run: Range<usize> = 0..0;
        let flush = |out: &mut EncodedInstances<V>, run: &mut Range<usize>| {
            out.bytes.extend_from_slice(&old_bytes[run.clone()]);
            *run = run.end..run.end;
        };
        for (id, value) in next {
            // An unchanged instance shares its id's allocation with the
            // encoded one: a pointer test, no string comparison.
            if !old.as_slice().first().is_some_and(|e| e.id.ptr_eq(id)) {
                let gone = old.as_slice().partition_point(|e| e.id < *id);
                for e in old.by_ref().take(gone) {
                    old_at = e.end as usize;
                }
            }
            let same = old.as_slice().first().is_some_and(|e| e.id == *id);
            let kept = same && old.as_slice()[0].value.same(value);
            if same {
                let mut e = old.next().expect("checked");
                let (from, to) = (old_at, e.end as usize);
                old_at = to;
                if kept {
                    if run.end != from {
                        flush(&mut out, &mut run);
                        run = from..from;
                    }
                    run.end = to;
                    e.end = offset(out.bytes.len() + run.len());
                    out.entries.push(e);
                    continue;
                }
            }
            flush(&mut out, &mut run);
            out.push(id, value.clone(), |bytes| encode(value, bytes));
        }
        flush(&mut out, &mut run);
        // A restore (everything new) grows the buffer by doubling, and the
        // builder keeps it until the service's next change: give back what
        // is far beyond the headroom a change needs.
        if out.bytes.capacity() - out.bytes.len() > out.bytes.len() / 16 + 16 {
            out.bytes.shrink_to_fit();
        }
        out
    }

    /// The entries' ids are in order (for debug assertions).
    pub(super) fn is_sorted(&self) -> bool {
        self.entries
            .is_sorted_by(|a, b| a.id.as_str() < b.id.as_str())
    }
}

/// An offset into a buffer of records, which are built from one service's
/// instances: far below 4 GiB.
pub(super) fn offset(len: usize) -> u32 {
    u32::try_from(len).expect("a record set below 4 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value as the merge sees it: its identity and the byte its records
    /// are made of.
    #[derive(Clone)]
    struct Value {
        index: u64,
        tag: u8,
    }

    impl SameValue for Value {
        fn same(&self, other: &Self) -> bool {
            self.index == other.index
        }
    }

    fn encode(v: &Value, out: &mut Vec<u8>) -> Encoding {
        // An SRV record of SRV_TARGET_AT + tag % 7 bytes; an A tail for
        // even tags.
        let srv_len = SRV_TARGET_AT + (v.tag % 7) as usize;
        out.extend(std::iter::repeat_n(v.tag, srv_len));
        let a = if v.tag.is_multiple_of(2) {
            out.extend([v.tag ^ 0xFF; A_TAIL]);
            1
        } else {
            0
        };
        Encoding {
            srv_len: srv_len as u16,
            a,
            aaaa: 0,
        }
    }

    fn ids(names: &[&str]) -> Vec<InstanceId> {
        names.iter().map(|n| InstanceId::new(n).unwrap()).collect()
    }

    /// Every entry as encoding from scratch would give it.
    fn check(e: &EncodedInstances<Value>, next: &[(InstanceId, Value)]) {
        assert_eq!(e.len(), next.len());
        for (i, (id, v)) in next.iter().enumerate() {
            let mut want = Vec::new();
            let enc = encode(v, &mut want);
            assert_eq!(e.id(i), id.as_str().as_bytes());
            let w = e.wire(i);
            assert_eq!(w.srv(), &want[..enc.srv_len as usize], "{id:?}");
            let tails: Vec<&[u8]> = w.addr_tails(types::A).collect();
            let want_tails: Vec<&[u8]> = (enc.a == 1)
                .then(|| &want[enc.srv_len as usize..])
                .into_iter()
                .collect();
            assert_eq!(tails, want_tails);
            assert_eq!(e.entries[i].value.index, v.index);
        }
        assert!(e.is_sorted());
    }

    /// `e` merged with `next`, and how many values were encoded.
    fn merge_counting(
        e: EncodedInstances<Value>,
        next: &[(InstanceId, Value)],
    ) -> (EncodedInstances<Value>, usize) {
        let mut calls = 0;
        let e = e.merge(next.iter().map(|(id, v)| (id, v)), |v, out| {
            calls += 1;
            encode(v, out)
        });
        (e, calls)
    }

    #[test]
    fn merging_keeps_unchanged_instances_and_encodes_only_the_rest() {
        let old_ids = ids(&["a", "b", "c", "d", "e", "f"]);
        // The first values: instance i at index i.
        let first_value = |i: usize, id: InstanceId| {
            (
                id,
                Value {
                    index: i as u64,
                    tag: i as u8 + 1,
                },
            )
        };
        let first: Vec<(InstanceId, Value)> = old_ids
            .iter()
            .enumerate()
            .map(|(i, id)| first_value(i, id.clone()))
            .collect();
        let (e, calls) = merge_counting(EncodedInstances::default(), &first);
        check(&e, &first);
        assert_eq!(calls, 6);

        // "a" and "d" removed, "c" changed, "bb" and "g" added, the rest
        // kept: the kept ids are clones of the encoded ones, as in a
        // snapshot; "e" is a new allocation of an equal id.
        let kept = first_value;
        let next = vec![
            kept(1, old_ids[1].clone()),
            (InstanceId::new("bb").unwrap(), Value { index: 10, tag: 40 }),
            (old_ids[2].clone(), Value { index: 11, tag: 41 }),
            kept(4, InstanceId::new("e").unwrap()),
            kept(5, old_ids[5].clone()),
            (InstanceId::new("g").unwrap(), Value { index: 12, tag: 42 }),
        ];
        let (e, calls) = merge_counting(e, &next);
        check(&e, &next);
        assert_eq!(calls, 3, "only bb, c and g are encoded");

        // Everything removed, then a fresh start.
        let e = e.merge(std::iter::empty(), encode);
        assert_eq!((e.len(), e.bytes.len()), (0, 0));
    }
}
