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
//! Must not import: http, dns, store, config.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::core::{Access, Batch, Cidr, FastHash, Observer, Registry, ServiceKey, ServiceName};

use super::intentions::Intentions;
use super::{Decision, DefaultPolicy, Grants, Resource, decide};

/// What decides an asker's view: the configuration's defaults.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    /// The ACL default policy (read rules).
    pub acl: DefaultPolicy,
    /// `intentions.default`.
    pub intentions: DefaultPolicy,
}

/// Who an asker is, as far as visibility goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClassKey {
    /// The services of the registered instances at the asker's address
    /// (usually one; several services on one host share an address).
    Identity(Box<[ServiceName]>),
    /// An operator-declared DNS client network, by name.
    Client(String),
    Anonymous,
}

/// A set of askers that see the same services.
pub struct Class {
    pub key: ClassKey,
    /// Small number, for logs and metrics.
    pub id: u32,
    /// Service -> (generation of the rules, visible?).
    verdicts: papaya::HashMap<ServiceName, (u64, bool), FastHash>,
}

impl Class {
    fn new(key: ClassKey, id: u32) -> Arc<Self> {
        Arc::new(Self {
            key,
            id,
            verdicts: papaya::HashMap::with_hasher(FastHash::default()),
        })
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
    defaults: Defaults,
    intentions: Intentions,
    /// Client networks, longest prefix first, with their classes.
    networks: Vec<(Cidr, Arc<Class>)>,
    /// Grants by client network name.
    client_grants: HashMap<String, Grants>,
    anonymous: Arc<Class>,
    anonymous_grants: Grants,
}

impl Rules {
    /// Whether askers of `key` may see `service`.
    fn visible(&self, key: &ClassKey, service: &ServiceName) -> bool {
        let read = |g: &Grants| {
            decide(
                g,
                self.defaults.acl,
                Resource::Service(service.as_str()),
                Access::Read,
            ) == Decision::Allow
        };
        match key {
            ClassKey::Identity(sources) => sources.iter().all(|s| {
                // A service identity reads every service; the intention
                // between the two decides.
                let g = Grants {
                    policies: Vec::new(),
                    service: Some(s.clone()),
                };
                read(&g) && self.intentions.allows(s, service)
            }),
            ClassKey::Client(name) => self.client_grants.get(name).is_some_and(read),
            ClassKey::Anonymous => read(&self.anonymous_grants),
        }
    }
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
    /// The current rules, under the one key `()`: a lock-free cell.
    rules: papaya::HashMap<(), Arc<Rules>, FastHash>,
    /// Address of a registered instance -> its identity's class.
    addresses: papaya::HashMap<IpAddr, Arc<Class>, FastHash>,
    next_id: AtomicU32,
    write: Mutex<WriteSide>,
}

#[derive(Default)]
struct WriteSide {
    generation: u64,
    /// The addresses each service (of each datacenter) has.
    by_key: HashMap<ServiceKey, BTreeSet<IpAddr>>,
    /// Per address, how many service keys of each service have it.
    by_addr: HashMap<IpAddr, BTreeMap<ServiceName, u32>>,
    identities: HashMap<Box<[ServiceName]>, Arc<Class>>,
}

impl Askers {
    /// The classes of `registry`'s askers; subscribe the result to the
    /// registry (it learns instance addresses from its changes).
    pub fn new(registry: &Registry, defaults: Defaults) -> Self {
        let a = Self {
            inner: Arc::new(Inner {
                registry: registry.clone(),
                defaults,
                on: AtomicBool::new(false),
                rules: papaya::HashMap::with_hasher(FastHash::default()),
                addresses: papaya::HashMap::with_hasher(FastHash::default()),
                next_id: AtomicU32::new(1),
                write: Mutex::default(),
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

    /// Whether the asker at `peer` may see `service`: one lookup for the
    /// class, one for its verdict (computed on the first question).
    pub fn may_see(&self, peer: Option<IpAddr>, service: &ServiceName) -> bool {
        if !self.is_on() {
            return true;
        }
        let rules = self.inner.rules.pin();
        let Some(rules) = rules.get(&()) else {
            return true;
        };
        let addresses = self.inner.addresses.pin();
        let class = match peer.map(crate::core::strategy::canonical) {
            Some(ip) => match addresses.get(&ip) {
                Some(c) => c,
                None => rules
                    .networks
                    .iter()
                    .find(|(net, _)| net.contains(ip))
                    .map_or(&rules.anonymous, |(_, c)| c),
            },
            None => &rules.anonymous,
        };
        let verdicts = class.verdicts.pin();
        if let Some((generation, seen)) = verdicts.get(service)
            && *generation == rules.generation
        {
            return *seen;
        }
        let seen = rules.visible(&class.key, service);
        verdicts.insert(service.clone(), (rules.generation, seen));
        seen
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
                .iter()
                .find(|(net, _)| net.contains(ip))
                .map_or(ClassKey::Anonymous, |(_, c)| c.key.clone()),
            None => ClassKey::Anonymous,
        }
    }

    /// Builds the rules again from the registry's objects (after a change
    /// of them, and once the store is restored). Every verdict computed
    /// before is stale from here on.
    pub fn refresh(&self) {
        let mut w = self.inner.write.lock().unwrap_or_else(|p| p.into_inner());
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
        let intentions =
            Intentions::new(reg.intentions().iter().map(|i| &**i), defaults.intentions);
        let clients = reg.dns_clients();
        let mut networks = Vec::new();
        let mut client_grants = HashMap::new();
        for c in &clients {
            let class = Class::new(ClassKey::Client(c.name.clone()), self.next_id());
            for net in &c.cidrs {
                networks.push((*net, class.clone()));
            }
            client_grants.insert(c.name.clone(), grants_of(&c.policies));
        }
        networks.sort_by_key(|n| std::cmp::Reverse(n.0.prefix()));
        let on = !intentions.is_empty()
            || !clients.is_empty()
            || defaults.acl == DefaultPolicy::Deny
            || defaults.intentions == DefaultPolicy::Deny
            || !anonymous.policies.is_empty();
        w.generation += 1;
        let rules = Rules {
            generation: w.generation,
            defaults,
            intentions,
            networks,
            client_grants,
            anonymous: Class::new(ClassKey::Anonymous, 0),
            anonymous_grants: grants_of(&anonymous.policies),
        };
        self.inner.rules.pin().insert((), Arc::new(rules));
        self.inner.on.store(on, Ordering::Release);
    }

    fn next_id(&self) -> u32 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Follows the addresses of one service (of one datacenter).
    fn track(&self, w: &mut WriteSide, key: &ServiceKey, now: BTreeSet<IpAddr>) {
        let before = w.by_key.remove(key).unwrap_or_default();
        if before == now {
            if !now.is_empty() {
                w.by_key.insert(key.clone(), now);
            }
            return;
        }
        let mut touched = Vec::new();
        for ip in before.difference(&now) {
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
            touched.push(*ip);
        }
        for ip in now.difference(&before) {
            *w.by_addr
                .entry(*ip)
                .or_default()
                .entry(key.service.clone())
                .or_insert(0) += 1;
            touched.push(*ip);
        }
        let addresses = self.inner.addresses.pin();
        for ip in touched {
            match w.by_addr.get(&ip) {
                None => {
                    addresses.remove(&ip);
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
                    addresses.insert(ip, class);
                }
            }
        }
        if !now.is_empty() {
            w.by_key.insert(key.clone(), now);
        }
    }
}

impl Observer for Askers {
    fn applied(&self, batch: &Batch<'_>) {
        let mut w = self.inner.write.lock().unwrap_or_else(|p| p.into_inner());
        for (key, snap) in batch.services {
            let now: BTreeSet<IpAddr> = snap
                .iter()
                .flat_map(|s| s.instances.values())
                .flat_map(|i| i.address.addresses().iter().copied())
                .map(crate::core::strategy::canonical)
                .collect();
            self.track(&mut w, key, now);
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
