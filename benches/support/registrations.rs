//! The registrations the registry benchmarks build, in one place so that
//! `store_startup` and `registry_memory` measure the same shape: README-sized
//! instances (address, port, version, TTL), ids `i<N>`, addresses `10.x.y.z`,
//! spread round-robin over services `s<N>` of datacenter `dc1`.

use std::time::{Duration, Instant};

use maxine::core::{
    Address, CompatFields, Datacenter, InstanceId, InstanceSpec, Registry, RegistryConfig,
    ServiceKey, ServiceName,
};

pub const TTL: Duration = Duration::from_secs(3600);

pub fn registry(now: Instant) -> Registry {
    Registry::new(
        RegistryConfig {
            local_dc: Datacenter::new("dc1").unwrap(),
            reap_after: Duration::from_secs(600),
        },
        now,
    )
}

/// The keys of services `s0` .. `s<n-1>`; instance `i` belongs to `i % n`.
pub fn service_keys(n: usize) -> Vec<ServiceKey> {
    (0..n)
        .map(|s| {
            ServiceKey::new(
                Datacenter::new("dc1").unwrap(),
                ServiceName::new(&format!("s{s}")).unwrap(),
            )
        })
        .collect()
}

pub fn id(i: usize) -> InstanceId {
    InstanceId::new(&format!("i{i}")).unwrap()
}

pub fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

/// Instance `i`: two versions live per service, as during a rolling deploy;
/// with `meta`, a tag and a metadata entry; with `compat`, the fields a
/// Maxine SDK sends.
pub fn spec(i: usize, meta: bool, compat: bool) -> InstanceSpec {
    let ip = ip(i);
    let mut spec = InstanceSpec::new(Address::parse(&ip).unwrap(), 8080);
    spec.version = if i.is_multiple_of(10) {
        "2.2.0"
    } else {
        "2.1.0"
    }
    .into();
    if meta {
        spec.tags = vec!["bench".into()];
        spec.metadata.insert("zone".into(), format!("z{}", i % 4));
    }
    if compat {
        spec.compat = Some(Box::new(CompatFields {
            service_name: "Bench_Service".into(),
            node_name: format!("node-{i}").into(),
            host_name: ip.into(),
            ssl: false,
            path: "".into(),
            health_check_path: "".into(),
        }));
    }
    spec.ttl = TTL;
    spec
}
