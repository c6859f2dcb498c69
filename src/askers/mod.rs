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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::core::{Batch, CidrTable, FastHash, Observer, Registry, ServiceKey, ServiceName};
use crate::policy::visibility::{ClassKey, Defaults, Visibility};
use crate::policy::{Grants, Intentions};

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
    visibility: Visibility,
    /// Client networks with their classes, by longest prefix.
    networks: CidrTable<Arc<Class>>,
    /// Blacklisted networks: every query from them is refused.
    blacklisted: CidrTable<()>,
    anonymous: Arc<Class>,
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
                blocking: AtomicBool::new(false),
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
                None => rules.networks.lookup(ip).unwrap_or(&rules.anonymous),
            },
            None => &rules.anonymous,
        };
        let verdicts = class.verdicts.pin();
        if let Some((generation, seen)) = verdicts.get(service)
            && *generation == rules.generation
        {
            return *seen;
        }
        let seen = rules.visibility.visible(&class.key, service);
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
        };
        self.inner.rules.pin().insert((), Arc::new(rules));
        self.inner.on.store(on, Ordering::Release);
        self.inner.blocking.store(blocking, Ordering::Release);
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
    fn acl_restored(&self) {
        self.refresh();
    }

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
        assert!(!askers.may_see(Some(ip("10.0.0.2")), &name("db")));
        assert!(askers.may_see(Some(ip("10.0.0.2")), &name("web")));
    }

    #[test]
    fn a_cached_verdict_never_outlives_the_rules_it_came_from() {
        let (reg, askers, now) = setup(OPEN);
        register(&reg, "web", "w1", "10.0.0.1", now);
        intention(&reg, "web", "db", IntentionAction::Deny, now);
        let web = Some(ip("10.0.0.1"));
        for _ in 0..3 {
            assert!(!askers.may_see(web, &name("db")));
        }
        intention(&reg, "web", "db", IntentionAction::Allow, now);
        assert!(askers.may_see(web, &name("db")));
        // Another object's change (a wildcard) is a new generation too.
        intention(&reg, "web", "*", IntentionAction::Deny, now);
        assert!(askers.may_see(web, &name("db")), "web/db still beats web/*");
        assert!(!askers.may_see(web, &name("cache")));
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
            askers.may_see(Some(ip("10.2.0.1")), &name("db")),
            "viewer reads"
        );
        assert!(
            !askers.may_see(Some(ip("10.1.0.1")), &name("db")),
            "no policies, deny"
        );
        assert!(
            !askers.may_see(Some(ip("192.0.2.1")), &name("db")),
            "anonymous, deny"
        );
        assert!(!askers.may_see(None, &name("db")));
        // The instance's identity comes first; intentions default to deny.
        assert!(!askers.may_see(Some(ip("10.1.0.5")), &name("db")));
        assert!(askers.may_see(Some(ip("10.1.0.5")), &name("web")), "itself");
    }
}
