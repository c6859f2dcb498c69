//! Unmodified applications: glibc's getaddrinfo (through `getent ahosts`)
//! resolves a registered service. The system resolver only speaks to port
//! 53, so the test runs Maxine on 127.0.0.1:53 inside a network namespace
//! of its own, whose /etc/resolv.conf (`ip netns exec` mounts
//! /etc/netns/NAME/resolv.conf over it) points at Maxine. Needs root and
//! iproute2, as CI has.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::netns::{Netns, is_root};

/// The server inside the namespace, killed before the namespace goes.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn getaddrinfo_resolves_a_registered_service() {
    if !is_root() {
        eprintln!("SKIPPED: getaddrinfo test needs root for a network namespace");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_maxine");
    let ns = Netns::create("maxine-gai");
    ns.resolv_conf("nameserver 127.0.0.1\noptions attempts:2 timeout:2\n");

    let data = tempfile::tempdir().unwrap();
    let _server = Server(
        ns.exec(&[
            bin,
            "serve",
            "--dns-addr",
            "127.0.0.1:53",
            "--http-addr",
            "127.0.0.1:8080",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let start = Instant::now();
    loop {
        let out = ns
            .exec(&[
                bin,
                "register",
                "payments",
                "web-1",
                "--address",
                "10.0.0.7",
                "--port",
                "8080",
            ])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server did not come up: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = ns
        .exec(&[
            bin,
            "register",
            "payments",
            "web-2",
            "--address",
            "fd00::2",
            "--port",
            "8080",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // getaddrinfo(3), through getent, as any application would call it.
    let out = ns
        .exec(&["getent", "ahosts", "payments.maxine"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "getent failed: {out:?}");
    assert!(
        text.contains("10.0.0.7") && text.contains("fd00::2"),
        "{text}"
    );
    // (ahostsv4 would use AI_ADDRCONFIG, which finds no non-loopback address here.)
    let out = ns
        .exec(&["getent", "ahosts", "web-1.payments.dc1.maxine"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10.0.0.7"),
        "{out:?}"
    );
    // An unknown name fails (exit code 2: not found).
    let out = ns
        .exec(&["getent", "ahosts", "nothing.maxine"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
