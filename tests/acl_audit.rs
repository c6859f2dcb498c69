//! The audit log of a real server: every mutation of a scripted session has
//! its record (actor, index, action, resource, outcome), refusals are
//! recorded too, and `maxine audit verify` (the binary) vouches for an
//! intact log, rotated into several files, and names the first record of a
//! tampered one.

mod common;

use std::path::{Path, PathBuf};

use common::TestServer;
use common::acl::{Cred, call, create_token, put_policy, sign_in, unknown_secret, users_file};
use common::api::Reply;
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN_SECRET: &str = "audit-management-secret-0123456789abcdef";

async fn start(max_file_bytes: usize) -> (TestServer, Cred, tempfile::TempDir) {
    let etc = tempfile::tempdir().unwrap();
    let users = users_file(etc.path(), &[("vera", "viewer", "vera-password")]);
    let s = TestServer::start_with(|f| {
        f.acl.default_policy = Some("deny".into());
        f.acl.bootstrap_token = Some(ADMIN_SECRET.into());
        f.acl.users_file = Some(users);
        f.audit.max_file_bytes = max_file_bytes;
    })
    .await;
    (s, Cred::Bearer(ADMIN_SECRET.into()), etc)
}

async fn req(
    s: &TestServer,
    method: Method,
    path: &str,
    cred: &Cred,
    body: Option<Value>,
) -> Reply {
    let url = format!("{}{path}", s.http_base());
    call(&s.http, method, &url, cred, body.as_ref()).await
}

/// Every record, through `GET /v1/audit` (which writes queued denials first).
async fn records(s: &TestServer, admin: &Cred) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut since = 0;
    loop {
        let r = req(
            s,
            Method::GET,
            &format!("/v1/audit?since={since}&limit=1000"),
            admin,
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        let page = r.body["records"].as_array().unwrap().clone();
        if page.is_empty() {
            return out;
        }
        since = r.body["next"].as_u64().unwrap();
        out.extend(page);
    }
}

/// A record as (actor, index, action, resource, outcome).
fn summary(r: &Value) -> (String, Option<u64>, String, String, String) {
    let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
    (
        s("actor"),
        r["index"].as_u64(),
        s("action"),
        s("resource"),
        s("outcome"),
    )
}

#[tokio::test]
async fn every_mutation_and_every_refusal_of_a_session_is_recorded() {
    let (s, admin, _etc) = start(64 * 1024 * 1024).await;
    let base = s.http_base();
    let who = req(&s, Method::GET, "/v1/acl/token/self", &admin, None).await;
    let admin_actor = format!("token:{}", who.body["accessor"].as_str().unwrap());
    // What the session did, as the records must say it: first the
    // management token of the configuration, which Maxine makes itself
    // (the token, then the bootstrap mark, each with its own index).
    let mut want: Vec<(String, Option<u64>, String, String, String)> = vec![
        (
            "system".into(),
            Some(1),
            "acl.put".into(),
            admin_actor.clone(),
            "ok".into(),
        ),
        (
            "system".into(),
            Some(2),
            "acl.put".into(),
            "acl:bootstrap".into(),
            "ok".into(),
        ),
    ];
    let mut expect = |actor: &str, r: &Reply, action: &str, resource: &str| {
        assert!(r.status < 300, "{action} {resource}: {r:?}");
        let index = r.index.expect("a change answers its index");
        want.push((
            actor.into(),
            Some(index),
            action.into(),
            resource.into(),
            "ok".into(),
        ));
    };

    let rules = json!({"rules": {"service_prefix": {"pay": "write"}}});
    let r = req(
        &s,
        Method::PUT,
        "/v1/acl/policies/pay-writer",
        &admin,
        Some(rules),
    )
    .await;
    expect(&admin_actor, &r, "acl.put", "policy:pay-writer");
    let r = req(
        &s,
        Method::POST,
        "/v1/acl/tokens",
        &admin,
        Some(json!({"policies": ["pay-writer"]})),
    )
    .await;
    let payer_actor = format!("token:{}", r.body["accessor"].as_str().unwrap());
    expect(&admin_actor, &r, "acl.put", &payer_actor);
    let payer = Cred::Bearer(r.body["secret"].as_str().unwrap().into());

    let body = json!({"address": "10.0.0.1", "port": 80, "ttl": "1h"});
    let r = req(
        &s,
        Method::PUT,
        "/v1/services/payments/instances/p1",
        &payer,
        Some(body),
    )
    .await;
    expect(
        &payer_actor,
        &r,
        "registered",
        "service:payments/instance:p1@dc1",
    );
    let body = json!({"hostName": "10.0.0.2", "nodeName": "node-1", "serviceName": "payments", "port": 80});
    let r = req(
        &s,
        Method::POST,
        "/api/maxine/serviceops/register",
        &payer,
        Some(body),
    )
    .await;
    expect(
        &payer_actor,
        &r,
        "registered",
        "service:payments/instance:node-1@dc1",
    );
    let r = req(
        &s,
        Method::DELETE,
        "/v1/services/payments/instances/p1",
        &payer,
        None,
    )
    .await;
    expect(
        &payer_actor,
        &r,
        "deregistered",
        "service:payments/instance:p1@dc1",
    );

    let rules = json!({"rules": {"service": {"temp": "read"}}});
    let r = req(
        &s,
        Method::PUT,
        "/v1/acl/policies/temp",
        &admin,
        Some(rules),
    )
    .await;
    expect(&admin_actor, &r, "acl.put", "policy:temp");
    let r = req(&s, Method::DELETE, "/v1/acl/policies/temp", &admin, None).await;
    expect(&admin_actor, &r, "acl.delete", "policy:temp");
    let r = req(&s, Method::POST, "/v1/acl/tokens", &admin, Some(json!({}))).await;
    let victim = format!("token:{}", r.body["accessor"].as_str().unwrap());
    expect(&admin_actor, &r, "acl.put", &victim);
    let path = format!("/v1/acl/tokens/{}", victim.trim_start_matches("token:"));
    let r = req(
        &s,
        Method::PUT,
        &path,
        &admin,
        Some(json!({"description": "changed"})),
    )
    .await;
    expect(&admin_actor, &r, "acl.put", &victim);
    let r = req(&s, Method::DELETE, &path, &admin, None).await;
    expect(&admin_actor, &r, "acl.delete", &victim);

    let vera = Cred::Bearer(sign_in(&s.http, &base, "vera", "vera-password").await);
    let body = json!({"password": "vera-password", "newPassword": "vera-new-password"});
    let r = req(
        &s,
        Method::PUT,
        "/api/maxine/change-password",
        &vera,
        Some(body),
    )
    .await;
    expect("user:vera", &r, "acl.put", "user:vera");

    // Refusals: an unknown token, a missing permission, a wrong password.
    let r = req(
        &s,
        Method::GET,
        "/v1/services/payments",
        &Cred::Bearer(unknown_secret()),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    let body = json!({"address": "10.0.0.3", "port": 80});
    let r = req(
        &s,
        Method::PUT,
        "/v1/services/orders/instances/o1",
        &payer,
        Some(body),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = req(&s, Method::GET, "/v1/acl/tokens", &Cred::None, None).await;
    assert_eq!(r.status, 403);
    let r = call(
        &s.http,
        Method::POST,
        &format!("{base}/api/maxine/signin"),
        &Cred::None,
        Some(&json!({"userName": "vera", "password": "vera-password"})),
    )
    .await;
    assert_eq!(r.status, 401, "the old password: {r:?}");

    let all = records(&s, &admin).await;
    let seqs: Vec<u64> = all.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "seq 1, 2, 3, ..."
    );
    // The mutations, in the order made, and nothing else that is not a refusal.
    let mutations: Vec<_> = all
        .iter()
        .filter(|r| r["index"].is_u64())
        .map(summary)
        .collect();
    assert_eq!(mutations, want);
    for r in all
        .iter()
        .filter(|r| r["index"].is_u64() && r["actor"] != "system")
    {
        assert_eq!(r["client"], "127.0.0.1", "{r}");
    }

    // The refusals, with who, what and why.
    let refusals: Vec<&Value> = all.iter().filter(|r| r["index"].is_null()).collect();
    let find = |outcome: &str, action: &str| {
        refusals
            .iter()
            .find(|r| r["outcome"] == outcome && r["action"] == action)
            .unwrap_or_else(|| panic!("no {outcome} record of {action} among {refusals:#?}"))
    };
    let r = find("unauthenticated", "GET /v1/services/payments");
    assert_eq!(
        (&r["actor"], &r["client"]),
        (&json!("unauthenticated"), &json!("127.0.0.1"))
    );
    assert!(
        r["detail"].as_str().unwrap().contains("unknown token"),
        "{r}"
    );
    let r = find("forbidden", "PUT /v1/services/orders/instances/o1");
    assert_eq!(r["actor"], payer_actor.as_str());
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .contains("lacks service:write on \"orders\""),
        "{r}"
    );
    let r = find("forbidden", "GET /v1/acl/tokens");
    assert_eq!(r["actor"], "anonymous");
    let r = find("unauthenticated", "POST /api/maxine/signin");
    assert_eq!(r["resource"], "user:vera");
    assert_eq!(refusals.len(), 4, "{refusals:#?}");
    // No record names a secret or a password.
    let text = serde_json::to_string(&all).unwrap();
    for secret in [ADMIN_SECRET, "vera-password", "vera-new-password"] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }
}

fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with("audit-") && name.ends_with(".jsonl")
        })
        .collect();
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    for f in audit_files(from) {
        std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
}

/// What is done to a copy of the log, and where verify must find the break.
enum Tamper {
    /// One byte of a record's text changed; still a JSON record.
    FlipInText,
    /// One byte changed so that the line is no longer JSON.
    FlipStructure,
    DeleteLine,
    DeleteFile,
}

#[tokio::test]
async fn audit_verify_vouches_for_a_rotated_log_and_names_the_first_tampered_record() {
    // 4 KiB files: about ten records each.
    let (s, admin, _etc) = start(4096).await;
    let base = s.http_base();
    let (_, secret) = create_token(&s.http, &base, &admin, json!({"service": "web"})).await;
    let web = Cred::Bearer(secret);
    put_policy(
        &s.http,
        &base,
        &admin,
        "readers",
        json!({"service_prefix": {"": "read"}}),
    )
    .await;
    for i in 0..40 {
        let body = json!({"address": format!("10.0.1.{}", i + 1), "port": 80, "ttl": "1h"});
        let r = req(
            &s,
            Method::PUT,
            &format!("/v1/services/web/instances/w{i}"),
            &web,
            Some(body),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        if i % 5 == 0 {
            let r = req(&s, Method::GET, "/v1/acl/tokens", &web, None).await;
            assert_eq!(r.status, 403, "a denial between the changes");
        }
    }
    let total = records(&s, &admin).await.len();
    let (_, data) = s.stop_keeping_data().await;
    let dir = data.path().join("audit");
    let files = audit_files(&dir);
    assert!(files.len() >= 4, "the log did not rotate: {files:?}");

    let (ok, out) =
        common::run_maxine(&["audit".as_ref(), "verify".as_ref(), dir.as_os_str()]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "audit log verified: {total} records in {} files",
            files.len()
        )),
        "{out}"
    );

    // Where the middle record of the middle file sits in the chain.
    let middle = files.len() / 2;
    let before: usize = files[..middle]
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().lines().count())
        .sum();
    let lines = std::fs::read_to_string(&files[middle])
        .unwrap()
        .lines()
        .count();
    let line = lines / 2 + 1;
    let seq = before + line;
    let name = |i: usize| files[i].file_name().unwrap().to_owned();

    #[rustfmt::skip]
    let table: &[(&str, Tamper, usize, u64, usize, &str)] = &[
        // (case, tamper, file, line, seq where verify breaks, why)
        ("a byte of text", Tamper::FlipInText, middle, line as u64 + 1, seq + 1, "its prev is not the SHA-256"),
        ("a byte of structure", Tamper::FlipStructure, middle, line as u64, seq, "not a record"),
        ("a deleted line", Tamper::DeleteLine, middle, line as u64, seq, &format!("its seq is {}", seq + 1)),
        ("a deleted file", Tamper::DeleteFile, middle + 1, 1, before + 1, "is missing"),
    ];
    for (case, tamper, file, at_line, at_seq, why) in table {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(&dir, copy.path());
        let target = copy.path().join(name(middle));
        let text = std::fs::read_to_string(&target).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let victim = &mut lines[line - 1];
        match tamper {
            Tamper::FlipInText => {
                // A letter of the action, e.g. "registered" -> "reGistered".
                let at = victim.find("\"action\":\"").unwrap() + "\"action\":\"".len() + 2;
                let mut bytes = victim.clone().into_bytes();
                bytes[at] ^= 0x20;
                *victim = String::from_utf8(bytes).unwrap();
            }
            Tamper::FlipStructure => {
                let at = victim.find(':').unwrap();
                let mut bytes = victim.clone().into_bytes();
                bytes[at] = b';';
                *victim = String::from_utf8(bytes).unwrap();
            }
            Tamper::DeleteLine => {
                lines.remove(line - 1);
            }
            Tamper::DeleteFile => {}
        }
        match tamper {
            Tamper::DeleteFile => std::fs::remove_file(copy.path().join(name(middle))).unwrap(),
            _ => std::fs::write(&target, lines.join("\n") + "\n").unwrap(),
        }
        let (ok, out) =
            common::run_maxine(&["audit".as_ref(), "verify".as_ref(), copy.path().as_os_str()])
                .await;
        assert!(!ok, "{case}: verify passed:\n{out}");
        let at = copy.path().join(name(*file));
        let place = format!("{} line {at_line} (record {at_seq})", at.display());
        assert!(
            out.contains(&place),
            "{case}: expected {place}: {why}, got:\n{out}"
        );
        assert!(out.contains(why), "{case}: expected {why:?}, got:\n{out}");
    }
}
