//! `intention list|get|allow|deny|delete`: who may find whom
//! (docs/security.md, "Who may find whom"), through the API.

use clap::{Args, Subcommand};
use serde_json::json;

use super::api::{ClientArgs, client, print_response, send};

#[derive(Subcommand)]
pub enum IntentionCommand {
    /// List the intentions (those whose destination you may read).
    List(ClientArgs),
    /// Print one intention.
    Get(PairArgs),
    /// Let SOURCE find DESTINATION (creates or replaces the intention).
    Allow(WriteArgs),
    /// Keep SOURCE from finding DESTINATION, on DNS and the discovery routes.
    Deny(WriteArgs),
    /// Remove an intention (the next less specific one, or the default, decides).
    Delete(PairArgs),
}

#[derive(Args)]
pub struct PairArgs {
    /// The asking service, or `*` for every service
    source: String,
    /// The service asked about, or `*` for every service
    destination: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct WriteArgs {
    #[command(flatten)]
    pair: PairArgs,
    /// Why (shown by list and get; at most 512 bytes)
    #[arg(long, default_value = "")]
    description: String,
}

#[cfg(test)]
impl IntentionCommand {
    /// The API flags of the subcommand.
    pub fn client(&self) -> &ClientArgs {
        match self {
            IntentionCommand::List(c) => c,
            IntentionCommand::Get(a) | IntentionCommand::Delete(a) => &a.client,
            IntentionCommand::Allow(a) | IntentionCommand::Deny(a) => &a.pair.client,
        }
    }
}

fn pair_url(a: &PairArgs) -> anyhow::Result<reqwest::Url> {
    a.client
        .url(&["v1", "intentions", &a.source, &a.destination])
}

pub async fn run(cmd: IntentionCommand) -> anyhow::Result<()> {
    let (c, req) = match &cmd {
        IntentionCommand::List(c) => (c, client(c)?.get(c.url(&["v1", "intentions"])?)),
        IntentionCommand::Get(a) => (&a.client, client(&a.client)?.get(pair_url(a)?)),
        IntentionCommand::Delete(a) => (&a.client, client(&a.client)?.delete(pair_url(a)?)),
        IntentionCommand::Allow(w) | IntentionCommand::Deny(w) => {
            let action = match cmd {
                IntentionCommand::Allow(_) => "allow",
                _ => "deny",
            };
            let body = json!({ "action": action, "description": w.description });
            let c = &w.pair.client;
            (c, client(c)?.put(pair_url(&w.pair)?).json(&body))
        }
    };
    print_response(send(c, req).await?).await
}
