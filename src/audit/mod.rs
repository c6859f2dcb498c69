//! The audit log: every mutation and every refused request, in files an
//! operator can check for tampering.
//!
//! ```text
//!   callers: append(records) ──┐            deny(record) ── bounded queue
//!   (after a change is applied)│                                │ (never waits on I/O;
//!                              v                                │  overflow is counted)
//!                      one writer (mutex): queued denials first, then the records
//!                              │ encode: seq, time, ..., prev = SHA-256(line before)
//!                              v
//!   <dir>/audit-000001.jsonl  audit-000002.jsonl  ...  rotated by size; the chain
//!                              │                        crosses files; fsync, then Ok
//!                              v
//!                    read(dir, since, limit)   verify(dir) -> first broken record
//! ```
//!
//! Each line is one JSON record: `seq` (1, 2, 3… across files), `time`
//! (RFC 3339 UTC, milliseconds) and `time_ms`, `index`, `actor`, `client`,
//! `action`, `resource`, `outcome`, `detail`, `coalesced` (only on a record
//! standing for denials that were not recorded one by one), and `prev`: the
//! hex SHA-256 of the previous line's bytes without its newline, 64 zeros
//! for the first record. Changing, removing, adding or reordering a record,
//! or removing a file, breaks the chain at the next record [`verify`] reads.
//!
//! Owns: the [`Record`] callers hand in, the [`AuditLog`] writer (open,
//! append, deny, flush), the line format and file names, and the offline
//! readers [`read`] and [`verify`]. Callers format what a record says and
//! keep secrets out of it; time comes in with each record.
//!
//! Must not import: core, http, dns, store, events, config, app. It knows
//! files, not requests or the registry.

mod check;
mod line;
mod writer;

use std::collections::VecDeque;
use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use check::{Break, Broken, VerifyError, VerifyReport, read, verify};
pub use line::MAX_DETAIL_BYTES;

use writer::{Entry, Writer};

/// Denials held for the next write, at most; more are counted, not kept.
pub const DENY_QUEUE: usize = 10_000;

/// The file in the audit directory that one open [`AuditLog`] holds
/// locked, so that two writers never interleave their chains.
pub const LOCK_FILE: &str = "audit.lock";

/// One audited event, as a caller describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// When it happened, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The change index of a mutation; None for a denial.
    pub index: Option<u64>,
    /// Who: `token:<accessor>`, `jwt:<subject>`, `user:<name>`,
    /// `anonymous` or `system`.
    pub actor: String,
    /// The client's IP address, when there is a client.
    pub client: Option<String>,
    /// What was done: `register`, `deregister`, `policy.put`,
    /// `token.create`, `denied`, ...
    pub action: String,
    /// What it was done to: `service:payments/instance:web-1`,
    /// `policy:ops`, `token:<accessor>`, ...
    pub resource: String,
    /// How it ended: `ok`, `rolled_back`, `unauthenticated`, `forbidden`, ...
    pub outcome: String,
    /// More, such as why a request was refused. Kept to
    /// [`MAX_DETAIL_BYTES`] (cut on a char boundary).
    pub detail: Option<String>,
}

/// Why the audit log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The audit directory cannot be created or locked.
    #[error("cannot use the audit directory {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another open audit log (in this process or another) writes there.
    #[error("the audit directory {} is in use by another Maxine", path.display())]
    Locked { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Nothing of the batch was kept.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The end of the log is damaged beyond an interrupted write; it is
    /// left as it is for an operator.
    #[error("{} at byte {offset}: {why}", path.display())]
    Damaged {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    /// A line that [`read`] cannot parse.
    #[error("{} line {line}: {why}", path.display())]
    Unparseable {
        path: PathBuf,
        line: u64,
        why: String,
    },
}

/// The writer of one audit directory. A clone is another handle to the same
/// log (an `Arc` increment); all clones share one writer and one queue.
///
/// [`append`](Self::append) and [`flush`](Self::flush) block on file I/O
/// and fsync: call them from a blocking thread. [`deny`](Self::deny) only
/// takes a short lock and never waits for I/O.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    writer: Mutex<Writer>,
    denials: Mutex<Denials>,
    /// Held locked while the log is open.
    _lock: File,
}

/// Denials waiting for the next write.
struct Denials {
    queue: VecDeque<Record>,
    capacity: usize,
    /// Denials that found the queue full since the last write.
    coalesced: u64,
    /// The latest time among those.
    coalesced_ms: u64,
}

impl Denials {
    fn push(&mut self, record: Record) {
        if self.queue.len() < self.capacity {
            self.queue.push_back(record);
        } else {
            self.count(record.time_ms, 1);
        }
    }

    fn count(&mut self, time_ms: u64, n: u64) {
        self.coalesced += n;
        self.coalesced_ms = self.coalesced_ms.max(time_ms);
    }

    /// Everything queued, as entries to write: the denials in order, then
    /// one record for those that were only counted.
    fn take(&mut self) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .queue
            .drain(..)
            .map(|record| Entry {
                record,
                coalesced: None,
            })
            .collect();
        if self.coalesced > 0 {
            let n = std::mem::take(&mut self.coalesced);
            out.push(Entry {
                record: Record {
                    time_ms: std::mem::take(&mut self.coalesced_ms),
                    index: None,
                    actor: "system".into(),
                    client: None,
                    action: "denied".into(),
                    resource: "audit".into(),
                    outcome: "coalesced".into(),
                    detail: Some(format!(
                        "{n} denials were not recorded one by one: {} were already waiting to be written",
                        self.capacity
                    )),
                },
                coalesced: Some(n),
            });
        }
        out
    }

    /// Puts back what [`take`](Self::take) returned when writing it failed,
    /// ahead of what came in since; beyond the capacity, the newest are
    /// counted instead.
    fn put_back(&mut self, entries: Vec<Entry>) {
        for e in entries.into_iter().rev() {
            match e.coalesced {
                Some(n) => self.count(e.record.time_ms, n),
                None => self.queue.push_front(e.record),
            }
        }
        while self.queue.len() > self.capacity {
            if let Some(r) = self.queue.pop_back() {
                self.count(r.time_ms, 1);
            }
        }
    }
}

impl AuditLog {
    /// Opens (creating it, mode 0700) the audit directory `dir` and picks up
    /// the chain from its last record. A file is rotated when the next line
    /// would take it past `max_file_bytes` (a file always takes at least
    /// one record). An unfinished last line, left by a crash mid-write and
    /// never acknowledged, is cut away with a warning.
    pub fn open(dir: &Path, max_file_bytes: u64) -> Result<AuditLog, AuditError> {
        Self::open_with_queue(dir, max_file_bytes, DENY_QUEUE)
    }

    /// [`open`](Self::open) with room for `deny_queue` denials between writes.
    pub fn open_with_queue(
        dir: &Path,
        max_file_bytes: u64,
        deny_queue: usize,
    ) -> Result<AuditLog, AuditError> {
        let dir_err = |source| AuditError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        if !dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(dir_err)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                writer::sync_dir(parent)?;
            }
        }
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))
            .map_err(dir_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(AuditError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(dir_err(e)),
        }
        let writer = Writer::load(dir, max_file_bytes)?;
        Ok(AuditLog {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                writer: Mutex::new(writer),
                denials: Mutex::new(Denials {
                    queue: VecDeque::new(),
                    capacity: deny_queue,
                    coalesced: 0,
                    coalesced_ms: 0,
                }),
                _lock: lock,
            }),
        })
    }

    /// Writes the records, then fsyncs: when this returns Ok they are on
    /// stable storage. Queued denials are written first, so the chain has
    /// one order. On Err none of them was written (the denials stay queued).
    pub fn append(&self, records: Vec<Record>) -> Result<(), AuditError> {
        let mut writer = self.writer();
        let mut entries = self.denials().take();
        let denied = entries.len();
        entries.extend(records.into_iter().map(|record| Entry {
            record,
            coalesced: None,
        }));
        let result = writer.append(&entries);
        if result.is_err() {
            entries.truncate(denied);
            self.denials().put_back(entries);
        }
        result
    }

    /// Queues a 401 or 403 for the next [`append`](Self::append) or
    /// [`flush`](Self::flush). When the queue is full the denial is only
    /// counted, and one record (`"coalesced": N`) later says how many were
    /// not recorded one by one. Never waits for I/O.
    pub fn deny(&self, record: Record) {
        self.denials().push(record);
    }

    /// Writes the queued denials and fsyncs. The server calls this about
    /// once a second; with nothing queued it does nothing.
    pub fn flush(&self) -> Result<(), AuditError> {
        self.append(Vec::new())
    }

    /// The audit directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // A panic while writing leaves the writer's state in doubt: reload
        // it from the files, which is what a restart would do.
        self.inner.writer.lock().unwrap_or_else(|poisoned| {
            self.inner.writer.clear_poison();
            let mut w = poisoned.into_inner();
            w.mark_stale();
            w
        })
    }

    fn denials(&self) -> MutexGuard<'_, Denials> {
        // Plain data, consistent after every statement.
        self.inner
            .denials
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests;
