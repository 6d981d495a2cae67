//! pidfds: a handle on one process that stays valid, and never refers to another process, after
//! its pid is reused. Readable (for `poll`, epoll or tokio) once the process has exited.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, Id, WaitPidFlag};

use crate::error::{ProcessError, Result};
use crate::identity::ProcessIdentity;
use crate::stat::read_stat;

/// `pidfd_open(pid, 0)`. `ESRCH` when there is no such process.
pub fn open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let raw = Errno::result(raw)?;
    let raw = i32::try_from(raw).map_err(|_| io::Error::from(Errno::EBADF))?;
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Sends `signal` to the process of `pidfd`; one that has already exited is not an error.
pub fn send_signal(pidfd: BorrowedFd<'_>, signal: Signal) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes a pidfd, a signal number, a null siginfo and no flags; it
    // reads no memory of ours.
    let result = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    match Errno::result(result) {
        Ok(_) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// Whether `pidfd_open(pid)` failing with `error` means there is no process `pid` (any more).
/// Besides ESRCH, the kernel answers EINVAL — and Linux 6.18 ENOENT — when the pid is still
/// known but its process has just been reaped (a pause stopped by someone else while
/// StopPodSandbox looked at it failed the stop that way).
pub fn no_such_process(error: &io::Error, pid: i32) -> bool {
    match error.raw_os_error() {
        Some(libc::ESRCH | libc::ENOENT) => true,
        Some(libc::EINVAL) => pid > 0,
        _ => false,
    }
}

/// A pidfd with the pid it was opened for (for messages).
#[derive(Debug)]
pub struct Pidfd {
    fd: OwnedFd,
    pid: i32,
}

impl Pidfd {
    /// Opens a pidfd for whatever process is `pid` now; `None` when there is none.
    pub fn open(pid: i32) -> Result<Option<Pidfd>> {
        match open(pid) {
            Ok(fd) => Ok(Some(Pidfd { fd, pid })),
            Err(e) if no_such_process(&e, pid) => Ok(None),
            Err(e) => Err(syscall("pidfd_open", pid, &e)),
        }
    }

    /// Opens a pidfd for `identity` if that process still holds its pid; `None` when it is gone
    /// (reaped, or its pid reused).
    pub fn open_identity(identity: ProcessIdentity) -> Result<Option<Pidfd>> {
        let Some(pidfd) = Pidfd::open(identity.pid)? else {
            return Ok(None);
        };
        // The pidfd was opened after `start_time`, so if the process now at `pid` is still the
        // one that started then, it held the pid all along and the pidfd refers to it.
        match read_stat(identity.pid)? {
            Some(stat) if stat.start_time == identity.start_time => Ok(Some(pidfd)),
            _ => Ok(None),
        }
    }

    /// The pid the pidfd was opened for.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal`; a process that has already exited is not an error.
    pub fn send(&self, signal: Signal) -> Result<()> {
        send_signal(self.fd.as_fd(), signal).map_err(|e| syscall("pidfd_send_signal", self.pid, &e))
    }

    /// Waits up to `timeout` (zero: only looks) for the process to exit. Blocks the thread.
    pub fn wait_for_exit(&self, timeout: Duration) -> Result<bool> {
        wait_for_any(&[self], timeout)
    }

    /// Reaps the process if it is our child and has exited (through the pidfd, so exactly this
    /// process); otherwise does nothing.
    pub fn reap_if_child(&self) -> Result<()> {
        match waitid(
            Id::PIDFd(self.fd.as_fd()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        ) {
            Ok(_) | Err(Errno::ECHILD) => Ok(()),
            Err(source) => Err(ProcessError::Syscall {
                op: "waitid",
                pid: self.pid,
                source,
            }),
        }
    }

    /// Waits on the tokio reactor until the process has exited; holds no thread meanwhile.
    #[cfg(feature = "tokio")]
    pub async fn exited(&self) -> Result<()> {
        wait_exited(self.fd.as_fd())
            .await
            .map_err(|e| syscall("wait on pidfd", self.pid, &e))
    }
}

impl AsFd for Pidfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Pidfd> for OwnedFd {
    fn from(pidfd: Pidfd) -> OwnedFd {
        pidfd.fd
    }
}

/// Waits up to `timeout` until any of `pidfds` has exited; `false` when none did in time (or
/// `pidfds` is empty). Blocks the thread.
pub fn wait_for_any(pidfds: &[&Pidfd], timeout: Duration) -> Result<bool> {
    if pidfds.is_empty() {
        return Ok(false);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let poll_timeout = PollTimeout::try_from(remaining).unwrap_or(PollTimeout::MAX);
        let mut fds: Vec<PollFd<'_>> = pidfds
            .iter()
            .map(|pidfd| PollFd::new(pidfd.fd.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, poll_timeout) {
            Ok(0) if remaining.is_zero() => return Ok(false),
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(true),
            Err(source) => {
                return Err(ProcessError::Syscall {
                    op: "poll pidfds",
                    pid: pidfds[0].pid,
                    source,
                })
            }
        }
    }
}

/// Waits on the tokio reactor until the process of `pidfd` has exited (the pidfd becomes
/// readable). Must be called within a tokio runtime.
#[cfg(feature = "tokio")]
pub async fn wait_exited(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;
    // A duplicate, so that the reactor's registration ends with this call whatever the caller
    // does with its descriptor.
    let owned = pidfd.try_clone_to_owned()?;
    // SAFETY: `owned` is an open pidfd that the AsyncFd owns and closes; nothing else replaces
    // or closes it while it is registered.
    let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE)? };
    let _ready = fd.readable().await?;
    Ok(())
}

fn syscall(op: &'static str, pid: i32, error: &io::Error) -> ProcessError {
    ProcessError::Syscall {
        op,
        pid,
        source: error.raw_os_error().map_or(Errno::EIO, Errno::from_raw),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::process::{Command, Stdio};

    fn sleeper() -> std::process::Child {
        Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    #[test]
    #[allow(clippy::zombie_processes)] // reaped through the pidfd, which is what is tested
    fn signal_wait_and_reap_a_child() {
        let child = sleeper();
        let identity = ProcessIdentity::of_pid(child.id() as i32).unwrap().unwrap();
        let pidfd = Pidfd::open_identity(identity).unwrap().unwrap();
        assert!(!pidfd.wait_for_exit(Duration::ZERO).unwrap());
        pidfd.send(Signal::SIGKILL).unwrap();
        assert!(pidfd.wait_for_exit(Duration::from_secs(10)).unwrap());
        pidfd.reap_if_child().unwrap();
        // Signalling an exited process is not an error.
        pidfd.send(Signal::SIGTERM).unwrap();
        assert!(!identity.is_alive());
        assert!(Pidfd::open_identity(identity).unwrap().is_none());
    }

    #[test]
    fn waiting_for_any_wakes_on_the_first_exit() {
        let (mut long, mut short) = (sleeper(), sleeper());
        let long_fd = Pidfd::open(long.id() as i32).unwrap().unwrap();
        let short_fd = Pidfd::open(short.id() as i32).unwrap().unwrap();
        assert!(!wait_for_any(&[&long_fd, &short_fd], Duration::ZERO).unwrap());
        short_fd.send(Signal::SIGKILL).unwrap();
        assert!(wait_for_any(&[&long_fd, &short_fd], Duration::from_secs(10)).unwrap());
        assert!(!wait_for_any(&[], Duration::ZERO).unwrap());
        long_fd.send(Signal::SIGKILL).unwrap();
        long.wait().unwrap();
        short.wait().unwrap();
    }

    #[test]
    fn a_process_being_reaped_is_a_process_that_is_gone() {
        let errno = |e: Errno| io::Error::from_raw_os_error(e as i32);
        // ESRCH: no such pid. EINVAL and ENOENT: the pid is still known but has no task any more
        // (a process reaped while pidfd_open ran; seen as ENOENT on Linux 6.18).
        for gone in [Errno::ESRCH, Errno::EINVAL, Errno::ENOENT] {
            assert!(no_such_process(&errno(gone), 42), "{gone}");
        }
        assert!(!no_such_process(&errno(Errno::EMFILE), 42));
        assert!(!no_such_process(&errno(Errno::EINVAL), 0));
    }

    #[test]
    fn a_stale_identity_opens_nothing() {
        let me = ProcessIdentity::current().unwrap();
        let reused = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(Pidfd::open_identity(reused).unwrap().is_none());
        assert!(Pidfd::open(i32::MAX).unwrap().is_none());
    }

    #[cfg(feature = "tokio")]
    #[tokio::test]
    async fn exited_wakes_when_the_process_ends() {
        let mut child = sleeper();
        let pidfd = Pidfd::open(child.id() as i32).unwrap().unwrap();
        pidfd.send(Signal::SIGKILL).unwrap();
        pidfd.exited().await.unwrap();
        child.wait().unwrap();
    }
}
