//! Pinning a pod's network namespace to a file, so that it outlives the pause process (CNI teardown
//! needs it even when the pause has died).

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{io_error, syscall_error, Result, SandboxError};
use crate::namespace::{ns_file_of, ns_inode_of_path};

/// How many stacked mounts [`NetnsPin::unpin`] removes from one path at most.
const MAX_STACKED_MOUNTS: usize = 16;

/// A network namespace bind-mounted onto a file (as `ip netns` does), usable as the CNI netns path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsPin {
    path: PathBuf,
}

impl NetnsPin {
    /// Pins the network namespace of process `pid` at `pin_path`: creates the parent directory and
    /// an empty file, and bind-mounts `/proc/PID/ns/net` onto it. Fails if `pin_path` exists.
    pub fn pin(pid: i32, pin_path: &Path) -> Result<NetnsPin> {
        pin_namespace(pid, "net", pin_path)?;
        Ok(NetnsPin {
            path: pin_path.to_owned(),
        })
    }

    /// A pin made earlier (e.g. by a previous run of corrald) at `pin_path`.
    pub fn at(pin_path: impl Into<PathBuf>) -> NetnsPin {
        NetnsPin {
            path: pin_path.into(),
        }
    }

    /// The pinned file: the network namespace path to hand to CNI and to the OCI runtime.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The inode of the pinned namespace (equal to that of `/proc/PID/ns/net` of its members).
    pub fn inode(&self) -> Result<u64> {
        ns_inode_of_path(&self.path)
    }

    /// Lazily unmounts the pin at `pin_path` and removes the file. Succeeds when it is already gone
    /// or was never mounted.
    pub fn unpin(pin_path: &Path) -> Result<()> {
        unpin_namespace(pin_path)
    }
}

/// Pins namespace `ns` (`net`, `user`, ...) of process `pid` at `pin_path`: creates the parent
/// directory and an empty file, and bind-mounts `/proc/PID/ns/NS` onto it, so the namespace
/// lives as long as the mount. Fails if `pin_path` exists.
pub fn pin_namespace(pid: i32, ns: &str, pin_path: &Path) -> Result<()> {
    if let Some(parent) = pin_path.parent() {
        fs::create_dir_all(parent).map_err(io_error("create namespace pin directory", parent))?;
    }
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(pin_path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(SandboxError::PinPathExists {
                path: pin_path.to_owned(),
            })
        }
        Err(e) => return Err(io_error("create namespace pin file", pin_path)(e)),
    }
    let source = ns_file_of(pid, ns);
    if let Err(errno) = mount(
        Some(&source),
        pin_path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        let _ = fs::remove_file(pin_path);
        return Err(syscall_error("bind-mount namespace onto", pin_path)(errno));
    }
    tracing::debug!(pid, ns, path = %pin_path.display(), "pinned namespace");
    Ok(())
}

/// Lazily unmounts a namespace pin and removes the file. Succeeds when it is already gone or was
/// never mounted.
pub fn unpin_namespace(pin_path: &Path) -> Result<()> {
    for _ in 0..MAX_STACKED_MOUNTS {
        match umount2(pin_path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            // EINVAL: not a mount point (any more); ENOENT: no such file.
            Err(Errno::EINVAL | Errno::ENOENT) => break,
            Err(errno) => return Err(syscall_error("unmount namespace pin", pin_path)(errno)),
        }
    }
    match fs::remove_file(pin_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("remove namespace pin", pin_path)(e)),
    }
    tracing::debug!(path = %pin_path.display(), "unpinned namespace");
    Ok(())
}

/// Connects to `localhost:port` (IPv4, then IPv6) inside the network namespace pinned at
/// `netns` (`None`: the host's). The connection is made by a short-lived thread that enters the
/// namespace, connects and ends, so the calling thread's namespace is never changed; a socket
/// keeps the namespace it was made in. Blocking.
pub fn connect_localhost_in(netns: Option<&Path>, port: u16) -> std::io::Result<TcpStream> {
    let netns = netns.map(Path::to_path_buf);
    std::thread::Builder::new()
        .name("netns-connect".into())
        .spawn(move || {
            if let Some(path) = netns {
                let file = fs::File::open(&path)?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
            }
            TcpStream::connect(("127.0.0.1", port)).or_else(|_| TcpStream::connect(("::1", port)))
        })?
        .join()
        .map_err(|_| std::io::Error::other("the netns-connect thread panicked"))?
}

#[cfg(test)]
mod connect_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn connects_to_a_host_port_without_a_namespace() {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stream = connect_localhost_in(None, port).unwrap();
        assert_eq!(stream.peer_addr().unwrap().port(), port);
        let missing = Path::new("/nonexistent/netns");
        assert!(connect_localhost_in(Some(missing), port).is_err());
    }
}
