//! Counting the OOM kills in the container's memory cgroup(s).
//!
//! cgroup v1 reports them as `oom_kill N` in `memory.oom_control`, cgroup v2 as `oom_kill N` in
//! `memory.events`. The shim reads the count once the container is created and again when it has
//! exited: a larger count means the OOM killer struck while it ran.
//!
//! Under the systemd cgroup driver the container's cgroup is a scope that systemd removes as
//! soon as its last process is gone, often before the shim reads it again. The parent's (the
//! pod's) count is read too: on cgroup v2 `memory.events` counts the kills below it, so when
//! the container's cgroup has vanished, a larger count there is this container's kill.

use std::fs;
use std::path::{Path, PathBuf};

/// The cgroup files that hold an `oom_kill` counter, v1 then v2.
const OOM_FILES: [&str; 2] = ["memory.oom_control", "memory.events"];

/// The total OOM kill count over `dirs` (a missing directory or file counts as 0).
pub fn oom_kill_count(dirs: &[PathBuf]) -> u64 {
    dirs.iter().map(|dir| count_in(dir)).sum()
}

fn count_in(dir: &Path) -> u64 {
    OOM_FILES
        .iter()
        .filter_map(|name| fs::read_to_string(dir.join(name)).ok())
        .filter_map(|text| parse_oom_kill(&text))
        .sum()
}

/// OOM kill counts when the container was created.
#[derive(Debug, Clone, Copy)]
pub struct OomBaseline {
    own: u64,
    parents: u64,
}

impl OomBaseline {
    /// Reads the counts of the container's memory cgroups `dirs` and of their parents.
    pub fn read(dirs: &[PathBuf]) -> Self {
        let parents: Vec<PathBuf> = dirs
            .iter()
            .filter_map(|dir| dir.parent().map(Path::to_path_buf))
            .collect();
        Self {
            own: oom_kill_count(dirs),
            parents: oom_kill_count(&parents),
        }
    }

    /// Whether the OOM killer struck the container since the baseline: its own count grew, or
    /// its cgroup is gone (systemd removed the scope) and the parent's count grew.
    pub fn oom_killed_since(&self, dirs: &[PathBuf]) -> bool {
        let now = Self::read(dirs);
        if now.own > self.own {
            return true;
        }
        let vanished = dirs.iter().any(|dir| !dir.exists());
        vanished && now.parents > self.parents
    }
}

/// The value of the `oom_kill` line of a `memory.oom_control` or `memory.events` file.
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("oom_kill"), Some(value)) => value.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_v1_and_v2_files() {
        assert_eq!(
            parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            Some(2)
        );
        assert_eq!(
            parse_oom_kill("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n"),
            Some(1)
        );
        assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\n"), None);
        assert_eq!(parse_oom_kill("oom_kill x\n"), None);
    }

    #[test]
    fn counts_add_up_over_a_fake_cgroupfs() {
        let root = tempfile::tempdir().unwrap();
        let v1 = root.path().join("memory/pod/c1");
        let v2 = root.path().join("unified/pod/c1");
        fs::create_dir_all(&v1).unwrap();
        fs::create_dir_all(&v2).unwrap();
        let dirs = vec![v1.clone(), v2.clone(), root.path().join("missing")];
        assert_eq!(oom_kill_count(&dirs), 0);
        fs::write(
            v1.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        fs::write(v2.join("memory.events"), "oom 3\noom_kill 3\n").unwrap();
        assert_eq!(oom_kill_count(&dirs), 4);
    }

    #[test]
    fn a_kill_is_seen_in_the_pod_cgroup_when_systemd_removed_the_scope() {
        // Under the systemd driver systemd removes the container's scope as soon as its last
        // process is gone, often before the shim reads the count after the exit.
        let root = tempfile::tempdir().unwrap();
        let pod = root.path().join("corral.slice/corral-pod1.slice");
        let scope = pod.join("corral-c1.scope");
        fs::create_dir_all(&scope).unwrap();
        fs::write(pod.join("memory.events"), "oom 0\noom_kill 0\n").unwrap();
        fs::write(scope.join("memory.events"), "oom 0\noom_kill 0\n").unwrap();
        let dirs = vec![scope.clone()];
        let baseline = OomBaseline::read(&dirs);
        assert!(!baseline.oom_killed_since(&dirs));

        fs::write(pod.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        assert!(
            !baseline.oom_killed_since(&dirs),
            "another container's kill, while this scope still exists, is not this one's"
        );
        fs::remove_dir_all(&scope).unwrap();
        assert!(baseline.oom_killed_since(&dirs));
    }

    #[test]
    fn a_kill_in_the_container_cgroup_counts() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pod/c1");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("memory.events"), "oom_kill 0\n").unwrap();
        let baseline = OomBaseline::read(std::slice::from_ref(&dir));
        fs::write(dir.join("memory.events"), "oom_kill 1\n").unwrap();
        assert!(baseline.oom_killed_since(std::slice::from_ref(&dir)));
    }
}
