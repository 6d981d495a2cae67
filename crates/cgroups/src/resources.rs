//! Pod-level limits and their mapping to v1 and v2 interface files.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{CgroupError, Result};
use crate::layout::{CgroupLayout, CgroupVersion};

/// Limits for a pod cgroup, with OCI / CRI meanings: `-1` is "unlimited", and `None` or `0`
/// leaves a value unchanged (except hugepage limits, where `0` forbids hugepages).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Relative CPU weight in v1 shares (2..=262144); v2 gets the equivalent `cpu.weight`.
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per period; `-1` for none.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    pub cpu_period: Option<u64>,
    /// CPUs the pod may use (`0-3,6`); empty leaves it unchanged.
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the pod may use; empty leaves it unchanged.
    pub cpuset_mems: Option<String>,
    /// Memory limit in bytes; `-1` for none.
    pub memory_limit_bytes: Option<i64>,
    /// Memory plus swap limit in bytes (the v1 / OCI meaning); `-1` for unlimited swap.
    /// On v2 it becomes `memory.swap.max` = this minus the memory limit.
    pub memory_swap_limit_bytes: Option<i64>,
    /// Maximum number of tasks; `-1` (any negative) for none.
    pub pids_limit: Option<i64>,
    /// `(page size, limit in bytes)` pairs, the page size as the kernel names it (`2MB`, `1GB`).
    pub hugepage_limits: Vec<(String, u64)>,
    /// Raw cgroup v2 files to write (`memory.high` → `"1G"`), for v2 controllers only.
    pub unified: BTreeMap<String, String>,
}

/// Converts v1 `cpu.shares` to v2 `cpu.weight` with the formula runc and the kubelet use:
/// shares 2..=262144 map linearly onto weights 1..=10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

impl Resources {
    /// Checks that the limits can be expressed on `layout`, writing nothing: the refusals
    /// applying them would make ([`CgroupError::InvalidResources`]), found before any cgroup
    /// exists. (Values the kernel itself refuses, such as CPUs the node lacks, show only when
    /// written.)
    pub fn check(&self, layout: &CgroupLayout) -> Result<()> {
        let v1_memory = V1MemoryState {
            current_limit: None,
            memsw_supported: true,
        };
        plan(layout, self, v1_memory).map(drop)
    }
}

/// One interface file to write in the pod cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourceWrite {
    /// Index into [`CgroupLayout::hierarchies`].
    pub hierarchy: usize,
    /// The interface file's name, e.g. `memory.limit_in_bytes`.
    pub file: String,
    /// What to write.
    pub value: String,
}

/// The writes that apply a [`Resources`], in order, and the v2 controllers they need enabled
/// in the parents' `cgroup.subtree_control`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ResourcePlan {
    pub writes: Vec<ResourceWrite>,
    pub v2_controllers: BTreeSet<String>,
}

/// What the v1 memory controller currently has, which decides the order of the memory and
/// memory+swap writes (the kernel keeps memsw ≥ memory at every step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct V1MemoryState {
    /// The pod cgroup's current `memory.limit_in_bytes`; `None` if unknown.
    pub current_limit: Option<i64>,
    /// Whether `memory.memsw.*` exists (swap accounting is on).
    pub memsw_supported: bool,
}

/// Turns `resources` into interface-file writes for `layout`. Controllers the host does not
/// have are skipped with a warning; requests that cannot be expressed are errors.
pub(crate) fn plan(
    layout: &CgroupLayout,
    resources: &Resources,
    v1_memory: V1MemoryState,
) -> Result<ResourcePlan> {
    let mut plan = Planner {
        layout,
        out: ResourcePlan::default(),
    };
    plan.cpu(resources);
    plan.cpuset(resources);
    plan.memory(resources, v1_memory)?;
    plan.pids(resources);
    plan.hugetlb(resources)?;
    plan.unified(resources)?;
    Ok(plan.out)
}

struct Planner<'a> {
    layout: &'a CgroupLayout,
    out: ResourcePlan,
}

/// `Some(v)` unless the value is absent or `0` (CRI's "not set").
fn set<T: Default + PartialEq>(value: Option<T>) -> Option<T> {
    value.filter(|v| *v != T::default())
}

impl Planner<'_> {
    /// The hierarchy holding `controller`, or `None` (with a warning) if no hierarchy has it.
    fn target(&self, controller: &str, what: &str) -> Option<(usize, CgroupVersion)> {
        match self.layout.hierarchy_index_for(controller) {
            Some(i) => Some((i, self.layout.hierarchies()[i].version())),
            None => {
                tracing::warn!(
                    controller,
                    "not applying the {what} limit: no cgroup hierarchy has this controller"
                );
                None
            }
        }
    }

    fn push(&mut self, (hierarchy, version): (usize, CgroupVersion), file: &str, value: String) {
        if version == CgroupVersion::V2 {
            if let Some((controller, _)) = file.split_once('.') {
                if controller != "cgroup" {
                    self.out.v2_controllers.insert(controller.to_owned());
                }
            }
        }
        self.out.writes.push(ResourceWrite {
            hierarchy,
            file: file.to_owned(),
            value,
        });
    }

    fn cpu(&mut self, r: &Resources) {
        let (shares, quota, period) = (set(r.cpu_shares), set(r.cpu_quota), set(r.cpu_period));
        if shares.is_none() && quota.is_none() && period.is_none() {
            return;
        }
        let Some(target) = self.target("cpu", "CPU") else {
            return;
        };
        match target.1 {
            CgroupVersion::V1 => {
                if let Some(shares) = shares {
                    self.push(target, "cpu.shares", shares.to_string());
                }
                // Period first: the quota is checked against the period in force.
                if let Some(period) = period {
                    self.push(target, "cpu.cfs_period_us", period.to_string());
                }
                if let Some(quota) = quota {
                    let quota = if quota < 0 { -1 } else { quota };
                    self.push(target, "cpu.cfs_quota_us", quota.to_string());
                }
            }
            CgroupVersion::V2 => {
                if let Some(shares) = shares {
                    self.push(target, "cpu.weight", shares_to_weight(shares).to_string());
                }
                if quota.is_some() || period.is_some() {
                    let mut max = match quota {
                        Some(q) if q > 0 => q.to_string(),
                        _ => "max".to_owned(),
                    };
                    if let Some(period) = period {
                        max.push_str(&format!(" {period}"));
                    }
                    self.push(target, "cpu.max", max);
                }
            }
        }
    }

    fn cpuset(&mut self, r: &Resources) {
        let cpus = r.cpuset_cpus.as_deref().filter(|s| !s.is_empty());
        let mems = r.cpuset_mems.as_deref().filter(|s| !s.is_empty());
        if cpus.is_none() && mems.is_none() {
            return;
        }
        let Some(target) = self.target("cpuset", "cpuset") else {
            return;
        };
        // Same file names on v1 and v2.
        if let Some(cpus) = cpus {
            self.push(target, "cpuset.cpus", cpus.to_owned());
        }
        if let Some(mems) = mems {
            self.push(target, "cpuset.mems", mems.to_owned());
        }
    }

    fn memory(&mut self, r: &Resources, v1: V1MemoryState) -> Result<()> {
        let (memory, swap) = (set(r.memory_limit_bytes), set(r.memory_swap_limit_bytes));
        if memory.is_none() && swap.is_none() {
            return Ok(());
        }
        if let (Some(m), Some(s)) = (memory, swap) {
            if s != -1 && (m == -1 || s < m) {
                return Err(CgroupError::InvalidResources {
                    reason: format!(
                        "memory_swap_limit_bytes ({s}) counts memory plus swap, so it must be \
                         -1 or at least memory_limit_bytes ({m})"
                    ),
                });
            }
        }
        let Some(target) = self.target("memory", "memory") else {
            return Ok(());
        };
        let bytes = |v: i64, unlimited: &str| {
            if v < 0 {
                unlimited.to_owned()
            } else {
                v.to_string()
            }
        };
        match target.1 {
            CgroupVersion::V1 => {
                let swap = match swap {
                    Some(_) if !v1.memsw_supported => {
                        tracing::warn!(
                            "not applying the swap limit: memory.memsw.* is missing \
                             (swap accounting is off; boot with swapaccount=1)"
                        );
                        None
                    }
                    other => other,
                };
                let memory_write = memory.map(|m| ("memory.limit_in_bytes", bytes(m, "-1")));
                let swap_write = swap.map(|s| ("memory.memsw.limit_in_bytes", bytes(s, "-1")));
                // Raising: memsw first; lowering: memory first (memsw ≥ memory throughout).
                let swap_first = match (memory, swap) {
                    (Some(_), Some(s)) => {
                        s == -1 || v1.current_limit.is_some_and(|current| current < s)
                    }
                    _ => false,
                };
                let ordered = if swap_first {
                    [swap_write, memory_write]
                } else {
                    [memory_write, swap_write]
                };
                for (file, value) in ordered.into_iter().flatten() {
                    self.push(target, file, value);
                }
            }
            CgroupVersion::V2 => {
                if let Some(m) = memory {
                    self.push(target, "memory.max", bytes(m, "max"));
                }
                if let Some(s) = swap {
                    let swap_only = match (s, memory) {
                        (-1, _) => "max".to_owned(),
                        (s, Some(m)) if m >= 0 => (s - m).to_string(),
                        _ => {
                            return Err(CgroupError::InvalidResources {
                                reason: "on cgroup v2 a swap limit needs a memory limit too \
                                         (memory.swap.max = memory_swap_limit_bytes - \
                                         memory_limit_bytes)"
                                    .to_owned(),
                            })
                        }
                    };
                    self.push(target, "memory.swap.max", swap_only);
                }
            }
        }
        Ok(())
    }

    fn pids(&mut self, r: &Resources) {
        let Some(limit) = set(r.pids_limit) else {
            return;
        };
        let Some(target) = self.target("pids", "pids") else {
            return;
        };
        let value = if limit < 0 {
            "max".to_owned()
        } else {
            limit.to_string()
        };
        self.push(target, "pids.max", value);
    }

    fn hugetlb(&mut self, r: &Resources) -> Result<()> {
        if r.hugepage_limits.is_empty() {
            return Ok(());
        }
        let Some(target) = self.target("hugetlb", "hugepage") else {
            return Ok(());
        };
        for (page_size, limit) in &r.hugepage_limits {
            if page_size.is_empty() || page_size.contains(['/', '.', '\0']) {
                return Err(CgroupError::InvalidResources {
                    reason: format!("hugepage size {page_size:?} is not a size like 2MB or 1GB"),
                });
            }
            let file = match target.1 {
                CgroupVersion::V1 => format!("hugetlb.{page_size}.limit_in_bytes"),
                CgroupVersion::V2 => format!("hugetlb.{page_size}.max"),
            };
            self.push(target, &file, limit.to_string());
        }
        Ok(())
    }

    fn unified(&mut self, r: &Resources) -> Result<()> {
        for (key, value) in &r.unified {
            let invalid = |reason: String| CgroupError::InvalidResources {
                reason: format!("unified key {key:?}: {reason}"),
            };
            let Some((controller, _)) = key.split_once('.') else {
                return Err(invalid(
                    "not a cgroup v2 file name like memory.high".to_owned(),
                ));
            };
            if controller.is_empty() || key.contains(['/', '\0']) {
                return Err(invalid(
                    "not a cgroup v2 file name like memory.high".to_owned(),
                ));
            }
            let hierarchy = if controller == "cgroup" {
                self.layout.unified_index()
            } else {
                self.layout.hierarchy_index_for(controller)
            };
            let Some(hierarchy) = hierarchy else {
                return Err(invalid(format!(
                    "no cgroup hierarchy on this host has the {controller} controller"
                )));
            };
            if self.layout.hierarchies()[hierarchy].version() != CgroupVersion::V2 {
                return Err(invalid(format!(
                    "the {controller} controller is on cgroup v1 here; unified keys need it on v2"
                )));
            }
            self.push((hierarchy, CgroupVersion::V2), key, value.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::PathBuf;

    use super::*;
    use crate::layout::Hierarchy;

    fn hierarchy(version: CgroupVersion, mount: &str, controllers: &[&str]) -> Hierarchy {
        Hierarchy::new(
            version,
            PathBuf::from("/sys/fs/cgroup").join(mount),
            controllers.iter().map(|c| c.to_string()).collect(),
        )
    }

    fn v1_layout() -> CgroupLayout {
        use CgroupVersion::V1;
        CgroupLayout::from_hierarchies(vec![
            hierarchy(V1, "cpu,cpuacct", &["cpu", "cpuacct"]),
            hierarchy(V1, "cpuset", &["cpuset"]),
            hierarchy(V1, "memory", &["memory"]),
            hierarchy(V1, "pids", &["pids"]),
            hierarchy(V1, "hugetlb", &["hugetlb"]),
        ])
        .unwrap()
    }

    fn v2_layout() -> CgroupLayout {
        let all = ["cpu", "cpuset", "hugetlb", "io", "memory", "pids"];
        CgroupLayout::from_hierarchies(vec![hierarchy(CgroupVersion::V2, "", &all)]).unwrap()
    }

    fn hybrid_layout() -> CgroupLayout {
        use CgroupVersion::{V1, V2};
        CgroupLayout::from_hierarchies(vec![
            hierarchy(V1, "cpu", &["cpu"]),
            hierarchy(V1, "memory", &["memory"]),
            hierarchy(V1, "pids", &["pids"]),
            hierarchy(V2, "unified", &["hugetlb"]),
        ])
        .unwrap()
    }

    const NO_MEMORY_STATE: V1MemoryState = V1MemoryState {
        current_limit: None,
        memsw_supported: true,
    };

    /// The plan as `(mount dir name, file, value)` triples.
    fn writes(layout: &CgroupLayout, resources: &Resources, memory: V1MemoryState) -> Vec<String> {
        plan(layout, resources, memory)
            .unwrap()
            .writes
            .iter()
            .map(|w| {
                let mount = layout.hierarchies()[w.hierarchy].mount_point();
                let mount = mount.file_name().map_or("", |n| n.to_str().unwrap());
                format!("{mount}/{} = {}", w.file, w.value)
            })
            .collect()
    }

    fn everything() -> Resources {
        Resources {
            cpu_shares: Some(1024),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            cpuset_cpus: Some("0-1".to_owned()),
            cpuset_mems: Some("0".to_owned()),
            memory_limit_bytes: Some(256 << 20),
            memory_swap_limit_bytes: Some(512 << 20),
            pids_limit: Some(100),
            hugepage_limits: vec![("2MB".to_owned(), 4 << 20), ("1GB".to_owned(), 0)],
            unified: BTreeMap::new(),
        }
    }

    #[test]
    fn check_refuses_what_apply_would_refuse_and_passes_the_rest() {
        for layout in [v1_layout(), v2_layout()] {
            assert!(everything().check(&layout).is_ok());
            let swap_below_memory = Resources {
                memory_limit_bytes: Some(512 << 20),
                memory_swap_limit_bytes: Some(256 << 20),
                ..Resources::default()
            };
            let err = swap_below_memory.check(&layout).unwrap_err();
            assert!(matches!(err, CgroupError::InvalidResources { .. }), "{err}");
            let bad_page = Resources {
                hugepage_limits: vec![("../2MB".to_owned(), 1)],
                ..Resources::default()
            };
            assert!(bad_page.check(&layout).is_err());
        }
    }

    #[test]
    fn shares_convert_to_weights() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(512), 20);
        assert_eq!(shares_to_weight(262_144), 10_000);
        // Out-of-range shares are clamped first, as the kernel does for cpu.shares.
        assert_eq!(shares_to_weight(0), 1);
        assert_eq!(shares_to_weight(1 << 20), 10_000);
    }

    #[test]
    fn v1_files() {
        assert_eq!(
            writes(&v1_layout(), &everything(), NO_MEMORY_STATE),
            [
                "cpu,cpuacct/cpu.shares = 1024",
                "cpu,cpuacct/cpu.cfs_period_us = 100000",
                "cpu,cpuacct/cpu.cfs_quota_us = 50000",
                "cpuset/cpuset.cpus = 0-1",
                "cpuset/cpuset.mems = 0",
                "memory/memory.limit_in_bytes = 268435456",
                "memory/memory.memsw.limit_in_bytes = 536870912",
                "pids/pids.max = 100",
                "hugetlb/hugetlb.2MB.limit_in_bytes = 4194304",
                "hugetlb/hugetlb.1GB.limit_in_bytes = 0",
            ]
        );
        assert!(plan(&v1_layout(), &everything(), NO_MEMORY_STATE)
            .unwrap()
            .v2_controllers
            .is_empty());
    }

    #[test]
    fn v2_files() {
        let plan = plan(&v2_layout(), &everything(), NO_MEMORY_STATE).unwrap();
        assert_eq!(
            writes(&v2_layout(), &everything(), NO_MEMORY_STATE),
            [
                "cgroup/cpu.weight = 39",
                "cgroup/cpu.max = 50000 100000",
                "cgroup/cpuset.cpus = 0-1",
                "cgroup/cpuset.mems = 0",
                "cgroup/memory.max = 268435456",
                "cgroup/memory.swap.max = 268435456",
                "cgroup/pids.max = 100",
                "cgroup/hugetlb.2MB.max = 4194304",
                "cgroup/hugetlb.1GB.max = 0",
            ]
        );
        assert_eq!(
            plan.v2_controllers.into_iter().collect::<Vec<_>>(),
            ["cpu", "cpuset", "hugetlb", "memory", "pids"]
        );
    }

    #[test]
    fn hybrid_writes_each_limit_where_its_controller_is() {
        let resources = Resources {
            cpuset_cpus: None,
            cpuset_mems: None,
            ..everything()
        };
        let plan = plan(&hybrid_layout(), &resources, NO_MEMORY_STATE).unwrap();
        assert_eq!(
            writes(&hybrid_layout(), &resources, NO_MEMORY_STATE),
            [
                "cpu/cpu.shares = 1024",
                "cpu/cpu.cfs_period_us = 100000",
                "cpu/cpu.cfs_quota_us = 50000",
                "memory/memory.limit_in_bytes = 268435456",
                "memory/memory.memsw.limit_in_bytes = 536870912",
                "pids/pids.max = 100",
                "unified/hugetlb.2MB.max = 4194304",
                "unified/hugetlb.1GB.max = 0",
            ]
        );
        assert_eq!(
            plan.v2_controllers.into_iter().collect::<Vec<_>>(),
            ["hugetlb"]
        );
    }

    #[test]
    fn unlimited_and_unset_values() {
        let resources = Resources {
            cpu_shares: Some(0),
            cpu_quota: Some(-1),
            cpu_period: None,
            cpuset_cpus: Some(String::new()),
            memory_limit_bytes: Some(-1),
            memory_swap_limit_bytes: Some(-1),
            pids_limit: Some(-1),
            ..Resources::default()
        };
        assert_eq!(
            writes(&v1_layout(), &resources, NO_MEMORY_STATE),
            [
                "cpu,cpuacct/cpu.cfs_quota_us = -1",
                "memory/memory.memsw.limit_in_bytes = -1",
                "memory/memory.limit_in_bytes = -1",
                "pids/pids.max = max",
            ]
        );
        assert_eq!(
            writes(&v2_layout(), &resources, NO_MEMORY_STATE),
            [
                "cgroup/cpu.max = max",
                "cgroup/memory.max = max",
                "cgroup/memory.swap.max = max",
                "cgroup/pids.max = max",
            ]
        );
        assert_eq!(
            writes(&v2_layout(), &Resources::default(), NO_MEMORY_STATE),
            Vec::<String>::new()
        );
    }

    #[test]
    fn v1_memory_and_swap_are_ordered_to_keep_memsw_above_memory() {
        let raise = Resources {
            memory_limit_bytes: Some(200),
            memory_swap_limit_bytes: Some(300),
            ..Resources::default()
        };
        let currently = |limit| V1MemoryState {
            current_limit: Some(limit),
            memsw_supported: true,
        };
        assert_eq!(
            writes(&v1_layout(), &raise, currently(100)),
            [
                "memory/memory.memsw.limit_in_bytes = 300",
                "memory/memory.limit_in_bytes = 200"
            ]
        );
        // Lowering from a higher limit (or from "unlimited") sets memory first.
        for current in [500, 9_223_372_036_854_771_712] {
            assert_eq!(
                writes(&v1_layout(), &raise, currently(current)),
                [
                    "memory/memory.limit_in_bytes = 200",
                    "memory/memory.memsw.limit_in_bytes = 300"
                ]
            );
        }
        let no_swap_accounting = V1MemoryState {
            current_limit: None,
            memsw_supported: false,
        };
        assert_eq!(
            writes(&v1_layout(), &raise, no_swap_accounting),
            ["memory/memory.limit_in_bytes = 200"]
        );
    }

    #[test]
    fn impossible_swap_limits_are_errors() {
        for (memory, swap) in [(Some(300), Some(200)), (Some(-1), Some(200))] {
            let resources = Resources {
                memory_limit_bytes: memory,
                memory_swap_limit_bytes: swap,
                ..Resources::default()
            };
            for layout in [v1_layout(), v2_layout()] {
                let error = plan(&layout, &resources, NO_MEMORY_STATE).unwrap_err();
                assert!(error.to_string().contains("memory plus swap"), "{error}");
            }
        }
        let swap_alone = Resources {
            memory_swap_limit_bytes: Some(200),
            ..Resources::default()
        };
        let error = plan(&v2_layout(), &swap_alone, NO_MEMORY_STATE).unwrap_err();
        assert!(
            error.to_string().contains("needs a memory limit"),
            "{error}"
        );
        assert_eq!(
            writes(&v1_layout(), &swap_alone, NO_MEMORY_STATE),
            ["memory/memory.memsw.limit_in_bytes = 200"]
        );
    }

    #[test]
    fn missing_controllers_are_skipped() {
        let layout = CgroupLayout::from_hierarchies(vec![hierarchy(
            CgroupVersion::V1,
            "memory",
            &["memory"],
        )])
        .unwrap();
        assert_eq!(
            writes(&layout, &everything(), NO_MEMORY_STATE),
            [
                "memory/memory.limit_in_bytes = 268435456",
                "memory/memory.memsw.limit_in_bytes = 536870912",
            ]
        );
    }

    #[test]
    fn unified_keys_go_to_v2_only() {
        let unified = |key: &str| Resources {
            unified: BTreeMap::from([(key.to_owned(), "1G".to_owned())]),
            ..Resources::default()
        };
        assert_eq!(
            writes(&v2_layout(), &unified("memory.high"), NO_MEMORY_STATE),
            ["cgroup/memory.high = 1G"]
        );
        assert_eq!(
            writes(
                &hybrid_layout(),
                &unified("hugetlb.2MB.rsvd.max"),
                NO_MEMORY_STATE
            ),
            ["unified/hugetlb.2MB.rsvd.max = 1G"]
        );
        assert_eq!(
            writes(
                &hybrid_layout(),
                &unified("cgroup.max.descendants"),
                NO_MEMORY_STATE
            ),
            ["unified/cgroup.max.descendants = 1G"]
        );
        let cases = [
            (hybrid_layout(), "memory.high", "on cgroup v1 here"),
            (v1_layout(), "cgroup.max.depth", "no cgroup hierarchy"),
            (v2_layout(), "rdma.max", "no cgroup hierarchy"),
            (v2_layout(), "memoryhigh", "not a cgroup v2 file name"),
            (v2_layout(), "../memory.high", "not a cgroup v2 file name"),
        ];
        for (layout, key, message) in cases {
            let error = plan(&layout, &unified(key), NO_MEMORY_STATE).unwrap_err();
            assert!(error.to_string().contains(message), "{key}: {error}");
        }
    }

    #[test]
    fn hugepage_sizes_must_be_plain_names() {
        let resources = Resources {
            hugepage_limits: vec![("../2MB".to_owned(), 1)],
            ..Resources::default()
        };
        assert!(plan(&v2_layout(), &resources, NO_MEMORY_STATE).is_err());
    }
}
