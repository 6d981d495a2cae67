//! Running a process in a container:
//! `<runtime> exec --detach --pid-file FILE --process FILE [--console-socket SOCKET] ID`.
//!
//! The runtime starts the process and exits; the process keeps the stdio it was given (this
//! crate's pipes, or a terminal whose master the runtime sends to the console socket) and is
//! re-parented to the caller, which must therefore be a child subreaper (as corrald is, for its
//! shims). The caller waits for it by pidfd, so a background process that inherited its pipes never
//! holds up learning its exit, and a reused pid is never mistaken for it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};

use crate::capture::capture_output;
use crate::error::{io_error, Result, RuntimeError};
use crate::runtime::{runtime_message, OciRuntime, COMMAND_TIMEOUT};
use crate::unix_socket::{receive_fd, SocketPath};
use corral_process::pidfd::{open as pidfd_open, send_signal as pidfd_send_signal};

/// The most of each of stdout and stderr that [`OciRuntime::exec_sync`] keeps.
pub const EXEC_OUTPUT_LIMIT: usize = 16 << 20;

/// How an exec'd process's stdio is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecIo {
    /// Pipes for stdout and stderr, and for stdin when `stdin` (else `/dev/null`).
    Pipes { stdin: bool },
    /// A terminal of this size (in cells) for stdin, stdout and stderr; the caller gets its master.
    Terminal { width: u16, height: u16 },
}

/// What [`OciRuntime::exec_sync`] collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Up to [`EXEC_OUTPUT_LIMIT`] bytes of stdout; the rest is dropped.
    pub stdout: Vec<u8>,
    /// Up to [`EXEC_OUTPUT_LIMIT`] bytes of stderr; the rest is dropped.
    pub stderr: Vec<u8>,
    /// The process's exit code (128 + signal when a signal killed it).
    pub exit_code: i32,
    /// The timeout passed and the process was killed (SIGKILL).
    pub timed_out: bool,
}

/// A process started in a container. Take the stdio fields to talk to it; [`ExecChild::wait`]
/// gives its exit code. Dropping it before the process has been reaped kills (SIGKILL) and reaps
/// it, so it never lingers as the caller's zombie.
#[derive(Debug)]
pub struct ExecChild {
    pid: i32,
    pidfd: OwnedFd,
    exit_code: Option<i32>,
    /// The process's stdin (with [`ExecIo::Pipes`] `{ stdin: true }`).
    pub stdin: Option<File>,
    /// The process's stdout (with [`ExecIo::Pipes`]).
    pub stdout: Option<File>,
    /// The process's stderr (with [`ExecIo::Pipes`]).
    pub stderr: Option<File>,
    /// The terminal's master: read the output, write the input (with [`ExecIo::Terminal`]).
    pub terminal: Option<File>,
    /// A second handle on the master, kept for resizing after `terminal` was taken.
    terminal_control: Option<OwnedFd>,
    id: String,
}

impl OciRuntime {
    /// Starts `process` in the running container `id` with the given stdio and returns once it
    /// runs. The caller must be a child subreaper (see the module docs).
    pub fn exec_spawn(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        io: ExecIo,
    ) -> Result<ExecChild> {
        let subreaper =
            nix::sys::prctl::get_child_subreaper().map_err(|source| RuntimeError::Syscall {
                op: "prctl(PR_GET_CHILD_SUBREAPER)",
                source,
            })?;
        if !subreaper {
            return Err(RuntimeError::NotSubreaper { command: "exec" });
        }
        let scratch = tempfile::Builder::new()
            .prefix("corral-exec-")
            .tempdir()
            .map_err(io_error("create a directory in", std::env::temp_dir()))?;
        let process_file = scratch.path().join("process.json");
        let pid_file = scratch.path().join("exec.pid");
        self.write_process_file(id, process, io, &process_file)?;

        let mut command = self.command();
        command
            .args(["exec", "--detach", "--pid-file"])
            .arg(&pid_file)
            .arg("--process")
            .arg(&process_file);
        let console = exec_stdio(&mut command, io, scratch.path())?;
        command.arg(id);
        let spawn_error = |source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            command: "exec",
            id: id.to_owned(),
            source,
        };
        let mut child = command.spawn().map_err(spawn_error)?;
        drop(command);
        // Taken before waiting: `Child::wait` would close stdin.
        let as_file = |fd: Option<OwnedFd>| fd.map(File::from);
        let stdin = as_file(child.stdin.take().map(OwnedFd::from));
        let stdout = as_file(child.stdout.take().map(OwnedFd::from));
        let mut stderr = as_file(child.stderr.take().map(OwnedFd::from));
        let listener = console.as_ref().map(|(listener, _)| listener);
        let (status, master) = match wait_for_runtime(&mut child, listener) {
            Ok(outcome) => outcome,
            Err(RuntimeWait::TimedOut) => {
                return Err(RuntimeError::Timeout {
                    binary: self.binary.clone(),
                    command: "exec",
                    id: id.to_owned(),
                    waited: COMMAND_TIMEOUT,
                })
            }
            Err(RuntimeWait::Failed(source)) => return Err(spawn_error(source)),
        };
        let pid = read_pid_file(&pid_file);
        let Some(pid) = pid.filter(|_| status.success()) else {
            let said = stderr.as_mut().map(read_available).unwrap_or_default();
            let mut message = runtime_message(&said);
            if message.is_empty() {
                message = format!("exited with {status}");
            }
            return Err(self.classify_failure("exec", id, message));
        };
        self.exec_child(id, pid, io, master, [stdin, stdout, stderr])
    }

    /// The handle on the exec'd process `pid`: its pidfd, its stdio (`[stdin, stdout, stderr]`)
    /// and, with a terminal, the pty master the runtime sent.
    fn exec_child(
        &self,
        id: &str,
        pid: i32,
        io: ExecIo,
        master: Option<OwnedFd>,
        [stdin, stdout, stderr]: [Option<File>; 3],
    ) -> Result<ExecChild> {
        let terminal = matches!(io, ExecIo::Terminal { .. });
        let pidfd = pidfd_open(pid).map_err(|source| RuntimeError::Syscall {
            op: "pidfd_open of the exec'd process",
            source: errno_of(&source),
        })?;
        let (terminal_master, terminal_control) = match master {
            Some(master) => {
                let control = master.try_clone().map_err(|source| RuntimeError::Syscall {
                    op: "dup terminal master",
                    source: errno_of(&source),
                })?;
                (Some(File::from(master)), Some(control))
            }
            None if terminal => {
                return Err(self.classify_failure(
                    "exec",
                    id,
                    "the runtime started the process but sent no terminal".into(),
                ))
            }
            None => (None, None),
        };
        if let (Some(master), ExecIo::Terminal { width, height }) = (&terminal_control, io) {
            set_window_size(master.as_raw_fd(), width, height)?;
        }
        Ok(ExecChild {
            pid,
            pidfd,
            exit_code: None,
            stdin,
            stdout,
            // With a terminal, stderr was the runtime's only.
            stderr: if terminal { None } else { stderr },
            terminal: terminal_master,
            terminal_control,
            id: id.to_owned(),
        })
    }

    /// Writes the process `runc exec --process` reads: `process` with the terminal flag and
    /// size of `io`.
    fn write_process_file(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        io: ExecIo,
        path: &Path,
    ) -> Result<()> {
        let mut process = process.clone();
        process.set_terminal(Some(matches!(io, ExecIo::Terminal { .. })));
        if let ExecIo::Terminal { width, height } = io {
            let size = oci_spec::runtime::BoxBuilder::default()
                .width(u64::from(width))
                .height(u64::from(height))
                .build()
                .map_err(|error| RuntimeError::Output {
                    binary: self.binary.clone(),
                    command: "exec",
                    id: id.to_owned(),
                    message: format!("console size: {error}"),
                })?;
            process.set_console_size(Some(size));
        }
        let json = serde_json::to_vec(&process).map_err(|source| RuntimeError::Encode {
            what: "exec process",
            source,
        })?;
        std::fs::write(path, json).map_err(io_error("write", path))
    }

    /// Runs `process` in the running container `id` and collects its output (up to
    /// [`EXEC_OUTPUT_LIMIT`] of each stream) and exit code. When `timeout` passes first the
    /// process is killed and `timed_out` set. Output is read until the process has exited and its
    /// pipes are drained: a background process that inherited them is not waited for. The caller
    /// must be a child subreaper.
    pub fn exec_sync(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput> {
        let started = Instant::now();
        let mut exec = self.exec_spawn(id, process, ExecIo::Pipes { stdin: false })?;
        let remaining = timeout.map(|timeout| timeout.saturating_sub(started.elapsed()));
        let captured = capture_output(
            exec.pidfd.as_fd(),
            exec.stdout.take(),
            exec.stderr.take(),
            EXEC_OUTPUT_LIMIT,
            remaining,
        )
        .map_err(|source| RuntimeError::Syscall {
            op: "collect exec output",
            source: errno_of(&source),
        })?;
        let exit_code = exec.wait()?;
        Ok(ExecOutput {
            stdout: captured.stdout,
            stderr: captured.stderr,
            exit_code,
            timed_out: captured.timed_out,
        })
    }
}

impl ExecChild {
    /// The process's pid (in the caller's PID namespace).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A pidfd of the process: readable once it has exited (for `poll` or an async reactor).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Sends `signal` to the process (nothing happens once it has exited).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        pidfd_send_signal(self.pidfd.as_fd(), signal).map_err(|source| RuntimeError::Syscall {
            op: "pidfd_send_signal to the exec'd process",
            source: errno_of(&source),
        })
    }

    /// A handle on the terminal's master for resizing it from elsewhere (with
    /// [`crate::set_window_size`]) while another thread waits for the process; `None` without a
    /// terminal.
    pub fn resize_handle(&self) -> Option<OwnedFd> {
        self.terminal_control
            .as_ref()
            .and_then(|fd| fd.try_clone().ok())
    }

    /// Sets the terminal's size. Without a terminal there is nothing to resize and this does
    /// nothing.
    pub fn resize(&self, width: u16, height: u16) -> Result<()> {
        match &self.terminal_control {
            Some(master) => set_window_size(master.as_raw_fd(), width, height),
            None => Ok(()),
        }
    }

    /// Waits for the process to exit, reaps it and returns its exit code (128 + signal when a
    /// signal killed it).
    pub fn wait(&mut self) -> Result<i32> {
        loop {
            if let Some(code) = self.try_reap(WaitPidFlag::WEXITED)? {
                return Ok(code);
            }
        }
    }

    /// The exit code if the process has exited (reaping it), `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<i32>> {
        self.try_reap(WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG)
    }

    fn try_reap(&mut self, flags: WaitPidFlag) -> Result<Option<i32>> {
        if let Some(code) = self.exit_code {
            return Ok(Some(code));
        }
        let code = match waitid(Id::PIDFd(self.pidfd.as_fd()), flags) {
            Ok(WaitStatus::Exited(_, code)) => code,
            Ok(WaitStatus::Signaled(_, signal, _)) => 128 + signal as i32,
            Ok(_) | Err(Errno::EINTR) => return Ok(None),
            Err(Errno::ECHILD) => return Err(RuntimeError::NotSubreaper { command: "exec" }),
            Err(source) => {
                return Err(RuntimeError::Syscall {
                    op: "waitid on the exec'd process",
                    source,
                })
            }
        };
        tracing::debug!(id = %self.id, pid = self.pid, code, "exec'd process exited");
        self.exit_code = Some(code);
        Ok(Some(code))
    }
}

impl Drop for ExecChild {
    fn drop(&mut self) {
        if self.exit_code.is_some() || matches!(self.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        tracing::debug!(id = %self.id, pid = self.pid, "exec handle dropped; killing the process");
        let _ = self.signal(Signal::SIGKILL);
        let _ = self.wait();
    }
}

/// Why waiting for `<runtime> exec --detach` failed.
enum RuntimeWait {
    TimedOut,
    Failed(io::Error),
}

/// Waits (up to [`COMMAND_TIMEOUT`]) for the runtime to exit, receiving the terminal's master on
/// `console` meanwhile. A runtime that takes too long is killed.
fn wait_for_runtime(
    child: &mut Child,
    console: Option<&UnixListener>,
) -> Result<(ExitStatus, Option<OwnedFd>), RuntimeWait> {
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let pidfd = pidfd_open(pid).map_err(|error| {
        let _ = child.kill();
        let _ = child.wait();
        RuntimeWait::Failed(error)
    })?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let mut master = None;
    loop {
        if master.is_none() {
            if let Some(listener) = console {
                master = accept_master(listener).map_err(RuntimeWait::Failed)?;
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RuntimeWait::TimedOut);
        }
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if let (Some(listener), None) = (console, &master) {
            fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
        }
        let exited = match poll(
            &mut fds,
            PollTimeout::try_from(remaining).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) => fds[0].revents().is_some_and(|events| !events.is_empty()),
            Err(Errno::EINTR) => false,
            Err(errno) => return Err(RuntimeWait::Failed(errno.into())),
        };
        if exited {
            let status = child.wait().map_err(RuntimeWait::Failed)?;
            if master.is_none() {
                if let Some(listener) = console {
                    master = accept_master(listener).map_err(RuntimeWait::Failed)?;
                }
            }
            return Ok((status, master));
        }
    }
}

/// Accepts a pending connection on the console socket and receives the terminal's master.
fn accept_master(listener: &UnixListener) -> io::Result<Option<OwnedFd>> {
    match listener.accept() {
        Ok((stream, _)) => receive_fd(&stream).map(Some),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_pid_file(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|pid| *pid > 0)
}

/// Reads whatever is in a pipe now, without waiting for more.
fn read_available(pipe: &mut File) -> Vec<u8> {
    corral_process::detach::read_available(pipe, 65536)
}

fn errno_of(error: &io::Error) -> Errno {
    Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO))
}

/// Sets a terminal's window size (TIOCSWINSZ).
pub(crate) fn set_window_size(fd: i32, width: u16, height: u16) -> Result<()> {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `winsize` from the pointer, which points to a live local value.
    let result = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) };
    Errno::result(result)
        .map(drop)
        .map_err(|source| RuntimeError::Syscall {
            op: "ioctl(TIOCSWINSZ)",
            source,
        })
}

/// Sets up `command`'s stdio for `io`: with a terminal, a console socket in `scratch` on which
/// the runtime sends the pty master (returned, with its reachable path); else pipes.
fn exec_stdio(
    command: &mut std::process::Command,
    io: ExecIo,
    scratch: &Path,
) -> Result<Option<(UnixListener, SocketPath)>> {
    if let ExecIo::Pipes { stdin } = io {
        command
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        return Ok(None);
    }
    let path = scratch.join("console.sock");
    let reachable = SocketPath::new(&path).map_err(io_error("console socket", &path))?;
    let listener = UnixListener::bind(reachable.path()).map_err(io_error("bind", &path))?;
    listener
        .set_nonblocking(true)
        .map_err(io_error("set non-blocking", &path))?;
    command.arg("--console-socket").arg(reachable.path());
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Ok(Some((listener, reachable)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nix::fcntl::OFlag;
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};

    #[test]
    fn window_sizes_reach_the_terminal() {
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let slave = File::open(ptsname_r(&master).unwrap()).unwrap();
        set_window_size(master.as_raw_fd(), 120, 33).unwrap();
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a `winsize` to the pointer, which points to a local value.
        let result = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        assert_eq!(result, 0);
        assert_eq!((size.ws_col, size.ws_row), (120, 33));
        assert!(set_window_size(slave.as_raw_fd() + 1000, 1, 1).is_err());
    }

    #[test]
    fn exec_refuses_a_caller_that_is_not_a_subreaper() {
        // The unit-test process never makes itself a subreaper.
        if nix::sys::prctl::get_child_subreaper().unwrap() {
            return;
        }
        let runtime = OciRuntime {
            name: "runc".into(),
            binary: "/nonexistent/runc".into(),
            root: "/nonexistent".into(),
            systemd_cgroup: false,
        };
        let process = oci_spec::runtime::Process::default();
        let error = runtime
            .exec_spawn("c1", &process, ExecIo::Pipes { stdin: false })
            .unwrap_err();
        assert!(
            matches!(error, RuntimeError::NotSubreaper { .. }),
            "{error:?}"
        );
    }
}
