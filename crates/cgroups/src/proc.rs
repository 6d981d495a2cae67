//! Which cgroups a process is in, from `/proc/PID/cgroup`.

use std::path::{Path, PathBuf};

use procfs::{FromRead, ProcessCGroups};

use crate::error::{CgroupError, Result};

/// The cgroup of process `pid` in every hierarchy, as `(controller, path)` pairs with the
/// path relative to the hierarchy's root. A co-mounted v1 hierarchy gives one pair per
/// controller (`cpu` and `cpuacct`), a named one `name=systemd`, and the unified hierarchy
/// the empty controller `""`.
pub fn pid_cgroup_paths(pid: i32) -> Result<Vec<(String, PathBuf)>> {
    proc_cgroup_file(Path::new(&format!("/proc/{pid}/cgroup")))
}

/// Reads a `/proc/PID/cgroup`-format file; see [`pid_cgroup_paths`].
pub fn proc_cgroup_file(path: &Path) -> Result<Vec<(String, PathBuf)>> {
    let groups = ProcessCGroups::from_file(path).map_err(|source| CgroupError::ProcFile {
        path: path.to_path_buf(),
        source,
    })?;
    let mut paths = Vec::new();
    for group in groups {
        let cgroup = PathBuf::from(group.pathname);
        if group.controllers.is_empty() {
            paths.push((String::new(), cgroup));
        } else {
            for controller in group.controllers {
                paths.push((controller, cgroup.clone()));
            }
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn proc_cgroup_lines_become_controller_path_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cgroup");
        std::fs::write(
            &file,
            "9:name=systemd:/kubepods/pod1/pause\n\
             4:cpu,cpuacct:/kubepods/pod1/pause\n\
             3:memory:/kubepods/pod1/pause\n\
             0::/kubepods/pod1/pause\n",
        )
        .unwrap();
        let pairs: Vec<(String, String)> = proc_cgroup_file(&file)
            .unwrap()
            .into_iter()
            .map(|(controller, path)| (controller, path.display().to_string()))
            .collect();
        let expected: Vec<(String, String)> = ["name=systemd", "cpu", "cpuacct", "memory", ""]
            .iter()
            .map(|c| (c.to_string(), "/kubepods/pod1/pause".to_owned()))
            .collect();
        assert_eq!(pairs, expected);
    }

    #[test]
    fn this_process_has_cgroups() {
        let paths = pid_cgroup_paths(std::process::id() as i32).unwrap();
        assert!(!paths.is_empty());
        assert!(paths.iter().all(|(_, path)| path.is_absolute()));
    }

    #[test]
    fn a_missing_process_is_an_error_naming_the_file() {
        let error = proc_cgroup_file(Path::new("/proc/does-not-exist/cgroup")).unwrap_err();
        assert!(
            error.to_string().contains("/proc/does-not-exist/cgroup"),
            "{error}"
        );
    }
}
