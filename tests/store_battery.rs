//! One battery for every store backend (GUIDE habit 9): the `Store`
//! contract against the file store, Redis (a real `redis-server` on a free
//! port) and the memory store; then the server-level promise, registrations
//! surviving a restart through the API and DNS, against file and Redis.

mod common;

use std::path::Path;

use common::TestServer;
use common::redis::RedisServer;
use hickory_proto::rr::RecordType;
use maxine::config::ConfigFile;
use maxine::store::{FileStore, MAX_VALUE_BYTES, MemoryStore, Op, RedisStore, Store, WriteBatch};
use serde_json::json;

/// A backend under test: where its data lives, kept alive by the value.
trait Backend {
    /// Opens the store anew (a new file handle or connection) on the same data.
    fn open(&self) -> Box<dyn Store>;
    /// Points a server's configuration at the same data.
    fn configure(&self, c: &mut ConfigFile);
    /// The same, as flags of `maxine snapshot restore`.
    fn flags(&self) -> Vec<String>;
}

struct File(tempfile::TempDir);
impl Backend for File {
    fn open(&self) -> Box<dyn Store> {
        Box::new(FileStore::open(self.0.path()).expect("open the file store"))
    }
    fn configure(&self, c: &mut ConfigFile) {
        c.store = "file".into();
        c.data_dir = self.0.path().to_path_buf();
    }
    fn flags(&self) -> Vec<String> {
        vec!["--data-dir".into(), self.0.path().display().to_string()]
    }
}

struct Redis(RedisServer);
impl Backend for Redis {
    fn open(&self) -> Box<dyn Store> {
        Box::new(RedisStore::open(&self.0.url()).expect("connect to Redis"))
    }
    fn configure(&self, c: &mut ConfigFile) {
        c.store = self.0.url();
    }
    fn flags(&self) -> Vec<String> {
        vec!["--store".into(), self.0.url()]
    }
}

struct Memory(MemoryStore);
impl Backend for Memory {
    fn open(&self) -> Box<dyn Store> {
        Box::new(self.0.clone())
    }
    fn configure(&self, _: &mut ConfigFile) {
        unreachable!("the memory store keeps nothing across a restart")
    }
    fn flags(&self) -> Vec<String> {
        unreachable!("the memory store keeps nothing across a restart")
    }
}

fn file() -> File {
    File(tempfile::tempdir().unwrap())
}
fn redis() -> Redis {
    Redis(RedisServer::start())
}
fn memory() -> Memory {
    Memory(MemoryStore::new())
}

fn put(index: u64, v: &str) -> Op {
    Op::Put(index, v.as_bytes().to_vec())
}

fn batch(ops: Vec<Op>, last_index: u64) -> WriteBatch {
    WriteBatch {
        ops,
        clear: false,
        last_index,
    }
}

/// Everything stored, sorted by index, and the last index.
fn contents(store: &mut dyn Store) -> (Vec<(u64, String)>, u64) {
    let mut all = Vec::new();
    let last = store
        .load(&mut |i, v| all.push((i, String::from_utf8_lossy(v).into_owned())))
        .expect("load");
    all.sort();
    (all, last)
}

fn pairs(list: &[(u64, &str)]) -> Vec<(u64, String)> {
    list.iter().map(|(i, v)| (*i, v.to_string())).collect()
}

mod contract {
    use super::*;

    pub fn put_delete_and_load(b: &dyn Backend) {
        let mut s = b.open();
        s.commit(&batch(vec![put(1, "a"), put(2, "b"), put(3, "c")], 3))
            .unwrap();
        s.commit(&batch(vec![Op::Delete(2), Op::Delete(99)], 4))
            .unwrap();
        assert_eq!(contents(&mut *s), (pairs(&[(1, "a"), (3, "c")]), 4));
    }

    pub fn committed_data_survives_reopen_and_a_new_handle(b: &dyn Backend) {
        let mut s = b.open();
        s.commit(&batch(vec![put(5, "five")], 5)).unwrap();
        s.reopen().unwrap();
        assert_eq!(contents(&mut *s), (pairs(&[(5, "five")]), 5));
        s.commit(&batch(vec![put(6, "six")], 6)).unwrap();
        drop(s);
        let mut again = b.open();
        assert_eq!(
            contents(&mut *again),
            (pairs(&[(5, "five"), (6, "six")]), 6)
        );
    }

    pub fn indexes_keep_their_records_and_the_last_index_only_grows(b: &dyn Backend) {
        let mut s = b.open();
        let big = u64::MAX - 1;
        s.commit(&batch(
            vec![put(big, "big"), put(10, "ten"), put(9, "nine")],
            10,
        ))
        .unwrap();
        // A lower last index (a batch of older records) does not move it back.
        s.commit(&batch(vec![put(2, "two")], 3)).unwrap();
        let (all, last) = contents(&mut *s);
        assert_eq!(
            all,
            pairs(&[(2, "two"), (9, "nine"), (10, "ten"), (big, "big")])
        );
        assert_eq!(last, big, "the highest stored index counts too");
        drop(s);
        let mut s = b.open();
        s.commit(&batch(vec![Op::Delete(big)], 12)).unwrap();
        assert_eq!(contents(&mut *s).1, 12);
    }

    pub fn operations_of_a_batch_apply_in_order(b: &dyn Backend) {
        let mut s = b.open();
        s.commit(&batch(
            vec![
                put(7, "x"),
                Op::Delete(7),
                Op::Delete(8),
                put(8, "y"),
                put(8, "z"),
            ],
            8,
        ))
        .unwrap();
        assert_eq!(contents(&mut *s).0, pairs(&[(8, "z")]));
    }

    pub fn a_large_value_is_refused_with_a_clear_error_and_nothing_is_applied(b: &dyn Backend) {
        let mut s = b.open();
        s.commit(&batch(vec![put(1, "kept")], 1)).unwrap();
        let huge = Op::Put(3, vec![b'x'; MAX_VALUE_BYTES + 1]);
        let err = s
            .commit(&batch(vec![put(2, "small"), huge, Op::Delete(1)], 3))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("record 3")
                && err.contains(&format!("{}", MAX_VALUE_BYTES + 1))
                && err.contains("limit"),
            "{err}"
        );
        // A value at the limit is fine.
        s.commit(&batch(vec![Op::Put(4, vec![b'y'; MAX_VALUE_BYTES])], 4))
            .unwrap();
        let (all, _) = contents(&mut *s);
        assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 4]);
    }

    pub fn clear_replaces_everything(b: &dyn Backend) {
        let mut s = b.open();
        s.commit(&batch(vec![put(1, "a"), put(2, "b")], 2)).unwrap();
        s.commit(&WriteBatch {
            ops: vec![put(1, "new")],
            clear: true,
            last_index: 9,
        })
        .unwrap();
        assert_eq!(contents(&mut *s), (pairs(&[(1, "new")]), 9));
    }
}

mod server {
    use super::*;

    async fn get(s: &TestServer, path: &str) -> (u16, serde_json::Value) {
        let r = crate::common::api::get(s, path).await;
        (r.status, r.body)
    }

    fn ids(body: &serde_json::Value) -> Vec<(String, u64)> {
        body["instances"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        (
                            i["id"].as_str().unwrap().to_string(),
                            i["index"].as_u64().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn registrations_survive_a_restart_through_the_api_and_dns(b: &dyn Backend) {
        let s = TestServer::start_with(|c| b.configure(c)).await;
        let body = |ip: &str| json!({"address": ip, "port": 8080, "ttl": "1h"});
        s.register("payments", "web-1", body("10.0.0.1")).await;
        s.register("payments", "web-2", body("10.0.0.2")).await;
        s.register("billing", "b-1", body("10.0.1.1")).await;
        let del = s
            .http
            .delete(format!(
                "{}/v1/services/payments/instances/web-2",
                s.http_base()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(del.status(), 200);
        let (_, before) = get(&s, "/v1/services/payments").await;
        let last = s.registry.index();

        let s = s.restart().await;
        let (status, after) = get(&s, "/v1/services/payments").await;
        assert_eq!(status, 200, "{after}");
        assert_eq!(ids(&after), ids(&before), "same instances, same indexes");
        assert_eq!(ids(&after).len(), 1);
        let (status, _) = get(&s, "/v1/services/billing").await;
        assert_eq!(status, 200);
        let m = s.ask("payments.maxine.", RecordType::A).await;
        let addrs: Vec<_> = m.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.1"]);
        let new = s.register("payments", "web-3", body("10.0.0.3")).await;
        assert!(
            new["index"].as_u64().unwrap() > last,
            "indexes go on after the last stored one"
        );
        s.stop().await;
    }

    async fn maxine(args: &[String]) -> String {
        let (ok, text) = crate::common::run_maxine(args).await;
        assert!(ok, "maxine {args:?}: {text}");
        text
    }

    pub async fn a_snapshot_saved_from_a_server_restores_into_its_store(b: &dyn Backend) {
        let snap = tempfile::tempdir().unwrap();
        let file = snap.path().join("backup.snapshot").display().to_string();
        let s = TestServer::start_with(|c| b.configure(c)).await;
        let body = json!({"address": "10.0.0.1", "port": 8080, "ttl": "1h"});
        s.register("payments", "kept-1", body.clone()).await;
        s.register("payments", "kept-2", body.clone()).await;
        let saved = maxine(&[
            "snapshot".into(),
            "save".into(),
            file.clone(),
            "--api".into(),
            s.http_base(),
        ])
        .await;
        assert!(saved.contains("saved 2 instances"), "{saved}");
        s.register("payments", "after-the-backup", body).await;
        let (_, before) = get(&s, "/v1/services/payments").await;
        let last = s.registry.index();
        let config = s.config.clone();
        s.stop().await;

        let mut args = vec!["snapshot".into(), "restore".into(), file];
        args.extend(b.flags());
        let restored = maxine(&args).await;
        assert!(restored.contains("restored 2 instances"), "{restored}");

        let s = TestServer::start_config(config, tempfile::tempdir().unwrap()).await;
        let (_, after) = get(&s, "/v1/services/payments").await;
        let want: Vec<_> = ids(&before)
            .into_iter()
            .filter(|(id, _)| id.starts_with("kept"))
            .collect();
        assert_eq!(
            ids(&after),
            want,
            "the backup's instances, with their indexes"
        );
        assert!(s.registry.index() >= last, "indexes never go back");
        s.stop().await;
    }
}

/// The battery, once per backend.
macro_rules! battery {
    (contract: $($name:ident => $make:expr),+ ; server: $($sname:ident => $smake:expr),+ $(,)?) => {
        $(
            mod $name {
                use super::*;
                #[test]
                fn put_delete_and_load() {
                    contract::put_delete_and_load(&$make);
                }
                #[test]
                fn committed_data_survives_reopen_and_a_new_handle() {
                    contract::committed_data_survives_reopen_and_a_new_handle(&$make);
                }
                #[test]
                fn indexes_keep_their_records_and_the_last_index_only_grows() {
                    contract::indexes_keep_their_records_and_the_last_index_only_grows(&$make);
                }
                #[test]
                fn operations_of_a_batch_apply_in_order() {
                    contract::operations_of_a_batch_apply_in_order(&$make);
                }
                #[test]
                fn a_large_value_is_refused_with_a_clear_error_and_nothing_is_applied() {
                    contract::a_large_value_is_refused_with_a_clear_error_and_nothing_is_applied(&$make);
                }
                #[test]
                fn clear_replaces_everything() {
                    contract::clear_replaces_everything(&$make);
                }
            }
        )+
        $(
            mod $sname {
                use super::*;
                #[tokio::test]
                async fn registrations_survive_a_restart_through_the_api_and_dns() {
                    server::registrations_survive_a_restart_through_the_api_and_dns(&$smake).await;
                }
                #[tokio::test]
                async fn a_snapshot_saved_from_a_server_restores_into_its_store() {
                    server::a_snapshot_saved_from_a_server_restores_into_its_store(&$smake).await;
                }
            }
        )+
    };
}

battery! {
    contract: file_store => file(), redis_store => redis(), memory_store => memory();
    server: file_server => file(), redis_server => redis(),
}

/// An etcd cluster (three members) is a shared log, not a `Store` of
/// records (its own contract: tests/etcd_cluster.rs); the server-level
/// promise holds for it too.
struct Etcd(common::etcd::EtcdCluster);
impl Backend for Etcd {
    fn open(&self) -> Box<dyn Store> {
        unreachable!("an etcd store keeps records by key, through the etcd log only")
    }
    fn configure(&self, c: &mut ConfigFile) {
        c.store = self.0.url("battery");
    }
    fn flags(&self) -> Vec<String> {
        unreachable!("snapshots are restored through a node's API on etcd")
    }
}

mod etcd_server {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn registrations_survive_a_restart_through_the_api_and_dns() {
        if common::etcd::skip_without_etcd() {
            return;
        }
        let b = Etcd(common::etcd::EtcdCluster::start(3).await);
        server::registrations_survive_a_restart_through_the_api_and_dns(&b).await;
    }
}

// ---- the file store only ----

#[test]
fn a_file_in_use_by_another_store_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let _first = FileStore::open(dir.path()).unwrap();
    let err = FileStore::open(dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("in use by another process"), "{err}");
}

#[test]
fn a_corrupt_file_is_moved_aside_and_an_empty_store_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FileStore::FILE_NAME);
    std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
    let mut s = FileStore::open(dir.path()).expect("starts anyway");
    assert_eq!(contents(&mut s), (vec![], 0));
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("registry.redb.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept for inspection");
    assert_eq!(
        std::fs::read(dir.path().join(&aside[0])).unwrap(),
        vec![0x5a; 64 * 1024]
    );
}

#[test]
fn the_store_file_lives_in_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    let s = FileStore::open(&nested).unwrap();
    assert!(Path::new(&s.describe()).starts_with(&nested));
    assert!(nested.join(FileStore::FILE_NAME).exists());
}

// ---- Redis only ----

#[tokio::test]
async fn redis_that_does_not_fsync_every_write_is_warned_about() {
    let redis = RedisServer::start_with(&["--appendfsync", "everysec"]);
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let p = common::process::ServerProcess::start_with_env(
        dir.path(),
        "maxine.log",
        &[],
        &[("MAXINE_STORE", &url)],
    )
    .await;
    let log = p.log_text();
    assert!(
        log.contains("appendfsync") && log.contains("can be lost"),
        "{log}"
    );
    p.stop().await;
}

/// A Redis that loses everything under a running Maxine (here FLUSHALL; a
/// restart without persistence or a failover to an empty replica look the
/// same) gets no more changes: each is refused with 503 saying what
/// happened, undone, and nothing of it reaches Redis.
#[tokio::test]
async fn a_redis_that_lost_maxines_data_gets_no_changes_and_clients_are_told_why() {
    let redis = RedisServer::start();
    let s = TestServer::start_with(|c| c.store = redis.url()).await;
    let body = json!({"address": "10.0.0.7", "port": 80});
    s.register("payments", "web-1", body.clone()).await;
    assert!(matches!(
        redis.command(&["HLEN", "maxine:records"]),
        redis::Value::Int(1)
    ));

    redis.command(&["FLUSHALL"]);
    let url = |id: &str| format!("{}/v1/services/payments/instances/{id}", s.http_base());
    for attempt in 0..2 {
        let r = s.http.put(url("web-2")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 503, "attempt {attempt}");
        let answer: serde_json::Value = r.json().await.unwrap();
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains("Redis no longer holds this Maxine's data")
                && error.contains("flushed")
                && !error.contains("127.0.0.1"),
            "{error}"
        );
    }
    // A removal is refused the same way.
    let r = s.http.delete(url("web-1")).send().await.unwrap();
    assert_eq!(r.status(), 503);

    // Nothing of it was acknowledged: not in the registry, not in DNS, not
    // in Redis; what was acknowledged before is still served from memory.
    let listing = common::api::get(&s, "/v1/services/payments").await;
    assert_eq!(listing.status, 200);
    let ids: Vec<&str> = listing.body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["web-1"]);
    assert_eq!(
        common::lines(&s.ask("payments.maxine.", RecordType::A).await.answers),
        ["payments.maxine. 5 IN A 10.0.0.7"]
    );
    assert!(matches!(
        redis.command(&["HLEN", "maxine:records"]),
        redis::Value::Int(0)
    ));
    assert!(matches!(
        redis.command(&["EXISTS", "maxine:epoch"]),
        redis::Value::Int(0)
    ));

    // The way back (docs/operations.md): save what memory holds, stop,
    // restore into Redis, start again.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry.snap").display().to_string();
    let (ok, saved) =
        common::run_maxine(&["snapshot", "save", &file, "--api", &s.http_base()]).await;
    assert!(ok && saved.contains("saved 1 instance"), "{saved}");
    let config = s.config.clone();
    s.stop().await;
    // The restore records itself in the audit log of the data directory.
    let data = dir.path().join("data").display().to_string();
    let (ok, restored) = common::run_maxine(&[
        "snapshot",
        "restore",
        &file,
        "--store",
        &redis.url(),
        "--data-dir",
        &data,
    ])
    .await;
    assert!(ok, "{restored}");
    let s = TestServer::start_config(config, tempfile::tempdir().unwrap()).await;
    s.register("payments", "web-2", body).await;
    let listing = common::api::get(&s, "/v1/services/payments").await;
    assert_eq!(listing.body["instances"].as_array().unwrap().len(), 2);
}

#[test]
fn rediss_urls_reach_redis_over_tls_with_the_ca_given() {
    let redis = RedisServer::start_tls();
    let ca = std::fs::read(redis.ca()).unwrap();
    let mut store = RedisStore::open_with(&redis.url(), None, Some(&ca)).expect("rediss:// opens");
    store
        .commit(&WriteBatch {
            ops: vec![put(1, "over tls")],
            clear: false,
            last_index: 1,
        })
        .unwrap();
    let mut seen = Vec::new();
    store.load(&mut |i, v| seen.push((i, v.to_vec()))).unwrap();
    assert_eq!(seen, [(1, b"over tls".to_vec())]);
    // Without the CA the server's certificate is not trusted.
    let err = RedisStore::open_with(&redis.url(), None, None)
        .err()
        .expect("an unknown CA is refused")
        .to_string();
    assert!(err.contains("localhost"), "{err}");
}
