//! Crash safety of the default (file) store, against a real `maxine serve`
//! process: concurrent registrations and deregistrations, `kill -9` at a
//! random moment, several rounds, then every acknowledged change is there
//! (through the API and DNS) and nothing that was never sent appears.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::ServerProcess;
use rand::{Rng, SeedableRng};
use serde_json::json;

const SERVICES: usize = 4;
const CLIENTS: usize = 12;
const ROUNDS: usize = 4;

/// What the clients did, as far as they know.
#[derive(Default)]
struct Ledger {
    /// Every registration sent: id -> address.
    sent: BTreeMap<String, String>,
    /// Registrations answered 200.
    acked: BTreeSet<String>,
    /// Deregistrations sent but not answered (either outcome is fine).
    unsure_delete: BTreeSet<String>,
    /// Deregistrations answered 200.
    deleted: BTreeSet<String>,
}

fn service_of(id: &str) -> String {
    let n: usize = id.rsplit('-').next().unwrap().parse().unwrap();
    format!("svc{}", n % SERVICES)
}

/// One client: registers new ids until the server goes away; every fourth
/// acknowledged one it deregisters again.
async fn client(base: String, round: usize, c: usize, ledger: Arc<Mutex<Ledger>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for n in 0.. {
        let id = format!("r{round}-c{c}-{n}");
        let address = format!("10.{round}.{c}.{}", n % 250 + 1);
        let service = service_of(&id);
        ledger
            .lock()
            .unwrap()
            .sent
            .insert(id.clone(), address.clone());
        let r = http
            .put(format!("{base}/v1/services/{service}/instances/{id}"))
            .json(&json!({"address": address, "port": 80, "ttl": "1h"}))
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 200 => {
                ledger.lock().unwrap().acked.insert(id.clone());
            }
            Ok(r) => panic!("registration {id} answered {}", r.status()),
            Err(_) => return, // killed
        }
        if n % 4 == 3 {
            ledger.lock().unwrap().unsure_delete.insert(id.clone());
            let r = http
                .delete(format!("{base}/v1/services/{service}/instances/{id}"))
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 200 => {
                    let mut l = ledger.lock().unwrap();
                    l.unsure_delete.remove(&id);
                    l.deleted.insert(id);
                }
                Ok(r) => panic!("deregistration {id} answered {}", r.status()),
                Err(_) => return,
            }
        }
    }
}

/// Every instance the load's services have, through the API: id -> address.
async fn listed(p: &ServerProcess) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for s in 0..SERVICES {
        all.extend(p.instances(&format!("svc{s}")).await);
    }
    all
}

fn check(ledger: &Ledger, now: &BTreeMap<String, String>, log: &str) {
    for (id, addr) in now {
        assert_eq!(
            ledger.sent.get(id),
            Some(addr),
            "{id} is registered but was never sent (or with another address)\n{log}"
        );
        assert!(
            !ledger.deleted.contains(id),
            "{id} was deregistered (acknowledged) but is back\n{log}"
        );
    }
    for id in &ledger.acked {
        if ledger.deleted.contains(id) || ledger.unsure_delete.contains(id) {
            continue;
        }
        assert!(
            now.contains_key(id),
            "acknowledged registration {id} was lost\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_change_survives_kill_9_in_every_round() {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for round in 0..ROUNDS {
        let p = ServerProcess::start(dir.path(), &format!("round-{round}.log"), &[]).await;
        {
            // What earlier rounds left must be there before new load starts.
            let now = listed(&p).await;
            check(&ledger.lock().unwrap(), &now, &p.log_text());
        }
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|c| tokio::spawn(client(p.base(), round, c, ledger.clone())))
            .collect();
        // Some load acknowledged in every round, however slow the disk; then
        // the kill lands at a random point.
        let before = ledger.lock().unwrap().acked.len();
        assert_eventually!(
            ledger.lock().unwrap().acked.len() >= before + 30,
            "round {round}: registrations are acknowledged"
        );
        // Not a wait for a condition: this sleep is the random kill point
        // the test is about (the seed above replays it).
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..600))).await;
        p.kill9().await;
        for t in tasks {
            t.await.expect("client");
        }
    }
    let p = ServerProcess::start(dir.path(), "final.log", &[]).await;
    let now = listed(&p).await;
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    check(&ledger, &now, &p.log_text());
    assert!(
        ledger.acked.len() > 100,
        "the load was too small to mean much: {} acknowledged",
        ledger.acked.len()
    );
    // Through DNS as well: each instance's own name answers its address.
    for (id, addr) in &now {
        let name = format!("{id}.{}.dc1.maxine.", service_of(id));
        assert_eq!(
            p.resolve_a(&name).await,
            std::slice::from_ref(addr),
            "{name}"
        );
    }
    println!(
        "sent {}, acknowledged {}, deregistered {}, present {}",
        ledger.sent.len(),
        ledger.acked.len(),
        ledger.deleted.len(),
        now.len()
    );
    p.stop().await;
}

/// A commit torn by a power loss: its commit slot does not match its
/// checksum. Start-up drops it, keeps the commits before it, and says so.
#[tokio::test]
async fn a_torn_last_commit_is_dropped_and_start_up_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let p = ServerProcess::start(dir.path(), "before.log", &[]).await;
    let http = reqwest::Client::new();
    for id in ["a", "b"] {
        let r = http
            .put(format!("{}/v1/services/pay/instances/{id}", p.base()))
            .json(&json!({"address": "10.9.0.1", "port": 80, "ttl": "1h"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    p.kill9().await;
    // redb's header: god byte at offset 9 (bit 0: which commit slot is the
    // primary), then two 128-byte commit slots from offset 64. Damage the
    // primary slot's root checksum, as a write torn in the middle would.
    let path = dir.path().join(maxine::store::FileStore::FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    let slot = (bytes[9] & 1) as usize;
    bytes[64 + 128 * slot + 16] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let p = ServerProcess::start(dir.path(), "after.log", &[]).await;
    let now = p.instances("pay").await;
    let ids: Vec<_> = now.keys().cloned().collect();
    assert_eq!(ids, ["a"], "the torn commit (b) is dropped, a is kept");
    assert!(
        p.log_text().contains("not closed cleanly"),
        "the recovery is reported:\n{}",
        p.log_text()
    );
    p.stop().await;
}
