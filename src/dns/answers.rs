//! Ready answers: every name in the zone, with its record sets pre-encoded,
//! in a lock-free map keyed by the lowercase wire name. The registry calls
//! [`AnswerBuilder::applied`] with each change (under its write lock, before
//! the change is acknowledged), and the affected names are rebuilt then.
//! A query is parse -> one map lookup -> copy pre-encoded records.
//!
//! Keys are plain names today. Answers that later depend on the client
//! (ACLs, intentions) or on datacenter health (failover) become extra
//! variants of a [`Node`], chosen after the lookup, so the query path stays a
//! lookup and a copy.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use crate::core::naming;
use crate::core::{
    Batch, Datacenter, FastHash, Instance, Observer, Registry, ServiceKey, ServiceSnapshot,
    VersionSelector,
};

use super::encoded::{AT_QNAME, EncodedInstances, Encoding, InstanceWire, offset};
use super::wire::{self, Flags, ReplyWriter, Request, rcode, types};
use super::zone::{StaticRrset, Zone};

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
pub struct Section {
    buf: Arc<[u8]>,
}

/// Bytes before the ends: the count and the `extra` flag.
const SECTION_HEADER: usize = 8;

impl Section {
    /// The address records of type `rtype` of `instances`.
    fn addresses(instances: &[InstanceWire<'_>], rtype: u16) -> Option<Self> {
        Self::build(
            instances,
            |w| w.addr_tail(rtype).map(|t| (&AT_QNAME[..], t)),
            false,
        )
    }

    /// The SRV set of `instances`, with their targets' addresses aligned.
    fn srv(instances: &[InstanceWire<'_>]) -> Option<Self> {
        Self::build(instances, |w| Some((&[][..], w.srv())), true)
    }

    /// The set of the records `record` gives for `instances` (each record a
    /// prefix and the rest), with the instances' additional records when
    /// `with_additional`. Sizes everything first: one allocation, and every
    /// piece copied once.
    fn build<'a>(
        instances: &[InstanceWire<'a>],
        record: impl Fn(&InstanceWire<'a>) -> Option<(&'a [u8], &'a [u8])>,
        with_additional: bool,
    ) -> Option<Self> {
        let (mut n, mut size, mut extra_size) = (0, 0, 0);
        for w in instances {
            if let Some((p, r)) = record(w) {
                n += 1;
                size += p.len() + r.len();
                if with_additional {
                    extra_size += w.additional().map_or(0, <[u8]>::len);
                }
            }
        }
        if n == 0 {
            return None;
        }
        let extra = extra_size > 0;
        let total = SECTION_HEADER + if extra { 12 } else { 4 } * n + size + extra_size;
        let mut buf = Vec::with_capacity(total);
        buf.extend_from_slice(&offset(n).to_le_bytes());
        buf.extend_from_slice(&u32::from(extra).to_le_bytes());
        let members = || instances.iter().filter_map(|w| record(w).map(|r| (w, r)));
        let mut end = 0;
        for (_, (p, r)) in members() {
            end += p.len() + r.len();
            buf.extend_from_slice(&offset(end).to_le_bytes());
        }
        if extra {
            let (mut at, mut count) = (0, 0u32);
            for (w, _) in members() {
                if let Some(a) = w.additional() {
                    at += a.len();
                    count += 1;
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
                buf.extend_from_slice(w.additional().unwrap_or_default());
            }
        }
        debug_assert_eq!(buf.len(), total);
        Some(Section { buf: buf.into() })
    }

    fn len(&self) -> usize {
        self.u32_at(0) as usize
    }

    /// Marks and additional records follow the ends.
    fn extra(&self) -> bool {
        self.u32_at(4) != 0
    }

    fn u32_at(&self, at: usize) -> u32 {
        let b: [u8; 4] = self.buf[at..at + 4].try_into().expect("four bytes");
        u32::from_le_bytes(b)
    }

    /// Where record `i` ends among the records.
    fn end(&self, i: usize) -> usize {
        self.u32_at(SECTION_HEADER + 4 * i) as usize
    }

    /// Where the records start in `buf`.
    fn records_at(&self) -> usize {
        let n = self.len();
        SECTION_HEADER + if self.extra() { 12 * n } else { 4 * n }
    }

    fn records(&self) -> &[u8] {
        let at = self.records_at();
        &self.buf[at..at + self.end(self.len() - 1)]
    }

    /// The additional records (empty unless `extra`).
    fn additional(&self) -> &[u8] {
        &self.buf[self.records_at() + self.end(self.len() - 1)..]
    }

    /// (end among the additional records, count) of records `0..=i`.
    fn mark(&self, i: usize) -> (usize, u32) {
        let at = SECTION_HEADER + 4 * self.len() + 8 * i;
        (self.u32_at(at) as usize, self.u32_at(at + 4))
    }

    /// Writes the `take` records from `start` on (wrapping around; `start <
    /// len`, `take <= len`): false when they do not fit. Then their
    /// additional records, as many whole ones as fit: additional data is
    /// optional (RFC 2181 9: no TC for missing additional data).
    fn write(&self, start: usize, take: usize, w: &mut ReplyWriter<'_>) -> bool {
        let n = self.len();
        let (first, wrapped) = if start + take <= n {
            (start..start + take, 0..0)
        } else {
            (start..n, 0..start + take - n)
        };
        for r in [&first, &wrapped] {
            // Records are over 11 bytes long: a run that fits in a message
            // holds fewer than 2^16 of them, so the count is not cut.
            if !r.is_empty() && !w.push_records(1, self.run(r), r.len() as u16) {
                return false;
            }
        }
        if self.extra() && self.push_additional(first, w) {
            self.push_additional(wrapped, w);
        }
        true
    }

    /// Like [`Section::write`] for the records at `members` (positions in
    /// this set): the `take` of them from `start` on, wrapping around, each
    /// copied on its own, then as many of their additional records as fit.
    fn write_members(
        &self,
        members: &[u32],
        start: usize,
        take: usize,
        w: &mut ReplyWriter<'_>,
    ) -> bool {
        let n = members.len();
        let at = |k: usize| members[(start + k) % n] as usize;
        for k in 0..take {
            let i = at(k);
            if !w.push_records(1, self.run(&(i..i + 1)), 1) {
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
    fn run(&self, r: &Range<usize>) -> &[u8] {
        let from = if r.start == 0 {
            0
        } else {
            self.end(r.start - 1)
        };
        &self.records()[from..self.end(r.end - 1)]
    }

    /// The additional records of records `r` (non-empty), as a byte range
    /// of [`Section::additional`] and a count.
    fn additional_run(&self, r: &Range<usize>) -> (Range<usize>, u32) {
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
    fn push_additional(&self, r: Range<usize>, w: &mut ReplyWriter<'_>) -> bool {
        if r.is_empty() {
            return true;
        }
        let all = self.additional();
        let (bytes, count) = self.additional_run(&r);
        if count == 0 || w.push_records(3, &all[bytes.clone()], count as u16) {
            return true;
        }
        let mut from = bytes.start;
        for i in r {
            let to = self.mark(i).0;
            if to != from {
                if !w.push_full(3, &all[from..to]) {
                    return false;
                }
                from = to;
            }
        }
        true
    }
}

/// The dynamic record sets of a name.
#[derive(Clone, Debug, Default)]
struct Sets {
    a: Option<Section>,
    aaaa: Option<Section>,
    srv: Option<Section>,
}

impl Sets {
    /// Sets are never empty (an empty one is left out: NODATA either way).
    fn of_type(&self, qtype: u16) -> Option<&Section> {
        match qtype {
            types::A => self.a.as_ref(),
            types::AAAA => self.aaaa.as_ref(),
            types::SRV => self.srv.as_ref(),
            _ => None,
        }
    }
}

/// Everything that can be answered at one name.
#[derive(Clone, Debug, Default)]
pub struct Node {
    sets: Sets,
    /// At a service name: the version names `<selector>.<name>`, looked up
    /// through the service's node rather than stored one by one. A handful
    /// of selectors, scanned, each with the index of its members in
    /// `version_sets`, or [`SAME_SETS`]: a selector that selects every
    /// instance (the common case) answers with the node's own sets.
    versions: Selectors,
    version_sets: Box<[Subset]>,
    /// At a service name: the answers of `<id>.<service>.<dc>.<zone>`, the
    /// instance names, also looked up through the service's node.
    instances: InstanceTable,
    statics: Box<[StaticRrset]>,
}

/// A service's version selectors, each with the index of its [`Subset`] or
/// [`SAME_SETS`].
type Selectors = Box<[(VersionSelector, u32)]>;

/// A version name whose sets are its service name's.
const SAME_SETS: u32 = u32::MAX;

impl Node {
    /// What the version name `sel` below this node answers, if it exists.
    fn version(&self, sel: &VersionSelector) -> Option<Found<'_>> {
        let (_, at) = self.versions.iter().find(|(s, _)| s == sel)?;
        if *at == SAME_SETS {
            return Some(Found::Version(&self.sets, None));
        }
        let subset = self.version_sets.get(*at as usize)?;
        Some(Found::Version(&self.sets, Some(subset)))
    }
}

/// The members of a version name that selects some of its service's
/// instances: for A, AAAA and SRV, the positions of its records in the
/// service's own set of that type, in order. A version name costs four
/// bytes per member instead of copies of the records; its answers are
/// copied record by record from the service's sets.
///
/// `[n_a: u32][n_aaaa: u32][n_srv: u32][positions...]`
#[derive(Clone, Debug, Default)]
struct Subset {
    buf: Box<[u32]>,
}

impl Subset {
    fn new(a: &[u32], aaaa: &[u32], srv: &[u32]) -> Self {
        let counts = [a.len(), aaaa.len(), srv.len()].map(offset);
        Self {
            buf: [&counts[..], a, aaaa, srv].concat().into(),
        }
    }

    /// The positions of the records of `qtype`; empty for none (and for
    /// other types).
    fn of_type(&self, qtype: u16) -> &[u32] {
        let [na, naaaa, nsrv] = [0, 1, 2].map(|i| self.buf[i] as usize);
        let (from, len) = match qtype {
            types::A => (3, na),
            types::AAAA => (3 + na, naaaa),
            types::SRV => (3 + na + naaaa, nsrv),
            _ => return &[],
        };
        &self.buf[from..from + len]
    }
}

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
struct InstanceTable {
    buf: Box<[u8]>,
}

impl InstanceTable {
    /// `instances`: (lowercase id label, address record type and tail) in
    /// id order; each record gets the question pointer as owner.
    fn new<'a>(
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

    fn u32_at(&self, at: usize) -> u32 {
        let b: [u8; 4] = self.buf[at..at + 4].try_into().expect("four bytes");
        u32::from_le_bytes(b)
    }

    fn len(&self) -> usize {
        if self.buf.is_empty() {
            0
        } else {
            self.u32_at(0) as usize
        }
    }

    /// Instance `i`'s (id end, record end, record type), offsets into the
    /// ids and records.
    fn entry(&self, i: usize) -> (usize, usize, u16) {
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
    fn find(&self, label: &[u8]) -> Option<(u16, &[u8])> {
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

/// The map the query path reads. Cloning copies one `Arc`.
#[derive(Clone)]
pub struct Answers {
    inner: Arc<AnswersInner>,
}

struct AnswersInner {
    zone: Zone,
    /// Keyed by lowercase wire name, hashed with the per-process seed of
    /// [`FastHash`].
    names: papaya::HashMap<Box<[u8]>, Arc<Node>, FastHash>,
    max_records: usize,
}

thread_local! {
    /// Rotation counter, one per worker thread: no shared cache line.
    static ROTATION: Cell<usize> = const { Cell::new(0) };
}

impl Answers {
    pub fn new(zone: Zone, max_records: usize) -> Self {
        let names = papaya::HashMap::with_hasher(FastHash::default());
        {
            let pinned = names.pin();
            for (name, statics) in &zone.statics {
                pinned.insert(
                    name.clone().into_boxed_slice(),
                    Arc::new(Node {
                        statics: statics.as_slice().into(),
                        ..Node::default()
                    }),
                );
            }
        }
        Self {
            inner: Arc::new(AnswersInner {
                zone,
                names,
                max_records,
            }),
        }
    }

    pub fn zone(&self) -> &Zone {
        &self.inner.zone
    }

    /// Writes the reply to `packet` into `out`. False: send nothing.
    ///
    /// A bug must not take a listener down with it: a panic while answering
    /// is logged and the packet dropped (the fuzz target hunts for them).
    pub fn respond(&self, packet: &[u8], out: &mut Vec<u8>, tcp: bool) -> bool {
        let run = std::panic::AssertUnwindSafe(|| self.respond_inner(packet, out, tcp));
        std::panic::catch_unwind(run).unwrap_or_else(|_| {
            tracing::error!(packet = ?packet, "panic while answering a DNS packet; dropped");
            false
        })
    }

    /// [`Answers::respond`] without the panic guard, for the fuzz target.
    #[doc(hidden)]
    pub fn respond_unguarded(&self, packet: &[u8], out: &mut Vec<u8>, tcp: bool) -> bool {
        self.respond_inner(packet, out, tcp)
    }

    fn respond_inner(&self, packet: &[u8], out: &mut Vec<u8>, tcp: bool) -> bool {
        let req = match wire::parse(packet) {
            Ok(r) => r,
            Err(reject) => return wire::write_reject(out, packet, &reject),
        };
        self.answer(&req, out, tcp);
        true
    }

    fn answer(&self, req: &Request<'_>, out: &mut Vec<u8>, tcp: bool) {
        let limit = wire::size_limit(req.edns, tcp);
        let mut flags = Flags {
            aa: false,
            rd: req.rd,
            cd: req.cd,
            rcode: rcode::NOERROR,
        };
        if let Some(e) = req.edns
            && e.version > 0
        {
            // RFC 6891 6.1.3: BADVERS, with our OPT, nothing else.
            let w = ReplyWriter::start(out, req, flags, limit);
            w.finish(req.edns, rcode::BADVERS_UPPER);
            return;
        }
        let refuse = |out: &mut Vec<u8>, rcode: u8| {
            let w = ReplyWriter::start(out, req, Flags { rcode, ..flags }, limit);
            w.finish(req.edns, 0);
        };
        match req.qtype {
            types::OPT | types::TSIG | types::TKEY => return refuse(out, rcode::FORMERR),
            types::AXFR | types::IXFR => return refuse(out, rcode::REFUSED),
            types::MAILA | types::MAILB => return refuse(out, rcode::NOTIMP),
            _ => {}
        }
        let zone = &self.inner.zone;
        let Some(apex_at) = req.suffix_offset(&zone.origin) else {
            return refuse(out, rcode::REFUSED); // not our zone
        };
        if req.qclass != types::CLASS_IN {
            return refuse(out, rcode::REFUSED);
        }
        flags.aa = true;
        let names = self.inner.names.pin();
        let qname = req.qname();
        let found = match names.get(qname) {
            Some(n) => Some(Found::Node(n)),
            None => below_service(&names, qname, req.labels_before(apex_at)),
        };
        let Some(found) = found else {
            flags.rcode = rcode::NXDOMAIN;
            let mut w = ReplyWriter::start(out, req, flags, limit);
            self.push_soa(&mut w, apex_at);
            return w.finish(req.edns, 0);
        };
        let mut w = ReplyWriter::start(out, req, flags, limit);
        let written = match found {
            Found::Node(node) => self.write_answer(&node.sets, &node.statics, req.qtype, &mut w),
            Found::Version(sets, None) => self.write_answer(sets, &[], req.qtype, &mut w),
            Found::Version(sets, Some(subset)) => {
                self.write_subset(sets, subset, req.qtype, &mut w)
            }
            Found::Instance(rtype, rec) => {
                let wanted = req.qtype == rtype || (req.qtype == types::ANY && rtype != 0);
                // One record of a few dozen bytes after a question that fit
                // in 512 bytes: it fits in any limit.
                wanted.then(|| w.push_records(1, rec, 1))
            }
        };
        match written {
            Some(true) => {}
            Some(false) => w.truncate(),
            None => self.push_soa(&mut w, apex_at), // NODATA
        }
        w.finish(req.edns, 0);
    }

    /// The SOA in the authority section of a negative answer (RFC 2308).
    /// The apex is a suffix of the question name: its owner points there.
    fn push_soa(&self, w: &mut ReplyWriter<'_>, apex_at: usize) {
        if !w.push_at_offset(2, 12 + apex_at, &self.inner.zone.soa_negative_tail) {
            w.truncate();
        }
    }

    /// Writes the answer for `qtype` at a name with these sets and static
    /// data. `None`: no data of that type (NODATA); `Some(false)`: the
    /// answer does not fit (truncate).
    fn write_answer(
        &self,
        sets: &Sets,
        statics: &[StaticRrset],
        qtype: u16,
        w: &mut ReplyWriter<'_>,
    ) -> Option<bool> {
        // A CNAME at the name answers every other type (RFC 1034 3.6.2).
        if qtype != types::CNAME
            && let Some(cname) = statics.iter().find(|s| s.rtype == types::CNAME)
        {
            return Some(write_static(cname, w));
        }
        let qtype = if qtype == types::ANY {
            // RFC 8482: one RRset is a complete answer to ANY.
            [types::A, types::AAAA, types::SRV]
                .into_iter()
                .find(|t| sets.of_type(*t).is_some())
                .or_else(|| statics.iter().map(|s| s.rtype).next())?
        } else {
            qtype
        };
        if let Some(set) = sets.of_type(qtype) {
            return Some(self.write_set(set, w));
        }
        let set = statics.iter().find(|s| s.rtype == qtype)?;
        Some(write_static(set, w))
    }

    /// The answer of a version name that selects some of its service's
    /// instances: like [`Answers::write_answer`] on sets of their own (a
    /// version name has no static data).
    fn write_subset(
        &self,
        sets: &Sets,
        subset: &Subset,
        qtype: u16,
        w: &mut ReplyWriter<'_>,
    ) -> Option<bool> {
        let qtype = if qtype == types::ANY {
            [types::A, types::AAAA, types::SRV]
                .into_iter()
                .find(|t| !subset.of_type(*t).is_empty())?
        } else {
            qtype
        };
        let members = subset.of_type(qtype);
        let set = sets.of_type(qtype).filter(|_| !members.is_empty())?;
        let n = members.len();
        let take = n.min(self.inner.max_records);
        Some(set.write_members(members, next_rotation() % n, take, w))
    }

    /// Up to `max_records` records, starting at a rotating offset so that
    /// successive answers spread load over all of them. The window is at most
    /// two runs of the set (it may wrap around), each copied at once.
    fn write_set(&self, set: &Section, w: &mut ReplyWriter<'_>) -> bool {
        let n = set.len();
        let take = n.min(self.inner.max_records);
        set.write(next_rotation() % n, take, w)
    }
}

/// The next value of this thread's rotation counter.
fn next_rotation() -> usize {
    ROTATION.with(|c| {
        let v = c.get();
        c.set(v.wrapping_add(1));
        v
    })
}

/// What a query name leads to.
enum Found<'g> {
    Node(&'g Node),
    /// A version name: its service's sets, and which of their records are
    /// its own (`None`: all of them).
    Version(&'g Sets, Option<&'g Subset>),
    /// An instance name: its address record's type (0: none) and record.
    Instance(u16, &'g [u8]),
}

/// A name that is not in the map may still be one held by the service name
/// below it (see [`Node`]): `<selector>.<service>[.<dc>].<zone>`, a version
/// name, or `<id>.<service>.<dc>.<zone>`, an instance name. Instance ids
/// never look like selectors, so the first label says which. All names of a
/// service share its node, so the SRV form (`_<service>._tcp...`) is ruled
/// out here: `v2._svc._tcp.<zone>` does not exist, nor does
/// `v2.<instance>...` (instance names have no node).
///
/// `labels` is the number of labels above the zone's apex: 2 or 3 for a
/// version name, 3 for an instance name, so most unknown names (one label
/// under the apex) cost no second lookup.
fn below_service<'g>(
    names: &'g papaya::HashMapRef<'_, Box<[u8]>, Arc<Node>, FastHash, papaya::LocalGuard<'_>>,
    qname: &[u8],
    labels: usize,
) -> Option<Found<'g>> {
    if !(2..=3).contains(&labels) {
        return None;
    }
    let len = *qname.first()? as usize;
    let label = qname.get(1..1 + len)?;
    let base_name = qname.get(1 + len..)?;
    if base_name.get(1) == Some(&b'_') {
        return None;
    }
    let base = names.get(base_name)?;
    // Cheap test first: a selector label starts with 'v' and a digit.
    if len >= 2
        && label[0] == b'v'
        && label[1].is_ascii_digit()
        && let Some(sel) = std::str::from_utf8(label)
            .ok()
            .and_then(VersionSelector::parse)
    {
        return base.version(&sel);
    }
    if labels != 3 {
        return None;
    }
    let (rtype, rec) = base.instances.find(label)?;
    Some(Found::Instance(rtype, rec))
}

fn write_static(set: &StaticRrset, w: &mut ReplyWriter<'_>) -> bool {
    for t in &set.tails {
        if !w.push_at_qname(1, t) {
            return false;
        }
    }
    for g in &set.glue {
        if !w.push_full(3, g) {
            break;
        }
    }
    true
}

/// Keeps [`Answers`] in step with the registry. Runs under the registry's
/// write lock, so its own state needs no more than an uncontended mutex.
pub struct AnswerBuilder {
    answers: Answers,
    local_dc: Datacenter,
    ttl: u32,
    state: Mutex<BuilderState>,
}

#[derive(Default)]
struct BuilderState {
    services: HashMap<ServiceKey, ServiceState, FastHash>,
    /// How many services keep each dynamic empty non-terminal alive.
    ent_refs: HashMap<Box<[u8]>, usize, FastHash>,
}

/// What the builder keeps of a service between its changes: every
/// instance's records, in id order like the snapshot, with the index of the
/// instance value they encode, so that an unchanged instance is not encoded
/// again. Only for services of [`KEEP_ENCODED_FROM`] instances or more
/// (`None` for the others).
type ServiceState = Option<Box<EncodedInstances>>;

/// Services with fewer instances are encoded whole on each change: a few
/// encodings cost a microsecond or two, and keeping them would cost a few
/// hundred bytes per service, which is most of the memory of a registry of
/// many small services.
const KEEP_ENCODED_FROM: usize = 8;

impl AnswerBuilder {
    pub fn new(answers: Answers, registry: &Registry, ttl: u32) -> Self {
        Self {
            answers,
            local_dc: registry.local_dc().clone(),
            ttl,
            state: Mutex::new(BuilderState::default()),
        }
    }

    fn wire(&self, labels: &[String]) -> Box<[u8]> {
        let origin = &self.answers.inner.zone.origin;
        let mut out = Vec::with_capacity(64);
        for l in labels {
            out.push(l.len() as u8);
            out.extend_from_slice(l.as_bytes());
        }
        out.extend_from_slice(origin);
        out.into_boxed_slice()
    }

    /// Empty non-terminals a service's names need: `<dc>`, `_tcp.<dc>`, and
    /// `_tcp` for the local datacenter.
    fn ents_of(&self, key: &ServiceKey) -> Vec<Box<[u8]>> {
        let dc = key.dc.to_string();
        let mut v = vec![
            self.wire(std::slice::from_ref(&dc)),
            self.wire(&["_tcp".into(), dc]),
        ];
        if key.dc == self.local_dc {
            v.push(self.wire(&["_tcp".into()]));
        }
        v
    }

    /// Appends the records of [`InstanceWire`] for `inst` to `out`.
    fn encode_instance(&self, inst: &Instance, out: &mut Vec<u8>) -> Encoding {
        let start = out.len();
        out.extend_from_slice(&AT_QNAME);
        let rdata_at = push_tail_header(out, types::SRV, self.ttl);
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&inst.weight.to_be_bytes());
        out.extend_from_slice(&inst.port.to_be_bytes());
        match &inst.address {
            crate::core::Address::Host(h) => {
                out.extend(wire::wire_name(h).unwrap_or_else(|| vec![0]));
            }
            crate::core::Address::Ip(_) => out.extend_from_slice(&self.wire(&[
                inst.id.to_string(),
                inst.service.to_string(),
                inst.datacenter.to_string(),
            ])),
        }
        set_rdlength(out, rdata_at);
        let srv_len = u16::try_from(out.len() - start).expect("an SRV record below 64 KiB");
        let addr_type = match inst.address.ip() {
            Some(IpAddr::V4(v4)) => {
                let at = push_tail_header(out, types::A, self.ttl);
                out.extend_from_slice(&v4.octets());
                set_rdlength(out, at);
                types::A
            }
            Some(IpAddr::V6(v6)) => {
                let at = push_tail_header(out, types::AAAA, self.ttl);
                out.extend_from_slice(&v6.octets());
                set_rdlength(out, at);
                types::AAAA
            }
            None => 0,
        };
        Encoding { srv_len, addr_type }
    }

    /// Rebuilds the names of one service that changed (or removes them).
    ///
    /// Costs the changed instances' encoding and publication, plus copying
    /// the service's record sets together: unchanged instances are neither
    /// encoded nor published again.
    fn rebuild(
        &self,
        st: &mut BuilderState,
        key: &ServiceKey,
        snap: Option<&Arc<ServiceSnapshot>>,
    ) {
        let names = self.answers.inner.names.pin();
        // `None`: the builder has not seen this service before.
        let old = st.services.remove(key);
        let service_names = || {
            naming::service_names(key, &self.local_dc)
                .into_iter()
                .map(|t| self.wire(&naming::render(&t)))
        };
        let Some(snap) = snap else {
            if old.is_none() {
                return;
            }
            for name in service_names() {
                self.publish(&names, &name, None);
            }
            for ent in self.ents_of(key) {
                if let Some(n) = st.ent_refs.get_mut(&ent) {
                    *n -= 1;
                    if *n == 0 {
                        st.ent_refs.remove(&ent);
                        self.publish(&names, &ent, None);
                    }
                }
            }
            return;
        };
        let old_instances = match old {
            Some(kept) => kept.map(|k| *k).unwrap_or_default(),
            None => {
                for ent in self.ents_of(key) {
                    let n = st.ent_refs.entry(ent.clone()).or_default();
                    *n += 1;
                    if *n == 1 {
                        self.publish(&names, &ent, Some(Arc::new(Node::default())));
                    }
                }
                EncodedInstances::default()
            }
        };

        // Merge the encoded instances (id order) with the snapshot's (id
        // order): keep the unchanged, encode the changed and new, drop the
        // removed.
        let instances = old_instances.merge(
            snap.instances.iter(),
            |inst| inst.index,
            |inst, out| self.encode_instance(inst, out),
        );
        // `instances` is in the snapshot's order, one entry per instance:
        // a member's position in the snapshot is its position here.
        debug_assert_eq!(instances.len(), snap.instances.len());
        let all = snap.select_positions(None, true);
        let all_wires: Vec<InstanceWire<'_>> =
            all.iter().map(|&p| instances.wire(p as usize)).collect();
        // Empty sets are left out (NODATA either way): no allocation.
        let sets = Sets {
            a: Section::addresses(&all_wires, types::A),
            aaaa: Section::addresses(&all_wires, types::AAAA),
            srv: Section::srv(&all_wires),
        };
        let (versions, version_sets) = version_names(snap, &all, &all_wires);
        // One node for every name of the service: the query path finds
        // version and instance names only below the names that have them.
        let node = Arc::new(Node {
            sets,
            versions,
            version_sets,
            instances: self.instance_table(&instances),
            statics: Box::default(),
        });
        for name in service_names() {
            self.publish(&names, &name, Some(node.clone()));
        }
        let kept = (instances.len() >= KEEP_ENCODED_FROM).then(|| Box::new(instances));
        st.services.insert(key.clone(), kept);
    }

    /// The instance names' answers: every instance's address record under
    /// its id, whatever its health (the name of an instance stays resolvable
    /// while it is registered).
    /// Ids are stored in lowercase and instances kept in id order, which is
    /// the byte order of the labels that [`InstanceTable::find`] searches.
    fn instance_table(&self, instances: &EncodedInstances) -> InstanceTable {
        debug_assert!(instances.is_sorted());
        InstanceTable::new(
            (0..instances.len()).map(|i| (instances.id(i), instances.wire(i).addr())),
        )
    }

    /// Inserts (or removes) a dynamic node, keeping the static data of that
    /// name, if any.
    fn publish(
        &self,
        names: &papaya::HashMapRef<'_, Box<[u8]>, Arc<Node>, FastHash, papaya::LocalGuard<'_>>,
        name: &[u8],
        node: Option<Arc<Node>>,
    ) {
        let statics = self.answers.inner.zone.statics.get(name);
        match (node, statics) {
            (Some(n), Some(s)) => {
                let merged = Node {
                    statics: s.as_slice().into(),
                    ..Node::clone(&n)
                };
                names.insert(name.into(), Arc::new(merged));
            }
            (Some(n), None) => {
                names.insert(name.into(), n);
            }
            (None, Some(s)) => {
                names.insert(
                    name.into(),
                    Arc::new(Node {
                        statics: s.as_slice().into(),
                        ..Node::default()
                    }),
                );
            }
            (None, None) => {
                // Dynamic names never coincide with the dynamic empty
                // non-terminals (a service is never named like a datacenter).
                names.remove(name);
            }
        }
    }
}

impl Observer for AnswerBuilder {
    fn applied(&self, batch: &Batch<'_>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if batch.services.len() > 64 {
            // A restore: size the maps once for the names to come (four per
            // service) rather than growing them step by step.
            self.answers
                .inner
                .names
                .pin()
                .reserve(4 * batch.services.len());
            st.services.reserve(batch.services.len());
        }
        for (key, snap) in batch.services {
            self.rebuild(&mut st, key, snap.as_ref());
        }
    }
}

/// The version names of a service (see [`Node`]): every selector that
/// matches a passing instance, with [`SAME_SETS`] or the index of its
/// members in the returned subsets. `all`: the positions of the passing
/// instances (the service's own sets), `all_wires` their records.
///
/// Version names are looked up through the service's node on the query
/// path, so a change publishes a handful of names, not one per selector.
/// A selector selects a subset of what its parent selects (and `v2` of
/// all instances), so it selects the same instances exactly when it
/// selects as many; selectors come sorted, parents first. Most select all
/// instances (v2, v2-0 and v2-0-0 when only 2.0.0 runs) and cost nothing
/// more.
fn version_names(
    snap: &ServiceSnapshot,
    all: &[u32],
    all_wires: &[InstanceWire<'_>],
) -> (Selectors, Box<[Subset]>) {
    // Where each passing instance is in the A and AAAA sets (u32::MAX: not
    // in the set of that type); in the SRV set it is where it is in `all`.
    let mut counts = [0u32; 2];
    let ranks: Vec<(u32, u32)> = all_wires
        .iter()
        .map(|w| {
            let mut rank = |t: usize| {
                counts[t] += 1;
                counts[t] - 1
            };
            match w.addr() {
                Some((types::A, _)) => (rank(0), u32::MAX),
                Some((types::AAAA, _)) => (u32::MAX, rank(1)),
                _ => (u32::MAX, u32::MAX),
            }
        })
        .collect();
    // Where each instance is in `all` (u32::MAX: not passing).
    let mut in_all = vec![u32::MAX; snap.instances.len()];
    for (k, &p) in all.iter().enumerate() {
        in_all[p as usize] = offset(k);
    }
    let subset_of = |members: &[u32]| {
        let (mut a, mut aaaa) = (Vec::new(), Vec::new());
        let mut srv = Vec::with_capacity(members.len());
        for &p in members {
            let k = in_all[p as usize] as usize;
            debug_assert!(k < all.len(), "a version's members are among all members");
            let (ra, raaaa) = ranks[k];
            if ra != u32::MAX {
                a.push(ra);
            }
            if raaaa != u32::MAX {
                aaaa.push(raaaa);
            }
            srv.push(offset(k));
        }
        Subset::new(&a, &aaaa, &srv)
    };
    let mut versions: Vec<(VersionSelector, u32)> = Vec::new();
    let mut subsets: Vec<Subset> = Vec::new();
    let mut sizes: Vec<usize> = Vec::new();
    for sel in snap.selectors() {
        let members = snap.select_positions(Some(sel), true);
        let parent = sel.parent().and_then(|p| {
            let at = versions.binary_search_by(|(s, _)| s.cmp(&p)).ok()?;
            Some((sizes[at], versions[at].1))
        });
        let (parent_len, parent_sets) = parent.unwrap_or((all.len(), SAME_SETS));
        let at = if members.len() == parent_len {
            parent_sets
        } else {
            subsets.push(subset_of(&members));
            offset(subsets.len() - 1)
        };
        sizes.push(members.len());
        versions.push((*sel, at));
    }
    (versions.into(), subsets.into())
}

/// Appends a record's type, class IN, TTL and a zero RDLENGTH; returns
/// where the RDLENGTH is, for [`set_rdlength`] once the RDATA follows.
fn push_tail_header(out: &mut Vec<u8>, rtype: u16, ttl: u32) -> usize {
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&types::CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.len() - 2
}

/// Sets the RDLENGTH at `at` to the length of what follows it.
fn set_rdlength(out: &mut [u8], at: usize) {
    let len = u16::try_from(out.len() - at - 2).expect("RDATA below 64 KiB");
    out[at..at + 2].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::core::InstanceId;
    use crate::dns::encoded::SRV_TARGET_AT;

    /// Instances whose SRV records are `shape.0` bytes long and whose
    /// additional records (the target, then the address record's tail)
    /// `shape.1`.
    fn encoded(shapes: &[(usize, Option<usize>)]) -> EncodedInstances {
        let rec = |len: usize, tag: u8| -> Vec<u8> { (0..len).map(|i| tag ^ i as u8).collect() };
        let mut e = EncodedInstances::default();
        for (i, &(srv_len, additional)) in shapes.iter().enumerate() {
            let id = InstanceId::new(&format!("i{i:03}")).unwrap();
            e.push(&id, 0, |out| {
                out.extend(rec(srv_len, srv_len as u8));
                if let Some(len) = additional {
                    out.extend(rec(len - (srv_len - SRV_TARGET_AT), 0x80 | len as u8));
                }
                Encoding {
                    srv_len: srv_len as u16,
                    addr_type: if additional.is_some() { types::A } else { 0 },
                }
            });
        }
        e
    }

    fn wires(e: &EncodedInstances) -> Vec<InstanceWire<'_>> {
        (0..e.len()).map(|i| e.wire(i)).collect()
    }

    /// The window written one record at a time, as the sets were before.
    fn one_by_one(
        all: &[InstanceWire<'_>],
        start: usize,
        take: usize,
        w: &mut ReplyWriter,
    ) -> bool {
        let window = all.iter().cycle().skip(start).take(take);
        for inst in window.clone() {
            if !w.push_full(1, inst.srv()) {
                return false;
            }
        }
        for inst in window {
            if inst.additional().is_some_and(|rec| !w.push_full(3, rec)) {
                break;
            }
        }
        true
    }

    /// Six SRV targets of varied sizes, some without an address record.
    const SHAPES: [(usize, Option<usize>); 6] = [
        (20, Some(30)),
        (25, None),
        (18, Some(16)),
        (40, Some(28)),
        (22, None),
        (30, Some(16)),
    ];

    /// For every window of `n` records (`take` from `start`, wrapping) and
    /// every size limit of an SRV reply: `write` fits exactly when `want`
    /// does, and then writes the same bytes. `what` names the case.
    fn assert_windows_agree(
        n: usize,
        what: &str,
        write: impl Fn(usize, usize, &mut ReplyWriter) -> bool,
        want: impl Fn(usize, usize, &mut ReplyWriter) -> bool,
    ) {
        let q = super::super::testing::query("_svc._tcp.maxine.", types::SRV, false);
        let req = wire::parse(&q).unwrap();
        let flags = Flags {
            aa: true,
            rd: false,
            cd: false,
            rcode: 0,
        };
        let (mut got, mut wanted) = (Vec::new(), Vec::new());
        for take in 1..=n {
            for start in 0..n {
                for limit in q.len()..400 {
                    let mut w = ReplyWriter::start(&mut got, &req, flags, limit);
                    let ok = write(start, take, &mut w);
                    w.finish(None, 0);
                    let mut w = ReplyWriter::start(&mut wanted, &req, flags, limit);
                    let ok_want = want(start, take, &mut w);
                    w.finish(None, 0);
                    let at = format!("{what} take {take} start {start} limit {limit}");
                    assert_eq!(ok, ok_want, "{at}");
                    if ok {
                        assert_eq!(got, wanted, "{at}");
                    }
                }
            }
        }
    }

    #[test]
    fn windows_copy_like_record_by_record_at_every_size() {
        for n in 1..=SHAPES.len() {
            let e = encoded(&SHAPES[..n]);
            let all = wires(&e);
            let set = Section::srv(&all).unwrap();
            assert_windows_agree(
                n,
                &format!("n {n}"),
                |start, take, w| set.write(start, take, w),
                |start, take, w| one_by_one(&all, start, take, w),
            );
        }
    }

    #[test]
    fn version_members_copy_like_a_set_of_their_own() {
        let e = encoded(&SHAPES);
        let all = wires(&e);
        let set = Section::srv(&all).unwrap();
        for members in [
            vec![0u32, 2, 3],
            vec![1, 4],
            vec![5],
            vec![0, 1, 2, 3, 4, 5],
        ] {
            let own: Vec<InstanceWire<'_>> = members.iter().map(|&m| all[m as usize]).collect();
            assert_windows_agree(
                members.len(),
                &format!("{members:?}"),
                |start, take, w| set.write_members(&members, start, take, w),
                |start, take, w| one_by_one(&own, start, take, w),
            );
        }
        let sub = Subset::new(&[1], &[], &[0, 3]);
        assert_eq!(
            (
                sub.of_type(types::A),
                sub.of_type(types::AAAA),
                sub.of_type(types::SRV)
            ),
            (&[1u32][..], &[][..], &[0u32, 3][..])
        );
        assert!(sub.of_type(types::CNAME).is_empty());
    }

    #[test]
    fn sets_and_additional_records_are_built_from_instance_records() {
        // Address sets: the question pointer, then each address tail.
        let e = encoded(&[(20, Some(5)), (20, None), (21, Some(4))]);
        let ws = wires(&e);
        let s = Section::addresses(&ws, types::A).unwrap();
        let tails = |i: usize| ws[i].addr_tail(types::A).unwrap();
        let want: Vec<u8> = [&AT_QNAME[..], tails(0), &AT_QNAME, tails(2)].concat();
        assert_eq!(s.records(), &want[..]);
        assert_eq!((s.len(), s.end(0), s.end(1)), (2, 5, 8));
        assert_eq!(s.run(&(1..2)), &want[5..]);
        assert!(!s.extra() && s.additional().is_empty());
        assert!(Section::addresses(&ws[1..2], types::A).is_none());
        assert!(Section::addresses(&ws[..1], types::AAAA).is_none());
        // The additional record is the SRV target, then the address tail.
        let e = encoded(&[(SRV_TARGET_AT + 3, Some(3 + 4))]);
        let w = e.wire(0);
        let rec = w.additional().unwrap();
        assert_eq!(&rec[..3], &w.srv()[SRV_TARGET_AT..]);
        assert_eq!(&rec[3..], w.addr_tail(types::A).unwrap());
        // SRV sets whose targets are all host names carry no additional data.
        let hosts = encoded(&[(20, None), (21, None)]);
        assert!(!Section::srv(&wires(&hosts)).unwrap().extra());
        // Marks count the additional records of each prefix of the set.
        let mixed = encoded(&[(20, Some(30)), (21, None), (22, Some(10))]);
        let set = Section::srv(&wires(&mixed)).unwrap();
        assert!(set.extra());
        assert_eq!(
            (set.mark(0), set.mark(1), set.mark(2)),
            ((30, 1), (30, 1), (40, 2))
        );
        assert_eq!(set.additional().len(), 40);
        assert_eq!(set.records().len(), 20 + 21 + 22);
    }

    #[test]
    fn instance_tables_find_exactly_their_ids() {
        let recs: [&[u8]; 3] = [&[1, 1], &[2, 2, 2], &[]];
        let ids: [&[u8]; 3] = [b"a", b"ab", b"b"];
        let t = InstanceTable::new(ids.iter().zip(recs).map(|(id, r)| {
            let rec = (!r.is_empty()).then_some((types::A, r));
            (*id, rec)
        }));
        // Records get the question pointer as owner.
        assert_eq!(t.find(b"a"), Some((types::A, &[0xC0, 0x0C, 1, 1][..])));
        assert_eq!(t.find(b"ab"), Some((types::A, &[0xC0, 0x0C, 2, 2, 2][..])));
        assert_eq!(t.find(b"b"), Some((0, &[][..])));
        for missing in [&b""[..], b"aa", b"abc", b"c", b"0"] {
            assert_eq!(t.find(missing), None, "{missing:?}");
        }
    }
}
