//! The files of a container's state directory, which corral-shim and corrald share.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

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

/// A process identified by pid *and* start time (kept here under its old path).
pub use corral_process::ProcessIdentity;

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

/// Reads a file as text; `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", path)(e)),
    }
}

/// Replaces `path` with `contents` atomically: a temporary file beside it, written and renamed
/// over it, so a reader sees the old file or the whole new one.
///
/// Not fsynced: a state directory is volatile (`/run/corral`), its files name processes that
/// do not outlive the machine, and a killed shim or corrald leaves what it wrote in the page
/// cache. Where `/run` is not a tmpfs the two syncs cost a few ms of every CreateContainer
/// (the shim's pid file) and protected nothing.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(&temp)?;
        file.write_all(contents)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&temp);
        return Err(io_error("write", &temp)(e));
    }
    fs::rename(&temp, path).map_err(|e| {
        let _ = fs::remove_file(&temp);
        io_error("rename into place", path)(e)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
