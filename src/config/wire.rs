//! The one declaration of every setting of `maxine serve`: its TOML key
//! (section and field), type, default, `MAXINE_*` variable, whether it has a
//! flag (named after the variable), and its line of documentation. The wire
//! types, their defaults, the environment mapping, `--help` and the check of
//! docs/config.md all come from here.

use std::path::PathBuf;

use super::DurationValue;

settings! {
    /// The whole configuration as written in TOML.
    ConfigFile "" {
        /// This datacenter's name (a DNS label).
        datacenter: String = "dc1", "MAXINE_DATACENTER" or "DATACENTER_ID", flag;
        /// DNS zone Maxine is authoritative for.
        domain: String = "maxine", "MAXINE_DOMAIN", flag;
        /// Directory for Maxine's data.
        data_dir: PathBuf = "./maxine-data", "MAXINE_DATA_DIR", flag;
        /// Where the registry is kept: file (registry.redb in data_dir), redis://[:password@]host:port/db (rediss:// for TLS), etcd://host:port[,host:port...]/prefix (etcds:// for TLS: several nodes share one registry), or memory (nothing kept: a restart starts empty).
        store: String = "file", "MAXINE_STORE", flag;
        /// File holding the Redis or etcd password (read at start, trailing newline dropped, never logged), so that no password appears on the command line; redis and etcd stores only.
        store_password_file: Option<PathBuf>, "MAXINE_STORE_PASSWORD_FILE", flag;
        /// PEM CA certificate(s) a rediss:// or etcds:// store's certificate must be signed by; unset: the system's trusted roots.
        store_ca_cert: Option<PathBuf>, "MAXINE_STORE_CA_CERT", flag;
        /// etcd user name (its password in store_password_file); etcd stores only.
        store_user: Option<String>, "MAXINE_STORE_USER", flag;
        /// PEM client certificate for an etcds:// store that asks for one (with store_client_key).
        store_client_cert: Option<PathBuf>, "MAXINE_STORE_CLIENT_CERT", flag;
        /// PEM private key of store_client_cert.
        store_client_key: Option<PathBuf>, "MAXINE_STORE_CLIENT_KEY", flag;
        /// A write an etcd store has not confirmed within this fails with 503 (100ms to 1m); etcd stores only.
        store_timeout: DurationValue = "5s", "MAXINE_STORE_TIMEOUT", flag;
    } sections {
        /// Authoritative DNS server.
        dns: DnsFile,
        /// HTTP API.
        http: HttpFile,
        /// Registry behaviour.
        registry: RegistryFile,
        /// Logging.
        log: LogFile,
        /// Automatic snapshots of the file store, to recover a damaged file from.
        snapshot: SnapshotFile,
        /// Access control: tokens, policies, JWT and sign-in (docs/security.md).
        acl: AclFile,
        /// The audit log in `<data_dir>/audit/`.
        audit: AuditFile,
        /// Resolving the host names instances are registered by.
        resolve: ResolveFile,
        /// Federation with the peers of other datacenters (docs/federation.md).
        federation: FederationFile,
        /// Failover to other datacenters' instances (docs/federation.md).
        failover: FailoverFile,
        /// Active health checks (docs/health.md).
        health: HealthFile,
        /// Outlier ejection from reported outcomes (docs/health.md).
        outlier: OutlierFile,
        /// Prometheus metrics at `GET /metrics` (docs/operations.md).
        metrics: MetricsFile,
        /// Publishing registry changes to an MQTT broker (docs/operations.md).
        mqtt: MqttFile,
        /// Traces exported over OTLP (docs/operations.md).
        telemetry: TelemetryFile,
        /// Which services may find which by DNS (docs/security.md).
        intentions: IntentionsFile,
    }

    /// The `[dns]` section.
    DnsFile "dns." {
        /// DNS listen address, UDP and TCP.
        addr: String = "127.0.0.1:8600", "MAXINE_DNS_ADDR", flag;
        /// TTL of service and instance records (at most 1 day).
        ttl: DurationValue = "5s", "MAXINE_DNS_TTL", flag;
        /// TTL of negative answers (the SOA minimum, at most 1 day); unset: the zone file's.
        negative_ttl: Option<DurationValue>, "MAXINE_DNS_NEGATIVE_TTL";
        /// Directory holding <domain>.zone, which must exist; unset: ./zones/<domain>.zone if there is one, else a built-in zone.
        zone_dir: Option<PathBuf>, "MAXINE_ZONE_DIR", flag;
        /// Most address or SRV records in one UDP answer (1 to 200); UDP answers rotate through all instances, TCP answers carry every instance (up to 64 KiB).
        max_records: usize = "32", "MAXINE_DNS_MAX_RECORDS";
        /// Idle TCP connections are closed after this long (100ms to 1h).
        tcp_idle_timeout: DurationValue = "10s", "MAXINE_DNS_TCP_IDLE_TIMEOUT";
        /// Most open TCP connections in all.
        tcp_max_connections: usize = "1024", "MAXINE_DNS_TCP_MAX_CONNECTIONS";
        /// Most open TCP connections from one client address (IPv4 address, IPv6 /64).
        tcp_max_connections_per_ip: usize = "64", "MAXINE_DNS_TCP_MAX_CONNECTIONS_PER_IP";
        /// UDP worker threads, each with its own socket on the port (at most 256); 0: one per core.
        udp_workers: usize = "0", "MAXINE_DNS_UDP_WORKERS", flag;
        /// A UDP query that waited longer than this in the socket buffer is dropped unanswered (10ms to 30s).
        max_queue_delay: DurationValue = "1s", "MAXINE_DNS_MAX_QUEUE_DELAY";
        /// Most open TCP connections from one client prefix (the prefixes of dns.rrl); at the total cap a smaller prefix takes one from the largest.
        tcp_max_connections_per_prefix: usize = "64", "MAXINE_DNS_TCP_MAX_CONNECTIONS_PER_PREFIX";
        /// Idle timeout of TCP connections while more than 3/4 of tcp_max_connections are open (100ms to 1h; at most tcp_idle_timeout).
        tcp_busy_idle_timeout: DurationValue = "2s", "MAXINE_DNS_TCP_BUSY_IDLE_TIMEOUT";
        /// Answer with passing instances only; false: warning instances (overloaded but alive, e.g. a check got 429) are answered too (docs/health.md).
        only_passing: bool = "false", "MAXINE_DNS_ONLY_PASSING";
        /// How answers spread load over a service's instances unless the service sets its own: round_robin, weighted, random, sticky or nearest.
        strategy: String = "round_robin", "MAXINE_DNS_STRATEGY";
        /// Below this percentage of healthy instances a service answers with all of them (0 to 100; 0: never); services may set their own.
        panic_threshold: u8 = "50", "MAXINE_DNS_PANIC_THRESHOLD";
        /// Zones of client networks for the nearest strategy, as CIDR=zone (10.1.0.0/16=eu-1), longest prefix first.
        client_zones: Vec<String>, "MAXINE_DNS_CLIENT_ZONES";
        /// Recursors (CIDRs) whose EDNS Client Subnet stands for the asker (docs/security.md); others' is ignored for identity.
        trusted_recursors: Vec<String>, "MAXINE_DNS_TRUSTED_RECURSORS";
    } sections {
        /// Response rate limiting.
        rrl: RrlFile,
    }

    /// Response rate limiting per client prefix (see docs/dns.md).
    RrlFile "dns.rrl." {
        /// Responses per second per client prefix and UDP worker; 0 turns limiting off.
        responses_per_second: u32 = "1000", "MAXINE_DNS_RRL", flag;
        /// Every n-th limited response is sent truncated (TC=1) instead of dropped; 0: drop all.
        slip: u32 = "2", "MAXINE_DNS_RRL_SLIP";
        /// IPv4 prefix length that counts as one client (at most 32).
        ipv4_prefix: u8 = "24", "MAXINE_DNS_RRL_IPV4_PREFIX";
        /// IPv6 prefix length that counts as one client (at most 128).
        ipv6_prefix: u8 = "56", "MAXINE_DNS_RRL_IPV6_PREFIX";
        /// Never limit clients on loopback addresses.
        exempt_loopback: bool = "true", "MAXINE_DNS_RRL_EXEMPT_LOOPBACK";
    }

    /// The `[http]` section.
    HttpFile "http." {
        /// HTTP API listen address.
        addr: String = "127.0.0.1:8080", "MAXINE_HTTP_ADDR", flag;
        /// PEM certificate chain; with tls_key, the API is served over HTTPS.
        tls_cert: Option<PathBuf>, "MAXINE_TLS_CERT", flag;
        /// PEM private key of tls_cert.
        tls_key: Option<PathBuf>, "MAXINE_TLS_KEY", flag;
        /// Accept plain HTTP on a non-loopback address.
        insecure_http: bool = "false", "MAXINE_INSECURE_HTTP", flag;
        /// Largest request body accepted, in bytes (at least 1024); larger ones get 413.
        max_body_bytes: usize = "65536", "MAXINE_MAX_BODY_BYTES";
        /// A client must send a request's headers within this long of their first byte, and its first request within this long of connecting (100ms to 10m), or the connection is closed.
        header_read_timeout: DurationValue = "10s", "MAXINE_HTTP_HEADER_READ_TIMEOUT";
        /// A client must send a whole request body within this long (100ms to 1h); slower ones get 408.
        body_timeout: DurationValue = "30s", "MAXINE_HTTP_BODY_TIMEOUT";
        /// A connection with no request in flight is closed after this long, HTTP/1 and HTTP/2 (100ms to 1h).
        idle_timeout: DurationValue = "60s", "MAXINE_HTTP_IDLE_TIMEOUT";
        /// HTTP/2 connections are pinged this often (100ms to 1h); a ping unanswered for as long closes it.
        h2_ping_interval: DurationValue = "20s", "MAXINE_HTTP_H2_PING_INTERVAL";
        /// Most open API connections in all (at least 1); more are closed at once.
        max_connections: usize = "1024", "MAXINE_HTTP_MAX_CONNECTIONS";
        /// Most open API connections from one client address (at least 1); more are closed at once.
        max_connections_per_ip: usize = "64", "MAXINE_HTTP_MAX_CONNECTIONS_PER_IP";
        /// Largest request head (request line and headers), in bytes (4096 to 1048576); larger ones get 431.
        max_header_bytes: usize = "16384", "MAXINE_HTTP_MAX_HEADER_BYTES";
        /// Longest request target (path and query), in bytes (256 to max_header_bytes); longer ones get 414.
        max_uri_bytes: usize = "8192", "MAXINE_HTTP_MAX_URI_BYTES";
        /// Most headers in one request (8 to 1000); more get 431.
        max_headers: usize = "100", "MAXINE_HTTP_MAX_HEADERS";
        /// Most GET /v1/snapshot answers streamed at once (at least 1); more get 503 with Retry-After.
        max_snapshot_streams: usize = "2", "MAXINE_HTTP_MAX_SNAPSHOT_STREAMS";
        /// Host names (and host:port) the API answers to; others get 421 (DNS rebinding). Empty: the bind address's own names (loopback: localhost, 127.0.0.1, [::1]); any host on a wildcard address.
        allowed_hosts: Vec<String>, "MAXINE_HTTP_ALLOWED_HOSTS", flag;
        /// On SIGTERM, /v1/ready answers 503 for this long while DNS and the API keep serving, then the listeners close (0 to 10m).
        drain_period: DurationValue = "5s", "MAXINE_DRAIN_PERIOD", flag;
        /// An event stream (GET /v1/events, /v1/events/ws) is written at most once per this long (0 to 1s); changes in between go into its next write. 0: each change at once.
        event_write_interval: DurationValue = "50ms", "MAXINE_HTTP_EVENT_WRITE_INTERVAL";
    }

    /// The `[registry]` section.
    RegistryFile "registry." {
        /// How long an instance stays critical (out of DNS) before it is removed (at least 1s).
        reap_after: DurationValue = "10m", "MAXINE_REAP_AFTER", flag;
        /// Stop expiring a datacenter's instances while more than self_preservation_threshold percent of them would expire within one TTL (a network failure, not the services); false: always expire.
        self_preservation: bool = "true", "MAXINE_SELF_PRESERVATION";
        /// The percentage of a datacenter's instances whose expiry within one TTL turns self-preservation on (1 to 100).
        self_preservation_threshold: u8 = "15", "MAXINE_SELF_PRESERVATION_THRESHOLD";
    }

    /// The `[log]` section.
    LogFile "log." {
        /// Log format: text or json.
        format: String = "text", "MAXINE_LOG_FORMAT", flag;
        /// Log filter, e.g. info or maxine=debug.
        level: String = "info", "MAXINE_LOG_LEVEL", flag;
    }

    /// The `[acl]` section.
    AclFile "acl." {
        /// What applies when no rule matches: allow or deny. Unset: allow while the API listens only on loopback, deny on any other address.
        default_policy: Option<String>, "MAXINE_ACL_DEFAULT_POLICY", flag;
        /// File holding the secret of a management token created at start-up (instead of POST /v1/acl/bootstrap); at least 32 characters.
        bootstrap_token_file: Option<PathBuf>, "MAXINE_ACL_BOOTSTRAP_TOKEN_FILE", flag;
        /// The secret of a management token created at start-up (prefer bootstrap_token_file: variables show in process listings).
        bootstrap_token: Option<String>, "MAXINE_ACL_BOOTSTRAP_TOKEN";
        /// Sign-in users: a file of lines `name role argon2-hash` (role viewer, operator or admin).
        users_file: Option<PathBuf>, "MAXINE_ACL_USERS_FILE", flag;
        /// Name of an admin sign-in user, with admin_password (the variables the Node.js Maxine reads).
        admin_username: Option<String>, "MAXINE_ADMIN_USERNAME";
        /// Password of admin_username (hashed at start-up, never stored or logged).
        admin_password: Option<String>, "MAXINE_ADMIN_PASSWORD";
    } sections {
        /// JWTs from an identity provider.
        jwt: JwtFile,
    }

    /// The `[acl.jwt]` section: JWTs are accepted once an issuer is set.
    JwtFile "acl.jwt." {
        /// The issuer (`iss`) accepted; unset: no JWT from an identity provider is accepted.
        issuer: Option<String>, "MAXINE_ACL_JWT_ISSUER";
        /// Audiences (`aud`) accepted; a token must name one.
        audiences: Vec<String> = "maxine", "MAXINE_ACL_JWT_AUDIENCES";
        /// Algorithms accepted: RS256, ES256, EdDSA, and HS256 (only with hs256_secret_file).
        algorithms: Vec<String> = "RS256,ES256,EdDSA", "MAXINE_ACL_JWT_ALGORITHMS";
        /// PEM public key files (RSA, EC P-256, Ed25519), reloaded on change or SIGHUP.
        public_key_files: Vec<String>, "MAXINE_ACL_JWT_PUBLIC_KEY_FILES";
        /// A JWKS file (keys chosen by `kid`), reloaded on change or SIGHUP.
        jwks_file: Option<PathBuf>, "MAXINE_ACL_JWT_JWKS_FILE";
        /// File holding the HS256 secret (at least 32 bytes).
        hs256_secret_file: Option<PathBuf>, "MAXINE_ACL_JWT_HS256_SECRET_FILE";
        /// Clock skew allowed on exp and nbf (at most 60s).
        leeway: DurationValue = "5s", "MAXINE_ACL_JWT_LEEWAY";
        /// A claim whose value is the token's service identity (write on that service, read on all).
        service_claim: Option<String>, "MAXINE_ACL_JWT_SERVICE_CLAIM";
        /// Policies granted by claims: `claim=value:policy[+policy...]`, e.g. groups=platform:operator (the claim equals value, or is a list holding it).
        policy_bindings: Vec<String>, "MAXINE_ACL_JWT_POLICY_BINDINGS";
    }

    /// The `[audit]` section.
    AuditFile "audit." {
        /// An audit file is rotated when it would pass this size, in bytes (at least 4096); the hash chain continues in the next.
        max_file_bytes: usize = "67108864", "MAXINE_AUDIT_MAX_FILE_BYTES";
    }

    /// The `[intentions]` section.
    IntentionsFile "intentions." {
        /// What applies when no intention matches a querier's service and the service it asks for: allow or deny. Unset: the ACL default policy.
        default: Option<String>, "MAXINE_INTENTIONS_DEFAULT";
    }

    /// The `[metrics]` section.
    MetricsFile "metrics." {
        /// Count DNS responses for `GET /metrics` (per-worker counters); false: the DNS front end counts nothing (the other metrics stay).
        enabled: bool = "true", "MAXINE_METRICS_ENABLED";
    }

    /// Automatic snapshots into `<data_dir>/snapshots/` (file store only).
    SnapshotFile "snapshot." {
        /// How often a snapshot is written when the registry changed (one is also written at a clean shutdown); 0: only at shutdown.
        interval: DurationValue = "10m", "MAXINE_SNAPSHOT_INTERVAL";
        /// How many snapshots are kept, newest first (1 to 100).
        keep: usize = "3", "MAXINE_SNAPSHOT_KEEP";
    }

    /// The `[resolve]` section: how Maxine resolves the host names that
    /// instances are registered by (docs/dns.md).
    ResolveFile "resolve." {
        /// The resolver configuration read for host names of instances: name servers, search domains, ndots, timeout and attempts.
        resolv_conf: PathBuf = "/etc/resolv.conf", "MAXINE_RESOLVE_RESOLV_CONF";
        /// A hosts file consulted before the name servers; empty: none.
        hosts_file: PathBuf = "/etc/hosts", "MAXINE_RESOLVE_HOSTS_FILE";
        /// Name servers (IP or IP:port) asked instead of those of resolv_conf.
        nameservers: Vec<String>, "MAXINE_RESOLVE_NAMESERVERS";
        /// A resolved address is resolved again after at least this long, whatever its TTL (1s to max_ttl).
        min_ttl: DurationValue = "5s", "MAXINE_RESOLVE_MIN_TTL";
        /// A resolved address is resolved again after at most this long (at most 1 day); names from the hosts file are resolved again this often.
        max_ttl: DurationValue = "5m", "MAXINE_RESOLVE_MAX_TTL";
        /// Most host names resolved at once (1 to 256).
        concurrency: usize = "8", "MAXINE_RESOLVE_CONCURRENCY";
    }

    /// The `[federation]` section: peers of other datacenters.
    FederationFile "federation." {
        /// Peer datacenters as name=url (comma-separated in the variable; --federation-peer may be repeated), or [[federation.peers]] tables with name, url, ca_file and token_file.
        peers: super::PeerList, "MAXINE_FEDERATION_PEERS";
        /// File holding the ACL token (with operator permission) sent to peers that have no token_file of their own.
        token_file: Option<PathBuf>, "MAXINE_FEDERATION_TOKEN_FILE", flag;
        /// PEM CA certificate(s) peers' HTTPS certificates must be signed by, for peers without a ca_file; unset: the system's roots.
        ca_file: Option<PathBuf>, "MAXINE_FEDERATION_CA_FILE";
        /// Pass on the catalogs learnt from peers to the peers that stream from here (hub-and-spoke).
        relay: bool = "false", "MAXINE_FEDERATION_RELAY";
        /// A peer not heard from for this long is stale (1s to 1h): its names still answer, but it is a failover target only while no fresher one has the service.
        stale_after: DurationValue = "15s", "MAXINE_FEDERATION_STALE_AFTER";
        /// Keep-alives on a federation stream are sent this often (100ms to 1m).
        keepalive: DurationValue = "2s", "MAXINE_FEDERATION_KEEPALIVE";
        /// Replicas are written to <data_dir>/federation/ this often when they changed (1s to 1h), and at shutdown.
        persist_interval: DurationValue = "10s", "MAXINE_FEDERATION_PERSIST_INTERVAL";
    }

    /// The `[failover]` section: answers from other datacenters when a
    /// service has no passing local instance.
    FailoverFile "failover." {
        /// Datacenters to fail over to, in order; empty: none (unless nearest is set).
        datacenters: Vec<String>, "MAXINE_FAILOVER_DATACENTERS";
        /// Fail over to the N peers with the lowest measured round-trip time instead of datacenters; 0: off.
        nearest: usize = "0", "MAXINE_FAILOVER_NEAREST";
        /// TTL of failover answers (at most 1 day; capped at dns.ttl).
        ttl: DurationValue = "2s", "MAXINE_FAILOVER_TTL";
        /// SRV answers of local names also list the failover datacenters' instances, at priority 2, 3, ... after the local ones at 1.
        srv_tiers: bool = "false", "MAXINE_FAILOVER_SRV_TIERS";
    }

    /// The `[health]` section: active health checks (docs/health.md).
    HealthFile "health." {
        /// Allow script checks (programs Maxine runs as its own user, without a shell); off: registering one is refused with 400.
        enable_script_checks: bool = "false", "MAXINE_ENABLE_SCRIPT_CHECKS", flag;
        /// Most checks running at once (1 to 100000); due checks beyond it wait, and the wait shows as scheduler lag.
        max_in_flight: usize = "1024", "MAXINE_HEALTH_MAX_IN_FLIGHT";
    }

    /// The `[outlier]` section: ejecting instances that fail, from the
    /// outcomes clients report (`POST /v1/services/{svc}/outcomes`).
    OutlierFile "outlier." {
        /// Consecutive reported failures that eject an instance (1 to 1000); 0 turns ejection off.
        consecutive_failures: u32 = "5", "MAXINE_OUTLIER_CONSECUTIVE_FAILURES";
        /// An ejection lasts this long times the number of times the instance was ejected (1s to 1h).
        base_ejection_time: DurationValue = "30s", "MAXINE_OUTLIER_BASE_EJECTION_TIME";
        /// The longest ejection (at least base_ejection_time, at most 1 day).
        max_ejection_time: DurationValue = "5m", "MAXINE_OUTLIER_MAX_EJECTION_TIME";
        /// At most this percentage of a service's instances are ejected at once (0 to 100); at least one may always be.
        max_ejection_percent: u8 = "10", "MAXINE_OUTLIER_MAX_EJECTION_PERCENT";
    }

    /// The `[mqtt]` section: registry changes published to a broker.
    MqttFile "mqtt." {
        /// The broker, as mqtt://host:port; unset: nothing is published.
        url: Option<String>, "MAXINE_MQTT_URL", flag;
        /// The client id Maxine connects with; unset: maxine-<datacenter>.
        client_id: Option<String>, "MAXINE_MQTT_CLIENT_ID";
        /// The first level of every topic: <prefix>/<dc>/services/<service>.
        topic_prefix: String = "maxine", "MAXINE_MQTT_TOPIC_PREFIX";
        /// The user name Maxine connects as (with password_file); unset: none.
        username: Option<String>, "MAXINE_MQTT_USERNAME";
        /// File holding the password of username (trailing newline dropped, never logged).
        password_file: Option<PathBuf>, "MAXINE_MQTT_PASSWORD_FILE";
        /// A service's retained healthy set is published at most this often, with its latest state (100ms to 1m).
        healthy_interval: DurationValue = "1s", "MAXINE_MQTT_HEALTHY_INTERVAL";
        /// The shortest time between two writes to the broker, each carrying every message ready by then (0 to 1s; 0: each change at once).
        write_interval: DurationValue = "50ms", "MAXINE_MQTT_WRITE_INTERVAL";
    }

    /// The `[telemetry]` section: traces.
    TelemetryFile "telemetry." {
        /// OTLP/HTTP endpoint spans are exported to, e.g. http://127.0.0.1:4318 (/v1/traces is added); unset: no spans are exported.
        otlp_endpoint: Option<String>, "MAXINE_OTLP_ENDPOINT", flag;
        /// Spans are exported in batches at least this often (100ms to 1m).
        otlp_export_interval: DurationValue = "5s", "MAXINE_OTLP_EXPORT_INTERVAL";
    }
}
