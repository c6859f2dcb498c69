//! A real full disk: Maxine's data directory on a small tmpfs that the
//! registry fills up. Requests that no longer fit fail with 503 and a clear
//! message and are rolled back, DNS keeps answering from memory, and once
//! space is freed Maxine goes on; nothing acknowledged is lost, also across
//! a `kill -9` and a restart. (The fault_injection tests inject the same
//! errors with strace at exact points; this one lets the kernel run out.)
//!
//! Mounting needs root (CAP_SYS_ADMIN), which CI has; where the mount is
//! refused the test says so and does nothing else.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::process::ServerProcess;
use serde_json::json;

/// A tmpfs mounted on a fresh directory; unmounted (lazily) when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` when this machine does not let us mount.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `path` until the file system is full; returns its size.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5Au8; 64 * 1024];
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    written
}

/// A registration of about 4 KB (metadata), so that a few hundred of them
/// need new pages in the store's file.
fn registration(n: usize) -> serde_json::Value {
    let metadata: serde_json::Map<String, serde_json::Value> = (0..8)
        .map(|k| {
            (
                format!("k{k}"),
                json!(format!("{n:08}-{k}-{}", "x".repeat(480))),
            )
        })
        .collect();
    json!({
        "address": format!("10.1.{}.{}", n / 256, n % 256),
        "port": 80,
        "ttl": "1h",
        "metadata": metadata,
    })
}

/// The API holds exactly the model, and DNS answers the acknowledged
/// instances and none of the failed ones.
async fn assert_holds(
    p: &ServerProcess,
    model: &BTreeMap<String, String>,
    failed: &[String],
    when: &str,
) {
    assert_eq!(&p.instances("big").await, model, "{when}\n{}", p.log_text());
    for (id, ip) in model.iter().step_by(37).chain(model.iter().last()) {
        let got = p.resolve_a(&format!("{id}.big.dc1.maxine.")).await;
        assert_eq!(got, vec![ip.clone()], "{when}: DNS for {id}");
    }
    for id in failed {
        let got = p.resolve_a(&format!("{id}.big.dc1.maxine.")).await;
        assert!(
            got.is_empty(),
            "{when}: {id} was refused but resolves: {got:?}"
        );
    }
}

#[tokio::test]
async fn a_full_tmpfs_fails_requests_cleanly_and_loses_nothing_acknowledged() {
    let Some(fs) = Tmpfs::mount("24m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the strace tests cover ENOSPC");
        return;
    };
    let data: PathBuf = fs.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let p = ServerProcess::start(&data, "maxine.log", &[]).await;
    let http = reqwest::Client::new();
    let put = |n: usize| {
        http.put(format!("{}/v1/services/big/instances/i{n:05}", p.base()))
            .json(&registration(n))
            .send()
    };
    let mut model = BTreeMap::new();
    let mut failed = Vec::new();
    let mut n = 0;
    // Some registrations while there is room.
    for _ in 0..50 {
        let r = put(n).await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        model.insert(format!("i{n:05}"), format!("10.1.{}.{}", n / 256, n % 256));
        n += 1;
    }
    // Then the disk fills up: everything else goes to a filler file, and
    // registrations go on until the store cannot grow.
    let filler = fs.path().join("filler");
    assert!(fill(&filler) > 0, "the tmpfs had room left");
    let mut refused = 0;
    while refused < 3 {
        assert!(n < 5_000, "the store never ran out of room");
        let r = put(n)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        let id = format!("i{n:05}");
        match status {
            200 => {
                model.insert(id, format!("10.1.{}.{}", n / 256, n % 256));
            }
            503 => {
                // A generic reason: the OS error goes to the log, not to clients.
                let msg = body["error"].as_str().unwrap_or_default();
                assert!(
                    msg.contains("the store is unavailable")
                        && msg.contains("could not be saved")
                        && !msg.contains("No space left on device"),
                    "{msg}"
                );
                failed.push(id);
                refused += 1;
                // Rolled back at once, and DNS still answers from memory.
                assert_holds(&p, &model, &failed, "right after a refused write").await;
            }
            other => panic!("{other}: {body}"),
        }
        n += 1;
    }
    // The operator frees space: registrations are acknowledged again.
    std::fs::remove_file(&filler).unwrap();
    for _ in 0..20 {
        let r = put(n).await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "after space was freed: {}",
            r.text().await.unwrap()
        );
        model.insert(format!("i{n:05}"), format!("10.1.{}.{}", n / 256, n % 256));
        n += 1;
    }
    assert_holds(&p, &model, &failed, "after space was freed").await;
    println!(
        "{} acknowledged, {} refused while the tmpfs was full",
        model.len(),
        failed.len()
    );
    // A crash now: what was acknowledged is on disk already.
    p.kill9().await;
    let p = ServerProcess::start(&data, "after.log", &[]).await;
    assert_holds(&p, &model, &failed, "after kill -9 and a restart").await;
    p.stop().await;
}
