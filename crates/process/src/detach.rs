//! The detached-launcher pattern of corral-pause and corral-shim: a short-lived launcher forks
//! the long-lived process, reads its one-line report from a pipe and exits; the child closes
//! what it inherited and points its stdio elsewhere, so that it holds nothing of its caller's.
//! Hand-rolled because it is a few syscalls and these binaries are kept small.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::WaitStatus;
use nix::unistd::read;

use crate::error::{ProcessError, Result};

/// A command line that cannot be obeyed (the caller's mistake; the message says which argument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError(String);

impl ArgError {
    pub fn new(message: impl Into<String>) -> ArgError {
        ArgError(message.into())
    }
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgError {}

/// Closes every descriptor above stderr but `keep`. Call only where no other code holds a
/// descriptor in those ranges (a freshly forked, single-threaded child).
pub fn close_fds_except(keep: RawFd) -> Result<()> {
    let setup = |op: String, source| ProcessError::Setup { op, source };
    let keep = u32::try_from(keep).map_err(|_| {
        setup(
            format!("keep descriptor {keep}"),
            std::io::Error::from(Errno::EBADF),
        )
    })?;
    let mut ranges = vec![(keep + 1, u32::MAX)];
    if keep > 3 {
        ranges.push((3, keep - 1));
    }
    for (first, last) in ranges {
        // SAFETY: close_range only closes descriptors; the caller guarantees that nothing but
        // `keep` (outside the ranges) and stdio (below them) is still in use.
        let result = unsafe { libc::close_range(first, last, 0) };
        Errno::result(result)
            .map_err(|e| setup(format!("close_range({first}, {last})"), e.into()))?;
    }
    Ok(())
}

/// Makes `stdin`, `stdout` and `stderr` the process's descriptors 0, 1 and 2.
pub fn redirect_stdio(
    stdin: BorrowedFd<'_>,
    stdout: BorrowedFd<'_>,
    stderr: BorrowedFd<'_>,
) -> Result<()> {
    for (from, to) in [(stdin, 0), (stdout, 1), (stderr, 2)] {
        // SAFETY: dup2 takes two descriptor numbers; `from` is open for the call and 0..=2 are
        // the standard streams, which no Rust object owns.
        let result = unsafe { libc::dup2(from.as_raw_fd(), to) };
        Errno::result(result).map_err(|e| ProcessError::Setup {
            op: format!("dup2 onto descriptor {to}"),
            source: e.into(),
        })?;
    }
    Ok(())
}

/// Why a report pipe could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipeError {
    #[error("nothing came before the deadline")]
    TimedOut,
    #[error("more than {0} bytes")]
    TooLong(usize),
    #[error("{0}")]
    Read(Errno),
}

/// Reads a launcher's report pipe until every writer has closed it (or, with `until_newline`,
/// until a line ends), keeping at most `max_len` bytes. With a `deadline`, gives up then.
pub fn read_report(
    reader: BorrowedFd<'_>,
    deadline: Option<Instant>,
    max_len: usize,
    until_newline: bool,
) -> std::result::Result<Vec<u8>, PipeError> {
    let mut text = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(deadline) = deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(PipeError::TimedOut);
            }
            let timeout = PollTimeout::try_from(remaining).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(PipeError::Read(e)),
            }
        }
        match read(reader, &mut buffer) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buffer[..n]),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(PipeError::Read(e)),
        }
        if text.len() > max_len {
            return Err(PipeError::TooLong(max_len));
        }
        if until_newline && text.ends_with(b"\n") {
            break;
        }
    }
    Ok(text)
}

/// Reads whatever is in a pipe now, at most `max_len` bytes, without waiting for more (the
/// pipe is made non-blocking): what a failed child managed to say.
pub fn read_available(pipe: &mut std::fs::File, max_len: usize) -> Vec<u8> {
    use std::io::Read;
    let mut data = Vec::new();
    let nonblocking = nix::fcntl::fcntl(
        pipe.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    if nonblocking.is_err() {
        return data;
    }
    let mut buffer = [0u8; 4096];
    while data.len() < max_len {
        match pipe.read(&mut buffer) {
            Ok(n) if n > 0 => data.extend_from_slice(&buffer[..n.min(max_len - data.len())]),
            _ => break,
        }
    }
    data
}

/// `exit status N`, `killed by SIGKILL`, ... for messages.
pub fn describe_exit(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("killed by {signal}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use nix::fcntl::OFlag;
    use nix::unistd::{pipe2, write, Pid};
    use std::time::Duration;

    #[test]
    fn reads_to_end_of_file_or_to_the_first_newline() {
        let (reader, writer) = pipe2(OFlag::O_CLOEXEC).unwrap();
        write(&writer, b"pid 42\nready\n").unwrap();
        let line = read_report(reader.as_fd(), None, 100, true).unwrap();
        assert_eq!(line, b"pid 42\nready\n");
        write(&writer, b"ok").unwrap();
        drop(writer);
        assert_eq!(
            read_report(reader.as_fd(), None, 100, false).unwrap(),
            b"ok"
        );
    }

    #[test]
    fn a_silent_writer_times_out_and_a_long_report_is_refused() {
        let (reader, writer) = pipe2(OFlag::O_CLOEXEC).unwrap();
        let soon = Some(Instant::now() + Duration::from_millis(1));
        assert_eq!(
            read_report(reader.as_fd(), soon, 100, false),
            Err(PipeError::TimedOut)
        );
        write(&writer, &[b'x'; 20]).unwrap();
        assert_eq!(
            read_report(reader.as_fd(), None, 10, false),
            Err(PipeError::TooLong(10))
        );
    }

    #[test]
    fn what_is_in_a_pipe_is_read_without_waiting() {
        let (reader, writer) = pipe2(OFlag::O_CLOEXEC).unwrap();
        let mut reader = std::fs::File::from(reader);
        assert!(read_available(&mut reader, 100).is_empty());
        write(&writer, b"runc: no such container").unwrap();
        assert_eq!(read_available(&mut reader, 4), b"runc");
    }

    #[test]
    fn exits_are_described() {
        let pid = Pid::from_raw(7);
        assert_eq!(describe_exit(WaitStatus::Exited(pid, 3)), "exit status 3");
        assert_eq!(
            describe_exit(WaitStatus::Signaled(
                pid,
                nix::sys::signal::Signal::SIGKILL,
                false
            )),
            "killed by SIGKILL"
        );
        assert_eq!(
            ArgError::new("--id is required").to_string(),
            "--id is required"
        );
    }
}
