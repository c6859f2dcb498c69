//! Automatic snapshots of the registry into `<data_dir>/snapshots/`, so that
//! a damaged store file can be recovered (see [`super::salvage`]): one every
//! interval when the registry changed, and one at a clean shutdown, a few
//! generations kept ([`super::snapshot::write_rotated`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Durable, StoreError, snapshot};
use crate::core::Registry;

/// Writes snapshots of one registry into one directory. Cloning copies a
/// registry handle and a path.
#[derive(Clone)]
pub struct AutoSnapshot {
    pub registry: Registry,
    /// `<data_dir>/snapshots`.
    pub dir: PathBuf,
    /// Generations kept.
    pub keep: usize,
}

impl AutoSnapshot {
    /// Every `interval`, once what the registry holds is durable, writes a
    /// snapshot if the registry changed since the last one. Returns when
    /// `shutdown` is cancelled (the shutdown snapshot is [`Self::write_now`]).
    pub async fn run(self, interval: Duration, durable: Durable, shutdown: CancellationToken) {
        let mut written = snapshot::list(&self.dir)
            .first()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| snapshot::decode(&b).ok().map(|s| s.last_index));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let (index, services, acl) = self.registry.backup();
            if written == Some(index) {
                continue;
            }
            // Only what is on disk: a change that fails is rolled back.
            if durable.wait(index).await.is_err() {
                continue;
            }
            let me = self.clone();
            let done = tokio::task::spawn_blocking(move || me.write(index, &services, &acl)).await;
            match done {
                Ok(Ok(_)) => written = Some(index),
                Ok(Err(e)) => tracing::error!(error = %e, "writing a snapshot failed"),
                Err(e) => tracing::error!(error = %e, "writing a snapshot failed"),
            }
        }
    }

    /// Writes a snapshot of what the registry holds now (at a clean
    /// shutdown, after the store was closed). Blocks.
    pub fn write_now(&self) -> Result<PathBuf, StoreError> {
        let (index, services, acl) = self.registry.backup();
        self.write(index, &services, &acl)
    }

    fn write(
        &self,
        index: u64,
        services: &[Arc<crate::core::ServiceSnapshot>],
        acl: &[crate::core::AclObject],
    ) -> Result<PathBuf, StoreError> {
        let started = std::time::Instant::now();
        let bytes = snapshot::encode(index, services, acl);
        let path = snapshot::write_rotated(&self.dir, index, &bytes, self.keep)?;
        tracing::info!(
            file = %path.display(), index, bytes = bytes.len(),
            ms = started.elapsed().as_millis() as u64, "snapshot written"
        );
        Ok(path)
    }
}
