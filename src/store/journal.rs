//! The journal: follows every registry change into the [`Store`], with group
//! commit, and tells waiting API requests when their change is durable.
//!
//! [`Journal`] is a registry [`Observer`]: under the registry's write lock it
//! only pushes the change onto a queue (so the queue is in index order). One
//! writer thread takes everything queued, encodes it, and commits it as one
//! batch: one fsync for all the changes that arrived while the previous batch
//! was being written. It then publishes, on a `watch` channel, the index up
//! to which every change is settled and the ranges that failed.
//!
//! When a commit fails, that batch and everything queued behind it fail
//! together: API changes (registrations, deregistrations, revivals) are
//! rolled back in the registry, unless a later change of the same instance
//! came in meanwhile, and their requests are answered 503; expiry changes
//! and roll-backs are queued again (memory is right, the disk must follow).
//! The store is then reopened (never fsync again on a descriptor whose fsync
//! failed). What the failed batch wrote may or may not be on disk, so its
//! records are deleted by a later batch; until then, the highest index of an
//! instance wins at start-up.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::codec::{self, Decoder};
use super::{Op, Store, StoreError, WriteBatch};
use crate::core::{
    Batch, EventKind, Instance, InstanceId, Observer, Registry, Restored, Revert, ServiceKey,
};

/// Records decoded per hand-over at start-up.
const LOAD_CHUNK: usize = 4096;
/// How many failed ranges are remembered for requests still to look them up.
const FAILURES_KEPT: usize = 4096;
/// Bounds of the wait for a batch to fill up to the size of the last one
/// (the last commit's time, within these).
const GROUP_WAIT_MIN: Duration = Duration::from_micros(500);
const GROUP_WAIT_MAX: Duration = Duration::from_millis(1);
/// Retry pace for background changes (expiry) while the store is failing.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

type Who = (ServiceKey, InstanceId);

/// One queued change.
#[derive(Clone)]
struct Entry {
    index: u64,
    who: Who,
    /// The value to store, at its own index.
    put: Option<Arc<Instance>>,
    /// The stored value this change replaces, to delete.
    delete: Option<u64>,
    /// The value to roll back to when the change fails (API changes only).
    previous: Option<Arc<Instance>>,
    /// An API change: rolled back on failure. Others are written again.
    revertible: bool,
}

#[derive(Default)]
struct Queue {
    entries: Vec<Entry>,
    /// Records to delete that no live value uses (left by failed batches,
    /// or older values found at start-up).
    cleanup: Vec<u64>,
    /// Index of the latest queued change of each instance not yet settled.
    latest: HashMap<Who, u64>,
    closing: bool,
    /// Wake the writer once this many changes are queued (`usize::MAX`
    /// while it commits: it looks at the queue again when it is done).
    want: usize,
}

/// What is known about durability, published after every batch.
#[derive(Debug, Default)]
struct Progress {
    /// Every change up to this index is settled: durable unless in `failed`.
    settled: u64,
    /// Failed index ranges (inclusive), oldest first, with the reason.
    failed: VecDeque<(u64, u64, Arc<str>)>,
    /// Ranges ending at or below this were dropped from `failed`.
    forgotten_to: u64,
    /// The writer stopped (a bug): nothing after `settled` will be stored.
    stopped: bool,
}

impl Progress {
    fn outcome(&self, index: u64) -> Result<(), Arc<str>> {
        if index > self.settled {
            return Err(Arc::from("the store writer stopped; see the server log"));
        }
        if let Some((_, _, why)) = self
            .failed
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&index))
        {
            return Err(why.clone());
        }
        if index <= self.forgotten_to {
            // Too old to tell: answer as if it failed (a retry is harmless).
            return Err(Arc::from(
                "the store failed around this change and it cannot be confirmed",
            ));
        }
        Ok(())
    }
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Waits for changes to become durable. Cloning copies a channel receiver.
#[derive(Clone)]
pub struct Durable {
    rx: watch::Receiver<Progress>,
}

impl Default for Durable {
    /// Without a store: every change counts as durable at once.
    fn default() -> Self {
        let (_, rx) = watch::channel(Progress {
            settled: u64::MAX,
            ..Progress::default()
        });
        Self { rx }
    }
}

impl Durable {
    /// Returns once the change with `index` is on stable storage, or with the
    /// reason it could not be stored (it has then been rolled back).
    pub async fn wait(&self, index: u64) -> Result<(), Arc<str>> {
        {
            let p = self.rx.borrow();
            if p.settled >= index || p.stopped {
                return p.outcome(index);
            }
        }
        let mut rx = self.rx.clone();
        let p = rx
            .wait_for(|p| p.settled >= index || p.stopped)
            .await
            .map_err(|_| Arc::<str>::from("the store was closed"))?;
        p.outcome(index)
    }
}

/// What start-up found in the store.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub store: String,
    pub instances: usize,
    /// Records that did not decode: skipped (and kept, for inspection).
    pub corrupt: usize,
    /// Older values of an instance left behind by a failed write: deleted.
    pub superseded: usize,
    pub last_index: u64,
    pub elapsed: Duration,
}

/// Follows the registry into a store. Dropping it (or [`Journal::close`])
/// writes what is queued and stops the writer.
pub struct Journal {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    durable: Durable,
}

/// The registry side: queues changes under the registry's lock.
struct Follower(Arc<Shared>);

impl Observer for Follower {
    fn applied(&self, batch: &Batch<'_>) {
        if batch.events.is_empty() {
            return;
        }
        let mut q = self.0.lock();
        for e in batch.events {
            let who = (e.key.clone(), e.id.clone());
            let put = e.instance.clone();
            let put_index = put.as_ref().map(|i| i.index);
            let revertible = matches!(
                e.kind,
                EventKind::Registered | EventKind::Deregistered | EventKind::Passing
            );
            q.latest.insert(who.clone(), e.index);
            q.entries.push(Entry {
                index: e.index,
                who,
                put,
                delete: e
                    .previous
                    .as_ref()
                    .map(|p| p.index)
                    .filter(|i| Some(*i) != put_index),
                previous: if revertible { e.previous.clone() } else { None },
                revertible,
            });
        }
        let wake = q.entries.len() >= q.want;
        drop(q);
        if wake {
            self.0.wake.notify_one();
        }
    }
}

impl Journal {
    /// Loads what `store` holds into `registry` (which should be empty and
    /// already have its other observers, so DNS is built once), then follows
    /// every later change of the registry into the store. Restored instances
    /// get a full TTL from `now`.
    pub fn start(
        mut store: Box<dyn Store>,
        registry: &Registry,
        now: std::time::Instant,
    ) -> Result<(Self, LoadReport), StoreError> {
        let started = Instant::now();
        let mut restorer = registry.restorer(now);
        // Reading and decoding (this thread's helper) overlaps with building
        // the instances (this thread): start-up is I/O- and CPU-bound alike.
        let (last_index, corrupt) = std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Restored>>(8);
            let store = &mut store;
            let reader = scope.spawn(move || {
                let mut decoder = Decoder::default();
                let mut corrupt = 0usize;
                let mut chunk = Vec::with_capacity(LOAD_CHUNK);
                let last = store.load(&mut |index, bytes| match decoder.decode(index, bytes) {
                    Ok(r) => {
                        chunk.push(r);
                        if chunk.len() == LOAD_CHUNK {
                            let full = std::mem::replace(&mut chunk, Vec::with_capacity(LOAD_CHUNK));
                            let _ = tx.send(full);
                        }
                    }
                    Err(e) => {
                        if corrupt < 10 {
                            tracing::error!(index, error = %e, "skipping a stored record that cannot be read");
                        }
                        corrupt += 1;
                    }
                });
                let _ = tx.send(chunk);
                last.map(|last| (last, corrupt))
            });
            let mut refused = 0usize;
            for chunk in rx {
                for r in chunk {
                    let index = r.index;
                    if let Err(e) = restorer.add(r) {
                        if refused < 10 {
                            tracing::error!(index, error = %e, "skipping a stored record with an impossible index");
                        }
                        refused += 1;
                    }
                }
            }
            reader
                .join()
                .unwrap_or_else(|_| Err(StoreError::Io("reading the store panicked".into())))
                .map(|(last, corrupt)| (last, corrupt + refused))
        })?;
        let restored = restorer
            .finish(last_index)
            .map_err(|e| StoreError::Corrupt {
                what: store.describe(),
                detail: format!("{e}: the store's change index cannot be continued"),
            })?;
        let report = LoadReport {
            store: store.describe(),
            instances: restored.loaded,
            corrupt,
            superseded: restored.superseded.len(),
            last_index: registry.index(),
            elapsed: started.elapsed(),
        };
        if corrupt > 0 {
            tracing::error!(
                corrupt,
                store = %report.store,
                "some stored records could not be read and were skipped"
            );
        }
        let settled = registry.index();
        let (tx, rx) = watch::channel(Progress {
            settled,
            ..Progress::default()
        });
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                cleanup: restored.superseded,
                ..Queue::default()
            }),
            wake: Condvar::new(),
            progress: tx,
        });
        registry.subscribe(Arc::new(Follower(shared.clone())));
        let mut writer = Writer {
            shared: shared.clone(),
            store,
            registry: registry.clone(),
            last_index: settled,
            broken: false,
            backoff: BACKOFF_MIN,
            last_try: false,
            last_batch: 0,
            last_commit: Duration::ZERO,
        };
        let handle = std::thread::Builder::new()
            .name("maxine-store".into())
            .spawn(move || {
                let shared = writer.shared.clone();
                let run = std::panic::AssertUnwindSafe(|| writer.run());
                if std::panic::catch_unwind(run).is_err() {
                    // Fail every waiting and later write instead of hanging them.
                    tracing::error!("the store writer panicked: changes are no longer saved");
                    shared.progress.send_modify(|p| p.stopped = true);
                }
            })
            .map_err(|e| StoreError::Io(format!("cannot start the store writer: {e}")))?;
        Ok((
            Self {
                shared,
                writer: Mutex::new(Some(handle)),
                durable: Durable { rx },
            },
            report,
        ))
    }

    /// The handle API requests wait on.
    pub fn durable(&self) -> Durable {
        self.durable.clone()
    }

    /// Writes everything queued, then stops the writer and closes the store.
    /// Blocks; call it after the API has stopped taking requests.
    pub fn close(&self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_all();
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            tracing::error!("the store writer panicked");
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

struct Writer {
    shared: Arc<Shared>,
    store: Box<dyn Store>,
    registry: Registry,
    /// Highest index handed to the store.
    last_index: u64,
    /// The last commit failed: reopen before the next.
    broken: bool,
    backoff: Duration,
    /// Closing with a failing store: the one last try was made.
    last_try: bool,
    /// Size and duration of the last successful commit.
    last_batch: usize,
    last_commit: Duration,
}

impl Writer {
    fn run(&mut self) {
        while let Some((entries, cleanup)) = self.next_batch() {
            if self.broken {
                if let Err(e) = self.store.reopen() {
                    tracing::error!(store = %self.store.describe(), error = %e, "cannot reopen the store");
                    self.fail(entries, cleanup, &e);
                    continue;
                }
                tracing::info!(store = %self.store.describe(), "store reopened");
                self.broken = false;
            }
            let max = entries.iter().map(|e| e.index).max().unwrap_or(0);
            self.last_index = self.last_index.max(max);
            let batch = build(&entries, &cleanup, self.last_index);
            let t = Instant::now();
            match self.store.commit(&batch) {
                Ok(()) => {
                    self.last_commit = t.elapsed();
                    self.last_batch = entries.len();
                    tracing::trace!(
                        changes = entries.len(),
                        us = self.last_commit.as_micros() as u64,
                        "batch committed"
                    );
                    self.backoff = BACKOFF_MIN;
                    self.settle(&entries, max);
                }
                Err(e) => {
                    tracing::error!(
                        store = %self.store.describe(), error = %e, changes = entries.len(),
                        "writing to the store failed; the changes are rolled back"
                    );
                    self.broken = true;
                    self.fail(entries, cleanup, &e);
                }
            }
        }
        if self.broken {
            let _ = self.store.reopen();
        }
    }

    /// Waits for work and takes all of it. `None`: closing and nothing left.
    /// While the store is failing, background work waits for the backoff;
    /// an API change (someone is waiting) is tried at once.
    ///
    /// Under load, the clients answered by the last commit send their next
    /// change a moment later; taking the queue at once would leave them for
    /// the commit after next, and batches would alternate between two
    /// halves of the clients. So while fewer changes are queued than the last
    /// batch held, the writer waits a little (about the last commit's time,
    /// 0.5 to 1 ms) for them. An idle server commits a lone change at once.
    fn next_batch(&mut self) -> Option<(Vec<Entry>, Vec<u64>)> {
        let mut q = self.shared.lock();
        let retry_at = self.broken.then(|| Instant::now() + self.backoff);
        let mut fill_until: Option<Instant> = None;
        loop {
            let has_work = !q.entries.is_empty() || !q.cleanup.is_empty();
            if q.closing {
                if !has_work {
                    return None;
                }
                if self.broken {
                    // A failing store gets one last try when closing.
                    if self.last_try {
                        tracing::error!(
                            changes = q.entries.len(),
                            "closing with changes the store could not take"
                        );
                        return None;
                    }
                    self.last_try = true;
                }
                break;
            }
            match retry_at {
                Some(t) if has_work && !q.entries.iter().any(|e| e.revertible) => {
                    let now = Instant::now();
                    if now >= t {
                        break;
                    }
                    q.want = 1;
                    q = self
                        .shared
                        .wake
                        .wait_timeout(q, t - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                _ if has_work && !self.broken && q.entries.len() < self.last_batch => {
                    let now = Instant::now();
                    let until = *fill_until.get_or_insert_with(|| {
                        now + self.last_commit.clamp(GROUP_WAIT_MIN, GROUP_WAIT_MAX)
                    });
                    if now >= until {
                        break;
                    }
                    q.want = self.last_batch;
                    q = self
                        .shared
                        .wake
                        .wait_timeout(q, until - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                _ if has_work => break,
                _ => {
                    q.want = 1;
                    q = self.shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
        q.want = usize::MAX;
        if self.broken {
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
        Some((
            std::mem::take(&mut q.entries),
            std::mem::take(&mut q.cleanup),
        ))
    }

    /// The batch is durable: publish it, and forget instances with nothing newer queued.
    fn settle(&self, entries: &[Entry], max: u64) {
        {
            let mut q = self.shared.lock();
            for e in entries {
                if q.latest.get(&e.who) == Some(&e.index) {
                    q.latest.remove(&e.who);
                }
            }
        }
        self.shared
            .progress
            .send_modify(|p| p.settled = p.settled.max(max));
    }

    /// Rolls back what failed (with everything queued behind it), queues
    /// again what must still reach the disk, and fails the waiting requests.
    fn fail(&mut self, mut failed: Vec<Entry>, mut cleanup: Vec<u64>, error: &StoreError) {
        {
            let mut q = self.shared.lock();
            failed.append(&mut q.entries);
            cleanup.append(&mut q.cleanup);
        }
        let max = failed.iter().map(|e| e.index).max().unwrap_or(0);
        // Per instance, its failed changes in order.
        let mut order: Vec<Who> = Vec::new();
        let mut by_who: HashMap<Who, Vec<Entry>> = HashMap::new();
        for e in failed {
            // Whether the failed batch reached the disk is unknown: what it
            // put and what it deleted are both stale now (the instance ends
            // up with a new value, a newer change, or a re-queued one, whose
            // put is kept below), so all of it is deleted.
            cleanup.extend(e.put.as_ref().map(|p| p.index));
            cleanup.extend(e.delete);
            by_who
                .entry(e.who.clone())
                .or_insert_with(|| {
                    order.push(e.who.clone());
                    Vec::new()
                })
                .push(e);
        }
        let mut reverts = Vec::new();
        let mut expected: HashMap<Who, u64> = HashMap::new();
        let mut requeue = Vec::new();
        for who in order {
            let changes = &by_who[&who];
            let last = changes.last().expect("at least one change");
            if !last.revertible {
                // Memory is right (expiry, or an earlier roll-back): write it again.
                requeue.push(last.clone());
                continue;
            }
            // Back to before the trailing run of API changes.
            let first = changes
                .iter()
                .rev()
                .take_while(|e| e.revertible)
                .last()
                .expect("the last change is revertible");
            expected.insert(who.clone(), last.index);
            reverts.push(Revert {
                key: who.0.clone(),
                id: who.1.clone(),
                to: first.previous.clone(),
            });
        }
        {
            let mut q = self.shared.lock();
            // Only if nothing newer of the instance came in meanwhile.
            requeue.retain(|e| q.latest.get(&e.who) == Some(&e.index));
            let kept: HashSet<u64> = requeue
                .iter()
                .filter_map(|e| e.put.as_ref().map(|p| p.index))
                .collect();
            cleanup.retain(|i| !kept.contains(i));
            let mut entries = requeue;
            entries.append(&mut q.entries);
            q.entries = entries;
            q.cleanup.append(&mut cleanup);
        }
        let shared = self.shared.clone();
        let still_current = |key: &ServiceKey, id: &InstanceId| {
            let who = (key.clone(), id.clone());
            let q = shared.lock();
            q.latest.contains_key(&who) && q.latest.get(&who) == expected.get(&who)
        };
        let undone = self.registry.revert(reverts, &still_current);
        {
            // Instances whose failed change is still their latest and was
            // not undone (nothing to undo) have nothing in flight any more.
            let mut q = self.shared.lock();
            for (who, index) in &expected {
                if q.latest.get(who) == Some(index) {
                    q.latest.remove(who);
                }
            }
        }
        let why: Arc<str> = Arc::from(format!("the change could not be saved: {error}"));
        tracing::warn!(
            undone,
            up_to = max,
            "changes rolled back after a store failure"
        );
        self.shared.progress.send_modify(|p| {
            let lo = p.settled + 1;
            if max >= lo {
                p.failed.push_back((lo, max, why));
                if p.failed.len() > FAILURES_KEPT
                    && let Some((_, hi, _)) = p.failed.pop_front()
                {
                    p.forgotten_to = hi;
                }
            }
            p.settled = p.settled.max(max);
        });
        // Wake the writer for the re-queued work (after its backoff).
        self.shared.wake.notify_one();
    }
}

/// The store operations for a batch: stale records first, then each
/// change's delete and put, in index order.
fn build(entries: &[Entry], cleanup: &[u64], last_index: u64) -> WriteBatch {
    let mut ops = Vec::with_capacity(cleanup.len() + entries.len() * 2);
    ops.extend(cleanup.iter().map(|i| Op::Delete(*i)));
    for e in entries {
        if let Some(i) = e.delete {
            ops.push(Op::Delete(i));
        }
        if let Some(inst) = &e.put {
            ops.push(Op::Put(inst.index, codec::encode(inst)));
        }
    }
    WriteBatch {
        ops,
        clear: false,
        last_index,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::{Address, Datacenter, Health, InstanceSpec, RegistryConfig, ServiceName};
    use crate::store::MemoryStore;

    fn registry() -> Registry {
        Registry::new(
            RegistryConfig {
                local_dc: Datacenter::new("dc1").unwrap(),
                reap_after: Duration::from_secs(60),
            },
            std::time::Instant::now(),
        )
    }

    fn key() -> ServiceKey {
        ServiceKey::new(
            Datacenter::new("dc1").unwrap(),
            ServiceName::new("pay").unwrap(),
        )
    }

    fn id(s: &str) -> InstanceId {
        InstanceId::new(s).unwrap()
    }

    fn spec(port: u16) -> InstanceSpec {
        InstanceSpec::new(Address::parse("10.0.0.1").unwrap(), port)
    }

    fn start(store: &MemoryStore) -> (Registry, Journal) {
        let r = registry();
        let (j, _) =
            Journal::start(Box::new(store.clone()), &r, std::time::Instant::now()).unwrap();
        (r, j)
    }

    async fn register(r: &Registry, j: &Journal, name: &str, port: u16) -> Result<u64, Arc<str>> {
        let inst = r
            .register(key(), id(name), spec(port), std::time::Instant::now())
            .unwrap();
        j.durable().wait(inst.index).await.map(|()| inst.index)
    }

    /// Instances the store holds: (id, port, index), by decoding every record.
    fn stored(store: &MemoryStore) -> Vec<(String, u16, u64)> {
        let mut d = Decoder::default();
        store
            .records()
            .iter()
            .map(|(i, v)| {
                let r = d.decode(*i, v).unwrap();
                (r.id.to_string(), r.spec.port, r.index)
            })
            .collect()
    }

    fn port_of(r: &Registry, name: &str) -> Option<u16> {
        r.service(&key())
            .and_then(|s| s.instances.get(&id(name)).map(|i| i.port))
    }

    /// Waits for the writer to settle everything the registry has done.
    async fn quiet(r: &Registry, j: &Journal) {
        let _ = j.durable().wait(r.index()).await;
    }

    #[tokio::test]
    async fn acknowledged_changes_are_stored_under_their_index_and_replaced_values_deleted() {
        let store = MemoryStore::new();
        let (r, j) = start(&store);
        let a1 = register(&r, &j, "a", 80).await.unwrap();
        assert_eq!(stored(&store), [("a".into(), 80, a1)]);
        let a2 = register(&r, &j, "a", 81).await.unwrap();
        register(&r, &j, "b", 90).await.unwrap();
        assert_eq!(
            stored(&store)[0],
            ("a".into(), 81, a2),
            "the old value is gone"
        );
        let del = r.deregister(&key(), &id("b")).unwrap();
        j.durable().wait(del).await.unwrap();
        assert_eq!(stored(&store), [("a".into(), 81, a2)]);

        // A restart loads it back with its index, and indexes go on from the last.
        drop(j);
        let (r2, _j2) = start(&store);
        assert_eq!(port_of(&r2, "a"), Some(81));
        assert_eq!(r2.service(&key()).unwrap().instances[&id("a")].index, a2);
        assert_eq!(r2.index(), del, "the deregistration's index is not reused");
    }

    #[tokio::test]
    async fn a_failed_registration_is_rolled_back_and_answered_with_the_reason() {
        for land in [false, true] {
            let store = MemoryStore::new();
            let (r, j) = start(&store);
            let kept = register(&r, &j, "a", 80).await.unwrap();
            store.fail_next(1, land);
            let err = register(&r, &j, "b", 90).await.unwrap_err();
            assert!(err.contains("Input/output error"), "{err}");
            assert_eq!(port_of(&r, "b"), None, "rolled back from the registry");
            // The store is reopened and goes on.
            register(&r, &j, "c", 70).await.unwrap();
            quiet(&r, &j).await;
            assert!(store.reopens() >= 1);
            let ids: Vec<_> = stored(&store).into_iter().map(|s| s.0).collect();
            assert_eq!(ids, ["a", "c"], "land={land}: b never stays on disk");
            assert_eq!(stored(&store)[0].2, kept);
        }
    }

    #[tokio::test]
    async fn a_failed_replacement_or_removal_restores_the_durable_value() {
        for land in [false, true] {
            let store = MemoryStore::new();
            let (r, j) = start(&store);
            register(&r, &j, "a", 80).await.unwrap();
            store.fail_next(1, land);
            register(&r, &j, "a", 81).await.unwrap_err();
            assert_eq!(port_of(&r, "a"), Some(80));
            quiet(&r, &j).await;
            assert_eq!(
                stored(&store)
                    .iter()
                    .map(|s| (s.0.as_str(), s.1))
                    .collect::<Vec<_>>(),
                [("a", 80)],
                "land={land}"
            );

            store.fail_next(1, land);
            let del = r.deregister(&key(), &id("a")).unwrap();
            j.durable().wait(del).await.unwrap_err();
            assert_eq!(port_of(&r, "a"), Some(80), "the removal was undone");
            quiet(&r, &j).await;
            let now = stored(&store);
            assert_eq!(now.len(), 1, "land={land}: {now:?}");
            assert_eq!(
                now[0].2,
                r.service(&key()).unwrap().instances[&id("a")].index,
                "the store holds the registry's value"
            );
        }
    }

    #[tokio::test]
    async fn concurrent_writes_share_commits_and_all_become_durable() {
        let store = MemoryStore::new();
        let (r, j) = start(&store);
        let j = Arc::new(j);
        let mut tasks = Vec::new();
        for n in 0..200u16 {
            let (r, j) = (r.clone(), j.clone());
            tasks.push(tokio::spawn(async move {
                register(&r, &j, &format!("i{n}"), 1000 + n).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(stored(&store).len(), 200);
        assert!(store.commits() <= 200);
    }

    #[tokio::test]
    async fn expiry_changes_are_written_again_after_a_failure_not_undone() {
        let store = MemoryStore::new();
        let (r, j) = start(&store);
        let t0 = std::time::Instant::now();
        let mut s = spec(80);
        s.ttl = Duration::from_secs(1);
        let inst = r.register(key(), id("a"), s, t0).unwrap();
        j.durable().wait(inst.index).await.unwrap();
        store.fail_next(1, false);
        assert_eq!(r.expire(t0 + Duration::from_secs(2)), 1);
        let critical = r.index();
        let _ = j.durable().wait(critical).await;
        // Memory keeps the truth; the writer retries after its backoff.
        let snap = r.service(&key()).unwrap();
        assert_eq!(snap.instances[&id("a")].health, Health::Critical);
        for _ in 0..100 {
            if store.records().contains_key(&critical) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(stored(&store), [("a".into(), 80, critical)]);
    }

    #[tokio::test]
    async fn older_values_left_by_a_failure_lose_to_the_newer_at_start_up() {
        let store = MemoryStore::new();
        let (r, j) = start(&store);
        register(&r, &j, "a", 80).await.unwrap();
        let newer = register(&r, &j, "a", 81).await.unwrap();
        drop(j);
        // Put the old value back, as a failed batch that landed could leave it.
        let old = codec::encode(&r.service(&key()).unwrap().instances[&id("a")]);
        let mut raw = store.clone();
        raw.commit(&WriteBatch {
            ops: vec![Op::Put(1, old.clone())],
            clear: false,
            last_index: 0,
        })
        .unwrap();
        let (r2, j2) = start(&store);
        assert_eq!(r2.service(&key()).unwrap().instances[&id("a")].index, newer);
        quiet(&r2, &j2).await;
        for _ in 0..100 {
            if !store.records().contains_key(&1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(store.records().keys().copied().collect::<Vec<_>>(), [newer]);
    }
}
