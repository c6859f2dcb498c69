//! Secrets never leak: a scripted session against a real `maxine serve`
//! logging at trace level (debug and more) (bootstrap, tokens, sign-in, a password change,
//! JWTs, a token from a file, an admin from the environment, and failed
//! attempts with wrong secrets), then every byte the server wrote (its
//! log, the audit files, the store, snapshots, every file of the data
//! directory) and every answer that lists or describes credentials are
//! searched for each secret and password. None may appear.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;

use common::acl::{Cred, Idp, alg_none, call, claims, users_file};
use common::api::Reply;
use common::process::ServerProcess;
use reqwest::Method;
use serde_json::{Value, json};

/// Everything secret the session used, by what it is.
#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, what: impl Into<String>, secret: impl Into<String>) -> String {
        let secret = secret.into();
        assert!(secret.len() >= 8, "{secret:?} is too short to search for");
        self.0.push((what.into(), secret.clone()));
        secret
    }

    /// The strings to search for: each secret whole, and (for long ones)
    /// its first and last 16 characters, so that a shortened secret in a
    /// log line is caught too.
    fn needles(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (what, s) in &self.0 {
            out.push((what.clone(), s.clone()));
            if s.len() >= 32 && s.is_ascii() {
                out.push((format!("{what} (start)"), s[..16].to_string()));
                out.push((format!("{what} (end)"), s[s.len() - 16..].to_string()));
            }
        }
        out
    }

    /// Which secrets `bytes` holds.
    fn found_in(&self, bytes: &[u8]) -> Vec<String> {
        self.needles()
            .into_iter()
            .filter(|(_, n)| bytes.windows(n.len()).any(|w| w == n.as_bytes()))
            .map(|(what, _)| what)
            .collect()
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

struct Session {
    http: reqwest::Client,
    base: String,
    /// Answers that must not hold any secret (not those that hand one out).
    listings: Vec<(String, Reply)>,
}

impl Session {
    async fn req(&self, method: Method, path: &str, cred: &Cred, body: Option<Value>) -> Reply {
        let url = format!("{}{path}", self.base);
        call(&self.http, method, &url, cred, body.as_ref()).await
    }

    /// A request whose answer is kept for the search.
    async fn listed(&mut self, method: Method, path: &str, cred: &Cred) -> Reply {
        let r = self.req(method.clone(), path, cred, None).await;
        self.listings.push((format!("{method} {path}"), r));
        self.listings.last().unwrap().1.clone()
    }

    async fn signin(&self, user: &str, password: &str) -> Reply {
        self.req(
            Method::POST,
            "/api/maxine/signin",
            &Cred::None,
            Some(json!({"userName": user, "password": password})),
        )
        .await
    }
}

/// The listings every session phase reads with `admin`, and the
/// self-descriptions of every credential.
async fn read_listings(s: &mut Session, admin: &Cred, creds: &[Cred]) {
    for path in [
        "/v1/acl/tokens",
        "/v1/acl/policies",
        "/v1/audit?limit=1000",
        "/v1/services",
        "/v1/services/payments",
        "/api/maxine/serviceops/servers",
        "/v1/snapshot",
    ] {
        let r = s.listed(Method::GET, path, admin).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
    let tokens = s.req(Method::GET, "/v1/acl/tokens", admin, None).await;
    for t in tokens.body["tokens"].as_array().unwrap() {
        let path = format!("/v1/acl/tokens/{}", t["accessor"].as_str().unwrap());
        s.listed(Method::GET, &path, admin).await;
    }
    for c in creds {
        s.listed(Method::GET, "/v1/acl/token/self", c).await;
    }
}

#[tokio::test]
async fn no_secret_or_password_appears_in_anything_the_server_writes_or_lists() {
    let data = tempfile::tempdir().unwrap();
    let etc = tempfile::tempdir().unwrap();
    let mut secrets = Secrets::default();
    let admin_pw = secrets.add("admin password", "Admin-Pass-5f1e9c2b77");
    let viewer_pw = secrets.add("viewer password", "Viewer-Pass-8a3d0e4c19");
    let users = users_file(
        etc.path(),
        &[("ada", "admin", &admin_pw), ("vic", "viewer", &viewer_pw)],
    );
    let idp = Idp::new(etc.path());
    let env = |extra: &[(&'static str, String)]| {
        let mut env: Vec<(&'static str, String)> = vec![
            ("MAXINE_STORE", "file".into()),
            // Debug and more: whatever a debug log would show, this shows.
            ("MAXINE_LOG_LEVEL", "trace".into()),
            ("MAXINE_ACL_DEFAULT_POLICY", "deny".into()),
            ("MAXINE_ACL_USERS_FILE", users.display().to_string()),
            ("MAXINE_ACL_JWT_ISSUER", common::acl::ISSUER.into()),
            ("MAXINE_ACL_JWT_ALGORITHMS", "RS256".into()),
            (
                "MAXINE_ACL_JWT_PUBLIC_KEY_FILES",
                idp.rsa_public_file.display().to_string(),
            ),
            ("MAXINE_ACL_JWT_SERVICE_CLAIM", "service".into()),
            // Small audit files: rotation is covered by the search too.
            ("MAXINE_AUDIT_MAX_FILE_BYTES", "4096".into()),
            ("MAXINE_SNAPSHOT_INTERVAL", "1s".into()),
        ];
        env.extend(extra.iter().cloned());
        env
    };
    let start = |log: &'static str, env: Vec<(&'static str, String)>| {
        let dir = data.path().to_path_buf();
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            ServerProcess::start_with_env(&dir, log, &[], &env).await
        }
    };

    // ---- phase 1: bootstrap, tokens, sign-in, JWT, failures ----
    let p = start("first.log", env(&[])).await;
    let mut s = Session {
        http: reqwest::Client::new(),
        base: p.base(),
        listings: Vec::new(),
    };
    let boot = s
        .req(Method::POST, "/v1/acl/bootstrap", &Cred::None, None)
        .await;
    assert_eq!(boot.status, 200, "{boot:?}");
    let boot = Cred::Bearer(secrets.add("bootstrap token", boot.body["secret"].as_str().unwrap()));
    let r = s
        .req(
            Method::PUT,
            "/v1/acl/policies/pay-writer",
            &boot,
            Some(json!({"rules": {"service_prefix": {"pay": "write"}}})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let mut token = async |what: &str, body: Value| {
        let r = s
            .req(Method::POST, "/v1/acl/tokens", &boot, Some(body))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let secret = secrets.add(what, r.body["secret"].as_str().unwrap());
        (r.body["accessor"].as_str().unwrap().to_string(), secret)
    };
    let (payer_accessor, payer) = token("payer token", json!({"policies": ["pay-writer"]})).await;
    let (_, workload) = token("workload token", json!({"service": "orders"})).await;
    let (revoked_accessor, revoked) =
        token("revoked token", json!({"policies": ["pay-writer"]})).await;
    let payer = Cred::Bearer(payer);
    let workload = Cred::Token(workload);
    let revoked = Cred::Bearer(revoked);

    let jwt = secrets.add(
        "identity provider JWT",
        idp.rs256(&claims("workload-7", json!({"service": "payments"}))),
    );
    let jwt = Cred::Bearer(jwt);

    let ada = s.signin("ada", &admin_pw).await;
    assert_eq!(ada.status, 200, "{ada:?}");
    let ada = Cred::Bearer(secrets.add(
        "ada's sign-in token",
        ada.body["accessToken"].as_str().unwrap(),
    ));
    let vic = s.signin("vic", &viewer_pw).await;
    assert_eq!(vic.status, 200, "{vic:?}");
    let vic_old = Cred::Bearer(secrets.add(
        "vic's first sign-in token",
        vic.body["accessToken"].as_str().unwrap(),
    ));

    // Use them.
    let register = |id: &str| {
        (
            format!("/v1/services/payments/instances/{id}"),
            json!({"address": "10.0.0.1", "port": 80, "ttl": "1h"}),
        )
    };
    for (cred, id) in [(&payer, "p1"), (&jwt, "p2"), (&ada, "p3")] {
        let (path, body) = register(id);
        let r = s.req(Method::PUT, &path, cred, Some(body)).await;
        assert_eq!(r.status, 200, "{id}: {r:?}");
    }
    let (path, body) = register("w1");
    let r = s
        .req(
            Method::PUT,
            &path.replace("payments", "orders"),
            &workload,
            Some(body),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");

    // Failed attempts: wrong secrets, wrong passwords, a forged JWT.
    let wrong_bearer = secrets.add(
        "a wrong bearer secret",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    );
    let wrong_header = secrets.add("a wrong X-Maxine-Token", "Wrong-Token-Typed-By-Hand-1234");
    let wrong_pw = secrets.add("a mistyped password", "Admin-Pass-5f1e9c2b78");
    let other_pw = secrets.add("a password for no such user", "Nobody-Pass-0c7a1d");
    let forged = secrets.add(
        "a forged JWT",
        alg_none(&claims("mallory", json!({"service": "payments"}))),
    );
    let basic = secrets.add(
        "a Basic credential",
        base64::engine::general_purpose::STANDARD.encode(format!("ada:{admin_pw}")),
    );
    for cred in [
        Cred::Bearer(wrong_bearer),
        Cred::Token(wrong_header),
        Cred::Bearer(forged),
        Cred::Authorization(format!("Basic {basic}")),
    ] {
        let r = s.req(Method::GET, "/v1/acl/tokens", &cred, None).await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    assert_eq!(s.signin("ada", &wrong_pw).await.status, 401);
    assert_eq!(s.signin("nobody", &other_pw).await.status, 401);
    // Denied with a valid credential (recorded in the audit log).
    assert_eq!(
        s.req(Method::GET, "/v1/acl/tokens", &payer, None)
            .await
            .status,
        403
    );

    // A password change, and a revocation.
    let vic_new_pw = secrets.add("vic's new password", "Viewer-New-Pass-33b1");
    let r = s
        .req(
            Method::PUT,
            "/api/maxine/change-password",
            &vic_old,
            Some(json!({"password": viewer_pw, "newPassword": vic_new_pw})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let vic = s.signin("vic", &vic_new_pw).await;
    assert_eq!(vic.status, 200, "{vic:?}");
    let vic = Cred::Bearer(secrets.add(
        "vic's second sign-in token",
        vic.body["accessToken"].as_str().unwrap(),
    ));
    let path = format!("/v1/acl/tokens/{revoked_accessor}");
    assert_eq!(s.req(Method::DELETE, &path, &boot, None).await.status, 200);
    assert_eq!(
        s.req(Method::GET, "/v1/acl/token/self", &revoked, None)
            .await
            .status,
        401
    );

    let creds = [
        boot.clone(),
        payer.clone(),
        workload.clone(),
        jwt.clone(),
        ada.clone(),
        vic.clone(),
        Cred::None,
    ];
    read_listings(&mut s, &boot, &creds).await;
    p.stop().await;

    // ---- phase 2: a token from a file, an admin from the environment ----
    let file_secret = secrets.add(
        "bootstrap_token_file secret",
        "file-token-4c5d6e7f8091a2b3c4d5e6f708192a3b",
    );
    let token_file = etc.path().join("mgmt.token");
    std::fs::write(&token_file, format!("{file_secret}\n")).unwrap();
    let root_pw = secrets.add("MAXINE_ADMIN_PASSWORD", "Root-Env-Pass-91d2e3f4");
    let p = start(
        "second.log",
        env(&[
            (
                "MAXINE_ACL_BOOTSTRAP_TOKEN_FILE",
                token_file.display().to_string(),
            ),
            ("MAXINE_ADMIN_USERNAME", "root".into()),
            ("MAXINE_ADMIN_PASSWORD", root_pw.clone()),
        ]),
    )
    .await;
    s.base = p.base();
    let from_file = Cred::Bearer(file_secret);
    let root = s.signin("root", &root_pw).await;
    assert_eq!(root.status, 200, "{root:?}");
    let root = Cred::Bearer(secrets.add(
        "root's sign-in token",
        root.body["accessToken"].as_str().unwrap(),
    ));
    let r = s
        .req(
            Method::PUT,
            "/api/maxine/change-password",
            &root,
            Some(json!({"password": root_pw, "newPassword": "Root-Would-Be-New-77"})),
        )
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    let (path, body) = register("p4");
    assert_eq!(
        s.req(Method::PUT, &path, &from_file, Some(body))
            .await
            .status,
        200
    );
    assert_eq!(
        s.req(Method::GET, "/v1/acl/tokens", &payer, None)
            .await
            .status,
        403
    );
    let creds = [from_file.clone(), root.clone(), payer.clone(), vic.clone()];
    read_listings(&mut s, &from_file, &creds).await;
    p.stop().await;

    // ---- the search ----
    let files = files_under(data.path());
    let names: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(data.path()).unwrap().display().to_string())
        .collect();
    // The search covers what it should: the logs (at debug level), the
    // audit log (rotated), the store and the snapshots.
    for want in [
        "first.log",
        "second.log",
        "registry.redb",
        "audit/audit-000002.jsonl",
    ] {
        assert!(names.iter().any(|n| n == want), "no {want} among {names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("snapshots/")),
        "no snapshot among {names:?}"
    );
    let log = std::fs::read_to_string(data.path().join("first.log")).unwrap();
    assert!(
        log.contains("TRACE") && log.contains("batch committed"),
        "the log is not at trace level:\n{log}"
    );
    let audit = std::fs::read_to_string(data.path().join("audit/audit-000001.jsonl")).unwrap();
    assert!(audit.contains("\"outcome\":\"unauthenticated\""), "{audit}");

    // The store and the snapshots are searchable as they are: the public
    // accessor of a live token shows in them.
    let contains = |bytes: &[u8], s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    for (file, name) in files.iter().zip(&names) {
        if name == "registry.redb" || name.starts_with("snapshots/") {
            let bytes = std::fs::read(file).unwrap();
            assert!(
                contains(&bytes, &payer_accessor),
                "{name} cannot be searched"
            );
        }
    }

    let mut leaks = Vec::new();
    for (file, name) in files.iter().zip(&names) {
        let bytes = std::fs::read(file).unwrap();
        for what in secrets.found_in(&bytes) {
            leaks.push(format!("{what} in {name}"));
        }
    }
    assert!(s.listings.len() > 20, "too few answers searched");
    for (what, r) in &s.listings {
        let text = r.body.to_string();
        for secret in secrets.found_in(text.as_bytes()) {
            leaks.push(format!("{secret} in the answer to {what}"));
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
