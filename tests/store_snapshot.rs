//! Backups: `GET /v1/snapshot`, `maxine snapshot save|restore`, and what a
//! restore refuses (a damaged file, a store in use). The round trip itself
//! runs for every backend in tests/store_battery.rs.

mod common;

use common::TestServer;
use serde_json::json;

async fn maxine(args: &[&str]) -> (bool, String) {
    common::run_maxine(args).await
}

#[tokio::test]
async fn the_snapshot_route_sends_a_verifiable_file_at_the_current_index() {
    let s = TestServer::start().await;
    s.register("payments", "a", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let r = s
        .http
        .get(format!("{}/v1/snapshot", s.http_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let index: u64 = r.headers()["x-maxine-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(index, s.registry.index());
    let bytes = r.bytes().await.unwrap();
    let snap = maxine::store::snapshot::decode(&bytes).unwrap();
    assert_eq!((snap.last_index, snap.records.len()), (index, 1));
}

#[tokio::test]
async fn a_damaged_snapshot_is_refused_and_changes_nothing() {
    let s = TestServer::start().await;
    s.register("payments", "a", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.snapshot");
    let f = file.to_str().unwrap();
    let (ok, out) = maxine(&["snapshot", "save", f, "--api", &s.http_base()]).await;
    assert!(ok, "{out}");
    let data_dir = s.data_dir().display().to_string();

    // Restoring into the store of a running server is refused.
    let (ok, out) = maxine(&["snapshot", "restore", f, "--data-dir", &data_dir]).await;
    assert!(!ok && out.contains("in use by another process"), "{out}");

    let mut s = s.restart().await;
    s.register("payments", "b", json!({"address": "10.0.0.2", "port": 80}))
        .await;
    let before = s.registry.index();
    let (config, kept) = s.stop_keeping_data().await;

    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let (ok, out) = maxine(&["snapshot", "restore", f, "--data-dir", &data_dir]).await;
    assert!(!ok && out.contains("checksum mismatch"), "{out}");
    std::fs::write(&file, &bytes[..mid]).unwrap();
    let (ok, out) = maxine(&["snapshot", "restore", f, "--data-dir", &data_dir]).await;
    assert!(!ok && out.contains("cannot be restored"), "{out}");

    s = TestServer::start_config(config, kept).await;
    assert_eq!(s.registry.index(), before, "the store was not touched");
    let snap = s.registry.snapshot().1;
    let ids: Vec<_> = snap
        .iter()
        .flat_map(|svc| {
            svc.instances
                .keys()
                .map(|id| format!("{}/{id}", svc.key.service))
        })
        .collect();
    assert_eq!(
        ids,
        ["payments/a", "payments/b"],
        "the store was not touched"
    );
    s.stop().await;
}

/// `snapshot save` and `restore` draw progress bars on a terminal (here a
/// pseudo-terminal of `script(1)`) and nothing but their result line when
/// stderr is not one.
#[tokio::test]
async fn snapshot_commands_show_progress_on_a_terminal_only() {
    let s = TestServer::start().await;
    for i in 0..20 {
        s.register(
            "payments",
            &format!("p{i}"),
            json!({"address": "10.0.0.1", "port": 80}),
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.snapshot");
    let f = file.to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_maxine");
    let in_terminal = |command: String| async move {
        let out = tokio::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("script(1), of util-linux");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let shown = in_terminal(format!("{bin} snapshot save {f} --api {}", s.http_base())).await;
    assert!(shown.contains("downloading"), "{shown}");
    assert!(shown.contains("saved 20 instances"), "{shown}");
    let (ok, plain) = maxine(&["snapshot", "save", f, "--api", &s.http_base()]).await;
    assert!(ok, "{plain}");
    assert!(
        !plain.contains("downloading") && !plain.contains('\x1b'),
        "{plain}"
    );
    assert!(plain.contains("saved 20 instances"), "{plain}");

    let target = dir.path().join("restored");
    let shown = in_terminal(format!(
        "{bin} snapshot restore {f} --data-dir {}",
        target.display()
    ))
    .await;
    assert!(shown.contains("checking"), "{shown}");
    assert!(shown.contains("restored 20 instances"), "{shown}");
    let target = dir.path().join("restored-plain");
    let (ok, plain) = maxine(&[
        "snapshot",
        "restore",
        f,
        "--data-dir",
        target.to_str().unwrap(),
    ])
    .await;
    assert!(ok, "{plain}");
    assert!(
        !plain.contains("checking") && !plain.contains('\x1b'),
        "{plain}"
    );
}
