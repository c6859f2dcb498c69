//! Sample data for benchmarks and fuzz targets: a registry with answers kept
//! current, as `App` wires them, without sockets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::{
    Address, Balancing, Datacenter, InstanceId, InstanceSpec, Registry, RegistryConfig, ServiceKey,
    ServiceName, Strategy,
};

use super::answers::{AnswerBuilder, ReadyAnswers};
use super::zone::{Zone, default_zone_text};

/// A registry with `services` services of `per_service` instances each
/// (every third one IPv6, versions 1.x to 3.x), and the answers built from it.
pub fn sample(services: usize, per_service: usize, max_records: usize) -> (Registry, ReadyAnswers) {
    sample_with(services, per_service, max_records, Strategy::RoundRobin)
}

/// [`sample`] with `strategy` as every service's (the configuration's
/// default), for comparing strategies' answers.
pub fn sample_with(
    services: usize,
    per_service: usize,
    max_records: usize,
    strategy: Strategy,
) -> (Registry, ReadyAnswers) {
    let now = Instant::now();
    let dc = Datacenter::new("dc1").expect("valid");
    let registry = Registry::new(
        RegistryConfig {
            local_dc: dc.clone(),
            reap_after: Duration::from_secs(600),
        },
        now,
    );
    registry.set_balancing(Balancing {
        strategy,
        ..Balancing::default_settings()
    });
    let answers = answers_for(&registry, max_records);
    let mut n: u32 = 0;
    for s in 0..services {
        let key = ServiceKey::new(
            dc.clone(),
            ServiceName::new(&format!("svc{s}")).expect("valid"),
        );
        for i in 0..per_service {
            n += 1;
            let ip: IpAddr = if i % 3 == 2 {
                IpAddr::V6(Ipv6Addr::from(
                    0xfd00_0000_0000_0000_0000_0000_0000_0000u128 | n as u128,
                ))
            } else {
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))
            };
            let mut spec = InstanceSpec::new(Address::Ip(ip), 8000 + (i % 1000) as u16);
            spec.version = format!("{}.{}.0", 1 + i % 3, i % 2);
            spec.weight = 1 + (i % 10) as u16;
            spec.ttl = Duration::from_secs(3600);
            registry
                .register(
                    key.clone(),
                    InstanceId::new(&format!("i{i}")).expect("valid"),
                    spec,
                    now,
                )
                .expect("sample registration is valid");
        }
    }
    (registry, answers)
}

/// ReadyAnswers for the default zone of `maxine`, kept current with `registry`
/// from now on, as `App` wires them.
pub fn answers_for(registry: &Registry, max_records: usize) -> ReadyAnswers {
    let zone = Zone::parse(
        &default_zone_text("maxine"),
        Path::new("(sample)"),
        "maxine",
        None,
    )
    .expect("default zone parses");
    let answers = ReadyAnswers::new(zone, max_records);
    registry.subscribe(Arc::new(AnswerBuilder::new(answers.clone(), registry, 5)));
    answers
}

/// A well-formed query for `name` (dotted, absolute) and `qtype`.
pub fn query(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut q = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
    q.extend(super::wire::wire_name(name).expect("valid name"));
    q.extend(qtype.to_be_bytes());
    q.extend(1u16.to_be_bytes());
    if edns {
        q.extend([0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
    }
    q
}
