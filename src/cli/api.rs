//! `register`, `deregister` and `services`: calls of the HTTP API whose
//! JSON answer is printed as it came; and [`ClientArgs`], the flags every
//! client subcommand shares (where the API is, what to trust, which token).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;

#[derive(Args)]
pub struct ClientArgs {
    /// API base URL [env: MAXINE_API]
    #[arg(long, env = "MAXINE_API", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// PEM CA certificate to trust for an HTTPS API [env: MAXINE_CA_CERT]
    #[arg(long, env = "MAXINE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// ACL token secret, sent as `Authorization: Bearer`. Visible to other
    /// users in the process list: prefer --token-file or the variable
    #[arg(long, env = "MAXINE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the ACL token secret (surrounding whitespace ignored)
    #[arg(long, env = "MAXINE_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
}

impl ClientArgs {
    /// The token secret to send, if any: from --token, or read from
    /// --token-file. Errors name the file, never the secret.
    pub fn secret(&self) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?;
            let secret = text.trim();
            if secret.is_empty() {
                bail!("the token file {} is empty", path.display());
            }
            return Ok(Some(secret.to_owned()));
        }
        // An empty MAXINE_TOKEN is the same as none.
        Ok(self.token.clone().filter(|t| !t.is_empty()))
    }

    /// The API URL of `segments` (each percent-encoded as needed) under
    /// --api, which may itself have a path.
    pub fn url(&self, segments: &[&str]) -> anyhow::Result<reqwest::Url> {
        let mut url = reqwest::Url::parse(&self.api)
            .with_context(|| format!("--api {:?} is not a URL", self.api))?;
        url.path_segments_mut()
            .map_err(|()| anyhow!("--api {:?} cannot have a path", self.api))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }
}

#[derive(Args)]
pub struct InstanceArgs {
    service: String,
    id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct RegisterArgs {
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
    pub client: ClientArgs,
}

/// An HTTP client for short API calls.
pub fn client(args: &ClientArgs) -> anyhow::Result<reqwest::Client> {
    client_with_timeout(args, Duration::from_secs(10))
}

pub fn client_with_timeout(
    args: &ClientArgs,
    timeout: Duration,
) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().timeout(timeout);
    if let Some(secret) = args.secret()? {
        use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
        let mut value = HeaderValue::from_str(&format!("Bearer {secret}"))
            .map_err(|_| anyhow!("the token holds characters an HTTP header cannot carry"))?;
        // Kept out of debug output; reqwest also drops it on a redirect
        // to another host.
        value.set_sensitive(true);
        b = b.default_headers(HeaderMap::from_iter([(AUTHORIZATION, value)]));
    }
    if let Some(ca) = &args.ca_cert {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    Ok(b.build()?)
}

/// Prints the JSON body; fails with the server's message on an error status.
pub async fn print_response(resp: reqwest::Response) -> anyhow::Result<()> {
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

pub async fn register(a: RegisterArgs) -> anyhow::Result<()> {
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

pub async fn deregister(a: InstanceArgs) -> anyhow::Result<()> {
    let url = instance_url(&a.client.api, &a.service, &a.id);
    let resp = client(&a.client)?.delete(url).send().await?;
    print_response(resp).await
}

pub async fn services(a: ClientArgs) -> anyhow::Result<()> {
    let url = format!("{}/v1/services", a.api.trim_end_matches('/'));
    let resp = client(&a)?.get(url).send().await?;
    print_response(resp).await
}
