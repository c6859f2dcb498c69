//! Questions and answer plans: what any front end (DNS, HTTP, the gateway)
//! asks the registry, who is asking, and what the answer should contain.
//!
//! The core decides; front ends only encode. A [`Plan`] names the instances
//! of an answer as positions in the service's snapshot, in tiers with their
//! SRV priorities, and the rule that balances load within a tier. The DNS
//! answer cache encodes each plan when the registry changes and keeps it
//! ready; the HTTP discovery routes read the same plans. ReadyAnswers that depend
//! on who asks are chosen by the asker's [`AskerClass`], after the lookup:
//! askers fall into a few classes, and each class has its ready answer.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::labels::{Datacenter, ServiceName, VersionSelector};
use super::model::{Health, Instance};
use super::registry::{Registry, ServiceKey, ServiceSnapshot};
use super::strategy::{self, ClientZones, Strategy};

/// The metadata key that names an instance's zone (`nearest`).
pub const ZONE_KEY: &str = "zone";

/// The number of an instance's zone among the client zones, if it has one
/// that a client network has.
pub fn zone_of(i: &Instance, zones: &ClientZones) -> Option<u16> {
    zones.zone_id(i.metadata.get(ZONE_KEY)?.as_str())
}

/// How a question arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Http,
}

/// An EDNS Client Subnet option (RFC 7871) as a query carried it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSubnet {
    pub addr: IpAddr,
    pub source_prefix: u8,
}

/// Who is asking, as the front end saw it: what hickory hands its zone
/// handlers as `RequestInfo`. Built once per query; costs no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryContext {
    /// The address the question came from (`None` when unknown, e.g. in a
    /// benchmark without sockets).
    pub peer: Option<IpAddr>,
    pub transport: Transport,
    /// The client subnet a recursor forwarded, when the query had one.
    pub client_subnet: Option<ClientSubnet>,
}

impl QueryContext {
    pub fn new(peer: Option<IpAddr>, transport: Transport) -> Self {
        Self {
            peer,
            transport,
            client_subnet: None,
        }
    }
}

/// A set of askers that get the same answers from a plan. Plans are the
/// same for every asker that may see a service: whether it may is decided
/// per (asker class, service) by `crate::askers`
/// (docs/adr/0011-asker-classes.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AskerClass(pub u32);

impl AskerClass {
    /// Everyone: the class of every asker until policies exist.
    pub const ANYONE: AskerClass = AskerClass(0);

    /// The class of the asker of `ctx`: one lookup, never a rule evaluation.
    pub fn of(_ctx: &QueryContext) -> AskerClass {
        AskerClass::ANYONE
    }
}

/// How load is spread over a tier's members: the service's strategy
/// (`round_robin`: DNS rotates a window of the ready set, discovery takes
/// the next member; the others: see [`Strategy`]).
pub type Balance = Strategy;

/// Whether an instance counts towards its service's panic threshold: it
/// is registered and alive by its TTL. An instance whose heartbeats stopped
/// is gone, not sick (mass expiry is what self-preservation is for), so it
/// leaves answers whatever the threshold.
#[inline]
pub fn counted(i: &Instance) -> bool {
    i.health == Health::Passing
}

/// Whether an instance of `snap` may be in answers on its own merits:
/// counted, and neither ejected by outlier detection nor (with active
/// checks) failing one. With [`counted`], the one place that says what
/// "healthy" means for answers and for the panic threshold.
#[inline]
pub fn healthy(snap: &ServiceSnapshot, i: &Instance) -> bool {
    counted(i) && i.serves(snap.only_passing) && !snap.is_ejected(i)
}

/// Members that are equally preferred: SRV records of one priority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    /// The SRV priority of this tier's records (RFC 2782: lower first).
    pub priority: u16,
    /// Positions in the snapshot's instances (id order).
    pub members: Vec<u32>,
}

/// What an answer contains, decided by the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Most preferred first. Empty when nothing matches.
    pub tiers: Vec<Tier>,
    pub balance: Balance,
    /// Fewer healthy instances than the service's panic threshold: the
    /// plan holds all of them, healthy or not, rather than overload the few.
    pub panic: bool,
}

/// The SRV priority of local instances; failover tiers follow at 2, 3, ...
pub const LOCAL_PRIORITY: u16 = 1;

/// A tier of another datacenter's instances for a local name: what answers
/// `payments.<zone>` when failing over (the tier's positions are in
/// `snapshot`, that datacenter's service).
#[derive(Clone, Debug)]
pub struct RemoteTier {
    pub snapshot: Arc<ServiceSnapshot>,
    pub tier: Tier,
}

impl Plan {
    /// Every member, most preferred tier first.
    pub fn members(&self) -> impl Iterator<Item = u32> + '_ {
        self.tiers.iter().flat_map(|t| t.members.iter().copied())
    }

    pub fn is_empty(&self) -> bool {
        self.tiers.iter().all(|t| t.members.is_empty())
    }
}

impl ServiceSnapshot {
    /// The plan for the instances matching `version` (all when `None`),
    /// healthy ones only when `healthy_only` (all of them in a panic), as
    /// `class` may see them.
    pub fn plan(
        &self,
        version: Option<&VersionSelector>,
        healthy_only: bool,
        _class: AskerClass,
    ) -> Plan {
        if !healthy_only {
            return self.one_tier(self.select_positions(version, false), false);
        }
        self.with_panic(version, |_| true)
    }

    /// The plan of DNS answers for the instances matching `version`: the
    /// healthy ones that have an address to answer with (all with an
    /// address, in a panic). An instance registered by a host name that
    /// has not resolved (yet, or any more) is left out: an SRV record whose
    /// target has no address would send clients to a name that answers
    /// nothing.
    pub fn address_plan(&self, version: Option<&VersionSelector>, _class: AskerClass) -> Plan {
        self.with_panic(version, |i| i.has_addresses())
    }

    /// The healthy instances among those `eligible` accepts, or all of
    /// them when fewer than the panic threshold are healthy (Envoy's panic
    /// routing: spread over everyone rather than overload the few).
    fn with_panic(
        &self,
        version: Option<&VersionSelector>,
        eligible: impl Fn(&Instance) -> bool,
    ) -> Plan {
        let all = self.select_positions_by(version, |i| counted(i) && eligible(i));
        let healthy: Vec<u32> = all
            .iter()
            .copied()
            .filter(|p| healthy(self, self.instances.at(*p)))
            .collect();
        if in_panic(healthy.len(), all.len(), self.settings.panic_threshold) {
            self.one_tier(all, true)
        } else {
            self.one_tier(healthy, false)
        }
    }

    /// Whether the service as a whole is in a panic: fewer of its instances
    /// healthy than its panic threshold.
    pub fn in_panic(&self) -> bool {
        let all = self.instances.values().filter(|i| counted(i)).count();
        let healthy = self.instances.values().filter(|i| healthy(self, i)).count();
        in_panic(healthy, all, self.settings.panic_threshold)
    }

    /// `members` as the one local tier (no tier when empty).
    fn one_tier(&self, members: Vec<u32>, panic: bool) -> Plan {
        Plan {
            tiers: if members.is_empty() {
                Vec::new()
            } else {
                vec![Tier {
                    priority: LOCAL_PRIORITY,
                    members,
                }]
            },
            balance: self.settings.strategy,
            panic,
        }
    }
}

/// `healthy` of `all` is below `threshold` percent (0: never a panic; a
/// service with no instances is not in one).
pub fn in_panic(healthy: usize, all: usize, threshold: u8) -> bool {
    all > 0 && healthy * 100 < all * usize::from(threshold)
}

/// A question any front end asks the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// `None` means the local datacenter.
    pub dc: Option<Datacenter>,
    pub service: ServiceName,
    pub version: Option<VersionSelector>,
    pub healthy_only: bool,
}

/// The instances a [`Query`] selects, in plan order.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// The service is registered (with any health) in that datacenter, and
    /// some instance matches the version, if one was asked for.
    pub exists: bool,
    pub instances: Vec<Arc<Instance>>,
    /// The index of the service's latest change.
    pub index: u64,
}

impl Registry {
    fn snapshot_for(&self, q: &Query) -> Option<Arc<ServiceSnapshot>> {
        let key = ServiceKey::new(
            q.dc.clone().unwrap_or_else(|| self.local_dc().clone()),
            q.service.clone(),
        );
        let local = self.service(&key);
        if q.dc.is_some()
            || !q.healthy_only
            || !self.failover().is_active()
            || self.has_local_answer(local.as_deref())
        {
            return local;
        }
        // No passing instance here: the first failover datacenter with some.
        match self.failover_tiers(&q.service, 1).into_iter().next() {
            Some(t) => Some(t.snapshot),
            None => local,
        }
    }

    /// Whether a local service answers its local names itself: it has an
    /// instance with an address that answers may use (passing, or warning
    /// unless `dns.only_passing`; not ejected). Otherwise they fail over.
    pub fn has_local_answer(&self, local: Option<&ServiceSnapshot>) -> bool {
        let only_passing = self.only_passing();
        local.is_some_and(|s| {
            s.instances
                .values()
                .any(|i| i.serves(only_passing) && !s.is_ejected(i) && i.has_addresses())
        })
    }

    /// The failover tiers of `service`'s local names, at most `limit`: for
    /// each datacenter of the failover order (stale ones last) whose service
    /// has passing instances with addresses, their tier, at priority 2, 3,
    /// ... in that order. Empty in a single datacenter.
    pub fn failover_tiers(&self, service: &ServiceName, limit: usize) -> Vec<RemoteTier> {
        let policy = self.failover();
        if limit == 0 || !policy.is_active() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for dc in policy.targets(service) {
            if &dc == self.local_dc() {
                continue;
            }
            let Some(snap) = self.service(&ServiceKey::new(dc, service.clone())) else {
                continue;
            };
            let plan = snap.address_plan(None, AskerClass::ANYONE);
            let Some(tier) = plan.tiers.into_iter().next() else {
                continue;
            };
            let priority = LOCAL_PRIORITY.saturating_add(1 + out.len() as u16);
            out.push(RemoteTier {
                snapshot: snap,
                tier: Tier { priority, ..tier },
            });
            if out.len() == limit {
                break;
            }
        }
        out
    }

    /// The instances a query selects for this asker, in plan order.
    pub fn select(&self, q: &Query, ctx: &QueryContext) -> Selection {
        let Some(snap) = self.snapshot_for(q) else {
            return Selection::default();
        };
        let exists = match &q.version {
            None => true,
            Some(sel) => snap.groups_of(sel).is_some(),
        };
        let plan = snap.plan(q.version.as_ref(), q.healthy_only, AskerClass::of(ctx));
        Selection {
            exists,
            instances: plan
                .members()
                .map(|p| snap.instances.at(p).clone())
                .collect(),
            index: snap.index,
        }
    }

    /// One healthy instance, by the plan's balance rule (discovery routes
    /// that answer with a single address): what the first record of a DNS
    /// answer of the same strategy would be.
    pub fn pick(&self, q: &Query, ctx: &QueryContext) -> Option<Arc<Instance>> {
        let snap = self.snapshot_for(q)?;
        let plan = snap.plan(q.version.as_ref(), true, AskerClass::of(ctx));
        self.pick_in(&snap, &plan, plan.balance, ctx)
    }

    /// [`Registry::pick`] with another strategy than the service's (the
    /// Maxine-compatible discovery names its own).
    pub fn pick_by(
        &self,
        q: &Query,
        ctx: &QueryContext,
        balance: Balance,
    ) -> Option<Arc<Instance>> {
        let snap = self.snapshot_for(q)?;
        let plan = snap.plan(q.version.as_ref(), true, AskerClass::of(ctx));
        self.pick_in(&snap, &plan, balance, ctx)
    }

    fn pick_in(
        &self,
        snap: &ServiceSnapshot,
        plan: &Plan,
        balance: Balance,
        ctx: &QueryContext,
    ) -> Option<Arc<Instance>> {
        let tier = plan.tiers.first()?;
        let members = &tier.members;
        let n = members.len();
        let turn = || snap.rr.fetch_add(1, Ordering::Relaxed);
        let at = match balance {
            Balance::RoundRobin => turn() % n,
            Balance::Random => (strategy::mix(turn() as u64) % n as u64) as usize,
            Balance::Weighted => {
                let weights: Vec<u64> = members
                    .iter()
                    .map(|p| u64::from(snap.instances.at(*p).weight.max(1)))
                    .collect();
                let total: u64 = weights.iter().sum();
                let mut r = strategy::mix(turn() as u64) % total;
                weights
                    .iter()
                    .position(|w| {
                        if r < *w {
                            return true;
                        }
                        r -= w;
                        false
                    })
                    .unwrap_or(0)
            }
            Balance::Sticky => {
                let bucket = strategy::sticky_bucket(ctx.peer, ctx.client_subnet);
                let ids: Vec<u64> = members
                    .iter()
                    .map(|p| strategy::id_hash(snap.instances.at(*p).id.as_str()))
                    .collect();
                strategy::sticky_order(bucket, &ids)[0] as usize
            }
            Balance::Nearest => {
                let zones = &self.balancing().client_zones;
                let near = strategy::asker_addr(ctx.peer, ctx.client_subnet)
                    .and_then(|a| zones.zone_of(a))
                    .map(|z| {
                        members
                            .iter()
                            .enumerate()
                            .filter(|(_, p)| zone_of(snap.instances.at(**p), zones) == Some(z))
                            .map(|(k, _)| k)
                            .collect::<Vec<_>>()
                    })
                    .filter(|near| !near.is_empty());
                match near {
                    Some(near) => near[turn() % near.len()],
                    None => turn() % n,
                }
            }
        };
        Some(snap.instances.at(members[at]).clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::core::{Address, InstanceId, InstanceSpec};

    fn reg(now: Instant) -> Registry {
        crate::core::registry::test_registry(now)
    }

    fn register(r: &Registry, name: &str, ip: &str, version: &str, t0: Instant) {
        let mut s = InstanceSpec::new(Address::parse(ip).unwrap(), 8080);
        s.version = version.into();
        let key = ServiceKey::new(r.local_dc().clone(), ServiceName::new("pay").unwrap());
        r.register(key, InstanceId::new(name).unwrap(), s, t0)
            .unwrap();
    }

    fn q(version: Option<&str>) -> Query {
        Query {
            dc: None,
            service: ServiceName::new("pay").unwrap(),
            version: version.and_then(VersionSelector::parse),
            healthy_only: true,
        }
    }

    const ANYONE: QueryContext = QueryContext {
        peer: None,
        transport: Transport::Http,
        client_subnet: None,
    };

    #[test]
    fn version_queries_select_by_major_and_minor() {
        let t0 = Instant::now();
        let r = reg(t0);
        register(&r, "a", "10.0.0.1", "2.1.0", t0);
        register(&r, "b", "10.0.0.2", "2.2.0", t0);
        register(&r, "c", "10.0.0.3", "3.0.0", t0);
        assert_eq!(r.select(&q(Some("v2")), &ANYONE).instances.len(), 2);
        assert_eq!(r.select(&q(Some("v2-1")), &ANYONE).instances.len(), 1);
        let missing = r.select(&q(Some("v4")), &ANYONE);
        assert!(!missing.exists && missing.instances.is_empty());
    }

    #[test]
    fn round_robin_cycles_through_passing_instances() {
        let t0 = Instant::now();
        let r = reg(t0);
        for (n, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
            register(&r, n, ip, "", t0);
        }
        let picks: Vec<_> = (0..6)
            .map(|_| r.pick(&q(None), &ANYONE).unwrap().id.to_string())
            .collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn a_plan_is_one_local_tier_of_the_selected_positions() {
        let t0 = Instant::now();
        let r = reg(t0);
        register(&r, "a", "10.0.0.1", "1.0.0", t0);
        register(&r, "b", "10.0.0.2", "2.0.0", t0);
        register(&r, "c", "10.0.0.3", "2.1.0", t0);
        let snap = r.service(&r.services()[0].key).unwrap();
        let v2 = VersionSelector::parse("v2").unwrap();
        let plan = snap.plan(Some(&v2), true, AskerClass::ANYONE);
        assert_eq!(
            plan,
            Plan {
                tiers: vec![Tier {
                    priority: LOCAL_PRIORITY,
                    members: vec![1, 2]
                }],
                balance: Balance::RoundRobin,
                panic: false,
            }
        );
        let none = VersionSelector::parse("v9").unwrap();
        assert!(snap.plan(Some(&none), true, AskerClass::ANYONE).is_empty());
    }

    fn eject(r: &Registry, name: &str, ejected: bool, t0: Instant) {
        let key = ServiceKey::new(r.local_dc().clone(), ServiceName::new("pay").unwrap());
        let id = InstanceId::new(name).unwrap();
        let of = r.service(&key).unwrap().instances.get(&id).unwrap().index;
        let change = crate::core::Change::Eject {
            key,
            id,
            ejected,
            of,
        };
        r.apply_next(vec![change], &crate::core::Context::system(), t0)
            .unwrap();
    }

    fn answered(r: &Registry) -> Vec<String> {
        r.select(&q(None), &ANYONE)
            .instances
            .iter()
            .map(|i| i.id.to_string())
            .collect()
    }

    /// Ejections and the panic threshold as a table: instances ejected ->
    /// what is answered, for a threshold.
    #[test]
    fn ejected_instances_leave_answers_until_a_panic_answers_with_all() {
        let t0 = Instant::now();
        let rows: &[(u8, &[&str], &[&str], bool)] = &[
            // threshold, ejected, answered, panic
            (50, &[], &["a", "b", "c", "d"], false),
            (50, &["a"], &["b", "c", "d"], false),
            (50, &["a", "b"], &["c", "d"], false), // 50% healthy: not below
            (50, &["a", "b", "c"], &["a", "b", "c", "d"], true),
            (0, &["a", "b", "c", "d"], &[], false), // 0: never a panic
            (100, &["a"], &["a", "b", "c", "d"], true),
        ];
        for (threshold, ejected, want, panic) in rows {
            let r = reg(t0);
            r.set_balancing(crate::core::Balancing {
                panic_threshold: *threshold,
                ..crate::core::Balancing::default_settings()
            });
            for (n, ip) in [
                ("a", "10.0.0.1"),
                ("b", "10.0.0.2"),
                ("c", "10.0.0.3"),
                ("d", "10.0.0.4"),
            ] {
                register(&r, n, ip, "", t0);
            }
            for e in *ejected {
                eject(&r, e, true, t0);
            }
            assert_eq!(
                answered(&r),
                *want,
                "threshold {threshold}, ejected {ejected:?}"
            );
            let snap = r.service(&r.services()[0].key).unwrap();
            assert_eq!(
                snap.in_panic(),
                *panic,
                "threshold {threshold}, ejected {ejected:?}"
            );
            assert_eq!(snap.ejected_count(), ejected.len());
        }
    }

    #[test]
    fn a_returned_or_re_registered_instance_is_answered_again() {
        let t0 = Instant::now();
        let r = reg(t0);
        for (n, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
            register(&r, n, ip, "", t0);
        }
        eject(&r, "a", true, t0);
        assert_eq!(answered(&r), ["b", "c"]);
        eject(&r, "a", false, t0);
        assert_eq!(answered(&r), ["a", "b", "c"]);
        eject(&r, "b", true, t0);
        register(&r, "b", "10.0.0.2", "", t0);
        assert_eq!(answered(&r), ["a", "b", "c"], "a new value is not ejected");
        let snap = r.service(&r.services()[0].key).unwrap();
        assert_eq!(snap.ejected_count(), 0);
    }

    #[test]
    fn discovery_picks_follow_the_strategy() {
        let t0 = Instant::now();
        let r = reg(t0);
        for (n, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
            register(&r, n, ip, "", t0);
        }
        let from = |ip: &str| QueryContext::new(Some(ip.parse().unwrap()), Transport::Http);
        let sticky = |ip: &str| {
            r.pick_by(&q(None), &from(ip), Balance::Sticky)
                .unwrap()
                .id
                .to_string()
        };
        assert_eq!(
            sticky("192.0.2.1"),
            sticky("192.0.2.99"),
            "one /24, one pick"
        );
        let firsts: std::collections::BTreeSet<String> =
            (0..64).map(|i| sticky(&format!("10.{i}.0.1"))).collect();
        assert_eq!(firsts.len(), 3, "subnets spread over all");
    }
}
