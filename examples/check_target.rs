//! A small, fast HTTP target for the health check benchmark
//! (benches/checks.sh): listens on `127.0.0.1:PORT .. PORT+COUNT-1` on one
//! thread, answers every request `200 ok` over kept-alive connections, and
//! prints the requests it answered each second (`requests_per_s N`).
//!
//!     cargo run --release --example check_target -- 30000 100

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30000);
    let count: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let hits = Arc::new(AtomicU64::new(0));
        for p in port..port.saturating_add(count) {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", p)).await?;
            let hits = hits.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let _ = stream.set_nodelay(true);
                    let hits = hits.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |_req| {
                            hits.fetch_add(1, Ordering::Relaxed);
                            async { Ok::<_, Infallible>(hyper::Response::new("ok".to_string())) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        }
        println!("listening on 127.0.0.1:{port}..{}", port + count - 1);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.tick().await;
        let mut last = 0;
        loop {
            tick.tick().await;
            let now = hits.load(Ordering::Relaxed);
            println!("requests_per_s {}", now - last);
            last = now;
        }
    })
}
