//! Event stream consumers for the events benchmark (benches/events-ab.sh):
//! STREAMS streams of `GET /v1/events` on one thread, each reading and
//! decoding every event until the server ends it, plain or (`gzip`) asking
//! for gzip as browsers and most HTTP clients do. At the end it prints what
//! each stream got (`consumers streams=N events=MIN..MAX wire_bytes=W
//! bytes=B failed=F`); a gzip stream that ends is checked against its
//! trailer (CRC-32 and length).
//!
//!     cargo run --release --example sse_consumers -- http://127.0.0.1:8080/v1/events 100 gzip

use std::io::Write;

use flate2::write::GzDecoder;

/// What one stream got.
#[derive(Default)]
struct Got {
    events: u64,
    wire: u64,
    bytes: u64,
    failed: bool,
}

/// Counts the events (blocks ended by an empty line) of decoded bytes.
#[derive(Default)]
struct Counter {
    events: u64,
    bytes: u64,
    last_newline: bool,
}

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // memchr, not a loop over every byte: the consumers share one core
        // with the load generator, and what they spend is taken from it.
        let mut last = None;
        for at in memchr::memchr_iter(b'\n', buf) {
            let previous_was_newline = match last {
                Some(p) => p + 1 == at,
                None => at == 0 && self.last_newline,
            };
            if previous_was_newline {
                self.events += 1;
            }
            last = Some(at);
        }
        if !buf.is_empty() {
            self.last_newline = last == Some(buf.len() - 1);
        }
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn consume(client: reqwest::Client, url: String, gzip: bool) -> Got {
    let mut got = Got::default();
    let mut req = client.get(&url);
    if gzip {
        req = req.header("accept-encoding", "gzip");
    }
    let Ok(mut res) = req.send().await else {
        got.failed = true;
        return got;
    };
    if !res.status().is_success() {
        got.failed = true;
        return got;
    }
    let gzipped = res
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v == "gzip");
    let mut plain = Counter::default();
    let mut decoder = GzDecoder::new(Counter::default());
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => {
                got.wire += chunk.len() as u64;
                let ok = if gzipped {
                    decoder.write_all(&chunk).is_ok()
                } else {
                    plain.write_all(&chunk).is_ok()
                };
                if !ok {
                    got.failed = true;
                    break;
                }
            }
            Ok(None) => break,
            Err(_) => {
                got.failed = true;
                break;
            }
        }
    }
    let counted = if gzipped {
        match decoder.finish() {
            Ok(c) => c,
            Err(_) => {
                got.failed = true;
                return got;
            }
        }
    } else {
        plain
    };
    got.events = counted.events;
    got.bytes = counted.bytes;
    got
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080/v1/events".into());
    let streams: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let gzip = args.next().is_some_and(|a| a == "gzip");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(std::io::Error::other)?;
        let tasks: Vec<_> = (0..streams)
            .map(|_| tokio::spawn(consume(client.clone(), url.clone(), gzip)))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.unwrap_or(Got {
                failed: true,
                ..Got::default()
            }));
        }
        let min = all.iter().map(|g| g.events).min().unwrap_or(0);
        let max = all.iter().map(|g| g.events).max().unwrap_or(0);
        println!(
            "consumers streams={} events={min}..{max} wire_bytes={} bytes={} failed={}",
            all.len(),
            all.iter().map(|g| g.wire).sum::<u64>(),
            all.iter().map(|g| g.bytes).sum::<u64>(),
            all.iter().filter(|g| g.failed).count(),
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events (a newline right after a newline) are counted the same
    /// however the stream is cut into chunks, including cuts between the
    /// two newlines that end an event.
    #[test]
    fn events_are_counted_across_every_chunk_boundary() {
        let stream =
            b"retry: 1000\n\nid: 1\nevent: change\ndata: {}\n\nid: 2\ndata: x\n\n: ping\n\n\n";
        let expected = stream.windows(2).filter(|w| w == b"\n\n").count() as u64;
        assert_eq!(expected, 5);
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let mut c = Counter::default();
                for part in [&stream[..a], &stream[a..b], &stream[b..]] {
                    c.write_all(part).unwrap();
                }
                assert_eq!(
                    (c.events, c.bytes),
                    (expected, stream.len() as u64),
                    "cut at {a} and {b}"
                );
            }
        }
    }
}
