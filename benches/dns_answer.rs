//! The DNS hot path: parse a query, look up its ready answer, copy it out.
//! Also the registry's own lookup and the cost of a change (new snapshot
//! plus the service's DNS names rebuilt). Run: `cargo bench --bench dns_answer`.
//! Data sets are built on first use, so a filter (`-- respond/A`) skips the
//! 1M set when it is not needed. `-- counters` compares the query path
//! with and without the metrics counters.

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use maxine::core::{
    Address, InstanceId, InstanceSpec, Query, QueryContext, Registry, ServiceKey, ServiceName,
    Strategy, Transport, VersionSelector,
};
use maxine::dns::ReadyAnswers;
use maxine::dns::testing::{query, sample, sample_with};
use maxine::dns::wire::types;

/// Three instances per service, as in the load data set: 1k or 1M instances.
fn data(million: bool) -> &'static (Registry, ReadyAnswers) {
    static SMALL: OnceLock<(Registry, ReadyAnswers)> = OnceLock::new();
    static LARGE: OnceLock<(Registry, ReadyAnswers)> = OnceLock::new();
    if million {
        LARGE.get_or_init(|| sample(333_334, 3, 32))
    } else {
        SMALL.get_or_init(|| sample(334, 3, 32))
    }
}

/// Ten services of 200 instances: a change rebuilds a large service.
fn large_services() -> &'static (Registry, ReadyAnswers) {
    static DATA: OnceLock<(Registry, ReadyAnswers)> = OnceLock::new();
    DATA.get_or_init(|| sample(10, 200, 32))
}

fn hot_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("respond");
    for (label, million) in [("1k", false), ("1M", true)] {
        let cases = [
            ("A", query("svc7.maxine.", types::A, false)),
            ("A+edns", query("svc7.maxine.", types::A, true)),
            ("SRV", query("_svc7._tcp.maxine.", types::SRV, true)),
            ("NXDOMAIN", query("nothing-here.maxine.", types::A, false)),
        ];
        for (what, q) in cases {
            g.bench_function(format!("{what}/{label}"), |b| {
                let answers = &data(million).1;
                let mut out = Vec::with_capacity(4096);
                let ctx = QueryContext::new(Some([127, 0, 0, 1].into()), Transport::Udp);
                b.iter(|| black_box(answers.respond(black_box(&q), &mut out, ctx)))
            });
        }
    }
    g.finish();
}

/// The metrics counters' share of the query path: a UDP worker answers and
/// then counts the response in its own slot (`src/telemetry/dns_counters.rs`);
/// with metrics off it only answers. Same data and queries as `respond/*/1k`.
fn counters(c: &mut Criterion) {
    let mut g = c.benchmark_group("counters");
    let slot = maxine::telemetry::metrics::DnsCounters::default().udp_worker();
    let cases = [
        ("A", query("svc7.maxine.", types::A, false)),
        ("SRV", query("_svc7._tcp.maxine.", types::SRV, true)),
        ("NXDOMAIN", query("nothing-here.maxine.", types::A, false)),
    ];
    for (what, q) in cases {
        let answers = &data(false).1;
        let ctx = QueryContext::new(Some([127, 0, 0, 1].into()), Transport::Udp);
        let mut out = Vec::with_capacity(4096);
        g.bench_function(format!("{what}/off"), |b| {
            b.iter(|| black_box(answers.respond(black_box(&q), &mut out, ctx)))
        });
        g.bench_function(format!("{what}/on"), |b| {
            b.iter(|| {
                let answered = answers.respond(black_box(&q), &mut out, ctx);
                slot.answered(&out);
                black_box(answered)
            })
        });
    }
    g.finish();
}

/// The query path by load-balancing strategy, same data (1k instances,
/// three per service): what a strategy's choice among its precomputed
/// orders costs against round robin's rotating window
/// (docs/adr/0007-answer-variants-for-strategies.md).
fn strategies(c: &mut Criterion) {
    let mut g = c.benchmark_group("strategy");
    for strategy in [
        Strategy::RoundRobin,
        Strategy::Sticky,
        Strategy::Weighted,
        Strategy::Random,
    ] {
        let (_registry, answers) = sample_with(334, 3, 32, strategy);
        for (what, q) in [
            ("A", query("svc7.maxine.", types::A, false)),
            ("SRV", query("_svc7._tcp.maxine.", types::SRV, true)),
        ] {
            g.bench_function(format!("{what}/{strategy}"), |b| {
                let mut out = Vec::with_capacity(4096);
                let ctx = QueryContext::new(Some([127, 0, 0, 1].into()), Transport::Udp);
                b.iter(|| black_box(answers.respond(black_box(&q), &mut out, ctx)))
            });
        }
    }
    g.finish();
}

fn registry(c: &mut Criterion) {
    c.bench_function("registry/answer_by_version", |b| {
        let registry = &data(false).0;
        let q = Query {
            dc: None,
            service: ServiceName::new("svc7").unwrap(),
            version: VersionSelector::parse("v2"),
            healthy_only: true,
        };
        let ctx = QueryContext::new(None, Transport::Udp);
        b.iter(|| black_box(registry.select(black_box(&q), &ctx)))
    });
    type DataSet = fn() -> &'static (Registry, ReadyAnswers);
    let sets: [(&str, DataSet); 3] = [
        ("1k", || data(false)),
        ("1M", || data(true)),
        ("200-per-service", large_services),
    ];
    for (label, set) in sets {
        c.bench_function(
            &format!("registry/register_with_answer_rebuild/{label}"),
            |b| {
                let registry = &set().0;
                let key = ServiceKey::new(
                    registry.local_dc().clone(),
                    ServiceName::new("svc7").unwrap(),
                );
                let id = InstanceId::new("bench").unwrap();
                let spec = InstanceSpec::new(Address::Ip("10.99.0.1".parse().unwrap()), 80);
                b.iter(|| {
                    registry
                        .register(key.clone(), id.clone(), spec.clone(), Instant::now())
                        .unwrap()
                })
            },
        );
    }
}

criterion_group!(benches, hot_path, counters, strategies, registry);
criterion_main!(benches);
