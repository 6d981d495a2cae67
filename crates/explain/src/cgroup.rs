//! A cgroup's limits and usage, read from cgroupfs in whichever hierarchy (v1 or v2) holds
//! each controller. Missing files (a controller not enabled, a cgroup gone) read as unknown.

use std::path::Path;

use corral_cgroups::{CgroupLayout, CgroupVersion};

use crate::report::{CgroupLimits, CgroupUsage};

/// Above this a v1 limit means "unlimited" (the kernel writes `PAGE_COUNTER_MAX` pages).
const V1_UNLIMITED: u64 = 1 << 62;

/// The limits and usage of the cgroup at `relative` in every hierarchy of `layout`.
pub fn read(layout: &CgroupLayout, relative: &Path) -> (CgroupLimits, CgroupUsage) {
    let file = |controller: &str, v1: &str, v2: &str| -> Option<String> {
        let hierarchy = layout.hierarchy_for(controller)?;
        let name = match hierarchy.version() {
            CgroupVersion::V1 => v1,
            CgroupVersion::V2 => v2,
        };
        std::fs::read_to_string(hierarchy.dir(relative).join(name))
            .ok()
            .map(|text| text.trim().to_owned())
    };
    let (cpu_quota_us, cpu_period_us) = match layout.hierarchy_for("cpu").map(|h| h.version()) {
        Some(CgroupVersion::V2) => file("cpu", "", "cpu.max").map_or((None, None), |v| cpu_max(&v)),
        _ => (
            file("cpu", "cpu.cfs_quota_us", "").and_then(|v| limit(&v)),
            file("cpu", "cpu.cfs_period_us", "").and_then(|v| v.parse().ok()),
        ),
    };
    let limits = CgroupLimits {
        memory_bytes: file("memory", "memory.limit_in_bytes", "memory.max").and_then(|v| limit(&v)),
        cpu_quota_us,
        cpu_period_us,
        cpu_shares_or_weight: file("cpu", "cpu.shares", "cpu.weight").and_then(|v| v.parse().ok()),
        pids_max: file("pids", "pids.max", "pids.max").and_then(|v| limit(&v)),
    };
    let usage = CgroupUsage {
        memory_bytes: file("memory", "memory.usage_in_bytes", "memory.current")
            .and_then(|v| v.parse().ok()),
        pids: file("pids", "pids.current", "pids.current").and_then(|v| v.parse().ok()),
    };
    (limits, usage)
}

/// A limit file's value: `max`, `-1` and v1's huge "unlimited" are `None`.
fn limit(text: &str) -> Option<u64> {
    text.parse::<u64>().ok().filter(|v| *v < V1_UNLIMITED)
}

/// v2 `cpu.max` (`max 100000`, `50000 100000`) as quota and period.
fn cpu_max(text: &str) -> (Option<u64>, Option<u64>) {
    let mut fields = text.split_whitespace();
    let quota = fields.next().and_then(limit);
    let period = fields.next().and_then(|v| v.parse().ok());
    (quota, period)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use corral_cgroups::Hierarchy;

    #[test]
    fn limits_read_unlimited_as_none() {
        assert_eq!(limit("max"), None);
        assert_eq!(limit("-1"), None);
        assert_eq!(limit("9223372036854771712"), None);
        assert_eq!(limit("67108864"), Some(67108864));
        assert_eq!(cpu_max("max 100000"), (None, Some(100000)));
        assert_eq!(cpu_max("50000 100000"), (Some(50000), Some(100000)));
    }

    #[test]
    fn v1_and_v2_files_are_read_from_their_hierarchies() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("memory");
        let v2 = dir.path().join("unified");
        std::fs::create_dir_all(v1.join("pod/c")).unwrap();
        std::fs::create_dir_all(v2.join("pod/c")).unwrap();
        std::fs::write(v1.join("pod/c/memory.limit_in_bytes"), "67108864\n").unwrap();
        std::fs::write(v1.join("pod/c/memory.usage_in_bytes"), "1024\n").unwrap();
        std::fs::write(v2.join("pod/c/cpu.max"), "50000 100000\n").unwrap();
        std::fs::write(v2.join("pod/c/cpu.weight"), "39\n").unwrap();
        std::fs::write(v2.join("pod/c/pids.max"), "max\n").unwrap();
        std::fs::write(v2.join("pod/c/pids.current"), "2\n").unwrap();
        let layout = CgroupLayout::from_hierarchies(vec![
            Hierarchy::new(CgroupVersion::V1, v1, vec!["memory".into()]),
            Hierarchy::new(CgroupVersion::V2, v2, vec!["cpu".into(), "pids".into()]),
        ])
        .unwrap();
        let (limits, usage) = read(&layout, Path::new("pod/c"));
        assert_eq!(limits.memory_bytes, Some(67108864));
        assert_eq!(
            (limits.cpu_quota_us, limits.cpu_period_us),
            (Some(50000), Some(100000))
        );
        assert_eq!(limits.cpu_shares_or_weight, Some(39));
        assert_eq!(limits.pids_max, None);
        assert_eq!(usage.memory_bytes, Some(1024));
        assert_eq!(usage.pids, Some(2));
    }
}
