//! Following the cluster: load, watch, apply, catch up, and the local state.
//!
//! - **Start-up.** The node restores its local snapshot
//!   (`<data_dir>/etcd/registry.snapshot`, the snapshot file format of
//!   [`crate::store::snapshot`], taken at the revision it had applied), so
//!   DNS answers at once (decoding on a helper thread beside the
//!   restore); then it watches `<prefix>/r/` from the revision after it.
//!   Without a local snapshot it reads the whole range at one revision, in
//!   reads of about a page each ([`super::span`]: each read ends where its
//!   keys should, as etcd counts every key up to a read's range end), each
//!   page decoded on a blocking thread and handed to the restore while the
//!   next one is read, and watches from there.
//! - **Caught up** (`/v1/ready`): once the watch has applied the revision
//!   etcd had when it started, or nothing came for half a second.
//! - **Apply from the watch.** Events of one revision are applied together
//!   with [`Registry::apply_mirrored`] at that revision; the proposers on
//!   this node wait for it.
//! - **Catch-up.** A broken watch resumes from the last applied revision.
//!   When etcd has compacted past it, the node reads the range again at one
//!   revision and applies the difference to what it holds.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio_util::sync::CancellationToken;

use super::keys::{Target, range_end};
use super::span::{self, Step};
use super::{ClusterState, EtcdLog};
use crate::core::{
    AclKey, AclObject, InstanceId, Mirrored, Registry, Restored, Restorer, ServiceKey,
};
use crate::store::codec::{Decoded, Decoder};
use crate::store::snapshot;

/// Keys per read of a range load.
const PAGE: i64 = 5_000;
/// Instances per hand-over from decoding to the restore.
const CHUNK: usize = 4096;
/// The local snapshot's name in the state directory.
const FILE: &str = "registry.snapshot";
/// How often the local snapshot is written when something changed.
const PERSIST_EVERY: Duration = Duration::from_secs(15);

/// Restores the local snapshot into `registry`; returns its revision (0:
/// none, or unreadable, then the node loads from etcd).
pub fn restore_local(registry: &Registry, dir: &Path) -> anyhow::Result<u64> {
    let started = std::time::Instant::now();
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    };
    let snap = match snapshot::decode(&bytes) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e,
                "the local etcd snapshot is unreadable: loading everything from etcd");
            return Ok(0);
        }
    };
    // Decoding (a helper thread) overlaps with building the instances
    // (this one), as the file store's start-up does.
    let mut restorer = registry.restorer(tokio::time::Instant::now().into_std());
    let mut acl = Vec::new();
    let mut n = 0usize;
    let decoded = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Restored>>(8);
        let records = &snap.records;
        let acl = &mut acl;
        let decoding = scope.spawn(move || {
            let mut decoder = Decoder::default();
            let mut chunk = Vec::with_capacity(CHUNK);
            for (index, record) in records {
                match decoder.decode_any(*index, record) {
                    Ok(Decoded::Instance(r)) => {
                        chunk.push(r);
                        if chunk.len() == CHUNK {
                            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                            if tx.send(full).is_err() {
                                return Ok(());
                            }
                        }
                    }
                    Ok(Decoded::Acl(o)) => acl.push(o),
                    Err(e) => return Err(e),
                }
            }
            let _ = tx.send(chunk);
            Ok(())
        });
        let mut added = Ok(());
        for chunk in rx {
            for r in chunk {
                n += 1;
                if let Err(e) = restorer.add(r) {
                    added = Err(e);
                }
            }
            if added.is_err() {
                break;
            }
        }
        let decoded = decoding.join().unwrap_or_else(|_| {
            Err(crate::store::codec::DecodeError::Format(
                "decoding panicked".into(),
            ))
        });
        (decoded, added)
    });
    match decoded {
        (Err(e), _) => {
            tracing::warn!(path = %path.display(), error = %e,
                "the local etcd snapshot holds a bad record: loading everything from etcd");
            return Ok(0);
        }
        (Ok(()), added) => added?,
    }
    registry.restore_acl(acl);
    restorer.finish(snap.last_index)?;
    tracing::info!(
        instances = n,
        revision = snap.last_index,
        ms = started.elapsed().as_millis() as u64,
        "restored the local snapshot: answering from it while catching up with etcd"
    );
    Ok(snap.last_index)
}

/// Writes the local snapshot, if the registry moved since the last one.
pub fn persist(log: &EtcdLog) -> anyhow::Result<()> {
    let dir = &log.inner.settings.state_dir;
    let (index, services, acl) = log.inner.registry.backup();
    if index == 0 {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let bytes = snapshot::encode(index, &services, &acl);
    let tmp = dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, dir.join(FILE))?;
    Ok(())
}

/// Writes the local snapshot every few seconds while the registry moves.
pub async fn persist_loop(log: EtcdLog, stop: CancellationToken) {
    let mut last = log.inner.registry.index();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PERSIST_EVERY) => {}
        }
        let now = log.inner.registry.index();
        if now == last {
            continue;
        }
        let l = log.clone();
        match tokio::task::spawn_blocking(move || persist(&l)).await {
            Ok(Ok(())) => last = now,
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the local etcd snapshot"),
            Err(_) => {}
        }
    }
}

/// Loads, watches and applies until `stop`.
pub async fn follow(log: EtcdLog, stop: CancellationToken) {
    let client = tokio::select! {
        _ = stop.cancelled() => return,
        c = log.client() => match c { Some(c) => c, None => return },
    };
    let mut from = *log.inner.applied.borrow();
    let mut reload = from == 0;
    loop {
        if stop.is_cancelled() {
            return;
        }
        if reload {
            log.set_state(ClusterState::CatchingUp);
            let started = std::time::Instant::now();
            match load(&log, &client).await {
                Ok(rev) => {
                    tracing::info!(
                        revision = rev,
                        instances = log
                            .inner
                            .registry
                            .services()
                            .iter()
                            .map(|s| s.instances.len())
                            .sum::<usize>(),
                        ms = started.elapsed().as_millis() as u64,
                        "loaded the registry from etcd"
                    );
                    from = rev;
                    log.inner.applied.send_replace(rev);
                    reload = false;
                }
                Err(e) => {
                    log.set_state(ClusterState::ReadOnly(e.to_string()));
                    tracing::warn!(error = %e, "cannot load the registry from etcd; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            }
        }
        match watch(&log, &client, from, &stop).await {
            Ok(Resume::Stopped) => return,
            Ok(Resume::From(rev)) => from = rev,
            Ok(Resume::Compacted(rev)) => {
                tracing::warn!(
                    applied = rev,
                    "etcd compacted past this node's revision: reloading"
                );
                from = rev;
                reload = true;
            }
            Err((rev, e)) => {
                from = rev;
                tracing::warn!(error = %e, "the etcd watch broke; resuming");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                }
            }
        }
    }
}

enum Resume {
    Stopped,
    /// The stream ended: go on after this revision.
    From(u64),
    /// etcd no longer has the changes after this revision.
    Compacted(u64),
}

/// Watches from `from + 1`, applying what comes, until the stream ends.
async fn watch(
    log: &EtcdLog,
    client: &Client,
    mut from: u64,
    stop: &CancellationToken,
) -> Result<Resume, (u64, etcd_client::Error)> {
    let keys = &log.inner.keys;
    let mut wc = client
        .watch_client()
        .max_decoding_message_size(super::MAX_MESSAGE);
    let opts = WatchOptions::new()
        .with_range(range_end(&keys.data()))
        .with_start_revision(from as i64 + 1)
        .with_progress_notify();
    let mut stream = wc
        .watch(keys.data(), Some(opts))
        .await
        .map_err(|e| (from, e))?;
    let mut decoder = Decoder::default();
    // Caught up once the revision current at the watch's start is applied,
    // or nothing came for a moment. (Not on etcd's progress notification:
    // before 3.4.25 / 3.5.8 a member may send it ahead of events still to
    // come, etcd issue 15220.)
    let mut target = u64::MAX;
    loop {
        let idle = tokio::time::sleep(Duration::from_millis(500));
        let msg = tokio::select! {
            _ = stop.cancelled() => return Ok(Resume::Stopped),
            m = stream.message() => m,
            _ = idle => {
                if target != u64::MAX {
                    log.caught_up();
                }
                continue;
            }
        };
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(Resume::From(from)),
            Err(e) => return Err((from, e)),
        };
        if resp.compact_revision() > 0 {
            return Ok(Resume::Compacted(from));
        }
        if resp.canceled() {
            return Ok(Resume::From(from));
        }
        if resp.created() {
            target = resp.header().map_or(0, |h| h.revision()) as u64;
        }
        // Events come in revision order; one revision's are applied together.
        let mut by_rev: BTreeMap<u64, Vec<Mirrored>> = BTreeMap::new();
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let rev = kv.mod_revision() as u64;
            let item = match ev.event_type() {
                EventType::Put => match decoder.decode_any(rev, kv.value()) {
                    Ok(Decoded::Instance(r)) => Some(Mirrored::Instance {
                        key: r.key.clone(),
                        id: r.id.clone(),
                        value: Some(r),
                    }),
                    Ok(Decoded::Acl(o)) => {
                        let o = created_at(o, kv.create_revision());
                        Some(Mirrored::Acl {
                            key: o.key(),
                            value: Some(o),
                        })
                    }
                    Err(e) => {
                        tracing::warn!(key = %String::from_utf8_lossy(kv.key()), error = %e,
                            "skipping an etcd value that is not a Maxine record");
                        None
                    }
                },
                EventType::Delete => match keys.parse(kv.key()) {
                    Some(Target::Instance(key, id)) => Some(Mirrored::Instance {
                        key,
                        id,
                        value: None,
                    }),
                    Some(Target::Acl(key)) => Some(Mirrored::Acl { key, value: None }),
                    None => None,
                },
            };
            let list = by_rev.entry(rev).or_default();
            list.extend(item);
        }
        let now = tokio::time::Instant::now().into_std();
        for (rev, items) in by_rev {
            if rev > log.inner.registry.index()
                && let Err(e) = log.inner.registry.apply_mirrored(rev, items, now)
            {
                tracing::error!(revision = rev, error = %e, "cannot apply a revision from etcd");
            }
            from = from.max(rev);
            log.inner.applied.send_replace(from);
        }
        if from >= target {
            log.caught_up();
        }
    }
}

/// Reads everything under `<prefix>/r/` at one revision and makes the
/// registry hold it: a plain restore into an empty registry, else the
/// difference as one mirrored revision. Returns the revision.
async fn load(log: &EtcdLog, client: &Client) -> Result<u64, etcd_client::Error> {
    let keys = &log.inner.keys;
    let start = keys.data();
    let end = range_end(&start);
    let kv = client
        .kv_client()
        .max_decoding_message_size(super::MAX_MESSAGE);
    let reg = &log.inner.registry;
    let now = tokio::time::Instant::now().into_std();
    // Into an empty registry the pages go straight into a restore, as they
    // are decoded; else they are collected to apply the difference.
    let mut sink = Pages {
        restorer: (reg.index() == 0).then(|| reg.restorer(now)),
        items: Vec::new(),
        acl: Vec::new(),
        refused: None,
    };
    // Pipelined: while page N is read, the pages before it are decoded on
    // blocking threads and, once decoded, handed to the restore in key
    // order. Each read ends a step beyond its start, about a page's worth
    // of keys (span.rs: etcd counts every key to a read's range end).
    let mut decoding: VecDeque<tokio::task::JoinHandle<Page>> = VecDeque::new();
    let mut revision = 0i64;
    let mut from = start.into_bytes();
    let mut step = None;
    let (mut reads, mut read) = (0usize, 0usize);
    let started = std::time::Instant::now();
    let failed = |e: tokio::task::JoinError| {
        etcd_client::Error::InvalidArgs(format!("reading the registry from etcd failed: {e}"))
    };
    loop {
        let to = step
            .and_then(|s: Step| s.after(&from))
            .filter(|k| *k < end)
            .unwrap_or_else(|| end.clone());
        let opts = GetOptions::new().with_range(to.clone()).with_limit(PAGE);
        let mut kvc = kv.clone();
        let at = from.clone();
        let reading = tokio::spawn(async move {
            if revision == 0 {
                return kvc.get(at, Some(opts)).await;
            }
            // At the first read's revision, any member that has applied it
            // answers the same: member-local (no consensus round per read),
            // and from consensus only if this member is behind it.
            let opts = opts.with_revision(revision);
            match kvc
                .get(at.clone(), Some(opts.clone().with_serializable()))
                .await
            {
                Ok(r) => Ok(r),
                Err(_) => kvc.get(at, Some(opts)).await,
            }
        });
        while decoding.front().is_some_and(|d| d.is_finished()) {
            let page = decoding.pop_front().expect("a finished page");
            sink.take(page.await.map_err(failed)?);
        }
        let mut resp = reading.await.map_err(failed)??;
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        reads += 1;
        let more = resp.more();
        let kvs = resp.take_kvs();
        read += kvs.len();
        step = span::next(
            step,
            kvs.first().map(|kv| kv.key()),
            kvs.last().map(|kv| kv.key()),
            kvs.len(),
            more,
            PAGE as usize,
        );
        let next = match kvs.last() {
            Some(last) if more => {
                let mut k = last.key().to_vec();
                k.push(0);
                Some(k)
            }
            _ if to != end => Some(to),
            _ => None,
        };
        if !kvs.is_empty() {
            decoding.push_back(tokio::task::spawn_blocking(move || decode_page(kvs)));
        }
        match next {
            Some(k) => from = k,
            None => break,
        }
    }
    tracing::debug!(
        keys = read,
        reads,
        revision,
        ms = started.elapsed().as_millis() as u64,
        "read the registry's range from etcd"
    );
    for page in decoding {
        sink.take(page.await.map_err(failed)?);
    }
    let revision = revision as u64;
    let Pages {
        restorer,
        items,
        acl,
        refused,
    } = sink;
    if let Some(e) = refused {
        tracing::error!(error = %e, "a value read from etcd has an impossible revision: skipped");
    }
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "decoded the registry read from etcd"
    );
    if let Some(restorer) = restorer {
        reg.restore_acl(acl);
        if let Err(e) = restorer.finish(revision) {
            tracing::error!(error = %e, "cannot restore the registry read from etcd");
        }
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "restored the registry read from etcd"
        );
        return Ok(revision);
    }
    if revision <= reg.index() {
        return Ok(reg.index());
    }
    // The difference to what this node holds, as one revision.
    let mut diff = Vec::new();
    let mut seen: HashSet<(ServiceKey, InstanceId)> = HashSet::new();
    let current: HashMap<(ServiceKey, InstanceId), u64> = reg
        .services()
        .iter()
        .flat_map(|s| {
            s.instances
                .values()
                .map(|i| ((s.key.clone(), i.id.clone()), i.index))
                .collect::<Vec<_>>()
        })
        .collect();
    for r in items {
        let k = (r.key.clone(), r.id.clone());
        if current.get(&k) != Some(&r.index) {
            diff.push(Mirrored::Instance {
                key: r.key.clone(),
                id: r.id.clone(),
                value: Some(r),
            });
        }
        seen.insert(k);
    }
    for (key, id) in current.into_keys() {
        // Other datacenters' instances here are the federation's replicas,
        // not etcd's.
        if key.dc != *reg.local_dc() {
            continue;
        }
        if !seen.contains(&(key.clone(), id.clone())) {
            diff.push(Mirrored::Instance {
                key,
                id,
                value: None,
            });
        }
    }
    let loaded: HashSet<AclKey> = acl.iter().map(AclObject::key).collect();
    for o in acl {
        if reg.acl_object(&o.key()).map(|c| c.index()) != Some(o.index()) {
            diff.push(Mirrored::Acl {
                key: o.key(),
                value: Some(o),
            });
        }
    }
    for o in reg.acl_objects() {
        if !loaded.contains(&o.key()) && !matches!(o, AclObject::Token(ref t) if t.is_anonymous()) {
            diff.push(Mirrored::Acl {
                key: o.key(),
                value: None,
            });
        }
    }
    if let Err(e) = reg.apply_mirrored(revision, diff, now) {
        tracing::error!(error = %e, "cannot apply the registry read from etcd");
    }
    Ok(revision)
}

/// A decoded page of a range load.
type Page = (Vec<Restored>, Vec<AclObject>);

/// Where the pages of a range load go: a restore, or a list to compare.
struct Pages<'r> {
    restorer: Option<Restorer<'r>>,
    items: Vec<Restored>,
    acl: Vec<AclObject>,
    /// The first value the restore refused (an impossible revision).
    refused: Option<crate::core::RegistryError>,
}

impl Pages<'_> {
    fn take(&mut self, (items, acl): Page) {
        self.acl.extend(acl);
        match &mut self.restorer {
            Some(r) => {
                for item in items {
                    if let Err(e) = r.add(item) {
                        self.refused.get_or_insert(e);
                    }
                }
            }
            None if self.items.is_empty() => self.items = items,
            None => self.items.extend(items),
        }
    }
}

/// Decodes one page of a range load: the instances and access-control
/// objects in it (values that are not Maxine records are skipped).
fn decode_page(kvs: Vec<etcd_client::KeyValue>) -> Page {
    let mut decoder = Decoder::default();
    let mut items = Vec::with_capacity(kvs.len());
    let mut acl = Vec::new();
    for kv in &kvs {
        match decoder.decode_any(kv.mod_revision() as u64, kv.value()) {
            Ok(Decoded::Instance(r)) => items.push(r),
            Ok(Decoded::Acl(o)) => acl.push(created_at(o, kv.create_revision())),
            Err(e) => tracing::warn!(key = %String::from_utf8_lossy(kv.key()), error = %e,
                "skipping an etcd value that is not a Maxine record"),
        }
    }
    (items, acl)
}

/// A key/value entry's `create_index` is the revision that created its key
/// in etcd (the proposer could only guess it).
fn created_at(o: AclObject, create_revision: i64) -> AclObject {
    match o {
        AclObject::Kv(e) if create_revision > 0 && e.create_index != create_revision as u64 => {
            AclObject::Kv(std::sync::Arc::new(crate::core::KvEntry {
                create_index: create_revision as u64,
                ..(*e).clone()
            }))
        }
        o => o,
    }
}
