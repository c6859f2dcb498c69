//! Replica files: what each peer delivered, in `<data_dir>/federation/
//! <peer>.replica`, in the store's snapshot format (`store::snapshot`:
//! checksummed, instances as store codec records) with the peer's index
//! it was taken at as its `last_index`. Written every
//! `federation.persist_interval` when it changed, and at shutdown; read at
//! start, so that a peer's names answer at once (marked stale until the
//! peer is reached) and its stream resumes from that index.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::Federation;
use crate::core::{Actor, Change, Context, Datacenter, Durability, Origin};
use crate::store::Log;
use crate::store::codec::Decoder;
use crate::store::snapshot;

/// The folder of the replica files in the data directory.
pub const DIR_NAME: &str = "federation";

fn path_of(fed: &Federation, peer: &Datacenter) -> PathBuf {
    fed.inner
        .data_dir
        .join(DIR_NAME)
        .join(format!("{peer}.replica"))
}

/// Loads every peer's replica file, if it has one.
pub(super) async fn load_all(fed: &Federation, log: &dyn Log) {
    for p in fed.inner.config.peers.clone() {
        let path = path_of(fed, &p.name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "replica file not read");
                continue;
            }
        };
        let snap = match snapshot::decode(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "replica file not used");
                continue;
            }
        };
        let mut decoder = Decoder::default();
        let mut changes = Vec::with_capacity(snap.records.len());
        let mut dcs = std::collections::BTreeSet::new();
        for (_, record) in &snap.records {
            let Ok(r) = decoder.decode(0, record) else {
                continue;
            };
            if !fed.may_deliver(&p.name, &r.key.dc) {
                continue;
            }
            dcs.insert(r.key.dc.clone());
            changes.push(Change::Replica {
                key: r.key,
                id: r.id,
                value: Some(Box::new((r.spec, r.health))),
            });
        }
        let count = changes.len();
        let ctx = Context {
            actor: Actor::System,
            origin: Origin::Replicated {
                dc: p.name.clone(),
                index: snap.last_index,
            },
            durability: Durability::Applied,
        };
        for chunk in changes.chunks(4096) {
            if let Err(e) = log.propose(chunk.to_vec(), ctx.clone()).await {
                tracing::warn!(peer = %p.name, error = %e, "replica file not fully loaded");
            }
        }
        fed.update(&p.name, |s| {
            s.applied_index = snap.last_index;
            s.peer_index = snap.last_index;
            s.from_file = true;
            s.stale = true;
        });
        dcs.insert(p.name.clone());
        for dc in &dcs {
            fed.inner.registry.failover().set_stale(dc, true);
        }
        tracing::info!(
            peer = %p.name, instances = count, index = snap.last_index,
            "replica loaded from its file (stale until the peer is reached)"
        );
    }
}

/// Writes every replica that changed since it was last written.
pub(super) fn write_all(fed: &Federation) {
    for p in &fed.inner.config.peers {
        let (dirty, index) = {
            let mut st = fed.state();
            let Some(s) = st.peers.get_mut(&p.name) else {
                continue;
            };
            let was = s.dirty;
            s.dirty = false;
            (was, s.applied_index)
        };
        if !dirty {
            continue;
        }
        let dcs = fed.delivered_by(&p.name);
        let services: Vec<_> = fed
            .inner
            .registry
            .services()
            .into_iter()
            .filter(|s| dcs.contains(&s.key.dc))
            .collect();
        let bytes = snapshot::encode(index, &services, &[]);
        if let Err(e) = write_file(&path_of(fed, &p.name), &bytes) {
            tracing::warn!(peer = %p.name, error = %e, "replica file not written");
            fed.update(&p.name, |s| s.dirty = true);
        }
    }
}

/// Writes `bytes` to `path` whole: a temporary file, synced, renamed.
pub(super) fn write_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("a file in a folder");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("replica.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// Writes the replicas every `persist_interval` when they changed.
pub(super) async fn writer(fed: Federation, stop: CancellationToken) {
    let mut tick = tokio::time::interval(fed.inner.config.persist_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let f = fed.clone();
        let _ = tokio::task::spawn_blocking(move || write_all(&f)).await;
    }
}
