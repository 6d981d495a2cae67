//! The crate's error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use corral_error_kind::ErrorKind;
use nix::errno::Errno;

use crate::sysctl::SysctlNamespace;

/// Everything that can go wrong while building or tearing down a pod sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A system call on a path (mount, umount, ...) failed.
    #[error("{op} {}: {source}", path.display())]
    Syscall {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Errno,
    },

    /// A system call on a process (pidfd_open, kill, waitpid, ...) failed.
    #[error("{op} pid {pid}: {source}")]
    Process {
        op: &'static str,
        pid: i32,
        #[source]
        source: Errno,
    },

    /// A file under `/proc` could not be read or parsed.
    #[error("read {what}: {source}")]
    Proc {
        what: String,
        #[source]
        source: procfs::ProcError,
    },

    /// The pause launcher could not be started or read.
    #[error("run pause launcher {}: {source}", binary.display())]
    LaunchPause {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The pause launcher ran but reported a failure (or nothing usable).
    #[error("pause launcher {} failed: {message}", binary.display())]
    PauseFailed { binary: PathBuf, message: String },

    /// The pause process outlived SIGKILL.
    #[error("pause pid {pid} still runs {waited:?} after SIGKILL")]
    StopTimedOut { pid: i32, waited: Duration },

    /// A sysctl key is malformed.
    #[error("invalid sysctl key {key:?}: {reason}")]
    InvalidSysctlKey { key: String, reason: &'static str },

    /// A sysctl value cannot be written safely.
    #[error("invalid value for sysctl {key}: {reason}")]
    InvalidSysctlValue { key: String, reason: &'static str },

    /// The sysctl is global (or unknown): setting it would change the host.
    #[error("sysctl {key} is not namespaced (or unknown) and cannot be set per pod")]
    SysctlNotNamespaced { key: String },

    /// The sysctl belongs to a namespace the pod shares with the host.
    #[error(
        "sysctl {key} belongs to the {namespace} namespace, which this pod shares with the host"
    )]
    SysctlNeedsPrivateNamespace {
        key: String,
        namespace: SysctlNamespace,
    },

    /// A sandbox id that cannot be used as a file name.
    #[error("invalid sandbox id {id:?}: {reason}")]
    InvalidSandboxId { id: String, reason: &'static str },

    /// A value for the pod's files or mounts (hostname, DNS entry, IP, shm size) is unusable.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidValue {
        field: &'static str,
        value: String,
        reason: &'static str,
    },

    /// A mount could not be idmapped (EINVAL: its filesystem does not support idmapped mounts).
    #[error(
        "idmap the mount at {} for the pod's user namespace: {source}; the filesystem must \
         support idmapped mounts (ext4, xfs, btrfs, overlayfs on Linux 5.19+, tmpfs on 6.3+)",
        path.display()
    )]
    Idmap {
        path: PathBuf,
        #[source]
        source: Errno,
    },

    /// Something already exists at the path where a namespace is to be pinned.
    #[error("cannot pin a namespace at {}: the path already exists", path.display())]
    PinPathExists { path: PathBuf },
}

impl SandboxError {
    /// Whose fault the error is. A sysctl, sandbox id or pod file value that cannot be used is
    /// the caller's (`InvalidArgument`); a mount that cannot be idmapped because its
    /// filesystem lacks support is `FailedPrecondition`; a full disk is `ResourceExhausted`;
    /// the rest is the host's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SandboxError::InvalidSysctlKey { .. }
            | SandboxError::InvalidSysctlValue { .. }
            | SandboxError::SysctlNotNamespaced { .. }
            | SandboxError::SysctlNeedsPrivateNamespace { .. }
            | SandboxError::InvalidSandboxId { .. }
            | SandboxError::InvalidValue { .. } => ErrorKind::InvalidArgument,
            SandboxError::Idmap { .. } => ErrorKind::FailedPrecondition,
            SandboxError::Io { source, .. } | SandboxError::LaunchPause { source, .. } => {
                ErrorKind::of_io(source)
            }
            SandboxError::Syscall { source, .. } if is_full(*source) => {
                ErrorKind::ResourceExhausted
            }
            SandboxError::Syscall { .. }
            | SandboxError::Process { .. }
            | SandboxError::Proc { .. }
            | SandboxError::PauseFailed { .. }
            | SandboxError::StopTimedOut { .. }
            | SandboxError::PinPathExists { .. } => ErrorKind::Internal,
        }
    }
}

/// Whether a system call failed for want of space (a tmpfs mount over its memory limit).
fn is_full(errno: Errno) -> bool {
    matches!(errno, Errno::ENOSPC | Errno::EDQUOT | Errno::ENOMEM)
}

/// The crate's result type.
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// Builds the closure that turns an `io::Error` into [`SandboxError::Io`].
pub(crate) fn io_error(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> SandboxError {
    let path = path.into();
    move |source| SandboxError::Io { op, path, source }
}

/// Builds the closure that turns an `Errno` into [`SandboxError::Syscall`].
pub(crate) fn syscall_error(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(Errno) -> SandboxError {
    let path = path.into();
    move |source| SandboxError::Syscall { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_the_callers_and_failed_calls_the_hosts() {
        let dns = SandboxError::InvalidValue {
            field: "DNS server",
            value: "1.1.1.1 x".into(),
            reason: "contains whitespace or control characters",
        };
        assert_eq!(dns.kind(), ErrorKind::InvalidArgument);
        let full = io_error("write", "/x")(io::Error::from_raw_os_error(28));
        assert_eq!(full.kind(), ErrorKind::ResourceExhausted);
        let mount = syscall_error("mount", "/x")(Errno::EPERM);
        assert_eq!(mount.kind(), ErrorKind::Internal);
    }
}
