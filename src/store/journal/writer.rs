//! The writer thread: takes everything queued, commits it as one batch,
//! settles it, and on a failed commit rolls back what it must.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::{NotSaved, Op, Store, StoreError, WriteBatch};
use super::{
    BACKOFF_MAX, BACKOFF_MIN, Entry, FAILURES_KEPT, GROUP_WAIT_MAX, GROUP_WAIT_MIN, Shared, Value,
    Who,
};
use crate::core::{AclKey, AclRevert, InstanceId, Registry, Revert, ServiceKey};
use crate::telemetry::LogEvery;

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) store: Box<dyn Store>,
    /// Where clients' changes are recorded before their batch commits.
    pub(super) audit: Option<crate::audit::AuditLog>,
    pub(super) registry: Registry,
    /// Highest index handed to the store.
    pub(super) last_index: u64,
    /// The last commit failed: reopen before the next.
    pub(super) broken: bool,
    pub(super) backoff: Duration,
    /// Closing with a failing store: the one last try was made.
    pub(super) last_try: bool,
    /// Size and duration of the last successful commit.
    pub(super) last_batch: usize,
    pub(super) last_commit: Duration,
    /// Failed reopens and commits: one line per interval during an outage.
    pub(super) outage_log: LogEvery,
    /// Roll-backs after a failure, likewise.
    pub(super) rollback_log: LogEvery,
    /// Commit time, batch size, failures.
    pub(super) metrics: crate::telemetry::metrics::StoreMetrics,
}

impl Writer {
    pub(super) fn run(&mut self) {
        while let Some((entries, cleanup, passed)) = self.next_batch() {
            if self.broken {
                if let Err(e) = self.store.reopen() {
                    if let Some(more) = self.outage_log.hit(Instant::now()) {
                        tracing::error!(
                            store = %self.store.describe(), error = %e, coalesced = more.0,
                            "cannot reopen the store{more}"
                        );
                    }
                    self.pass_again(passed);
                    self.fail(entries, cleanup, &e);
                    continue;
                }
                let more = self.outage_log.reset();
                self.rollback_log.reset();
                tracing::info!(
                    store = %self.store.describe(), failures_not_logged = more.0,
                    "store reopened"
                );
                self.broken = false;
            }
            let max = entries
                .iter()
                .map(|e| e.index)
                .chain(passed)
                .max()
                .unwrap_or(0);
            self.last_index = self.last_index.max(max);
            // The audit records are written and fsynced beside the commit
            // (on a second thread, so the two fsyncs overlap): a batch is
            // settled only when both are durable, so no change is
            // acknowledged without its record. If either fails, the batch
            // fails (and what it wrote is cleaned up by a later one).
            let audited = audit_records(&entries, "ok");
            let batch = build(&entries, &cleanup, self.last_index);
            let t = Instant::now();
            let store = &mut self.store;
            let audit = self.audit.as_ref().filter(|_| !audited.is_empty());
            let (audit_result, commit_result) = std::thread::scope(|scope| {
                let audit = audit.map(|a| {
                    std::thread::Builder::new()
                        .name("maxine-audit".into())
                        .spawn_scoped(scope, move || a.append(audited).map_err(|e| e.to_string()))
                });
                let committed = store.commit(&batch);
                let audited = match audit {
                    None => Ok(()),
                    Some(Ok(h)) => h
                        .join()
                        .unwrap_or_else(|_| Err("the audit writer panicked".to_string())),
                    Some(Err(e)) => Err(format!("cannot start the audit writer: {e}")),
                };
                (audited, committed)
            });
            let commit_result = match (audit_result, commit_result) {
                (Ok(()), c) => c,
                (Err(e), Ok(())) => {
                    // On disk, but not audited: undone like a failed commit.
                    Err(StoreError::Io(format!(
                        "the audit log cannot be written: {e}"
                    )))
                }
                (Err(_), Err(e)) => Err(e),
            };
            self.metrics
                .committed(entries.len(), t, commit_result.is_ok());
            match commit_result {
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
                    if let Some(more) = self.outage_log.hit(Instant::now()) {
                        tracing::error!(
                            store = %self.store.describe(), error = %e, changes = entries.len(),
                            coalesced = more.0,
                            "writing to the store failed; the changes are rolled back{more}"
                        );
                    }
                    self.broken = true;
                    if let Some(audit) = &self.audit {
                        let undone = audit_records(&entries, "rolled_back");
                        if !undone.is_empty() && audit.append(undone).is_err() {
                            tracing::error!("cannot record rolled-back changes in the audit log");
                        }
                    }
                    self.pass_again(passed);
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
    /// Puts the index of changes with nothing to store back, after a failed
    /// commit: it is recorded with a later one.
    fn pass_again(&self, passed: Option<u64>) {
        if let Some(p) = passed {
            let mut q = self.shared.lock();
            q.passed = Some(q.passed.map_or(p, |o| o.max(p)));
        }
    }

    fn next_batch(&mut self) -> Option<(Vec<Entry>, Vec<u64>, Option<u64>)> {
        let mut q = self.shared.lock();
        let retry_at = self.broken.then(|| Instant::now() + self.backoff);
        let mut fill_until: Option<Instant> = None;
        loop {
            let has_work = q.pending() > 0 || !q.cleanup.is_empty();
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
                _ if has_work && !self.broken && q.pending() < self.last_batch => {
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
            q.passed.take(),
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
            cleanup.extend(e.put.as_ref().map(Value::key));
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
        let mut acl_reverts = Vec::new();
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
            match (&who, first.previous.clone()) {
                (Who::Instance(key, id), to) => reverts.push(Revert {
                    key: key.clone(),
                    id: id.clone(),
                    to: to.map(|v| match v {
                        Value::Instance(i) => i,
                        Value::Acl(_) => unreachable!("an instance's value is an instance"),
                    }),
                }),
                (Who::Acl(key), to) => acl_reverts.push(AclRevert {
                    key: key.clone(),
                    to: to.map(|v| match v {
                        Value::Acl(o) => o,
                        Value::Instance(_) => unreachable!("an object's value is an object"),
                    }),
                }),
            }
        }
        {
            let mut q = self.shared.lock();
            // Only if nothing newer of the instance came in meanwhile.
            requeue.retain(|e| q.latest.get(&e.who) == Some(&e.index));
            let kept: HashSet<u64> = requeue
                .iter()
                .filter_map(|e| e.put.as_ref().map(Value::key))
                .collect();
            cleanup.retain(|i| !kept.contains(i));
            let mut entries = requeue;
            entries.append(&mut q.entries);
            q.entries = entries;
            q.cleanup.append(&mut cleanup);
        }
        let shared = self.shared.clone();
        let current = |who: Who| {
            let q = shared.lock();
            q.latest.contains_key(&who) && q.latest.get(&who) == expected.get(&who)
        };
        let still_current =
            |key: &ServiceKey, id: &InstanceId| current(Who::Instance(key.clone(), id.clone()));
        let mut undone = self.registry.revert(reverts, &still_current);
        let still_current_acl = |key: &AclKey| current(Who::Acl(key.clone()));
        undone += self.registry.revert_acl(acl_reverts, &still_current_acl);
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
        let detail = format!("the change could not be saved: {error}");
        let why = match error {
            StoreError::Lost(public) => NotSaved::store_lost(detail, public.as_str()),
            _ => NotSaved::new(detail),
        };
        if let Some(more) = self.rollback_log.hit(Instant::now()) {
            tracing::warn!(
                undone,
                up_to = max,
                coalesced = more.0,
                "changes rolled back after a store failure{more}"
            );
        }
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

/// The audit records of the changes clients made, and of every change to
/// tokens and policies (also those Maxine makes itself: a management token
/// from the configuration, an undo). Maxine's own expiry of instances is
/// not audited: it follows from the heartbeats that stopped.
fn audit_records(entries: &[Entry], outcome: &str) -> Vec<crate::audit::Record> {
    let time_ms = crate::store::unix_ms();
    entries
        .iter()
        .filter(|e| e.actor != crate::core::Actor::System || matches!(e.who, Who::Acl(_)))
        .map(|e| crate::audit::Record {
            time_ms,
            index: Some(e.index),
            actor: e.actor.name(),
            client: e.actor.client().map(|c| c.to_string()),
            action: e.action.to_string(),
            resource: match &e.who {
                Who::Instance(key, id) => format!(
                    "service:{}/instance:{}@{}",
                    key.service.as_str(),
                    id.as_str(),
                    key.dc.as_str()
                ),
                Who::Acl(key) => key.to_string(),
            },
            outcome: outcome.to_string(),
            detail: None,
        })
        .collect()
}

/// The store operations for a batch: stale records first, then each
/// change's delete and put, in index order.
pub(super) fn build(entries: &[Entry], cleanup: &[u64], last_index: u64) -> WriteBatch {
    let mut ops = Vec::with_capacity(cleanup.len() + entries.len() * 2);
    ops.extend(cleanup.iter().map(|i| Op::Delete(*i)));
    for e in entries {
        if let Some(i) = e.delete {
            ops.push(Op::Delete(i));
        }
        if let Some(v) = &e.put {
            ops.push(Op::Put(v.key(), v.encode()));
        }
    }
    WriteBatch {
        ops,
        clear: false,
        last_index,
    }
}
