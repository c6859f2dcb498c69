//! Who asks on DNS, and what they may see: askers partitioned into
//! classes, each class with the verdicts it was actually asked for
//! (docs/adr/0011-asker-classes.md).
//!
//! An asker is, in this order: the service identity of the registered
//! instances at its address; else the policies of the operator-declared
//! DNS client network its address falls in; else anonymous (the
//! anonymous token's policies). Askers that are the same in those terms
//! share a [`Class`]. A class sees a service or it does not (read rules
//! and intentions decide per service, never per instance), so its ready
//! answer for a name is either everyone's ready answer or the refusal:
//! the class keeps one verdict per service it was asked about, computed
//! on the first question and reused until the rules change.
//!
//! The query path: is policy on (one atomic load; when off it ends
//! there)? -> the current rules (one lock-free lookup) -> the asker's
//! class (one lock-free lookup by address, or a scan of the few client
//! networks) -> the class's verdict for the service (one lock-free
//! lookup). Rules are rebuilt, under the registry's write lock and before
//! the change is acknowledged, whenever an intention, a client network, a
//! policy or a token changes; every verdict carries the generation of the
//! rules it was computed under and one of an older generation is
//! computed again, so no verdict outlives the rules it came from.
//!
//! What each asker may see is `policy::visibility`'s pure decision; this
//! module keeps the classes and their verdicts current.
//!
//! Blacklisted networks ([`Askers::is_blocked`]) are kept with the same
//! rules, in a prefix table: a query from one of them is refused whatever
//! it asks, and while none is listed the check is one atomic load.
//!
//! Must not import: http, dns, store, config, events (front ends import
//! it; tests/architecture.rs checks).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::core::{AclKey, AclObject, IntentionAction, Side};
use crate::core::{
    Batch, Cidr, CidrTable, ClientSubnet, FastHash, InstanceDiff, Observer, Registry, ServiceKey,
    ServiceName,
};
use crate::policy::visibility::{ClassKey, Defaults, Visibility};
use crate::policy::{Grants, IntentionTable, Intentions};

/// A service as the DNS answers name it: its name, and the small number
/// its verdicts are cached under (the answers give each service one when
/// they first build it; [`ServiceRef::UNCACHED`] for none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRef {
    pub name: ServiceName,
    pub id: u32,
}

impl ServiceRef {
    /// An id beyond every cache slot: its verdict is decided each time.
    pub const UNCACHED: u32 = u32::MAX;
}

/// Verdict cache slots per class: direct-mapped by service id, one
/// 8-byte atomic each (32 KB a class). More services than slots share
/// slots, and a verdict evicted by another service is decided again.
const VERDICT_SLOTS: usize = 4096;
/// A slot holds `generation << 26 | service id << 2 | visible << 1 | 1`:
/// service ids below 2^24 are cached, generations compared in 38 bits.
const ID_BITS: u32 = 24;

fn verdict_word(generation: u64, id: u32, visible: bool) -> u64 {
    (generation << (ID_BITS + 2)) | (u64::from(id) << 2) | (u64::from(visible) << 1) | 1
}

/// A set of askers that see the same services.
pub struct Class {
    pub key: ClassKey,
    /// Small number, for logs and metrics.
    pub id: u32,
    /// The verdicts it was asked for, by service id: one load and a
    /// compare on the query path, no hashing, no allocation per entry.
    verdicts: Box<[AtomicU64]>,
}

impl Class {
    fn new(key: ClassKey, id: u32) -> Arc<Self> {
        Arc::new(Self {
            key,
            id,
            verdicts: (0..VERDICT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// The cached verdict for `service` under rules of `generation`.
    #[inline]
    fn cached(&self, generation: u64, id: u32) -> Option<bool> {
        if id >= 1 << ID_BITS {
            return None;
        }
        let w = self.verdicts[id as usize % VERDICT_SLOTS].load(Ordering::Relaxed);
        let mask = !0b10u64;
        (w & mask == verdict_word(generation, id, false) & mask).then_some(w & 0b10 != 0)
    }

    fn remember(&self, generation: u64, id: u32, visible: bool) {
        if id < 1 << ID_BITS {
            self.verdicts[id as usize % VERDICT_SLOTS]
                .store(verdict_word(generation, id, visible), Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Class")
            .field("key", &self.key)
            .field("id", &self.id)
            .finish()
    }
}

/// The rules as of one generation: immutable, replaced whole.
struct Rules {
    generation: u64,
    visibility: Visibility,
    /// Client networks with their classes, by longest prefix.
    networks: CidrTable<Arc<Class>>,
    /// Blacklisted networks: every query from them is refused.
    blacklisted: CidrTable<()>,
    anonymous: Arc<Class>,
    /// TSIG keys by name (lowercase, no final dot).
    keys: HashMap<String, Signer>,
}

/// A TSIG key as the query path uses it: what verifies and signs with it
/// (RFC 8945), and the class of the queries it signs.
#[derive(Clone)]
pub struct Signer {
    pub signer: hickory_proto::rr::TSigner,
    pub class: Arc<Class>,
    /// When the bound token expires (ms since the Unix epoch): from then
    /// on the key signs for no one.
    pub expires_at: Option<u64>,
}

/// The asker classes and their verdicts. Cloning copies one `Arc`.
#[derive(Clone)]
pub struct Askers {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    defaults: Defaults,
    /// False while nothing restricts anyone (no intentions, no client
    /// networks, ACL and intention defaults allow, an anonymous token
    /// without policies): the query path then does exactly what it did
    /// before policies existed.
    on: AtomicBool,
    /// False while no network is blacklisted: then the query path does
    /// not look for the asker's network at all.
    blocking: AtomicBool,
    /// The current rules, under the one key `()`: a lock-free cell.
    rules: papaya::HashMap<(), Arc<Rules>, FastHash>,
    /// Address of a registered instance -> its identity's class.
    addresses: papaya::HashMap<IpAddr, Arc<Class>, FastHash>,
    next_id: AtomicU32,
    write: Mutex<WriteSide>,
    /// `dns.trusted_recursors`: sources whose EDNS Client Subnet stands
    /// for the asker. Empty: no query's subnet is looked at.
    trusted: Box<[Cidr]>,
}

/// Who stands for the asker of a query, and the scope prefix length of
/// the answer's Client Subnet echo (RFC 7871 7.2.1): how many leading
/// bits of the forwarded subnet the decision depended on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub visible: bool,
    /// 0: the decision did not depend on the subnet (an untrusted source,
    /// none was forwarded, or one of prefix 0). Above 0: a trusted
    /// recursor's subnet stood for the asker.
    pub scope: u8,
}

#[derive(Default)]
struct WriteSide {
    generation: u64,
    /// The addresses each service (of each datacenter) has, each with how
    /// many of its instances have it.
    by_key: HashMap<ServiceKey, BTreeMap<IpAddr, u32>>,
    /// Per address, how many service keys of each service have it.
    by_addr: HashMap<IpAddr, BTreeMap<ServiceName, u32>>,
    identities: HashMap<Box<[ServiceName]>, Arc<Class>>,
    /// How many intentions the registry holds (kept from the changes).
    intentions: usize,
}

/// The registry's intentions, looked up where they are stored: rules
/// rebuilt after one intention changed copy none of them. The registry's
/// objects are updated before the rules' generation moves on, so a
/// verdict of the new generation sees the change; one of the old
/// generation that already saw it is decided again anyway.
struct LiveIntentions {
    registry: Registry,
    count: usize,
}

impl std::fmt::Debug for LiveIntentions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveIntentions({})", self.count)
    }
}

impl IntentionTable for LiveIntentions {
    fn action(&self, source: &Side, destination: &Side) -> Option<IntentionAction> {
        let key = AclKey::Intention(source.clone(), destination.clone());
        match self.registry.acl_object(&key)? {
            AclObject::Intention(i) => Some(i.action),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl Askers {
    /// The classes of `registry`'s askers; subscribe the result to the
    /// registry (it learns instance addresses from its changes).
    pub fn new(registry: &Registry, defaults: Defaults) -> Self {
        Self::with_trusted_recursors(registry, defaults, Vec::new())
    }

    /// [`Askers::new`], taking the Client Subnet that sources in `trusted`
    /// forward as the asker (docs/security.md#who-is-asking).
    pub fn with_trusted_recursors(
        registry: &Registry,
        defaults: Defaults,
        trusted: Vec<Cidr>,
    ) -> Self {
        let a = Self {
            inner: Arc::new(Inner {
                registry: registry.clone(),
                defaults,
                on: AtomicBool::new(false),
                blocking: AtomicBool::new(false),
                rules: papaya::HashMap::with_hasher(FastHash::default()),
                addresses: papaya::HashMap::with_hasher(FastHash::default()),
                next_id: AtomicU32::new(1),
                write: Mutex::default(),
                trusted: trusted.into(),
            }),
        };
        a.refresh();
        a
    }

    /// Whether any policy restricts DNS askers.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.inner.on.load(Ordering::Acquire)
    }

    /// Whether queries from `peer` are refused whatever they ask: its
    /// address is in a blacklisted network. One atomic load while no
    /// network is blacklisted; else one lookup per prefix length listed.
    #[inline]
    pub fn is_blocked(&self, peer: Option<IpAddr>) -> bool {
        if !self.inner.blocking.load(Ordering::Acquire) {
            return false;
        }
        let Some(ip) = peer else { return false };
        let rules = self.inner.rules.pin();
        rules
            .get(&())
            .is_some_and(|r| r.blacklisted.lookup(ip).is_some())
    }

    /// Whether the asker at `peer` may see `service`: one lookup for the
    /// class, one load for its verdict (decided on the first question).
    pub fn may_see(&self, peer: Option<IpAddr>, service: &ServiceRef) -> bool {
        self.decide(peer, None, service).visible
    }

    /// Whether `peer` is one of `dns.trusted_recursors`.
    #[inline]
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        let trusted = &self.inner.trusted;
        !trusted.is_empty() && peer.is_some_and(|p| trusted.iter().any(|n| n.contains(p)))
    }

    /// Whether the asker of a query from `peer`, which carried `subnet`,
    /// may see `service`. From a trusted recursor the subnet stands for
    /// the asker: a whole address (/32, /128) as a source address would
    /// (an instance's identity, else a client network, else anonymous); a
    /// shorter subnet by the longest client network containing all of it,
    /// else anonymous. The scope is then the subnet's source prefix: the
    /// recursor may reuse the answer for that subnet only. From any other
    /// source the subnet is ignored (scope 0).
    pub fn decide(
        &self,
        peer: Option<IpAddr>,
        subnet: Option<ClientSubnet>,
        service: &ServiceRef,
    ) -> Decision {
        let open = Decision {
            visible: true,
            scope: 0,
        };
        if !self.is_on() {
            return open;
        }
        let rules = self.inner.rules.pin();
        let Some(rules) = rules.get(&()) else {
            return open;
        };
        let (asker, prefix, scope) = match subnet {
            // A source prefix of 0: the recursor asks in its own name.
            Some(s) if s.source_prefix > 0 && self.trusts(peer) => {
                let ip = crate::core::strategy::canonical(s.addr);
                let full = if s.addr.is_ipv4() { 32 } else { 128 };
                // An IPv4-mapped IPv6 subnet is an IPv4 one, 96 bits shorter.
                let prefix = match (s.addr.is_ipv4(), ip.is_ipv4()) {
                    (false, true) => s.source_prefix.saturating_sub(96),
                    _ => s.source_prefix,
                };
                let whole = s.source_prefix == full;
                (
                    Some(ip),
                    if whole { None } else { Some(prefix) },
                    s.source_prefix,
                )
            }
            _ => (peer.map(crate::core::strategy::canonical), None, 0),
        };
        let addresses = self.inner.addresses.pin();
        let class = match (asker, prefix) {
            // A whole address: an instance's, else by client network.
            (Some(ip), None) => match addresses.get(&ip) {
                Some(c) => c,
                None => rules.networks.lookup(ip).unwrap_or(&rules.anonymous),
            },
            // A subnet: a client network that holds all of it.
            (Some(ip), Some(prefix)) => rules
                .networks
                .lookup_subnet(ip, prefix)
                .unwrap_or(&rules.anonymous),
            (None, _) => &rules.anonymous,
        };
        let visible = Self::verdict(rules, class, service);
        Decision { visible, scope }
    }

    /// The TSIG key `name` (lowercase, no final dot), if there is one and
    /// its token has not expired.
    pub fn tsig_key(&self, name: &str) -> Option<Signer> {
        let key = self.inner.rules.pin().get(&())?.keys.get(name).cloned()?;
        let now_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(u64::MAX, |d| {
                    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
                })
        };
        match key.expires_at {
            Some(at) if now_ms() >= at => None,
            _ => Some(key),
        }
    }

    /// Whether a query signed with `key` may see `service`.
    pub fn signed_may_see(&self, key: &Signer, service: &ServiceRef) -> bool {
        if !self.is_on() {
            return true;
        }
        let rules = self.inner.rules.pin();
        match rules.get(&()) {
            Some(rules) => Self::verdict(rules, &key.class, service),
            None => true,
        }
    }

    /// The class's verdict for `service` under `rules`: one load when it
    /// was decided before under these rules.
    fn verdict(rules: &Rules, class: &Class, service: &ServiceRef) -> bool {
        if let Some(seen) = class.cached(rules.generation, service.id) {
            return seen;
        }
        let seen = rules.visibility.visible(&class.key, &service.name);
        class.remember(rules.generation, service.id, seen);
        seen
    }

    /// The HTTP discovery routes' intention check: the service whose
    /// intention towards `service` denies the caller, if one does. The
    /// caller's identity is `identity` (a token's service identity) when
    /// it has one, else that of the registered instances at `peer`;
    /// callers with neither are governed by read rules alone, which the
    /// route checks itself. Reads only the current rules, as the DNS
    /// path does, so a new intention holds from the next request on.
    pub fn intention_denies(
        &self,
        identity: Option<&ServiceName>,
        peer: Option<IpAddr>,
        service: &ServiceName,
    ) -> Option<ServiceName> {
        if !self.is_on() {
            return None;
        }
        let rules = self.inner.rules.pin();
        let rules = rules.get(&())?;
        let intentions = &rules.visibility.intentions;
        if let Some(s) = identity {
            return (!intentions.allows(s, service)).then(|| s.clone());
        }
        let ip = crate::core::strategy::canonical(peer?);
        let addresses = self.inner.addresses.pin();
        let ClassKey::Identity(sources) = &addresses.get(&ip)?.key else {
            return None;
        };
        sources
            .iter()
            .find(|s| !intentions.allows(s, service))
            .cloned()
    }

    /// Whether registered instances give the asker at `peer` a service
    /// identity, which [`Askers::intention_denies`] holds to the intentions.
    pub fn has_identity(&self, peer: IpAddr) -> bool {
        let ip = crate::core::strategy::canonical(peer);
        self.inner
            .addresses
            .pin()
            .get(&ip)
            .is_some_and(|c| matches!(c.key, ClassKey::Identity(_)))
    }

    /// The class of the asker at `peer` (for tests and the API).
    pub fn class_of(&self, peer: IpAddr) -> ClassKey {
        let ip = crate::core::strategy::canonical(peer);
        if let Some(c) = self.inner.addresses.pin().get(&ip) {
            return c.key.clone();
        }
        let rules = self.inner.rules.pin();
        match rules.get(&()) {
            Some(r) => r
                .networks
                .lookup(ip)
                .map_or(ClassKey::Anonymous, |c| c.key.clone()),
            None => ClassKey::Anonymous,
        }
    }

    /// Builds the rules again from the registry's objects (after a change
    /// of them, and once the store is restored). Every verdict computed
    /// before is stale from here on.
    pub fn refresh(&self) {
        let mut w = self.inner.write.lock().unwrap_or_else(|p| p.into_inner());
        w.intentions = self.inner.registry.intentions().len();
        self.rebuild(&mut w);
    }

    fn rebuild(&self, w: &mut WriteSide) {
        let reg = &self.inner.registry;
        let defaults = self.inner.defaults;
        let grants_of = |names: &[String]| Grants {
            policies: names.iter().filter_map(|p| reg.policy(p)).collect(),
            service: None,
        };
        let anonymous = reg.anonymous_token();
        let intentions = Intentions::over(
            Arc::new(LiveIntentions {
                registry: reg.clone(),
                count: w.intentions,
            }),
            defaults.intentions,
        );
        let clients = reg.dns_clients();
        let mut networks = Vec::new();
        let mut client_grants = HashMap::new();
        // A TSIG key's queries are asked as its token: the token's service
        // identity if it has one (intentions apply), else its policies,
        // kept under a name no client network can have (no ':').
        let mut keys = HashMap::new();
        for k in reg.tsig_keys() {
            let token = match k.token.as_str() {
                crate::core::acl::ANONYMOUS => Some(anonymous.clone()),
                accessor => reg.token(accessor),
            };
            // A key whose token was deleted signs for no one (BADKEY), as
            // one whose token expired does from its expiry on.
            let Some(token) = token else {
                continue;
            };
            let expires_at = token.expires_at;
            let key = match token.service.clone() {
                Some(service) => ClassKey::Identity(Box::new([service])),
                None => {
                    let name = format!("tsig-key:{}", k.name);
                    client_grants.insert(name.clone(), grants_of(&token.policies));
                    ClassKey::Client(name)
                }
            };
            let signer = hickory_proto::rr::Name::from_ascii(format!("{}.", k.name))
                .ok()
                .and_then(|name| {
                    let alg = hickory_proto::rr::rdata::tsig::TsigAlgorithm::from_name(
                        hickory_proto::rr::Name::from_ascii(&k.algorithm).ok()?,
                    );
                    hickory_proto::rr::TSigner::new(k.secret.clone(), alg, name, 300).ok()
                });
            if let Some(signer) = signer {
                let class = Class::new(key, self.next_id());
                keys.insert(
                    k.name.clone(),
                    Signer {
                        signer,
                        class,
                        expires_at,
                    },
                );
            }
        }
        for c in &clients {
            let class = Class::new(ClassKey::Client(c.name.clone()), self.next_id());
            for net in &c.cidrs {
                networks.push((*net, class.clone()));
            }
            client_grants.insert(c.name.clone(), grants_of(&c.policies));
        }
        let networks = CidrTable::new(networks);
        let blacklist = reg.blacklist();
        let blacklisted = crate::core::blacklist::cidr_table(blacklist.iter().map(|b| &**b));
        let blocking = !blacklisted.is_empty();
        let visibility = Visibility {
            defaults,
            intentions,
            client_grants,
            anonymous_grants: grants_of(&anonymous.policies),
        };
        let on = !visibility.is_open();
        w.generation += 1;
        let rules = Rules {
            generation: w.generation,
            visibility,
            networks,
            blacklisted,
            anonymous: Class::new(ClassKey::Anonymous, 0),
            keys,
        };
        self.inner.rules.pin().insert((), Arc::new(rules));
        self.inner.on.store(on, Ordering::Release);
        self.inner.blocking.store(blocking, Ordering::Release);
    }

    fn next_id(&self) -> u32 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// `key`'s addresses are now `now` (how many of its instances have
    /// each): what it gained and lost is re-tracked.
    fn track_all(&self, w: &mut WriteSide, key: &ServiceKey, now: BTreeMap<IpAddr, u32>) {
        let before = w.by_key.remove(key).unwrap_or_default();
        let lost: Vec<IpAddr> = before
            .keys()
            .filter(|ip| !now.contains_key(ip))
            .copied()
            .collect();
        let gained: Vec<IpAddr> = now
            .keys()
            .filter(|ip| !before.contains_key(ip))
            .copied()
            .collect();
        if !now.is_empty() {
            w.by_key.insert(key.clone(), now);
        }
        self.retrack(w, key, &lost, &gained);
    }

    /// `key` lost the instance values `diff.gone` and gained `diff.added`:
    /// its counts follow without a walk over the service, and only an
    /// address that stopped or started being one of its addresses is
    /// re-tracked (a re-registration at the same address is none).
    fn track_diff(&self, w: &mut WriteSide, key: &ServiceKey, diff: &InstanceDiff<'_>) {
        let addresses = |i: &Arc<crate::core::Instance>| {
            let all = i.address.addresses().iter().copied();
            all.map(crate::core::strategy::canonical)
                .collect::<Vec<_>>()
        };
        let (gone, added): (Vec<_>, Vec<_>) = (
            diff.gone.iter().flat_map(addresses).collect(),
            diff.added.iter().flat_map(addresses).collect(),
        );
        if gone.is_empty() && added.is_empty() {
            return;
        }
        let counts = w.by_key.entry(key.clone()).or_default();
        // Whether each address touched was the service's before (sorted
        // and deduplicated: a bulk apply can touch thousands at once).
        let mut touched: Vec<IpAddr> = gone.iter().chain(&added).copied().collect();
        touched.sort_unstable();
        touched.dedup();
        let was: Vec<(IpAddr, bool)> = touched
            .into_iter()
            .map(|ip| (ip, counts.contains_key(&ip)))
            .collect();
        for ip in added {
            *counts.entry(ip).or_insert(0) += 1;
        }
        for ip in gone {
            if let Some(n) = counts.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&ip);
                }
            }
        }
        let (mut lost, mut gained) = (Vec::new(), Vec::new());
        for (ip, before) in was {
            match (before, counts.contains_key(&ip)) {
                (true, false) => lost.push(ip),
                (false, true) => gained.push(ip),
                _ => {}
            }
        }
        if counts.is_empty() {
            w.by_key.remove(key);
        }
        self.retrack(w, key, &lost, &gained);
    }

    /// `key`'s service stopped having the addresses `lost` and started
    /// having `gained`: their identities (the services at each) follow.
    fn retrack(&self, w: &mut WriteSide, key: &ServiceKey, lost: &[IpAddr], gained: &[IpAddr]) {
        if lost.is_empty() && gained.is_empty() {
            return;
        }
        for ip in lost {
            if let Some(m) = w.by_addr.get_mut(ip) {
                if let Some(n) = m.get_mut(&key.service) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&key.service);
                    }
                }
                if m.is_empty() {
                    w.by_addr.remove(ip);
                }
            }
        }
        for ip in gained {
            *w.by_addr
                .entry(*ip)
                .or_default()
                .entry(key.service.clone())
                .or_insert(0) += 1;
        }
        let addresses = self.inner.addresses.pin();
        for ip in lost.iter().chain(gained) {
            match w.by_addr.get(ip) {
                None => {
                    addresses.remove(ip);
                }
                Some(m) => {
                    let ids: Box<[ServiceName]> = m.keys().cloned().collect();
                    let next = &self.inner.next_id;
                    let class = w
                        .identities
                        .entry(ids.clone())
                        .or_insert_with(|| {
                            Class::new(
                                ClassKey::Identity(ids),
                                next.fetch_add(1, Ordering::Relaxed),
                            )
                        })
                        .clone();
                    addresses.insert(*ip, class);
                }
            }
        }
    }
}

impl Observer for Askers {
    fn acl_restored(&self) {
        self.refresh();
    }

    fn applied(&self, batch: &Batch<'_>) {
        let mut w = self.inner.write.lock().unwrap_or_else(|p| p.into_inner());
        for (key, snap) in batch.services {
            if let Some(diff) = &batch.instances {
                self.track_diff(&mut w, key, diff);
                continue;
            }
            let mut now: BTreeMap<IpAddr, u32> = BTreeMap::new();
            let all = snap.iter().flat_map(|s| s.instances.values());
            for ip in all.flat_map(|i| i.address.addresses().iter().copied()) {
                *now.entry(crate::core::strategy::canonical(ip)).or_insert(0) += 1;
            }
            self.track_all(&mut w, key, now);
        }
        for e in batch.acl {
            if let AclKey::Intention(..) = e.key {
                match (&e.previous, &e.value) {
                    (None, Some(_)) => w.intentions += 1,
                    (Some(_), None) => w.intentions = w.intentions.saturating_sub(1),
                    _ => {}
                }
            }
        }
        if batch
            .acl
            .iter()
            .any(|e| crate::core::AclObject::is_visibility(&e.key))
        {
            self.rebuild(&mut w);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::core::{
        AclChange, AclKey, AclObject, Address, Change, Context, Datacenter, DnsClient, InstanceId,
        InstanceSpec, Intention, IntentionAction, Side,
    };
    use crate::policy::DefaultPolicy;

    fn key(s: &str) -> ServiceKey {
        ServiceKey::new(
            Datacenter::new("dc1").unwrap(),
            ServiceName::new(s).unwrap(),
        )
    }

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    /// The service as the answers would name it, with a fixed id.
    fn svc(s: &str) -> ServiceRef {
        let ids = ["web", "db", "api", "cache"];
        let id = ids
            .iter()
            .position(|x| *x == s)
            .map_or(ServiceRef::UNCACHED, |i| i as u32);
        ServiceRef { name: name(s), id }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn setup(defaults: Defaults) -> (Registry, Askers, Instant) {
        let now = Instant::now();
        let reg = crate::core::registry::test_registry(now);
        let askers = Askers::new(&reg, defaults);
        reg.subscribe(Arc::new(askers.clone()));
        (reg, askers, now)
    }

    fn register(reg: &Registry, svc: &str, id: &str, addr: &str, now: Instant) {
        let mut spec = InstanceSpec::new(Address::parse(addr).unwrap(), 80);
        spec.ttl = Duration::from_secs(3600);
        reg.register(key(svc), InstanceId::new(id).unwrap(), spec, now)
            .unwrap();
    }

    fn acl(reg: &Registry, change: AclChange, now: Instant) {
        let applied = reg
            .apply_next(vec![Change::Acl(change)], &Context::system(), now)
            .unwrap();
        assert!(applied.refusal().is_none(), "{:?}", applied.refusal());
    }

    fn intention(reg: &Registry, s: &str, d: &str, action: IntentionAction, now: Instant) {
        let i = Intention {
            source: Side::parse(s).unwrap(),
            destination: Side::parse(d).unwrap(),
            action,
            description: String::new(),
            index: 0,
        };
        acl(reg, AclChange::Put(AclObject::Intention(Arc::new(i))), now);
    }

    const OPEN: Defaults = Defaults {
        acl: DefaultPolicy::Allow,
        intentions: DefaultPolicy::Allow,
    };

    /// An address, its class, and how many instances of each service key
    /// have it.
    type AddressState = (IpAddr, ClassKey, Vec<(ServiceKey, u32)>);

    /// What the askers know of addresses, comparable between two of them.
    fn address_state(a: &Askers) -> Vec<AddressState> {
        let w = a.inner.write.lock().unwrap();
        let mut out: Vec<_> = a
            .inner
            .addresses
            .pin()
            .iter()
            .map(|(ip, class)| {
                let keys = w
                    .by_key
                    .iter()
                    .filter_map(|(k, counts)| counts.get(ip).map(|n| (k.clone(), *n)))
                    .collect::<BTreeMap<_, _>>();
                (*ip, class.key.clone(), keys.into_iter().collect())
            })
            .collect();
        out.sort_by_key(|(ip, ..)| *ip);
        out
    }

    #[test]
    fn identities_followed_change_by_change_match_ones_counted_afresh() {
        let (reg, askers, now) = setup(OPEN);
        let step = |reg: &Registry| {
            let fresh = Askers::new(reg, OPEN);
            reg.subscribe(Arc::new(fresh.clone()));
            assert_eq!(address_state(&askers), address_state(&fresh));
        };
        // Two instances of one service and one of another on one host.
        register(&reg, "web", "a", "10.0.0.1", now);
        register(&reg, "web", "b", "10.0.0.1", now);
        register(&reg, "db", "c", "10.0.0.1", now);
        step(&reg);
        let at = |s: &str| {
            askers
                .inner
                .addresses
                .pin()
                .get(&ip(s))
                .map(|c| c.key.clone())
        };
        let both: Box<[ServiceName]> = Box::new([name("db"), name("web")]);
        assert_eq!(at("10.0.0.1"), Some(ClassKey::Identity(both)));
        // Moving one of web's two instances keeps web at the address.
        register(&reg, "web", "a", "10.0.0.2", now);
        step(&reg);
        register(&reg, "web", "a", "10.0.0.2", now);
        step(&reg);
        // Its last instance there leaving takes web off it.
        reg.deregister(&key("web"), &InstanceId::new("b").unwrap())
            .unwrap();
        step(&reg);
        let db: Box<[ServiceName]> = Box::new([name("db")]);
        assert_eq!(at("10.0.0.1"), Some(ClassKey::Identity(db)));
        // A v4-mapped address is the same asker as the IPv4 one.
        register(&reg, "api", "d", "::ffff:10.0.0.2", now);
        step(&reg);
        let two: Box<[ServiceName]> = Box::new([name("api"), name("web")]);
        assert_eq!(at("10.0.0.2"), Some(ClassKey::Identity(two)));
        reg.deregister(&key("db"), &InstanceId::new("c").unwrap())
            .unwrap();
        step(&reg);
        assert_eq!(at("10.0.0.1"), None);
    }

    #[test]
    fn a_blacklisted_network_blocks_its_askers_and_its_registrations() {
        use crate::core::{BlacklistEntry, BlacklistTarget, Cidr};
        let (reg, askers, now) = setup(OPEN);
        assert!(!askers.is_blocked(Some(ip("10.9.1.1"))));
        let target = BlacklistTarget::Cidr(Cidr::parse("10.9.0.0/16").unwrap());
        let entry = BlacklistEntry {
            target: target.clone(),
            reason: "scanning".into(),
            created_at: 0,
            expires_at: None,
            index: 0,
        };
        acl(
            &reg,
            AclChange::Put(AclObject::Blacklist(Arc::new(entry))),
            now,
        );
        assert!(askers.is_blocked(Some(ip("10.9.1.1"))));
        assert!(askers.is_blocked(Some(ip("::ffff:10.9.1.1"))));
        assert!(!askers.is_blocked(Some(ip("10.8.1.1"))));
        assert!(!askers.is_blocked(None));
        assert!(!askers.is_on(), "a blacklist is no read rule");
        // The registry refuses an instance at an address in the network.
        let mut spec = InstanceSpec::new(Address::parse("10.9.3.3").unwrap(), 80);
        spec.ttl = Duration::from_secs(60);
        let err = reg
            .register(key("web"), InstanceId::new("w").unwrap(), spec, now)
            .unwrap_err();
        assert!(err.to_string().contains("scanning"), "{err}");
        register(&reg, "web", "w", "10.8.3.3", now);
        acl(&reg, AclChange::Delete(AclKey::Blacklist(target)), now);
        assert!(!askers.is_blocked(Some(ip("10.9.1.1"))));
        register(&reg, "web", "w2", "10.9.3.3", now);
    }

    #[test]
    fn policy_is_off_until_something_restricts_someone() {
        let (reg, askers, now) = setup(OPEN);
        assert!(!askers.is_on());
        intention(&reg, "web", "db", IntentionAction::Deny, now);
        assert!(askers.is_on());
        acl(
            &reg,
            AclChange::Delete(AclKey::Intention(
                Side::parse("web").unwrap(),
                Side::parse("db").unwrap(),
            )),
            now,
        );
        assert!(!askers.is_on());
        let (_, closed, _) = setup(Defaults {
            acl: DefaultPolicy::Deny,
            intentions: DefaultPolicy::Deny,
        });
        assert!(closed.is_on());
    }

    #[test]
    fn addresses_take_their_instances_identity_and_lose_it_with_them() {
        let (reg, askers, now) = setup(OPEN);
        register(&reg, "web", "w1", "10.0.0.1", now);
        register(&reg, "web", "w2", "10.0.0.1", now);
        register(&reg, "api", "a1", "10.0.0.2", now);
        register(&reg, "cache", "c1", "10.0.0.2", now);
        let ids = |names: &[&str]| ClassKey::Identity(names.iter().map(|n| name(n)).collect());
        assert_eq!(askers.class_of(ip("10.0.0.1")), ids(&["web"]));
        assert_eq!(askers.class_of(ip("::ffff:10.0.0.1")), ids(&["web"]));
        assert_eq!(askers.class_of(ip("10.0.0.2")), ids(&["api", "cache"]));
        assert_eq!(askers.class_of(ip("10.0.0.3")), ClassKey::Anonymous);
        reg.deregister(&key("web"), &InstanceId::new("w1").unwrap())
            .unwrap();
        assert_eq!(
            askers.class_of(ip("10.0.0.1")),
            ids(&["web"]),
            "w2 is still there"
        );
        reg.deregister(&key("web"), &InstanceId::new("w2").unwrap())
            .unwrap();
        assert_eq!(askers.class_of(ip("10.0.0.1")), ClassKey::Anonymous);
        // Two services at one address see what both may see.
        intention(&reg, "cache", "db", IntentionAction::Deny, now);
        assert!(!askers.may_see(Some(ip("10.0.0.2")), &svc("db")));
        assert!(askers.may_see(Some(ip("10.0.0.2")), &svc("web")));
    }

    #[test]
    fn a_cached_verdict_never_outlives_the_rules_it_came_from() {
        let (reg, askers, now) = setup(OPEN);
        register(&reg, "web", "w1", "10.0.0.1", now);
        intention(&reg, "web", "db", IntentionAction::Deny, now);
        let web = Some(ip("10.0.0.1"));
        for _ in 0..3 {
            assert!(!askers.may_see(web, &svc("db")));
        }
        intention(&reg, "web", "db", IntentionAction::Allow, now);
        assert!(askers.may_see(web, &svc("db")));
        // Another object's change (a wildcard) is a new generation too.
        intention(&reg, "web", "*", IntentionAction::Deny, now);
        assert!(askers.may_see(web, &svc("db")), "web/db still beats web/*");
        assert!(!askers.may_see(web, &svc("cache")));
    }

    #[test]
    fn services_sharing_a_verdict_slot_each_get_their_own_verdict() {
        let (reg, askers, now) = setup(OPEN);
        register(&reg, "web", "w1", "10.0.0.1", now);
        intention(&reg, "web", "db", IntentionAction::Deny, now);
        let web = Some(ip("10.0.0.1"));
        // db and api in one slot; then ids the cache cannot hold.
        let db = ServiceRef {
            name: name("db"),
            id: 7,
        };
        let api = ServiceRef {
            name: name("api"),
            id: 7 + VERDICT_SLOTS as u32,
        };
        for _ in 0..3 {
            assert!(!askers.may_see(web, &db));
            assert!(askers.may_see(web, &api));
        }
        for id in [1 << ID_BITS, ServiceRef::UNCACHED] {
            let db = ServiceRef {
                name: name("db"),
                id,
            };
            assert!(!askers.may_see(web, &db));
            assert!(!askers.may_see(web, &db));
        }
    }

    #[test]
    fn http_callers_are_held_to_the_intentions_of_their_token_or_address() {
        let (reg, askers, now) = setup(OPEN);
        register(&reg, "web", "w1", "10.0.0.1", now);
        let (web, db, api) = (name("web"), name("db"), name("api"));
        assert_eq!(
            askers.intention_denies(None, Some(ip("10.0.0.1")), &db),
            None
        );
        intention(&reg, "web", "db", IntentionAction::Deny, now);
        // By address: the instance's identity.
        assert_eq!(
            askers.intention_denies(None, Some(ip("10.0.0.1")), &db),
            Some(web.clone())
        );
        assert_eq!(
            askers.intention_denies(None, Some(ip("10.0.0.1")), &api),
            None
        );
        // No identity at all: intentions do not apply.
        assert_eq!(
            askers.intention_denies(None, Some(ip("10.0.0.9")), &db),
            None
        );
        assert_eq!(askers.intention_denies(None, None, &db), None);
        // A token's identity comes before the address.
        assert_eq!(
            askers.intention_denies(Some(&api), Some(ip("10.0.0.1")), &db),
            None
        );
        assert_eq!(
            askers.intention_denies(Some(&web), Some(ip("10.0.0.9")), &db),
            Some(web.clone())
        );
        assert_eq!(
            askers.intention_denies(Some(&db), None, &db),
            None,
            "itself"
        );
    }

    #[test]
    fn client_networks_match_by_longest_prefix_after_instances() {
        let (reg, askers, now) = setup(Defaults {
            acl: DefaultPolicy::Deny,
            intentions: DefaultPolicy::Deny,
        });
        let client = |n: &str, cidr: &str, policies: &[&str]| DnsClient {
            name: n.into(),
            cidrs: vec![crate::core::Cidr::parse(cidr).unwrap()],
            policies: policies.iter().map(|p| p.to_string()).collect(),
            index: 0,
        };
        for c in [
            client("wide", "10.0.0.0/8", &["viewer"]),
            client("narrow", "10.1.0.0/16", &[]),
        ] {
            acl(&reg, AclChange::Put(AclObject::DnsClient(Arc::new(c))), now);
        }
        register(&reg, "web", "w1", "10.1.0.5", now);
        assert_eq!(
            askers.class_of(ip("10.2.0.1")),
            ClassKey::Client("wide".into())
        );
        assert_eq!(
            askers.class_of(ip("10.1.0.1")),
            ClassKey::Client("narrow".into())
        );
        assert!(
            askers.may_see(Some(ip("10.2.0.1")), &svc("db")),
            "viewer reads"
        );
        assert!(
            !askers.may_see(Some(ip("10.1.0.1")), &svc("db")),
            "no policies, deny"
        );
        assert!(
            !askers.may_see(Some(ip("192.0.2.1")), &svc("db")),
            "anonymous, deny"
        );
        assert!(!askers.may_see(None, &svc("db")));
        // The instance's identity comes first; intentions default to deny.
        assert!(!askers.may_see(Some(ip("10.1.0.5")), &svc("db")));
        assert!(askers.may_see(Some(ip("10.1.0.5")), &svc("web")), "itself");
    }

    #[test]
    fn a_trusted_recursors_client_subnet_stands_for_the_asker() {
        let now = Instant::now();
        let reg = crate::core::registry::test_registry(now);
        let trusted = vec![crate::core::Cidr::parse("192.0.2.53/32").unwrap()];
        let deny = Defaults {
            acl: DefaultPolicy::Deny,
            intentions: DefaultPolicy::Deny,
        };
        let askers = Askers::with_trusted_recursors(&reg, deny, trusted);
        reg.subscribe(Arc::new(askers.clone()));
        let viewers = DnsClient {
            name: "ops".into(),
            cidrs: vec![crate::core::Cidr::parse("10.0.0.0/16").unwrap()],
            policies: vec!["viewer".into()],
            index: 0,
        };
        acl(
            &reg,
            AclChange::Put(AclObject::DnsClient(Arc::new(viewers))),
            now,
        );
        register(&reg, "web", "w1", "10.0.0.7", now);
        register(&reg, "db", "d1", "10.9.0.1", now);
        let subnet = |a: &str, p: u8| {
            Some(ClientSubnet {
                addr: ip(a),
                source_prefix: p,
            })
        };
        let recursor = Some(ip("192.0.2.53"));
        let db = svc("db");
        let d = |peer, s| askers.decide(peer, s, &db);
        // The recursor itself is anonymous: deny.
        assert_eq!(
            (d(recursor, None).visible, d(recursor, None).scope),
            (false, 0)
        );
        // A subnet inside the client network: its policies, scope /24.
        let inside = d(recursor, subnet("10.0.1.0", 24));
        assert_eq!((inside.visible, inside.scope), (true, 24));
        // A subnet wider than the network is not all of it: anonymous.
        let wide = d(recursor, subnet("10.0.0.0", 8));
        assert_eq!((wide.visible, wide.scope), (false, 8));
        // A whole address: the instance's identity (web -> db denied by
        // the intention default), scope /32.
        let web = d(recursor, subnet("10.0.0.7", 32));
        assert_eq!((web.visible, web.scope), (false, 32));
        let host = d(recursor, subnet("10.0.0.8", 32));
        assert_eq!((host.visible, host.scope), (true, 32));
        // From an untrusted source the subnet is ignored.
        let other = d(Some(ip("192.0.2.54")), subnet("10.0.1.0", 24));
        assert_eq!((other.visible, other.scope), (false, 0));
        assert!(askers.trusts(recursor) && !askers.trusts(None));
    }
}
