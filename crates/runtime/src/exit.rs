//! `exit.json`: how a container's init ended, written once by its shim.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::state_dir::{read_optional, write_atomically, EXIT_FILE};

/// How a container's init process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit status, or 128 + the signal that killed it.
    pub exit_code: i32,
    /// When the shim reaped it, in nanoseconds since the Unix epoch.
    pub finished_at_ns: i64,
    /// Whether the kernel's OOM killer killed a process of the container's memory cgroup while it
    /// ran.
    pub oom_killed: bool,
    /// The signal that killed it, if one did.
    #[serde(default)]
    pub signal: Option<i32>,
}

impl ExitInfo {
    /// The exit of a process that called `exit(code)`.
    pub fn exited(code: i32, finished_at_ns: i64, oom_killed: bool) -> ExitInfo {
        ExitInfo {
            exit_code: code,
            finished_at_ns,
            oom_killed,
            signal: None,
        }
    }

    /// The exit of a process killed by `signal`: exit code 128 + signal, as shells report it.
    pub fn signaled(signal: i32, finished_at_ns: i64, oom_killed: bool) -> ExitInfo {
        ExitInfo {
            exit_code: 128 + signal,
            finished_at_ns,
            oom_killed,
            signal: Some(signal),
        }
    }
}

/// Reads `<state_dir>/exit.json`; `None` while the container has not exited (or its shim died
/// before recording it).
pub fn read_exit(state_dir: &Path) -> Result<Option<ExitInfo>> {
    let path = state_dir.join(EXIT_FILE);
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|error| RuntimeError::Corrupt {
            path,
            message: error.to_string(),
        })
}

/// Writes `<state_dir>/exit.json` atomically (a temporary file renamed into place).
pub fn write_exit(state_dir: &Path, exit: &ExitInfo) -> Result<()> {
    let json = serde_json::to_vec(exit).map_err(|source| RuntimeError::Encode {
        what: "exit info",
        source,
    })?;
    write_atomically(&state_dir.join(EXIT_FILE), &json)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exit_info_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_exit(dir.path()).unwrap(), None);
        let exit = ExitInfo::signaled(9, 1_700_000_000_123_456_789, true);
        assert_eq!(exit.exit_code, 137);
        write_exit(dir.path(), &exit).unwrap();
        assert_eq!(read_exit(dir.path()).unwrap(), Some(exit));
        let text = std::fs::read_to_string(dir.path().join(EXIT_FILE)).unwrap();
        assert_eq!(
            text,
            r#"{"exit_code":137,"finished_at_ns":1700000000123456789,"oom_killed":true,"signal":9}"#
        );
        let exit = ExitInfo::exited(3, 5, false);
        write_exit(dir.path(), &exit).unwrap();
        assert_eq!(read_exit(dir.path()).unwrap(), Some(exit));
    }

    #[test]
    fn a_damaged_exit_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(EXIT_FILE), "{\"exit_code\":").unwrap();
        let error = read_exit(dir.path()).unwrap_err();
        assert!(error.to_string().contains("exit.json"), "{error}");
    }
}
