//! The memory the registry (src/core) takes per instance.
//!
//! Builds a registry of N instances in S services (as `store_startup`'s
//! fill: address, port, version, TTL; `--meta` adds a tag and a metadata
//! entry each, `--compat` the fields of a Maxine SDK registration) and
//! prints the bytes the allocator handed out and the resident memory
//! (VmRSS), before and after, per instance.
//!
//! ```text
//! cargo bench --bench registry_memory -- [INSTANCES=1000000] [SERVICES=10000] [--register] [--meta] [--compat] [--dns]
//! ```
//! `--dns` keeps the DNS answer cache current as well, as the server does,
//! so the figures are the registry's and the cache's together.
//! By default the instances come in through a bulk restore, as at start-up.
//! `--register` registers them one by one instead, a millisecond apart (so
//! every instance has its own expiry slot, as in a server that has run for
//! a while), then lets every TTL pass once so the timers are spread as
//! heartbeats leave them.

// A counting wrapper around the allocator the server uses; it only forwards.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use maxine::core::{Health, Restored};

#[path = "support/registrations.rs"]
mod registrations;
use registrations::{TTL, id, spec};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to mimalloc; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut flag = |name: &str| {
        let on = args.iter().any(|a| a == name);
        args.retain(|a| a != name);
        on
    };
    let register = flag("--register");
    let meta = flag("--meta");
    let compat = flag("--compat");
    let dns = flag("--dns");
    let n: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let services: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);

    let t0 = Instant::now();
    let registry = registrations::registry(t0);
    let names = registrations::service_keys(services);
    let (live0, rss0) = (live(), rss_kib());
    let answers = dns.then(|| maxine::dns::testing::answers_for(&registry, 32));
    let started = Instant::now();
    if register {
        for i in 0..n {
            let at = t0 + Duration::from_millis(i as u64);
            registry
                .register(
                    names[i % services].clone(),
                    id(i),
                    spec(i, meta, compat),
                    at,
                )
                .unwrap();
        }
        // Every instance heartbeats once and its first timer fires: the
        // timers are then where a running server has them.
        let later = t0 + Duration::from_millis(n as u64);
        for i in 0..n {
            registry
                .heartbeat(
                    &names[i % services],
                    &id(i),
                    later + Duration::from_millis(1 + i as u64),
                )
                .unwrap();
        }
        assert_eq!(registry.expire(later + TTL), 0);
    } else {
        let mut r = registry.restorer(t0);
        for i in 0..n {
            r.add(Restored {
                key: names[i % services].clone(),
                id: id(i),
                spec: spec(i, meta, compat),
                health: Health::Passing,
                index: i as u64 + 1,
            })
            .expect("a valid index");
        }
        r.finish(n as u64).expect("a valid index");
    }
    let took = started.elapsed();
    // Let mimalloc return what the build freed.
    std::thread::sleep(Duration::from_millis(300));
    let (live1, rss1) = (live(), rss_kib());
    let passing: usize = registry.services().iter().map(|s| s.passing_count()).sum();
    assert_eq!(passing, n);
    println!(
        "{n} instances in {services} services ({}{}{}{}) built in {:.1} s",
        if register { "register" } else { "restore" },
        if meta { ", meta" } else { "" },
        if compat { ", compat" } else { "" },
        if dns {
            ", with the DNS answer cache"
        } else {
            ""
        },
        took.as_secs_f64()
    );
    println!(
        "allocated: {} MiB, {} bytes per instance",
        (live1 - live0) >> 20,
        (live1 - live0) / n as isize
    );
    println!(
        "RSS: {} -> {} MiB, {} bytes per instance",
        rss0 >> 10,
        rss1 >> 10,
        (rss1 - rss0) * 1024 / n as isize
    );
    println!(
        "size_of: Instance {} bytes",
        std::mem::size_of::<maxine::core::Instance>()
    );
    drop(answers);
    drop(registry);
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn rss_kib() -> isize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}
