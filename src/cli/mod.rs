//! The command line of the `maxine` program: its clap types, the setting
//! flags of `serve` (built from the settings table), and the client
//! subcommands, which are small clients of a running server, for people.
//! `main.rs` parses, dispatches and runs `serve`; everything else is here.
//!
//! Part of the binary, not of the library: it reaches the server only
//! through its API, its DNS and (for `snapshot restore`) its store; `audit
//! verify` reads an audit directory with the library's `audit` module.

pub mod acl;
pub mod api;
pub mod audit;
pub mod blacklist;
pub mod intention;
pub mod kv;
pub mod lookup;
mod progress;
pub mod settings;
pub mod snapshot;
pub mod tls;

use clap::{Parser, Subcommand};

pub use settings::ServeArgs;

#[derive(Parser)]
#[command(name = "maxine", version, about = "DNS-first service discovery")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server (DNS and HTTP API).
    Serve(ServeArgs),
    /// Register (or replace) an instance through the API.
    Register(api::RegisterArgs),
    /// Remove an instance through the API.
    Deregister(api::InstanceArgs),
    /// List services through the API.
    Services(api::ClientArgs),
    /// Ask Maxine's DNS one question, as dig would: the answer as zone-file
    /// lines, or NXDOMAIN / NODATA in words.
    Lookup(lookup::LookupArgs),
    /// Back up and restore the registry with snapshot files (checksummed).
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Manage ACL policies and tokens through the API.
    #[command(subcommand)]
    Acl(acl::AclCommand),
    /// Manage intentions (which service may find which) through the API.
    #[command(subcommand)]
    Intention(intention::IntentionCommand),
    /// Manage the blacklist (services, instances and networks Maxine
    /// refuses) through the API.
    #[command(subcommand)]
    Blacklist(blacklist::BlacklistCommand),
    /// Read and write the key/value store through the API.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Print registry changes as they happen (the event stream), one line
    /// each: INDEX EVENT DATA.
    Watch(kv::WatchArgs),
    /// Check an audit log (offline).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Make certificates for serving the API over HTTPS (offline).
    #[command(subcommand)]
    Tls(tls::TlsCommand),
}

/// Whether log lines get colour codes: only on a terminal (stderr and
/// stdout both, whichever the logs go to), and never when `NO_COLOR` is set
/// to anything but the empty string.
pub fn log_colours(no_color: Option<&std::ffi::OsStr>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests;
