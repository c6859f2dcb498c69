//! The default store: one redb file, `registry.redb`, in the data directory.
//!
//! redb is a copy-on-write B-tree with checksummed pages and a commit slot
//! that is switched only after the pages it names are written, so a crash
//! (or a torn write) leaves the previous commit in place. Each
//! [`Store::commit`] is one redb write transaction with `Durability::Immediate`:
//! it returns after `fdatasync`. See docs/adr/0003-durable-registry-store.md.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Op, Store, StoreError, WriteBatch};

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
}

impl FileStore {
    pub const FILE_NAME: &'static str = "registry.redb";

    /// Opens (or creates) `registry.redb` in `dir`. A file that redb finds
    /// corrupt is moved aside (`registry.redb.corrupt-<unix seconds>`) and
    /// logged, and Maxine starts with an empty store rather than not at all;
    /// a file in use by another process is an error.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Io(format!(
                "cannot create the data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(Self::FILE_NAME);
        let db = match open_db(&path) {
            Err(StoreError::Corrupt { what, detail }) => {
                let aside = path.with_extension(format!(
                    "redb.corrupt-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                ));
                tracing::error!(
                    file = %what, %detail, moved_to = %aside.display(),
                    "the registry file is corrupt: moved aside, starting with an empty registry"
                );
                std::fs::rename(&path, &aside)
                    .map_err(|e| io_err(&format!("cannot move {} aside", path.display()), e))?;
                sync_dir(dir)?;
                open_db(&path)?
            }
            other => other?,
        };
        Ok(Self { path, db: Some(db) })
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db
            .as_ref()
            .ok_or_else(|| StoreError::Io(format!("{} is not open", self.path.display())))
    }
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
    let tx = db.begin_write().map_err(redb_err)?;
    tx.open_table(RECORDS).map_err(redb_err)?;
    tx.open_table(META).map_err(redb_err)?;
    tx.commit().map_err(redb_err)?;
    Ok(db)
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
        let tx = self.db()?.begin_read().map_err(redb_err)?;
        let meta = tx.open_table(META).map_err(redb_err)?;
        let mut last = meta
            .get(LAST_INDEX)
            .map_err(redb_err)?
            .map_or(0, |v| v.value());
        let records = tx.open_table(RECORDS).map_err(redb_err)?;
        for row in records.iter().map_err(redb_err)? {
            let (k, v) = row.map_err(redb_err)?;
            let index = k.value();
            last = last.max(index);
            f(index, v.value());
        }
        Ok(last)
    }

    fn commit(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        batch.check()?;
        let tx = self.db()?.begin_write().map_err(redb_err)?;
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

    fn reopen(&mut self) -> Result<(), StoreError> {
        // Close first: redb holds a lock on the file while it is open.
        self.db = None;
        self.db = Some(open_db(&self.path)?);
        Ok(())
    }
}
