//! What requests waiting for their change are told: the index up to which
//! every change is settled, and the ranges that failed.

use std::collections::VecDeque;

use tokio::sync::watch;

use super::super::NotSaved;

/// What is known about durability, published after every batch.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Every change up to this index is settled: durable unless in `failed`.
    pub(super) settled: u64,
    /// Failed index ranges (inclusive), oldest first, with the reason.
    pub(super) failed: VecDeque<(u64, u64, NotSaved)>,
    /// Ranges ending at or below this were dropped from `failed`.
    pub(super) forgotten_to: u64,
    /// The writer stopped (a bug): nothing after `settled` will be stored.
    pub(super) stopped: bool,
}

impl Progress {
    pub(super) fn outcome(&self, index: u64) -> Result<(), NotSaved> {
        if index > self.settled {
            return Err(NotSaved::new(
                "the store writer stopped; see the server log",
            ));
        }
        if let Some((_, _, why)) = self
            .failed
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&index))
        {
            return Err(why.clone());
        }
        if index <= self.forgotten_to {
            // Too old to tell: answer as if it failed (a retry is harmless).
            return Err(NotSaved::new(
                "the store failed around this change and it cannot be confirmed",
            ));
        }
        Ok(())
    }
}

/// Waits for changes to become durable. Cloning copies a channel receiver.
#[derive(Clone)]
pub struct Durable {
    pub(super) rx: watch::Receiver<Progress>,
}

impl Default for Durable {
    /// Without a store: every change counts as durable at once.
    fn default() -> Self {
        let (_, rx) = watch::channel(Progress {
            settled: u64::MAX,
            ..Progress::default()
        });
        Self { rx }
    }
}

impl Durable {
    /// Returns once the change with `index` is on stable storage, or with the
    /// reason it could not be stored (it has then been rolled back).
    pub async fn wait(&self, index: u64) -> Result<(), NotSaved> {
        {
            let p = self.rx.borrow();
            if p.settled >= index || p.stopped {
                return p.outcome(index);
            }
        }
        let mut rx = self.rx.clone();
        let p = rx
            .wait_for(|p| p.settled >= index || p.stopped)
            .await
            .map_err(|_| NotSaved::new("the store was closed"))?;
        p.outcome(index)
    }
}
