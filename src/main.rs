//! The `maxine` program: `maxine serve` runs the server; the other
//! subcommands are small clients of a running server, for people.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal as unix_signal};
use tokio_util::sync::CancellationToken;

use maxine::app::{App, Listeners};
use maxine::config::{Config, LogFormat, Sources};

/// The server's allocator: docs/adr/0004-mimalloc-allocator.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "maxine", version, about = "DNS-first service discovery")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (DNS and HTTP API).
    Serve(ServeArgs),
    /// Register (or replace) an instance through the API.
    Register(RegisterArgs),
    /// Remove an instance through the API.
    Deregister(InstanceArgs),
    /// List services through the API.
    Services(ClientArgs),
    /// Resolve a name through DNS, as any client would (hickory-resolver).
    Lookup(LookupArgs),
    /// Back up and restore the registry with snapshot files (checksummed).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Save the registry of a running server to FILE (GET /v1/snapshot).
    Save(SnapshotSaveArgs),
    /// Replace what the store holds with FILE. Run it while Maxine is
    /// stopped, with the store settings `serve` uses; then start Maxine.
    Restore(SnapshotRestoreArgs),
}

#[derive(Args)]
struct SnapshotSaveArgs {
    file: PathBuf,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct SnapshotRestoreArgs {
    file: PathBuf,
    /// TOML config file, as for `serve` [env: none]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory [env: MAXINE_DATA_DIR] [default: ./maxine-data]
    #[arg(long)]
    data_dir: Option<String>,
    /// Store: file or redis://host:port/db [env: MAXINE_STORE] [default: file]
    #[arg(long)]
    store: Option<String>,
}

/// Settings for `serve`. Each flag overrides its MAXINE_* environment
/// variable, which overrides the config file, which overrides the default.
#[derive(Args, Default)]
struct ServeArgs {
    /// TOML config file; unknown keys are an error [env: none]
    #[arg(long)]
    config: Option<PathBuf>,
    /// DNS listen address, UDP and TCP [env: MAXINE_DNS_ADDR] [default: 127.0.0.1:8600]
    #[arg(long)]
    dns_addr: Option<String>,
    /// HTTP API listen address [env: MAXINE_HTTP_ADDR] [default: 127.0.0.1:8080]
    #[arg(long)]
    http_addr: Option<String>,
    /// Data directory [env: MAXINE_DATA_DIR] [default: ./maxine-data]
    #[arg(long)]
    data_dir: Option<String>,
    /// Where the registry is kept: file (registry.redb in the data directory),
    /// redis://[:password@]host:port/db, or memory (nothing kept)
    /// [env: MAXINE_STORE] [default: file]
    #[arg(long)]
    store: Option<String>,
    /// This datacenter's name [env: MAXINE_DATACENTER or DATACENTER_ID] [default: dc1]
    #[arg(long)]
    datacenter: Option<String>,
    /// DNS zone served [env: MAXINE_DOMAIN] [default: maxine]
    #[arg(long)]
    domain: Option<String>,
    /// Directory of zone files (`<domain>.zone`) [env: MAXINE_ZONE_DIR] [default: zones]
    #[arg(long)]
    zone_dir: Option<String>,
    /// PEM certificate chain: serve the API over HTTPS [env: MAXINE_TLS_CERT]
    #[arg(long)]
    tls_cert: Option<String>,
    /// PEM private key for --tls-cert [env: MAXINE_TLS_KEY]
    #[arg(long)]
    tls_key: Option<String>,
    /// Accept plain HTTP on a non-loopback address [env: MAXINE_INSECURE_HTTP]
    #[arg(long)]
    insecure_http: bool,
    /// Log format: text or json [env: MAXINE_LOG_FORMAT] [default: text]
    #[arg(long)]
    log_format: Option<String>,
    /// Log filter, e.g. info or maxine=debug [env: MAXINE_LOG_LEVEL] [default: info]
    #[arg(long)]
    log_level: Option<String>,
}

impl ServeArgs {
    fn flags(&self) -> Vec<(&'static str, String)> {
        let mut f = Vec::new();
        let mut put = |key, v: &Option<String>| {
            if let Some(v) = v {
                f.push((key, v.clone()));
            }
        };
        put("dns.addr", &self.dns_addr);
        put("http.addr", &self.http_addr);
        put("data_dir", &self.data_dir);
        put("store", &self.store);
        put("datacenter", &self.datacenter);
        put("domain", &self.domain);
        put("dns.zone_dir", &self.zone_dir);
        put("http.tls_cert", &self.tls_cert);
        put("http.tls_key", &self.tls_key);
        put("log.format", &self.log_format);
        put("log.level", &self.log_level);
        if self.insecure_http {
            f.push(("http.insecure_http", "true".into()));
        }
        f
    }
}

#[derive(Args)]
struct ClientArgs {
    /// API base URL [env: MAXINE_API]
    #[arg(long, env = "MAXINE_API", default_value = "http://127.0.0.1:8080")]
    api: String,
    /// PEM CA certificate to trust for an HTTPS API [env: MAXINE_CA_CERT]
    #[arg(long, env = "MAXINE_CA_CERT")]
    ca_cert: Option<PathBuf>,
}

#[derive(Args)]
struct InstanceArgs {
    service: String,
    id: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct RegisterArgs {
    service: String,
    id: String,
    /// IP address of the instance
    #[arg(long)]
    address: String,
    #[arg(long)]
    port: u16,
    #[arg(long)]
    version: Option<String>,
    /// Repeatable
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// KEY=VALUE, repeatable
    #[arg(long = "meta")]
    metadata: Vec<String>,
    #[arg(long)]
    weight: Option<u16>,
    /// e.g. 30s
    #[arg(long)]
    ttl: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct LookupArgs {
    /// Name to resolve, e.g. payments.maxine or _payments._tcp.maxine
    name: String,
    /// Record type [default: A]
    #[arg(default_value = "A")]
    rtype: String,
    /// DNS server [env: MAXINE_DNS]
    #[arg(long, env = "MAXINE_DNS", default_value = "127.0.0.1:8600")]
    dns: SocketAddr,
    /// Use TCP instead of UDP
    #[arg(long)]
    tcp: bool,
}

fn main() -> anyhow::Result<()> {
    // No transparent huge pages for this process: a huge-page fault zeroes
    // 2 MiB inside whatever allocation first touches a fresh region, on the
    // request path, and set the p99 of registrations (ADR 0004).
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("maxine: cannot turn transparent huge pages off ({e}); going on with them");
    }
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve(args) => rt.block_on(serve(args)),
        Command::Register(args) => rt.block_on(register(args)),
        Command::Deregister(args) => rt.block_on(deregister(args)),
        Command::Services(args) => rt.block_on(services(args)),
        Command::Lookup(args) => rt.block_on(lookup(args)),
        Command::Snapshot(SnapshotCommand::Save(args)) => rt.block_on(snapshot_save(args)),
        Command::Snapshot(SnapshotCommand::Restore(args)) => snapshot_restore(args),
    }
}

/// The configuration from a file, the MAXINE_* environment and flags.
fn load_config(
    path: Option<&PathBuf>,
    flags: Vec<(&'static str, String)>,
) -> anyhow::Result<Config> {
    let file = match path {
        Some(p) => Some((
            p.clone(),
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config file {}", p.display()))?,
        )),
        None => None,
    };
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("MAXINE_") || k == "DATACENTER_ID")
        .collect();
    Ok(Config::load(Sources { file, env, flags })?)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(args.config.as_ref(), args.flags())?;
    init_logging(&config)?;
    let listeners = Listeners::bind(config.dns.addr, config.http.addr)?;
    let app = App::build(config, listeners)?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    // Installed here, before the server says it is serving: a SIGTERM sent
    // right after that line must drain, not kill with the default action.
    let mut term = unix_signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = unix_signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        signal.cancel();
    });
    app.run(shutdown).await
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .with_context(|| format!("invalid log level {:?}", config.log.level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

fn client(args: &ClientArgs) -> anyhow::Result<reqwest::Client> {
    client_with_timeout(args, std::time::Duration::from_secs(10))
}

fn client_with_timeout(
    args: &ClientArgs,
    timeout: std::time::Duration,
) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().timeout(timeout);
    if let Some(ca) = &args.ca_cert {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    Ok(b.build()?)
}

/// Prints the JSON body; fails with the server's message on an error status.
async fn print_response(resp: reqwest::Response) -> anyhow::Result<()> {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let msg = body
            .get("error")
            .or_else(|| body.get("message"))
            .and_then(|m| m.as_str())
            .unwrap_or("no message");
        bail!("{status}: {msg}");
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}

fn instance_url(api: &str, service: &str, id: &str) -> String {
    format!(
        "{}/v1/services/{service}/instances/{id}",
        api.trim_end_matches('/')
    )
}

async fn register(a: RegisterArgs) -> anyhow::Result<()> {
    let mut body = serde_json::json!({ "address": a.address, "port": a.port });
    if let Some(v) = a.version {
        body["version"] = v.into();
    }
    if !a.tags.is_empty() {
        body["tags"] = a.tags.into();
    }
    if !a.metadata.is_empty() {
        let mut m = serde_json::Map::new();
        for kv in a.metadata {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--meta {kv:?} is not KEY=VALUE"))?;
            m.insert(k.into(), v.into());
        }
        body["metadata"] = m.into();
    }
    if let Some(w) = a.weight {
        body["weight"] = w.into();
    }
    if let Some(t) = a.ttl {
        body["ttl"] = t.into();
    }
    let url = instance_url(&a.client.api, &a.service, &a.id);
    let resp = client(&a.client)?.put(url).json(&body).send().await?;
    print_response(resp).await
}

async fn deregister(a: InstanceArgs) -> anyhow::Result<()> {
    let url = instance_url(&a.client.api, &a.service, &a.id);
    let resp = client(&a.client)?.delete(url).send().await?;
    print_response(resp).await
}

async fn services(a: ClientArgs) -> anyhow::Result<()> {
    let url = format!("{}/v1/services", a.api.trim_end_matches('/'));
    let resp = client(&a)?.get(url).send().await?;
    print_response(resp).await
}

async fn lookup(a: LookupArgs) -> anyhow::Result<()> {
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use hickory_resolver::proto::rr::RecordType;

    let rtype: RecordType = a
        .rtype
        .to_ascii_uppercase()
        .parse()
        .with_context(|| format!("unknown record type {:?}", a.rtype))?;
    let mut conn = if a.tcp {
        ConnectionConfig::tcp()
    } else {
        ConnectionConfig::udp()
    };
    conn.port = a.dns.port();
    let mut ns = NameServerConfig::udp(a.dns.ip());
    ns.connections = vec![conn];
    let mut builder = hickory_resolver::Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    );
    builder.options_mut().cache_size = 0;
    let resolver = builder.build()?;
    let name = if a.name.ends_with('.') {
        a.name.clone()
    } else {
        format!("{}.", a.name)
    };
    match resolver.lookup(name.as_str(), rtype).await {
        Ok(lookup) => {
            for r in lookup.answers() {
                println!("{r}");
            }
            for r in lookup.additionals() {
                println!("{r} ; additional");
            }
            Ok(())
        }
        Err(e) => bail!("{name} {rtype}: {e}"),
    }
}

async fn snapshot_save(a: SnapshotSaveArgs) -> anyhow::Result<()> {
    let url = format!("{}/v1/snapshot", a.client.api.trim_end_matches('/'));
    // A million instances make a file of a few hundred MB.
    let http = client_with_timeout(&a.client, std::time::Duration::from_secs(600))?;
    let resp = http.get(url).send().await?;
    if !resp.status().is_success() {
        return print_response(resp).await;
    }
    let bytes = resp
        .bytes()
        .await
        .context("the snapshot download broke off")?;
    let snap = maxine::store::snapshot::decode(&bytes)?;
    // Write beside the target, fsync, rename over it, fsync the directory:
    // FILE is either the old file or the whole new one, even after a crash.
    let dir = match a.file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        a.file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("snapshot"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &a.file)?;
        std::fs::File::open(&dir)?.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        bail!("cannot write {}: {e}", a.file.display());
    }
    println!(
        "saved {} instances at index {} to {}",
        snap.records.len(),
        snap.last_index,
        a.file.display()
    );
    Ok(())
}

fn snapshot_restore(a: SnapshotRestoreArgs) -> anyhow::Result<()> {
    let mut flags = Vec::new();
    if let Some(d) = &a.data_dir {
        flags.push(("data_dir", d.clone()));
    }
    if let Some(s) = &a.store {
        flags.push(("store", s.clone()));
    }
    let config = load_config(a.config.as_ref(), flags)?;
    let bytes =
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    // Verify before opening the store, so a bad file touches nothing.
    maxine::store::snapshot::decode(&bytes)
        .with_context(|| format!("{} cannot be restored", a.file.display()))?;
    let Some(mut store) = maxine::app::open_store(&config)? else {
        bail!("the store is \"memory\": there is nothing to restore into");
    };
    let done = maxine::store::snapshot::restore_into(&mut *store, &bytes)?;
    println!(
        "restored {} instances into {}; the change index goes on from {}. Start `maxine serve` to serve them.",
        done.instances,
        store.describe(),
        done.last_index
    );
    Ok(())
}
