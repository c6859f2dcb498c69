//! Storage faults, injected with strace into a real `maxine serve`: a
//! failing fsync (EIO) and a full disk (ENOSPC on write). Requests that hit
//! the fault fail with 503 and a clear message and are rolled back, DNS
//! keeps answering, and once the fault is gone Maxine goes on; nothing
//! acknowledged is lost, also across a restart. (Debian: `apt-get install
//! strace`; `.ci/run` installs it.)

mod common;

use std::collections::BTreeMap;

use common::process::ServerProcess;
use serde_json::json;

enum Step {
    Put(&'static str, &'static str),
    Delete(&'static str),
}
use Step::{Delete, Put};

/// Operations in sequence; only those answered 200 are in the model. The
/// injected faults hit the middle, where removals and replacements
/// alternate, so that whichever of them the faults land on, both kinds fail.
const STEPS: &[Step] = &[
    Put("a", "10.0.0.1"),
    Put("b", "10.0.0.2"),
    Put("c", "10.0.0.3"),
    Put("d", "10.0.0.4"),
    Put("e", "10.0.0.5"),
    Delete("a"),
    Put("b", "10.0.1.2"),
    Delete("c"),
    Put("d", "10.0.1.4"),
    Delete("e"),
    Put("b", "10.0.2.2"),
    Delete("d"),
    Put("b", "10.0.3.2"),
    Put("f", "10.0.0.6"),
    Put("a", "10.0.1.1"),
    Put("g", "10.0.0.7"),
    Put("h", "10.0.0.8"),
    Put("i", "10.0.0.9"),
    Put("j", "10.0.0.10"),
    Put("k", "10.0.0.11"),
];

/// The API and DNS both hold exactly the model.
async fn assert_holds(p: &ServerProcess, model: &BTreeMap<String, String>, when: &str) {
    assert_eq!(&p.instances("pay").await, model, "{when}\n{}", p.log_text());
    for id in "abcdefghijk".chars() {
        let got = p.resolve_a(&format!("{id}.pay.dc1.maxine.")).await;
        let want: Vec<String> = model.get(&id.to_string()).cloned().into_iter().collect();
        assert_eq!(got, want, "{when}: DNS for {id}");
    }
}

/// Runs STEPS against Maxine under `strace` with `inject` and checks that the
/// fault was seen, that it cleared, and that state matches the
/// acknowledged operations, before and after a `kill -9` and a restart
/// without the fault.
async fn run(inject: &str, expect_in_message: &str) -> Vec<&'static str> {
    let dir = tempfile::tempdir().unwrap();
    // strace only injects into syscalls it traces.
    let syscall = inject["inject=".len()..].split(':').next().unwrap();
    let trace = format!("trace={syscall}");
    let strace = [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        &trace,
        "-e",
        inject,
    ];
    let p = ServerProcess::start(dir.path(), "faulty.log", &strace).await;
    let http = reqwest::Client::new();
    let mut model = BTreeMap::new();
    let mut outcomes = Vec::new();
    let mut failed = Vec::new();
    for step in STEPS {
        let (req, id) = match step {
            Put(id, ip) => (
                http.put(format!("{}/v1/services/pay/instances/{id}", p.base()))
                    .json(&json!({"address": ip, "port": 80, "ttl": "1h"})),
                *id,
            ),
            Delete(id) => (
                http.delete(format!("{}/v1/services/pay/instances/{id}", p.base())),
                *id,
            ),
        };
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        match status {
            200 => match step {
                Put(_, ip) => {
                    model.insert(id.to_string(), ip.to_string());
                }
                Delete(_) => {
                    model.remove(id);
                }
            },
            503 => {
                // A generic reason: the OS error goes to the log, not to clients.
                let msg = body["error"].as_str().unwrap_or_default();
                assert!(
                    msg.contains("the store is unavailable")
                        && msg.contains("could not be saved")
                        && !msg.contains(expect_in_message),
                    "{msg}"
                );
                // Rolled back at once, and DNS still answers from memory.
                assert_holds(&p, &model, "right after a failed write").await;
            }
            // Deleting what an earlier failed write never added.
            404 if matches!(step, Delete(_)) && !model.contains_key(id) => {}
            other => panic!("{other}: {body}"),
        }
        outcomes.push(status);
        if status == 503 {
            failed.push(match step {
                Put(id, _) if model.contains_key(*id) => "replacement",
                Put(..) => "addition",
                Delete(_) => "removal",
            });
        }
    }
    println!("outcomes: {outcomes:?}");
    let first_failure = outcomes.iter().position(|s| *s == 503);
    let first_failure = first_failure.expect("the injected fault made some request fail");
    assert!(
        first_failure >= 2,
        "the first writes went through: {outcomes:?}"
    );
    assert!(
        outcomes[outcomes.len() - 3..].iter().all(|s| *s == 200),
        "Maxine recovers once the fault is gone: {outcomes:?}"
    );
    assert_holds(&p, &model, "after the fault").await;
    // A crash now, not a clean stop: what was acknowledged is on disk already.
    p.kill9().await;

    let p = ServerProcess::start(dir.path(), "after.log", &[]).await;
    assert_holds(&p, &model, "after a restart").await;
    p.stop().await;
    failed
}

#[tokio::test]
async fn a_failing_fsync_fails_requests_cleanly_and_loses_nothing_acknowledged() {
    // The 6th to 14th fdatasync of a thread fail (strace counts per thread):
    // only the store writer gets there, whose first five are the first five
    // steps. After the first failure, the writer's own attempts (recording
    // the roll-back in the audit log, reopening the store in the
    // background) take some of the nine, so which later steps fail depends
    // on timing; the removal right after the five additions always does.
    let failed = run(
        "inject=fdatasync:error=EIO:when=6..14",
        "Input/output error",
    )
    .await;
    assert_eq!(failed.first(), Some(&"removal"), "{failed:?}");
    assert!(failed.contains(&"replacement"), "{failed:?}");
}

#[tokio::test]
async fn a_full_disk_fails_requests_cleanly_and_loses_nothing_acknowledged() {
    // Writes of the store writer fail with ENOSPC for a while, as on a full
    // disk that an operator then cleans up.
    run(
        "inject=pwrite64:error=ENOSPC:when=20..24",
        "No space left on device",
    )
    .await;
}
