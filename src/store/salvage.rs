//! Salvage of a damaged `registry.redb`: every record the file still yields,
//! filled in from the latest good snapshot, with an account of where each
//! came from and what may be missing.
//!
//! Three sources, from the most to the least trusted:
//!
//! ```text
//!   1. the B-tree, through redb        live records; a damaged page makes a
//!      (every read caught: error or     key range unreadable ("gap"), found by
//!       panic is damage, not a crash)   seeking past it
//!   2. the latest good snapshot         records at or below its index S
//!   3. a raw scan of the file's pages   leaf pages of the records table,
//!      (docs/design.md of redb: leaf    recognised by their layout, every
//!       = type 1, count, value ends,    value checked by decoding it
//!       keys, values)
//! ```
//!
//! Outside the gaps the tree is the truth (a record it lacks was deleted).
//! Inside a gap (everywhere, when the tree cannot be read at all) records at
//! or below S come from the snapshot, and records above S from the raw scan.
//! The raw scan also sees pages that redb freed but has not reused yet, so
//! above S a record deleted there can come back; the report says so. An
//! instance with several values keeps the one with the highest index (the
//! registry's restorer does that).

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use redb::{Database, ReadableDatabase, TableDefinition};

use super::codec::Decoder;
use super::recovery::{Recovery, SnapshotUse};

/// redb's page size, and the alignment of every page in its file.
const PAGE: usize = 4096;
/// redb's leaf page type byte.
const LEAF: u8 = 1;
/// A leaf of one record may span several pages; none is larger than this
/// (a record is at most `MAX_VALUE_BYTES`).
const MAX_LEAF: usize = super::MAX_VALUE_BYTES + 64 * 1024;

/// Records by change index, as stored.
pub type Records = BTreeMap<u64, Vec<u8>>;

/// Every record in leaf pages of the records table found in `file`: pages
/// whose layout is that of a `u64 -> bytes` leaf, and of those only the
/// values that decode as a record of this version of Maxine. Stale copies of
/// pages (freed, not yet reused) are found too.
pub fn scan_pages(file: &[u8]) -> Records {
    let mut found = Records::new();
    let mut decoder = Decoder::default();
    let mut at = 0;
    while at + 16 <= file.len() {
        scan_leaf(&file[at..], &mut decoder, &mut found);
        at += PAGE;
    }
    found
}

/// A `u64 -> &[u8]` leaf: type, a reserved byte, the number of entries
/// (u16), one u32 end offset per value (from the page start), the keys
/// (u64 little-endian, ascending), then the values back to back.
fn scan_leaf(page: &[u8], decoder: &mut Decoder, found: &mut Records) {
    if page[0] != LEAF {
        return;
    }
    let n = u16::from_le_bytes([page[2], page[3]]) as usize;
    let keys_at = 4 + 4 * n;
    let values_at = keys_at + 8 * n;
    if n == 0 || values_at > page.len().min(MAX_LEAF) {
        return;
    }
    let end_of = |i: usize| {
        let o = 4 + 4 * i;
        u32::from_le_bytes(page[o..o + 4].try_into().expect("4 bytes")) as usize
    };
    let key_of = |i: usize| {
        let o = keys_at + 8 * i;
        u64::from_le_bytes(page[o..o + 8].try_into().expect("8 bytes"))
    };
    let mut start = values_at;
    let mut previous_key = None;
    for i in 0..n {
        let end = end_of(i);
        let key = key_of(i);
        if end < start || end > page.len().min(MAX_LEAF) || previous_key.is_some_and(|p| p >= key) {
            return; // not a leaf of this table, or its header is damaged
        }
        previous_key = Some(key);
        start = end;
    }
    let mut start = values_at;
    for i in 0..n {
        let end = end_of(i);
        let value = &page[start..end];
        let key = key_of(i);
        if !found.contains_key(&key) && decoder.decode(key, value).is_ok() {
            found.insert(key, value.to_vec());
        }
        start = end;
    }
}

/// What could be read through the B-tree.
#[derive(Debug, Default)]
pub struct TreeRead {
    pub records: Vec<(u64, Vec<u8>)>,
    /// Inclusive index ranges that could not be read.
    pub gaps: Vec<(u64, u64)>,
    /// The stored `last_index`, when its table could be read.
    pub last_index: Option<u64>,
}

impl TreeRead {
    fn in_gap(&self, index: u64) -> bool {
        let i = self.gaps.partition_point(|(_, hi)| *hi < index);
        self.gaps.get(i).is_some_and(|(lo, _)| *lo <= index)
    }
}

/// Reads every record redb can still give, in key order. A read that fails
/// (an error, or a panic of redb on a page it cannot make sense of) ends a
/// run; the next run seeks to a key known from `candidates` (the raw scan)
/// further on, skipping more candidates after every further failure so a
/// large damaged subtree costs a few seeks, not one per record.
pub fn read_tree(
    db: &Database,
    records: TableDefinition<u64, &[u8]>,
    meta: TableDefinition<&str, u64>,
    last_index_key: &str,
    candidates: &[u64],
) -> TreeRead {
    let mut out = TreeRead {
        last_index: catch_unwind(AssertUnwindSafe(|| {
            let tx = db.begin_read().ok()?;
            let t = tx.open_table(meta).ok()?;
            let v = t.get(last_index_key).ok()?;
            Some(v.map_or(0, |v| v.value()))
        }))
        .ok()
        .flatten(),
        ..TreeRead::default()
    };
    let mut pos = 0u64;
    let mut gap_from: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        let before = out.records.len();
        let finished = catch_unwind(AssertUnwindSafe(|| -> Result<(), ()> {
            let tx = db.begin_read().map_err(drop)?;
            let t = tx.open_table(records).map_err(drop)?;
            for row in t.range(pos..).map_err(drop)? {
                let (k, v) = row.map_err(drop)?;
                out.records.push((k.value(), v.value().to_vec()));
            }
            Ok(())
        }))
        .is_ok_and(|r| r.is_ok());
        let read = out.records.len() > before;
        if (finished || read)
            && let Some(from) = gap_from.take()
            && from < pos
        {
            // The seek at `pos` worked: no key lies in [pos, first read).
            out.gaps.push((from, pos - 1));
        }
        if finished {
            return out;
        }
        // The run broke after its last key (or at its seek).
        let last = out.records.last().map(|r| r.0).filter(|_| read);
        let broken_after = last.unwrap_or(pos.saturating_sub(1));
        if gap_from.is_none() {
            gap_from = Some(last.map_or(pos, |l| l + 1));
            failures = 0;
        }
        failures += 1;
        // The next candidate past the break, skipping 2^(failures-1) - 1 more.
        let next = candidates.partition_point(|c| *c <= broken_after.max(pos))
            + (1usize << (failures - 1).min(20))
            - 1;
        match candidates.get(next) {
            Some(c) => pos = *c,
            None => {
                if let Some(from) = gap_from {
                    out.gaps.push((from, u64::MAX));
                }
                return out;
            }
        }
    }
}

/// The latest snapshot that verified, with its records.
pub struct GoodSnapshot {
    pub file: String,
    pub last_index: u64,
    pub records: Vec<(u64, Vec<u8>)>,
}

/// Builds the recovered set: the tree outside its gaps, the snapshot and the
/// raw scan inside (see the module doc). `tree` is `None` when the file could
/// not be opened at all.
pub fn merge(
    tree: Option<TreeRead>,
    raw: Records,
    snapshot: Option<GoodSnapshot>,
    recovery: &mut Recovery,
) -> Merged {
    let mut decoder = Decoder::default();
    let mut out = Records::new();
    let mut filled = std::collections::BTreeSet::new();
    let tree_ok = tree.is_some();
    let mut tree = tree.unwrap_or_else(|| TreeRead {
        gaps: vec![(0, u64::MAX)],
        ..TreeRead::default()
    });
    // The highest index the tree knows of: a snapshot record above it is a
    // change the file lost (an older commit slot took over).
    let tree_top = tree_ok.then(|| {
        let top_key = tree.records.last().map_or(0, |r| r.0);
        tree.last_index.unwrap_or(0).max(top_key)
    });
    let mut damaged = TreeRead::default();
    for (index, value) in std::mem::take(&mut tree.records) {
        if tree.in_gap(index) {
            continue;
        }
        if decoder.decode(index, &value).is_ok() {
            out.insert(index, value);
            recovery.from_file += 1;
        } else {
            recovery.damaged_records += 1;
            damaged.gaps.push((index, index));
        }
    }
    let fill = |i: u64| tree.in_gap(i) || damaged.in_gap(i);
    let snap_index = snapshot.as_ref().map_or(0, |s| s.last_index);
    if let Some(s) = snapshot {
        let mut used = 0;
        for (index, value) in s.records {
            let lost = fill(index) || tree_top.is_some_and(|top| index > top);
            if lost && !out.contains_key(&index) {
                out.insert(index, value);
                filled.insert(index);
                used += 1;
            }
        }
        recovery.snapshot = Some(SnapshotUse {
            file: s.file,
            index: s.last_index,
            records: used,
        });
        recovery.from_snapshot = used;
    }
    for (index, value) in raw {
        if index > snap_index && fill(index) && !out.contains_key(&index) {
            out.insert(index, value);
            filled.insert(index);
            recovery.from_pages += 1;
        }
    }
    recovery.tree_readable = tree_ok;
    recovery.unreadable = std::mem::take(&mut tree.gaps);
    recovery.records = out.len();
    let last_index = [
        tree.last_index.unwrap_or(0),
        snap_index,
        out.keys().next_back().copied().unwrap_or(0),
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    recovery.last_index = last_index;
    recovery.explain();
    Merged {
        records: out,
        filled,
        last_index,
    }
}

/// What [`merge`] recovered.
pub struct Merged {
    pub records: Records,
    /// Indexes taken from the snapshot or the raw pages (not the tree).
    pub filled: std::collections::BTreeSet<u64>,
    /// The change index to go on from.
    pub last_index: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the codec writes it, for instance `id` of service `svc`.
    fn record(index: u64, id: &str) -> Vec<u8> {
        use crate::core::{
            Address, Datacenter, InstanceId, InstanceSpec, Registry, RegistryConfig,
        };
        let t0 = std::time::Instant::now();
        let r = Registry::new(
            RegistryConfig {
                local_dc: Datacenter::new("dc1").unwrap(),
                reap_after: std::time::Duration::from_secs(60),
            },
            t0,
        );
        let key = crate::core::ServiceKey::new(
            Datacenter::new("dc1").unwrap(),
            crate::core::ServiceName::new("svc").unwrap(),
        );
        let spec = InstanceSpec::new(Address::parse("10.0.0.1").unwrap(), 80);
        let inst = r
            .register(key, InstanceId::new(id).unwrap(), spec, t0)
            .unwrap();
        // The index is the record's key, not part of its value.
        let _ = index;
        super::super::codec::encode(&inst)
    }

    /// A leaf page as redb lays it out, padded to `PAGE`.
    fn leaf(entries: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let n = entries.len();
        let mut page = vec![LEAF, 0];
        page.extend((n as u16).to_le_bytes());
        let mut end = 4 + 12 * n;
        for (_, v) in entries {
            end += v.len();
            page.extend((end as u32).to_le_bytes());
        }
        for (k, _) in entries {
            page.extend(k.to_le_bytes());
        }
        for (_, v) in entries {
            page.extend(v);
        }
        page.resize(PAGE, 0);
        page
    }

    #[test]
    fn leaf_pages_are_found_and_every_value_is_checked_by_decoding_it() {
        let good = leaf(&[(3, record(3, "a")), (7, record(7, "b"))]);
        let mut bad_value = leaf(&[(9, record(9, "c")), (10, record(10, "d"))]);
        // Damage inside the first value: only that record is lost.
        let v0 = 4 + 12 * 2;
        bad_value[v0] = 0x7f;
        let not_sorted = leaf(&[(20, record(20, "e")), (19, record(19, "f"))]);
        let mut file = vec![0u8; PAGE]; // a zeroed page
        file.extend(&good);
        file.extend(&bad_value);
        file.extend(&not_sorted);
        file.extend(std::iter::repeat_n(0x01, PAGE)); // type byte 1, nonsense
        let found = scan_pages(&file);
        assert_eq!(found.keys().copied().collect::<Vec<_>>(), [3, 7, 10]);
        assert_eq!(found[&7], record(7, "b"));
    }

    #[test]
    fn gaps_are_filled_from_the_snapshot_up_to_its_index_and_from_pages_above() {
        let tree = TreeRead {
            records: vec![(1, record(1, "a")), (50, record(50, "z"))],
            gaps: vec![(2, 49)],
            last_index: Some(60),
        };
        let snapshot = GoodSnapshot {
            file: "s".into(),
            last_index: 20,
            // 1 is in the tree already; 5 fills the gap; 55 is outside it.
            records: vec![
                (1, record(1, "a")),
                (5, record(5, "b")),
                (55, record(55, "y")),
            ],
        };
        let raw: Records = [
            (4, record(4, "gone")), // at or below the snapshot, not in it: was deleted
            (30, record(30, "c")),  // above the snapshot, in the gap
            (51, record(51, "x")),  // outside the gap: the tree did not have it
        ]
        .into_iter()
        .collect();
        let mut rec = Recovery::default();
        let m = merge(Some(tree), raw, Some(snapshot), &mut rec);
        assert_eq!(
            m.records.keys().copied().collect::<Vec<_>>(),
            [1, 5, 30, 50]
        );
        assert_eq!(m.filled.iter().copied().collect::<Vec<_>>(), [5, 30]);
        assert_eq!(m.last_index, 60);
        assert_eq!(
            (rec.from_file, rec.from_snapshot, rec.from_pages),
            (2, 1, 1)
        );
    }

    #[test]
    fn an_unreadable_tree_takes_the_snapshot_and_newer_pages() {
        let snapshot = GoodSnapshot {
            file: "s".into(),
            last_index: 10,
            records: vec![(2, record(2, "a")), (9, record(9, "b"))],
        };
        let raw: Records = [
            (2, record(2, "a")),
            (3, record(3, "old")),
            (12, record(12, "c")),
        ]
        .into_iter()
        .collect();
        let mut rec = Recovery::default();
        let m = merge(None, raw, Some(snapshot), &mut rec);
        assert_eq!(m.records.keys().copied().collect::<Vec<_>>(), [2, 9, 12]);
        assert_eq!(m.last_index, 12);
        assert!(!rec.tree_readable);
    }
}
