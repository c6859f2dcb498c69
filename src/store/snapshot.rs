//! Snapshot files: the whole registry at one index, for backups
//! (`GET /v1/snapshot`, `maxine snapshot save|restore`), and written
//! periodically into `<data_dir>/snapshots/` (a few generations, see
//! [`write_rotated`]) to recover a damaged store file from.
//!
//! Layout, integers big-endian:
//!
//! ```text
//!   magic       16 bytes  "MAXINE-SNAPSHOT\n"
//!   format       4 bytes  1
//!   last_index   8 bytes  the registry's change index when it was taken
//!   count        8 bytes  number of records
//!   count times: index 8 bytes, length 4 bytes, record (store::codec):
//!                access-control objects (tokens, policies) first, then instances
//!   sha256      32 bytes  of everything above
//! ```
//!
//! The checksum is verified, and every record decoded, before anything is
//! written to a store, so a damaged file changes nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::digest::{SHA256, digest};

use super::codec::{self, Decoder};
use super::{Op, Store, StoreError, WriteBatch};
use crate::core::{AclObject, MAX_INDEX, ServiceSnapshot};

const MAGIC: &[u8; 16] = b"MAXINE-SNAPSHOT\n";
const FORMAT: u32 = 1;
const HEADER: usize = 16 + 4 + 8 + 8;
const SUM: usize = 32;

/// A verified snapshot: its index and records, borrowed from the file's bytes.
pub struct Snapshot<'a> {
    pub last_index: u64,
    pub records: Vec<(u64, &'a [u8])>,
}

/// Encodes every access-control object and every instance of `services`,
/// taken at `last_index`.
pub fn encode(last_index: u64, services: &[Arc<ServiceSnapshot>], acl: &[AclObject]) -> Vec<u8> {
    let count: usize = services.iter().map(|s| s.instances.len()).sum();
    let mut out = Vec::with_capacity(HEADER + count * 160 + SUM);
    for chunk in Encoder::new(last_index, services.to_vec(), acl.to_vec()) {
        out.extend_from_slice(&chunk);
    }
    out
}

/// The bytes of [`encode`], one piece at a time: the header, then one chunk
/// per service, then the checksum. What is held at once is one service's
/// records, so a snapshot can be streamed without building the whole file.
pub struct Encoder {
    acl: Vec<AclObject>,
    services: std::vec::IntoIter<Arc<ServiceSnapshot>>,
    sum: Option<ring::digest::Context>,
    header: Option<Vec<u8>>,
}

impl Encoder {
    pub fn new(last_index: u64, services: Vec<Arc<ServiceSnapshot>>, acl: Vec<AclObject>) -> Self {
        let count: usize = services.iter().map(|s| s.instances.len()).sum::<usize>() + acl.len();
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT.to_be_bytes());
        header.extend_from_slice(&last_index.to_be_bytes());
        header.extend_from_slice(&(count as u64).to_be_bytes());
        Self {
            acl,
            services: services.into_iter(),
            sum: Some(ring::digest::Context::new(&SHA256)),
            header: Some(header),
        }
    }
}

impl Iterator for Encoder {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let sum = self.sum.as_mut()?;
        if let Some(mut header) = self.header.take() {
            for obj in std::mem::take(&mut self.acl) {
                let record = codec::encode_acl(&obj);
                header.extend_from_slice(&obj.index().to_be_bytes());
                header.extend_from_slice(&(record.len() as u32).to_be_bytes());
                header.extend_from_slice(&record);
            }
            sum.update(&header);
            return Some(header);
        }
        for service in self.services.by_ref() {
            if service.instances.is_empty() {
                continue;
            }
            let mut out = Vec::with_capacity(service.instances.len() * 160);
            for inst in service.instances.values() {
                let record = codec::encode(inst);
                out.extend_from_slice(&inst.index.to_be_bytes());
                out.extend_from_slice(&(record.len() as u32).to_be_bytes());
                out.extend_from_slice(&record);
            }
            sum.update(&out);
            return Some(out);
        }
        let sum = self.sum.take()?.finish();
        Some(sum.as_ref().to_vec())
    }
}

/// Checks the magic, format and checksum, and splits the records out.
pub fn decode(bytes: &[u8]) -> Result<Snapshot<'_>, StoreError> {
    let bad = |m: &str| StoreError::Snapshot(m.to_string());
    if bytes.len() < HEADER + SUM || &bytes[..16] != MAGIC {
        return Err(bad("not a Maxine snapshot file"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - SUM);
    if digest(&SHA256, body).as_ref() != sum {
        return Err(bad(
            "checksum mismatch: the file is damaged or incomplete; nothing was restored",
        ));
    }
    let u32_at = |at: usize| u32::from_be_bytes(body[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let format = u32_at(16);
    if format != FORMAT {
        return Err(bad(&format!(
            "format {format} is not known to this version of Maxine (it reads format {FORMAT})"
        )));
    }
    let last_index = u64_at(20);
    let count = u64_at(28);
    let mut records = Vec::with_capacity(count.min(1 << 24) as usize);
    let mut at = HEADER;
    for _ in 0..count {
        if at + 12 > body.len() {
            return Err(bad("truncated record header"));
        }
        let index = u64_at(at);
        let len = u32_at(at + 8) as usize;
        at += 12;
        let record = body
            .get(at..at + len)
            .ok_or_else(|| bad("truncated record"))?;
        records.push((index, record));
        at += len;
    }
    if at != body.len() {
        return Err(bad("bytes after the last record"));
    }
    Ok(Snapshot {
        last_index,
        records,
    })
}

/// What [`restore_into`] wrote.
#[derive(Debug)]
pub struct Restored {
    pub instances: usize,
    /// Tokens, policies, users and the bootstrap mark.
    pub acl_objects: usize,
    pub last_index: u64,
}

/// Replaces everything in `store` with the snapshot in `bytes`, in one
/// commit. The change index never goes back: it continues after the higher
/// of the snapshot's and the store's.
pub fn restore_into(store: &mut dyn Store, bytes: &[u8]) -> Result<Restored, StoreError> {
    restore_into_with(store, bytes, &mut |_| {})
}

/// What [`restore_into_with`] is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreStep {
    /// `checked` of `total` records were decoded and found sound.
    Checked { checked: usize, total: usize },
    /// Every record is sound; the store is being replaced.
    Writing,
}

/// [`restore_into`], telling `progress` how far it is (the CLI's
/// progress bar).
pub fn restore_into_with(
    store: &mut dyn Store,
    bytes: &[u8],
    progress: &mut dyn FnMut(RestoreStep),
) -> Result<Restored, StoreError> {
    let snap = decode(bytes)?;
    if snap.last_index > MAX_INDEX {
        return Err(StoreError::Snapshot(format!(
            "its change index {} is beyond the largest Maxine accepts ({MAX_INDEX}): \
             the file is damaged or not from Maxine; nothing was restored",
            snap.last_index
        )));
    }
    let mut decoder = Decoder::default();
    let mut acl_objects = 0;
    let total = snap.records.len();
    let mut checked = 0;
    for (index, record) in &snap.records {
        if *index == 0 || *index > MAX_INDEX {
            return Err(StoreError::Snapshot(format!(
                "record index {index} is not between 1 and {MAX_INDEX}; nothing was restored"
            )));
        }
        let decoded = decoder
            .decode_any(*index, record)
            .map_err(|e| StoreError::Snapshot(format!("record {index}: {e}")))?;
        if matches!(decoded, codec::Decoded::Acl(_)) {
            acl_objects += 1;
        }
        checked += 1;
        if checked % 1024 == 0 || checked == total {
            progress(RestoreStep::Checked { checked, total });
        }
    }
    progress(RestoreStep::Writing);
    let current = store.load(&mut |_, _| {})?;
    let last_index = current.max(snap.last_index);
    let batch = WriteBatch {
        ops: snap
            .records
            .iter()
            .map(|(i, r)| Op::Put(*i, r.to_vec()))
            .collect(),
        clear: true,
        last_index,
    };
    store.commit(&batch)?;
    Ok(Restored {
        instances: snap.records.len() - acl_objects,
        acl_objects,
        last_index,
    })
}

/// Where automatic snapshots live, inside the data directory.
pub const DIR_NAME: &str = "snapshots";

/// The automatic snapshot file of `index`: zero-padded, so names sort by index.
fn file_name(index: u64) -> String {
    format!("registry-{index:020}.snapshot")
}

/// The automatic snapshots in `dir`, newest (highest index) first.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut all: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("registry-") && n.ends_with(".snapshot"))
        })
        .collect();
    all.sort();
    all.reverse();
    all
}

/// Writes `bytes` (an encoded snapshot at `index`) into `dir` atomically:
/// a temporary file, fsync, rename, fsync of the directory. Then removes
/// all but the newest `keep`. Returns the new file's path.
pub fn write_rotated(
    dir: &Path,
    index: u64,
    bytes: &[u8],
    keep: usize,
) -> Result<PathBuf, StoreError> {
    let io = |what: &str, e: std::io::Error| StoreError::Snapshot(format!("{what}: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| io(&format!("cannot create {}", dir.display()), e))?;
    let path = dir.join(file_name(index));
    let tmp = dir.join(format!(".{}.tmp", file_name(index)));
    {
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| io(&format!("cannot create {}", tmp.display()), e))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| io(&format!("cannot write {}", tmp.display()), e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| io(&format!("cannot rename {}", tmp.display()), e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(&format!("cannot sync {}", dir.display()), e))?;
    for old in list(dir).into_iter().skip(keep.max(1)) {
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!(file = %old.display(), error = %e, "cannot remove an old snapshot");
        }
    }
    Ok(path)
}

/// The newest snapshot in `dir` whose checksum and every record verify;
/// damaged ones are logged and passed over.
pub fn latest_good(dir: &Path) -> Option<super::salvage::GoodSnapshot> {
    for path in list(dir) {
        let checked = std::fs::read(&path)
            .map_err(|e| StoreError::Snapshot(e.to_string()))
            .and_then(|bytes| {
                let snap = decode(&bytes)?;
                let mut decoder = Decoder::default();
                for (index, record) in &snap.records {
                    decoder
                        .decode_any(*index, record)
                        .map_err(|e| StoreError::Snapshot(format!("record {index}: {e}")))?;
                }
                Ok(super::salvage::GoodSnapshot {
                    file: path.display().to_string(),
                    last_index: snap.last_index,
                    records: snap.records.iter().map(|(i, r)| (*i, r.to_vec())).collect(),
                })
            });
        match checked {
            Ok(good) => return Some(good),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "passing over a damaged snapshot");
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_with_an_index_maxine_cannot_continue_restores_nothing() {
        let mut store = crate::store::MemoryStore::new();
        for last in [MAX_INDEX + 1, u64::MAX] {
            let err = restore_into(&mut store, &encode(last, &[], &[])).unwrap_err();
            assert!(err.to_string().contains("beyond the largest"), "{err}");
        }
        assert_eq!(store.commits(), 0, "the store was not touched");
        assert!(restore_into(&mut store, &encode(MAX_INDEX, &[], &[])).is_ok());
    }

    #[test]
    fn every_damaged_byte_is_caught_by_the_checksum() {
        let good = encode(42, &[], &[]);
        assert_eq!(decode(&good).unwrap().last_index, 42);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flipped byte {i} went unnoticed");
        }
        assert!(decode(&good[..good.len() - 1]).is_err());
    }

    #[test]
    fn rotation_keeps_the_newest_generations_and_skips_damaged_ones() {
        let dir = tempfile::tempdir().unwrap();
        for index in [5, 40, 300, 7] {
            write_rotated(dir.path(), index, &encode(index, &[], &[]), 3).unwrap();
        }
        let names: Vec<_> = list(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [file_name(300), file_name(40), file_name(7)],
            "newest first, the oldest removed, no temporary file left"
        );
        assert_eq!(latest_good(dir.path()).unwrap().last_index, 300);
        // A damaged newest generation: the one before it is taken.
        let newest = dir.path().join(file_name(300));
        let mut bytes = std::fs::read(&newest).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&newest, bytes).unwrap();
        assert_eq!(latest_good(dir.path()).unwrap().last_index, 40);
        assert!(latest_good(&dir.path().join("none")).is_none());
    }
}
