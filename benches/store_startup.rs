//! Start-up with a large registry on disk, and the memory it takes.
//!
//! Fills a fresh data directory with N registrations (written through the
//! file store as Maxine writes them: one record per instance), starts
//! `maxine serve` on it, and reports the time from spawn to the first
//! correct DNS answer for a restored instance, the server's resident memory
//! then, and the same after a `kill -9` (start-up with redb's crash repair).
//!
//! ```text
//! cargo bench --bench store_startup -- [INSTANCES=1000000] [SERVICES=10000] [--meta] [--cpu N] [--fill DIR | --data DIR] [--redis]
//! ```
//! `--redis` fills a fresh `redis-server` (appendonly, appendfsync always,
//! on a free port) through the Redis store instead, and starts Maxine with
//! `--store redis://...` on it.
//! `--cpu N` pins the server to one core with taskset; `MAXINE_BIN=PATH`
//! starts that build of the server instead of this tree's. `--fill DIR` only
//! writes the registrations into DIR (for experiments by hand) and stops.
//! `--damage` measures the recovery of a damaged file instead: one zeroed
//! 4 KiB page in the middle of the file (the B-tree read around it, the raw
//! pages scanned, a fresh file written), then, on the file that recovery
//! wrote, a zeroed first page (header and commit slots: nothing but the raw
//! scan is left).
//! `--data DIR` starts the server on DIR as `--fill` left it (same INSTANCES
//! and SERVICES) instead of filling a fresh directory, so that two builds
//! can be timed on the same data (`benches/ab.sh`). The runs leave DIR as a
//! `kill -9` left it: give each run its own copy.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maxine::core::{Health, Restored};

#[path = "support/registrations.rs"]
mod registrations;
// The tests' Redis harness: append-only with `appendfsync always`, on a
// free port, its files in a temporary directory.
#[path = "../tests/common/redis.rs"]
#[allow(dead_code)]
mod redis_server;
use maxine::store::{FileStore, Op, RedisStore, Store, WriteBatch, codec};
use registrations::ip;

fn main() {
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let cpu = args.iter().position(|a| a == "--cpu").map(|i| {
        let c = args[i + 1].clone();
        args.drain(i..=i + 1);
        c
    });
    // Registrations as the README's example (address, port, version, TTL);
    // with --meta, one tag and one metadata entry each as well.
    let meta = args.iter().any(|a| a == "--meta");
    args.retain(|a| a != "--meta");
    let damage = args.iter().any(|a| a == "--damage");
    args.retain(|a| a != "--damage");
    let redis = args.iter().any(|a| a == "--redis");
    args.retain(|a| a != "--redis");
    let fill_only = args.iter().position(|a| a == "--fill").map(|i| {
        let d = args[i + 1].clone();
        args.drain(i..=i + 1);
        d
    });
    let data = args.iter().position(|a| a == "--data").map(|i| {
        let d = args[i + 1].clone();
        args.drain(i..=i + 1);
        d
    });
    assert!(
        !(redis && data.is_some()),
        "--data is a file store's directory; --redis fills its own server"
    );
    let n: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let services: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    if let Some(d) = fill_only {
        fill(
            &mut FileStore::open(std::path::Path::new(&d)).unwrap(),
            n,
            services,
            meta,
        );
        println!("filled {d} with {n} instances in {services} services");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = data.as_deref().map_or(tmp.path(), std::path::Path::new);
    let t = Instant::now();
    let redis_server = redis.then(redis_server::RedisServer::start);
    let store = redis_server.as_ref().map(redis_server::RedisServer::url);
    if data.is_some() {
        let size = std::fs::metadata(dir.join(FileStore::FILE_NAME))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(FileStore::FILE_NAME).display()))
            .len();
        println!(
            "using {} ({n} instances in {services} services, {} MiB on disk)",
            dir.display(),
            size >> 20
        );
    } else {
        // The store is closed again before Maxine opens it (redb locks its file).
        match &store {
            Some(url) => fill(&mut RedisStore::open(url).unwrap(), n, services, meta),
            None => fill(&mut FileStore::open(dir).unwrap(), n, services, meta),
        }
        let size = match &store {
            Some(_) => dir_size(redis_server.as_ref().expect("started").dir()),
            None => std::fs::metadata(dir.join(FileStore::FILE_NAME))
                .unwrap()
                .len(),
        };
        println!(
            "filled {n} instances in {services} services in {:.1} s ({} MiB on disk{})",
            t.elapsed().as_secs_f64(),
            size >> 20,
            if redis {
                ", Redis's append-only file"
            } else {
                ""
            }
        );
    }
    let probe = (
        format!("i{}.s{}.dc1.maxine.", n - 1, (n - 1) % services),
        ip(n - 1),
    );
    if damage {
        let file = dir.join(FileStore::FILE_NAME);
        for (run, page) in [
            ("a zeroed page in the middle", None),
            ("a zeroed first page (header)", Some(0)),
        ] {
            let mut bytes = std::fs::read(&file).unwrap();
            let page = page.unwrap_or(bytes.len() / 4096 / 2);
            bytes[page * 4096..(page + 1) * 4096].fill(0);
            std::fs::write(&file, bytes).unwrap();
            let (mut child, dns) = spawn(dir, cpu.as_deref(), None);
            let took = first_answer(dns, &probe).expect("an answer after the recovery");
            println!(
                "recovery of {run}: first DNS answer after {:.2} s",
                took.as_secs_f64()
            );
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        return;
    }
    for (run, crash) in [("clean start", false), ("start after kill -9", true)] {
        let (mut child, dns) = spawn(dir, cpu.as_deref(), store.as_deref());
        let t0 = Instant::now();
        let took = first_answer(dns, &probe);
        let rss = rss_mib(child.id());
        std::thread::sleep(Duration::from_secs(2));
        let rss_later = rss_mib(child.id());
        println!(
            "{run}: first DNS answer after {:.2} s; RSS {rss} MiB then, {rss_later} MiB 2 s later",
            took.unwrap_or_else(|| panic!("no answer after {:?}", t0.elapsed()))
                .as_secs_f64()
        );
        if crash {
            let _ = child.kill();
        } else {
            // A clean stop first, so the kill -9 run after it is the only unclean one.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            let (mut c, dns) = spawn(dir, cpu.as_deref(), store.as_deref());
            first_answer(dns, &probe).expect("up again");
            let _ = c.kill();
            let _ = c.wait();
            continue;
        }
        let _ = child.wait();
    }
}

/// N registrations as Maxine stores them: built by the registry's bulk
/// restore (cheap), encoded by the store's codec, committed in one batch.
fn fill(store: &mut dyn Store, n: usize, services: usize, meta: bool) {
    let now = std::time::Instant::now();
    let registry = registrations::registry(now);
    let names = registrations::service_keys(services);
    let items = (0..n)
        .map(|i| Restored {
            key: names[i % services].clone(),
            id: registrations::id(i),
            spec: registrations::spec(i, meta, false),
            health: Health::Passing,
            index: i as u64 + 1,
        })
        .collect();
    registry
        .restore(items, n as u64, now)
        .expect("valid indexes");
    let mut ops = Vec::with_capacity(n);
    for snap in registry.services() {
        for inst in snap.instances.values() {
            ops.push(Op::Put(inst.index, codec::encode(inst)));
        }
    }
    store
        .commit(&WriteBatch {
            ops,
            clear: false,
            last_index: n as u64,
        })
        .unwrap();
}

fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn spawn(
    dir: &std::path::Path,
    cpu: Option<&str>,
    store: Option<&str>,
) -> (Child, std::net::SocketAddr) {
    let dns: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    // MAXINE_BIN measures another build (the server rejects unknown
    // MAXINE_* variables, so it is not passed on).
    let bin = std::env::var("MAXINE_BIN").unwrap_or(env!("CARGO_BIN_EXE_maxine").into());
    let mut cmd = match cpu {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.args(["-c", c, &bin]);
            t
        }
        None => Command::new(&bin),
    };
    cmd.env_remove("MAXINE_BIN");
    let child = cmd
        .arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .args(["--dns-addr", &dns.to_string(), "--http-addr", &http])
        .args(["--zone-dir", concat!(env!("CARGO_MANIFEST_DIR"), "/zones")])
        .args(["--log-level", "warn"])
        .args(store.map(|url| ["--store", url]).into_iter().flatten())
        .stdin(Stdio::null())
        .spawn()
        .expect("maxine starts");
    (child, dns)
}

/// Asks for the probe name until the answer carries its address.
fn first_answer(dns: std::net::SocketAddr, probe: &(String, String)) -> Option<Duration> {
    let t0 = Instant::now();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let q = query(&probe.0);
    let want: Vec<u8> = probe.1.split('.').map(|o| o.parse().unwrap()).collect();
    let mut buf = [0u8; 1500];
    while t0.elapsed() < Duration::from_secs(120) {
        sock.send_to(&q, dns).unwrap();
        if let Ok((len, _)) = sock.recv_from(&mut buf)
            && len >= 4
            && buf[..len].ends_with(&want)
        {
            return Some(t0.elapsed());
        }
    }
    None
}

/// A plain A query, no EDNS.
fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb >> 10)
}

fn dir_size(dir: &std::path::Path) -> u64 {
    walk(dir)
        .iter()
        .map(|p| p.metadata().map_or(0, |m| m.len()))
        .sum()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
