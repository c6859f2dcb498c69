//! The sending side of `GET /v1/federation/stream?since=INDEX`: this
//! datacenter's change feed as frames ([`super::frame`]).
//!
//! A snapshot when `since` is 0 or older than the feed keeps, then the
//! deltas in index order, a keep-alive while idle. The body is fed through
//! a channel of a few chunks: while the receiver does not read, the sender
//! does not read the feed either (a subscription is only an index), so a
//! slow receiver costs a few chunks of memory; once it is further behind
//! than the feed keeps, it is sent a snapshot (told to resync).
//!
//! With `federation.relay`, replicas learnt from other peers are sent too
//! (each record names its datacenter), except those of the receiver's own
//! datacenter.

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Bytes, Frame as BodyFrame};
use tokio::sync::mpsc;

use super::Federation;
use super::frame::{self, Frame};
use crate::core::{Checks, Datacenter, Instance, ServiceKey};
use crate::events::Delivery;
use crate::store::codec;

/// Chunks in flight per stream: the memory a slow receiver may hold.
const CHUNKS: usize = 4;

/// A chunk is sent once it holds this many bytes.
const CHUNK_BYTES: usize = 64 * 1024;

/// The body of one stream, fed by its own task until the receiver goes.
pub struct StreamBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for StreamBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Self::Error>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|c| c.map(|b| Ok(BodyFrame::data(b))))
    }
}

/// Starts streaming changes after `since` to a receiver in datacenter
/// `receiver` (when it said).
pub fn start(fed: &Federation, since: u64, receiver: Option<Datacenter>) -> StreamBody {
    let (tx, rx) = mpsc::channel(CHUNKS);
    let fed = fed.clone();
    tokio::spawn(async move {
        let _ = send(fed, since, receiver, tx).await;
    });
    StreamBody { rx }
}

struct Sender {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl Sender {
    async fn frame(&mut self, f: &Frame) -> Result<(), ()> {
        frame::encode(f, &mut self.buf);
        if self.buf.len() >= CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.send(chunk).await.map_err(|_| ())
    }
}

async fn send(
    fed: Federation,
    since: u64,
    receiver: Option<Datacenter>,
    tx: mpsc::Sender<Bytes>,
) -> Result<(), ()> {
    let local = fed.local_dc().clone();
    let relay = fed.relay();
    let wanted = |key: &ServiceKey| {
        if relay {
            Some(&key.dc) != receiver.as_ref()
        } else {
            key.dc == local
        }
    };
    let mut out = Sender {
        tx,
        buf: Vec::with_capacity(CHUNK_BYTES),
    };
    // A receiver ahead of this log (it was wiped, or kept in memory only,
    // and started again) holds what no longer is: a snapshot replaces it.
    let since = if since > fed.feed().index() { 0 } else { since };
    let mut sub = fed.feed().subscribe_from(since);
    out.frame(&Frame::Hello {
        dc: local.to_string(),
        index: fed.feed().index(),
    })
    .await?;
    out.flush().await?;
    let keepalive = fed.keepalive();
    let closed = fed.streams_closed();
    loop {
        let delivery = tokio::select! {
            _ = closed.cancelled() => return Ok(()),
            d = sub.next() => d,
            _ = tokio::time::sleep(keepalive) => {
                out.frame(&Frame::KeepAlive { index: sub.position() }).await?;
                out.flush().await?;
                continue;
            }
            _ = out.tx.closed() => return Err(()),
        };
        match delivery {
            Delivery::Snapshot {
                index, services, ..
            } => {
                fed.snapshot_sent();
                out.frame(&Frame::SnapshotStart { index }).await?;
                for s in services.iter().filter(|s| wanted(&s.key)) {
                    for inst in s.instances.values() {
                        out.frame(&Frame::Put {
                            record: replica_record(inst),
                        })
                        .await?;
                    }
                }
                out.frame(&Frame::Mark {
                    index,
                    snapshot_end: true,
                })
                .await?;
            }
            Delivery::Changes { events, .. } => {
                for e in events.iter().filter(|e| wanted(&e.key)) {
                    let f = match &e.instance {
                        Some(inst) => Frame::Put {
                            record: replica_record(inst),
                        },
                        None => Frame::Remove {
                            dc: e.key.dc.to_string(),
                            service: e.key.service.to_string(),
                            id: e.id.to_string(),
                        },
                    };
                    out.frame(&f).await?;
                }
                out.frame(&Frame::Mark {
                    index: sub.position(),
                    snapshot_end: false,
                })
                .await?;
            }
        }
        out.flush().await?;
    }
}

/// An instance as other datacenters hold it: with its status (the worst of
/// its checks) as its health, and without the checks, which run only in the
/// instance's own datacenter. A status change here is an event, so the
/// peers get the new status as one more record.
fn replica_record(inst: &Instance) -> Vec<u8> {
    let seen = inst
        .with_health(inst.status(), inst.index)
        .with_checks(Checks::default(), inst.index);
    codec::encode(&seen)
}
