//! Finding the processes corrald started for a sandbox or a container when nothing recorded
//! their pids: a daemon killed between starting a process and recording it leaves a process
//! that only `/proc` can tell about.
//!
//! corrald marks every pause with `CORRAL_OWNER=<sandbox directory>` in its environment (the
//! launcher forks the pause without exec, so the pause keeps it), and a shim names its
//! container's state directory in its arguments. Both paths hold the id and the daemon's own
//! state directory, so another daemon's processes never match. A match is identified by pid
//! *and* start time, read before and after the check, so that a pid reused meanwhile is never
//! taken for it (and [`PauseProcess::stop`] checks both again through a pidfd).

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::pause::PauseProcess;
use crate::process::read_stat;

/// The environment variable that names the sandbox directory a pause belongs to.
pub const OWNER_ENV: &str = "CORRAL_OWNER";

/// A process found in `/proc`, and the path that made it match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The process, by pid and start time.
    pub process: PauseProcess,
    /// Its [`OWNER_ENV`] value or the argument that lies under the directory asked about.
    pub path: PathBuf,
}

/// Live processes whose [`OWNER_ENV`] is `dir` or lies under it.
pub fn owned_under(dir: &Path) -> Result<Vec<Found>> {
    env_under(OWNER_ENV, dir)
}

/// Live processes whose environment variable `var` is `dir` or lies under it (for example
/// CNI plugins still running for a netns pin: `CNI_NETNS`).
pub fn env_under(var: &str, dir: &Path) -> Result<Vec<Found>> {
    let prefix = format!("{var}=");
    scan("environ", |entry| {
        entry
            .strip_prefix(prefix.as_bytes())
            .map(bytes_path)
            .filter(|path| path.starts_with(dir))
    })
}

/// Live processes with a command-line argument that is `dir` or lies under it.
pub fn naming(dir: &Path) -> Result<Vec<Found>> {
    scan("cmdline", |arg| {
        Some(bytes_path(arg)).filter(|path| path.starts_with(dir))
    })
}

fn bytes_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes))
}

/// Every live process one of whose NUL-separated entries of `/proc/PID/<file>` `pick` maps to a
/// path. Processes that vanish or cannot be read are skipped.
fn scan(file: &str, pick: impl Fn(&[u8]) -> Option<PathBuf>) -> Result<Vec<Found>> {
    let entries = std::fs::read_dir("/proc").map_err(crate::error::io_error("list", "/proc"))?;
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
            .filter(|pid| u32::try_from(*pid).ok() != Some(me))
        else {
            continue;
        };
        let Ok(Some(before)) = read_stat(pid) else {
            continue;
        };
        if matches!(before.state, 'Z' | 'X') {
            continue;
        }
        let Ok(bytes) = std::fs::read(format!("/proc/{pid}/{file}")) else {
            continue;
        };
        let Some(path) = bytes.split(|b| *b == 0).find_map(&pick) else {
            continue;
        };
        match read_stat(pid) {
            Ok(Some(after)) if after.start_time == before.start_time => {}
            _ => continue,
        }
        found.push(Found {
            process: PauseProcess {
                pid,
                start_time: before.start_time,
            },
            path,
        });
    }
    Ok(found)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_found_by_its_owner_and_its_arguments_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let owner = dir.path().join("sandboxes").join("abc");
        let file = dir.path().join("containers").join("x");
        std::fs::create_dir_all(dir.path().join("containers")).unwrap();
        std::fs::write(&file, "").unwrap();
        // `tail -f FILE` runs until killed, with FILE in its arguments.
        let mut child = std::process::Command::new("tail")
            .arg("-f")
            .arg(&file)
            .env(OWNER_ENV, &owner)
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        // Until the child has exec'd, /proc shows the parent's environment and arguments.
        let execed = || {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"tail\0"))
        };
        for _ in 0..500 {
            if execed() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let by_owner = owned_under(&dir.path().join("sandboxes")).unwrap();
        let by_arg = naming(&dir.path().join("containers")).unwrap();
        let elsewhere = owned_under(&dir.path().join("containers")).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            by_owner
                .iter()
                .map(|f| (f.process.pid, &f.path))
                .collect::<Vec<_>>(),
            [(pid, &owner)]
        );
        assert_eq!(by_arg.len(), 1);
        assert_eq!(by_arg[0].process.pid, pid);
        assert!(elsewhere.is_empty(), "{elsewhere:?}");
    }
}
