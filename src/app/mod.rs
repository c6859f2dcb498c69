//! Composition root: the only place that names every module and picks the
//! concrete pieces. `App::build(config, listeners)` wires them; `run(shutdown)`
//! drives every task until the token is cancelled, then drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, DnsConfig, HttpConfig, ResolveConfig, StoreConfig};
use crate::core::Registry;
use crate::events::{ChangeFeed, Subscription};
use crate::store::{
    AutoSnapshot, EtcdLog, EtcdSettings, FileStore, Journal, LocalLog, Log, RecoveryNotice,
    RedisStore, Store,
};
use crate::telemetry::RecentLogs;
use crate::{dns, http};

mod acl;
mod notify;

pub use notify::Notifier;

/// Sockets bound before the app is built, so tests can bind port 0 and
/// `main` can report a bind error before anything else starts.
pub struct Listeners {
    pub dns_udp: std::net::UdpSocket,
    pub dns_tcp: std::net::TcpListener,
    pub http: std::net::TcpListener,
}

impl Listeners {
    /// Binds DNS (UDP and TCP on the same port) and HTTP. With port 0 the
    /// DNS port is picked by the system, and TCP takes the same number.
    pub fn bind(dns_addr: SocketAddr, http_addr: SocketAddr) -> anyhow::Result<Self> {
        let (dns_udp, dns_tcp) = bind_dns(dns_addr)?;
        let http = std::net::TcpListener::bind(http_addr)
            .with_context(|| format!("cannot bind the HTTP API to {http_addr}"))?;
        Ok(Self {
            dns_udp,
            dns_tcp,
            http,
        })
    }
}

fn bind_dns(addr: SocketAddr) -> anyhow::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    if addr.port() != 0 {
        let udp =
            dns::bind_udp(addr).with_context(|| format!("cannot bind DNS (UDP) to {addr}"))?;
        let tcp =
            dns::bind_tcp(addr).with_context(|| format!("cannot bind DNS (TCP) to {addr}"))?;
        return Ok((udp, tcp));
    }
    // Port 0. The UDP sockets use SO_REUSEPORT, and a reuse-port bind to
    // port 0 may be given a port that another reuse-port group of the same
    // user still holds: the two servers would then split each other's
    // queries. A plain socket is only given a port nothing holds, so it
    // picks the number; TCP takes it too, then the reuse-port socket
    // replaces the plain one.
    let mut last_err = None;
    for _ in 0..20 {
        let probe = std::net::UdpSocket::bind(addr)
            .with_context(|| format!("cannot bind DNS (UDP) to {addr}"))?;
        let picked = probe.local_addr()?;
        let tcp = match dns::bind_tcp(picked) {
            Ok(tcp) => tcp,
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        };
        drop(probe);
        match dns::bind_udp(picked) {
            Ok(udp) => return Ok((udp, tcp)),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.expect("loop ran")).context("cannot find a free port for DNS over UDP and TCP")
}

/// The DNS front end's settings, from the configuration.
fn dns_limits(c: &DnsConfig) -> dns::Limits {
    dns::Limits {
        ttl: c.ttl,
        max_records: c.max_records,
        tcp: dns::tcp::TcpLimits {
            idle_timeout: c.tcp_idle_timeout,
            busy_idle_timeout: c.tcp_busy_idle_timeout,
            max_connections: c.tcp_max_connections,
            max_connections_per_prefix: c.tcp_max_connections_per_prefix,
            max_connections_per_ip: c.tcp_max_connections_per_ip,
            ipv4_prefix: c.rrl.ipv4_prefix,
            ipv6_prefix: c.rrl.ipv6_prefix,
        },
        udp_workers: c.udp_workers,
        client_zones: c.client_zones.clone(),
        udp: dns::udp::UdpConfig {
            max_queue_delay: c.max_queue_delay,
            rrl: dns::rrl::RrlConfig {
                responses_per_second: c.rrl.responses_per_second,
                slip: c.rrl.slip,
                ipv4_prefix: c.rrl.ipv4_prefix,
                ipv6_prefix: c.rrl.ipv6_prefix,
                exempt_loopback: c.rrl.exempt_loopback,
            },
        },
    }
}

/// A built, not yet running, Maxine.
pub struct App {
    config: Config,
    registry: Registry,
    dns: dns::DnsServer,
    http_listener: std::net::TcpListener,
    http_tls: Option<Arc<rustls::ServerConfig>>,
    ready: Arc<AtomicBool>,
    feed: ChangeFeed,
    journal: Option<Journal>,
    /// The shared log, with an etcd store (else the journal's local log).
    etcd: Option<EtcdLog>,
    /// A damaged store file recovered at start-up, until acknowledged.
    recovery: RecoveryNotice,
    auth: http::auth::Auth,
    /// The last log lines, shown by the API's log routes.
    recent_logs: RecentLogs,
    notifier: Notifier,
    /// Everything `GET /metrics` shows.
    metrics: crate::telemetry::Metrics,
    /// Who may find whom, for DNS and the HTTP discovery routes.
    askers: crate::askers::Askers,
}

/// The configured store backend (`None`: nothing is persisted).
pub fn open_store(config: &Config) -> anyhow::Result<Option<Box<dyn Store>>> {
    open_store_with(config, RecoveryNotice::default())
}

/// [`open_store`], reporting a recovery of a damaged file to `notice`.
pub fn open_store_with(
    config: &Config,
    notice: RecoveryNotice,
) -> anyhow::Result<Option<Box<dyn Store>>> {
    Ok(match &config.store {
        StoreConfig::File => Some(Box::new(
            FileStore::open(&config.data_dir)?.with_notice(notice),
        )),
        StoreConfig::Redis(url) => {
            if config.store_password_on_command_line {
                tracing::warn!(
                    "--store holds a password, which `ps` shows to every user of this machine: \
                     pass the URL in MAXINE_STORE, or the password in store_password_file"
                );
            }
            let password = match &config.store_password_file {
                Some(path) => Some(read_password(path)?),
                None => None,
            };
            let ca = match &config.store_ca_cert {
                Some(path) => Some(
                    std::fs::read(path)
                        .with_context(|| format!("cannot read store_ca_cert {}", path.display()))?,
                ),
                None => None,
            };
            Some(Box::new(RedisStore::open_with(
                url,
                password.as_deref(),
                ca.as_deref(),
            )?))
        }
        StoreConfig::Memory => None,
        StoreConfig::Etcd(_) => anyhow::bail!(
            "an etcd store is a shared log, not a store of records: restore a snapshot \
             through the API of a running node (docs/cluster.md)"
        ),
    })
}

/// The etcd log's settings, from the configuration: credentials and TLS
/// material are read here, and this process's node name is made up.
fn etcd_settings(config: &Config, e: &crate::config::EtcdStore) -> anyhow::Result<EtcdSettings> {
    let password = match &config.store_password_file {
        Some(path) => Some(read_password(path)?),
        None => None,
    };
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
    };
    let ca = match &config.store_ca_cert {
        Some(path) => Some(read("store_ca_cert", path)?),
        None => None,
    };
    let identity = match &e.client_cert {
        Some((cert, key)) => Some((
            read("store_client_cert", cert)?,
            read("store_client_key", key)?,
        )),
        None => None,
    };
    Ok(EtcdSettings {
        endpoints: e.endpoints.clone(),
        prefix: e.prefix.clone(),
        tls: e.tls,
        user: e.user.clone(),
        password,
        ca,
        identity,
        timeout: e.timeout,
        node: node_name(),
        state_dir: config.data_dir.join("etcd"),
    })
}

/// This process's name among the nodes: the host name and a random
/// suffix, so that two processes never share heartbeat summary keys.
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
        .unwrap_or_else(|| "node".into());
    let mut r = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
    let suffix: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}-{suffix}")
}

/// The password in `path`, without a trailing newline. Never logged: an
/// error names the file only.
fn read_password(path: &std::path::Path) -> anyhow::Result<String> {
    read_secret(path, "store_password_file")
}

/// The secret in `path` (the file of setting `key`), without a trailing
/// newline. Never logged: an error names the file only.
fn read_secret(path: &std::path::Path, key: &str) -> anyhow::Result<String> {
    let mut text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {key} {}", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

impl App {
    /// Everything that only reads (the zone, TLS material, access-control
    /// files) is checked before anything is written: a start refused for
    /// one of them leaves nothing on disk. The data directory is made by
    /// what keeps files there (the file store, the audit log beside any
    /// store, the sign-in key), not for its own sake.
    pub fn build(config: Config, listeners: Listeners) -> anyhow::Result<Self> {
        let zone = dns::Zone::load(
            config.dns.zone_dir.as_deref(),
            &config.domain,
            config.dns.negative_ttl,
        )
        .context("cannot load the DNS zone")?;
        let http_tls = match &config.http.tls {
            Some((cert, key)) => Some(http::load_tls(cert, key)?),
            None => None,
        };
        let mut auth = acl::build(&config)?;
        let now = tokio::time::Instant::now().into_std();
        let registry = Registry::new(config.registry.clone(), now);
        registry.set_only_passing(config.dns.only_passing);
        registry.set_balancing(crate::core::Balancing {
            strategy: config.dns.strategy,
            panic_threshold: config.dns.panic_threshold,
            client_zones: config.dns.client_zones.clone(),
        });
        registry.set_self_preservation(config.self_preservation);
        registry.reserve_service_names(zone.reserved_labels());
        let metrics = crate::telemetry::Metrics::default();
        metrics.registry(registry.clone());
        let mut dns = dns::DnsServer::new(
            zone,
            dns_limits(&config.dns),
            listeners.dns_udp,
            listeners.dns_tcp,
        )?;
        let fed = &config.federation;
        registry.failover().configure(
            fed.failover_datacenters.clone(),
            fed.failover_ttl.as_secs() as u32,
            fed.srv_tiers,
        );
        if config.metrics.dns {
            dns = dns.with_counters(metrics.dns());
        }
        let rebuilds = crate::telemetry::metrics::RebuildMetrics::new(&metrics);
        let answers = Arc::new(dns.observer(&registry));
        registry.subscribe(Arc::new(rebuilds.timed(answers.clone())));
        // A change of the failover order (a peer goes stale, an override)
        // decides every local name again. Weak: the registry holds the
        // listener, and the answer builder holds the registry.
        let weak = Arc::downgrade(&answers);
        registry.failover().on_change(Arc::new(move || {
            if let Some(a) = weak.upgrade() {
                a.failover_changed();
            }
        }));
        // Who may see which service on DNS (docs/adr/0011-asker-classes.md):
        // told of every change before it is acknowledged, like the answers.
        let askers = crate::askers::Askers::with_trusted_recursors(
            &registry,
            crate::policy::Defaults {
                acl: auth.default,
                intentions: if config.intentions_default_deny {
                    crate::policy::DefaultPolicy::Deny
                } else {
                    crate::policy::DefaultPolicy::Allow
                },
            },
            config.dns.trusted_recursors.clone(),
        );
        registry.subscribe(Arc::new(askers.clone()));
        dns.answers().set_askers(askers.clone());
        let feed = ChangeFeed::new(registry.clone());
        registry.subscribe(Arc::new(feed.clone()));
        registry.subscribe(Arc::new(crate::health::outlier::PanicLog::default()));
        // Last, so the restored registry reaches DNS in one batch.
        let recovery = RecoveryNotice::default();
        let etcd = match &config.store {
            StoreConfig::Etcd(e) => Some(
                EtcdLog::open(registry.clone(), feed.clone(), etcd_settings(&config, e)?)
                    .context("cannot restore this node's local state")?,
            ),
            _ => None,
        };
        let store = match etcd {
            Some(_) => None,
            None => open_store_with(&config, recovery.clone())?,
        };
        // A store keeps changes, so it keeps who made them too: in the
        // data directory, also beside a Redis store.
        let audit = match (&store, &etcd) {
            (Some(_), _) | (None, Some(_)) => {
                let dir = config.data_dir.join("audit");
                if matches!(config.store, StoreConfig::Redis(_)) {
                    tracing::info!(
                        dir = %dir.display(),
                        "the audit log is kept on this machine; Redis holds the registry"
                    );
                }
                Some(
                    crate::audit::AuditLog::open(&dir, config.audit.max_file_bytes)
                        .context("cannot open the audit log")?,
                )
            }
            (None, None) => None,
        };
        let etcd = etcd.map(|e| e.with_audit(audit.clone()));
        if let Some(e) = &etcd {
            e.metrics().export(&metrics);
        }
        let journal = match store {
            Some(store) => {
                let (journal, loaded) = Journal::start(store, &registry, now, audit.clone())
                    .context("cannot load the registry from the store")?;
                tracing::info!(
                    store = %loaded.store, instances = loaded.instances, corrupt = loaded.corrupt,
                    superseded = loaded.superseded, index = loaded.last_index,
                    ms = loaded.elapsed.as_millis() as u64, "registry loaded"
                );
                crate::store::note_undecodable(&recovery, &loaded);
                journal.metrics().export(&metrics);
                Some(journal)
            }
            None => None,
        };
        auth.audit = audit;
        Ok(Self {
            auth,
            config,
            registry,
            dns,
            http_listener: listeners.http,
            http_tls,
            ready: Arc::new(AtomicBool::new(false)),
            feed,
            journal,
            etcd,
            recovery,
            recent_logs: RecentLogs::new(crate::telemetry::recent::DEFAULT_LINES),
            notifier: Notifier::default(),
            metrics,
            askers,
        })
    }

    /// Shows `logs` on the log routes: the ring the process's logger
    /// writes to (`main` installs it before anything is logged). Without
    /// it the app has a ring of its own that nothing writes to.
    pub fn with_recent_logs(mut self, logs: RecentLogs) -> Self {
        self.recent_logs = logs;
        self
    }

    /// The ring the log routes show.
    pub fn recent_logs(&self) -> RecentLogs {
        self.recent_logs.clone()
    }

    /// Reports readiness and shutdown to `notifier` (systemd's
    /// `NOTIFY_SOCKET`).
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// Counters of the DNS UDP workers.
    pub fn dns_stats(&self) -> Arc<dns::udp::UdpStats> {
        self.dns.stats()
    }

    /// Counters of the DNS TCP front end.
    pub fn dns_tcp_stats(&self) -> Arc<dns::tcp::TcpStats> {
        self.dns.tcp_stats()
    }

    /// Every registry change from now on, in index order.
    pub fn events(&self) -> Subscription {
        self.feed.subscribe_from(self.registry.index())
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn dns_addr(&self) -> SocketAddr {
        self.dns.local_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Runs until `shutdown` is cancelled, then drains (`http.drain_period`),
    /// stops accepting and finishes what is in flight.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.run_draining(shutdown, CancellationToken::new()).await
    }

    /// [`App::run`], where cancelling `skip_drain` (before or during the
    /// drain) closes the listeners without waiting for the drain period.
    ///
    /// During the drain `/v1/ready` answers 503, so load balancers and
    /// orchestrators take this node out of rotation, while DNS and the API
    /// go on answering everyone who still comes; then the listeners close.
    pub async fn run_draining(
        self,
        shutdown: CancellationToken,
        skip_drain: CancellationToken,
    ) -> anyhow::Result<()> {
        let tasks = TaskTracker::new();
        // What the tasks stop on: the end of the drain, not the signal.
        let stop = CancellationToken::new();
        let App {
            config,
            registry,
            dns,
            http_listener,
            http_tls,
            ready,
            feed,
            journal,
            etcd,
            recovery,
            auth,
            recent_logs,
            notifier,
            metrics,
            askers,
        } = self;

        let dns_addr = dns.local_addr();
        dns.spawn(&tasks, stop.clone())?;

        // On a shared log the elected node decides expiry (store::etcd::expiry).
        match &etcd {
            Some(log) => {
                tracing::info!(store = %log.describe(), "following an etcd cluster");
                log.spawn(&tasks, stop.clone());
            }
            None => {
                tasks.spawn(expiry_loop(registry.clone(), stop.clone()));
            }
        }
        // Node-local on etcd too (docs/cluster.md): each node ejects from
        // its own answers what it saw fail.
        let outliers = crate::health::outlier::Outliers::new(registry.clone(), config.outlier);
        tasks.spawn(outliers.clone().run(stop.clone()));

        http_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(http_listener)?;
        let http_addr = listener.local_addr()?;
        let durable = journal.as_ref().map(Journal::durable).unwrap_or_default();
        let log: Arc<dyn Log> = match &etcd {
            Some(log) => Arc::new(log.clone()),
            None => Arc::new(LocalLog::new(
                registry.clone(),
                durable.clone(),
                feed.clone(),
            )),
        };
        // Host names of instances are resolved in the background and the
        // results proposed like any change.
        let resolver = crate::resolve::Driver::new(
            resolve_settings(&config.resolve),
            Arc::new(crate::resolve::SystemResolver::new(resolve_source(
                &config.resolve,
            ))),
            log.clone(),
            feed.subscribe_from(0),
        );
        tasks.spawn(resolver.run(shutdown.clone()));
        // Health checks: one scheduler for every check an instance defines.
        let checks = crate::health::Driver::new(
            crate::health::Settings {
                max_in_flight: config.health.max_in_flight,
                script_checks: config.health.enable_script_checks,
            },
            log.clone(),
            feed.subscribe_from(0),
        );
        metrics.health(checks.stats());
        tasks.spawn(checks.run(shutdown.clone()));
        match &etcd {
            // The configured token may be in etcd already (another node
            // made it): decided on the loaded registry, and once more
            // should a node racing this one have won the bootstrap.
            Some(e) => {
                let limit = e.timeout() * 6;
                if !e.wait_caught_up(limit).await {
                    tracing::warn!(
                        "not caught up with etcd yet; checking the configured token anyway"
                    );
                }
                if acl::bootstrap_from_config(&config, &registry, log.as_ref())
                    .await
                    .is_err()
                {
                    e.wait_caught_up(limit).await;
                    acl::bootstrap_from_config(&config, &registry, log.as_ref()).await?;
                }
            }
            None => acl::bootstrap_from_config(&config, &registry, log.as_ref()).await?,
        }
        let federation = crate::federation::Federation::new(
            registry.clone(),
            feed.clone(),
            config.federation.clone(),
            config.data_dir.clone(),
        );
        federation.start(log.clone(), &tasks, stop.clone()).await;
        acl::spawn_tasks(&auth, &tasks, stop.clone());
        acl::spawn_blacklist_expiry(registry.clone(), log.clone(), &tasks, stop.clone());
        let state = http::HttpState::from(http::HttpShared {
            registry: registry.clone(),
            domain: config.domain.clone(),
            max_body_bytes: config.http.max_body_bytes,
            snapshot_streams: http::SnapshotStreams::new(config.http.max_snapshot_streams),
            ready: ready.clone(),
            log,
            feed,
            durable: durable.clone(),
            auth,
            recent_logs,
            started: tokio::time::Instant::now(),
            federation: federation.clone(),
            script_checks: config.health.enable_script_checks,
            outliers,
            http_metrics: crate::telemetry::metrics::HttpMetrics::new(&metrics),
            metrics,
            streams_stop: stop.clone(),
            maxine_control: http::MaxineControl::new(
                config.log.format == crate::config::LogFormat::Json,
                http_addr.port(),
            ),
            traces: config.telemetry.otlp_endpoint.is_some(),
            encoded_changes: Default::default(),
            event_write_interval: config.http.event_write_interval,
            shared_deliveries: Default::default(),
            askers,
        });
        if let Some(m) = &config.mqtt {
            let credentials = match (&m.username, &m.password_file) {
                (Some(user), Some(path)) => {
                    Some((user.clone(), read_secret(path, "mqtt.password_file")?))
                }
                (Some(user), None) => Some((user.clone(), String::new())),
                _ => None,
            };
            let publisher = crate::mqtt::Publisher::new(
                crate::mqtt::Settings {
                    host: m.host.clone(),
                    port: m.port,
                    client_id: m.client_id.clone(),
                    topic_prefix: m.topic_prefix.clone(),
                    credentials,
                    healthy_interval: m.healthy_interval,
                    write_interval: m.write_interval,
                },
                registry.clone(),
                state.feed.clone(),
                Arc::new(http::EventsJson(state.clone())),
            );
            tasks.spawn(publisher.run(stop.clone()));
        }
        let router = http::router(state).with_recovery(recovery);
        let snapshots = (config.store == StoreConfig::File).then(|| AutoSnapshot {
            registry: registry.clone(),
            dir: config.data_dir.join(crate::store::snapshot::DIR_NAME),
            keep: config.snapshot.keep,
        });
        if let (Some(s), Some(every)) = (&snapshots, config.snapshot.interval) {
            tasks.spawn(s.clone().run(every, durable, stop.clone()));
        }
        let http_shutdown = stop.clone();
        let limits = http_limits(&config.http);
        let http_task = tasks.spawn(async move {
            http::serve(listener, router, http_tls, limits, http_shutdown).await
        });

        ready.store(true, Ordering::Release);
        tracing::info!(
            dns = %dns_addr,
            http = %http_addr,
            datacenter = %config.datacenter,
            domain = %config.domain,
            "maxine is serving"
        );
        notifier.notify(&format!(
            "READY=1\nSTATUS=serving: DNS on {dns_addr}, API on {http_addr}"
        ));
        shutdown.cancelled().await;
        ready.store(false, Ordering::Release);
        let drain = config.http.drain_period;
        notifier.notify("STOPPING=1\nSTATUS=draining, then stopping");
        if !drain.is_zero() && !skip_drain.is_cancelled() {
            tracing::info!(
                seconds = drain.as_secs_f64(),
                "draining: /v1/ready answers 503 while DNS and the API keep serving"
            );
            tokio::select! {
                _ = tokio::time::sleep(drain) => {}
                _ = skip_drain.cancelled() => tracing::info!("drain cut short"),
            }
        }
        stop.cancel();
        federation.close_streams();
        tasks.close();
        tasks.wait().await;
        if let Some(log) = etcd {
            let _ = tokio::task::spawn_blocking(move || log.persist_now()).await;
        }
        if !config.federation.peers.is_empty() {
            let f = federation.clone();
            let _ = tokio::task::spawn_blocking(move || f.flush()).await;
        }
        // Requests have drained: write what is queued and close the store.
        if let Some(j) = journal {
            let _ = tokio::task::spawn_blocking(move || {
                j.close();
                // What was just closed, for a damaged file to be recovered from.
                if let Some(Err(e)) = snapshots.map(|s| s.write_now()) {
                    tracing::error!(error = %e, "writing the shutdown snapshot failed");
                }
            })
            .await;
        }
        match http_task.await {
            Ok(Err(e)) => Err(e).context("HTTP API failed"),
            _ => Ok(()),
        }
    }
}

/// How host names are re-resolved, from the validated `[resolve]` section.
fn resolve_settings(c: &ResolveConfig) -> crate::resolve::Settings {
    crate::resolve::Settings {
        min_ttl: c.min_ttl,
        max_ttl: c.max_ttl,
        concurrency: c.concurrency,
    }
}

/// Where the resolver's configuration is read from.
fn resolve_source(c: &ResolveConfig) -> crate::resolve::system::Source {
    crate::resolve::system::Source {
        resolv_conf: c.resolv_conf.clone(),
        hosts_file: c.hosts_file.clone(),
        nameservers: c.nameservers.clone(),
    }
}

/// The HTTP server's deadlines and bounds, from the validated `[http]` section.
pub fn http_limits(c: &HttpConfig) -> http::Limits {
    http::Limits {
        header_read_timeout: c.header_read_timeout,
        body_timeout: c.body_timeout,
        idle_timeout: c.idle_timeout,
        h2_ping_interval: c.h2_ping_interval,
        max_connections: c.max_connections,
        max_connections_per_ip: c.max_connections_per_ip,
        max_header_bytes: c.max_header_bytes,
        max_uri_bytes: c.max_uri_bytes,
        max_headers: c.max_headers,
    }
}

/// The single driver of TTL expiry: sleeps until the next deadline (or at
/// most a second, so newly registered instances are picked up), then lets the
/// registry turn expired instances critical and reap old ones.
async fn expiry_loop(registry: Registry, shutdown: CancellationToken) {
    use std::time::Duration;
    use tokio::time::{Instant, sleep_until};
    loop {
        let now = Instant::now();
        let max = now + Duration::from_millis(250);
        let next = registry
            .next_deadline()
            .map(|d| {
                Instant::from_std(d)
                    .max(now + Duration::from_millis(1))
                    .min(max)
            })
            .unwrap_or(max);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sleep_until(next) => {}
        }
        let was = registry.self_preservation();
        let changed = registry.expire(Instant::now().into_std());
        if changed > 0 {
            tracing::debug!(changed, "expiry applied");
        }
        match (was, registry.self_preservation()) {
            (None, Some(p)) => tracing::warn!(
                silent = p.silent,
                total = p.total,
                threshold = p.threshold,
                "{}",
                p.reason()
            ),
            (Some(_), None) => {
                tracing::info!("self-preservation over: heartbeats returned; expiring again")
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Port 0 never lands in a port another reuse-port UDP group holds
    /// (for example a server of an earlier test whose workers still run).
    #[test]
    fn an_ephemeral_dns_port_is_never_shared_with_another_server() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let others: Vec<_> = (0..2000).map(|_| dns::bind_udp(any).unwrap()).collect();
        let taken: std::collections::HashSet<u16> = others
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        for _ in 0..300 {
            let (udp, _tcp) = bind_dns(any).unwrap();
            let port = udp.local_addr().unwrap().port();
            assert!(!taken.contains(&port), "port {port} is shared");
        }
    }
}
