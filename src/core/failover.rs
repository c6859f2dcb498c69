//! Failover: which other datacenters answer a local name when the service
//! has no passing instance here, in which order.
//!
//! The order comes from the configuration (`failover.datacenters`, or the
//! N nearest peers, which the federation driver keeps up to date from its
//! round-trip measurements), with a per-service override
//! (`PUT /v1/services/{svc}/failover`). Stale datacenters move to the end
//! of the order: they are still targets, but only when no fresher one has
//! passing instances of the service. The federation driver decides
//! staleness (with hysteresis); this module only holds the outcome.
//!
//! Whoever encodes answers from the order (the DNS answer cache) listens
//! for changes with [`FailoverPolicy::on_change`]: a change of order
//! rebuilds the local names of every service.
//!
//! No I/O; the locks are held for a copy only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use super::labels::{Datacenter, ServiceName};

/// Called when the failover order may have changed.
pub type Listener = Arc<dyn Fn() + Send + Sync>;

/// The failover settings and state. Cloning copies one `Arc`.
#[derive(Clone, Default)]
pub struct FailoverPolicy {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: RwLock<State>,
    listeners: Mutex<Vec<Listener>>,
}

#[derive(Clone, Debug, Default)]
struct State {
    /// The order for every service without an override.
    order: Vec<Datacenter>,
    /// Per-service orders.
    overrides: BTreeMap<ServiceName, Vec<Datacenter>>,
    stale: BTreeSet<Datacenter>,
    /// TTL of failover answers, in seconds.
    ttl: u32,
    /// SRV answers of local names list the failover datacenters too.
    srv_tiers: bool,
}

impl FailoverPolicy {
    /// A policy with `order`, failover answers of `ttl` seconds, and SRV
    /// tiers when `srv_tiers`.
    pub fn new(order: Vec<Datacenter>, ttl: u32, srv_tiers: bool) -> Self {
        let p = Self::default();
        {
            let mut st = p.write();
            st.order = order;
            st.ttl = ttl;
            st.srv_tiers = srv_tiers;
        }
        p
    }

    /// Sets the default order, the TTL and SRV tiers (at start-up).
    pub fn configure(&self, order: Vec<Datacenter>, ttl: u32, srv_tiers: bool) {
        {
            let mut st = self.write();
            st.order = order;
            st.ttl = ttl;
            st.srv_tiers = srv_tiers;
        }
        self.changed();
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any failover can happen (no order, no override: none, and
    /// answers are built exactly as in a single datacenter).
    pub fn is_active(&self) -> bool {
        let st = self.read();
        !st.order.is_empty() || !st.overrides.is_empty()
    }

    pub fn ttl(&self) -> u32 {
        self.read().ttl
    }

    pub fn srv_tiers(&self) -> bool {
        self.read().srv_tiers
    }

    /// The datacenters that answer `service`'s local names when it has no
    /// passing instance here, most preferred first: stale ones last.
    pub fn targets(&self, service: &ServiceName) -> Vec<Datacenter> {
        let st = self.read();
        let order = st.overrides.get(service).unwrap_or(&st.order);
        let (mut fresh, stale): (Vec<_>, Vec<_>) =
            order.iter().cloned().partition(|d| !st.stale.contains(d));
        fresh.extend(stale);
        fresh
    }

    /// The configured order of `service` (its override, or the default) and
    /// whether it is an override.
    pub fn order_of(&self, service: &ServiceName) -> (Vec<Datacenter>, bool) {
        let st = self.read();
        match st.overrides.get(service) {
            Some(o) => (o.clone(), true),
            None => (st.order.clone(), false),
        }
    }

    /// Every per-service override.
    pub fn overrides(&self) -> BTreeMap<ServiceName, Vec<Datacenter>> {
        self.read().overrides.clone()
    }

    /// Replaces the default order (the nearest peers were measured again).
    pub fn set_order(&self, order: Vec<Datacenter>) {
        let changed = {
            let mut st = self.write();
            let changed = st.order != order;
            st.order = order;
            changed
        };
        if changed {
            self.changed();
        }
    }

    /// Sets (`Some`) or removes (`None`) the override of `service`.
    pub fn set_override(&self, service: ServiceName, order: Option<Vec<Datacenter>>) {
        {
            let mut st = self.write();
            match order {
                Some(o) => st.overrides.insert(service, o),
                None => st.overrides.remove(&service),
            };
        }
        self.changed();
    }

    /// Marks `dc` stale or fresh.
    pub fn set_stale(&self, dc: &Datacenter, stale: bool) {
        let changed = {
            let mut st = self.write();
            if stale {
                st.stale.insert(dc.clone())
            } else {
                st.stale.remove(dc)
            }
        };
        if changed {
            self.changed();
        }
    }

    pub fn is_stale(&self, dc: &Datacenter) -> bool {
        self.read().stale.contains(dc)
    }

    /// Adds a listener, called after every change of the order.
    pub fn on_change(&self, listener: Listener) {
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(listener);
    }

    fn changed(&self) {
        let listeners = self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for l in listeners {
            l();
        }
    }
}

impl std::fmt::Debug for FailoverPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FailoverPolicy")
            .field(&*self.read())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dc(n: &str) -> Datacenter {
        Datacenter::new(n).unwrap()
    }

    #[test]
    fn stale_datacenters_move_to_the_end_of_the_order() {
        let p = FailoverPolicy::new(vec![dc("dc2"), dc("dc3")], 2, false);
        let svc = ServiceName::new("pay").unwrap();
        assert_eq!(p.targets(&svc), [dc("dc2"), dc("dc3")]);
        p.set_stale(&dc("dc2"), true);
        assert_eq!(p.targets(&svc), [dc("dc3"), dc("dc2")]);
        p.set_override(svc.clone(), Some(vec![dc("dc4")]));
        assert_eq!(p.targets(&svc), [dc("dc4")]);
    }

    #[test]
    fn listeners_hear_changes_of_the_order_only() {
        let p = FailoverPolicy::new(vec![dc("dc2")], 2, false);
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = n.clone();
        p.on_change(Arc::new(move || {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }));
        p.set_stale(&dc("dc2"), false);
        p.set_order(vec![dc("dc2")]);
        assert_eq!(n.load(std::sync::atomic::Ordering::Relaxed), 0);
        p.set_stale(&dc("dc2"), true);
        assert_eq!(n.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
