//! Start-up: reading what the store holds back into the registry, with
//! reading and decoding on a helper thread beside the restore.

use std::time::{Duration, Instant};

use super::super::codec::{Decoded, Decoder};
use super::super::{Store, StoreError};
use super::LOAD_CHUNK;
use crate::core::{MAX_INDEX, Registry, Restored};

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

/// Loads what `store` holds into `registry`. Returns the report and the
/// indexes of older values that lost to newer ones (records to delete).
pub(super) fn load(
    store: &mut Box<dyn Store>,
    registry: &Registry,
    now: std::time::Instant,
) -> Result<(LoadReport, Vec<u64>), StoreError> {
    let started = Instant::now();
    let mut restorer = registry.restorer(now);
    // Reading and decoding (this thread's helper) overlaps with building
    // the instances (this thread): start-up is I/O- and CPU-bound alike.
    let mut acl = Vec::new();
    let (last_index, corrupt) = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Restored>>(8);
        let acl = &mut acl;
        let store = &mut *store;
        let reader = scope.spawn(move || {
                let mut decoder = Decoder::default();
                let mut corrupt = 0usize;
                let mut chunk = Vec::with_capacity(LOAD_CHUNK);
                let last = store.load(&mut |index, bytes| match decoder.decode_any(index, bytes) {
                    Ok(Decoded::Acl(o)) => acl.push(o),
                    Ok(Decoded::Instance(r)) => {
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
    // An index beyond what Maxine accepts is damage (records with one were
    // skipped above): go on after the highest valid record instead, so
    // that no key of a live value is ever given out again.
    let last_index = if last_index > MAX_INDEX {
        tracing::error!(
            store = %store.describe(), index = last_index, max = MAX_INDEX,
            "the store's change index is beyond the largest Maxine accepts: it is damaged; \
             going on after the highest valid record"
        );
        0
    } else {
        last_index
    };
    // Tokens and policies first: nothing is served before both are in.
    let acl_superseded = registry.restore_acl(acl);
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
    let mut superseded = restored.superseded;
    superseded.extend(acl_superseded);
    Ok((report, superseded))
}
