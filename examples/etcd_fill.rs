//! Fills etcd with N registrations for the start-up benchmark
//! (benches/etcd-startup.sh): the keys and values a node's proposer writes
//! (`maxine::store::etcd::fill`, the same encoding function), in large
//! transactions, so that a million instances take seconds, not the ten
//! minutes the API needs. The registrations are those of the other
//! start-up benchmarks (benches/support/registrations.rs): ids `i<N>` in
//! services `s<N % SERVICES>` of datacenter `dc1`, addresses `10.x.y.z`,
//! port 8080, TTL 1 h.
//!
//!     cargo run --release --example etcd_fill -- HOST:PORT[,HOST:PORT] PREFIX N [SERVICES=10000] [PER_TXN=128]
//!
//! PER_TXN keys per transaction: 128 by default, the largest batch a node
//! writes (`batch.rs`), so that as many values share one revision as in a
//! cluster written through the API at full batches; at most the members'
//! `--max-txn-ops`.

use std::time::Instant;

use maxine::store::etcd::fill::fill;

#[path = "../benches/support/registrations.rs"]
#[allow(dead_code)]
mod registrations;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        anyhow::bail!(
            "usage: etcd_fill HOST:PORT[,HOST:PORT] PREFIX N [SERVICES=10000] [PER_TXN=128]"
        );
    }
    let endpoints: Vec<String> = args[0].split(',').map(String::from).collect();
    let prefix = &args[1];
    let n: usize = args[2].parse()?;
    let services: usize = args.get(3).map_or(Ok(10_000), |a| a.parse())?;
    let per_txn: usize = args.get(4).map_or(Ok(128), |a| a.parse())?;
    let names = registrations::service_keys(services.max(1));
    let items = (0..n).map(move |i| {
        (
            names[i % names.len()].clone(),
            registrations::id(i),
            registrations::spec(i, false, false),
        )
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let t = Instant::now();
    let revision = rt.block_on(fill(&endpoints, prefix, items, per_txn))?;
    println!(
        "wrote {n} instances in {} services into etcd in {:.1} s (revision {revision})",
        services.max(1),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
