//! `register`, `deregister` and `services`: calls of the HTTP API whose
//! JSON answer is printed as it came; and [`ClientArgs`], the flags every
//! client subcommand shares (where the API is, what to trust, which token).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;

#[derive(Args)]
pub struct ClientArgs {
    /// The Maxine API's base URL (https:// when it serves TLS)
    #[arg(long, env = "MAXINE_API", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// PEM CA certificate to trust for an HTTPS API (e.g. the ca.crt of
    /// `maxine tls self-signed`)
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
    /// The service's name, e.g. payments
    service: String,
    /// The instance's id within the service, e.g. web-1
    id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct RegisterArgs {
    /// The service's name (a DNS label), e.g. payments
    service: String,
    /// The instance's id within the service (a DNS label), e.g. web-1
    id: String,
    /// IP address of the instance
    #[arg(long)]
    address: String,
    /// Port the instance serves on (in SRV answers)
    #[arg(long)]
    port: u16,
    /// Version, e.g. 2.1.0 (reachable as v2.<service>, v2-1.<service>, ...)
    #[arg(long)]
    version: Option<String>,
    /// A tag; repeatable
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Metadata as KEY=VALUE; repeatable
    #[arg(long = "meta")]
    metadata: Vec<String>,
    /// SRV weight (server default 1)
    #[arg(long)]
    weight: Option<u16>,
    /// Time without a heartbeat before the instance leaves DNS, e.g. 30s
    /// (server default 30s)
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

/// Sends `req` to the API of `args`. An error says which address was tried,
/// what went wrong in words, and how to point the command elsewhere.
pub async fn send(
    args: &ClientArgs,
    req: reqwest::RequestBuilder,
) -> anyhow::Result<reqwest::Response> {
    req.send().await.map_err(|e| explain(&args.api, &e))
}

/// A failed request in words, from the error and its causes.
pub fn explain(api: &str, e: &reqwest::Error) -> anyhow::Error {
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    let mut refused = false;
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = s.source();
    }
    let elsewhere = "Point this command at another server with --api URL or MAXINE_API";
    let what = if refused {
        "connection refused: nothing listens there. Is `maxine serve` running (its --http-addr)?"
            .to_string()
    } else if chain.contains("CaUsedAsEndEntity") {
        "the server presents a CA certificate as its own, which TLS clients refuse. Serve a          certificate signed by that CA instead (`maxine tls self-signed DIR` writes a CA and          one), and pass the CA here with --ca-cert"
            .to_string()
    } else if chain.contains("UnknownIssuer") || chain.contains("unknown issuer") {
        "the server's certificate is not signed by a CA this command trusts: pass the CA          certificate with --ca-cert FILE or MAXINE_CA_CERT"
            .to_string()
    } else if chain.contains("NotValidForName") {
        "the server's certificate is not issued for the host name in --api: use a name it          was issued for (`maxine tls self-signed --name`)"
            .to_string()
    } else if chain.contains("InvalidContentType") || chain.contains("corrupt message") {
        "the server does not speak TLS there: use an http:// URL".to_string()
    } else if api.starts_with("http://")
        && (chain.contains("connection closed before message completed")
            || chain.contains("connection reset"))
    {
        format!(
            "the server closed the connection ({chain}); if it serves HTTPS, use an https:// URL"
        )
    } else if e.is_timeout() {
        format!("no answer in time ({chain})")
    } else {
        chain
    };
    anyhow!("cannot reach the Maxine API at {api}: {what}. {elsewhere}")
}

/// Prints the JSON body; fails with the server's message on an error status.
pub async fn print_response(resp: reqwest::Response) -> anyhow::Result<()> {
    let body = answer(resp).await?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}

/// The JSON body; fails with the server's message on an error status.
pub async fn answer(resp: reqwest::Response) -> anyhow::Result<serde_json::Value> {
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
    Ok(body)
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
    let req = client(&a.client)?.put(url).json(&body);
    print_response(send(&a.client, req).await?).await
}

pub async fn deregister(a: InstanceArgs) -> anyhow::Result<()> {
    let url = instance_url(&a.client.api, &a.service, &a.id);
    let req = client(&a.client)?.delete(url);
    print_response(send(&a.client, req).await?).await
}

pub async fn services(a: ClientArgs) -> anyhow::Result<()> {
    let url = format!("{}/v1/services", a.api.trim_end_matches('/'));
    let req = client(&a)?.get(url);
    print_response(send(&a, req).await?).await
}
