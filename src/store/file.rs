//! The default store: one redb file, `registry.redb`, in the data directory.
//!
//! redb is a copy-on-write B-tree with checksummed pages and a commit slot
//! that is switched only after the pages it names are written, so a crash
//! (or a torn write) leaves the previous commit in place. Each
//! [`Store::commit`] is one redb write transaction with `Durability::Immediate`:
//! it returns after `fdatasync`. See docs/adr/0003-durable-registry-store.md.
//!
//! Damage that redb cannot repair (a page overwritten or lost, a truncated
//! file, bytes that are not a database) never stops the start: every call
//! into redb is guarded (an error or a panic is damage), and `load` then
//! salvages what the file still holds plus the latest good snapshot
//! ([`super::salvage`]), moves the file aside, writes a fresh one with what
//! was recovered, and reports it ([`RecoveryNotice`]).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::recovery::{Recovery, RecoveryNotice};
use super::{Op, Store, StoreError, WriteBatch, salvage, snapshot};

/// Records by change index.
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
/// `last_index`: the highest change index committed.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LAST_INDEX: &str = "last_index";

/// redb's page cache. Start-up reads the file once and writes are appends,
/// so a small cache does; the OS page cache holds the rest.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

pub struct FileStore {
    path: PathBuf,
    db: Option<Database>,
    /// Why the file could not be opened: salvaged by the next `load`.
    damage: Option<String>,
    notice: RecoveryNotice,
}

impl FileStore {
    pub const FILE_NAME: &'static str = "registry.redb";

    /// Opens (or creates) `registry.redb` in `dir`. A file redb cannot open
    /// is left in place for [`Store::load`] to salvage (see [`super::salvage`]):
    /// damaged data never stops the start. A file in use by another process,
    /// or an I/O error, is an error.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Io(format!(
                "cannot create the data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(Self::FILE_NAME);
        // An empty file would be taken by redb for a new database.
        let empty = std::fs::metadata(&path).is_ok_and(|m| m.len() == 0);
        let (db, damage) = if empty {
            (None, Some("the file is empty".to_string()))
        } else {
            match open_db(&path) {
                Err(StoreError::Corrupt { detail, .. }) => (None, Some(detail)),
                other => (Some(other?), None),
            }
        };
        Ok(Self {
            path,
            db,
            damage,
            notice: RecoveryNotice::default(),
        })
    }

    /// Where a recovery at `load` is reported (for the API); set before `load`.
    pub fn with_notice(mut self, notice: RecoveryNotice) -> Self {
        self.notice = notice;
        self
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db
            .as_ref()
            .ok_or_else(|| StoreError::Io(format!("{} is not open", self.path.display())))
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Reads every record into `f`, in key order; `delivered` is the highest
    /// index handed over. `Err(Some(why))`: the file is damaged.
    fn stream(
        &self,
        f: &mut dyn FnMut(u64, &[u8]),
        delivered: &mut Option<u64>,
    ) -> Result<u64, Option<String>> {
        let db = self
            .db()
            .map_err(|_| Some("the file is not open".to_string()))?;
        let run = catch_unwind(AssertUnwindSafe(|| -> Result<u64, redb::Error> {
            let tx = db.begin_read()?;
            let meta = tx.open_table(META)?;
            let mut last = meta.get(LAST_INDEX)?.map_or(0, |v| v.value());
            let records = tx.open_table(RECORDS)?;
            for row in records.iter()? {
                let (k, v) = row?;
                let index = k.value();
                last = last.max(index);
                f(index, v.value());
                *delivered = Some(index);
            }
            Ok(last)
        }));
        match run {
            Ok(Ok(last)) => Ok(last),
            Ok(Err(redb::Error::Io(e))) if e.kind() != std::io::ErrorKind::InvalidData => {
                tracing::error!(file = %self.path.display(), error = %e, "reading the registry file failed");
                Err(None)
            }
            Ok(Err(e)) => Err(Some(e.to_string())),
            Err(panic) => Err(Some(format!(
                "redb panicked reading it: {}",
                panic_text(&*panic)
            ))),
        }
    }

    /// Salvages what the damaged file still yields (see [`super::salvage`]),
    /// moves it aside, writes a fresh file with what was recovered, and hands
    /// `f` every recovered record above `delivered` (and those filled in
    /// below it).
    fn recover(
        &mut self,
        damage: String,
        delivered: Option<u64>,
        f: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<u64, StoreError> {
        let started = std::time::Instant::now();
        tracing::error!(
            file = %self.path.display(), %damage,
            "the registry file is damaged: salvaging what it still holds"
        );
        let bytes = std::fs::read(&self.path)
            .map_err(|e| io_err(&format!("cannot read {}", self.path.display()), e))?;
        let raw = salvage::scan_pages(&bytes);
        drop(bytes);
        let candidates: Vec<u64> = raw.keys().copied().collect();
        let tree = self
            .db
            .as_ref()
            .map(|db| salvage::read_tree(db, RECORDS, META, LAST_INDEX, &candidates));
        let snapshot = snapshot::latest_good(&self.dir().join(snapshot::DIR_NAME));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aside = self.path.with_extension(format!("redb.corrupt-{now}"));
        let mut report = Recovery {
            at: now,
            damage,
            moved_to: aside.display().to_string(),
            ..Recovery::default()
        };
        let merged = salvage::merge(tree, raw, snapshot, &mut report);
        // Close the damaged file (redb may panic on that too, after a panic
        // inside it), keep it for inspection, start a clean one.
        let damaged = self.db.take();
        let _ = catch_unwind(AssertUnwindSafe(move || drop(damaged)));
        std::fs::rename(&self.path, &aside)
            .map_err(|e| io_err(&format!("cannot move {} aside", self.path.display()), e))?;
        sync_dir(self.dir())?;
        self.db = Some(open_db(&self.path)?);
        // The journal first (it copies what it needs), then the fresh file
        // takes the records themselves: one copy of them at a time.
        for (index, value) in &merged.records {
            if delivered.is_none_or(|d| *index > d) || merged.filled.contains(index) {
                f(*index, value);
            }
        }
        let batch = WriteBatch {
            ops: merged
                .records
                .into_iter()
                .map(|(i, v)| Op::Put(i, v))
                .collect(),
            clear: false,
            last_index: merged.last_index,
        };
        self.commit(&batch)?;
        drop(batch);
        let shown = report.snapshot.as_ref();
        tracing::error!(
            moved_to = %report.moved_to,
            recovered = report.records,
            from_file = report.from_file,
            from_damaged_pages = report.from_pages,
            from_snapshot = report.from_snapshot,
            snapshot = shown.map_or("none", |s| s.file.as_str()),
            snapshot_index = shown.map_or(0, |s| s.index),
            undecodable = report.damaged_records,
            unreadable_ranges = report.unreadable.len(),
            tree_readable = report.tree_readable,
            last_index = report.last_index,
            may_be_missing = %report.may_be_missing,
            ms = started.elapsed().as_millis() as u64,
            "the damaged registry file was moved aside and what it held was recovered into a fresh one; \
             acknowledge with POST /v1/recovery/ack"
        );
        for (lo, hi) in report.unreadable.iter().take(20) {
            tracing::warn!(
                from = lo,
                to = hi,
                "change indexes whose pages could not be read"
            );
        }
        let last = merged.last_index;
        self.notice.set(report);
        Ok(last)
    }
}

/// The message of a caught panic.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Opens the file, creating it (and making its directory entry durable) if
/// it does not exist, and makes sure both tables exist.
fn open_db(path: &Path) -> Result<Database, StoreError> {
    let existed = path.exists();
    // redb may panic on a file altered behind its back; that is corruption
    // too, not a reason to take the process down.
    let shown = path.display().to_string();
    let opened = std::panic::catch_unwind(|| {
        let told = std::sync::atomic::AtomicBool::new(false);
        Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_repair_callback(move |_| {
                if !told.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        file = %shown,
                        "the registry file was not closed cleanly (a crash, a power loss or a \
                         failed write): verifying its checksums; an incomplete last commit is dropped"
                    );
                }
            })
            .create(path)
    });
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(StoreError::Locked(path.display().to_string()));
        }
        // redb reports a file that is not a redb database as InvalidData.
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
            if e.kind() != std::io::ErrorKind::InvalidData =>
        {
            return Err(io_err(&format!("cannot open {}", path.display()), e));
        }
        Ok(Err(e)) => {
            return Err(StoreError::Corrupt {
                what: path.display().to_string(),
                detail: e.to_string(),
            });
        }
        Err(_) => {
            return Err(StoreError::Corrupt {
                what: path.display().to_string(),
                detail: "redb panicked while opening it".into(),
            });
        }
    };
    if !existed && let Some(dir) = path.parent() {
        // The new file's entry, and the directory's own (it may be new too).
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    // Reaching the tables reads the file's table tree: damage there is
    // damage of the file (an error other than I/O, or a panic), not a
    // reason to stop.
    let tables = catch_unwind(AssertUnwindSafe(|| -> Result<(), redb::Error> {
        let tx = db.begin_write()?;
        tx.open_table(RECORDS)?;
        tx.open_table(META)?;
        tx.commit()?;
        Ok(())
    }));
    let corrupt = |detail: String| StoreError::Corrupt {
        what: path.display().to_string(),
        detail,
    };
    match tables {
        Ok(Ok(())) => Ok(db),
        Ok(Err(redb::Error::Io(e))) if e.kind() != std::io::ErrorKind::InvalidData => {
            Err(io_err(&format!("cannot open {}", path.display()), e))
        }
        Ok(Err(e)) => Err(corrupt(e.to_string())),
        Err(p) => {
            // The database is dropped here; redb may panic on that too.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(db)));
            Err(corrupt(format!(
                "redb panicked opening its tables: {}",
                panic_text(&*p)
            )))
        }
    }
}

/// fsync of a directory, so that a file created or renamed in it survives a crash.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(&format!("cannot sync the directory {}", dir.display()), e))
}

fn io_err(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what}: {e}"))
}

fn redb_err(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(e) => StoreError::Io(format!("writing the registry file failed: {e}")),
        redb::Error::Corrupted(detail) => StoreError::Corrupt {
            what: "the registry file".into(),
            detail,
        },
        redb::Error::PreviousIo => {
            StoreError::Io("an earlier write to the registry file failed".into())
        }
        other => StoreError::Io(format!("registry file: {other}")),
    }
}

impl Store for FileStore {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn load(&mut self, f: &mut dyn FnMut(u64, &[u8])) -> Result<u64, StoreError> {
        if let Some(damage) = self.damage.take() {
            return self.recover(damage, None, f);
        }
        let mut delivered = None;
        match self.stream(f, &mut delivered) {
            Ok(last) => Ok(last),
            Err(Some(damage)) => self.recover(damage, delivered, f),
            Err(None) => Err(StoreError::Io(format!(
                "cannot read {}; see the log above",
                self.path.display()
            ))),
        }
    }

    fn commit(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        batch.check()?;
        let db = self.db()?;
        // A panic of redb on a page damaged under it fails the batch (it is
        // rolled back and the store reopened), not the process.
        catch_unwind(AssertUnwindSafe(|| commit_to(db, batch))).unwrap_or_else(|p| {
            Err(StoreError::Corrupt {
                what: "the registry file".into(),
                detail: format!("redb panicked writing it: {}", panic_text(&*p)),
            })
        })
    }

    fn reopen(&mut self) -> Result<(), StoreError> {
        // Close first: redb holds a lock on the file while it is open.
        self.db = None;
        self.db = Some(open_db(&self.path)?);
        Ok(())
    }
}

/// One write transaction with the batch; returns after fdatasync.
fn commit_to(db: &Database, batch: &WriteBatch) -> Result<(), StoreError> {
    let tx = db.begin_write().map_err(redb_err)?;
    {
        let mut records = tx.open_table(RECORDS).map_err(redb_err)?;
        if batch.clear {
            records.retain(|_, _| false).map_err(redb_err)?;
        }
        for op in &batch.ops {
            match op {
                Op::Put(index, value) => {
                    records.insert(*index, value.as_slice()).map_err(redb_err)?;
                }
                Op::Delete(index) => {
                    records.remove(*index).map_err(redb_err)?;
                }
            }
        }
        // `load` takes the higher of `last_index` and the highest key, so
        // the meta table (one more page to copy) is written only when the
        // batch's index is not also its highest record.
        let highest_put = batch
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Put(index, _) => Some(*index),
                Op::Delete(_) => None,
            })
            .max();
        if highest_put.is_none_or(|i| i < batch.last_index) {
            let mut meta = tx.open_table(META).map_err(redb_err)?;
            let last = meta
                .get(LAST_INDEX)
                .map_err(redb_err)?
                .map_or(0, |v| v.value());
            if batch.last_index > last {
                meta.insert(LAST_INDEX, batch.last_index)
                    .map_err(redb_err)?;
            }
        }
    }
    // Durability::Immediate is the default: commit returns after fdatasync.
    tx.commit().map_err(redb_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Address, Datacenter, InstanceId, InstanceSpec, Registry, RegistryConfig};
    use crate::core::{ServiceKey, ServiceName};

    /// A file store in `dir` holding `n` instances at indexes 1..=n; returns
    /// their encoded records.
    fn fill(dir: &Path, n: u64) -> Vec<(u64, Vec<u8>)> {
        let t0 = std::time::Instant::now();
        let r = Registry::new(
            RegistryConfig {
                local_dc: Datacenter::new("dc1").unwrap(),
                reap_after: std::time::Duration::from_secs(60),
            },
            t0,
        );
        let key = ServiceKey::new(
            Datacenter::new("dc1").unwrap(),
            ServiceName::new("svc").unwrap(),
        );
        let mut records = Vec::new();
        for i in 1..=n {
            let spec = InstanceSpec::new(Address::parse("10.0.0.1").unwrap(), 80);
            let inst = r
                .register(
                    key.clone(),
                    InstanceId::new(&format!("i{i}")).unwrap(),
                    spec,
                    t0,
                )
                .unwrap();
            records.push((inst.index, super::super::codec::encode(&inst)));
        }
        let mut s = FileStore::open(dir).unwrap();
        for chunk in records.chunks(100) {
            s.commit(&WriteBatch {
                ops: chunk.iter().map(|(i, v)| Op::Put(*i, v.clone())).collect(),
                clear: false,
                last_index: chunk.last().unwrap().0,
            })
            .unwrap();
        }
        records
    }

    fn load(dir: &Path) -> (Vec<u64>, u64, Option<std::sync::Arc<Recovery>>) {
        let notice = RecoveryNotice::default();
        let mut s = FileStore::open(dir).unwrap().with_notice(notice.clone());
        let mut got = Vec::new();
        let last = s.load(&mut |i, _| got.push(i)).unwrap();
        got.sort_unstable();
        (got, last, notice.get())
    }

    /// Zeroes each page of a file of 3000 records in turn: the store always
    /// opens and loads, loses at most the records of the one damaged leaf,
    /// and with a snapshot of everything loses nothing.
    #[test]
    fn any_zeroed_page_loses_at_most_its_own_records_and_nothing_with_a_snapshot() {
        let base = tempfile::tempdir().unwrap();
        let records = fill(base.path(), 3000);
        let original = std::fs::read(base.path().join(FileStore::FILE_NAME)).unwrap();
        let snap: Vec<u8> = {
            // The same records as a snapshot file at index 3000.
            let mut body = b"MAXINE-SNAPSHOT\n".to_vec();
            body.extend(1u32.to_be_bytes());
            body.extend(3000u64.to_be_bytes());
            body.extend((records.len() as u64).to_be_bytes());
            for (i, v) in &records {
                body.extend(i.to_be_bytes());
                body.extend((v.len() as u32).to_be_bytes());
                body.extend(v);
            }
            let sum = ring::digest::digest(&ring::digest::SHA256, &body);
            body.extend(sum.as_ref());
            body
        };
        let all: Vec<u64> = (1..=3000).collect();
        for page in 0..original.len() / 4096 {
            for with_snapshot in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let mut bytes = original.clone();
                bytes[page * 4096..(page + 1) * 4096].fill(0);
                std::fs::write(dir.path().join(FileStore::FILE_NAME), &bytes).unwrap();
                if with_snapshot {
                    snapshot::write_rotated(&dir.path().join(snapshot::DIR_NAME), 3000, &snap, 3)
                        .unwrap();
                }
                let (got, last, rec) = load(dir.path());
                if with_snapshot {
                    assert_eq!(got, all, "page {page}: nothing lost");
                    assert_eq!(last, 3000);
                } else {
                    assert!(got.len() >= 3000 - 100, "page {page}: {} left", got.len());
                }
                if got.len() < 3000 {
                    let r = rec.expect("a loss is reported");
                    assert!(r.moved_to.contains("corrupt-"), "{r:?}");
                }
                // The fresh file holds what was recovered, and opens clean.
                let (again, _, rec) = load(dir.path());
                assert_eq!(again, got, "page {page}");
                assert!(rec.is_none(), "page {page}: the next start is clean");
            }
        }
    }

    /// The B-tree read on its own: a leaf page damaged under an open
    /// database (no cache, so every read goes to the file) makes a gap of
    /// the keys it held, and every other record is read through the tree.
    #[test]
    fn the_tree_is_read_around_a_damaged_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FileStore::FILE_NAME);
        fill(dir.path(), 3000);
        let original = std::fs::read(&path).unwrap();
        let db = Database::builder().set_cache_size(0).open(&path).unwrap();
        // The live leaf of the key 1500: zero the page that holds it and see
        // the tree lose exactly that page's keys.
        let mut tried = 0;
        for page in 1..original.len() / 4096 {
            let held = salvage::scan_pages(&original[page * 4096..(page + 1) * 4096]);
            if !held.contains_key(&1500) {
                continue;
            }
            tried += 1;
            let mut bytes = original.clone();
            bytes[page * 4096..(page + 1) * 4096].fill(0);
            std::fs::write(&path, &bytes).unwrap();
            let candidates: Vec<u64> = salvage::scan_pages(&bytes).keys().copied().collect();
            let tree = salvage::read_tree(&db, RECORDS, META, LAST_INDEX, &candidates);
            std::fs::write(&path, &original).unwrap();
            if tree.gaps.is_empty() {
                assert_eq!(tree.records.len(), 3000, "page {page} was a stale copy");
                continue;
            }
            let read: Vec<u64> = tree.records.iter().map(|r| r.0).collect();
            let lost: Vec<u64> = (1..=3000).filter(|i| !read.contains(i)).collect();
            assert!(lost.contains(&1500) && lost.len() <= held.len(), "{lost:?}");
            for i in &lost {
                assert!(
                    tree.gaps.iter().any(|(lo, hi)| (lo..=hi).contains(&i)),
                    "{i} is lost but in no gap: {:?}",
                    tree.gaps
                );
            }
            return;
        }
        panic!("no live leaf of key 1500 found ({tried} copies tried)");
    }
}
