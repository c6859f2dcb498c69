//! The system resolver's rules, through hickory-resolver: name servers,
//! search domains, `ndots`, timeout and attempts from resolv.conf (or the
//! configured name servers instead), and a hosts file consulted first.
//! Both files are read again when they change, so an edit of /etc/hosts
//! shows at the names' next resolution.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::{Hosts, TokioResolver};

use super::{Answer, HostLookup, LookupFuture};

/// How often the two files are looked at for changes, at most.
const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// Where the resolver's configuration comes from.
#[derive(Clone, Debug)]
pub struct Source {
    pub resolv_conf: PathBuf,
    /// `None`: no hosts file.
    pub hosts_file: Option<PathBuf>,
    /// Asked instead of resolv.conf's name servers when not empty.
    pub nameservers: Vec<SocketAddr>,
}

/// Resolves host names as the system would. Cloning the resolver inside is
/// cheap; lookups run on the caller's runtime.
pub struct SystemResolver {
    source: Source,
    current: Mutex<Current>,
}

struct Current {
    /// `Err`: the configuration could not be read (every lookup fails
    /// with that reason until it can).
    resolver: Result<TokioResolver, Arc<str>>,
    /// What the files looked like when it was built.
    stamps: [Option<(SystemTime, u64)>; 2],
    checked: std::time::Instant,
}

impl SystemResolver {
    pub fn new(source: Source) -> Self {
        let stamps = stamps(&source);
        let resolver = build(&source);
        if let Err(e) = &resolver {
            tracing::warn!(error = %e, "host names of instances cannot be resolved");
        }
        Self {
            source,
            current: Mutex::new(Current {
                resolver,
                stamps,
                checked: std::time::Instant::now(),
            }),
        }
    }

    /// The resolver to use now, rebuilt first if a file changed.
    fn resolver(&self) -> Result<TokioResolver, Arc<str>> {
        let mut c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if c.checked.elapsed() >= RECHECK_EVERY {
            c.checked = std::time::Instant::now();
            let now = stamps(&self.source);
            if now != c.stamps {
                tracing::info!(
                    resolv_conf = %self.source.resolv_conf.display(),
                    "the resolver configuration or hosts file changed: reloaded"
                );
                c.stamps = now;
                c.resolver = build(&self.source);
            }
        }
        c.resolver.clone()
    }
}

impl HostLookup for SystemResolver {
    fn lookup(&self, name: Arc<str>) -> LookupFuture {
        let resolver = self.resolver();
        Box::pin(async move {
            let resolver = match resolver {
                Ok(r) => r,
                Err(why) => return Answer::Failed(why.to_string()),
            };
            // As given (no trailing dot): search domains and ndots apply,
            // as they do for getaddrinfo. A Java starter registers
            // `getHostName()`, often a single label.
            match resolver.lookup_ip(&*name).await {
                Ok(found) => {
                    let ips: Vec<_> = found.iter().collect();
                    if ips.is_empty() {
                        return Answer::NoAddresses {
                            why: "the name has no A or AAAA records".into(),
                            ttl: None,
                        };
                    }
                    let ttl = found
                        .as_lookup()
                        .answers()
                        .iter()
                        .map(|r| r.ttl)
                        .min()
                        .map(|s| Duration::from_secs(u64::from(s)))
                        .unwrap_or_else(|| {
                            found
                                .valid_until()
                                .saturating_duration_since(std::time::Instant::now())
                        });
                    Answer::Addresses(ips, ttl)
                }
                Err(e) => classify(&e),
            }
        })
    }
}

/// A failed lookup as an [`Answer`]: an authoritative "no such name" or "no
/// addresses" is an answer; anything else a failure.
fn classify(e: &NetError) -> Answer {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => Answer::NoAddresses {
            why: match nr.response_code {
                ResponseCode::NXDomain => "NXDOMAIN: the name does not exist".into(),
                _ => "the name has no A or AAAA records".into(),
            },
            ttl: nr.negative_ttl.map(|s| Duration::from_secs(u64::from(s))),
        },
        other => Answer::Failed(format!("the lookup failed: {other}")),
    }
}

/// The files' modification times and sizes, to notice a change.
fn stamps(source: &Source) -> [Option<(SystemTime, u64)>; 2] {
    let stamp = |p: &std::path::Path| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    [
        stamp(&source.resolv_conf),
        source.hosts_file.as_deref().and_then(stamp),
    ]
}

fn build(source: &Source) -> Result<TokioResolver, Arc<str>> {
    let read = std::fs::read(&source.resolv_conf).map_err(|e| e.to_string());
    let parsed = read.and_then(|data| {
        hickory_resolver::system_conf::parse_resolv_conf(data).map_err(|e| e.to_string())
    });
    let (mut config, mut opts) = match parsed {
        Ok(c) => c,
        // Without name servers of its own, resolv.conf only gives options:
        // the configured name servers do without it.
        Err(_) if !source.nameservers.is_empty() => (
            ResolverConfig::from_name_servers(Vec::new()),
            ResolverOpts::default(),
        ),
        Err(e) => {
            return Err(Arc::from(format!(
                "cannot read {}: {e}",
                source.resolv_conf.display()
            )));
        }
    };
    if !source.nameservers.is_empty() {
        config.name_servers = source
            .nameservers
            .iter()
            .map(|addr| {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                ns
            })
            .collect();
    }
    // Every lookup asks the servers: the driver keeps the answers and their
    // TTLs itself, and re-resolves before they expire.
    opts.cache_size = 0;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.use_hosts_file = ResolveHosts::Never;
    let mut builder =
        hickory_resolver::Resolver::builder_with_config(config, TokioRuntimeProvider::default());
    *builder.options_mut() = opts;
    let mut resolver = builder
        .build()
        .map_err(|e| Arc::<str>::from(format!("cannot build the resolver: {e}")))?;
    if let Some(path) = &source.hosts_file {
        let mut hosts = Hosts::default();
        match std::fs::File::open(path) {
            Ok(f) => {
                if let Err(e) = hosts.read_hosts_conf(f) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the hosts file");
                }
            }
            // No hosts file is no entries (as for the system resolver).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the hosts file")
            }
        }
        resolver.set_hosts(Arc::new(hosts));
    }
    Ok(resolver)
}
