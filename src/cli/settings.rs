//! The flags of `maxine serve` (and the store flags of `snapshot restore`),
//! and the loading of the configuration from the file, the process
//! environment and those flags.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use maxine::config::{Config, Sources};

/// Settings for `serve`. Each flag overrides its MAXINE_* environment
/// variable, which overrides the config file, which overrides the default.
#[derive(Args, Default)]
pub struct ServeArgs {
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

    /// The configuration from the `--config` file, the process environment
    /// and these flags.
    pub fn load(&self) -> anyhow::Result<Config> {
        load_config(self.config.as_ref(), self.flags())
    }
}

/// The store settings of `snapshot restore`.
#[derive(Args)]
pub struct StoreArgs {
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

impl StoreArgs {
    /// The configuration, as `serve` would load it with these flags.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut flags = Vec::new();
        if let Some(d) = &self.data_dir {
            flags.push(("data_dir", d.clone()));
        }
        if let Some(s) = &self.store {
            flags.push(("store", s.clone()));
        }
        load_config(self.config.as_ref(), flags)
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
