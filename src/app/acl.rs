//! Access control, wired from the configuration: the default policy, the
//! API's allowed hosts, the identity provider's JWT keys, the sign-in users
//! and key, the audit log, and a management token given at start-up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{
    Binding, BindingKind, JwtSettings, JwtVerifier, Role, SigningKey, hash_password,
};
use crate::config::Config;
use crate::core::acl::GLOBAL_MANAGEMENT;
use crate::core::{AclChange, AclObject, Change, Context as ChangeContext, Registry, Token};
use crate::http::auth::{
    AllowedHosts, Auth, SignIn, new_secret_and_accessor, secret_hash, unix_ms,
};
use crate::policy::DefaultPolicy;
use crate::store::Log;

/// The API's access control, from `config`, without its audit log (which
/// `App::build` opens once these files have been read).
pub fn build(config: &Config) -> anyhow::Result<Auth> {
    let acl = &config.acl;
    let default = if acl.default_deny {
        DefaultPolicy::Deny
    } else {
        DefaultPolicy::Allow
    };
    let loopback = config.http.addr.ip().is_loopback();
    match (default, acl.default_explicit, loopback) {
        (DefaultPolicy::Allow, true, false) => tracing::warn!(
            http = %config.http.addr,
            "ACL default policy is allow on a non-loopback address: every client that reaches \
             the API may change the registry; see docs/security.md"
        ),
        (d, explicit, _) => tracing::info!(
            default_policy = d.as_str(),
            chosen = explicit,
            "ACL default policy{}",
            if explicit {
                ""
            } else if loopback {
                " (allow: the API listens on loopback only)"
            } else {
                " (deny: the API listens beyond loopback)"
            }
        ),
    }
    let jwt = match &acl.jwt {
        None => None,
        Some(j) => {
            let mut bindings = Vec::new();
            if let Some(claim) = &j.service_claim {
                bindings.push(Binding {
                    claim: claim.clone(),
                    kind: BindingKind::ServiceIdentity,
                });
            }
            for (claim, value, policies) in &j.policy_bindings {
                bindings.push(Binding {
                    claim: claim.clone(),
                    kind: BindingKind::Policies {
                        value: value.clone(),
                        policies: policies.clone(),
                    },
                });
            }
            let v = JwtVerifier::new(JwtSettings {
                issuer: j.issuer.clone(),
                audiences: j.audiences.clone(),
                algorithms: j.algorithms.clone(),
                public_key_files: j.public_key_files.clone(),
                jwks_file: j.jwks_file.clone(),
                hs256_secret_file: j.hs256_secret_file.clone(),
                leeway: j.leeway,
                bindings,
            })
            .context("acl.jwt")?;
            Some(Arc::new(v))
        }
    };
    let mut users = match &acl.users_file {
        Some(path) => read_users(path)?,
        None => HashMap::new(),
    };
    let mut env_managed = None;
    if let Some((name, password)) = &acl.admin {
        let hash = hash_password(password).context("cannot hash MAXINE_ADMIN_PASSWORD")?;
        users.insert(name.clone(), (hash, Role::Admin));
        env_managed = Some(name.clone());
    }
    let signin = if users.is_empty() {
        None
    } else {
        let key = SigningKey::load_or_create(&config.data_dir).context("the sign-in key")?;
        Some(Arc::new(SignIn {
            key,
            users,
            env_managed,
        }))
    };
    Ok(Auth {
        default,
        hosts: AllowedHosts::new(&config.http.allowed_hosts, config.http.addr),
        jwt,
        signin,
        audit: None,
    })
}

/// `name role argon2-hash` per line; `#` starts a comment.
fn read_users(path: &std::path::Path) -> anyhow::Result<HashMap<String, (String, Role)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read acl.users_file {}", path.display()))?;
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, role, hash] = fields[..] else {
            bail!(
                "{} line {}: expected `name role argon2-hash`",
                path.display(),
                n + 1
            );
        };
        let role: Role = role.parse().map_err(|_| {
            anyhow::anyhow!(
                "{} line {}: role {role:?} is not viewer, operator or admin",
                path.display(),
                n + 1
            )
        })?;
        if !hash.starts_with("$argon2") {
            bail!(
                "{} line {}: the password must be an argon2 hash (`maxine acl hash-password`)",
                path.display(),
                n + 1
            );
        }
        users.insert(name.to_string(), (hash.to_string(), role));
    }
    Ok(users)
}

/// The management token the operator gave (`acl.bootstrap_token_file` or
/// `MAXINE_ACL_BOOTSTRAP_TOKEN`), created unless a token with that secret
/// exists: by the bootstrap itself when none was made yet.
pub async fn bootstrap_from_config(
    config: &Config,
    registry: &Registry,
    log: &dyn Log,
) -> anyhow::Result<()> {
    let secret = match (
        &config.acl.bootstrap_token_file,
        &config.acl.bootstrap_token,
    ) {
        (Some(path), _) => {
            let s = std::fs::read_to_string(path).with_context(|| {
                format!("cannot read acl.bootstrap_token_file {}", path.display())
            })?;
            let s = s.trim().to_string();
            if s.len() < 32 {
                bail!(
                    "acl.bootstrap_token_file {}: the secret must be at least 32 characters",
                    path.display()
                );
            }
            s
        }
        (None, Some(s)) => s.clone(),
        (None, None) => return Ok(()),
    };
    let hash = secret_hash(&secret);
    if registry.token_by_secret_hash(&hash).is_some() {
        return Ok(());
    }
    let (_, accessor) = new_secret_and_accessor().map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = unix_ms();
    let token = Arc::new(Token {
        accessor: accessor.clone(),
        secret_hash: hash,
        description: "management token from the configuration".into(),
        policies: vec![GLOBAL_MANAGEMENT.into()],
        service: None,
        expires_at: None,
        max_instances: None,
        created_at: now,
        index: 0,
    });
    let change = if registry.bootstrapped().is_none() {
        AclChange::Bootstrap { token, at: now }
    } else {
        AclChange::Put(AclObject::Token(token))
    };
    log.propose(vec![Change::Acl(change)], ChangeContext::system_durable())
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the configured management token: {e}"))?;
    tracing::info!(
        accessor,
        "created the management token given in the configuration"
    );
    Ok(())
}

/// Writing queued denials about once a second, and re-reading the JWT keys
/// on SIGHUP.
pub fn spawn_tasks(auth: &Auth, tasks: &TaskTracker, shutdown: CancellationToken) {
    if let Some(audit) = auth.audit.clone() {
        let stop = shutdown.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                let a = audit.clone();
                match tokio::task::spawn_blocking(move || a.flush()).await {
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "writing denials to the audit log failed")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "writing denials to the audit log failed")
                    }
                    Ok(Ok(())) => {}
                }
            }
            let _ = tokio::task::spawn_blocking(move || audit.flush()).await;
        });
    }
    #[cfg(unix)]
    if let Some(jwt) = auth.jwt.clone() {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!(
                "cannot listen for SIGHUP: JWT keys reload only when their files change"
            );
            return;
        };
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = hup.recv() => {}
                }
                match jwt.reload() {
                    Ok(()) => tracing::info!("JWT keys reloaded"),
                    Err(e) => tracing::error!(error = %e, "reloading the JWT keys failed; the old ones stay"),
                }
            }
        });
    }
}

/// Lifts blacklist entries whose expiry has come: a `Delete` through the
/// log, journaled and audited (actor: the system) like any change. It
/// looks about once a second, so an entry lifts within a second of its
/// expiry; at start it looks at once, so an entry that expired while
/// Maxine was down is lifted before the first minute is out.
pub fn spawn_blacklist_expiry(
    registry: Registry,
    log: Arc<dyn Log>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) {
    tasks.spawn(async move {
        loop {
            let now = unix_ms();
            for entry in registry.blacklist() {
                if entry.expires_at.is_none_or(|at| at > now) {
                    continue;
                }
                let key = crate::core::AclKey::Blacklist(entry.target.clone());
                let change = Change::Acl(AclChange::Delete(key));
                match log.propose(vec![change], ChangeContext::system()).await {
                    Ok(_) => {
                        tracing::info!(entry = %entry.target, "blacklist entry expired and lifted")
                    }
                    // Lifted meanwhile (by an operator, or another node).
                    Err(crate::store::LogError::Refused(_)) => {}
                    Err(e) => tracing::warn!(entry = %entry.target, error = %e,
                        "cannot lift an expired blacklist entry yet; trying again"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
}
