//! Identifying, signalling and reaping a process without ever mistaking a reused pid for it.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Result, SandboxError};

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessStat {
    /// Field 22: when the process started, in clock ticks after boot.
    pub start_time: u64,
    /// Field 3: `R`, `S`, `Z` (zombie), ...
    pub state: char,
}

/// Reads `/proc/PID/stat`; `None` when there is no such process.
pub(crate) fn read_stat(pid: i32) -> Result<Option<ProcessStat>> {
    let proc_error = |source| SandboxError::Proc {
        what: format!("/proc/{pid}/stat"),
        source,
    };
    let stat = match procfs::process::Process::new(pid).and_then(|process| process.stat()) {
        Ok(stat) => stat,
        Err(procfs::ProcError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(proc_error(e)),
    };
    Ok(Some(ProcessStat {
        start_time: stat.starttime,
        state: stat.state,
    }))
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

/// A pidfd: a handle on one process that stays valid (and never refers to another process) even
/// after the pid is reused.
pub(crate) struct Pidfd {
    fd: OwnedFd,
    pid: i32,
}

impl Pidfd {
    /// Opens a pidfd for the process `pid` if it is still the one that started at `start_time`;
    /// `None` when that process is gone (reaped, or its pid reused).
    pub fn open_if_same(pid: i32, start_time: u64) -> Result<Option<Pidfd>> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = match Errno::result(raw) {
            Ok(raw) => {
                let raw = i32::try_from(raw).map_err(|_| SandboxError::Process {
                    op: "pidfd_open",
                    pid,
                    source: Errno::EBADF,
                })?;
                // SAFETY: the kernel just returned this descriptor and nothing else owns it.
                unsafe { OwnedFd::from_raw_fd(raw) }
            }
            Err(Errno::ESRCH) => return Ok(None),
            Err(source) => {
                return Err(SandboxError::Process {
                    op: "pidfd_open",
                    pid,
                    source,
                })
            }
        };
        // The pidfd was opened after `start_time`, so if the process now at `pid` is still the one
        // that started then, it held the pid all along and the pidfd refers to it.
        match read_stat(pid)? {
            Some(stat) if stat.start_time == start_time => Ok(Some(Pidfd { fd, pid })),
            _ => Ok(None),
        }
    }

    /// Sends `signal`; a process that has already exited is not an error.
    pub fn send(&self, signal: Signal) -> Result<()> {
        // SAFETY: pidfd_send_signal takes a pidfd we own, a signal number, a null siginfo and no
        // flags.
        let result = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        match Errno::result(result) {
            Ok(_) | Err(Errno::ESRCH) => Ok(()),
            Err(source) => Err(SandboxError::Process {
                op: "pidfd_send_signal",
                pid: self.pid,
                source,
            }),
        }
    }

    /// Waits up to `timeout` for the process to exit (become a zombie or be reaped).
    pub fn wait_for_exit(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let poll_timeout = PollTimeout::try_from(remaining).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, poll_timeout) {
                Ok(0) if remaining.is_zero() => return Ok(false),
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => return Ok(true),
                Err(source) => {
                    return Err(SandboxError::Process {
                        op: "poll pidfd",
                        pid: self.pid,
                        source,
                    })
                }
            }
        }
    }

    /// Reaps the process if it is our child and has exited (through the pidfd, so exactly this
    /// process); otherwise does nothing.
    pub fn reap_if_child(&self) -> Result<()> {
        match waitid(
            Id::PIDFd(self.fd.as_fd()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        ) {
            Ok(_) | Err(Errno::ECHILD) => Ok(()),
            Err(source) => Err(SandboxError::Process {
                op: "waitid",
                pid: self.pid,
                source,
            }),
        }
    }
}
