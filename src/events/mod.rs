//! The change stream: every registry change, in index order, on a broadcast
//! channel. Persistence, replication, blocking queries and the WebSocket,
//! SSE and MQTT streams subscribe here rather than to the registry itself.
//!
//! Must not import: dns, http.

use tokio::sync::broadcast;

use crate::core::{Batch, Event, Observer};

/// How many events a slow subscriber may fall behind before it is told it
/// lagged (and should resynchronise from a snapshot).
pub const CAPACITY: usize = 16_384;

/// Publishes registry changes. Cloning copies one `Arc`.
#[derive(Clone)]
pub struct EventStream {
    tx: broadcast::Sender<Event>,
}

impl Default for EventStream {
    fn default() -> Self {
        Self::new()
    }
}

impl EventStream {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }

    /// A receiver of every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

impl Observer for EventStream {
    fn applied(&self, batch: &Batch<'_>) {
        for e in batch.events {
            // No subscriber is not an error: nobody is listening yet.
            let _ = self.tx.send(e.clone());
        }
    }
}
