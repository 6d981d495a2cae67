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
    let mut stdout = Pipe::new(stdout);
    let mut stderr = Pipe::new(stderr);
    let mut timeout_at = timeout.map(|timeout| Instant::now() + timeout);
    let mut timed_out = false;
    let mut exited = false;
    let (mut idle_until, mut drain_until) = (Instant::now(), Instant::now());

    loop {
        if exited && stdout.file.is_none() && stderr.file.is_none() {
            break;
        }
        let deadline = if exited {
            Some(idle_until.min(drain_until))
        } else {
            timeout_at
        };
        let poll_timeout = match deadline {
            Some(deadline) => {
                PollTimeout::try_from(deadline.saturating_duration_since(Instant::now()))
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = Vec::with_capacity(3);
        if !exited {
            fds.push(PollFd::new(pidfd, PollFlags::POLLIN));
        }
        let out_index = stdout.file.as_ref().map(|file| {
            fds.push(PollFd::new(file.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let err_index = stderr.file.as_ref().map(|file| {
            fds.push(PollFd::new(file.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let ready = match poll(&mut fds, poll_timeout) {
            Ok(ready) => ready,
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        };
        let fired = |index: Option<usize>| {
            index
                .and_then(|i| fds[i].revents())
                .is_some_and(|events| !events.is_empty())
        };
        let (process_fired, out_fired, err_fired) = (
            !exited && fired(Some(0)),
            fired(out_index),
            fired(err_index),
        );
        drop(fds);

        if ready == 0 {
            if exited {
                break;
            }
            if timeout_at.is_some_and(|at| Instant::now() >= at) {
                timed_out = true;
                timeout_at = None;
                corral_process::pidfd::send_signal(pidfd, nix::sys::signal::Signal::SIGKILL)?;
            }
            continue;
        }
        let mut got_output = false;
        if out_fired {
            got_output |= stdout.read_some(limit);
        }
        if err_fired {
            got_output |= stderr.read_some(limit);
        }
        let now = Instant::now();
        if process_fired {
            exited = true;
            idle_until = now + DRAIN_IDLE;
            drain_until = now + DRAIN_LIMIT;
        } else if exited && got_output {
            idle_until = now + DRAIN_IDLE;
        }
    }
    Ok(Captured {
        stdout: stdout.data,
        stderr: stderr.data,
        timed_out,
    })
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
