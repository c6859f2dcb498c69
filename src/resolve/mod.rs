//! The resolver driver: keeps the host names that instances are registered
//! by resolved, so that DNS can answer for them with addresses.
//!
//! ```text
//!   change feed --events--> Driver: one Host per distinct name, its users
//!                              |  due names, at most `concurrency` at once
//!                              v
//!                           HostLookup (hickory-resolver: resolv.conf, hosts file)
//!                              |  addresses + TTL, no addresses, or a failure
//!                              v
//!   Log::propose(Change::Resolve for each user) --> Registry::apply --> DNS answers rebuilt
//! ```
//!
//! Like every driver it only proposes changes and follows the registry's
//! events: the core never calls it, and it never runs on the DNS query path
//! (answers carry what the last resolution gave, pre-encoded). A name is
//! resolved once for all the instances that use it; the result is one
//! shared [`HostAddress`] value. It is resolved again before its TTL runs
//! out (the TTL bounded to `[min_ttl, max_ttl]`), names that do not exist
//! after their negative TTL, and failed lookups with a doubling backoff.
//! A failed lookup keeps the last addresses while their TTL lasts, then
//! reports the name unresolved.
//!
//! Seams: [`system`] (the real resolver, from resolv.conf and a hosts file).
//! Must not import: dns, http, config (`app` hands over [`Settings`] and a
//! [`system::Source`]); it proposes through `store::Log` like the API.

pub mod system;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::core::{
    Change, Context, HostAddress, Instance, InstanceId, Resolution, Resolved, ServiceKey,
};
use crate::events::{Delivery, Subscription};
use crate::store::Log;

pub use system::SystemResolver;

/// The longest a lookup may take before it counts as failed (hickory's own
/// timeout and attempts apply first; this bounds a stuck one).
const LOOKUP_DEADLINE: Duration = Duration::from_secs(30);

/// What a lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The name's addresses, and the TTL of the answer.
    Addresses(Vec<IpAddr>, Duration),
    /// The name has no address: it does not exist, or has no A or AAAA
    /// records. An answer, not a failure: `ttl` is its negative TTL when
    /// known.
    NoAddresses { why: String, ttl: Option<Duration> },
    /// The lookup failed (timeout, server failure, no server reachable).
    Failed(String),
}

/// A future of an [`Answer`].
pub type LookupFuture = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// Resolves one host name (the real one: [`SystemResolver`]; tests give
/// their own).
pub trait HostLookup: Send + Sync + 'static {
    fn lookup(&self, name: Arc<str>) -> LookupFuture;
}

/// How names are re-resolved and how many at once.
#[derive(Clone, Debug)]
pub struct Settings {
    /// An answer's TTL is raised to at least this, and a name that does not
    /// exist is tried again after it when its negative TTL is unknown; also
    /// the first backoff after a failed lookup.
    pub min_ttl: Duration,
    /// An answer's TTL is lowered to at most this (hosts-file answers come
    /// with a day), and backoff grows to at most this.
    pub max_ttl: Duration,
    /// Most lookups in flight.
    pub concurrency: usize,
}

/// One distinct host name and the instances that use it.
struct Host {
    name: Arc<str>,
    /// The instances registered by this name, with the index of their
    /// current value (what a [`Change::Resolve`] is conditional on).
    users: HashMap<(ServiceKey, InstanceId), u64>,
    /// The latest result, shared by every user: `None` before the first.
    result: Option<HostAddress>,
    /// Until when the result's addresses are valid: a failed lookup keeps
    /// them until then.
    valid_until: Option<Instant>,
    /// Failed lookups in a row, for the backoff.
    failures: u32,
    /// When the next lookup is due (`None` while one is in flight).
    next: Option<Instant>,
}

/// The driver's state, apart from I/O: what the feed told it and what the
/// lookups found. Every method returns the changes to propose.
struct State {
    settings: Settings,
    hosts: HashMap<Arc<str>, Host>,
    /// Which name each user instance is registered by.
    by_instance: HashMap<(ServiceKey, InstanceId), Arc<str>>,
    /// Due lookups, by time (entries of names gone or rescheduled are
    /// skipped when popped).
    due: BTreeSet<(Instant, Arc<str>)>,
    in_flight: usize,
}

impl State {
    fn new(settings: Settings) -> Self {
        Self {
            settings,
            hosts: HashMap::new(),
            by_instance: HashMap::new(),
            due: BTreeSet::new(),
            in_flight: 0,
        }
    }

    /// Follows one instance's new value (`None`: removed).
    fn observe(
        &mut self,
        key: &ServiceKey,
        id: &InstanceId,
        inst: Option<&Arc<Instance>>,
        now: Instant,
        out: &mut Vec<Change>,
    ) {
        let k = (key.clone(), id.clone());
        let host = inst.and_then(|i| i.address.host().map(|h| (i, h)));
        let old = self.by_instance.get(&k).cloned();
        if let Some(old) = old
            && host.is_none_or(|(_, h)| h.name() != &*old)
        {
            self.by_instance.remove(&k);
            if let Some(h) = self.hosts.get_mut(&old) {
                h.users.remove(&k);
                if h.users.is_empty() {
                    // Nobody uses the name any more: forget it (its due
                    // entry is skipped when popped).
                    self.hosts.remove(&old);
                }
            }
        }
        let Some((inst, addr)) = host else { return };
        let name: Arc<str> = match self.hosts.get_key_value(addr.name()) {
            Some((n, _)) => n.clone(),
            None => {
                let name: Arc<str> = Arc::from(addr.name());
                self.hosts.insert(
                    name.clone(),
                    Host {
                        name: name.clone(),
                        users: HashMap::new(),
                        result: None,
                        valid_until: None,
                        failures: 0,
                        next: Some(now),
                    },
                );
                self.due.insert((now, name.clone()));
                name
            }
        };
        self.by_instance.insert(k.clone(), name.clone());
        let h = self.hosts.get_mut(&name).expect("just found or inserted");
        h.users.insert(k, inst.index);
        // A new user (or one whose value was replaced) of a name already
        // resolved gets the result at once, without a lookup.
        if let Some(result) = &h.result
            && needs(addr, result)
        {
            out.push(resolve_change(key, id, result, inst.index));
        }
    }

    /// Starts over from a snapshot of every service.
    fn reset(
        &mut self,
        services: &[Arc<crate::core::ServiceSnapshot>],
        now: Instant,
    ) -> Vec<Change> {
        for h in self.hosts.values_mut() {
            h.users.clear();
        }
        self.by_instance.clear();
        let mut out = Vec::new();
        for snap in services {
            for inst in snap.instances.values() {
                self.observe(&snap.key, &inst.id, Some(inst), now, &mut out);
            }
        }
        self.hosts.retain(|_, h| !h.users.is_empty());
        out
    }

    /// The names whose lookup is due at `now`, as many as may start; they
    /// count as in flight from now on.
    fn take_due(&mut self, now: Instant) -> Vec<Arc<str>> {
        let mut start = Vec::new();
        while self.in_flight < self.settings.concurrency {
            let Some((at, name)) = self.due.first().cloned() else {
                break;
            };
            if at > now {
                break;
            }
            self.due.pop_first();
            let Some(h) = self.hosts.get_mut(&name) else {
                continue; // no longer used
            };
            if h.next != Some(at) {
                continue; // rescheduled or in flight
            }
            h.next = None;
            self.in_flight += 1;
            start.push(name);
        }
        start
    }

    /// When the next lookup is due, if one could start.
    fn next_due(&self) -> Option<Instant> {
        if self.in_flight >= self.settings.concurrency {
            return None; // a finishing lookup wakes the driver
        }
        self.due.first().map(|(at, _)| *at)
    }

    /// Takes in what a lookup of `name` found at `now` (`now_ms`: the wall
    /// clock, for the listing), schedules the next, and returns the changes
    /// that give its users the result when it changed.
    fn finished(
        &mut self,
        name: &Arc<str>,
        answer: Answer,
        now: Instant,
        now_ms: u64,
    ) -> Vec<Change> {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(h) = self.hosts.get_mut(name) else {
            return Vec::new(); // nobody uses it any more
        };
        let s = &self.settings;
        let bound = |ttl: Duration| ttl.clamp(s.min_ttl, s.max_ttl);
        let (outcome, again) = match answer {
            Answer::Addresses(ips, ttl) => {
                let ttl = bound(ttl);
                h.failures = 0;
                h.valid_until = Some(now + ttl);
                // Again a little before the TTL runs out, so that the answer
                // is fresh when the old one expires.
                (Some(Resolved::from_addresses(ips)), refresh_after(ttl))
            }
            Answer::NoAddresses { why, ttl } => {
                h.failures = 0;
                h.valid_until = None;
                (
                    Some(Resolved::Failed(why.into())),
                    bound(ttl.unwrap_or(s.min_ttl)),
                )
            }
            Answer::Failed(why) => {
                h.failures = h.failures.saturating_add(1);
                let backoff = s
                    .min_ttl
                    .saturating_mul(1 << (h.failures - 1).min(16))
                    .min(s.max_ttl);
                match h.valid_until.filter(|v| *v > now) {
                    // The last addresses are still valid: keep them, and try
                    // again before they expire.
                    Some(v) => (None, backoff.min(v - now)),
                    None => {
                        h.valid_until = None;
                        (Some(Resolved::Failed(why.into())), backoff)
                    }
                }
            }
        };
        let at = now + again;
        h.next = Some(at);
        self.due.insert((at, h.name.clone()));
        let Some(outcome) = outcome else {
            return Vec::new();
        };
        let previous = h.result.as_ref().and_then(|r| r.resolution());
        if previous.is_some_and(|p| p.outcome == outcome) {
            return Vec::new(); // the same answer: nothing changes
        }
        // An unresolved name stays unresolved since its first failure, whatever
        // the reason now.
        let since_ms = match (previous, &outcome) {
            (Some(p), Resolved::Failed(_)) if matches!(p.outcome, Resolved::Failed(_)) => {
                p.since_ms
            }
            _ => now_ms,
        };
        let result = HostAddress::new(name).resolved(Resolution { outcome, since_ms });
        let mut changes: Vec<Change> = h
            .users
            .iter()
            .map(|((key, id), of)| resolve_change(key, id, &result, *of))
            .collect();
        // Consecutive changes of one service are one rebuild of it.
        changes.sort_by(|a, b| a.target().cmp(&b.target()));
        h.result = Some(result);
        changes
    }
}

/// A resolution is refreshed at 90% of its TTL.
fn refresh_after(ttl: Duration) -> Duration {
    ttl.mul_f64(0.9)
}

/// Whether an instance's host address lacks `result` (the very value, or
/// one with the same outcome).
fn needs(current: &HostAddress, result: &HostAddress) -> bool {
    !current.ptr_eq(result)
        && current.resolution().map(|r| &r.outcome) != result.resolution().map(|r| &r.outcome)
}

fn resolve_change(key: &ServiceKey, id: &InstanceId, host: &HostAddress, of: u64) -> Change {
    Change::Resolve {
        key: key.clone(),
        id: id.clone(),
        host: host.clone(),
        of,
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The driver: owns its state, the lookups in flight and its place in the
/// change feed.
pub struct Driver {
    state: State,
    lookup: Arc<dyn HostLookup>,
    log: Arc<dyn Log>,
    feed: Subscription,
}

impl Driver {
    /// A driver following `feed` (subscribe it from 0: it starts from a
    /// snapshot), resolving with `lookup` and proposing to `log`.
    pub fn new(
        settings: Settings,
        lookup: Arc<dyn HostLookup>,
        log: Arc<dyn Log>,
        feed: Subscription,
    ) -> Self {
        Self {
            state: State::new(settings),
            lookup,
            log,
            feed,
        }
    }

    /// Runs until `shutdown`; lookups in flight are dropped then.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut lookups: JoinSet<Answer> = JoinSet::new();
        // The name each lookup task is for (a task that panics has no output).
        let mut names: HashMap<tokio::task::Id, Arc<str>> = HashMap::new();
        loop {
            let now = Instant::now();
            for name in self.state.take_due(now) {
                let fut = self.lookup.lookup(name.clone());
                let task = lookups.spawn(async move {
                    tokio::time::timeout(LOOKUP_DEADLINE, fut)
                        .await
                        .unwrap_or_else(|_| Answer::Failed("the lookup timed out".into()))
                });
                names.insert(task.id(), name);
            }
            let due = self.state.next_due();
            let changes = tokio::select! {
                _ = shutdown.cancelled() => return,
                delivery = self.feed.next() => self.delivered(delivery),
                Some(done) = lookups.join_next_with_id(), if !lookups.is_empty() => {
                    let (id, answer) = match done {
                        Ok(done) => done,
                        Err(e) => {
                            // A bug in a lookup: a failure like any other
                            // (retried after the backoff).
                            tracing::error!(error = %e, "a host name lookup panicked");
                            (e.id(), Answer::Failed("the lookup failed unexpectedly".into()))
                        }
                    };
                    let name = names.remove(&id).expect("every lookup task is named");
                    if let Answer::Failed(why) | Answer::NoAddresses { why, .. } = &answer {
                        tracing::debug!(host = %name, reason = %why, "host name did not resolve");
                    }
                    self.state.finished(&name, answer, Instant::now(), unix_ms())
                }
                _ = sleep_until(due), if due.is_some() => Vec::new(),
            };
            self.propose(changes).await;
        }
    }

    fn delivered(&mut self, delivery: Delivery) -> Vec<Change> {
        let now = Instant::now();
        match delivery {
            Delivery::Snapshot { services, .. } => self.state.reset(&services, now),
            Delivery::Changes { events, .. } => {
                let mut out = Vec::new();
                for e in &events {
                    self.state
                        .observe(&e.key, &e.id, e.instance.as_ref(), now, &mut out);
                }
                out
            }
        }
    }

    async fn propose(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        // Applied before propose returns (the local log); a resolution
        // waits for no disk (`Context::system`: it is not stored).
        if let Err(e) = self.log.propose(changes, Context::system()).await {
            tracing::warn!(error = %e, "a host name's resolution could not be applied");
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
