//! The DNS hot path: parse a query, look up its ready answer, copy it out.
//! Also the registry's own lookup and the cost of rebuilding answers when a
//! service changes. Run: `cargo bench --bench dns_answer`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use maxine::core::{
    Address, InstanceId, InstanceSpec, Query, ServiceKey, ServiceName, VersionSelector,
};
use maxine::dns::testing::{query, sample};
use maxine::dns::wire::types;

fn hot_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("respond");
    // 1k and 100k instances, three per service as in the load data set.
    for (services, per) in [(334usize, 3usize), (33_334, 3)] {
        let (_registry, answers) = sample(services, per, 32);
        let total = services * per;
        let cases = [
            ("A", query("svc7.maxine.", types::A, false)),
            ("A+edns", query("svc7.maxine.", types::A, true)),
            ("SRV", query("_svc7._tcp.maxine.", types::SRV, true)),
            ("NXDOMAIN", query("nothing-here.maxine.", types::A, false)),
        ];
        let mut out = Vec::with_capacity(4096);
        for (what, q) in cases {
            g.bench_with_input(BenchmarkId::new(what, total), &q, |b, q| {
                b.iter(|| black_box(answers.respond(black_box(q), &mut out, false)))
            });
        }
    }
    g.finish();
}

fn registry(c: &mut Criterion) {
    let (registry, _answers) = sample(334, 3, 32);
    let q = Query {
        dc: None,
        service: ServiceName::new("svc7").unwrap(),
        version: VersionSelector::parse("v2"),
        healthy_only: true,
    };
    c.bench_function("registry_answer_by_version", |b| {
        b.iter(|| black_box(registry.answer(black_box(&q))))
    });

    // A write: new snapshot plus the DNS names of that service rebuilt.
    let key = ServiceKey::new(
        registry.local_dc().clone(),
        ServiceName::new("svc7").unwrap(),
    );
    let id = InstanceId::new("bench").unwrap();
    let spec = InstanceSpec::new(Address::Ip("10.99.0.1".parse().unwrap()), 80);
    c.bench_function("register_replace_with_answer_rebuild", |b| {
        b.iter(|| {
            registry
                .register(key.clone(), id.clone(), spec.clone(), Instant::now())
                .unwrap()
        })
    });
}

criterion_group!(benches, hot_path, registry);
criterion_main!(benches);
