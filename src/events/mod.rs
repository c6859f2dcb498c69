//! The change feed: every applied change, in index order, for every
//! consumer that is not the DNS answer cache or the journal (event streams,
//! blocking queries, federation peers, the health checker, metrics).
//!
//! ```text
//!   Registry (write lock) --Observer::applied--> ring of the latest N events + index watch
//!                                                   |
//!        subscribe_from(i): snapshot when i is 0 or older than the ring,
//!        then the events after it; a consumer far behind gets them
//!        coalesced (the latest event of each instance); memory is the
//!        ring's, whatever consumers do
//! ```
//!
//! Only the hand-off (a push onto the ring and an update of the index
//! watch) runs inside the registry's write lock; consumers read at their
//! own pace from their own task and never hold the lock.
//!
//! Must not import: dns, http, store, config.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::core::{
    AclEvent, AclKey, Batch, Event, InstanceId, Observer, Registry, ServiceKey, ServiceSnapshot,
};

/// How many of the latest events the feed keeps: a consumer behind by more
/// resynchronises from a snapshot.
pub const CAPACITY: usize = 65_536;

/// A consumer behind by more than this gets its backlog coalesced.
pub const COALESCE_AFTER: usize = 4_096;

/// Most events in one delivery.
pub const MAX_BATCH: usize = 1_024;

/// How changes and instances are written as JSON for consumers outside
/// the API (the MQTT publisher): the API's encoding, implemented where the
/// API's views are (`http::events`), so that every stream shows the same
/// documents.
/// Writes one instance as the API shows it (a JSON object) to a buffer.
pub type InstanceEncoder<'a> = Box<dyn Fn(&crate::core::Instance, &mut Vec<u8>) + 'a>;

pub trait Encoding: Send + Sync + 'static {
    /// One change, as the `change` events of `GET /v1/events` (JSON),
    /// shared with the streams that send it (no copy).
    fn change(&self, event: &Event) -> tokio_util::bytes::Bytes;
    /// What writes an instance of this service as the API shows it (a
    /// JSON object) to a buffer: what all instances share is made once.
    fn instance_encoder<'a>(&'a self, key: &ServiceKey) -> InstanceEncoder<'a>;
}

/// The feed. Cloning copies one `Arc`.
#[derive(Clone)]
pub struct ChangeFeed {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    /// Written by the registry's writer, read by every consumer at once.
    ring: RwLock<Ring>,
    /// The index of the latest applied change: what blocking reads wait on.
    index: watch::Sender<u64>,
    capacity: usize,
}

/// One change in the ring: an instance's, or a key/value entry's (only
/// subscriptions made with [`ChangeFeed::subscribe_with_kv_from`] see those).
#[derive(Clone, Debug)]
enum Item {
    Instance(Event),
    Kv(AclEvent),
}

impl Item {
    fn index(&self) -> u64 {
        match self {
            Item::Instance(e) => e.index,
            Item::Kv(e) => e.index,
        }
    }
}

struct Ring {
    events: VecDeque<Item>,
    /// Every event with an index above this is in `events` (events older
    /// than the ring's first were dropped, or came before the feed began).
    complete_after: u64,
}

/// Why a consumer gets the whole registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotReason {
    /// It asked from index 0.
    Start,
    /// It asked from an index older than what the feed keeps: it must
    /// replace what it holds (a resync).
    Resync,
}

/// What a consumer receives next.
#[derive(Debug)]
pub enum Delivery {
    /// Every service as of `index`; the events after it follow.
    Snapshot {
        index: u64,
        services: Vec<Arc<ServiceSnapshot>>,
        reason: SnapshotReason,
    },
    /// Events in index order. `coalesced`: the consumer was far behind, so
    /// only the latest event of each instance is here (indexes skip those
    /// left out); applying them in order still reaches the same state.
    Changes { events: Vec<Event>, coalesced: bool },
}

impl ChangeFeed {
    /// A feed of `registry`'s changes; subscribe it to the registry with
    /// `registry.subscribe(Arc::new(feed.clone()))`.
    pub fn new(registry: Registry) -> Self {
        Self::with_capacity(registry, CAPACITY)
    }

    pub fn with_capacity(registry: Registry, capacity: usize) -> Self {
        let index = registry.index();
        Self {
            inner: Arc::new(Inner {
                registry,
                ring: RwLock::new(Ring {
                    events: VecDeque::with_capacity(capacity.min(4096)),
                    complete_after: index,
                }),
                index: watch::channel(index).0,
                capacity: capacity.max(1),
            }),
        }
    }

    fn ring(&self) -> RwLockReadGuard<'_, Ring> {
        self.inner.ring.read().unwrap_or_else(|p| p.into_inner())
    }

    fn ring_mut(&self) -> RwLockWriteGuard<'_, Ring> {
        self.inner.ring.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The index of the latest change the feed has seen.
    pub fn index(&self) -> u64 {
        *self.inner.index.borrow()
    }

    /// A consumer of every change after `index`. When the feed no longer
    /// holds all of them (or never did: 0 on a restored registry), the
    /// consumer gets a snapshot first.
    pub fn subscribe_from(&self, index: u64) -> Subscription {
        Subscription {
            feed: self.clone(),
            next: index.saturating_add(1),
            from_start: index == 0,
            rx: self.inner.index.subscribe(),
            kv: None,
        }
    }

    /// [`ChangeFeed::subscribe_from`], also keeping the key/value changes
    /// of each delivery for [`Subscription::take_kv`] (the event streams).
    pub fn subscribe_with_kv_from(&self, index: u64) -> Subscription {
        let mut sub = self.subscribe_from(index);
        sub.kv = Some(Vec::new());
        sub
    }

    /// Waits until the feed's index passes `index`, or `wait` runs out;
    /// returns the index then. For blocking reads (`?index=N&wait=`).
    pub async fn wait_past(&self, index: u64, wait: Duration) -> u64 {
        let mut rx = self.inner.index.subscribe();
        let past = tokio::time::timeout(wait, async {
            rx.wait_for(|i| *i > index).await.map(|i| *i)
        })
        .await;
        match past {
            Ok(Ok(i)) => i,
            _ => *rx.borrow(),
        }
    }

    /// Waits until `key`'s latest change is above `index`, or `wait` runs
    /// out. A service with no instances has no index of its own (its
    /// removal is not kept): while it is absent, any change past `index`
    /// answers, so that a reader waiting on a service that was removed
    /// learns it at the next change rather than at the end of its wait.
    pub async fn wait_for_service(&self, key: &ServiceKey, index: u64, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = self.index();
        loop {
            let current = self.inner.registry.service(key).map_or(0, |s| s.index);
            if current > index || (current == 0 && index > 0 && seen > index) {
                return;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            seen = self.wait_past(seen, left).await;
        }
    }
}

impl Observer for ChangeFeed {
    fn applied(&self, batch: &Batch<'_>) {
        let kv = batch.acl.iter().filter(|e| matches!(e.key, AclKey::Kv(_)));
        if batch.events.is_empty() && kv.clone().next().is_none() {
            // A restore: nothing changed, but the index may have moved.
            let index = self.inner.registry.index();
            let mut ring = self.ring_mut();
            if ring.events.is_empty() {
                ring.complete_after = ring.complete_after.max(index);
            }
            drop(ring);
            self.inner.index.send_if_modified(|i| {
                let moved = index > *i;
                *i = (*i).max(index);
                moved
            });
            return;
        }
        // A batch holds instance changes or access-control ones, never both.
        let items = batch
            .events
            .iter()
            .cloned()
            .map(Item::Instance)
            .chain(kv.cloned().map(Item::Kv));
        let mut last = 0;
        {
            let mut ring = self.ring_mut();
            for item in items {
                if ring.events.len() == self.inner.capacity
                    && let Some(old) = ring.events.pop_front()
                {
                    ring.complete_after = old.index();
                }
                last = last.max(item.index());
                ring.events.push_back(item);
            }
        }
        self.inner.index.send_if_modified(|i| {
            let moved = last > *i;
            *i = (*i).max(last);
            moved
        });
    }
}

/// One consumer's place in the feed: only an index, so a slow consumer
/// costs nothing while it does not read.
pub struct Subscription {
    feed: ChangeFeed,
    /// The index of the next change wanted.
    next: u64,
    from_start: bool,
    rx: watch::Receiver<u64>,
    /// Key/value changes of the deliveries so far, not yet taken (`None`:
    /// this subscription skips them).
    kv: Option<Vec<AclEvent>>,
}

impl Subscription {
    /// The index of the last change delivered.
    pub fn position(&self) -> u64 {
        self.next - 1
    }

    /// What to deliver now, if anything.
    pub fn try_next(&mut self) -> Option<Delivery> {
        let ring = self.feed.ring();
        if self.next <= ring.complete_after {
            // Events it needs were dropped, or predate the feed (a restored
            // registry): the whole state instead.
            drop(ring);
            let reason = if self.from_start {
                SnapshotReason::Start
            } else {
                SnapshotReason::Resync
            };
            self.from_start = false;
            return Some(self.snapshot(reason));
        }
        self.from_start = false;
        // Items are in index order: find the first one wanted.
        let skip = ring.events.partition_point(|e| e.index() < self.next);
        let backlog = ring.events.len() - skip;
        if backlog == 0 {
            return None;
        }
        let wanted = ring.events.range(skip..);
        let (items, coalesced): (Vec<&Item>, bool) = if backlog > COALESCE_AFTER {
            // Far behind: the latest change of each instance (and key), in
            // index order.
            #[derive(PartialEq, Eq, Hash)]
            enum Of<'a> {
                Instance(&'a ServiceKey, &'a InstanceId),
                Kv(&'a AclKey),
            }
            let all: Vec<&Item> = wanted.collect();
            let mut latest: HashMap<Of<'_>, usize> = HashMap::new();
            for (n, item) in all.iter().enumerate() {
                let of = match item {
                    Item::Instance(e) => Of::Instance(&e.key, &e.id),
                    Item::Kv(e) => Of::Kv(&e.key),
                };
                latest.insert(of, n);
            }
            let mut keep: Vec<usize> = latest.into_values().collect();
            keep.sort_unstable();
            self.next = all.last().map_or(self.next, |e| e.index() + 1);
            (keep.into_iter().map(|n| all[n]).collect(), true)
        } else {
            let items: Vec<&Item> = wanted.take(MAX_BATCH).collect();
            self.next = items.last().map_or(self.next, |e| e.index() + 1);
            (items, false)
        };
        let mut events = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Item::Instance(e) => events.push(e.clone()),
                Item::Kv(e) => {
                    if let Some(kv) = &mut self.kv {
                        kv.push(e.clone());
                    }
                }
            }
        }
        let kv_waiting = self.kv.as_ref().is_some_and(|k| !k.is_empty());
        if events.is_empty() && !kv_waiting {
            // Only key/value changes, which this subscription skips: look
            // further.
            drop(ring);
            return self.try_next();
        }
        Some(Delivery::Changes { events, coalesced })
    }

    /// The key/value changes of the deliveries made so far (for a
    /// subscription made with [`ChangeFeed::subscribe_with_kv_from`]),
    /// in index order; they interleave with the delivered events by index.
    pub fn take_kv(&mut self) -> Vec<AclEvent> {
        self.kv.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Waits until the feed has a change past this subscription's
    /// position (returns at once when it has).
    pub async fn ready(&mut self) {
        loop {
            self.rx.borrow_and_update();
            if self.has_next() {
                return;
            }
            // The sender lives as long as the feed, which this holds.
            let _ = self.rx.changed().await;
        }
    }

    /// Whether the ring holds something for this subscription. What the
    /// ring holds, not the feed's index: a restore moves the index without
    /// adding changes, and a wait on the index alone would then never wait.
    fn has_next(&self) -> bool {
        let ring = self.feed.ring();
        self.next <= ring.complete_after
            || ring.events.back().is_some_and(|e| e.index() >= self.next)
    }

    /// Moves on to after `index`, as if the changes up to it had been
    /// delivered (another subscription's delivery of the same changes
    /// was passed on instead).
    pub fn skip_to(&mut self, index: u64) {
        self.next = self.next.max(index + 1);
        self.from_start = false;
    }

    /// The next delivery: waits for a change when there is none.
    pub async fn next(&mut self) -> Delivery {
        loop {
            self.rx.borrow_and_update();
            if let Some(d) = self.try_next() {
                return d;
            }
            // The sender lives as long as the feed, which this holds.
            let _ = self.rx.changed().await;
        }
    }

    fn snapshot(&mut self, reason: SnapshotReason) -> Delivery {
        let (index, services) = self.feed.inner.registry.snapshot();
        self.next = index + 1;
        Delivery::Snapshot {
            index,
            services,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::core::{Address, EventKind, InstanceSpec, ServiceName};

    fn registry() -> Registry {
        crate::core::registry::test_registry(Instant::now())
    }

    fn register(r: &Registry, service: &str, id: &str) -> u64 {
        let key = ServiceKey::new(r.local_dc().clone(), ServiceName::new(service).unwrap());
        let spec = InstanceSpec::new(Address::parse("10.0.0.1").unwrap(), 80);
        r.register(key, InstanceId::new(id).unwrap(), spec, Instant::now())
            .unwrap()
            .index
    }

    fn feed(r: &Registry, capacity: usize) -> ChangeFeed {
        let f = ChangeFeed::with_capacity(r.clone(), capacity);
        r.subscribe(Arc::new(f.clone()));
        f
    }

    fn indexes(d: &Delivery) -> Vec<u64> {
        match d {
            Delivery::Changes { events, .. } => events.iter().map(|e| e.index).collect(),
            Delivery::Snapshot { .. } => panic!("a snapshot: {d:?}"),
        }
    }

    #[test]
    fn a_consumer_from_zero_gets_a_snapshot_then_every_change_in_order() {
        let r = registry();
        register(&r, "pay", "a");
        let f = feed(&r, 100);
        let mut sub = f.subscribe_from(0);
        match sub.try_next().unwrap() {
            Delivery::Snapshot {
                index,
                services,
                reason,
            } => {
                assert_eq!(
                    (index, services.len(), reason),
                    (1, 1, SnapshotReason::Start)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(sub.try_next().is_none(), "nothing new yet");
        register(&r, "pay", "b");
        register(&r, "web", "c");
        let d = sub.try_next().unwrap();
        assert_eq!(indexes(&d), [2, 3]);
        assert!(sub.try_next().is_none());
        assert_eq!(sub.position(), 3);
    }

    #[test]
    fn a_consumer_resumes_from_its_index_and_resyncs_when_it_fell_out_of_the_ring() {
        let r = registry();
        let f = feed(&r, 4);
        for n in 0..3 {
            register(&r, "pay", &format!("i{n}"));
        }
        // Resume after index 1: exactly 2 and 3, nothing twice.
        let mut sub = f.subscribe_from(1);
        assert_eq!(indexes(&sub.try_next().unwrap()), [2, 3]);
        for n in 3..10 {
            register(&r, "pay", &format!("i{n}"));
        }
        // The ring holds 7..=10; index 4 is gone: a resync, then what follows.
        match sub.try_next().unwrap() {
            Delivery::Snapshot { index, reason, .. } => {
                assert_eq!((index, reason), (10, SnapshotReason::Resync))
            }
            other => panic!("{other:?}"),
        }
        register(&r, "pay", "last");
        assert_eq!(indexes(&sub.try_next().unwrap()), [11]);
        // A consumer that is up to date never resyncs, however old the ring.
        let mut current = f.subscribe_from(11);
        assert!(current.try_next().is_none());
    }

    #[test]
    fn a_consumer_far_behind_gets_the_latest_event_of_each_instance() {
        let r = registry();
        let f = feed(&r, CAPACITY);
        let mut sub = f.subscribe_from(0);
        assert!(
            sub.try_next().is_none(),
            "the feed has seen everything: no snapshot"
        );
        for round in 0..(COALESCE_AFTER / 2 + 10) {
            register(&r, "pay", "a");
            register(&r, "pay", &format!("b{}", round % 3));
        }
        let last = r.index();
        match sub.try_next().unwrap() {
            Delivery::Changes { events, coalesced } => {
                assert!(coalesced);
                let got: Vec<_> = events.iter().map(|e| (e.id.to_string(), e.kind)).collect();
                assert_eq!(got.len(), 4, "a, b0, b1, b2: {got:?}");
                assert_eq!(events.last().unwrap().index, last);
                assert!(events.windows(2).all(|w| w[0].index < w[1].index));
                assert!(got.iter().all(|(_, k)| *k == EventKind::Registered));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(sub.position(), last);
    }

    #[tokio::test]
    async fn blocking_reads_wake_on_the_next_change_or_at_the_wait() {
        let r = registry();
        let f = feed(&r, 100);
        let at = f.index();
        let waited = tokio::spawn({
            let f = f.clone();
            async move { f.wait_past(at, Duration::from_secs(30)).await }
        });
        tokio::task::yield_now().await;
        let index = register(&r, "pay", "a");
        assert_eq!(waited.await.unwrap(), index);
        let t = tokio::time::Instant::now();
        assert_eq!(f.wait_past(index, Duration::from_millis(50)).await, index);
        assert!(t.elapsed() >= Duration::from_millis(50));
    }
}
