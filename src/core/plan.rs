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
use super::model::Instance;
use super::registry::{Registry, ServiceKey, ServiceSnapshot};

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

/// A set of askers that get the same answers. Today every asker is in one
/// class; access rules and intentions (an asker's identity) and nearest-
/// first ordering (its zone) will partition askers into a few more, each
/// with its ready answers (docs/adr/0001-pre-encoded-dns-answers.md).
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

/// How load is spread over a tier's members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    /// Each answer starts one member further (DNS: a rotating window of the
    /// ready set; discovery: the next member).
    RoundRobin,
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
    /// passing ones only when `healthy_only`, as `class` may see them.
    pub fn plan(
        &self,
        version: Option<&VersionSelector>,
        healthy_only: bool,
        _class: AskerClass,
    ) -> Plan {
        Plan::one_tier(self.select_positions(version, healthy_only))
    }

    /// The plan of DNS answers for the instances matching `version`: the
    /// passing ones that have an address to answer with. An instance
    /// registered by a host name that has not resolved (yet, or any more)
    /// is left out: an SRV record whose target has no address would send
    /// clients to a name that answers nothing.
    pub fn address_plan(&self, version: Option<&VersionSelector>, _class: AskerClass) -> Plan {
        Plan::one_tier(self.select_positions_by(version, |i| i.is_passing() && i.has_addresses()))
    }
}

impl Plan {
    /// `members` as the one local tier (no tier when empty).
    fn one_tier(members: Vec<u32>) -> Plan {
        Plan {
            tiers: if members.is_empty() {
                Vec::new()
            } else {
                vec![Tier {
                    priority: LOCAL_PRIORITY,
                    members,
                }]
            },
            balance: Balance::RoundRobin,
        }
    }
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

    /// Whether a local service answers its local names itself: it has a
    /// passing instance with an address. Otherwise they fail over.
    pub fn has_local_answer(&self, local: Option<&ServiceSnapshot>) -> bool {
        local.is_some_and(|s| {
            s.instances
                .values()
                .any(|i| i.is_passing() && i.has_addresses())
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

    /// One passing instance, by the plan's balance rule (discovery routes
    /// that answer with a single address).
    pub fn pick(&self, q: &Query, ctx: &QueryContext) -> Option<Arc<Instance>> {
        let snap = self.snapshot_for(q)?;
        let plan = snap.plan(q.version.as_ref(), true, AskerClass::of(ctx));
        let tier = plan.tiers.first()?;
        let at = match plan.balance {
            Balance::RoundRobin => snap.rr.fetch_add(1, Ordering::Relaxed) % tier.members.len(),
        };
        Some(snap.instances.at(tier.members[at]).clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::core::{Address, InstanceId, InstanceSpec, RegistryConfig};

    fn reg(now: Instant) -> Registry {
        Registry::new(
            RegistryConfig {
                local_dc: Datacenter::new("dc1").unwrap(),
                reap_after: Duration::from_secs(60),
            },
            now,
        )
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
                balance: Balance::RoundRobin
            }
        );
        let none = VersionSelector::parse("v9").unwrap();
        assert!(snap.plan(Some(&none), true, AskerClass::ANYONE).is_empty());
    }
}
