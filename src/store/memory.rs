//! A store in memory, for tests: it keeps nothing across processes, and it
//! can be told to fail commits the way a disk does, to test roll-back.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{Op, Store, StoreError, WriteBatch};

/// Cloning shares the contents, so a test can look at what a journal wrote.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    /// Closed: commits wait (see [`MemoryStore::hold_commits`]).
    gate: Arc<(Mutex<bool>, Condvar)>,
}

/// Holds every commit of a [`MemoryStore`] until dropped.
pub struct CommitGate(Arc<(Mutex<bool>, Condvar)>);

impl Drop for CommitGate {
    fn drop(&mut self) {
        let (held, wake) = &*self.0;
        *held.lock().unwrap_or_else(|p| p.into_inner()) = false;
        wake.notify_all();
    }
}

#[derive(Default)]
struct Inner {
    records: BTreeMap<u64, Vec<u8>>,
    last_index: u64,
    /// Commits still to fail, and whether a failed one is applied anyway
    /// (after a failed fsync the kernel may still write the pages back).
    failing: usize,
    land: bool,
    /// A commit failed and the store was not reopened since.
    needs_reopen: bool,
    commits: usize,
    reopens: usize,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits wait until the returned gate is dropped: a slow disk.
    pub fn hold_commits(&self) -> CommitGate {
        *self.gate.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        CommitGate(self.gate.clone())
    }

    /// The next `n` commits fail; with `land`, their writes happen anyway.
    pub fn fail_next(&self, n: usize, land: bool) {
        let mut i = self.lock();
        i.failing = n;
        i.land = land;
    }

    /// What is stored, by index.
    pub fn records(&self) -> BTreeMap<u64, Vec<u8>> {
        self.lock().records.clone()
    }

    /// Successful commits so far.
    pub fn commits(&self) -> usize {
        self.lock().commits
    }

    pub fn reopens(&self) -> usize {
        self.lock().reopens
    }
}

fn apply(i: &mut Inner, batch: &WriteBatch) {
    if batch.clear {
        i.records.clear();
    }
    for op in &batch.ops {
        match op {
            Op::Put(index, v) => {
                i.records.insert(*index, v.clone());
            }
            Op::Delete(index) => {
                i.records.remove(index);
            }
        }
    }
    i.last_index = i.last_index.max(batch.last_index);
}

impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn load(&mut self, f: &mut dyn FnMut(u64, &[u8])) -> Result<u64, StoreError> {
        let i = self.lock();
        let mut last = i.last_index;
        for (index, v) in &i.records {
            last = last.max(*index);
            f(*index, v);
        }
        Ok(last)
    }

    fn commit(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        batch.check()?;
        {
            let (held, wake) = &*self.gate;
            let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
            while *h {
                h = wake.wait(h).unwrap_or_else(|p| p.into_inner());
            }
        }
        let mut i = self.lock();
        if i.needs_reopen {
            return Err(StoreError::Io(
                "commit on a store that failed and was not reopened".into(),
            ));
        }
        if i.failing > 0 {
            i.failing -= 1;
            i.needs_reopen = true;
            if i.land {
                apply(&mut i, batch);
            }
            return Err(StoreError::Io(
                "injected failure: Input/output error".into(),
            ));
        }
        apply(&mut i, batch);
        i.commits += 1;
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), StoreError> {
        let mut i = self.lock();
        i.needs_reopen = false;
        i.reopens += 1;
        Ok(())
    }
}
