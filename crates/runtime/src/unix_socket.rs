//! Unix socket paths of any length.
//!
//! A `sockaddr_un` holds at most 107 bytes of path, and state directories under a deep `--state`
//! (as in tests) can be longer. Such a socket is reached through `/proc/<pid>/fd/<fd>/<name>`,
//! where `<fd>` is an open descriptor of its directory: short, and valid for child processes of
//! this one too (as long as the descriptor stays open).

use std::fs::{File, OpenOptions};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// The longest path that fits in `sockaddr_un` (108 bytes with the terminating NUL).
const SUN_PATH_MAX: usize = 107;

/// A path to a socket that fits in a `sockaddr_un`; keeps the directory open when it needs to.
#[derive(Debug)]
pub struct SocketPath {
    path: PathBuf,
    _dir: Option<File>,
}

impl SocketPath {
    /// `socket` itself when it is short enough, else a `/proc/<pid>/fd/...` path to it.
    pub fn new(socket: &Path) -> io::Result<SocketPath> {
        if socket.as_os_str().len() <= SUN_PATH_MAX {
            return Ok(SocketPath {
                path: socket.to_owned(),
                _dir: None,
            });
        }
        let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("socket path {} has no directory", socket.display()),
            ));
        };
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir)?;
        let path = Path::new(&format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            dir.as_raw_fd()
        ))
        .join(name);
        if path.as_os_str().len() > SUN_PATH_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("socket name {name:?} is too long"),
            ));
        }
        Ok(SocketPath {
            path,
            _dir: Some(dir),
        })
    }

    /// The path to use in `bind` or `connect`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Receives one file descriptor sent with SCM_RIGHTS (as a runtime sends a terminal's master to
/// its `--console-socket`); it is close-on-exec. Waits up to ten seconds for it.
pub fn receive_fd(stream: &UnixStream) -> io::Result<OwnedFd> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut name = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!(RawFd);
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut received = None;
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just installed this descriptor in our table for us; owning
                // it closes it (and any extra one) when dropped.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if received.is_none() {
                    received = Some(owned);
                }
            }
        }
    }
    received.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no descriptor was sent"))
}

/// Binds a listening socket at `path` (whatever its length).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    UnixListener::bind(SocketPath::new(path)?.path())
}

/// Connects to the socket at `path` (whatever its length).
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(SocketPath::new(path)?.path())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn sockets_in_deep_directories_work() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let socket = deep.join("attach.sock");
        assert!(socket.as_os_str().len() > SUN_PATH_MAX);
        let listener = bind(&socket).unwrap();
        assert!(socket.exists(), "the socket is made in the real directory");
        let mut client = connect(&socket).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"ping").unwrap();
        let mut buffer = [0u8; 4];
        server.read_exact(&mut buffer).unwrap();
        assert_eq!(&buffer, b"ping");
    }

    #[test]
    fn descriptors_pass_over_a_socket() {
        use nix::sys::socket::{sendmsg, ControlMessage};
        use std::io::IoSlice;
        let (sender, receiver) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        let fds = [file.as_raw_fd()];
        sendmsg::<()>(
            sender.as_raw_fd(),
            &[IoSlice::new(b"/dev/ptmx")],
            &[ControlMessage::ScmRights(&fds)],
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .unwrap();
        let received = receive_fd(&receiver).unwrap();
        let mut received = File::from(received);
        received.write_all(b"through the socket").unwrap();
        let mut file = file;
        use std::io::Seek;
        file.rewind().unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "through the socket");
        drop(sender);
        assert!(receive_fd(&receiver).is_err(), "nothing more was sent");
    }

    #[test]
    fn short_paths_are_used_as_they_are() {
        let path = Path::new("/run/x.sock");
        assert_eq!(SocketPath::new(path).unwrap().path(), path);
    }
}
