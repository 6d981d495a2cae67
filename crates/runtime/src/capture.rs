//! Collecting a process's stdout and stderr until it exits, with a time limit, and without hanging
//! on a background process that inherited the pipes.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Once the process has exited, reading stops when its pipes stay silent this long (whatever
/// still holds them open, such as a background process, is not waited for).
const DRAIN_IDLE: Duration = Duration::from_millis(100);

/// Once the process has exited, reading stops after this long at the most.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// What a process wrote.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The time limit passed and the process was sent SIGKILL.
    pub timed_out: bool,
}

/// One output pipe and what has been read from it.
struct Pipe {
    file: Option<File>,
    data: Vec<u8>,
}

impl Pipe {
    fn new(file: Option<File>) -> Pipe {
        Pipe {
            file,
            data: Vec::new(),
        }
    }

    /// Adds the pipe, while open, to `fds`; returns its index there.
    fn watch<'a>(&'a self, fds: &mut Vec<PollFd<'a>>) -> Option<usize> {
        self.file.as_ref().map(|file| {
            fds.push(PollFd::new(file.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        })
    }

    /// Reads what is there (one read), keeping at most `limit` bytes; closes the pipe at end of
    /// file or on an error. Returns whether data came.
    fn read_some(&mut self, limit: usize) -> bool {
        let Some(file) = &mut self.file else {
            return false;
        };
        let mut buffer = [0u8; 65536];
        match file.read(&mut buffer) {
            Ok(0) => {
                self.file = None;
                false
            }
            Ok(n) => {
                let room = limit.saturating_sub(self.data.len());
                self.data.extend_from_slice(&buffer[..n.min(room)]);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
            Err(error) => {
                tracing::warn!(%error, "reading a process's output failed");
                self.file = None;
                false
            }
        }
    }
}

/// Reads `stdout` and `stderr` (at most `limit` bytes of each is kept, the rest read and
/// dropped) until the process of `pidfd` has exited and the pipes are drained or go quiet. When
/// `timeout` passes first the process is sent SIGKILL. The process is not reaped.
pub(crate) fn capture_output(
    pidfd: BorrowedFd<'_>,
    stdout: Option<File>,
    stderr: Option<File>,
    limit: usize,
    timeout: Option<Duration>,
) -> io::Result<Captured> {
    let mut capture = Capture {
        pidfd,
        stdout: Pipe::new(stdout),
        stderr: Pipe::new(stderr),
        limit,
        timeout_at: timeout.map(|timeout| Instant::now() + timeout),
        timed_out: false,
        exited: false,
        idle_until: Instant::now(),
        drain_until: Instant::now(),
    };
    while !capture.done() {
        let Some(fired) = capture.poll()? else {
            continue;
        };
        if fired.nothing() {
            if capture.exited {
                break;
            }
            capture.kill_when_late()?;
            continue;
        }
        capture.take(fired);
    }
    Ok(Captured {
        stdout: capture.stdout.data,
        stderr: capture.stderr.data,
        timed_out: capture.timed_out,
    })
}

/// The state of one `capture_output`.
struct Capture<'a> {
    pidfd: BorrowedFd<'a>,
    stdout: Pipe,
    stderr: Pipe,
    limit: usize,
    timeout_at: Option<Instant>,
    timed_out: bool,
    exited: bool,
    /// Once exited: reading stops when the pipes are silent until `idle_until`, or at
    /// `drain_until`, whichever comes first.
    idle_until: Instant,
    drain_until: Instant,
}

/// Which of the polled descriptors have events; nothing when the poll timed out.
struct Fired {
    process: bool,
    stdout: bool,
    stderr: bool,
}

impl Fired {
    fn nothing(&self) -> bool {
        !(self.process || self.stdout || self.stderr)
    }
}

impl Capture<'_> {
    fn done(&self) -> bool {
        self.exited && self.stdout.file.is_none() && self.stderr.file.is_none()
    }

    /// How long the next poll may wait: until the time limit, or once exited, until the pipes
    /// count as drained.
    fn poll_timeout(&self) -> PollTimeout {
        let deadline = if self.exited {
            Some(self.idle_until.min(self.drain_until))
        } else {
            self.timeout_at
        };
        match deadline {
            Some(deadline) => {
                PollTimeout::try_from(deadline.saturating_duration_since(Instant::now()))
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        }
    }

    /// Waits for the process (until it has exited) and the open pipes; None when interrupted.
    fn poll(&self) -> io::Result<Option<Fired>> {
        let mut fds = Vec::with_capacity(3);
        if !self.exited {
            fds.push(PollFd::new(self.pidfd, PollFlags::POLLIN));
        }
        let out_index = self.stdout.watch(&mut fds);
        let err_index = self.stderr.watch(&mut fds);
        match poll(&mut fds, self.poll_timeout()) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(None),
            Err(errno) => return Err(errno.into()),
        }
        let fired = |index: Option<usize>| {
            index
                .and_then(|i| fds[i].revents())
                .is_some_and(|events| !events.is_empty())
        };
        Ok(Some(Fired {
            process: !self.exited && fired(Some(0)),
            stdout: fired(out_index),
            stderr: fired(err_index),
        }))
    }

    /// Sends SIGKILL once the time limit has passed.
    fn kill_when_late(&mut self) -> io::Result<()> {
        if self.timeout_at.is_some_and(|at| Instant::now() >= at) {
            self.timed_out = true;
            self.timeout_at = None;
            corral_process::pidfd::send_signal(self.pidfd, nix::sys::signal::Signal::SIGKILL)?;
        }
        Ok(())
    }

    /// Reads the pipes that fired and notes an exit; output after the exit extends the drain.
    fn take(&mut self, fired: Fired) {
        let mut got_output = false;
        if fired.stdout {
            got_output |= self.stdout.read_some(self.limit);
        }
        if fired.stderr {
            got_output |= self.stderr.read_some(self.limit);
        }
        let now = Instant::now();
        if fired.process {
            self.exited = true;
            self.idle_until = now + DRAIN_IDLE;
            self.drain_until = now + DRAIN_LIMIT;
        } else if self.exited && got_output {
            self.idle_until = now + DRAIN_IDLE;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};

    fn run(script: &str, limit: usize, timeout: Option<Duration>) -> (Captured, i32) {
        let mut child: Child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pidfd = corral_process::pidfd::open(i32::try_from(child.id()).unwrap()).unwrap();
        let stdout = child
            .stdout
            .take()
            .map(|pipe| File::from(std::os::fd::OwnedFd::from(pipe)));
        let stderr = child
            .stderr
            .take()
            .map(|pipe| File::from(std::os::fd::OwnedFd::from(pipe)));
        let captured = capture_output(pidfd.as_fd(), stdout, stderr, limit, timeout).unwrap();
        let status = child.wait().unwrap();
        let code = status.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap()
        });
        (captured, code)
    }

    #[test]
    fn output_and_status_are_captured() {
        let (captured, code) = run("echo out; echo err >&2; exit 3", 1024, None);
        assert_eq!(captured.stdout, b"out\n");
        assert_eq!(captured.stderr, b"err\n");
        assert_eq!(code, 3);
        assert!(!captured.timed_out);
    }

    #[test]
    fn output_beyond_the_limit_is_dropped() {
        let (captured, code) = run("head -c 100000 /dev/zero", 1000, None);
        assert_eq!(captured.stdout.len(), 1000);
        assert_eq!(code, 0);
    }

    #[test]
    fn a_background_process_holding_the_pipe_is_not_waited_for() {
        let (captured, code) = run("sleep 3 & echo hi", 1024, None);
        assert_eq!(captured.stdout, b"hi\n");
        assert_eq!(code, 0);
    }

    #[test]
    fn the_timeout_kills_the_process() {
        let (captured, code) = run("exec sleep 30", 1024, Some(Duration::from_millis(50)));
        assert!(captured.timed_out);
        assert_eq!(code, 137);
    }
}
