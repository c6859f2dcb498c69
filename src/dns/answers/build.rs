//! Keeping the ready answers in step with the registry: on every change of
//! a service, its plans (core::plan) are encoded into record sets and its
//! names published, under the registry's write lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::core::naming;
use crate::core::plan::{LOCAL_PRIORITY, zone_of};
use crate::core::strategy;
use crate::core::{
    AskerClass, Balance, Batch, ClientZones, Datacenter, FastHash, Instance, Observer, Plan,
    Registry, RemoteTier, ServiceKey, ServiceName, ServiceSnapshot, VersionSelector,
};

use super::super::encoded::{AT_QNAME, EncodedInstances, Encoding, InstanceWire, offset};
use super::super::wire::types;
use super::instances::InstanceTable;
use super::lookup::ReadyAnswers;
use super::members::Subset;
use super::node::{Near, Node, SAME_SETS, Selectors, Sets, Spread, Variant};
use super::rrset::RecordSet;

/// Keeps [`ReadyAnswers`] in step with the registry. Runs under the registry's
/// write lock, so its own state needs no more than an uncontended mutex.
pub struct AnswerBuilder {
    answers: ReadyAnswers,
    local_dc: Datacenter,
    ttl: u32,
    state: Mutex<BuilderState>,
    /// Read for the services of other datacenters and the failover order
    /// when local names fail over (never in a single datacenter).
    registry: Registry,
    /// The client zones `nearest` orders are kept for.
    client_zones: Arc<ClientZones>,
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
type ServiceState = Option<Box<EncodedInstances<Arc<Instance>>>>;

/// Services with fewer instances are encoded whole on each change: a few
/// encodings cost a microsecond or two, and keeping them would cost a few
/// hundred bytes per service, which is most of the memory of a registry of
/// many small services.
const KEEP_ENCODED_FROM: usize = 8;

impl AnswerBuilder {
    pub fn new(answers: ReadyAnswers, registry: &Registry, ttl: u32) -> Self {
        let client_zones = answers.inner.client_zones.clone();
        Self {
            answers,
            local_dc: registry.local_dc().clone(),
            ttl,
            state: Mutex::new(BuilderState::default()),
            registry: registry.clone(),
            client_zones,
        }
    }

    /// The failover order changed (a peer went stale or came back, an
    /// override was set): every local name is decided again.
    pub fn failover_changed(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut services: Vec<ServiceName> =
            st.services.keys().map(|k| k.service.clone()).collect();
        services.sort();
        services.dedup();
        for s in services {
            self.publish_local_names(&mut st, &s);
        }
    }

    /// Publishes what the local names of `service` (`payments.<zone>`,
    /// `_payments._tcp.<zone>`, and the version names below them) answer:
    /// the local service while it has a passing instance; else the first
    /// datacenter of the failover order that has one, with the failover
    /// TTL; with SRV tiers, the SRV set lists every failover datacenter's
    /// instances after the local ones, at priority 2, 3, ...
    fn publish_local_names(&self, _locked: &mut BuilderState, service: &ServiceName) {
        let local_key = ServiceKey::new(self.local_dc.clone(), service.clone());
        let local = self.registry.service(&local_key);
        // The local service's node, as its explicit names
        // (`payments.<dc>.<zone>`) answer it.
        let explicit = self.wire(&[service.to_string(), self.local_dc.to_string()]);
        let local_node = self
            .answers
            .inner
            .names
            .pin()
            .get(&*explicit)
            .filter(|_| local.is_some())
            .cloned();
        let policy = self.registry.failover();
        let tiers_wanted = if policy.srv_tiers() { usize::MAX } else { 1 };
        let has_local = self.registry.has_local_answer(local.as_deref());
        let tiers = self.registry.failover_tiers(
            service,
            if has_local && !policy.srv_tiers() {
                0
            } else {
                tiers_wanted
            },
        );
        let failover_ttl = policy.ttl();
        let node = match (has_local, tiers.first()) {
            (true, None) | (false, None) => local_node,
            (true, Some(_)) => local_node.map(|n| {
                let Some(local) = &local else { return n };
                let wires_of = self.encoded_tiers(&tiers, failover_ttl);
                let plan = local.address_plan(None, AskerClass::ANYONE);
                let local_enc = self.encode_all(local, failover_ttl);
                let lw: Vec<InstanceWire<'_>> = one_tier(&plan)
                    .0
                    .iter()
                    .map(|&p| local_enc.wire(p as usize))
                    .collect();
                let mut parts: Vec<(Vec<InstanceWire<'_>>, u16)> = vec![(lw, LOCAL_PRIORITY)];
                parts.extend(tiered_wires(&tiers, &wires_of));
                Arc::new(Node {
                    anyone: Variant {
                        sets: Sets {
                            srv: RecordSet::srv_tiers(&parts),
                            ..n.anyone.sets.clone()
                        },
                        ..n.anyone.clone()
                    },
                    ..Node::clone(&n)
                })
            }),
            (false, Some(first)) => {
                let first_enc = self.encode_all(&first.snapshot, failover_ttl);
                let mut node = self.node_of(&first.snapshot, &first_enc);
                node.instances = InstanceTable::default();
                if policy.srv_tiers() {
                    let wires_of = self.encoded_tiers(&tiers, failover_ttl);
                    let parts = tiered_wires(&tiers, &wires_of);
                    node.anyone.sets.srv = RecordSet::srv_tiers(&parts);
                }
                Some(Arc::new(node))
            }
        };
        let names = self.answers.inner.names.pin();
        for srv_form in [false, true] {
            let t = naming::NameTarget::Service {
                dc: None,
                service: service.clone(),
                version: None,
                srv_form,
            };
            self.publish(&names, &self.wire(&naming::render(&t)), node.clone());
        }
    }

    /// Every instance of `snap` encoded with records of `ttl` seconds.
    fn encode_all(&self, snap: &ServiceSnapshot, ttl: u32) -> EncodedInstances<Arc<Instance>> {
        EncodedInstances::default().merge(snap.instances.iter(), |inst, out| {
            self.encode_instance(inst, out, ttl)
        })
    }

    fn encoded_tiers(
        &self,
        tiers: &[RemoteTier],
        ttl: u32,
    ) -> Vec<EncodedInstances<Arc<Instance>>> {
        tiers
            .iter()
            .map(|t| self.encode_all(&t.snapshot, ttl))
            .collect()
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

    /// Appends the records of [`InstanceWire`] for `inst` to `out`: its
    /// SRV record, whose target is the instance name whether it was
    /// registered by IP address or host name, and its address records (a
    /// host name's resolved addresses; none while it has none).
    fn encode_instance(&self, inst: &Instance, out: &mut Vec<u8>, ttl: u32) -> Encoding {
        let start = out.len();
        out.extend_from_slice(&AT_QNAME);
        let rdata_at = push_tail_header(out, types::SRV, ttl);
        out.extend_from_slice(&LOCAL_PRIORITY.to_be_bytes());
        out.extend_from_slice(&inst.weight.to_be_bytes());
        out.extend_from_slice(&inst.port.to_be_bytes());
        let name = self.wire(&[
            inst.id.to_string(),
            inst.service.to_string(),
            inst.datacenter.to_string(),
        ]);
        out.extend_from_slice(&name);
        set_rdlength(out, rdata_at);
        let srv_len = u16::try_from(out.len() - start).expect("an SRV record below 64 KiB");
        let (mut a, mut aaaa) = (0u8, 0u8);
        for rtype in [types::A, types::AAAA] {
            for addr in inst.addresses() {
                let (v4, v6);
                let rdata: &[u8] = match (addr, rtype) {
                    (IpAddr::V4(ip), types::A) => {
                        v4 = ip.octets();
                        &v4
                    }
                    (IpAddr::V6(ip), types::AAAA) => {
                        v6 = ip.octets();
                        &v6
                    }
                    _ => continue,
                };
                // The first record's owner is the SRV target just written.
                if a + aaaa > 0 {
                    out.extend_from_slice(&name);
                }
                let at = push_tail_header(out, rtype, ttl);
                out.extend_from_slice(rdata);
                set_rdlength(out, at);
                match rtype {
                    types::A => a += 1,
                    _ => aaaa += 1,
                }
            }
        }
        Encoding { srv_len, a, aaaa }
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
        let failover = self.registry.failover().is_active();
        let Some(snap) = snap else {
            if old.is_none() {
                return;
            }
            for (name, target) in service_names().zip(naming::service_names(key, &self.local_dc)) {
                let local_name = matches!(target, naming::NameTarget::Service { dc: None, .. });
                if !(failover && local_name) {
                    self.publish(&names, &name, None);
                }
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
        let instances = old_instances.merge(snap.instances.iter(), |inst, out| {
            self.encode_instance(inst, out, self.ttl)
        });
        let node = Arc::new(self.node_of(snap, &instances));
        let failover = self.registry.failover().is_active();
        for (name, target) in service_names().zip(naming::service_names(key, &self.local_dc)) {
            // With failover configured, the local names are decided by
            // `publish_local_names` once the batch is applied.
            let local_name = matches!(target, naming::NameTarget::Service { dc: None, .. });
            if !(failover && local_name) {
                self.publish(&names, &name, Some(node.clone()));
            }
        }
        let kept = (instances.len() >= KEEP_ENCODED_FROM).then(|| Box::new(instances));
        st.services.insert(key.clone(), kept);
    }

    /// The node of a service's names: its plans (what the core says they
    /// answer, for everyone) encoded from `instances` (the snapshot's, in
    /// its order).
    fn node_of(&self, snap: &ServiceSnapshot, instances: &EncodedInstances<Arc<Instance>>) -> Node {
        // `instances` is in the snapshot's order, one entry per instance:
        // a member's position in the snapshot is its position here.
        debug_assert_eq!(instances.len(), snap.instances.len());
        let plan = snap.address_plan(None, AskerClass::ANYONE);
        let (all, priority) = one_tier(&plan);
        let all_wires: Vec<InstanceWire<'_>> =
            all.iter().map(|&p| instances.wire(p as usize)).collect();
        // Empty sets are left out (NODATA either way): no allocation.
        let sets = Sets {
            a: RecordSet::addresses(&all_wires, types::A),
            aaaa: RecordSet::addresses(&all_wires, types::AAAA),
            srv: RecordSet::srv(&all_wires, priority),
        };
        let (versions, version_sets) = version_names(snap, all, &all_wires);
        let spread = self.spread(snap, &plan, all, &all_wires);
        // One node for every name of the service: the query path finds
        // version and instance names only below the names that have them.
        Node {
            anyone: Variant {
                sets,
                versions,
                version_sets,
                spread,
            },
            instances: self.instance_table(instances),
            statics: Box::default(),
            service: Some(self.answers.service_ref(&snap.key.service)),
        }
    }

    /// The precomputed orders of the service's sets for its strategy
    /// (docs/adr/0007-answer-variants-for-strategies.md). `all`: the plan's
    /// members, in the sets' order.
    fn spread(
        &self,
        snap: &ServiceSnapshot,
        plan: &Plan,
        all: &[u32],
        all_wires: &[InstanceWire<'_>],
    ) -> Spread {
        let n = all.len();
        if n < 2 {
            return Spread::Rotate; // one order only
        }
        let ranks = ranks_of(all_wires);
        let subset = |order: &[u32]| order_subset(order, &ranks);
        let seed = strategy::mix(snap.index ^ strategy::id_hash(snap.key.service.as_str()));
        let inst = |k: usize| snap.instances.at(all[k]);
        match plan.balance {
            Balance::RoundRobin => Spread::Rotate,
            Balance::Random => Spread::Cycle(
                strategy::random_orders(n, strategy::RANDOM_ORDERS, seed)
                    .iter()
                    .map(|o| subset(o))
                    .collect(),
            ),
            Balance::Weighted => {
                let weights: Vec<u16> = (0..n).map(|k| inst(k).weight).collect();
                Spread::Cycle(
                    strategy::weighted_orders(&weights, strategy::CYCLE_ORDERS, seed)
                        .iter()
                        .map(|o| subset(o))
                        .collect(),
                )
            }
            Balance::Sticky => {
                let ids: Vec<u64> = (0..n)
                    .map(|k| strategy::id_hash(inst(k).id.as_str()))
                    .collect();
                Spread::Sticky(
                    (0..strategy::STICKY_BUCKETS)
                        .map(|b| subset(&strategy::sticky_order(b, &ids)))
                        .collect(),
                )
            }
            Balance::Nearest => {
                let zones = &self.client_zones;
                let of: Vec<Option<u16>> = (0..n).map(|k| zone_of(inst(k), zones)).collect();
                Spread::Nearest(
                    (0..zones.zones().len() as u16)
                        .map(|z| {
                            let (order, head) = strategy::nearest_order(z, &of);
                            (head > 0).then(|| {
                                let mut counts = [0u32; 3];
                                for &k in &order[..head] {
                                    let [(_, na), (_, naaaa)] = ranks[k as usize];
                                    counts[0] += na;
                                    counts[1] += naaaa;
                                    counts[2] += 1;
                                }
                                Near {
                                    order: subset(&order),
                                    head: counts,
                                }
                            })
                        })
                        .collect(),
                )
            }
        }
    }

    /// The instance names' answers: every instance's address record under
    /// its id, whatever its health (the name of an instance stays resolvable
    /// while it is registered).
    /// Ids are stored in lowercase and instances kept in id order, which is
    /// the byte order of the labels that [`InstanceTable::find`] searches.
    fn instance_table(&self, instances: &EncodedInstances<Arc<Instance>>) -> InstanceTable {
        debug_assert!(instances.is_sorted());
        InstanceTable::new((0..instances.len()).map(|i| (instances.id(i), instances.wire(i))))
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
        // With failover configured, the local names of every service that
        // changed here or in another datacenter are decided again, before
        // the change is acknowledged.
        if self.registry.failover().is_active() {
            let mut touched: Vec<&ServiceName> =
                batch.services.iter().map(|(k, _)| &k.service).collect();
            touched.sort();
            touched.dedup();
            for s in touched {
                self.publish_local_names(&mut st, s);
            }
        }
    }
}

/// The wires of each failover tier's members, with the tier's priority.
fn tiered_wires<'a>(
    tiers: &[RemoteTier],
    encoded: &'a [EncodedInstances<Arc<Instance>>],
) -> Vec<(Vec<InstanceWire<'a>>, u16)> {
    tiers
        .iter()
        .zip(encoded)
        .map(|(t, enc)| {
            let wires = t
                .tier
                .members
                .iter()
                .map(|&p| enc.wire(p as usize))
                .collect();
            (wires, t.tier.priority)
        })
        .collect()
}

/// The members and SRV priority of a plan's one tier (empty when nothing
/// is selected). Plans have one tier until failover tiers (several SRV
/// priorities in one set) are encoded.
fn one_tier(plan: &Plan) -> (&[u32], u16) {
    debug_assert!(plan.tiers.len() <= 1, "one tier per plan today");
    match plan.tiers.first() {
        Some(t) => (&t.members, t.priority),
        None => (&[], LOCAL_PRIORITY),
    }
}

/// The version names of a service (see [`Node`]): every selector that
/// matches a passing instance, with [`SAME_SETS`] or the index of its
/// members in the returned subsets. `all`: the positions of the members of
/// the service's own sets (passing, with an address), `all_wires` their
/// records.
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
    let ranks = ranks_of(all_wires);
    // Where each instance is in `all` (u32::MAX: not a member).
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
            let [(ra, na), (raaaa, naaaa)] = ranks[k];
            a.extend(ra..ra + na);
            aaaa.extend(raaaa..raaaa + naaaa);
            srv.push(offset(k));
        }
        Subset::new(&a, &aaaa, &srv)
    };
    let mut versions: Vec<(VersionSelector, u32)> = Vec::new();
    let mut subsets: Vec<Subset> = Vec::new();
    let mut sizes: Vec<usize> = Vec::new();
    for sel in snap.selectors() {
        let plan = snap.address_plan(Some(sel), AskerClass::ANYONE);
        let members = one_tier(&plan).0;
        let parent = sel.parent().and_then(|p| {
            let at = versions.binary_search_by(|(s, _)| s.cmp(&p)).ok()?;
            Some((sizes[at], versions[at].1))
        });
        let (parent_len, parent_sets) = parent.unwrap_or((all.len(), SAME_SETS));
        let at = if members.len() == parent_len {
            parent_sets
        } else {
            subsets.push(subset_of(members));
            offset(subsets.len() - 1)
        };
        sizes.push(members.len());
        versions.push((*sel, at));
    }
    (versions.into(), subsets.into())
}

/// Where each member's records start in the A and AAAA sets, and how many
/// it has there; in the SRV set it is where it is in `all`.
fn ranks_of(all_wires: &[InstanceWire<'_>]) -> Vec<[(u32, u32); 2]> {
    let mut counts = [0u32; 2];
    all_wires
        .iter()
        .map(|w| {
            [types::A, types::AAAA].map(|t| {
                let k = usize::from(t == types::AAAA);
                let n = offset(w.addr_count(t));
                counts[k] += n;
                (counts[k] - n, n)
            })
        })
        .collect()
}

/// An order of the members (indexes into `all`) as the positions of their
/// records in each set.
fn order_subset(order: &[u32], ranks: &[[(u32, u32); 2]]) -> Subset {
    let (mut a, mut aaaa) = (Vec::new(), Vec::new());
    let mut srv = Vec::with_capacity(order.len());
    for &k in order {
        let [(ra, na), (raaaa, naaaa)] = ranks[k as usize];
        a.extend(ra..ra + na);
        aaaa.extend(raaaa..raaaa + naaaa);
        srv.push(k);
    }
    Subset::new(&a, &aaaa, &srv)
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
