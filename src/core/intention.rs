//! Who may find whom: intentions (source service -> destination service,
//! allow or deny) and DNS client networks (CIDRs whose askers get a set of
//! policies), as the registry keeps them.
//!
//! Both are keyed objects on the access-control log ([`super::AclObject`]),
//! so they are journaled, restored, undone and replicated like tokens. This
//! module holds the values and their validation; what an asker may see is
//! decided in `crate::policy`.

use std::fmt;
use std::net::IpAddr;

use super::acl::{AclError, MAX_DESCRIPTION_LEN, MAX_POLICY_NAME_LEN, MAX_TOKEN_POLICIES};
use super::labels::ServiceName;
use super::strategy::{canonical, mask, parse_cidr};

/// The wildcard side of an intention: every service.
pub const WILDCARD: &str = "*";
/// Most networks one DNS client entry may list.
pub const MAX_CLIENT_CIDRS: usize = 256;

/// One side of an intention: a service, or every service (`*`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Any,
    Service(ServiceName),
}

impl Side {
    /// `*` or a service name (a DNS label).
    pub fn parse(raw: &str) -> Result<Side, AclError> {
        if raw == WILDCARD {
            return Ok(Side::Any);
        }
        ServiceName::new(raw)
            .map(Side::Service)
            .map_err(|e| AclError::Invalid(format!("{e}; or \"*\" for every service")))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Side::Any => WILDCARD,
            Side::Service(s) => s.as_str(),
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an intention says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntentionAction {
    Allow,
    Deny,
}

impl IntentionAction {
    pub fn parse(raw: &str) -> Option<IntentionAction> {
        match raw {
            "allow" => Some(IntentionAction::Allow),
            "deny" => Some(IntentionAction::Deny),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IntentionAction::Allow => "allow",
            IntentionAction::Deny => "deny",
        }
    }
}

/// Whether askers with the service identity `source` get answers about
/// `destination`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intention {
    pub source: Side,
    pub destination: Side,
    pub action: IntentionAction,
    pub description: String,
    /// Index of the change that produced this value (set by the registry).
    pub index: u64,
}

impl Intention {
    pub fn validate(&self) -> Result<(), AclError> {
        if self.description.len() > MAX_DESCRIPTION_LEN {
            return Err(AclError::Invalid(format!(
                "description is longer than {MAX_DESCRIPTION_LEN} bytes"
            )));
        }
        Ok(())
    }
}

/// An IP network in CIDR form, its address with the host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.1.0.0/16`, `fd00::/8`; host bits must be clear (`10.1.2.3/16`
    /// is refused: it is usually a typing mistake).
    pub fn parse(raw: &str) -> Result<Cidr, String> {
        let (addr, prefix) = parse_cidr(raw.trim())
            .ok_or_else(|| format!("{raw:?} is not a network in CIDR form (10.1.0.0/16)"))?;
        if mask(addr, prefix) != addr {
            return Err(format!(
                "{raw:?} has host bits set; the network is {}/{prefix}",
                mask(addr, prefix)
            ));
        }
        Ok(Cidr { addr, prefix })
    }

    /// [`Cidr::parse`], also taking `10.0.0.0-8` for `10.0.0.0/8` (the
    /// form that fits in one URL path segment or store key unescaped).
    pub fn parse_path(raw: &str) -> Result<Cidr, String> {
        match raw.rsplit_once('-') {
            Some((addr, prefix)) if !raw.contains('/') => Cidr::parse(&format!("{addr}/{prefix}")),
            _ => Cidr::parse(raw),
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Networks matched by longest prefix, as a table: for each prefix length
/// present (longest first), a hash map of masked network -> value. A
/// lookup costs one hash probe per distinct prefix length, whatever the
/// number of networks (1,000 blacklisted networks of a few lengths are a
/// few probes). Built whole when the networks change, then read only.
#[derive(Clone, Debug)]
pub struct CidrTable<T> {
    /// (prefix length, IPv4?, masked network -> value), longest first.
    levels: Vec<(
        u8,
        bool,
        std::collections::HashMap<IpAddr, T, super::FastHash>,
    )>,
}

impl<T> Default for CidrTable<T> {
    fn default() -> Self {
        Self { levels: Vec::new() }
    }
}

impl<T> CidrTable<T> {
    /// The table of `networks`; a network listed twice keeps its first value.
    pub fn new(networks: impl IntoIterator<Item = (Cidr, T)>) -> Self {
        let mut levels: Vec<(
            u8,
            bool,
            std::collections::HashMap<IpAddr, T, super::FastHash>,
        )> = Vec::new();
        for (net, value) in networks {
            let v4 = net.addr.is_ipv4();
            let at = match levels
                .iter()
                .position(|(p, f, _)| *p == net.prefix && *f == v4)
            {
                Some(at) => at,
                None => {
                    levels.push((net.prefix, v4, Default::default()));
                    levels.len() - 1
                }
            };
            levels[at].2.entry(net.addr).or_insert(value);
        }
        levels.sort_by_key(|(p, _, _)| std::cmp::Reverse(*p));
        Self { levels }
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// The value of the longest network that holds `ip` (IPv4-mapped IPv6
    /// counts as IPv4).
    pub fn lookup(&self, ip: IpAddr) -> Option<&T> {
        let ip = canonical(ip);
        let v4 = ip.is_ipv4();
        self.levels
            .iter()
            .filter(|(_, f, _)| *f == v4)
            .find_map(|(p, _, nets)| nets.get(&mask(ip, *p)))
    }

    /// The value of the longest network that holds all of the subnet
    /// `ip`/`prefix` (a network no longer than `prefix` that holds `ip`).
    pub fn lookup_subnet(&self, ip: IpAddr, prefix: u8) -> Option<&T> {
        let ip = canonical(ip);
        let v4 = ip.is_ipv4();
        self.levels
            .iter()
            .filter(|(p, f, _)| *f == v4 && *p <= prefix)
            .find_map(|(p, _, nets)| nets.get(&mask(ip, *p)))
    }
}

/// An operator-declared DNS client network: askers whose address falls in
/// one of `cidrs` (and is no registered instance's) get `policies`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsClient {
    pub name: String,
    pub cidrs: Vec<Cidr>,
    pub policies: Vec<String>,
    pub index: u64,
}

impl DnsClient {
    pub fn validate(&self) -> Result<(), AclError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_POLICY_NAME_LEN
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return Err(AclError::Invalid(format!(
                "DNS client name {:?} must be 1 to {MAX_POLICY_NAME_LEN} letters, digits, '-', '_' or '.'",
                self.name
            )));
        }
        if self.cidrs.is_empty() || self.cidrs.len() > MAX_CLIENT_CIDRS {
            return Err(AclError::Invalid(format!(
                "a DNS client lists 1 to {MAX_CLIENT_CIDRS} networks (cidrs)"
            )));
        }
        if self.policies.len() > MAX_TOKEN_POLICIES {
            return Err(AclError::Invalid(format!(
                "a DNS client has at most {MAX_TOKEN_POLICIES} policies"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_contain_and_refuse_host_bits() {
        let c = Cidr::parse("127.0.0.0/24").unwrap();
        assert!(c.contains("127.0.0.9".parse().unwrap()));
        assert!(c.contains("::ffff:127.0.0.9".parse().unwrap()));
        assert!(!c.contains("127.0.1.9".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.1/24").is_err());
        assert!(Cidr::parse("127.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
        assert_eq!(Cidr::parse("fd00::/8").unwrap().to_string(), "fd00::/8");
    }

    #[test]
    fn the_prefix_table_finds_the_longest_network() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let t = CidrTable::new(
            [
                ("10.0.0.0/8", 8),
                ("10.1.0.0/16", 16),
                ("10.1.2.0/24", 24),
                ("10.1.2.0/24", 99),
                ("0.0.0.0/0", 0),
                ("fd00::/8", 108),
                ("127.0.0.21/32", 32),
            ]
            .map(|(c, v)| (Cidr::parse(c).unwrap(), v)),
        );
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(&24));
        assert_eq!(t.lookup(ip("10.1.3.3")), Some(&16));
        assert_eq!(t.lookup(ip("10.2.3.3")), Some(&8));
        assert_eq!(t.lookup(ip("11.2.3.3")), Some(&0));
        assert_eq!(t.lookup(ip("::ffff:127.0.0.21")), Some(&32));
        assert_eq!(t.lookup(ip("fd12::1")), Some(&108));
        assert_eq!(t.lookup(ip("fe80::1")), None);
        assert!(CidrTable::<u8>::new([]).lookup(ip("10.1.2.3")).is_none());
        // A subnet belongs to the longest network that holds all of it.
        assert_eq!(t.lookup_subnet(ip("10.1.2.0"), 24), Some(&24));
        assert_eq!(t.lookup_subnet(ip("10.1.0.0"), 20), Some(&16));
        assert_eq!(t.lookup_subnet(ip("10.0.0.0"), 12), Some(&8));
        assert_eq!(
            t.lookup_subnet(ip("127.0.0.16"), 28),
            Some(&0),
            "not the /32 inside"
        );
        // A thousand networks of one length: still one probe per length.
        let many = CidrTable::new((0..1000u32).map(|n| {
            let c = format!("10.{}.{}.0/24", n / 256, n % 256);
            (Cidr::parse(&c).unwrap(), n)
        }));
        assert_eq!(many.levels.len(), 1);
        assert_eq!(many.lookup(ip("10.3.231.7")), Some(&999));
        assert_eq!(many.lookup(ip("10.4.0.7")), None);
    }

    #[test]
    fn sides_are_service_names_or_the_wildcard() {
        assert_eq!(Side::parse("*").unwrap(), Side::Any);
        assert_eq!(Side::parse("Web").unwrap().as_str(), "web");
        assert!(Side::parse("a b").is_err());
        assert!(Side::parse("**").is_err());
        assert!(Side::parse("").is_err());
    }
}
