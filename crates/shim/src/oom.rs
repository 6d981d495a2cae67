//! Counting the OOM kills in the container's memory cgroup(s).
//!
//! cgroup v1 reports them as `oom_kill N` in `memory.oom_control`, cgroup v2 as `oom_kill N` in
//! `memory.events`. The shim reads the count once the container is created and again when it has
//! exited: a larger count means the OOM killer struck while it ran.

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
}
