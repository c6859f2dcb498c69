//! The wire format of `GET /v1/federation/stream`: length-prefixed frames.
//!
//! ```text
//!   frame  = length (4 bytes, big-endian) + postcard encoding of Frame
//!   stream = Hello, then (SnapshotStart, Put*, Mark{snapshot_end}) when the
//!            receiver must replace what it holds, then (Put | Remove)* Mark
//!            per delivery of the change feed, KeepAlive while idle
//! ```
//!
//! Instances travel as store codec records (`store::codec`), the format of
//! the journal and of snapshot files: one encoding of an instance.

use serde::{Deserialize, Serialize};

/// The largest frame a receiver accepts (one instance record, with room).
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The first frame: the sender's datacenter and change index.
    Hello { dc: String, index: u64 },
    /// The whole catalog follows, as of the sender's `index`: the receiver
    /// replaces what it holds from this sender.
    SnapshotStart { index: u64 },
    /// An instance as its datacenter holds it (a store codec record, which
    /// names the datacenter).
    Put { record: Vec<u8> },
    /// An instance removed in its datacenter.
    Remove {
        dc: String,
        service: String,
        id: String,
    },
    /// Everything up to the sender's `index` has been sent: the receiver's
    /// resume point once it has applied what came before.
    Mark { index: u64, snapshot_end: bool },
    /// Nothing to send; the sender is at `index`.
    KeepAlive { index: u64 },
}

/// Appends `frame`, length first.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let body = postcard::to_allocvec(frame).expect("frames always encode");
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
}

/// Why a stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {0} bytes is larger than {MAX_FRAME}")]
    TooLarge(usize),
    #[error("a frame does not decode: {0}")]
    Decode(String),
}

/// Splits frames out of bytes as they arrive.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf` (what is before it was read):
    /// bytes are moved down only when a chunk arrives, never per frame.
    at: usize,
}

impl Reader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.at);
        self.at = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let rest = &self.buf[self.at..];
        if rest.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if rest.len() < 4 + len {
            return Ok(None);
        }
        let frame =
            postcard::from_bytes(&rest[4..4 + len]).map_err(|e| FrameError::Decode(e.to_string()));
        self.at += 4 + len;
        frame.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_back_out_of_any_chunking() {
        let frames = [
            Frame::Hello {
                dc: "dc2".into(),
                index: 7,
            },
            Frame::Put {
                record: vec![1, 2, 3],
            },
            Frame::Mark {
                index: 9,
                snapshot_end: false,
            },
        ];
        let mut bytes = Vec::new();
        for f in &frames {
            encode(f, &mut bytes);
        }
        for chunk in [1, 3, 7, bytes.len()] {
            let mut r = Reader::default();
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                r.push(piece);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames);
        }
    }

    #[test]
    fn a_hostile_length_is_refused_not_allocated() {
        let mut r = Reader::default();
        r.push(&u32::MAX.to_be_bytes());
        assert!(r.next_frame().is_err());
    }
}
