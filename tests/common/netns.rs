//! A network namespace of a test's own, for programs that only ask the
//! system resolver (which speaks to port 53 of the `nameserver` in
//! /etc/resolv.conf): Maxine listens on 127.0.0.1:53 inside it, and the
//! program runs under `ip netns exec`, which also gives it a mount namespace
//! where /etc/netns/NAME/resolv.conf is mounted over /etc/resolv.conf.
//! Nothing outside the namespace is touched but that one directory, removed
//! with the namespace. Needs root and iproute2.

use std::process::Command;

/// True when the tests run as root (they may create network namespaces).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A network namespace with loopback up; deleted, with its
/// /etc/netns/NAME directory, when dropped. Drop the processes running in
/// it first (declare their guards after this one).
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `<prefix>-<pid>` and brings its loopback up.
    pub fn create(prefix: &str) -> Self {
        let ns = Self {
            name: format!("{prefix}-{}", std::process::id()),
        };
        let ok = Command::new("ip")
            .args(["netns", "add", &ns.name])
            .status()
            .expect("ip is installed (apt-get install iproute2)");
        assert!(ok.success(), "ip netns add {} failed", ns.name);
        assert!(
            ns.exec(&["ip", "link", "set", "lo", "up"])
                .status()
                .unwrap()
                .success(),
            "loopback of {} did not come up",
            ns.name
        );
        ns
    }

    /// The resolv.conf that programs run with [`Netns::exec`] see.
    pub fn resolv_conf(&self, text: &str) {
        let dir = format!("/etc/netns/{}", self.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/resolv.conf"), text).unwrap();
    }

    /// A command that runs `args` inside the namespace (`ip netns exec`).
    pub fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Moves the calling thread into the namespace: every socket it opens
    /// from now on, and every thread or process it starts, is in there.
    /// Only that thread moves, so call it on a thread of the test's own
    /// (`std::thread::spawn`), never on one that may run another test.
    pub fn enter_this_thread(&self) {
        let f = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}
