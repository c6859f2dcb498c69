//! The healthy sets this process retained on the broker, and the last
//! encoding of each: when a service changes, its set is published again
//! with only the instances that changed since encoded again; the others
//! are copied from the last payload.
//!
//! ```text
//!   last payload:  {"service":..,"instances":[ A1 , B1 , C1 ]}
//!   now:                                      A1   B2   C1   D1
//!   next payload:  {"service":..,"instances":[ A1 , B2 , C1 , D1 ]}
//!                                             copy  new  copy new
//! ```
//!
//! An instance's part is reused only while the registry still holds that
//! very value (instances are immutable: a change makes a new one), and
//! never for an instance with checks of its own, whose last results are
//! shown and change without a new value. At most [`CACHE_BYTES`] are kept;
//! the sets beyond are encoded whole each time.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tokio_util::bytes::Bytes;

use crate::core::{Instance, InstanceId, ServiceKey, ServiceSnapshot, plan};
use crate::events::Encoding;

/// Most bytes of payloads and parts kept for reuse.
pub const CACHE_BYTES: usize = 64 << 20;

/// The retained sets, each with its last encoding while there is room.
#[derive(Default)]
pub struct Sets {
    by_service: HashMap<ServiceKey, Option<Encoded>>,
    /// What the kept encodings hold.
    bytes: usize,
}

struct Encoded {
    payload: Bytes,
    /// Each instance's object in `payload`, in id order.
    parts: Vec<Part>,
}

struct Part {
    id: InstanceId,
    /// The value encoded. A `Weak` keeps its allocation (not its
    /// contents), so no other instance can be at its address meanwhile.
    instance: Weak<Instance>,
    start: u32,
    end: u32,
}

impl Encoded {
    fn size(&self) -> usize {
        self.payload.len() + self.parts.len() * std::mem::size_of::<Part>()
    }
}

impl Sets {
    /// The services whose set this process retained on the broker.
    pub fn retained(&self) -> impl Iterator<Item = &ServiceKey> {
        self.by_service.keys()
    }

    /// The service's set was cleared on the broker.
    pub fn cleared(&mut self, key: &ServiceKey) {
        if let Some(Some(old)) = self.by_service.remove(key) {
            self.bytes -= old.size();
        }
    }

    /// The set was not sent after all (too large): nothing of it is kept.
    pub fn not_sent(&mut self, key: &ServiceKey) {
        if let Some(slot) = self.by_service.get_mut(key)
            && let Some(old) = slot.take()
        {
            self.bytes -= old.size();
        }
    }

    /// The payload of the service's healthy set: `{"service", "datacenter",
    /// "index", "instances": [...]}`, the instances as the API shows them.
    pub fn encode(
        &mut self,
        key: &ServiceKey,
        s: &ServiceSnapshot,
        encoding: &dyn Encoding,
    ) -> Bytes {
        let old = self.by_service.remove(key).flatten();
        if let Some(old) = &old {
            self.bytes -= old.size();
        }
        let encode = encoding.instance_encoder(key);
        // Room for the last payload, and for each instance added since as
        // much as an instance took in it: the buffer seldom grows while
        // the set is written.
        let capacity = old.as_ref().map_or(64 + 320 * s.instances.len(), |o| {
            let per = o.payload.len() / o.parts.len().max(1);
            o.payload.len() + 1024 + per.max(320) * s.instances.len().saturating_sub(o.parts.len())
        });
        let mut payload = Vec::with_capacity(capacity);
        payload.extend_from_slice(b"{\"service\":");
        let _ = serde_json::to_writer(&mut payload, key.service.as_str());
        payload.extend_from_slice(b",\"datacenter\":");
        let _ = serde_json::to_writer(&mut payload, key.dc.as_str());
        payload.extend_from_slice(format!(",\"index\":{},\"instances\":[", s.index).as_bytes());
        let mut parts = Vec::with_capacity(s.instances.len());
        let mut last = old
            .as_ref()
            .map(|o| (&o.payload, o.parts.iter().peekable()));
        for inst in s.instances.values().filter(|i| plan::healthy(s, i)) {
            if !parts.is_empty() {
                payload.push(b',');
            }
            let start = payload.len();
            let reused = match &mut last {
                Some((bytes, prev)) if inst.checks.is_empty() => {
                    while prev.next_if(|p| p.id < inst.id).is_some() {}
                    match prev.next_if(|p| p.id == inst.id) {
                        Some(p) if std::ptr::eq(p.instance.as_ptr(), Arc::as_ptr(inst)) => {
                            payload.extend_from_slice(&bytes[p.start as usize..p.end as usize]);
                            true
                        }
                        _ => false,
                    }
                }
                _ => false,
            };
            if !reused {
                encode(inst, &mut payload);
            }
            parts.push(Part {
                id: inst.id.clone(),
                instance: Arc::downgrade(inst),
                start: start as u32,
                end: payload.len() as u32,
            });
        }
        payload.extend_from_slice(b"]}");
        let payload = Bytes::from(payload);
        let encoded = Encoded {
            payload: payload.clone(),
            parts,
        };
        let size = encoded.size();
        let keep =
            (self.bytes + size <= CACHE_BYTES && payload.len() <= u32::MAX as usize).then(|| {
                self.bytes += size;
                encoded
            });
        self.by_service.insert(key.clone(), keep);
        payload
    }
}
