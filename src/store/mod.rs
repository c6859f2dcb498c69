//! The log and persistence: writers propose changes to a [`Log`], which
//! orders them and makes them durable before they are acknowledged; the
//! registry is loaded back at start-up.
//!
//! ```text
//!   HTTP --propose--> LocalLog --Registry::apply_next--> (DNS cache, feed)
//!   Registry (write lock) --Observer::applied--> Journal queue (cheap push, index order)
//!                                                    |
//!                                   writer thread: take all queued, encode,
//!                                   one Store::commit (one fsync) per batch
//!                                                    |
//!             HTTP handlers <--- Durable (watch: settled index, failed ranges)
//!   on failure: Registry::revert, waiters get 503, store reopened
//! ```
//!
//! Owns: the [`Log`] trait, the single-node [`LocalLog`] and the etcd log
//! ([`EtcdLog`]: several nodes sharing one registry in an etcd cluster,
//! durable first and applied from its watch; see [`etcd`]), the [`Store`]
//! trait and its backends ([`FileStore`]: redb in the
//! data directory, the default; [`RedisStore`]; [`MemoryStore`] for tests),
//! the record encoding
//! ([`codec`]), the journal that batches changes (group commit) and the
//! snapshot file format ([`snapshot`]), and the salvage of a damaged file
//! (`salvage`, reported as a [`Recovery`]).
//!
//! Records are keyed by [`record_key`], the index of the change that produced them: an
//! instance's current value lives at its `index`, and a change deletes the
//! key of the value it replaced. New registrations are therefore appends
//! (cheap in a B-tree), and at start-up the highest index of an instance wins
//! should a failed write have left an older value behind.
//!
//! Must not import: dns, http, config (app hands over what is needed).

mod autosnap;
pub mod codec;
pub mod etcd;
mod file;
mod journal;
mod log;
mod memory;
mod recovery;
mod redis;
mod salvage;
pub mod snapshot;

pub use autosnap::AutoSnapshot;
pub use etcd::{EtcdLog, EtcdSettings};
pub use file::FileStore;
pub use journal::{Durable, Journal, LoadReport};
pub use log::{LocalLog, Log, LogError, NotSaved, Proposal};
pub use memory::MemoryStore;
pub use recovery::{Recovery, RecoveryNotice, SnapshotUse};
pub use redis::RedisStore;

/// The key under which a store keeps an instance's current value: the
/// index of the change that produced it. Every value gets a fresh index
/// from the log it was applied from, so keys are never reused, and new
/// registrations append at the right edge of the file store's B-tree
/// (ADR 0003). This is the store's choice, made here only: a store keyed by
/// path (etcd) ignores it, and the registry's own use of the index (order,
/// blocking reads) does not depend on it.
pub fn record_key(inst: &crate::core::Instance) -> u64 {
    inst.index
}

/// Largest record a store accepts. An instance within the core's limits
/// (64 metadata entries of 640 bytes, 32 tags, the compatible API's names)
/// stays far below it; a key/value entry holds a value of up to 512 KiB
/// plus its key; the bound keeps one record from stalling a batch.
pub const MAX_VALUE_BYTES: usize = crate::core::kv::MAX_VALUE_BYTES + 64 * 1024;

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Stores `value` at `index` (replacing what was there).
    Put(u64, Vec<u8>),
    /// Removes the record at `index`, if any.
    Delete(u64),
}

/// Operations that become durable together, or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Applied in order.
    pub ops: Vec<Op>,
    /// Remove every record before applying `ops` (snapshot restore).
    pub clear: bool,
    /// The registry's change index after this batch; the store keeps the
    /// highest it was given, so indexes continue from there after a restart.
    pub last_index: u64,
}

impl WriteBatch {
    /// Refuses records larger than [`MAX_VALUE_BYTES`], naming the first.
    pub fn check(&self) -> Result<(), StoreError> {
        for op in &self.ops {
            if let Op::Put(index, v) = op
                && v.len() > MAX_VALUE_BYTES
            {
                return Err(StoreError::TooLarge {
                    index: *index,
                    size: v.len(),
                    limit: MAX_VALUE_BYTES,
                });
            }
        }
        Ok(())
    }
}

/// A durable key-value log of records keyed by change index. One writer
/// (the journal's thread) owns it, so methods take `&mut self`.
pub trait Store: Send {
    /// Where the data lives, for logs: a path or a URL without password.
    fn describe(&self) -> String;

    /// Calls `f(index, record)` for every stored record, in no particular
    /// order, and returns the highest change index stored.
    fn load(&mut self, f: &mut dyn FnMut(u64, &[u8])) -> Result<u64, StoreError>;

    /// Applies `batch` atomically; when this returns `Ok`, the batch is on
    /// stable storage. After an error nothing is assumed about the batch,
    /// and the caller must [`Store::reopen`] before the next commit.
    fn commit(&mut self, batch: &WriteBatch) -> Result<(), StoreError>;

    /// Drops the open file or connection and opens it again. After a failed
    /// fsync the kernel may have dropped the dirty pages and cleared the
    /// error, so a retry on the same descriptor could "succeed" without the
    /// data; a fresh open reads what is really on disk.
    fn reopen(&mut self) -> Result<(), StoreError>;
}

/// Why the store could not do what was asked. Messages are shown to API
/// users in 503 answers and to operators in logs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("record {index} is {size} bytes, more than the store's limit of {limit} bytes")]
    TooLarge {
        index: u64,
        size: usize,
        limit: usize,
    },
    #[error("{0}")]
    Io(String),
    #[error("{0} is in use by another process (is another Maxine running on it?)")]
    Locked(String),
    #[error("{what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("Redis: {0}")]
    Redis(String),
    /// The store lost what it held (a Redis flushed or restarted empty
    /// under a running Maxine). Says nothing of where the store is, so
    /// clients are told it as it is.
    #[error("{0}")]
    Lost(String),
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// Records of a store that opened fine but did not decode (skipped at
/// load, kept in the file) are a degraded start too: reported like a
/// recovery unless one was already reported.
pub fn note_undecodable(notice: &RecoveryNotice, loaded: &LoadReport) {
    if loaded.corrupt == 0 || notice.get().is_some() {
        return;
    }
    let mut r = Recovery {
        at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        damage: format!(
            "{} stored records did not decode and were skipped (they stay in {})",
            loaded.corrupt, loaded.store
        ),
        tree_readable: true,
        from_file: loaded.instances,
        damaged_records: loaded.corrupt,
        records: loaded.instances,
        last_index: loaded.last_index,
        ..Recovery::default()
    };
    r.explain();
    notice.set(r);
}

/// Now, in milliseconds since the Unix epoch: the time of the audit
/// records a store writes with its commits.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
