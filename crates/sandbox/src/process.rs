//! Identifying, signalling and reaping a process without ever mistaking a reused pid for it: the
//! sandbox's face of `corral-process`, in this crate's error type.

use std::path::PathBuf;
use std::time::Duration;

use corral_process::{ProcessError, ProcessIdentity};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Result, SandboxError};
use crate::pause::PauseProcess;

pub(crate) use corral_process::ProcessStat;

/// Reads `/proc/PID/stat`; `None` when there is no such process.
pub(crate) fn read_stat(pid: i32) -> Result<Option<ProcessStat>> {
    corral_process::read_stat(pid).map_err(sandbox_error)
}

/// Reaps `pid` if it is a child of this process that has exited, waiting on that pid only (never
/// `-1`, which would steal other children's exit statuses). Returns whether it was reaped; a pid that
/// is still running or not our child is left alone (`Ok(false)`).
pub fn reap_if_child(pid: i32) -> Result<bool> {
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(source) => {
                return Err(SandboxError::Process {
                    op: "waitpid",
                    pid,
                    source,
                })
            }
        }
    }
}

/// A pidfd (see [`corral_process::Pidfd`]).
pub(crate) struct Pidfd(corral_process::Pidfd);

impl Pidfd {
    /// Opens a pidfd for the process `pid` if it is still the one that started at `start_time`;
    /// `None` when that process is gone (reaped, or its pid reused).
    pub fn open_if_same(pid: i32, start_time: u64) -> Result<Option<Pidfd>> {
        let identity = ProcessIdentity { pid, start_time };
        Ok(corral_process::Pidfd::open_identity(identity)
            .map_err(sandbox_error)?
            .map(Pidfd))
    }

    /// Sends `signal`; a process that has already exited is not an error.
    pub fn send(&self, signal: Signal) -> Result<()> {
        self.0.send(signal).map_err(sandbox_error)
    }

    /// Waits up to `timeout` for the process to exit (become a zombie or be reaped).
    pub fn wait_for_exit(&self, timeout: Duration) -> Result<bool> {
        self.0.wait_for_exit(timeout).map_err(sandbox_error)
    }

    /// Reaps the process if it is our child and has exited (through the pidfd, so exactly this
    /// process); otherwise does nothing.
    pub fn reap_if_child(&self) -> Result<()> {
        self.0.reap_if_child().map_err(sandbox_error)
    }
}

impl From<PauseProcess> for ProcessIdentity {
    fn from(pause: PauseProcess) -> ProcessIdentity {
        ProcessIdentity {
            pid: pause.pid,
            start_time: pause.start_time,
        }
    }
}

impl From<ProcessIdentity> for PauseProcess {
    fn from(identity: ProcessIdentity) -> PauseProcess {
        PauseProcess {
            pid: identity.pid,
            start_time: identity.start_time,
        }
    }
}

fn sandbox_error(error: ProcessError) -> SandboxError {
    match error {
        ProcessError::Syscall { op, pid, source } => SandboxError::Process { op, pid, source },
        ProcessError::Stat { pid, source } => SandboxError::Io {
            op: "read",
            path: PathBuf::from(format!("/proc/{pid}/stat")),
            source,
        },
        ProcessError::Setup { source, .. } => SandboxError::Io {
            op: "set up",
            path: PathBuf::new(),
            source,
        },
    }
}
