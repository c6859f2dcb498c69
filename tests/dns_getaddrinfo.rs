//! Unmodified applications: glibc's getaddrinfo (through `getent ahosts`)
//! resolves a registered service. The system resolver only speaks to port
//! 53, so the test runs Maxine on 127.0.0.1:53 inside a network namespace
//! of its own, whose /etc/resolv.conf (`ip netns exec` mounts
//! /etc/netns/NAME/resolv.conf over it) points at Maxine. Needs root and
//! iproute2, as CI has.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Netns {
    name: String,
    server: Option<Child>,
}

impl Netns {
    fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

#[test]
fn getaddrinfo_resolves_a_registered_service() {
    if !is_root() {
        eprintln!("SKIPPED: getaddrinfo test needs root for a network namespace");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_maxine");
    let mut ns = Netns {
        name: format!("maxine-gai-{}", std::process::id()),
        server: None,
    };
    let ok = Command::new("ip")
        .args(["netns", "add", &ns.name])
        .status()
        .expect("ip is installed");
    assert!(ok.success(), "ip netns add failed");
    assert!(
        ns.exec(&["ip", "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success()
    );
    std::fs::create_dir_all(format!("/etc/netns/{}", ns.name)).unwrap();
    std::fs::write(
        format!("/etc/netns/{}/resolv.conf", ns.name),
        "nameserver 127.0.0.1\noptions attempts:2 timeout:2\n",
    )
    .unwrap();

    let data = tempfile::tempdir().unwrap();
    ns.server = Some(
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
