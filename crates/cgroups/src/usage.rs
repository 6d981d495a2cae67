//! Usage figures of a cgroup that take more than one file: swap (v1 `memory.memsw.*` less
//! memory, v2 `memory.swap.*`) and the processes of a cgroup tree. Like [`crate::stats`],
//! `None` means "not known here" (no such hierarchy, or the kernel does not account it).

use std::path::Path;

use crate::dir::{CgroupDir, CgroupFiles};
use crate::layout::{CgroupLayout, CgroupVersion};
use crate::stats::{parse_limit, MemoryCounters};

/// Swap use of one cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapCounters {
    /// Bytes of swap in use.
    pub usage: u64,
    /// The swap limit in bytes; `None` when unlimited.
    pub limit: Option<u64>,
}

impl SwapCounters {
    /// Reads the swap use of the cgroup at `relative`: v2 `memory.swap.*`, v1 `memory.memsw.*`
    /// less memory. `None` when the kernel does not account swap.
    pub fn read(layout: &CgroupLayout, relative: &Path) -> Option<SwapCounters> {
        Self::read_from(&CgroupFiles::new(layout, relative), None)
    }

    /// [`SwapCounters::read`] of a cgroup whose directories are open. On cgroup v1, `memory`
    /// (the same cgroup's counters, read just before) gives the memory usage and limit that
    /// are subtracted instead of reading their files a second time.
    pub fn read_from(files: &CgroupFiles, memory: Option<&MemoryCounters>) -> Option<SwapCounters> {
        let (hierarchy, dir) = files.for_controller("memory")?;
        let limit_of = |file: &str| dir.read(file).and_then(|text| parse_limit(&text));
        let (usage, limit) = match hierarchy.version() {
            CgroupVersion::V1 => {
                let both = dir.read_u64("memory.memsw.usage_in_bytes")?;
                let (memory, memory_limit) = match memory {
                    Some(m) => (m.usage, m.limit),
                    None => (
                        dir.read_u64("memory.usage_in_bytes")?,
                        limit_of("memory.limit_in_bytes"),
                    ),
                };
                let limit = match (limit_of("memory.memsw.limit_in_bytes"), memory_limit) {
                    (Some(both), Some(memory)) => Some(both.saturating_sub(memory)),
                    _ => None,
                };
                (both.saturating_sub(memory), limit)
            }
            CgroupVersion::V2 => (
                dir.read_u64("memory.swap.current")?,
                limit_of("memory.swap.max"),
            ),
        };
        Some(SwapCounters { usage, limit })
    }

    /// What is left under the limit; `None` when unlimited.
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|limit| limit.saturating_sub(self.usage))
    }
}

/// The processes in the cgroup at `relative` and every cgroup below it, counted from
/// `cgroup.procs` in the pids hierarchy (any hierarchy when there is none), looking at no more
/// than `max_cgroups` cgroups. `None` when the cgroup does not exist.
pub fn process_count(layout: &CgroupLayout, relative: &Path, max_cgroups: usize) -> Option<u64> {
    let hierarchy = layout
        .hierarchy_for("pids")
        .or_else(|| layout.hierarchies().first())?;
    let root = CgroupDir::open(&hierarchy.dir(relative))?;
    let mut count = 0;
    let mut pending = vec![root];
    let mut seen = 0;
    while let Some(dir) = pending.pop() {
        seen += 1;
        if seen > max_cgroups {
            break;
        }
        if let Some(procs) = dir.read("cgroup.procs") {
            count += procs.lines().filter(|l| !l.trim().is_empty()).count() as u64;
        }
        pending.extend(dir.children());
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::mock::MockCgroupFs;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn v1_swap_is_memsw_less_memory() {
        let fs = MockCgroupFs::hybrid();
        write(
            &fs.dir("memory", "pod"),
            &[
                ("memory.memsw.usage_in_bytes", "1500\n"),
                ("memory.usage_in_bytes", "1000\n"),
                ("memory.memsw.limit_in_bytes", "5000\n"),
                ("memory.limit_in_bytes", "4000\n"),
            ],
        );
        let swap = SwapCounters::read(&fs.layout(), Path::new("pod")).unwrap();
        assert_eq!(
            swap,
            SwapCounters {
                usage: 500,
                limit: Some(1000)
            }
        );
        assert_eq!(swap.available(), Some(500));
        // The memory counters read just before give the same answer without their files.
        let layout = fs.layout();
        let files = CgroupFiles::new(&layout, Path::new("pod"));
        let memory = MemoryCounters {
            usage: 1000,
            limit: Some(4000),
            ..Default::default()
        };
        assert_eq!(SwapCounters::read_from(&files, Some(&memory)), Some(swap));
        std::fs::remove_file(fs.dir("memory", "pod").join("memory.usage_in_bytes")).unwrap();
        assert_eq!(SwapCounters::read_from(&files, Some(&memory)), Some(swap));
    }

    #[test]
    fn v2_swap_from_swap_current_and_max() {
        let fs = MockCgroupFs::v2();
        let dir = fs.root().join("sys/fs/cgroup/pod");
        write(
            &dir,
            &[
                ("memory.swap.current", "300\n"),
                ("memory.swap.max", "max\n"),
            ],
        );
        let swap = SwapCounters::read(&fs.layout(), Path::new("pod")).unwrap();
        assert_eq!(
            (swap.usage, swap.limit, swap.available()),
            (300, None, None)
        );
        // Without swap accounting there is nothing to say.
        write(&fs.root().join("sys/fs/cgroup/other"), &[]);
        assert_eq!(SwapCounters::read(&fs.layout(), Path::new("other")), None);
    }

    #[test]
    fn processes_of_a_cgroup_tree_are_counted_up_to_a_limit() {
        let fs = MockCgroupFs::v2();
        let pod = fs.root().join("sys/fs/cgroup/pod");
        write(&pod, &[("cgroup.procs", "")]);
        write(&pod.join("c1"), &[("cgroup.procs", "10\n11\n")]);
        write(&pod.join("c2"), &[("cgroup.procs", "12\n")]);
        let layout = fs.layout();
        assert_eq!(process_count(&layout, Path::new("pod"), 100), Some(3));
        assert!(process_count(&layout, Path::new("pod"), 2).unwrap() < 3);
        assert_eq!(process_count(&layout, Path::new("missing"), 100), None);
    }
}
