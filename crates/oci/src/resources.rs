//! CRI `LinuxContainerResources` → OCI `linux.resources`, and the process's `oom_score_adj`.
//!
//! The CRI carries no per-container pids limit (kubelet sets it on the pod cgroup), so
//! `resources.pids` stays unset.

use std::collections::HashMap;
use std::path::Path;

use cri_proto::v1::LinuxContainerResources;
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources};

use crate::error::SpecError;

const FIELD: &str = "linux.resources";
/// `CAP_SYS_RESOURCE`, needed to lower an `oom_score_adj`.
const CAP_SYS_RESOURCE_BIT: u32 = 24;

/// The OCI resources for a CRI container's resources (also what `runc update` takes).
///
/// Zero means "not set" for every CRI number, as kubelet sends them; `cpu_quota` and
/// `memory_swap_limit_in_bytes` may be -1 (unlimited). Device rules are not set here.
pub fn linux_resources(resources: &LinuxContainerResources) -> Result<LinuxResources, SpecError> {
    let non_negative = |name: &str, value: i64| -> Result<Option<i64>, SpecError> {
        match value {
            0 => Ok(None),
            v if v > 0 => Ok(Some(v)),
            v => Err(SpecError::invalid(
                format!("{FIELD}.{name}"),
                format!("{v} is negative; use 0 for unset"),
            )),
        }
    };

    let mut cpu = LinuxCpu::default();
    let shares = non_negative("cpu_shares", resources.cpu_shares)?;
    let period = non_negative("cpu_period", resources.cpu_period)?;
    cpu.set_shares(shares.and_then(|v| u64::try_from(v).ok()));
    cpu.set_period(period.and_then(|v| u64::try_from(v).ok()));
    cpu.set_quota((resources.cpu_quota != 0).then_some(resources.cpu_quota));
    cpu.set_cpus(non_empty(&resources.cpuset_cpus));
    cpu.set_mems(non_empty(&resources.cpuset_mems));
    let cpu_set = cpu != LinuxCpu::default();

    let mut memory = LinuxMemory::default();
    memory.set_limit(non_negative(
        "memory_limit_in_bytes",
        resources.memory_limit_in_bytes,
    )?);
    let swap = resources.memory_swap_limit_in_bytes;
    if swap < -1 {
        return Err(SpecError::invalid(
            format!("{FIELD}.memory_swap_limit_in_bytes"),
            format!("{swap} is negative; use 0 for unset or -1 for unlimited"),
        ));
    }
    memory.set_swap((swap != 0).then_some(swap));
    let memory_set = memory != LinuxMemory::default();

    let mut hugepages = Vec::with_capacity(resources.hugepage_limits.len());
    for limit in &resources.hugepage_limits {
        if limit.page_size.is_empty() {
            return Err(SpecError::invalid(
                format!("{FIELD}.hugepage_limits"),
                "a limit has no page_size; use a size such as 2MB or 1GB",
            ));
        }
        let bytes = i64::try_from(limit.limit).map_err(|_| {
            SpecError::invalid(
                format!("{FIELD}.hugepage_limits[{}]", limit.page_size),
                format!("{} bytes is out of range", limit.limit),
            )
        })?;
        let mut oci = LinuxHugepageLimit::default();
        oci.set_page_size(limit.page_size.clone());
        oci.set_limit(bytes);
        hugepages.push(oci);
    }

    let mut oci = LinuxResources::default();
    oci.set_devices(None);
    oci.set_cpu(cpu_set.then_some(cpu));
    oci.set_memory(memory_set.then_some(memory));
    oci.set_hugepage_limits((!hugepages.is_empty()).then_some(hugepages));
    oci.set_unified((!resources.unified.is_empty()).then(|| {
        resources
            .unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>()
    }));
    Ok(oci)
}

/// Rewrites `resources` for `runc update` on a cgroup v2 host: runc applies `unified` there
/// but ignores `hugepageLimits` in an update, so each hugepage limit moves to `unified` as
/// `hugetlb.<size>.max`, and `hugetlb.<size>.rsvd.max` too where `has_rsvd(size)` says the
/// cgroup has that file (runc sets both when it creates a container). A value the caller
/// already put in `unified` wins.
pub fn hugepage_limits_to_unified(resources: &mut LinuxResources, has_rsvd: impl Fn(&str) -> bool) {
    let Some(limits) = resources.hugepage_limits().clone() else {
        return;
    };
    let mut unified = resources.unified().clone().unwrap_or_default();
    for limit in limits {
        let size = limit.page_size();
        let mut files = vec![format!("hugetlb.{size}.max")];
        if has_rsvd(size) {
            files.push(format!("hugetlb.{size}.rsvd.max"));
        }
        for file in files {
            unified
                .entry(file)
                .or_insert_with(|| limit.limit().to_string());
        }
    }
    resources.set_hugepage_limits(None);
    resources.set_unified(Some(unified));
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// The `oom_score_adj` for a container asking for `requested`: it must lie in -1000..=1000,
/// and without `CAP_SYS_RESOURCE` (`can_lower`) it cannot go below the runtime's own
/// (`own`), so it is raised to that, as for the pause process.
pub(crate) fn clamp_oom_score_adj(
    requested: i64,
    own: i32,
    can_lower: bool,
) -> Result<i32, SpecError> {
    let value = i32::try_from(requested)
        .ok()
        .filter(|v| (-1000..=1000).contains(v))
        .ok_or_else(|| {
            SpecError::invalid(
                format!("{FIELD}.oom_score_adj"),
                format!("{requested} is outside -1000..=1000"),
            )
        })?;
    if !can_lower && value < own {
        tracing::debug!(
            requested = value,
            own,
            "oom_score_adj raised to the runtime's own: no CAP_SYS_RESOURCE"
        );
        return Ok(own);
    }
    Ok(value)
}

/// This process's `oom_score_adj` and whether it may lower one (holds `CAP_SYS_RESOURCE`),
/// from `proc` (normally `/proc/self`). Unreadable files count as 0 and "may lower".
pub(crate) fn own_oom_limits(proc: &Path) -> (i32, bool) {
    let own = std::fs::read_to_string(proc.join("oom_score_adj"))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    let can_lower = std::fs::read_to_string(proc.join("status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .map_or(true, |caps| caps & (1 << CAP_SYS_RESOURCE_BIT) != 0);
    (own, can_lower)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cri_proto::v1::HugepageLimit;

    #[test]
    fn empty_resources_set_nothing() {
        let oci = linux_resources(&LinuxContainerResources::default()).unwrap();
        assert_eq!(oci.cpu(), &None);
        assert_eq!(oci.memory(), &None);
        assert_eq!(oci.hugepage_limits(), &None);
        assert_eq!(oci.unified(), &None);
        assert_eq!(oci.pids(), &None);
        assert_eq!(oci.devices(), &None);
    }

    #[test]
    fn every_field_maps() {
        let resources = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 128 << 20,
            oom_score_adj: 0,
            cpuset_cpus: "0-1".to_owned(),
            cpuset_mems: "0".to_owned(),
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".to_owned(),
                limit: 4 << 21,
            }],
            unified: [("memory.high".to_owned(), "1000000".to_owned())].into(),
        };
        let oci = linux_resources(&resources).unwrap();
        let cpu = oci.cpu().as_ref().unwrap();
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        let memory = oci.memory().as_ref().unwrap();
        assert_eq!(memory.limit(), Some(64 << 20));
        assert_eq!(memory.swap(), Some(128 << 20));
        let huge = &oci.hugepage_limits().as_ref().unwrap()[0];
        assert_eq!(huge.page_size(), "2MB");
        assert_eq!(huge.limit(), 4 << 21);
        assert_eq!(
            oci.unified().as_ref().unwrap().get("memory.high").unwrap(),
            "1000000"
        );
        let json = serde_json::to_value(&oci).unwrap();
        assert_eq!(json["memory"]["limit"], 64 << 20);
        assert_eq!(json["cpu"]["quota"], 50_000);
        assert_eq!(json["hugepageLimits"][0]["pageSize"], "2MB");
    }

    #[test]
    fn unlimited_values_pass_and_negative_ones_are_refused() {
        let resources = LinuxContainerResources {
            cpu_quota: -1,
            memory_swap_limit_in_bytes: -1,
            ..Default::default()
        };
        let oci = linux_resources(&resources).unwrap();
        assert_eq!(oci.cpu().as_ref().unwrap().quota(), Some(-1));
        assert_eq!(oci.memory().as_ref().unwrap().swap(), Some(-1));

        for bad in [
            LinuxContainerResources {
                memory_limit_in_bytes: -5,
                ..Default::default()
            },
            LinuxContainerResources {
                cpu_shares: -2,
                ..Default::default()
            },
            LinuxContainerResources {
                memory_swap_limit_in_bytes: -2,
                ..Default::default()
            },
            LinuxContainerResources {
                hugepage_limits: vec![HugepageLimit {
                    page_size: String::new(),
                    limit: 1,
                }],
                ..Default::default()
            },
            LinuxContainerResources {
                hugepage_limits: vec![HugepageLimit {
                    page_size: "1GB".to_owned(),
                    limit: u64::MAX,
                }],
                ..Default::default()
            },
        ] {
            let err = linux_resources(&bad).unwrap_err();
            assert!(err.is_invalid_argument());
            assert!(err.to_string().starts_with("linux.resources."), "{err}");
        }
    }

    #[test]
    fn oom_score_adj_is_clamped_only_without_cap_sys_resource() {
        assert_eq!(clamp_oom_score_adj(-998, -500, true).unwrap(), -998);
        assert_eq!(clamp_oom_score_adj(-998, -500, false).unwrap(), -500);
        assert_eq!(clamp_oom_score_adj(300, -500, false).unwrap(), 300);
        assert!(clamp_oom_score_adj(1001, 0, true)
            .unwrap_err()
            .is_invalid_argument());
        assert!(clamp_oom_score_adj(i64::MIN, 0, true).is_err());
    }

    #[test]
    fn own_limits_come_from_proc_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("oom_score_adj"), "-250\n").unwrap();
        std::fs::write(
            dir.path().join("status"),
            "Name:\tx\nCapEff:\t0000000000000000\n",
        )
        .unwrap();
        assert_eq!(own_oom_limits(dir.path()), (-250, false));
        std::fs::write(
            dir.path().join("status"),
            "Name:\tx\nCapEff:\t000001ffffffffff\n",
        )
        .unwrap();
        assert_eq!(own_oom_limits(dir.path()), (-250, true));
    }

    #[test]
    fn hugepage_limits_go_to_unified_for_an_update() {
        let cri = LinuxContainerResources {
            hugepage_limits: vec![
                HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 2 << 20,
                },
                HugepageLimit {
                    page_size: "1GB".into(),
                    limit: 0,
                },
            ],
            unified: [("hugetlb.1GB.max".to_string(), "max".to_string())].into(),
            ..Default::default()
        };
        let mut oci = linux_resources(&cri).unwrap();
        hugepage_limits_to_unified(&mut oci, |size| size == "2MB");
        assert_eq!(oci.hugepage_limits(), &None);
        let unified = oci.unified().clone().unwrap();
        assert_eq!(unified["hugetlb.2MB.max"], "2097152");
        assert_eq!(unified["hugetlb.2MB.rsvd.max"], "2097152");
        // The caller's own value is kept; no rsvd file for 1GB.
        assert_eq!(unified["hugetlb.1GB.max"], "max");
        assert!(!unified.contains_key("hugetlb.1GB.rsvd.max"));

        let mut none = linux_resources(&LinuxContainerResources::default()).unwrap();
        hugepage_limits_to_unified(&mut none, |_| true);
        assert_eq!(none.unified(), &None);
    }
}
