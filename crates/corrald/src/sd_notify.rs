//! systemd's readiness protocol (sd_notify(3)): one datagram such as `READY=1` to the unix
//! socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket). Own code, not
//! a crate: it is one `sendto` that std does; without `$NOTIFY_SOCKET` (not started by
//! systemd with `Type=notify`) it does nothing.

use std::ffi::{OsStr, OsString};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;

const ENV: &str = "NOTIFY_SOCKET";

/// The notification socket, taken out of the environment at start.
static SOCKET: OnceLock<Option<OsString>> = OnceLock::new();

/// Takes `$NOTIFY_SOCKET` out of corrald's environment and keeps it for [`notify`]. Call it
/// first in `main`, before any thread starts (changing the environment is not thread-safe).
///
/// Nothing corrald starts may inherit it: runc, seeing `NOTIFY_SOCKET`, proxies the
/// container's readiness and binds a socket under its state dir (which fails with EINVAL on
/// paths longer than a socket address takes, so every container start failed under systemd).
pub fn take_socket_from_env() {
    let socket = std::env::var_os(ENV);
    if socket.is_some() {
        std::env::remove_var(ENV);
    }
    let _ = SOCKET.set(socket);
}

/// Sends `state` (`READY=1`, `STOPPING=1`, ...) to systemd when it asked for notifications.
/// A failure is logged, never fatal: the service manager then times the start out itself.
pub fn notify(state: &str) {
    let Some(Some(socket)) = SOCKET.get() else {
        return;
    };
    match notify_to(socket, state) {
        Ok(()) => tracing::debug!(state, "notified systemd"),
        Err(e) => tracing::warn!(state, socket = ?socket, error = %e, "sd_notify failed"),
    }
}

/// Sends `state` to the notification socket `socket`.
fn notify_to(socket: &OsStr, state: &str) -> std::io::Result<()> {
    let address = match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(socket)?,
    };
    let sender = UnixDatagram::unbound()?;
    sender.send_to_addr(state.as_bytes(), &address)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ready_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn ready_reaches_an_abstract_socket() {
        let name = format!("corral-notify-test-{}", std::process::id());
        let receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(notify_to(dir.path().join("none").as_os_str(), "READY=1").is_err());
    }
}
