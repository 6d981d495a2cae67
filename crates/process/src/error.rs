//! The crate's error type. Every failure here is the host's (a system call or `/proc` refused
//! us): a pid that names no process is not an error but `Ok(None)` or `Ok(false)`. The one
//! caller error, a bad command line, is [`crate::ArgError`].

use std::io;

use nix::errno::Errno;

/// A system call on a process, or `/proc`, failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A system call on a process (pidfd_open, pidfd_send_signal, poll, waitid) failed.
    #[error("{op} pid {pid}: {source}")]
    Syscall {
        op: &'static str,
        pid: i32,
        #[source]
        source: Errno,
    },

    /// `/proc/PID/stat` could not be read or did not have the expected fields.
    #[error("read /proc/{pid}/stat: {source}")]
    Stat {
        pid: i32,
        #[source]
        source: io::Error,
    },

    /// A step of setting up a detached process (close_range, dup2, opening a file) failed.
    #[error("{op}: {source}")]
    Setup {
        op: String,
        #[source]
        source: io::Error,
    },
}

impl ProcessError {
    /// The operating system's error number, when there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            ProcessError::Syscall { source, .. } => Some(*source),
            ProcessError::Stat { source, .. } | ProcessError::Setup { source, .. } => {
                source.raw_os_error().map(Errno::from_raw)
            }
        }
    }
}

impl From<ProcessError> for io::Error {
    fn from(error: ProcessError) -> io::Error {
        let kind = match &error {
            ProcessError::Syscall { source, .. } => io::Error::from(*source).kind(),
            ProcessError::Stat { source, .. } | ProcessError::Setup { source, .. } => source.kind(),
        };
        io::Error::new(kind, error)
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, ProcessError>;
