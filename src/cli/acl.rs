//! `acl`: the ACL endpoints of the API (bootstrap, policies, tokens, DNS
//! client networks, TSIG keys), as small calls whose JSON answer is
//! printed as it came.

use anyhow::Context;
use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::api::{ClientArgs, answer, client, print_response, send};

#[derive(Subcommand)]
pub enum AclCommand {
    /// Create the first management token (POST /v1/acl/bootstrap). The
    /// answer holds its secret, shown this once: keep it.
    Bootstrap(ClientArgs),
    /// Policies: named sets of rules that tokens refer to.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Tokens: secrets that carry policies.
    #[command(subcommand)]
    Token(TokenCommand),
    /// DNS client networks: the policies of DNS askers from a network.
    #[command(subcommand, name = "dns-client")]
    DnsClient(DnsClientCommand),
    /// TSIG keys: shared secrets that DNS clients sign queries with, each
    /// standing for a token.
    #[command(subcommand, name = "tsig-key")]
    TsigKey(TsigKeyCommand),
    /// Print the argon2 hash of a password read from standard input, for a
    /// line `name role hash` of acl.users_file. Runs offline.
    HashPassword,
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Create or replace a policy (PUT /v1/acl/policies/NAME).
    Put(PolicyPutArgs),
    /// List the policies (GET /v1/acl/policies).
    List(ClientArgs),
    /// Show one policy (GET /v1/acl/policies/NAME).
    Get(PolicyNameArgs),
    /// Delete a policy (DELETE /v1/acl/policies/NAME).
    Delete(PolicyNameArgs),
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token (POST /v1/acl/tokens). The answer holds its secret,
    /// shown this once: keep it.
    Create(TokenCreateArgs),
    /// List the tokens, without their secrets (GET /v1/acl/tokens).
    List(ClientArgs),
    /// Show one token (GET /v1/acl/tokens/ACCESSOR).
    Get(AccessorArgs),
    /// Replace a token's description, policies, service, expiry and quota,
    /// keeping its secret (PUT /v1/acl/tokens/ACCESSOR); `anonymous` is the
    /// token of requests without a credential.
    Update(TokenUpdateArgs),
    /// Delete a token: its secret stops working (DELETE /v1/acl/tokens/ACCESSOR).
    Delete(AccessorArgs),
    /// Show the token this command sends (GET /v1/acl/token/self).
    #[command(name = "self")]
    Current(ClientArgs),
}

#[derive(Subcommand)]
pub enum DnsClientCommand {
    /// Create or replace a network (PUT /v1/acl/dns-clients/NAME).
    Put(DnsClientPutArgs),
    /// List the networks (GET /v1/acl/dns-clients).
    List(ClientArgs),
    /// Show one network (GET /v1/acl/dns-clients/NAME).
    Get(DnsClientNameArgs),
    /// Delete a network: its askers are anonymous again (DELETE /v1/acl/dns-clients/NAME).
    Delete(DnsClientNameArgs),
}

#[derive(Args)]
pub struct DnsClientNameArgs {
    /// The network's name, e.g. office
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct DnsClientPutArgs {
    #[command(flatten)]
    pub network: DnsClientNameArgs,
    /// A network in it, e.g. 10.0.0.0/8 or fd00::/8; repeatable
    #[arg(long = "cidr", value_name = "CIDR", required = true)]
    pub cidrs: Vec<String>,
    /// A policy its askers get; repeatable
    #[arg(long = "policy", value_name = "POLICY")]
    pub policies: Vec<String>,
}

#[derive(Subcommand)]
pub enum TsigKeyCommand {
    /// Create or replace a key (PUT /v1/acl/tsig-keys/NAME). Without
    /// --secret-file a new 256-bit secret is made and shown this once.
    Put(TsigKeyPutArgs),
    /// List the keys, without their secrets (GET /v1/acl/tsig-keys).
    List(ClientArgs),
    /// Show one key, without its secret (GET /v1/acl/tsig-keys/NAME).
    Get(TsigKeyNameArgs),
    /// Delete a key: queries signed with it are refused (DELETE /v1/acl/tsig-keys/NAME).
    Delete(TsigKeyNameArgs),
}

#[derive(Args)]
pub struct TsigKeyNameArgs {
    /// The key's name, a DNS name as clients send it (e.g. ops.key)
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct TsigKeyPutArgs {
    #[command(flatten)]
    pub key: TsigKeyNameArgs,
    /// The accessor of the token whose policies a signed query gets
    /// (`anonymous` for the anonymous token's)
    #[arg(long, value_parser = NonEmptyStringValueParser::new())]
    pub accessor: String,
    /// hmac-sha256 (the default), hmac-sha384 or hmac-sha512
    #[arg(long, default_value = "hmac-sha256")]
    pub algorithm: String,
    /// A file holding the secret in base64, as tsig-keygen writes it ("-"
    /// for standard input); never on the command line, where other users
    /// of the machine could read it
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<std::path::PathBuf>,
}

#[derive(Args)]
pub struct PolicyPutArgs {
    /// The policy's name, e.g. operator
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub name: String,
    /// The rules: JSON, or a file holding it ("-" for standard input)
    #[arg(long, value_name = "FILE_OR_JSON")]
    pub rules: String,
    /// What the policy is for, shown when policies are listed
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct PolicyNameArgs {
    /// The policy's name
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct AccessorArgs {
    /// The token's public id (not its secret)
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub accessor: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct TokenCreateArgs {
    /// What the token is for, e.g. the workload that holds it
    #[arg(long)]
    pub description: Option<String>,
    /// A policy the token carries; repeatable
    #[arg(long = "policy", value_name = "POLICY")]
    pub policies: Vec<String>,
    /// Make it a token of this one service (it may register only that service)
    #[arg(long)]
    pub service: Option<String>,
    /// Lifetime, e.g. 24h or 30m; without it the token does not expire
    #[arg(long, value_parser = duration_text)]
    pub expires_in: Option<String>,
    /// Most instances registered with this token at once
    #[arg(long)]
    pub max_instances: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct TokenUpdateArgs {
    /// The token's accessor id, or `anonymous`
    pub accessor: String,
    #[command(flatten)]
    pub token: TokenCreateArgs,
}

/// A duration as written (`24h`), checked here so that a typo fails before
/// anything is sent.
fn duration_text(text: &str) -> Result<String, String> {
    humantime::parse_duration(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("{e} (write it like 24h, 30m or 1h30m)"))
}

/// The body of `policy put`: `{"description": D, "rules": R}`, without
/// `description` when none is given.
pub fn policy_body(a: &PolicyPutArgs) -> anyhow::Result<Value> {
    let mut body = json!({ "rules": rules(&a.rules)? });
    if let Some(d) = &a.description {
        body["description"] = d.as_str().into();
    }
    Ok(body)
}

/// `--rules`: inline JSON if it looks like JSON, else a file ("-": stdin).
fn rules(arg: &str) -> anyhow::Result<Value> {
    let inline = arg.trim_start();
    let (text, from) = if inline.starts_with('{') || inline.starts_with('[') {
        (arg.to_owned(), "--rules".to_owned())
    } else if arg == "-" {
        let text = std::io::read_to_string(std::io::stdin())
            .context("cannot read the rules from standard input")?;
        (text, "standard input".to_owned())
    } else {
        let text = std::fs::read_to_string(arg)
            .with_context(|| format!("--rules {arg:?} is neither JSON nor a readable file"))?;
        (text, arg.to_owned())
    };
    serde_json::from_str(&text).with_context(|| format!("the rules in {from} are not JSON"))
}

/// The body of `token create`, with only the fields given.
pub fn token_body(a: &TokenCreateArgs) -> Value {
    let mut body = serde_json::Map::new();
    if let Some(d) = &a.description {
        body.insert("description".into(), d.as_str().into());
    }
    if !a.policies.is_empty() {
        body.insert("policies".into(), a.policies.clone().into());
    }
    if let Some(s) = &a.service {
        body.insert("service".into(), s.as_str().into());
    }
    if let Some(e) = &a.expires_in {
        body.insert("expires_in".into(), e.as_str().into());
    }
    if let Some(n) = a.max_instances {
        body.insert("max_instances".into(), n.into());
    }
    body.into()
}

async fn call(
    c: &ClientArgs,
    method: Method,
    path: &[&str],
    body: Option<Value>,
) -> anyhow::Result<()> {
    let mut req = client(c)?.request(method, c.url(path)?);
    if let Some(body) = body {
        req = req.json(&body);
    }
    print_response(send(c, req).await?).await
}

/// The secret of `tsig-key put`: read from its file, or made (then `true`).
fn tsig_secret(a: &TsigKeyPutArgs) -> anyhow::Result<(String, bool)> {
    use base64::Engine;
    let Some(path) = &a.secret_file else {
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| anyhow::anyhow!("the system gave no random bytes for a secret"))?;
        return Ok((
            base64::engine::general_purpose::STANDARD.encode(bytes),
            true,
        ));
    };
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .context("cannot read the secret from standard input")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the secret from {}", path.display()))?
    };
    let secret = text.trim();
    if secret.is_empty() {
        anyhow::bail!("{} holds no secret", path.display());
    }
    Ok((secret.to_owned(), false))
}

fn secret_shown_once() {
    eprintln!("The secret above is not shown again: keep it now.");
}

pub async fn run(cmd: AclCommand) -> anyhow::Result<()> {
    match cmd {
        AclCommand::HashPassword => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                anyhow::bail!("no password on standard input");
            }
            println!("{}", maxine::auth::hash_password(password)?);
            Ok(())
        }
        AclCommand::Bootstrap(c) => {
            call(&c, Method::POST, &["v1", "acl", "bootstrap"], None).await?;
            secret_shown_once();
            Ok(())
        }
        AclCommand::Policy(PolicyCommand::Put(a)) => {
            let body = policy_body(&a)?;
            let path = ["v1", "acl", "policies", &a.name];
            call(&a.client, Method::PUT, &path, Some(body)).await
        }
        AclCommand::Policy(PolicyCommand::List(c)) => {
            call(&c, Method::GET, &["v1", "acl", "policies"], None).await
        }
        AclCommand::Policy(PolicyCommand::Get(a)) => {
            let path = ["v1", "acl", "policies", &a.name];
            call(&a.client, Method::GET, &path, None).await
        }
        AclCommand::Policy(PolicyCommand::Delete(a)) => {
            let path = ["v1", "acl", "policies", &a.name];
            call(&a.client, Method::DELETE, &path, None).await
        }
        AclCommand::Token(TokenCommand::Update(a)) => {
            let body = token_body(&a.token);
            let path = ["v1", "acl", "tokens", &a.accessor];
            call(&a.token.client, Method::PUT, &path, Some(body)).await
        }
        AclCommand::Token(TokenCommand::Create(a)) => {
            let body = token_body(&a);
            call(
                &a.client,
                Method::POST,
                &["v1", "acl", "tokens"],
                Some(body),
            )
            .await?;
            secret_shown_once();
            Ok(())
        }
        AclCommand::Token(TokenCommand::List(c)) => {
            call(&c, Method::GET, &["v1", "acl", "tokens"], None).await
        }
        AclCommand::Token(TokenCommand::Get(a)) => {
            let path = ["v1", "acl", "tokens", &a.accessor];
            call(&a.client, Method::GET, &path, None).await
        }
        AclCommand::Token(TokenCommand::Delete(a)) => {
            let path = ["v1", "acl", "tokens", &a.accessor];
            call(&a.client, Method::DELETE, &path, None).await
        }
        AclCommand::TsigKey(TsigKeyCommand::Put(a)) => {
            let (secret, made) = tsig_secret(&a)?;
            let body = json!({ "algorithm": a.algorithm, "secret": secret, "token": a.accessor });
            let c = &a.key.client;
            let req = client(c)?
                .put(c.url(&["v1", "acl", "tsig-keys", &a.key.name])?)
                .json(&body);
            let mut key = answer(send(c, req).await?).await?;
            if made {
                key["secret"] = secret.into();
            }
            println!("{}", serde_json::to_string_pretty(&key)?);
            if made {
                secret_shown_once();
            }
            Ok(())
        }
        AclCommand::DnsClient(DnsClientCommand::Put(a)) => {
            let body = json!({ "cidrs": a.cidrs, "policies": a.policies });
            let path = ["v1", "acl", "dns-clients", &a.network.name];
            call(&a.network.client, Method::PUT, &path, Some(body)).await
        }
        AclCommand::DnsClient(DnsClientCommand::List(c)) => {
            call(&c, Method::GET, &["v1", "acl", "dns-clients"], None).await
        }
        AclCommand::DnsClient(DnsClientCommand::Get(a)) => {
            let path = ["v1", "acl", "dns-clients", &a.name];
            call(&a.client, Method::GET, &path, None).await
        }
        AclCommand::DnsClient(DnsClientCommand::Delete(a)) => {
            let path = ["v1", "acl", "dns-clients", &a.name];
            call(&a.client, Method::DELETE, &path, None).await
        }
        AclCommand::TsigKey(TsigKeyCommand::List(c)) => {
            call(&c, Method::GET, &["v1", "acl", "tsig-keys"], None).await
        }
        AclCommand::TsigKey(TsigKeyCommand::Get(a)) => {
            let path = ["v1", "acl", "tsig-keys", &a.name];
            call(&a.client, Method::GET, &path, None).await
        }
        AclCommand::TsigKey(TsigKeyCommand::Delete(a)) => {
            let path = ["v1", "acl", "tsig-keys", &a.name];
            call(&a.client, Method::DELETE, &path, None).await
        }
        AclCommand::Token(TokenCommand::Current(c)) => {
            call(&c, Method::GET, &["v1", "acl", "token", "self"], None).await
        }
    }
}
