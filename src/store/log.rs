//! The log in front of the registry: writers propose changes, the log gives
//! them their order and durability, and the registry applies them in that
//! order on every node that follows the log, the proposer included.
//!
//! ```text
//!   HTTP handler --propose(changes, ctx)--> Log --> index order, durable
//!        ^                                   |
//!        |                                   v
//!        +---- applied & durable <---- Registry::apply* (every node)
//! ```
//!
//! [`LocalLog`] is the single-node log: the registry's own sequence (its
//! write lock gives each change the next index and applies it at once, so
//! DNS has it before anyone is answered), followed by the [`Journal`]'s
//! group commit. A proposal resolves once the journal has it on stable
//! storage; a change the store refused has been undone by then and the
//! proposal fails. A log on a shared store (etcd) implements the same
//! trait the other way round: durable first, applied when its watch
//! delivers the change (docs/adr/0005-several-nodes-and-datacenters.md).
//!
//! [`Journal`]: super::Journal

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::core::{Applied, Change, Context, Durability, Registry, RegistryError, ServiceSnapshot};

use super::Durable;
use crate::events::{ChangeFeed, Subscription};

/// What a proposal resolves to.
pub type Proposal = Pin<Box<dyn Future<Output = Result<Applied, LogError>> + Send>>;

/// Why a proposal did not take effect.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The registry refused a change (unknown instance, name conflict,
    /// invalid value): nothing was logged.
    #[error("{0}")]
    Refused(RegistryError),
    /// The change could not be made durable and was undone, or the log is
    /// not accepting changes. The reason is for operators; clients retry.
    #[error("{0}")]
    Unavailable(NotSaved),
}

/// Why a change was not made durable (it has been undone).
#[derive(Debug, Clone)]
pub struct NotSaved {
    /// For operators: it may name the store's host or path.
    detail: Arc<str>,
    /// Set when the store lost what it held: what clients are told, since
    /// it names no address and they must know. Other failures pass and
    /// clients get a generic reason.
    lost: Option<Arc<str>>,
    /// A shared store (etcd) did not confirm the change: it was not undone
    /// and may still take effect.
    unconfirmed: bool,
}

impl NotSaved {
    /// A reason for the log only.
    pub fn new(detail: impl Into<Arc<str>>) -> Self {
        Self {
            detail: detail.into(),
            lost: None,
            unconfirmed: false,
        }
    }

    /// A shared store did not confirm the change within its timeout (or
    /// refused to take it): nothing was undone, it may still be applied.
    pub fn unconfirmed(detail: impl Into<Arc<str>>) -> Self {
        Self {
            unconfirmed: true,
            ..Self::new(detail)
        }
    }

    /// See [`NotSaved::unconfirmed`].
    pub fn is_unconfirmed(&self) -> bool {
        self.unconfirmed
    }

    /// The store lost its data (it will not come back by itself), as
    /// `public` tells clients.
    pub fn store_lost(detail: impl Into<Arc<str>>, public: impl Into<Arc<str>>) -> Self {
        Self {
            detail: detail.into(),
            lost: Some(public.into()),
            unconfirmed: false,
        }
    }

    /// What clients are told when the store lost its data; `None` for
    /// other failures.
    pub fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }
}

impl std::ops::Deref for NotSaved {
    type Target = str;

    fn deref(&self) -> &str {
        &self.detail
    }
}

impl std::fmt::Display for NotSaved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// The order of changes. Cloning a handle to one is cheap (`Arc<dyn Log>`).
pub trait Log: Send + Sync {
    /// Proposes `changes` as one batch. Resolves when every change is
    /// applied locally and, with [`Durability::Durable`], on stable
    /// storage. A refused change refuses the proposal; changes before it in
    /// the batch stay applied (proposers send one change, or independent ones).
    fn propose(&self, changes: Vec<Change>, ctx: Context) -> Proposal;

    /// Every applied change after `index`, in order: a snapshot first when
    /// the changes are no longer kept (a resync). The etcd log gives the
    /// same contract from its watch (ADR 0005).
    fn subscribe_from(&self, index: u64) -> Subscription;

    /// Every service as of one index, consistent (no change half in).
    fn snapshot(&self) -> (u64, Vec<Arc<ServiceSnapshot>>);

    /// The index of the latest applied change.
    fn last_index(&self) -> u64;

    /// `None` while the log takes writes; else what `/v1/ready` reports
    /// (`"catching up"`, `"read-only"`) and why.
    fn status(&self) -> Option<(&'static str, String)> {
        None
    }
}

/// The single-node log: the registry's sequence and the journal's
/// durability (or none, with `Durable::default()`, for the memory store).
pub struct LocalLog {
    registry: Registry,
    durable: Durable,
    feed: ChangeFeed,
}

impl LocalLog {
    /// The log of `registry`, whose changes `feed` follows (it must be
    /// subscribed to the registry) and `durable` reports on.
    pub fn new(registry: Registry, durable: Durable, feed: ChangeFeed) -> Self {
        Self {
            registry,
            durable,
            feed,
        }
    }
}

impl Log for LocalLog {
    fn propose(&self, changes: Vec<Change>, ctx: Context) -> Proposal {
        // Applied here, synchronously: the caller's next read sees it.
        let now = tokio::time::Instant::now().into_std();
        let applied = self.registry.apply_next(changes, &ctx, now);
        let durable = self.durable.clone();
        Box::pin(async move {
            let applied = applied.map_err(LogError::Refused)?;
            let made = applied.outcomes.iter().any(|(_, o)| o.is_made());
            // What was applied is waited for even when a later change of
            // the batch was refused: the proposer learns both.
            if made && ctx.durability == Durability::Durable {
                durable
                    .wait(applied.last_index)
                    .await
                    .map_err(LogError::Unavailable)?;
            }
            match applied.refusal() {
                Some(e) => Err(LogError::Refused(e.clone())),
                None => Ok(applied),
            }
        })
    }

    fn subscribe_from(&self, index: u64) -> Subscription {
        self.feed.subscribe_from(index)
    }

    fn snapshot(&self) -> (u64, Vec<Arc<ServiceSnapshot>>) {
        self.registry.snapshot()
    }

    fn last_index(&self) -> u64 {
        self.registry.index()
    }
}
