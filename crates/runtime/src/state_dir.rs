//! The files of a container's state directory, which corral-shim and corrald share.

use std::fs;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{io_error, Result, RuntimeError};

/// `PID START_TIME\n`: the shim's pid and its start time (field 22 of `/proc/PID/stat`).
pub const SHIM_PID_FILE: &str = "shim.pid";
/// The container's init pid as the runtime wrote it (`--pid-file`).
pub const CONTAINER_PID_FILE: &str = "container.pid";
/// The container's exit, written by the shim once, atomically; see [`crate::ExitInfo`].
pub const EXIT_FILE: &str = "exit.json";
/// The shim's attach socket; see [`crate::attach`].
pub const ATTACH_SOCKET: &str = "attach.sock";
/// The shim's control socket; see [`crate::control`].
pub const CONTROL_SOCKET: &str = "ctl";
/// The shim's own diagnostics (its stderr).
pub const SHIM_LOG: &str = "shim.log";
/// The socket on which the runtime hands the shim a terminal's pty master (during create only).
pub const CONSOLE_SOCKET: &str = "console.sock";
/// The runtime's own log while the shim runs `create` (JSON lines).
pub const RUNTIME_LOG: &str = "runtime.log";

/// A process identified by pid *and* start time, so that a reused pid is never taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessIdentity {
    /// The pid, in corrald's PID namespace.
    pub pid: i32,
    /// Field 22 of `/proc/PID/stat`: clock ticks after boot when the process started.
    pub start_time: u64,
}

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStat {
    /// Field 3: `R`, `S`, `Z` (zombie), ...
    pub state: char,
    /// Field 22: start time in clock ticks after boot.
    pub start_time: u64,
}

/// Reads `/proc/PID/stat`; `None` when there is no such process.
pub fn read_process_stat(pid: i32) -> io::Result<Option<ProcessStat>> {
    let path = format!("/proc/{pid}/stat");
    match fs::read_to_string(&path) {
        Ok(text) => parse_stat(&text).map(Some).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected contents of {path}"),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Parses the state and start time out of a `/proc/PID/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from its last `)`.
fn parse_stat(text: &str) -> Option<ProcessStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // `fields` now stands at field 4; field 22 is 18 further.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcessStat { state, start_time })
}

impl ProcessIdentity {
    /// The process now running as `pid`; `None` if there is none.
    pub fn of_pid(pid: i32) -> io::Result<Option<ProcessIdentity>> {
        Ok(read_process_stat(pid)?.map(|stat| ProcessIdentity {
            pid,
            start_time: stat.start_time,
        }))
    }

    /// Whether the process still runs: same pid, same start time, not a zombie.
    pub fn is_alive(&self) -> bool {
        match read_process_stat(self.pid) {
            Ok(Some(stat)) => {
                stat.start_time == self.start_time && !matches!(stat.state, 'Z' | 'X')
            }
            _ => false,
        }
    }

    /// Waits up to `timeout` for the process to exit (or become a zombie); returns whether it
    /// has. A process that is already gone, or whose pid now belongs to another, has exited.
    pub fn wait_for_exit(&self, timeout: Duration) -> io::Result<bool> {
        let pidfd = match crate::capture::pidfd_open(self.pid) {
            Ok(pidfd) => pidfd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(true),
            Err(e) => return Err(e),
        };
        // Opened after the start time was taken: if the pid still has that start time, the
        // pidfd refers to this very process.
        if !self.is_alive() {
            return Ok(true);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let wait = PollTimeout::try_from(remaining).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, wait) {
                Ok(0) if remaining.is_zero() => return Ok(false),
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => return Ok(true),
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    /// `PID START_TIME\n`.
    pub fn to_line(&self) -> String {
        format!("{} {}\n", self.pid, self.start_time)
    }

    /// Parses [`ProcessIdentity::to_line`]'s format.
    pub fn parse(text: &str) -> Option<ProcessIdentity> {
        let mut words = text.split_whitespace();
        let pid = words.next()?.parse().ok().filter(|pid| *pid > 0)?;
        let start_time = words.next()?.parse().ok()?;
        words
            .next()
            .is_none()
            .then_some(ProcessIdentity { pid, start_time })
    }
}

/// Reads the shim's identity from `shim.pid`; `None` when the file is missing.
pub fn read_shim_pid(state_dir: &Path) -> Result<Option<ProcessIdentity>> {
    let path = state_dir.join(SHIM_PID_FILE);
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    ProcessIdentity::parse(&text)
        .map(Some)
        .ok_or_else(|| RuntimeError::Corrupt {
            path,
            message: format!("expected \"PID START_TIME\", found {text:?}"),
        })
}

/// Reads the container's init pid from `container.pid`; `None` when the file is missing.
pub fn read_container_pid(state_dir: &Path) -> Result<Option<i32>> {
    let path = state_dir.join(CONTAINER_PID_FILE);
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    text.trim()
        .parse()
        .ok()
        .filter(|pid: &i32| *pid > 0)
        .map(Some)
        .ok_or_else(|| RuntimeError::Corrupt {
            path,
            message: format!("expected a pid, found {text:?}"),
        })
}

/// Whether the shim of this state directory still runs (by `shim.pid`'s pid and start time).
pub fn shim_alive(state_dir: &Path) -> bool {
    match read_shim_pid(state_dir) {
        Ok(Some(shim)) => shim.is_alive(),
        Ok(None) => false,
        Err(error) => {
            tracing::warn!(%error, "cannot read the shim's pid file; taking the shim as gone");
            false
        }
    }
}

/// Waits up to `timeout` for the shim of this state directory to exit; returns whether it is
/// gone (also when there was none). Woken by the shim's pidfd the moment it exits, rather than
/// by a polling tick: the shim exits right after recording the container's exit, so this is
/// how long a stop or a removal waits for it.
pub fn wait_for_shim_exit(state_dir: &Path, timeout: Duration) -> bool {
    let shim = match read_shim_pid(state_dir) {
        Ok(Some(shim)) => shim,
        Ok(None) => return true,
        Err(error) => {
            tracing::warn!(%error, "cannot read the shim's pid file; taking the shim as gone");
            return true;
        }
    };
    match shim.wait_for_exit(timeout) {
        Ok(gone) => gone,
        Err(error) => {
            // No pidfd: fall back on the process table.
            tracing::debug!(%error, pid = shim.pid, "cannot wait on the shim's pidfd");
            !shim.is_alive()
        }
    }
}

/// Reads a file as text; `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", path)(e)),
    }
}

/// Replaces `path` with `contents` atomically: a temporary file beside it, written and synced,
/// renamed over it, and the directory synced, so a reader sees the old file or the whole new one.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(&temp)?;
        file.write_all(contents)?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&temp);
        return Err(io_error("write", &temp)(e));
    }
    fs::rename(&temp, path).map_err(|e| {
        let _ = fs::remove_file(&temp);
        io_error("rename into place", path)(e)
    })?;
    fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("sync", dir))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_parsed_past_odd_command_names() {
        let line = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 \
                    1000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(ProcessStat {
                state: 'S',
                start_time: 98765
            })
        );
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn our_own_process_is_alive_and_an_impostor_is_not() {
        let me = ProcessIdentity::of_pid(i32::try_from(std::process::id()).unwrap())
            .unwrap()
            .unwrap();
        assert!(me.is_alive());
        let impostor = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!impostor.is_alive());
    }

    #[test]
    fn pid_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_shim_pid(dir.path()).unwrap(), None);
        assert!(!shim_alive(dir.path()));
        let me = ProcessIdentity::of_pid(i32::try_from(std::process::id()).unwrap())
            .unwrap()
            .unwrap();
        write_atomically(&dir.path().join(SHIM_PID_FILE), me.to_line().as_bytes()).unwrap();
        assert_eq!(read_shim_pid(dir.path()).unwrap(), Some(me));
        assert!(shim_alive(dir.path()));

        fs::write(dir.path().join(SHIM_PID_FILE), "12 x").unwrap();
        assert!(read_shim_pid(dir.path()).is_err());
        assert!(!shim_alive(dir.path()));

        assert_eq!(read_container_pid(dir.path()).unwrap(), None);
        fs::write(dir.path().join(CONTAINER_PID_FILE), "4321").unwrap();
        assert_eq!(read_container_pid(dir.path()).unwrap(), Some(4321));
        fs::write(dir.path().join(CONTAINER_PID_FILE), "-1").unwrap();
        assert!(read_container_pid(dir.path()).is_err());
        // Nothing but the files themselves is left behind.
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, [CONTAINER_PID_FILE, SHIM_PID_FILE]);
    }

    #[test]
    fn identities_parse_strictly() {
        assert_eq!(
            ProcessIdentity::parse("12 34\n"),
            Some(ProcessIdentity {
                pid: 12,
                start_time: 34
            })
        );
        assert_eq!(ProcessIdentity::parse("12"), None);
        assert_eq!(ProcessIdentity::parse("0 34"), None);
        assert_eq!(ProcessIdentity::parse("12 34 56"), None);
    }
}
