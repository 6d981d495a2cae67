//! The crate's error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use corral_error_kind::ErrorKind;
use nix::errno::Errno;

/// Everything that can go wrong while driving an OCI runtime or a container's shim.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime binary could not be started (or its output not read).
    #[error("run {} {command} (container {id}): {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        command: &'static str,
        id: String,
        #[source]
        source: io::Error,
    },

    /// The runtime ran and failed; `message` is what it said (its stderr or its error log).
    #[error("{} {command} {id} failed: {message}", binary.display())]
    Command {
        binary: PathBuf,
        command: &'static str,
        id: String,
        message: String,
    },

    /// The runtime refused the container's process as the request configured it (a command
    /// not in the image, a working directory that cannot be entered): the caller's mistake,
    /// named by the CRI `field` (see `refusal.rs`).
    #[error("{field}: {reason} ({} {command} {id}: {message})", binary.display())]
    Refused {
        binary: PathBuf,
        command: &'static str,
        id: String,
        field: &'static str,
        reason: &'static str,
        message: String,
    },

    /// The runtime cannot run containers on this host at all.
    #[error("{runtime} cannot run on this host: {message}")]
    Unusable { runtime: String, message: String },

    /// The runtime's output could not be understood.
    #[error("{} {command} {id}: cannot parse its output: {message}", binary.display())]
    Output {
        binary: PathBuf,
        command: &'static str,
        id: String,
        message: String,
    },

    /// The runtime did not finish in time (and was killed).
    #[error("{} {command} {id} did not finish within {waited:?}", binary.display())]
    Timeout {
        binary: PathBuf,
        command: &'static str,
        id: String,
        waited: Duration,
    },

    /// `exec` needs the caller to be a child subreaper: the runtime runs the process detached, and
    /// it is re-parented to the caller, which waits for it.
    #[error(
        "{command} needs the calling process to be a child subreaper \
         (prctl PR_SET_CHILD_SUBREAPER) to wait for the process it starts"
    )]
    NotSubreaper { command: &'static str },

    /// The shim could not be started.
    #[error("run shim {} for container {id}: {source}", binary.display())]
    LaunchShim {
        binary: PathBuf,
        id: String,
        #[source]
        source: io::Error,
    },

    /// The shim reported that creating the container failed (or reported nothing usable).
    #[error("shim for container {id} failed: {message}")]
    ShimFailed { id: String, message: String },

    /// The shim did not answer a control request (or refused it).
    #[error("shim control request {request:?} in {}: {message}", state_dir.display())]
    Control {
        state_dir: PathBuf,
        request: &'static str,
        message: String,
    },

    /// An attach stream broke or the shim sent something that is not a frame.
    #[error("attach to {}: {message}", state_dir.display())]
    Attach { state_dir: PathBuf, message: String },

    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A file exists but does not hold what it should.
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },

    /// A system call failed.
    #[error("{op}: {source}")]
    Syscall {
        op: &'static str,
        #[source]
        source: Errno,
    },

    /// A value could not be encoded as JSON.
    #[error("encode {what} as JSON: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl RuntimeError {
    /// Whose fault the error is. The runtime's refusal of the request's process and a runtime
    /// that cannot run on this host are `FailedPrecondition`; one that did not answer in time is `Unavailable`; a full disk is
    /// `ResourceExhausted`; everything else is the host's (`Internal`): requests are checked
    /// before they reach the runtime, and only the refusals `refusal.rs` recognises are taken
    /// for the caller's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::Unusable { .. } | RuntimeError::Refused { .. } => {
                ErrorKind::FailedPrecondition
            }
            RuntimeError::Timeout { .. } => ErrorKind::Unavailable,
            RuntimeError::Spawn { source, .. }
            | RuntimeError::LaunchShim { source, .. }
            | RuntimeError::Io { source, .. } => ErrorKind::of_io(source),
            RuntimeError::Syscall {
                source: Errno::ENOSPC | Errno::EDQUOT,
                ..
            } => ErrorKind::ResourceExhausted,
            RuntimeError::Command { .. }
            | RuntimeError::Output { .. }
            | RuntimeError::NotSubreaper { .. }
            | RuntimeError::ShimFailed { .. }
            | RuntimeError::Control { .. }
            | RuntimeError::Attach { .. }
            | RuntimeError::Corrupt { .. }
            | RuntimeError::Syscall { .. }
            | RuntimeError::Encode { .. } => ErrorKind::Internal,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Builds the closure that turns an `io::Error` into [`RuntimeError::Io`].
pub(crate) fn io_error(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> RuntimeError {
    let path = path.into();
    move |source| RuntimeError::Io { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_disk_an_unusable_or_a_slow_runtime_is_not_internal() {
        let full = io_error("write", "/x")(io::Error::from_raw_os_error(28));
        assert_eq!(full.kind(), ErrorKind::ResourceExhausted);
        let unusable = RuntimeError::Unusable {
            runtime: "crun".into(),
            message: "no cgroup v2".into(),
        };
        assert_eq!(unusable.kind(), ErrorKind::FailedPrecondition);
        let failed = RuntimeError::ShimFailed {
            id: "c".into(),
            message: "exit 1".into(),
        };
        assert_eq!(failed.kind(), ErrorKind::Internal);
    }
}
