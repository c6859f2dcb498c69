//! Access control survives what the registry survives: tokens, policies and
//! the bootstrap mark are kept across a clean restart and a `kill -9` of a
//! real `maxine serve`, with every store that keeps data (one battery, run
//! against the file store and a real Redis). Bootstrap works once; a
//! revoked token stops working on the very next request.

mod common;

use std::path::Path;

use common::acl::{Cred, call};
use common::api::Reply;
use common::process::ServerProcess;
use common::redis::RedisServer;
use reqwest::Method;
use serde_json::{Value, json};

/// A store under test, as the process sees it.
trait Backend {
    /// Variables pointing `maxine serve` at the store (its data dir is given apart).
    fn env(&self) -> Vec<(&'static str, String)>;
}

/// The default: `registry.redb` in the data directory.
struct File;
impl Backend for File {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("MAXINE_STORE", "file".into())]
    }
}

struct Redis(RedisServer);
impl Backend for Redis {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("MAXINE_STORE", self.0.url())]
    }
}

fn file() -> File {
    File
}
fn redis() -> Redis {
    Redis(RedisServer::start())
}

/// `maxine serve` with the default policy deny, on `dir` and `backend`.
async fn serve(dir: &Path, backend: &dyn Backend, log: &str) -> Server {
    let mut env = backend.env();
    env.push(("MAXINE_ACL_DEFAULT_POLICY", "deny".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = ServerProcess::start_with_env(dir, log, &[], &env).await;
    Server {
        http: reqwest::Client::new(),
        p,
    }
}

struct Server {
    http: reqwest::Client,
    p: ServerProcess,
}

impl Server {
    async fn req(&self, method: Method, path: &str, cred: &Cred, body: Option<Value>) -> Reply {
        let url = format!("{}{path}", self.p.base());
        call(&self.http, method, &url, cred, body.as_ref()).await
    }

    async fn bootstrap(&self, cred: &Cred) -> Reply {
        self.req(Method::POST, "/v1/acl/bootstrap", cred, None)
            .await
    }

    /// Creates a token; (accessor, secret as a credential).
    async fn token(&self, admin: &Cred, body: Value) -> (String, Cred) {
        let r = self
            .req(Method::POST, "/v1/acl/tokens", admin, Some(body))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let secret = r.body["secret"].as_str().unwrap().to_string();
        (
            r.body["accessor"].as_str().unwrap().to_string(),
            Cred::Bearer(secret),
        )
    }

    async fn policy(&self, admin: &Cred, name: &str, rules: Value) {
        let path = format!("/v1/acl/policies/{name}");
        let r = self
            .req(Method::PUT, &path, admin, Some(json!({ "rules": rules })))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    }

    async fn register(&self, cred: &Cred, service: &str, id: &str) -> u16 {
        let path = format!("/v1/services/{service}/instances/{id}");
        let body = json!({"address": "10.0.0.1", "port": 80, "ttl": "1h"});
        self.req(Method::PUT, &path, cred, Some(body)).await.status
    }

    /// The policies and tokens as a manager lists them, but for the
    /// bootstrap token (see the_bootstrap_token_survives_a_restart).
    async fn acl(&self, admin: &Cred) -> (Value, Value) {
        let p = self.req(Method::GET, "/v1/acl/policies", admin, None).await;
        let mut t = self.req(Method::GET, "/v1/acl/tokens", admin, None).await;
        assert_eq!((p.status, t.status), (200, 200), "{p:?} {t:?}");
        t.body["tokens"]
            .as_array_mut()
            .unwrap()
            .retain(|t| t["description"] != "bootstrap management token");
        (p.body, t.body)
    }

    async fn self_status(&self, cred: &Cred) -> u16 {
        self.req(Method::GET, "/v1/acl/token/self", cred, None)
            .await
            .status
    }
}

/// What the tokens of the persistence scenario may do, as statuses.
async fn abilities(s: &Server, (admin, payer, orders): (&Cred, &Cred, &Cred)) -> Vec<u16> {
    vec![
        s.register(payer, "payments", "p1").await,
        s.register(payer, "orders", "o1").await,
        s.register(orders, "orders", "o1").await,
        s.register(orders, "payments", "p2").await,
        s.register(&Cred::None, "payments", "a1").await,
        s.register(&Cred::None, "orders", "a2").await,
        s.self_status(admin).await,
        s.bootstrap(&Cred::None).await.status,
    ]
}

mod scenario {
    use super::*;

    /// The first bootstrap answers a management token; every later one,
    /// with or without a credential and after a restart, is 403.
    pub async fn bootstrap_works_once(backend: &dyn Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = serve(dir.path(), backend, "one.log").await;
        let first = s.bootstrap(&Cred::None).await;
        assert_eq!(first.status, 200, "{first:?}");
        assert_eq!(first.body["policies"], json!(["global-management"]));
        let admin = Cred::Bearer(first.body["secret"].as_str().unwrap().into());
        assert_eq!(s.self_status(&admin).await, 200);
        for cred in [&Cred::None, &admin] {
            let again = s.bootstrap(cred).await;
            assert_eq!(again.status, 403, "{again:?}");
            let text = again.body["error"].as_str().unwrap();
            assert!(text.contains("already"), "{text}");
        }
        let tokens = s.req(Method::GET, "/v1/acl/tokens", &admin, None).await;
        let mut accessors: Vec<_> = tokens.body["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["accessor"].as_str().unwrap())
            .collect();
        accessors.sort();
        let mut want = vec!["anonymous", first.body["accessor"].as_str().unwrap()];
        want.sort();
        assert_eq!(accessors, want, "the anonymous token and the bootstrap's");
        s.p.stop().await;
        let s = serve(dir.path(), backend, "two.log").await;
        assert_eq!(s.bootstrap(&Cred::None).await.status, 403);
        s.p.kill9().await;
        let s = serve(dir.path(), backend, "three.log").await;
        assert_eq!(s.bootstrap(&Cred::None).await.status, 403);
        s.p.stop().await;
    }

    /// The token the bootstrap answered keeps working after a restart.
    pub async fn the_bootstrap_token_survives_a_restart(backend: &dyn Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = serve(dir.path(), backend, "one.log").await;
        let first = s.bootstrap(&Cred::None).await;
        assert_eq!(first.status, 200, "{first:?}");
        let admin = Cred::Bearer(first.body["secret"].as_str().unwrap().into());
        assert_eq!(s.self_status(&admin).await, 200);
        s.p.stop().await;
        let s = serve(dir.path(), backend, "two.log").await;
        assert_eq!(s.bootstrap(&Cred::None).await.status, 403);
        let r = s.req(Method::GET, "/v1/acl/token/self", &admin, None).await;
        assert_eq!(
            r.status, 200,
            "the bootstrap token was lost while the bootstrap mark was kept: \
             nobody can manage the ACLs any more: {r:?}"
        );
        s.p.stop().await;
    }

    /// Once bootstrapped, always: deleting the bootstrap token does not
    /// open the bootstrap again, not even after a restart.
    pub async fn bootstrap_stays_done_after_its_token_is_deleted(backend: &dyn Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = serve(dir.path(), backend, "one.log").await;
        let first = s.bootstrap(&Cred::None).await;
        let boot = Cred::Bearer(first.body["secret"].as_str().unwrap().into());
        let accessor = first.body["accessor"].as_str().unwrap();
        let (_, admin) = s
            .token(&boot, json!({"policies": ["global-management"]}))
            .await;
        let path = format!("/v1/acl/tokens/{accessor}");
        assert_eq!(s.req(Method::DELETE, &path, &admin, None).await.status, 200);
        assert_eq!(s.bootstrap(&Cred::None).await.status, 403);
        s.p.stop().await;
        let s = serve(dir.path(), backend, "two.log").await;
        let again = s.bootstrap(&Cred::None).await;
        assert_eq!(
            again.status, 403,
            "after a restart, anyone may bootstrap a management token again: {again:?}"
        );
        s.p.stop().await;
    }

    /// Tokens and policies are there after a clean restart and after
    /// `kill -9`, working as before; what changed just before the kill
    /// (acknowledged) is kept too.
    pub async fn tokens_and_policies_survive_a_restart_and_kill_9(backend: &dyn Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = serve(dir.path(), backend, "first.log").await;
        let r = s.bootstrap(&Cred::None).await;
        let boot = Cred::Bearer(r.body["secret"].as_str().unwrap().into());
        // A management token of its own: the bootstrap token itself is
        // the_bootstrap_token_survives_a_restart's business.
        let (_, admin) = s
            .token(&boot, json!({"policies": ["global-management"]}))
            .await;
        s.policy(
            &admin,
            "pay-writer",
            json!({"service_prefix": {"pay": "write"}}),
        )
        .await;
        s.policy(&admin, "temp", json!({"service": {"temp": "read"}}))
            .await;
        let (_, payer) = s
            .token(
                &admin,
                json!({"policies": ["pay-writer"], "description": "payer"}),
            )
            .await;
        let (_, orders) = s.token(&admin, json!({"service": "orders"})).await;
        let anon = json!({"policies": ["pay-writer"], "max_instances": 5});
        let r = s
            .req(Method::PUT, "/v1/acl/tokens/anonymous", &admin, Some(anon))
            .await;
        assert_eq!(r.status, 200, "{r:?}");

        // What each may do, checked again after each restart.
        let creds = (&admin, &payer, &orders);
        let expected = vec![200, 403, 200, 403, 200, 403, 200, 403];
        assert_eq!(abilities(&s, creds).await, expected);
        let acl = s.acl(&admin).await;

        s.p.stop().await;
        let s = serve(dir.path(), backend, "restarted.log").await;
        assert_eq!(
            s.acl(&admin).await,
            acl,
            "the ACL objects after a clean restart"
        );
        assert_eq!(
            abilities(&s, creds).await,
            expected,
            "after a clean restart"
        );

        // Acknowledged changes just before a kill -9: a new token, a
        // revocation and a deleted policy.
        let (_, late) = s.token(&admin, json!({"policies": ["pay-writer"]})).await;
        let r = s
            .req(Method::DELETE, "/v1/acl/policies/temp", &admin, None)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let payer_accessor = s.req(Method::GET, "/v1/acl/token/self", &payer, None).await;
        let payer_accessor = payer_accessor.body["accessor"]
            .as_str()
            .unwrap()
            .to_string();
        let path = format!("/v1/acl/tokens/{payer_accessor}");
        assert_eq!(s.req(Method::DELETE, &path, &admin, None).await.status, 200);
        let acl = s.acl(&admin).await;
        s.p.kill9().await;

        let s = serve(dir.path(), backend, "after-kill.log").await;
        assert_eq!(s.acl(&admin).await, acl, "the ACL objects after kill -9");
        assert_eq!(s.register(&late, "payments", "p3").await, 200);
        assert_eq!(
            s.self_status(&payer).await,
            401,
            "a revoked token came back"
        );
        let r = s
            .req(Method::GET, "/v1/acl/policies/temp", &admin, None)
            .await;
        assert_eq!(r.status, 404, "a deleted policy came back: {r:?}");
        assert_eq!(s.register(&orders, "orders", "o3").await, 200);
        assert_eq!(s.bootstrap(&Cred::None).await.status, 403);
        s.p.stop().await;
    }

    /// A deleted token is refused by the very next request, and a token
    /// whose policy is deleted keeps nothing of it.
    pub async fn a_revoked_token_stops_working_on_the_next_request(backend: &dyn Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = serve(dir.path(), backend, "revoke.log").await;
        let r = s.bootstrap(&Cred::None).await;
        let admin = Cred::Bearer(r.body["secret"].as_str().unwrap().into());
        s.policy(
            &admin,
            "pay-writer",
            json!({"service_prefix": {"pay": "write"}}),
        )
        .await;
        for round in 0..5 {
            let (accessor, t) = s.token(&admin, json!({"policies": ["pay-writer"]})).await;
            assert_eq!(s.register(&t, "payments", &format!("r{round}")).await, 200);
            let path = format!("/v1/acl/tokens/{accessor}");
            assert_eq!(s.req(Method::DELETE, &path, &admin, None).await.status, 200);
            let r = s
                .req(
                    Method::PUT,
                    &format!("/v1/services/payments/instances/r{round}/heartbeat"),
                    &t,
                    None,
                )
                .await;
            assert_eq!(r.status, 401, "round {round}: {r:?}");
            assert!(r.www_authenticate.is_some(), "{r:?}");
        }
        // Deleting the policy takes the permission from its tokens at once.
        let (_, t) = s.token(&admin, json!({"policies": ["pay-writer"]})).await;
        assert_eq!(s.register(&t, "payments", "x1").await, 200);
        let r = s
            .req(Method::DELETE, "/v1/acl/policies/pay-writer", &admin, None)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(s.register(&t, "payments", "x2").await, 403);
        s.p.stop().await;
    }
}

/// The battery, once per store that keeps data.
macro_rules! battery {
    ($($name:ident => $make:expr),+ $(,)?) => {
        $(
            mod $name {
                use super::*;
                #[tokio::test]
                async fn bootstrap_works_once() {
                    scenario::bootstrap_works_once(&$make).await;
                }
                #[tokio::test]
                async fn the_bootstrap_token_survives_a_restart() {
                    scenario::the_bootstrap_token_survives_a_restart(&$make).await;
                }
                #[tokio::test]
                async fn bootstrap_stays_done_after_its_token_is_deleted() {
                    scenario::bootstrap_stays_done_after_its_token_is_deleted(&$make).await;
                }
                #[tokio::test]
                async fn tokens_and_policies_survive_a_restart_and_kill_9() {
                    scenario::tokens_and_policies_survive_a_restart_and_kill_9(&$make).await;
                }
                #[tokio::test]
                async fn a_revoked_token_stops_working_on_the_next_request() {
                    scenario::a_revoked_token_stops_working_on_the_next_request(&$make).await;
                }
            }
        )+
    };
}

battery! {
    file_store => file(),
    redis_store => redis(),
}
