//! Response rate limiting, as NSD and Knot offer it: each client prefix
//! (an IPv4 /24 or an IPv6 /56 by default) gets a budget of responses per
//! second. Over budget a response is dropped, except every `slip`-th one,
//! which is sent truncated (TC=1) so a real client retries over TCP, where
//! spoofing does not work. Loopback clients are exempt by default.
//!
//! Each UDP worker keeps its own table (no sharing on the query path), so the
//! limit applies per worker thread: a client spread over several workers may
//! get up to that many times the budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// The client prefix `ip` belongs to, as one number: the IPv4 address cut
/// to `ipv4_bits` (tagged so it never equals an IPv6 prefix), or the IPv6
/// address cut to `ipv6_bits`; an IPv4-mapped IPv6 address counts as its
/// IPv4 address. Rate limiting and the TCP connection caps both count
/// clients by it.
pub fn client_prefix(ip: IpAddr, ipv4_bits: u8, ipv6_bits: u8) -> u128 {
    match ip {
        IpAddr::V4(v4) => {
            let bits = ipv4_bits.min(32);
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u128::from(u32::from(v4) & mask) | (4u128 << 120)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return client_prefix(IpAddr::V4(v4), ipv4_bits, ipv6_bits);
            }
            let bits = ipv6_bits.min(128);
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(v6) & mask
        }
    }
}

/// Settings of the limiter; `responses_per_second == 0` turns it off.
#[derive(Clone, Debug)]
pub struct RrlConfig {
    pub responses_per_second: u32,
    /// Every n-th limited response is sent with TC=1 instead of dropped (0: drop all).
    pub slip: u32,
    /// Prefix lengths that count as one client (at most 32 and 128).
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub exempt_loopback: bool,
}

/// What to do with one response.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send a truncated reply instead (header and question, TC=1).
    Slip,
    Drop,
}

struct Bucket {
    tokens: f64,
    last: Instant,
    limited: u32,
}

/// One worker's table.
pub struct Limiter {
    cfg: RrlConfig,
    buckets: HashMap<u128, Bucket>,
    last_sweep: Instant,
}

/// Tables are swept when they grow past this, dropping idle entries, so a
/// flood of spoofed sources cannot grow memory without bound.
const MAX_ENTRIES: usize = 100_000;

impl Limiter {
    pub fn new(cfg: RrlConfig, now: Instant) -> Self {
        Self {
            cfg,
            buckets: HashMap::new(),
            last_sweep: now,
        }
    }

    pub fn enabled(&self) -> bool {
        self.cfg.responses_per_second > 0
    }

    /// Decides for one response to `ip` at `now`.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        let rate = self.cfg.responses_per_second;
        if rate == 0 || (self.cfg.exempt_loopback && ip.is_loopback()) {
            return Verdict::Send;
        }
        let key = client_prefix(ip, self.cfg.ipv4_prefix, self.cfg.ipv6_prefix);
        if self.buckets.len() >= MAX_ENTRIES {
            self.sweep(now);
        }
        let rate = f64::from(rate);
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: rate,
            last: now,
            limited: 0,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Verdict::Send;
        }
        b.limited = b.limited.wrapping_add(1);
        if self.cfg.slip > 0 && b.limited.is_multiple_of(self.cfg.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    /// Forgets clients idle for over a second (their buckets are full again
    /// anyway); if that is not enough, forgets all.
    fn sweep(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_sweep).as_secs_f64() < 0.1 {
            self.buckets.clear();
        } else {
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.last).as_secs_f64() < 1.0);
            if self.buckets.len() >= MAX_ENTRIES / 2 {
                self.buckets.clear();
            }
        }
        self.last_sweep = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(rate: u32, slip: u32) -> RrlConfig {
        RrlConfig {
            responses_per_second: rate,
            slip,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt_loopback: true,
        }
    }

    #[test]
    fn over_budget_responses_are_dropped_with_every_slip_th_truncated() {
        let t0 = Instant::now();
        let mut l = Limiter::new(cfg(10, 2), t0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let same_prefix: IpAddr = "192.0.2.200".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(l.check(a, t0), Verdict::Send);
            assert_eq!(l.check(same_prefix, t0), Verdict::Send);
        }
        let verdicts: Vec<_> = (0..4).map(|_| l.check(a, t0)).collect();
        assert_eq!(
            verdicts,
            [Verdict::Drop, Verdict::Slip, Verdict::Drop, Verdict::Slip]
        );
        // Another /24 has its own budget.
        assert_eq!(l.check("192.0.3.1".parse().unwrap(), t0), Verdict::Send);
        // Budget refills with time.
        assert_eq!(l.check(a, t0 + Duration::from_millis(200)), Verdict::Send);
    }

    #[test]
    fn prefixes_cut_addresses_and_keep_families_apart() {
        let p = |ip: &str| client_prefix(ip.parse().unwrap(), 24, 56);
        assert_eq!(p("192.0.2.1"), p("192.0.2.255"));
        assert_ne!(p("192.0.2.1"), p("192.0.3.1"));
        assert_eq!(p("::ffff:192.0.2.7"), p("192.0.2.1"));
        assert_eq!(p("2001:db8:0:ff::1"), p("2001:db8:0:1::2"));
        assert_ne!(p("2001:db8:0:100::1"), p("2001:db8::1"));
        // 0.0.0.0/24 and the IPv6 prefix :: are different clients.
        assert_ne!(p("0.0.0.1"), p("::1"));
        assert_ne!(
            client_prefix("192.0.2.1".parse().unwrap(), 32, 56),
            p("192.0.2.2")
        );
    }

    #[test]
    fn loopback_is_exempt_and_zero_rate_is_off() {
        let t0 = Instant::now();
        let mut l = Limiter::new(cfg(1, 2), t0);
        for _ in 0..100 {
            assert_eq!(l.check("127.0.0.1".parse().unwrap(), t0), Verdict::Send);
            assert_eq!(l.check("::1".parse().unwrap(), t0), Verdict::Send);
        }
        let mut off = Limiter::new(cfg(0, 2), t0);
        for _ in 0..100 {
            assert_eq!(off.check("192.0.2.1".parse().unwrap(), t0), Verdict::Send);
        }
    }

    #[test]
    fn a_flood_of_sources_does_not_grow_the_table_without_bound() {
        let t0 = Instant::now();
        let mut l = Limiter::new(cfg(10, 2), t0);
        for i in 0..(3 * MAX_ENTRIES as u32) {
            l.check(IpAddr::V4((i << 8).into()), t0);
        }
        assert!(l.buckets.len() <= MAX_ENTRIES);
    }
}
