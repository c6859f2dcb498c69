//! The answers hyper writes by itself, before any handler runs: to a
//! request line or head it cannot parse (400), a head beyond its buffer
//! (431), and the like. hyper has no hook for their body, which is empty;
//! this wrapper of the connection's byte stream replaces such an answer,
//! as it is written, with the same status and the API's JSON error body.
//!
//! It recognises them by what no answer of Maxine's has: a 4xx status line
//! with `content-length: 0` at the start of a write (hyper writes such a
//! head alone, then closes the connection). Every 4xx of the router has a
//! JSON body. HTTP/2 is frames, never matched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection's byte stream, with hyper's empty error answers replaced.
pub(super) struct JsonErrors<IO> {
    inner: IO,
    /// A replacement being written: its bytes, how many are written, and
    /// how many of the caller's bytes (the head it replaces) it stands for.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<IO> JsonErrors<IO> {
    pub(super) fn new(inner: IO) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The JSON answer for an empty 4xx head at the start of `buf`, and the
/// length of that head.
fn replacement(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    if !(buf.starts_with(b"HTTP/1.1 4") || buf.starts_with(b"HTTP/1.0 4")) {
        return None;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let empty = lines.any(|l| l.eq_ignore_ascii_case("content-length: 0"));
    if !empty {
        return None;
    }
    let status: u16 = status_line.get(9..12)?.parse().ok()?;
    let (kind, what) = match status {
        400 => ("bad_request", "the request could not be read as HTTP"),
        413 => ("payload_too_large", "the request body is too large"),
        414 => ("uri_too_long", "the request target is too long"),
        431 => ("headers_too_large", "the request head is too large"),
        _ => (
            "bad_request",
            "the request was refused before it could be read",
        ),
    };
    // Both error formats at once: the native API's `error`/`kind`, and the
    // Maxine-compatible `message` (the path was not read, so either may
    // be the caller).
    let body = serde_json::json!({ "error": what, "kind": kind, "message": what }).to_string();
    // Header names in title case, as every other HTTP/1 answer has them.
    let out = format!(
        "{status_line}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    Some((out.into_bytes(), end))
}

impl<IO: AsyncRead + Unpin> AsyncRead for JsonErrors<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for JsonErrors<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none()
            && let Some((bytes, head_len)) = replacement(buf)
        {
            this.pending = Some((bytes, 0, head_len));
        }
        let Some((bytes, written, head_len)) = this.pending.as_mut() else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        while *written < bytes.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let consumed = *head_len;
        this.pending = None;
        Poll::Ready(Ok(consumed))
    }

    /// Vectored writes go straight through (hyper writes a head and a
    /// body in one call), unless the first buffer is an empty error head.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|b| !b.is_empty());
        let ours = self.pending.is_some() || first.is_some_and(|b| replacement(b).is_some());
        match first {
            Some(b) if ours => self.poll_write(cx, b),
            _ => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_empty_4xx_heads_are_replaced_and_with_json() {
        // hyper writes the names in title case (the server asks it to).
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nDate: x\r\n\r\n";
        let (out, used) = replacement(hyper_400).unwrap();
        assert_eq!(used, hyper_400.len());
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(
            head.contains("\r\nContent-Type: application/json\r\n"),
            "{head}"
        );
        assert!(replacement(b"HTTP/1.1 431 x\r\ncontent-length: 0\r\n\r\n").is_some());
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["kind"], "bad_request");
        assert!(v["message"].is_string() && v["error"].is_string());
        // An answer of the router (a body), a success, or a body chunk: untouched.
        for other in [
            &b"HTTP/1.1 404 Not Found\r\ncontent-length: 42\r\n\r\n{}"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"{\"error\": \"x\"}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
        ] {
            assert!(
                replacement(other).is_none(),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
