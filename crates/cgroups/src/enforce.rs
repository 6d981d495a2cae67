//! Which limits a container's cgroup, a child of the pod cgroup, can be given on this host.
//!
//! The OCI runtime creates the container's cgroup and writes its limits. runc on a v1 or hybrid
//! host uses only the v1 hierarchies: a controller that only the unified hierarchy of a hybrid
//! host has (hugetlb on Debian 12 cloud VMs) cannot be used, and a limit for it makes runc fail
//! ("cannot set hugetlb limit: container could not join or create cgroup"). On a v2 host a
//! controller can be used by the pod's children when the pod cgroup has it, i.e. when it is
//! listed in the pod's `cgroup.controllers` (enabled in its parent's `cgroup.subtree_control`);
//! the runtime enables it in the pod's own `subtree_control`. Hugepage sizes and swap are read
//! from the pod cgroup's interface files (`hugetlb.<size>.limit_in_bytes` / `hugetlb.<size>.max`,
//! `memory.memsw.limit_in_bytes` / `memory.swap.max`), which the kernel creates only where they
//! can be used.

use std::path::Path;

use crate::layout::{CgroupLayout, CgroupMode, CgroupVersion};
use crate::pod::PodCgroup;

/// The controllers a container of a pod can get limits from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChildLimits {
    /// CPU shares/weight, CFS quota and period.
    pub cpu: bool,
    /// cpuset cpus and mems.
    pub cpuset: bool,
    /// The memory limit.
    pub memory: bool,
    /// A swap limit (v1 `memory.memsw.*`, v2 `memory.swap.max`).
    pub memory_swap: bool,
    /// Hugepage sizes with a hugetlb controller, as the cgroup files name them (`2MB`, `1GB`).
    pub hugepage_sizes: Vec<String>,
    /// On a v2 host, the controllers usable through the OCI `unified` map; `None` elsewhere
    /// (runc takes `unified` only on v2 hosts).
    pub unified_controllers: Option<Vec<String>>,
}

impl PodCgroup {
    /// What this pod's containers' cgroups can enforce (see the module doc).
    pub fn child_limits(&self) -> ChildLimits {
        child_limits(self.layout(), self.relative_path())
    }
}

/// What a child cgroup of the cgroup at `relative` can enforce in `layout`.
pub fn child_limits(layout: &CgroupLayout, relative: &Path) -> ChildLimits {
    if layout.mode() == CgroupMode::V2 {
        let Some(unified) = layout.unified() else {
            return ChildLimits::default();
        };
        let dir = unified.dir(relative);
        let controllers: Vec<String> = std::fs::read_to_string(dir.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let has = |c: &str| controllers.iter().any(|have| have == c);
        ChildLimits {
            cpu: has("cpu"),
            cpuset: has("cpuset"),
            memory: has("memory"),
            memory_swap: has("memory") && dir.join("memory.swap.max").exists(),
            hugepage_sizes: if has("hugetlb") {
                hugepage_sizes(&dir, ".max")
            } else {
                Vec::new()
            },
            unified_controllers: Some(controllers),
        }
    } else {
        let v1_dir = |controller: &str| {
            layout
                .hierarchies()
                .iter()
                .find(|h| h.version() == CgroupVersion::V1 && h.has_controller(controller))
                .map(|h| h.dir(relative))
        };
        let memory = v1_dir("memory");
        ChildLimits {
            cpu: v1_dir("cpu").is_some(),
            cpuset: v1_dir("cpuset").is_some(),
            memory_swap: memory
                .as_ref()
                .is_some_and(|dir| dir.join("memory.memsw.limit_in_bytes").exists()),
            memory: memory.is_some(),
            hugepage_sizes: v1_dir("hugetlb")
                .map(|dir| hugepage_sizes(&dir, ".limit_in_bytes"))
                .unwrap_or_default(),
            unified_controllers: None,
        }
    }
}

/// The page sizes of the `hugetlb.<size><suffix>` files in `dir`, sorted.
fn hugepage_sizes(dir: &Path, suffix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut sizes: Vec<String> = entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
            (!size.contains('.')).then(|| size.to_owned())
        })
        .collect();
    sizes.sort();
    sizes
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::mock::MockCgroupFs;

    fn touch(dir: &Path, files: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        for file in files {
            std::fs::write(dir.join(file), "").unwrap();
        }
    }

    #[test]
    fn hybrid_host_with_hugetlb_only_on_the_unified_mount_has_no_hugepage_sizes() {
        let mock = MockCgroupFs::hybrid();
        touch(
            &mock.dir("memory", "kubepods/pod1"),
            &["memory.memsw.limit_in_bytes"],
        );
        touch(&mock.dir("unified", "kubepods/pod1"), &["hugetlb.2MB.max"]);
        let limits = child_limits(&mock.layout(), Path::new("/kubepods/pod1"));
        assert_eq!(
            limits,
            ChildLimits {
                cpu: true,
                cpuset: true,
                memory: true,
                memory_swap: true,
                hugepage_sizes: Vec::new(),
                unified_controllers: None,
            }
        );
    }

    #[test]
    fn v1_host_lists_hugepage_sizes_and_swap_from_the_pod_cgroup() {
        let mock = MockCgroupFs::v1();
        touch(
            &mock.dir("hugetlb", "kubepods/pod1"),
            &[
                "hugetlb.2MB.limit_in_bytes",
                "hugetlb.1GB.limit_in_bytes",
                "hugetlb.2MB.usage_in_bytes",
                "hugetlb.2MB.rsvd.limit_in_bytes",
            ],
        );
        touch(&mock.dir("memory", "kubepods/pod1"), &[]);
        let limits = child_limits(&mock.layout(), Path::new("/kubepods/pod1"));
        assert_eq!(limits.hugepage_sizes, ["1GB", "2MB"]);
        assert!(limits.cpu && limits.memory && !limits.memory_swap);
        assert_eq!(limits.unified_controllers, None);
    }

    #[test]
    fn v2_host_uses_the_controllers_enabled_for_the_pod() {
        let mock = MockCgroupFs::v2();
        let pod = mock.dir("", "kubepods/pod1");
        touch(&pod, &["hugetlb.2MB.max", "memory.swap.max"]);
        std::fs::write(pod.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let limits = child_limits(&mock.layout(), Path::new("/kubepods/pod1"));
        assert!(limits.cpu && limits.memory && limits.memory_swap && !limits.cpuset);
        // The file is there but the controller is not enabled for the pod.
        assert!(limits.hugepage_sizes.is_empty());
        assert_eq!(
            limits.unified_controllers.unwrap(),
            ["cpu", "memory", "pids"]
        );

        std::fs::write(pod.join("cgroup.controllers"), "cpu hugetlb\n").unwrap();
        let limits = child_limits(&mock.layout(), Path::new("/kubepods/pod1"));
        assert_eq!(limits.hugepage_sizes, ["2MB"]);
        assert!(!limits.memory && !limits.memory_swap);
    }
}
