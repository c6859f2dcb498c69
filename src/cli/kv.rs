//! `kv get|put|delete|list`: the key/value store through the API, and
//! `watch [SERVICE]`: the event stream, one line per change.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::api::{ClientArgs, client, client_with_timeout, print_response, send};

#[derive(Subcommand)]
pub enum KvCommand {
    /// Print a key's value (raw, as stored).
    Get(KeyArgs),
    /// Write a key's value: VALUE, or standard input when it is left out.
    Put(PutArgs),
    /// Remove a key.
    Delete(KeyArgs),
    /// List the keys under a prefix, with their values (base64) and indexes.
    List(ListArgs),
}

#[derive(Args)]
pub struct KeyArgs {
    /// The key, a path such as app/payments/timeout
    key: String,
    /// Only if the key is at this index (0: only if it does not exist)
    #[arg(long)]
    cas: Option<u64>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct PutArgs {
    /// The key, a path such as app/payments/timeout
    key: String,
    /// The value; read from standard input when left out
    value: Option<String>,
    /// Only if the key is at this index (0: only if it does not exist)
    #[arg(long)]
    cas: Option<u64>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct ListArgs {
    /// The prefix (empty: every key)
    #[arg(default_value = "")]
    prefix: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[cfg(test)]
impl KvCommand {
    /// The API flags of the subcommand.
    pub fn client(&self) -> &ClientArgs {
        match self {
            KvCommand::Get(a) | KvCommand::Delete(a) => &a.client,
            KvCommand::Put(a) => &a.client,
            KvCommand::List(a) => &a.client,
        }
    }
}

#[cfg(test)]
impl WatchArgs {
    pub fn client(&self) -> &ClientArgs {
        &self.client
    }
}

fn key_url(c: &ClientArgs, key: &str, cas: Option<u64>) -> anyhow::Result<reqwest::Url> {
    let mut segments = vec!["v1", "kv"];
    segments.extend(key.split('/'));
    let mut url = c.url(&segments)?;
    if let Some(cas) = cas {
        url.query_pairs_mut().append_pair("cas", &cas.to_string());
    }
    Ok(url)
}

pub async fn run(cmd: KvCommand) -> anyhow::Result<()> {
    match cmd {
        KvCommand::Get(a) => {
            let url = key_url(&a.client, &a.key, None)?;
            let resp = send(&a.client, client(&a.client)?.get(url)).await?;
            if !resp.status().is_success() {
                return print_response(resp).await;
            }
            let bytes = resp.bytes().await?;
            std::io::stdout().write_all(&bytes)?;
            Ok(())
        }
        KvCommand::Put(a) => {
            let value = match a.value {
                Some(v) => v.into_bytes(),
                None => {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .context("cannot read the value from standard input")?;
                    buf
                }
            };
            let url = key_url(&a.client, &a.key, a.cas)?;
            let req = client(&a.client)?.put(url).body(value);
            print_response(send(&a.client, req).await?).await
        }
        KvCommand::Delete(a) => {
            let url = key_url(&a.client, &a.key, a.cas)?;
            let req = client(&a.client)?.delete(url);
            print_response(send(&a.client, req).await?).await
        }
        KvCommand::List(a) => {
            // The prefix as given (it may end with '/'), then ?recurse.
            let mut url = a.client.url(&["v1", "kv"])?;
            let path = format!("{}/{}", url.path(), a.prefix);
            url.set_path(&path);
            url.set_query(Some("recurse"));
            let req = client(&a.client)?.get(url);
            print_response(send(&a.client, req).await?).await
        }
    }
}

#[derive(Args)]
pub struct WatchArgs {
    /// Only this service's changes (default: every service, and the
    /// key/value store)
    service: Option<String>,
    /// Start after this index (0: print the current state first)
    #[arg(long, default_value_t = 0)]
    since: u64,
    #[command(flatten)]
    client: ClientArgs,
}

/// `watch`: follows `GET /v1/events`, printing each event as one line
/// (`INDEX EVENT DATA`) until interrupted; reconnects from the last index
/// seen when the connection drops.
pub async fn watch(a: WatchArgs) -> anyhow::Result<()> {
    // No overall timeout: the stream is endless.
    let http = client_with_timeout(&a.client, Duration::from_secs(60 * 60 * 24 * 365))?;
    let mut last = a.since;
    loop {
        let mut url = a.client.url(&["v1", "events"])?;
        url.query_pairs_mut()
            .append_pair("since", &last.to_string());
        if let Some(s) = &a.service {
            url.query_pairs_mut().append_pair("service", s);
        }
        let mut resp = send(&a.client, http.get(url)).await?;
        if !resp.status().is_success() {
            return print_response(resp).await;
        }
        let mut buf = String::new();
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) | Err(_) => break,
            };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, "", "");
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse::<u64>().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v;
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = v;
                    }
                }
                let Some(id) = id else { continue };
                println!("{id} {event} {data}");
                if event == "resync" {
                    last = 0;
                } else {
                    last = id;
                }
            }
        }
        eprintln!("maxine watch: the stream ended; reconnecting from index {last}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
