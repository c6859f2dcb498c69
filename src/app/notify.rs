//! systemd's readiness protocol (sd_notify(3)): under `Type=notify` the
//! service manager names a datagram socket in `NOTIFY_SOCKET`, and Maxine
//! sends `READY=1` once it serves and `STOPPING=1` when shutdown begins.
//!
//! The protocol is one datagram of `KEY=value` lines to a Unix socket, a
//! path or, written `@name`, a name in the abstract namespace; a few lines
//! here instead of a library.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Where readiness is reported; without a socket nothing is sent.
/// Cloning copies the socket's name.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    socket: Option<OsString>,
}

impl Notifier {
    /// From the value of `NOTIFY_SOCKET`: `None` or empty when Maxine was
    /// not started by systemd with `Type=notify`.
    pub fn new(socket: Option<OsString>) -> Self {
        Self {
            socket: socket.filter(|s| !s.is_empty()),
        }
    }

    /// Sends `state` (e.g. `READY=1`). A failure is logged, never fatal:
    /// the service manager then times the start out and says why.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.send(state) {
            tracing::warn!(
                socket = ?self.socket, error = %e, state,
                "cannot notify the service manager (NOTIFY_SOCKET)"
            );
        }
    }

    fn send(&self, state: &str) -> std::io::Result<()> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        let sock = UnixDatagram::unbound()?;
        match socket.as_bytes().strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)?;
            }
            None => {
                sock.send_to(state.as_bytes(), Path::new(socket))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_arrive_as_one_datagram_on_a_path_or_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("maxine-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier::new(Some(path.clone().into())).notify("READY=1\nSTATUS=serving");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
        std::fs::remove_dir_all(&dir).unwrap();

        use std::os::linux::net::SocketAddrExt;
        let name = format!("maxine-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::new(Some(format!("@{name}").into())).notify("STOPPING=1");
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        // Not under systemd: nothing to do, nothing fails.
        Notifier::new(None).notify("READY=1");
        Notifier::new(Some("".into())).notify("READY=1");
    }
}
