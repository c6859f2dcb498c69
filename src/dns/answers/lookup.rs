//! The query path: parse, one lookup, choose the asker's variant, copy the
//! pre-encoded records into the reply. Nothing here allocates.

use std::cell::Cell;
use std::sync::Arc;

use crate::askers::{Askers, ServiceRef};
use crate::core::naming::{self, BelowService};
use crate::core::strategy;
use crate::core::{AskerClass, ClientZones, FastHash, QueryContext, ServiceName, Transport};

use super::super::wire::{self, Flags, ReplyWriter, Request, Section, rcode, types};
use super::super::zone::{StaticRrset, Zone};
use super::instances::InstanceRecords;
use super::members::Subset;
use super::node::{Node, Sets, Spread};
use super::rrset::RecordSet;

/// The order of names without a strategy of their own (version names).
static ROTATE: Spread = Spread::Rotate;

/// The map the query path reads. Cloning copies one `Arc`.
#[derive(Clone)]
pub struct ReadyAnswers {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) zone: Zone,
    /// Keyed by lowercase wire name, hashed with the per-process seed of
    /// [`FastHash`].
    pub(super) names: NameMap,
    max_records: usize,
    /// Client networks and their zones, for `nearest` answers.
    pub(super) client_zones: Arc<ClientZones>,
    /// Who may see which service (set once, at start; unset: everyone
    /// sees everything, as in tests of the answers alone).
    pub(super) askers: std::sync::OnceLock<Askers>,
    /// Each service's id for the askers' verdict caches, given when the
    /// service is first built and kept (ids are never reused).
    service_ids: papaya::HashMap<ServiceName, u32, FastHash>,
    next_service_id: std::sync::atomic::AtomicU32,
}

/// The answer map: lowercase wire name -> what is stored there.
pub(super) type NameMap = papaya::HashMap<Box<[u8]>, Arc<Node>, FastHash>;

thread_local! {
    /// Rotation counter, one per worker thread: no shared cache line.
    static ROTATION: Cell<usize> = const { Cell::new(0) };
}

impl ReadyAnswers {
    pub fn new(zone: Zone, max_records: usize) -> Self {
        Self::with_client_zones(zone, max_records, Arc::default())
    }

    /// Answers whose `nearest` services order by these client zones.
    pub fn with_client_zones(
        zone: Zone,
        max_records: usize,
        client_zones: Arc<ClientZones>,
    ) -> Self {
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
            inner: Arc::new(Inner {
                zone,
                names,
                max_records,
                client_zones,
                askers: std::sync::OnceLock::new(),
                service_ids: papaya::HashMap::with_hasher(FastHash::default()),
                next_service_id: Default::default(),
            }),
        }
    }

    /// `service` with its id for the askers' verdict caches (the builder
    /// calls it once per node it builds, not the query path).
    pub(super) fn service_ref(&self, service: &ServiceName) -> ServiceRef {
        let ids = self.inner.service_ids.pin();
        let id = *ids.get_or_insert_with(service.clone(), || {
            self.inner
                .next_service_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        });
        ServiceRef {
            name: service.clone(),
            id,
        }
    }

    /// Answers only what each asker may see (read rules, intentions);
    /// the first call wins.
    pub fn set_askers(&self, askers: Askers) {
        let _ = self.inner.askers.set(askers);
    }

    pub fn zone(&self) -> &Zone {
        &self.inner.zone
    }

    /// Writes the reply to `packet`, asked by `ctx`'s asker, into `out`.
    /// False: send nothing.
    ///
    /// A bug must not take a listener down with it: a panic while answering
    /// is logged and the packet dropped (the fuzz target hunts for them).
    pub fn respond(&self, packet: &[u8], out: &mut Vec<u8>, ctx: QueryContext) -> bool {
        let run = std::panic::AssertUnwindSafe(|| self.respond_inner(packet, out, ctx));
        std::panic::catch_unwind(run).unwrap_or_else(|_| {
            tracing::error!(packet = ?packet, "panic while answering a DNS packet; dropped");
            false
        })
    }

    /// [`ReadyAnswers::respond`] without the panic guard, for the fuzz target.
    #[doc(hidden)]
    pub fn respond_unguarded(&self, packet: &[u8], out: &mut Vec<u8>, ctx: QueryContext) -> bool {
        self.respond_inner(packet, out, ctx)
    }

    fn respond_inner(&self, packet: &[u8], out: &mut Vec<u8>, mut ctx: QueryContext) -> bool {
        let req = match wire::parse(packet) {
            Ok(r) => r,
            Err(reject) => return wire::write_reject(out, packet, &reject),
        };
        ctx.client_subnet = req.client_subnet;
        if req.tsig_len > 0 {
            return self.respond_signed(&req, out, &ctx);
        }
        self.answer(&req, out, &ctx, None);
        true
    }

    /// A query signed with TSIG (RFC 8945): verified, then answered as the
    /// key's token and signed; a key Maxine does not know, a bad MAC or a
    /// time outside the fudge get NOTAUTH with the TSIG error (5.2).
    fn respond_signed(&self, req: &Request<'_>, out: &mut Vec<u8>, ctx: &QueryContext) -> bool {
        use hickory_proto::rr::TSigResponseContext;
        use hickory_proto::rr::rdata::tsig::{TsigError, signed_bitmessage_to_buf};
        let Ok((_, rec)) = signed_bitmessage_to_buf(req.packet, None, true) else {
            let formerr = wire::Reject::HeaderOnly {
                rcode: rcode::FORMERR,
            };
            return wire::write_reject(out, req.packet, &formerr);
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = rec.name.to_lowercase().to_ascii();
        let key = self
            .inner
            .askers
            .get()
            .and_then(|a| a.tsig_key(name.trim_end_matches('.')))
            .filter(|k| *k.signer.algorithm() == rec.data.algorithm);
        let (context, key) = match key {
            None => (
                TSigResponseContext::unknown_key(req.id, now, rec.name.clone()),
                None,
            ),
            Some(k) => match k.signer.verify_message_byte(req.packet, None, true) {
                Err(_) => (
                    TSigResponseContext::bad_signature(req.id, now, k.signer.clone()),
                    None,
                ),
                Ok((_, _, valid)) if !valid.contains(&now) => (
                    TSigResponseContext::new(
                        req.id,
                        now,
                        k.signer.clone(),
                        rec.data.mac.clone(),
                        Some(TsigError::BadTime),
                    ),
                    None,
                ),
                Ok(_) => {
                    let signed = TSigResponseContext::new(
                        req.id,
                        now,
                        k.signer.clone(),
                        rec.data.mac.clone(),
                        None,
                    );
                    (signed, Some(k))
                }
            },
        };
        match &key {
            Some(k) => self.answer(req, out, ctx, Some(k)),
            None => {
                let flags = Flags {
                    aa: false,
                    rd: req.rd,
                    cd: req.cd,
                    rcode: rcode::NOTAUTH,
                };
                let limit = wire::size_limit(req.edns, ctx.transport == Transport::Tcp);
                ReplyWriter::start(out, req, flags, limit - tsig_room(req)).finish(req.edns, 0);
            }
        }
        append_tsig(out, context)
    }

    fn answer(
        &self,
        req: &Request<'_>,
        out: &mut Vec<u8>,
        ctx: &QueryContext,
        key: Option<&crate::askers::Signer>,
    ) {
        let limit = wire::size_limit(req.edns, ctx.transport == Transport::Tcp) - tsig_room(req);
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
        // A blacklisted network is refused everything (one atomic load
        // while no network is blacklisted).
        if let Some(askers) = self.inner.askers.get()
            && askers.is_blocked(ctx.peer)
        {
            return refuse_prohibited(out, req, flags, limit, "source network is blacklisted");
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
        let class = AskerClass::of(ctx);
        let names = self.inner.names.pin();
        let qname = req.qname();
        let found = match names.get(qname) {
            Some(n) => Some((Found::Node(n), n.service.as_ref())),
            None => below_service(&names, qname, req.labels_before(apex_at), class),
        };
        // Policy: one atomic load when off; else the asker's class and its
        // verdict for the service, two lookups (docs/adr/0011-asker-classes.md).
        // The scope of a Client Subnet echo: the bits of the subnet the
        // answer depends on (0: none, the answer is everyone's).
        let mut scope = 0;
        if let Some((_, Some(service))) = &found
            && let Some(askers) = self.inner.askers.get()
            && askers.is_on()
        {
            let d = match key {
                // A signed query is asked as its key's token, whatever its
                // address or subnet.
                Some(k) => crate::askers::Decision {
                    visible: askers.signed_may_see(k, service),
                    scope: 0,
                },
                None => askers.decide(ctx.peer, req.client_subnet, service),
            };
            if !d.visible && d.scope > 0 {
                // Asked through a trusted recursor for a subnet: no data,
                // for that subnet only. A recursor throws REFUSED away and
                // would cache SERVFAIL for every client (docs/dns.md).
                let mut w = ReplyWriter::start(out, req, flags, limit);
                self.push_soa(&mut w, apex_at);
                w.set_scope(d.scope);
                return w.finish_with(req.edns, 0, Some(PROHIBITED));
            }
            if !d.visible {
                return refuse_prohibited(out, req, flags, limit, PROHIBITED.1);
            }
            scope = d.scope;
        }
        let Some((found, _)) = found else {
            flags.rcode = rcode::NXDOMAIN;
            let mut w = ReplyWriter::start(out, req, flags, limit);
            self.push_soa(&mut w, apex_at);
            return w.finish(req.edns, 0);
        };
        let mut w = ReplyWriter::start(out, req, flags, limit);
        let written = match found {
            Found::Node(node) => {
                let v = node.variant(class);
                // `sticky` and `nearest` orders follow the subnet too.
                if let Some(s) = req.client_subnet
                    && matches!(v.spread, Spread::Sticky(_) | Spread::Nearest(_))
                {
                    scope = scope.max(s.source_prefix);
                }
                self.write_answer(&v.sets, &v.spread, &node.statics, req.qtype, ctx, &mut w)
            }
            Found::Version(sets, None) => {
                self.write_answer(sets, &ROTATE, &[], req.qtype, ctx, &mut w)
            }
            Found::Version(sets, Some(subset)) => {
                self.write_subset(sets, subset, req.qtype, &mut w)
            }
            Found::Instance(records) => {
                // RFC 8482: one RRset is a complete answer to ANY.
                let rtype = match req.qtype {
                    types::ANY if records.of_type(types::A).1 > 0 => types::A,
                    types::ANY => types::AAAA,
                    t => t,
                };
                // A few records (an IP instance has one; a host name at most
                // MAX_RESOLVED_ADDRESSES): truncated if they do not fit.
                let (rec, n) = records.of_type(rtype);
                (n > 0).then(|| w.push_records(Section::Answer, rec, n))
            }
        };
        match written {
            Some(true) => {}
            Some(false) => w.truncate(),
            None => self.push_soa(&mut w, apex_at), // NODATA
        }
        w.set_scope(scope);
        w.finish(req.edns, 0);
    }

    /// The SOA in the authority section of a negative answer (RFC 2308).
    /// The apex is a suffix of the question name: its owner points there.
    fn push_soa(&self, w: &mut ReplyWriter<'_>, apex_at: usize) {
        if !w.push_at_offset(
            Section::Authority,
            12 + apex_at,
            &self.inner.zone.soa_negative_tail,
        ) {
            w.truncate();
        }
    }

    /// Writes the answer for `qtype` at a name with these sets and static
    /// data. `None`: no data of that type (NODATA); `Some(false)`: the
    /// answer does not fit (truncate).
    fn write_answer(
        &self,
        sets: &Sets,
        spread: &Spread,
        statics: &[StaticRrset],
        qtype: u16,
        ctx: &QueryContext,
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
            return Some(self.write_set(set, spread, qtype, ctx, w));
        }
        let set = statics.iter().find(|s| s.rtype == qtype)?;
        Some(write_static(set, w))
    }

    /// The answer of a version name that selects some of its service's
    /// instances: like [`ReadyAnswers::write_answer`] on sets of their own (a
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
        let take = self.window(n, w);
        Some(set.write_members(members, next_rotation() % n, take, w))
    }

    /// How many of `n` records an answer carries: over UDP at most
    /// `dns.max_records` (answers rotate through the rest); over TCP every
    /// one, so that clients that take the whole set (SRV discovery,
    /// server templates) see all instances, not a rotating subset. What
    /// does not fit in the 64 KiB message is left out by the writer.
    #[inline]
    fn window(&self, n: usize, w: &ReplyWriter<'_>) -> usize {
        if w.is_stream() {
            n
        } else {
            n.min(self.inner.max_records)
        }
    }

    /// Up to `max_records` records, starting at a rotating offset so that
    /// successive answers spread load over all of them. The window is at most
    /// two runs of the set (it may wrap around), each copied at once.
    ///
    /// Other strategies pick one of the set's precomputed orders (`spread`)
    /// by the thread's counter, the asker's subnet or its zone: a choice,
    /// not a computation (docs/adr/0007-answer-variants-for-strategies.md).
    fn write_set(
        &self,
        set: &RecordSet,
        spread: &Spread,
        qtype: u16,
        ctx: &QueryContext,
        w: &mut ReplyWriter<'_>,
    ) -> bool {
        let n = set.len();
        let take = self.window(n, w);
        let turn = next_rotation();
        let chosen = spread.choose(
            qtype,
            turn,
            || strategy::sticky_bucket(ctx.peer, ctx.client_subnet),
            || {
                let addr = strategy::asker_addr(ctx.peer, ctx.client_subnet)?;
                self.inner.client_zones.zone_of(addr)
            },
        );
        match chosen {
            Some(c) if c.members.len() == n => {
                set.write_order(c.members, c.head, turn % c.head.max(1), take, w)
            }
            _ => set.write(turn % n, take, w),
        }
    }
}

/// Room a signed reply keeps for its TSIG record: about as long as the
/// query's (same key name, algorithm and MAC length), and never more than
/// Maxine's own can be (a 255-byte name, the longest algorithm name, a
/// 64-byte MAC, a 6-byte time in other data), so that a query with a huge
/// TSIG record cannot squeeze the reply below its header and OPT record.
#[inline]
fn tsig_room(req: &Request<'_>) -> usize {
    if req.tsig_len == 0 {
        0
    } else {
        req.tsig_len.min(400) + 8
    }
}

/// Appends the TSIG record `context` makes for the reply in `out` and counts
/// it in ARCOUNT. False (send nothing) if it cannot be made.
fn append_tsig(out: &mut Vec<u8>, context: hickory_proto::rr::TSigResponseContext) -> bool {
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
    let Ok(record) = context.sign(out) else {
        return false;
    };
    let mut bytes = Vec::with_capacity(128);
    if record.emit(&mut BinEncoder::new(&mut bytes)).is_err() {
        return false;
    }
    out.extend_from_slice(&bytes);
    let ar = u16::from_be_bytes([out[10], out[11]]).wrapping_add(1);
    out[10..12].copy_from_slice(&ar.to_be_bytes());
    true
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
pub(super) enum Found<'g> {
    Node(&'g Node),
    /// A version name: its service's sets, and which of their records are
    /// its own (`None`: all of them).
    Version(&'g Sets, Option<&'g Subset>),
    /// An instance name: its address records.
    Instance(InstanceRecords<'g>),
}

/// A name that is not in the map may still be one held by the service name
/// below it (see [`Node`]): a version name or an instance name, as the
/// naming grammar reads them ([`naming::below_service`]). All names of a
/// service share its node, so one more lookup finds them.
///
/// `labels` is the number of labels above the zone's apex, so most unknown
/// names (one label under the apex) cost no second lookup.
fn below_service<'g>(
    names: &'g papaya::HashMapRef<'_, Box<[u8]>, Arc<Node>, FastHash, papaya::LocalGuard<'_>>,
    qname: &[u8],
    labels: usize,
    class: AskerClass,
) -> Option<(Found<'g>, Option<&'g ServiceRef>)> {
    let len = *qname.first()? as usize;
    let label = qname.get(1..1 + len)?;
    let base_name = qname.get(1 + len..)?;
    let base_len = *base_name.first()? as usize;
    let base_first = base_name.get(1..1 + base_len)?;
    let below = naming::below_service(label, base_first, labels)?;
    let base = names.get(base_name)?;
    let found = match below {
        BelowService::Version(sel) => base.variant(class).version(&sel)?,
        BelowService::Instance(id) => Found::Instance(base.instances.find(id)?),
    };
    Some((found, base.service.as_ref()))
}

/// A question the asker may not have answered: REFUSED, with Extended DNS
/// Error 18 "Prohibited" when the query has EDNS (docs/dns.md). Not
/// NXDOMAIN: a recursor would cache that and hand it to askers who may
/// see the name.
fn refuse_prohibited(out: &mut Vec<u8>, req: &Request<'_>, flags: Flags, limit: usize, why: &str) {
    let flags = Flags {
        aa: false,
        rcode: rcode::REFUSED,
        ..flags
    };
    let w = ReplyWriter::start(out, req, flags, limit);
    w.finish_with(req.edns, 0, Some((wire::ede::PROHIBITED, why)));
}

/// The Extended DNS Error of an answer policy does not allow.
const PROHIBITED: (u16, &str) = (wire::ede::PROHIBITED, "not allowed by policy");

fn write_static(set: &StaticRrset, w: &mut ReplyWriter<'_>) -> bool {
    for t in &set.tails {
        if !w.push_at_qname(Section::Answer, t) {
            return false;
        }
    }
    for g in &set.glue {
        if !w.push_full(Section::Additional, g) {
            break;
        }
    }
    true
}
