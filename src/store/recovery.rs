//! What start-up recovered from a damaged registry file, kept until an
//! operator acknowledges it (`POST /v1/recovery/ack`), so that `/v1/ready`
//! and `/v1/services` can say the node runs degraded.

use std::sync::{Arc, Mutex};

use serde::Serialize;

/// One recovery of a damaged `registry.redb`: where each record came from
/// and what may be missing.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Recovery {
    /// When it happened, in seconds since the Unix epoch.
    pub at: u64,
    /// What was wrong (redb's error, or the panic it raised).
    pub damage: String,
    /// Where the damaged file was moved (`registry.redb.corrupt-<time>`).
    pub moved_to: String,
    /// Whether the file's B-tree could be opened at all.
    pub tree_readable: bool,
    /// Records read through the B-tree.
    pub from_file: usize,
    /// Records recognised in raw leaf pages of the file (for damaged ranges).
    pub from_pages: usize,
    /// Records taken from the snapshot (for damaged ranges).
    pub from_snapshot: usize,
    /// The snapshot used, if any.
    pub snapshot: Option<SnapshotUse>,
    /// Records that were readable but did not decode.
    pub damaged_records: usize,
    /// Inclusive change-index ranges whose pages could not be read.
    pub unreadable: Vec<(u64, u64)>,
    /// Records written into the fresh `registry.redb`. An older value of an
    /// instance among them loses to its newest at load, and is deleted then.
    pub records: usize,
    pub last_index: u64,
    /// What may be missing, in words.
    pub may_be_missing: String,
}

/// The snapshot a recovery used.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SnapshotUse {
    pub file: String,
    /// The registry's change index when the snapshot was taken.
    pub index: u64,
    /// Records taken from it.
    pub records: usize,
}

impl Recovery {
    /// Fills in `may_be_missing` from the counts.
    pub(crate) fn explain(&mut self) {
        let after = self.snapshot.as_ref().map_or(0, |s| s.index);
        let damaged = !self.unreadable.is_empty() || self.damaged_records > 0;
        self.may_be_missing = match (&self.snapshot, damaged) {
            (_, false) => "nothing: every record was read from the file".into(),
            (Some(s), true) => format!(
                "changes after index {after} (the snapshot {}) whose pages are damaged; \
                 deregistrations after index {after} in damaged pages may have come back",
                s.file
            ),
            (None, true) => "records in damaged pages (there was no snapshot to fill them \
                 from); deregistered instances whose old pages were still readable may have come back"
                .into(),
        };
    }
}

/// The recovery of this start, shared between the store (which sets it)
/// and the API (which shows and acknowledges it). Cloning copies an `Arc`.
#[derive(Clone, Debug, Default)]
pub struct RecoveryNotice(Arc<Mutex<Option<Arc<Recovery>>>>);

impl RecoveryNotice {
    pub fn set(&self, r: Recovery) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(r));
    }

    /// The unacknowledged recovery, if any.
    pub fn get(&self) -> Option<Arc<Recovery>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Clears it; returns what was cleared.
    pub fn acknowledge(&self) -> Option<Arc<Recovery>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}
