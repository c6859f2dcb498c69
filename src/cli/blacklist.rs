//! `blacklist list|add|remove`: services, instances and networks Maxine
//! refuses (docs/security.md, "Blacklists"), through the API.
//!
//! ```text
//!   maxine blacklist add service:payments --reason "being retired"
//!   maxine blacklist add instance:payments/i-1 --reason "compromised host" --ttl 1h
//!   maxine blacklist add cidr:10.9.0.0/16 --reason "scanner"
//!   maxine blacklist remove instance:payments/i-1
//! ```

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use super::api::{ClientArgs, client, print_response, send};

#[derive(Subcommand)]
pub enum BlacklistCommand {
    /// List the entries (services and instances of services you may read;
    /// networks with acl:read).
    List(ClientArgs),
    /// Refuse a target: its instances are deregistered, its registrations
    /// (or, for a network, its DNS queries) refused until the entry goes.
    Add(AddArgs),
    /// Remove an entry.
    Remove(TargetArgs),
}

#[derive(Args)]
pub struct TargetArgs {
    /// `service:NAME`, `instance:SERVICE/ID` or `cidr:NETWORK/BITS`
    target: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct AddArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Why (shown by list; required, at most 512 bytes)
    #[arg(long)]
    reason: String,
    /// How long the entry stands (`10m`, `1h 30m`; 1s to 366 days);
    /// without it, until removed
    #[arg(long)]
    ttl: Option<String>,
}

#[cfg(test)]
impl BlacklistCommand {
    /// The API flags of the subcommand.
    pub fn client(&self) -> &ClientArgs {
        match self {
            BlacklistCommand::List(c) => c,
            BlacklistCommand::Add(a) => &a.target.client,
            BlacklistCommand::Remove(a) => &a.client,
        }
    }
}

/// The path segments of a target under `/v1/blacklist`. Names are checked
/// by the server, which says what is wrong with them.
pub fn segments(target: &str) -> anyhow::Result<Vec<&str>> {
    let usage = || {
        anyhow!(
            "{target:?} is not a blacklist target: say service:NAME, instance:SERVICE/ID or cidr:NETWORK/BITS"
        )
    };
    let (kind, rest) = target.split_once(':').ok_or_else(usage)?;
    if rest.is_empty() {
        return Err(usage());
    }
    Ok(match kind {
        "service" => vec!["services", rest],
        "instance" => {
            let (service, id) = rest.split_once('/').ok_or_else(usage)?;
            if service.is_empty() || id.is_empty() {
                bail!("{target:?}: an instance is instance:SERVICE/ID");
            }
            vec!["instances", service, id]
        }
        // The network travels as one segment (its `/` encoded).
        "cidr" => vec!["cidrs", rest],
        _ => return Err(usage()),
    })
}

fn target_url(a: &TargetArgs) -> anyhow::Result<reqwest::Url> {
    let mut path = vec!["v1", "blacklist"];
    path.extend(segments(&a.target)?);
    a.client.url(&path)
}

pub async fn run(cmd: BlacklistCommand) -> anyhow::Result<()> {
    let (c, req) = match &cmd {
        BlacklistCommand::List(c) => (c, client(c)?.get(c.url(&["v1", "blacklist"])?)),
        BlacklistCommand::Remove(a) => (&a.client, client(&a.client)?.delete(target_url(a)?)),
        BlacklistCommand::Add(a) => {
            let mut body = json!({ "reason": a.reason });
            if let Some(ttl) = &a.ttl {
                body["ttl"] = json!(ttl);
            }
            let c = &a.target.client;
            (c, client(c)?.put(target_url(&a.target)?).json(&body))
        }
    };
    print_response(send(c, req).await?).await
}
