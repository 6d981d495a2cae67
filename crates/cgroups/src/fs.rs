//! The small cgroupfs layer: mkdir, read, write and rmdir of cgroup directories and files,
//! each error naming the operation and the path.

use std::io::{ErrorKind, Write};
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::Duration;

use crate::error::{CgroupError, Result};

/// How often a busy cgroup directory is tried before giving up, and the pause between tries.
/// A process that was just killed stays in its cgroup until the kernel has torn it down.
const BUSY_ATTEMPTS: u32 = 20;
const BUSY_PAUSE: Duration = Duration::from_millis(50);

/// Checks that `path` names a cgroup below a hierarchy's root and returns it in relative
/// form: a leading `/` is dropped, `.` components are dropped, `..` is refused.
pub(crate) fn relative_cgroup_path(path: &Path) -> Result<PathBuf> {
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(CgroupError::InvalidName {
                    name: path.display().to_string(),
                    reason: "a cgroup path must not contain `..`".to_owned(),
                })
            }
        }
    }
    Ok(relative)
}

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| CgroupError::io("read", path, e))
}

/// Reads a whole file, `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(content) => Ok(Some(content)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CgroupError::io("read", path, e)),
    }
}

/// Writes `value` to a cgroup file in one `write(2)`, as the kernel expects.
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    // The file is opened with O_CREAT so a mock cgroupfs made of plain files works; cgroupfs
    // itself refuses to create files, which is reported below as a missing interface file.
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut file| file.write_all(value.as_bytes()));
    result.map_err(|e| {
        if path.exists() {
            CgroupError::io("write", path, e)
        } else {
            CgroupError::io(
                "write (no such interface file: controller not enabled?)",
                path,
                e,
            )
        }
    })
}

/// Creates one directory; `Ok(true)` if this call created it, `Ok(false)` if it existed.
pub(crate) fn create_dir(path: &Path) -> Result<bool> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(CgroupError::io("create dir", path, e)),
    }
}

/// What happened to a directory we tried to remove.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Removal {
    /// It was removed.
    Removed,
    /// It did not exist.
    Missing,
    /// It still holds processes or child cgroups (EBUSY; ENOTEMPTY on a plain filesystem).
    Busy,
}

/// Removes one cgroup directory once.
pub(crate) fn remove_dir(path: &Path) -> Result<Removal> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(Removal::Removed),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Removal::Missing),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) => {
            Ok(Removal::Busy)
        }
        Err(e) => Err(CgroupError::io("remove dir", path, e)),
    }
}

/// Removes cgroup directories that must go (a pod's own cgroups, leaves), deepest first.
/// Busy ones are tried again, together, for a short while: a process that was just killed
/// stays in its cgroup until the kernel has finished tearing it down. If some are still busy
/// then, the error names the deepest one and what is inside it.
pub(crate) fn remove_dirs_retrying(mut dirs: Vec<PathBuf>) -> Result<()> {
    sort_deepest_first(&mut dirs);
    for attempt in 1..=BUSY_ATTEMPTS {
        let mut busy = Vec::new();
        for dir in dirs {
            if remove_dir(&dir)? == Removal::Busy {
                busy.push(dir);
            }
        }
        dirs = busy;
        if dirs.is_empty() {
            return Ok(());
        }
        if attempt < BUSY_ATTEMPTS {
            thread::sleep(BUSY_PAUSE);
        }
    }
    let path = dirs.swap_remove(0);
    let children = child_dirs(&path)?
        .iter()
        .filter_map(|dir| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    Err(CgroupError::Busy {
        procs: read_procs(&path)?,
        path,
        attempts: BUSY_ATTEMPTS,
        children,
    })
}

/// Sorts paths so that every directory comes before its parent.
pub(crate) fn sort_deepest_first(dirs: &mut [PathBuf]) {
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
}

/// Every cgroup below `dir` (not `dir` itself); none if `dir` does not exist.
pub(crate) fn descendants(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    collect_descendants(dir, &mut found)?;
    Ok(found)
}

fn collect_descendants(dir: &Path, into: &mut Vec<PathBuf>) -> Result<()> {
    for child in child_dirs(dir)? {
        collect_descendants(&child, into)?;
        into.push(child);
    }
    Ok(())
}

/// The sub-directories (child cgroups) of `dir`; none if `dir` does not exist.
pub(crate) fn child_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CgroupError::io("list dir", dir, e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CgroupError::io("list dir", dir, e))?;
        let file_type = entry
            .file_type()
            .map_err(|e| CgroupError::io("stat", entry.path(), e))?;
        if file_type.is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// The pids in `dir/cgroup.procs`; none if the cgroup does not exist.
pub(crate) fn read_procs(dir: &Path) -> Result<Vec<i32>> {
    let path = dir.join("cgroup.procs");
    let Some(content) = read_optional(&path)? else {
        return Ok(Vec::new());
    };
    content
        .split_whitespace()
        .map(|pid| {
            pid.parse().map_err(|_| CgroupError::Parse {
                path: path.clone(),
                reason: format!("{pid:?} is not a pid"),
            })
        })
        .collect()
}

/// Moves `pid` into the cgroup at `dir`.
pub(crate) fn add_pid(dir: &Path, pid: i32) -> Result<()> {
    write(&dir.join("cgroup.procs"), &pid.to_string())
}

/// Makes a v1 cpuset cgroup usable: a new cpuset cgroup starts with empty `cpuset.cpus` and
/// `cpuset.mems` (unless the parent has `cgroup.clone_children`), and no task can join it
/// until both are set. Empty values are copied from the parent directory.
pub(crate) fn fill_cpuset_from_parent(dir: &Path) -> Result<()> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = read_optional(&dir.join(file))?.unwrap_or_default();
        if !own.trim().is_empty() {
            continue;
        }
        let inherited = read(&parent.join(file))?;
        let inherited = inherited.trim();
        if inherited.is_empty() {
            return Err(CgroupError::Parse {
                path: parent.join(file),
                reason: "empty, so a child cpuset cannot inherit CPUs or memory nodes".to_owned(),
            });
        }
        write(&dir.join(file), inherited)?;
    }
    Ok(())
}

/// Enables `controllers` in `dir/cgroup.subtree_control` (v2) where not yet enabled, in one
/// write, so that the children of `dir` get those controllers' interface files.
pub(crate) fn enable_subtree_controllers(dir: &Path, controllers: &[&str]) -> Result<()> {
    let path = dir.join("cgroup.subtree_control");
    let enabled = read_optional(&path)?.unwrap_or_default();
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(&path, &missing.join(" "))
}
