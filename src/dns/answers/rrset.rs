//! A record set: the records of one name and type, pre-encoded back to
//! back in one allocation with the offsets a query needs, so that any
//! window of them is copied into a reply in one or two runs.

use std::ops::Range;
use std::sync::Arc;

use super::super::encoded::SRV_PRIORITY_AT;
use super::super::encoded::{AT_QNAME, InstanceWire, offset};
use super::super::wire::{ReplyWriter, Section};
use crate::core::plan::LOCAL_PRIORITY;

/// The records of one set, encoded back to back, each with a pointer to the
/// question name (`C0 0C`) as owner, so that any run of them is copied into
/// a reply verbatim. Never empty.
///
/// One allocation holds everything a query reads, so that the offsets it
/// looks up sit next to the bytes it copies:
/// `[n: u32][extra: u32][ends: n x u32][marks: n x (u32, u32)][records][additional records]`
/// (little-endian), where `extra` (0 or 1) says whether marks and
/// additional records follow, `ends[i]` is where record `i` ends among the
/// records, and, in SRV sets with additional data only, `marks[i]` = (end
/// among the additional records, number of them) of the additional records
/// of records `0..=i`. An instance named by a host name has no additional
/// record, so marks are cumulative.
/// Cloning copies a pointer.
#[derive(Clone, Debug)]
pub struct RecordSet {
    buf: Arc<[u8]>,
}

/// Bytes before the ends: the count and the `extra` flag.
pub(super) const SET_HEADER: usize = 8;

impl RecordSet {
    /// The address records of type `rtype` of `instances` (an instance
    /// registered by a host name may have several).
    pub(super) fn addresses(instances: &[InstanceWire<'_>], rtype: u16) -> Option<Self> {
        Self::build(
            instances,
            |w| w.addr_tails(rtype).map(|t| (&AT_QNAME[..], t)),
            false,
        )
    }

    /// The SRV set of `instances`, of the plan tier with `priority`, with
    /// their targets' addresses aligned. Instances are encoded with the
    /// local tier's priority; other tiers' records get theirs here.
    pub(super) fn srv(instances: &[InstanceWire<'_>], priority: u16) -> Option<Self> {
        let mut set = Self::build(instances, |w| std::iter::once((&[][..], w.srv())), true)?;
        if priority != LOCAL_PRIORITY {
            let mut buf = set.buf.to_vec();
            let at = set.records_at();
            for i in 0..set.len() {
                let start = at + if i == 0 { 0 } else { set.end(i - 1) };
                let p = start + SRV_PRIORITY_AT;
                buf[p..p + 2].copy_from_slice(&priority.to_be_bytes());
            }
            set.buf = buf.into();
        }
        Some(set)
    }

    /// One SRV set of several tiers, each with its priority (RFC 2782:
    /// clients try lower priorities first): failover tiers after the
    /// local one.
    pub(super) fn srv_tiers(parts: &[(Vec<InstanceWire<'_>>, u16)]) -> Option<Self> {
        let all: Vec<InstanceWire<'_>> =
            parts.iter().flat_map(|(w, _)| w.iter().copied()).collect();
        let mut set = Self::build(&all, |w| std::iter::once((&[][..], w.srv())), true)?;
        let mut buf = set.buf.to_vec();
        let at = set.records_at();
        let mut i = 0;
        for (wires, priority) in parts {
            for _ in wires {
                let start = at + if i == 0 { 0 } else { set.end(i - 1) };
                let p = start + SRV_PRIORITY_AT;
                buf[p..p + 2].copy_from_slice(&priority.to_be_bytes());
                i += 1;
            }
        }
        set.buf = buf.into();
        Some(set)
    }

    /// The set of the records `records` gives for `instances` (each record
    /// a prefix and the rest), with the instances' additional records when
    /// `with_additional` (then each instance gives one record, its SRV
    /// record). Sizes everything first: one allocation, and every piece
    /// copied once.
    pub(super) fn build<'a, R>(
        instances: &[InstanceWire<'a>],
        records: impl Fn(&InstanceWire<'a>) -> R,
        with_additional: bool,
    ) -> Option<Self>
    where
        R: Iterator<Item = (&'a [u8], &'a [u8])>,
    {
        let (mut n, mut size, mut extra_size) = (0, 0, 0);
        for w in instances {
            let mut own = 0;
            for (p, r) in records(w) {
                own += 1;
                size += p.len() + r.len();
            }
            debug_assert!(!with_additional || own == 1, "one SRV record per instance");
            n += own;
            if with_additional && own > 0 {
                extra_size += w.additional().map_or(0, |(a, _)| a.len());
            }
        }
        if n == 0 {
            return None;
        }
        let extra = extra_size > 0;
        let total = SET_HEADER + if extra { 12 } else { 4 } * n + size + extra_size;
        let mut buf = Vec::with_capacity(total);
        buf.extend_from_slice(&offset(n).to_le_bytes());
        buf.extend_from_slice(&u32::from(extra).to_le_bytes());
        let members = || {
            instances
                .iter()
                .flat_map(|w| records(w).map(move |r| (w, r)))
        };
        let mut end = 0;
        for (_, (p, r)) in members() {
            end += p.len() + r.len();
            buf.extend_from_slice(&offset(end).to_le_bytes());
        }
        if extra {
            let (mut at, mut count) = (0, 0u32);
            for (w, _) in members() {
                if let Some((a, k)) = w.additional() {
                    at += a.len();
                    count += u32::from(k);
                }
                buf.extend_from_slice(&offset(at).to_le_bytes());
                buf.extend_from_slice(&count.to_le_bytes());
            }
        }
        for (_, (p, r)) in members() {
            buf.extend_from_slice(p);
            buf.extend_from_slice(r);
        }
        if extra {
            for (w, _) in members() {
                buf.extend_from_slice(w.additional().map_or(&[][..], |(a, _)| a));
            }
        }
        debug_assert_eq!(buf.len(), total);
        Some(RecordSet { buf: buf.into() })
    }

    pub(super) fn len(&self) -> usize {
        self.u32_at(0) as usize
    }

    /// Marks and additional records follow the ends.
    pub(super) fn extra(&self) -> bool {
        self.u32_at(4) != 0
    }

    pub(super) fn u32_at(&self, at: usize) -> u32 {
        let b: [u8; 4] = self.buf[at..at + 4].try_into().expect("four bytes");
        u32::from_le_bytes(b)
    }

    /// Where record `i` ends among the records.
    pub(super) fn end(&self, i: usize) -> usize {
        self.u32_at(SET_HEADER + 4 * i) as usize
    }

    /// Where the records start in `buf`.
    pub(super) fn records_at(&self) -> usize {
        let n = self.len();
        SET_HEADER + if self.extra() { 12 * n } else { 4 * n }
    }

    pub(super) fn records(&self) -> &[u8] {
        let at = self.records_at();
        &self.buf[at..at + self.end(self.len() - 1)]
    }

    /// The additional records (empty unless `extra`).
    pub(super) fn additional(&self) -> &[u8] {
        &self.buf[self.records_at() + self.end(self.len() - 1)..]
    }

    /// (end among the additional records, count) of records `0..=i`.
    pub(super) fn mark(&self, i: usize) -> (usize, u32) {
        let at = SET_HEADER + 4 * self.len() + 8 * i;
        (self.u32_at(at) as usize, self.u32_at(at + 4))
    }

    /// Writes the `take` records from `start` on (wrapping around; `start <
    /// len`, `take <= len`): false when they do not fit. Then their
    /// additional records, as many whole ones as fit: additional data is
    /// optional (RFC 2181 9: no TC for missing additional data).
    pub(super) fn write(&self, start: usize, take: usize, w: &mut ReplyWriter<'_>) -> bool {
        let n = self.len();
        // A stream carries what fits of the window rather than TC (a TCP
        // client cannot ask again with more room): whole records only.
        let take = if w.is_stream() {
            self.fitting(start, take, w.room())
        } else {
            take
        };
        let (first, wrapped) = if start + take <= n {
            (start..start + take, 0..0)
        } else {
            (start..n, 0..start + take - n)
        };
        for r in [&first, &wrapped] {
            // Records are over 11 bytes long: a run that fits in a message
            // holds fewer than 2^16 of them, so the count is not cut.
            if !r.is_empty() && !w.push_records(Section::Answer, self.run(r), r.len() as u16) {
                return false;
            }
        }
        if self.extra() && self.push_additional(first, w) {
            self.push_additional(wrapped, w);
        }
        true
    }

    /// How many of the `take` records from `start` on (wrapping around) fit
    /// in `room` bytes: all when the whole set does (one comparison), else
    /// counted record by record (TCP answers of very large sets only).
    fn fitting(&self, start: usize, take: usize, room: usize) -> usize {
        if self.records().len() <= room {
            return take;
        }
        let n = self.len();
        let mut used = 0;
        for k in 0..take {
            let i = (start + k) % n;
            used += self.run(&(i..i + 1)).len();
            if used > room {
                return k;
            }
        }
        take
    }

    /// Like [`RecordSet::write`] for the records at `members` (positions in
    /// this set): the `take` of them from `start` on, wrapping around, each
    /// copied on its own, then as many of their additional records as fit.
    pub(super) fn write_members(
        &self,
        members: &[u32],
        start: usize,
        take: usize,
        w: &mut ReplyWriter<'_>,
    ) -> bool {
        self.write_order(members, members.len(), start, take, w)
    }

    /// The first `take` records of the order `members` (positions in this
    /// set), whose first `head` rotate by `start` (the rest follow in
    /// order), each copied on its own, then as many of their additional
    /// records as fit. A stream carries what fits of them.
    pub(super) fn write_order(
        &self,
        members: &[u32],
        head: usize,
        start: usize,
        take: usize,
        w: &mut ReplyWriter<'_>,
    ) -> bool {
        let at = |k: usize| {
            if k < head {
                members[(start + k) % head] as usize
            } else {
                members[k] as usize
            }
        };
        let stream = w.is_stream();
        let mut take = take;
        for k in 0..take {
            let i = at(k);
            if !w.push_records(Section::Answer, self.run(&(i..i + 1)), 1) {
                if stream && k > 0 {
                    take = k; // a stream carries what fits
                    break;
                }
                return false;
            }
        }
        if self.extra() {
            for k in 0..take {
                let i = at(k);
                if !self.push_additional(i..i + 1, w) {
                    break;
                }
            }
        }
        true
    }

    /// The bytes of records `r` (a run without wrap-around).
    pub(super) fn run(&self, r: &Range<usize>) -> &[u8] {
        let from = if r.start == 0 {
            0
        } else {
            self.end(r.start - 1)
        };
        &self.records()[from..self.end(r.end - 1)]
    }

    /// The additional records of records `r` (non-empty), as a byte range
    /// of [`RecordSet::additional`] and a count.
    pub(super) fn additional_run(&self, r: &Range<usize>) -> (Range<usize>, u32) {
        let (from, before) = if r.start == 0 {
            (0, 0)
        } else {
            self.mark(r.start - 1)
        };
        let (to, upto) = self.mark(r.end - 1);
        (from..to, upto - before)
    }

    /// Appends the additional records of records `r`: all in one copy when
    /// they fit, else as many whole ones as fit, in order. False when some
    /// were left out.
    pub(super) fn push_additional(&self, r: Range<usize>, w: &mut ReplyWriter<'_>) -> bool {
        if r.is_empty() {
            return true;
        }
        let all = self.additional();
        let (bytes, count) = self.additional_run(&r);
        if count == 0 || w.push_records(Section::Additional, &all[bytes.clone()], count as u16) {
            return true;
        }
        // One instance's records at a time: an instance's addresses go in
        // together or not at all.
        let (mut from, mut before) = (bytes.start, count_before(self, &r));
        for i in r {
            let (to, upto) = self.mark(i);
            if to != from {
                let k = (upto - before) as u16;
                if !w.push_records(Section::Additional, &all[from..to], k) {
                    return false;
                }
                (from, before) = (to, upto);
            }
        }
        true
    }
}

/// How many additional records come before those of records `r`.
fn count_before(set: &RecordSet, r: &Range<usize>) -> u32 {
    if r.start == 0 {
        0
    } else {
        set.mark(r.start - 1).1
    }
}
