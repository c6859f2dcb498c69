//! Load-balancing strategies and per-service settings: what they are, and
//! the pure functions that turn a service's members into the orders its
//! answers are given in.
//!
//! The DNS answer cache precomputes a bounded set of orders per service when
//! the service changes (docs/adr/0007-answer-variants-for-strategies.md);
//! a query only picks one of them. The native and Maxine-compatible
//! discovery routes use the same functions through
//! [`Registry::pick`](super::Registry::pick), so a strategy means the same
//! over DNS and HTTP.
//!
//! Everything here is deterministic: hashes are fixed functions (not the
//! per-process seeded map hasher), so every Maxine node gives a client the
//! same sticky order, and a restart keeps it.

use std::net::IpAddr;
use std::sync::Arc;

use super::plan::ClientSubnet;

/// How a service's answers spread load over its instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Each answer starts one instance further (a rotating window).
    #[default]
    RoundRobin,
    /// Address answers in weighted random order (by instance weight): the
    /// first address is instance `i` with probability `w_i / sum(w)`.
    Weighted,
    /// Answers in random order.
    Random,
    /// Rendezvous hashing of the client's subnet (IPv4 /24, IPv6 /56, or
    /// the EDNS client subnet): a client gets a stable order, and removing
    /// an instance moves only the clients it was first for.
    Sticky,
    /// Instances whose `zone` metadata is the client's zone first (zones of
    /// client networks: `dns.client_zones`), rotating among them.
    Nearest,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::RoundRobin,
        Strategy::Weighted,
        Strategy::Random,
        Strategy::Sticky,
        Strategy::Nearest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Weighted => "weighted",
            Strategy::Random => "random",
            Strategy::Sticky => "sticky",
            Strategy::Nearest => "nearest",
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The names, for error messages: `round_robin, weighted, ...`.
    pub fn names() -> String {
        Strategy::ALL.map(Strategy::as_str).join(", ")
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The default panic threshold (Envoy's): below 50% healthy instances, a
/// service answers with all of them.
pub const DEFAULT_PANIC_THRESHOLD: u8 = 50;

/// What an operator set for one service (`PUT /v1/services/{svc}/config`);
/// `None` fields follow the configuration's defaults. Journaled (record
/// variant 8) and kept while the service has no instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    pub key: super::registry::ServiceKey,
    pub strategy: Option<Strategy>,
    /// Percent of healthy instances below which the service answers with
    /// all of them (0: never).
    pub panic_threshold: Option<u8>,
    /// Index of the change that set it: its record key.
    pub index: u64,
}

impl ServiceConfig {
    pub fn validate(&self) -> Result<(), String> {
        match self.panic_threshold {
            Some(p) if p > 100 => Err(format!(
                "panic_threshold must be a percentage from 0 to 100, not {p}"
            )),
            _ => Ok(()),
        }
    }
}

/// The defaults the configuration gives every service, and the zones of
/// client networks. Set once at start ([`Registry::set_balancing`](super::Registry::set_balancing)).
#[derive(Clone, Debug)]
pub struct Balancing {
    pub strategy: Strategy,
    pub panic_threshold: u8,
    pub client_zones: Arc<ClientZones>,
}

impl Balancing {
    /// Round robin, the panic threshold of [`DEFAULT_PANIC_THRESHOLD`], no
    /// client zones: the defaults of the configuration.
    pub fn default_settings() -> Balancing {
        Balancing {
            strategy: Strategy::RoundRobin,
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
            client_zones: Arc::default(),
        }
    }

    /// The settings a service with `config` has.
    pub fn settings(&self, config: Option<&ServiceConfig>) -> Settings {
        Settings {
            strategy: config.and_then(|c| c.strategy).unwrap_or(self.strategy),
            panic_threshold: config
                .and_then(|c| c.panic_threshold)
                .unwrap_or(self.panic_threshold),
        }
    }
}

/// A service's settings in effect, copied into every snapshot of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub strategy: Strategy,
    pub panic_threshold: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            strategy: Strategy::RoundRobin,
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
        }
    }
}

/// Client networks and their zones (`dns.client_zones`, `CIDR=zone`),
/// matched longest prefix first. Zones are numbered in order of first
/// appearance; a number is what answers are kept by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientZones {
    /// (network address, prefix length, zone number), longest prefix first.
    nets: Vec<(IpAddr, u8, u16)>,
    zones: Vec<Box<str>>,
}

/// The most client networks `dns.client_zones` may list: they are scanned
/// per query of a `nearest` service.
pub const MAX_CLIENT_NETWORKS: usize = 1024;
/// The most distinct zones: each is a precomputed order per service.
pub const MAX_ZONES: usize = 64;

impl ClientZones {
    /// Parses `CIDR=zone` entries (`10.1.0.0/16=eu-1`).
    pub fn parse(entries: &[String]) -> Result<ClientZones, String> {
        if entries.len() > MAX_CLIENT_NETWORKS {
            return Err(format!("at most {MAX_CLIENT_NETWORKS} client networks"));
        }
        let mut out = ClientZones::default();
        for e in entries {
            let (net, zone) = e
                .split_once('=')
                .ok_or_else(|| format!("{e:?} is not CIDR=zone (10.1.0.0/16=eu-1)"))?;
            let (addr, prefix) = parse_cidr(net.trim())
                .ok_or_else(|| format!("{net:?} is not a network in CIDR form (10.1.0.0/16)"))?;
            let zone = zone.trim();
            if zone.is_empty()
                || zone.len() > 63
                || zone.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(format!(
                    "zone {zone:?} must be 1 to 63 characters without spaces"
                ));
            }
            let id = match out.zones.iter().position(|z| &**z == zone) {
                Some(i) => i,
                None => {
                    if out.zones.len() == MAX_ZONES {
                        return Err(format!("at most {MAX_ZONES} distinct zones"));
                    }
                    out.zones.push(zone.into());
                    out.zones.len() - 1
                }
            };
            out.nets.push((mask(addr, prefix), prefix, id as u16));
        }
        // Longest prefix first; IPv4 and IPv6 never match each other.
        out.nets.sort_by_key(|n| std::cmp::Reverse(n.1));
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The zones, by number.
    pub fn zones(&self) -> &[Box<str>] {
        &self.zones
    }

    /// The number of zone `name`, if a client network has it.
    pub fn zone_id(&self, name: &str) -> Option<u16> {
        self.zones
            .iter()
            .position(|z| &**z == name)
            .map(|i| i as u16)
    }

    /// The zone of a client address (longest matching prefix).
    pub fn zone_of(&self, addr: IpAddr) -> Option<u16> {
        let addr = canonical(addr);
        self.nets
            .iter()
            .find(|(net, prefix, _)| same_family(*net, addr) && mask(addr, *prefix) == *net)
            .map(|(_, _, z)| *z)
    }
}

pub(crate) fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, p) = s.split_once('/')?;
    let addr: IpAddr = a.parse().ok()?;
    let prefix: u8 = p.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((canonical(addr), prefix))
}

/// IPv4-mapped IPv6 addresses as IPv4 (a dual-stack socket reports them so).
pub(crate) fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// `addr` with all but its first `prefix` bits cleared.
pub(crate) fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// The address a query speaks for: the EDNS client subnet a recursor
/// forwarded, else the peer's address.
pub fn asker_addr(peer: Option<IpAddr>, ecs: Option<ClientSubnet>) -> Option<IpAddr> {
    ecs.map(|e| e.addr).or(peer)
}

/// Sticky orders are kept for this many buckets of client subnets: a
/// client's subnet hash picks its bucket. Fixed, so that a client's bucket
/// never depends on the service's size.
pub const STICKY_BUCKETS: usize = 64;

/// Weighted and random answers cycle through this many precomputed orders.
/// The first answers of weighted orders are apportioned by weight over
/// them, so weights are honoured to 1/64 of the total.
pub const CYCLE_ORDERS: usize = 64;

/// Random answers cycle through this many precomputed orders.
pub const RANDOM_ORDERS: usize = 16;

/// The sticky bucket of a client: a fixed hash of its subnet (IPv4 /24,
/// IPv6 /56, or the client subnet's own prefix when shorter).
pub fn sticky_bucket(peer: Option<IpAddr>, ecs: Option<ClientSubnet>) -> usize {
    let (addr, prefix) = match (ecs, peer) {
        (Some(e), _) => {
            let a = canonical(e.addr);
            let p = if a.is_ipv4() { 24 } else { 56 };
            (a, e.source_prefix.min(p))
        }
        (None, Some(p)) => {
            let a = canonical(p);
            (a, if a.is_ipv4() { 24 } else { 56 })
        }
        (None, None) => return 0,
    };
    let h = match mask(addr, prefix) {
        IpAddr::V4(v4) => mix(u64::from(u32::from(v4)) ^ 0x4_0000_0000),
        IpAddr::V6(v6) => {
            let b = u128::from(v6);
            mix((b >> 64) as u64 ^ mix(b as u64))
        }
    };
    (h % STICKY_BUCKETS as u64) as usize
}

/// splitmix64's finalizer: a fixed, well-spread 64-bit mix.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fixed hash of an instance id (FNV-1a, then mixed): the instance's
/// side of its rendezvous scores.
pub fn id_hash(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The rendezvous order of `bucket` over members with these id hashes:
/// highest score first. Removing a member leaves the others' relative order
/// unchanged in every bucket, so only the buckets it was first in move.
pub fn sticky_order(bucket: usize, ids: &[u64]) -> Vec<u32> {
    let b = mix(bucket as u64 ^ 0x5eed_5eed);
    let mut order: Vec<(u64, u32)> = ids
        .iter()
        .enumerate()
        .map(|(k, h)| (mix(h ^ b), k as u32))
        .collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    order.into_iter().map(|(_, k)| k).collect()
}

/// A small deterministic generator (splitmix64): orders are rebuilt when a
/// service changes, seeded by the change, not drawn per query.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// `k` random orders of `n` members (Fisher-Yates).
pub fn random_orders(n: usize, k: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Rng(seed);
    (0..k)
        .map(|_| {
            let mut o: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                o.swap(i, j);
            }
            o
        })
        .collect()
}

/// `k` weighted random orders of members with these weights. The first
/// members of the `k` orders are apportioned by weight (smooth weighted
/// round robin over `k` slots: member `i` comes first in about `k * w_i /
/// sum(w)` of them); the rest of each order is a weighted random order
/// without replacement (each next member with probability proportional to
/// its weight among those left). A weight of 0 (RFC 2782: "very small
/// chance") counts as 1/100.
pub fn weighted_orders(weights: &[u16], k: usize, seed: u64) -> Vec<Vec<u32>> {
    let n = weights.len();
    if n == 0 {
        return vec![Vec::new(); k];
    }
    let w: Vec<f64> = weights
        .iter()
        .map(|&w| if w == 0 { 0.01 } else { f64::from(w) })
        .collect();
    let total: f64 = w.iter().sum();
    let mut current = vec![0.0f64; n];
    let mut rng = Rng(seed);
    (0..k)
        .map(|_| {
            // Smooth weighted round robin: the first member of this order.
            for (c, wi) in current.iter_mut().zip(&w) {
                *c += wi;
            }
            let first = (0..n)
                .max_by(|a, b| current[*a].total_cmp(&current[*b]).then(b.cmp(a)))
                .expect("members");
            current[first] -= total;
            // The rest: Efraimidis-Spirakis keys u^(1/w), largest first.
            let mut rest: Vec<(f64, u32)> = (0..n)
                .filter(|&i| i != first)
                .map(|i| (rng.unit().ln() / w[i], i as u32))
                .collect();
            rest.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
            std::iter::once(first as u32)
                .chain(rest.into_iter().map(|(_, i)| i))
                .collect()
        })
        .collect()
}

/// The order of a client in zone `zone`: members of that zone first (their
/// number is the second value), then the others, each in member order.
pub fn nearest_order(zone: u16, zones: &[Option<u16>]) -> (Vec<u32>, usize) {
    let mut order: Vec<u32> = Vec::with_capacity(zones.len());
    order.extend((0..zones.len() as u32).filter(|&i| zones[i as usize] == Some(zone)));
    let head = order.len();
    order.extend((0..zones.len() as u32).filter(|&i| zones[i as usize] != Some(zone)));
    (order, head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_by_name() {
        for s in Strategy::ALL {
            assert_eq!(Strategy::parse(s.as_str()), Some(s));
        }
        assert_eq!(Strategy::parse("RR"), None);
    }

    #[test]
    fn client_zones_match_the_longest_prefix() {
        let z = ClientZones::parse(&[
            "10.0.0.0/8=wide".into(),
            "10.1.0.0/16=eu-1".into(),
            "fd00::/8=v6".into(),
        ])
        .unwrap();
        assert_eq!(z.zone_of("10.1.2.3".parse().unwrap()), z.zone_id("eu-1"));
        assert_eq!(z.zone_of("10.2.2.3".parse().unwrap()), z.zone_id("wide"));
        assert_eq!(z.zone_of("fd00::1".parse().unwrap()), z.zone_id("v6"));
        assert_eq!(
            z.zone_of("::ffff:10.1.0.9".parse().unwrap()),
            z.zone_id("eu-1")
        );
        assert_eq!(z.zone_of("192.168.0.1".parse().unwrap()), None);
        for bad in [
            "10.0.0.0=x",
            "10.0.0.0/33=x",
            "nope/8=x",
            "10.0.0.0/8",
            "10.0.0.0/8= ",
        ] {
            assert!(ClientZones::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn sticky_buckets_follow_the_subnet() {
        let a = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            sticky_bucket(a("10.0.0.1"), None),
            sticky_bucket(a("10.0.0.200"), None)
        );
        let ecs = ClientSubnet {
            addr: "192.0.2.0".parse().unwrap(),
            source_prefix: 24,
        };
        assert_eq!(
            sticky_bucket(a("127.0.0.1"), Some(ecs)),
            sticky_bucket(a("192.0.2.77"), None)
        );
        let spread: std::collections::BTreeSet<_> = (0..=255)
            .map(|i| sticky_bucket(a(&format!("10.{i}.0.1")), None))
            .collect();
        assert!(spread.len() > STICKY_BUCKETS / 2, "{spread:?}");
    }

    #[test]
    fn removing_a_member_moves_only_the_buckets_it_was_first_in() {
        let ids: Vec<u64> = (0..10).map(|i| id_hash(&format!("i{i}"))).collect();
        let before: Vec<Vec<u32>> = (0..STICKY_BUCKETS).map(|b| sticky_order(b, &ids)).collect();
        // Remove member 3: the others keep their relative order.
        let rest: Vec<u64> = ids.iter().copied().filter(|h| *h != ids[3]).collect();
        let name = |k: u32| if k >= 3 { k + 1 } else { k };
        for (b, old) in before.iter().enumerate() {
            let new: Vec<u32> = sticky_order(b, &rest).into_iter().map(name).collect();
            let kept: Vec<u32> = old.iter().copied().filter(|k| *k != 3).collect();
            assert_eq!(new, kept, "bucket {b}");
        }
        // Every member is first somewhere (64 buckets over 10).
        let firsts: std::collections::BTreeSet<u32> = before.iter().map(|o| o[0]).collect();
        assert!(firsts.len() >= 8, "{firsts:?}");
    }

    #[test]
    fn weighted_orders_apportion_first_places_by_weight() {
        let orders = weighted_orders(&[1, 2, 3, 4], CYCLE_ORDERS, 7);
        let mut firsts = [0usize; 4];
        for o in &orders {
            let mut sorted = o.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3], "a permutation");
            firsts[o[0] as usize] += 1;
        }
        // 64 * w / 10, within one.
        for (i, n) in firsts.iter().enumerate() {
            let want = 64.0 * (i + 1) as f64 / 10.0;
            assert!((*n as f64 - want).abs() <= 1.0, "{firsts:?}");
        }
    }

    #[test]
    fn random_orders_are_permutations_that_differ() {
        let orders = random_orders(8, 16, 1);
        let distinct: std::collections::BTreeSet<_> = orders.iter().cloned().collect();
        assert!(distinct.len() > 8);
        for o in orders {
            let mut s = o.clone();
            s.sort_unstable();
            assert_eq!(s, (0..8).collect::<Vec<u32>>());
        }
    }

    #[test]
    fn nearest_puts_the_zone_first() {
        let (order, head) = nearest_order(1, &[Some(0), Some(1), None, Some(1)]);
        assert_eq!((order, head), (vec![1, 3, 0, 2], 2));
    }
}
