//! Gzip for event streams, compressed once for every consumer.
//!
//! A gzip stream is a header, one deflate stream and a trailer (the CRC-32
//! and length of everything in it). A [`Piece`] is deflate blocks made by a
//! fresh compressor and ended with a sync flush, never final: it refers to
//! nothing before itself, so pieces joined in any order are one valid
//! deflate stream. A delivery that a hundred consumers share is compressed
//! once into a piece, and each consumer's [`Stream`] adds the header before
//! its first piece and, when it ends, the trailer from the pieces' CRCs
//! combined (no byte is read twice).
//!
//! ```text
//!   consumer A: header | piece 1 | piece 2 | piece 3 | ... | final block, CRC, length
//!   consumer B: header | piece 2 | piece 3 | ...
//! ```

use std::cell::RefCell;

use flate2::{Compress, Compression, FlushCompress};
use hyper::body::Bytes;

/// Whether a request's `Accept-Encoding` takes gzip (RFC 9110, 12.5.3):
/// `gzip` (or `x-gzip`, or `*` when gzip is not named) with a weight above 0.
pub fn accepted(accept_encoding: Option<&str>) -> bool {
    let Some(list) = accept_encoding else {
        return false;
    };
    let mut star = false;
    for item in list.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let weight_zero = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            return !weight_zero;
        }
        if coding == "*" {
            star = !weight_zero;
        }
    }
    star
}

/// Data compressed on its own: deflate blocks, sync-flushed, not final.
#[derive(Debug, Clone)]
pub struct Piece {
    bytes: Bytes,
    /// The CRC-32 and length of the data it holds.
    crc: u32,
    len: u64,
}

thread_local! {
    /// One compressor per thread, reset for each piece (its tables are
    /// kept; its history is not).
    static COMPRESSOR: RefCell<Compress> =
        RefCell::new(Compress::new(Compression::fast(), false));
}

impl Piece {
    /// `data`, compressed.
    pub fn of(data: &[u8]) -> Piece {
        let bytes = COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            c.reset();
            let mut out = Vec::with_capacity(data.len() / 4 + 64);
            loop {
                let read = c.total_in() as usize;
                if c.compress_vec(&data[read..], &mut out, FlushCompress::Sync)
                    .is_err()
                {
                    // Not expected from a compressor that was just reset;
                    // the data goes out uncompressed rather than broken.
                    return stored(data);
                }
                // The flush is done once every byte is in and the output
                // was not filled up (zlib's rule).
                if c.total_in() as usize == data.len() && out.len() < out.capacity() {
                    break;
                }
                out.reserve(out.capacity());
            }
            out
        });
        Piece::holding(bytes, data)
    }

    /// The piece `bytes` (deflate blocks) that decode to `data`.
    fn holding(bytes: Vec<u8>, data: &[u8]) -> Piece {
        Piece {
            bytes: bytes.into(),
            crc: crc32fast::hash(data),
            len: data.len() as u64,
        }
    }
}

/// `data` as stored (uncompressed) deflate blocks, not final: a piece
/// like any other.
fn stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 5 * (data.len() / 65535 + 1));
    for block in data.chunks(65535) {
        let len = block.len() as u16;
        // BFINAL = 0, BTYPE = 00, then LEN and its complement.
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out
}

/// One consumer's gzip stream: what it has sent so far.
#[derive(Debug, Default)]
pub struct Stream {
    started: bool,
    crc: crc32fast::Hasher,
}

/// The gzip header: deflate, no name or time, from an unknown system.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

impl Stream {
    /// The writes that send `piece` next (the header first in a new stream).
    pub fn send(&mut self, piece: &Piece) -> impl Iterator<Item = Bytes> + use<> {
        self.crc.combine(&crc32fast::Hasher::new_with_initial_len(
            piece.crc, piece.len,
        ));
        let header =
            (!std::mem::replace(&mut self.started, true)).then(|| Bytes::from_static(&HEADER));
        header.into_iter().chain([piece.bytes.clone()])
    }

    /// The last write: an empty final block and the trailer.
    pub fn end(mut self) -> Bytes {
        let mut out = Vec::with_capacity(HEADER.len() + 10);
        if !std::mem::replace(&mut self.started, true) {
            out.extend_from_slice(&HEADER);
        }
        // BFINAL = 1, fixed codes, end of block: 3 bits and 7, in 2 bytes.
        out.extend_from_slice(&[0x03, 0x00]);
        let len = self.crc.total_len();
        out.extend_from_slice(&self.crc.finalize().to_le_bytes());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.into()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn pieces_joined_in_any_order_are_one_gzip_stream() {
        let a = b"id: 1\nevent: change\ndata: {\"x\":1}\n\n".repeat(50);
        let b = b"id: 2\nevent: change\ndata: {\"x\":2}\n\n".to_vec();
        let empty = Vec::new();
        for order in [[&a, &b, &empty], [&b, &empty, &a]] {
            let mut s = Stream::default();
            let mut wire = Vec::new();
            let mut plain = Vec::new();
            for data in order {
                for w in s.send(&Piece::of(data)) {
                    wire.extend_from_slice(&w);
                }
                plain.extend_from_slice(data);
            }
            wire.extend_from_slice(&s.end());
            assert_eq!(gunzip(&wire).unwrap(), plain);
        }
        assert!(
            Piece::of(&a).bytes.len() < a.len() / 10,
            "repeated data is compressed"
        );
        // A stream with nothing in it is still a valid gzip stream.
        assert_eq!(gunzip(&Stream::default().end()).unwrap(), b"");
    }

    #[test]
    fn stored_blocks_are_a_piece_like_a_compressed_one() {
        let data = b"x".repeat(70_000);
        let stored = Piece::holding(stored(&data), &data);
        let mut s = Stream::default();
        let mut wire: Vec<u8> = s.send(&stored).flat_map(|b| b.to_vec()).collect();
        wire.extend(s.send(&Piece::of(b"yz")).flat_map(|b| b.to_vec()));
        wire.extend_from_slice(&s.end());
        let mut want = data.clone();
        want.extend_from_slice(b"yz");
        assert_eq!(gunzip(&wire).unwrap(), want);
    }

    #[test]
    fn a_wrong_trailer_is_caught_by_the_decoder() {
        let p = Piece::of(b"hello");
        let mut s = Stream::default();
        let mut wire: Vec<u8> = s.send(&p).flat_map(|b| b.to_vec()).collect();
        let mut end = s.end().to_vec();
        let n = end.len();
        end[n - 5] ^= 1; // one bit of the CRC
        wire.extend_from_slice(&end);
        assert!(gunzip(&wire).is_err());
    }

    #[test]
    fn accept_encoding_is_read_as_rfc_9110_says() {
        for (header, gzip) in [
            (None, false),
            (Some(""), false),
            (Some("gzip"), true),
            (Some("br, GZIP;q=0.5"), true),
            (Some("gzip;q=0"), false),
            (Some("gzip; q=0.000"), false),
            (Some("x-gzip"), true),
            (Some("*"), true),
            (Some("*;q=0"), false),
            (Some("gzip;q=0, *"), false),
            (Some("identity"), false),
            (Some("deflate, br"), false),
        ] {
            assert_eq!(accepted(header), gzip, "{header:?}");
        }
    }
}
