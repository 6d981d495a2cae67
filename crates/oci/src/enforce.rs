//! Leaving out of the spec the limits the host cannot enforce.
//!
//! kubelet sends some controller-dependent fields for every container whether or not the user
//! asked for a limit: `cpu_shares` (from the request, at least 2), `cpu_period` (100000),
//! `hugepage_limits` of 0 for every page size in `/sys/kernel/mm/hugepages`, and on cgroup v2
//! hosts `unified["memory.swap.max"] = "0"` and `unified["memory.oom.group"] = "1"` (current
//! kubelets), on v1 hosts with swap accounting `memory_swap_limit_in_bytes` equal to the memory
//! limit. Handing the runtime a limit for a controller the container's
//! cgroup does not have makes `runc create` fail, so such defaults are dropped (with a debug
//! log). A limit the user really set (a CPU quota, a memory limit, a non-zero hugepage limit,
//! swap beyond the memory limit, a cpuset, a `unified` value other than `max`) on a missing
//! controller is the request's fault: `InvalidArgument` naming the controller.
//! `oom_score_adj` is a process setting, not a cgroup one, and is never dropped.

use corral_cgroups::ChildLimits;
use oci_spec::runtime::LinuxResources;

use crate::error::SpecError;

const FIELD: &str = "linux.resources";

/// Removes from `resources` what `host` cannot enforce, or refuses a limit the user set.
pub fn drop_unenforceable(
    resources: &mut LinuxResources,
    host: &ChildLimits,
) -> Result<(), SpecError> {
    drop_cpu(resources, host)?;
    drop_memory(resources, host)?;
    drop_hugepages(resources, host)?;
    drop_unified(resources, host)
}

/// The refusal of a limit the user set on a controller the host lacks.
fn missing(field: &str, controller: &str, value: String) -> SpecError {
    SpecError::invalid(
        format!("{FIELD}.{field}"),
        format!(
            "{value} needs the {controller} cgroup controller, which this host does not \
             provide to the pod's containers; leave it unset or enable the controller"
        ),
    )
}

/// CPU shares, quota and period without the cpu controller; cpusets without cpuset.
fn drop_cpu(resources: &mut LinuxResources, host: &ChildLimits) -> Result<(), SpecError> {
    if let Some(mut cpu) = resources.cpu().clone() {
        if !host.cpu {
            if let Some(quota) = cpu.quota().filter(|q| *q > 0) {
                return Err(missing("cpu_quota", "cpu", quota.to_string()));
            }
            tracing::debug!(?cpu, "no cpu controller: leaving out cpu shares and period");
            cpu.set_shares(None);
            cpu.set_quota(None);
            cpu.set_period(None);
        }
        if !host.cpuset {
            if let Some(cpus) = cpu.cpus() {
                return Err(missing("cpuset_cpus", "cpuset", cpus.clone()));
            }
            if let Some(mems) = cpu.mems() {
                return Err(missing("cpuset_mems", "cpuset", mems.clone()));
            }
        }
        let empty = cpu == Default::default();
        resources.set_cpu((!empty).then_some(cpu));
    }
    Ok(())
}

/// The memory limit without the memory controller; swap without swap accounting.
fn drop_memory(resources: &mut LinuxResources, host: &ChildLimits) -> Result<(), SpecError> {
    if let Some(mut memory) = *resources.memory() {
        if !host.memory {
            if let Some(limit) = memory.limit() {
                return Err(missing(
                    "memory_limit_in_bytes",
                    "memory",
                    limit.to_string(),
                ));
            }
        }
        if let Some(swap) = memory.swap() {
            if !host.memory_swap {
                // -1 (unlimited) and "no more than the memory limit" ask for nothing extra.
                if swap > 0 && Some(swap) != memory.limit() {
                    return Err(missing(
                        "memory_swap_limit_in_bytes",
                        "memory swap accounting (memory.memsw / memory.swap.max) of the memory",
                        swap.to_string(),
                    ));
                }
                tracing::debug!(swap, "no swap accounting: leaving out the swap limit");
                memory.set_swap(None);
            }
        }
        let empty = memory == Default::default();
        resources.set_memory((!empty).then_some(memory));
    }
    Ok(())
}

/// Hugepage limits of page sizes the host has no hugetlb controller for.
fn drop_hugepages(resources: &mut LinuxResources, host: &ChildLimits) -> Result<(), SpecError> {
    if let Some(limits) = resources.hugepage_limits().clone() {
        let mut kept = Vec::with_capacity(limits.len());
        for limit in limits {
            if host.hugepage_sizes.iter().any(|s| s == limit.page_size()) {
                kept.push(limit);
            } else if limit.limit() != 0 {
                return Err(missing(
                    &format!("hugepage_limits[{}]", limit.page_size()),
                    &format!("hugetlb (page size {})", limit.page_size()),
                    limit.limit().to_string(),
                ));
            } else {
                tracing::debug!(
                    page_size = limit.page_size(),
                    "no hugetlb controller for this page size: leaving out its limit of 0"
                );
            }
        }
        resources.set_hugepage_limits((!kept.is_empty()).then_some(kept));
    }
    Ok(())
}

/// `unified` keys of controllers the host does not provide (or any on cgroup v1).
fn drop_unified(resources: &mut LinuxResources, host: &ChildLimits) -> Result<(), SpecError> {
    if let Some(unified) = resources.unified().clone() {
        let mut kept = unified.clone();
        for (key, value) in &unified {
            let controller = key.split('.').next().unwrap_or_default();
            let usable = match &host.unified_controllers {
                Some(controllers) => {
                    controller == "cgroup" || controllers.iter().any(|c| c == controller)
                }
                None => false,
            } && (key != "memory.swap.max" || host.memory_swap);
            if usable {
                continue;
            }
            if is_unified_default(key, value) {
                tracing::debug!(
                    key,
                    value,
                    "controller not available: leaving out unified {key}"
                );
                kept.remove(key);
            } else if host.unified_controllers.is_none() {
                return Err(SpecError::invalid(
                    format!("{FIELD}.unified[{key}]"),
                    "unified limits need a cgroup v2 host; this one has cgroup v1 or hybrid \
                     hierarchies: use the named fields (cpu_quota, memory_limit_in_bytes, ...)",
                ));
            } else if key == "memory.swap.max" {
                return Err(missing(
                    &format!("unified[{key}]"),
                    "memory swap accounting (memory.swap.max) of the memory",
                    value.clone(),
                ));
            } else {
                return Err(missing(
                    &format!("unified[{key}]"),
                    controller,
                    value.clone(),
                ));
            }
        }
        resources.set_unified((!kept.is_empty()).then_some(kept));
    }
    Ok(())
}

/// `unified` values kubelet sends without the user asking: `memory.swap.max` 0 (no swap, on v2
/// hosts with swap accounting), `memory.oom.group` 1 (v2, kill the whole container on OOM), and
/// any `max` (no limit).
fn is_unified_default(key: &str, value: &str) -> bool {
    let value = value.trim();
    value == "max"
        || (key == "memory.swap.max" && value == "0")
        || (key == "memory.oom.group" && (value == "1" || value == "0"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::resources::linux_resources;
    use cri_proto::v1::{HugepageLimit, LinuxContainerResources};

    /// The Debian 12 cloud VM: hybrid, hugetlb only on the unified mount.
    fn hybrid_without_hugetlb() -> ChildLimits {
        ChildLimits {
            cpu: true,
            cpuset: true,
            memory: true,
            memory_swap: true,
            hugepage_sizes: Vec::new(),
            unified_controllers: None,
        }
    }

    /// What kubelet sends for a best-effort container on a host with two page sizes.
    fn kubelet_defaults() -> LinuxContainerResources {
        LinuxContainerResources {
            cpu_shares: 2,
            cpu_period: 100_000,
            oom_score_adj: 1000,
            hugepage_limits: ["2MB", "1GB"]
                .map(|size| HugepageLimit {
                    page_size: size.into(),
                    limit: 0,
                })
                .into(),
            ..Default::default()
        }
    }

    fn apply(
        cri: &LinuxContainerResources,
        host: &ChildLimits,
    ) -> Result<LinuxResources, SpecError> {
        let mut oci = linux_resources(cri).unwrap();
        drop_unenforceable(&mut oci, host).map(|()| oci)
    }

    #[test]
    fn kubelet_defaults_for_missing_hugetlb_are_dropped_and_the_rest_kept() {
        let oci = apply(&kubelet_defaults(), &hybrid_without_hugetlb()).unwrap();
        assert_eq!(oci.hugepage_limits(), &None);
        let cpu = oci.cpu().as_ref().unwrap();
        assert_eq!((cpu.shares(), cpu.period()), (Some(2), Some(100_000)));

        let mut host = hybrid_without_hugetlb();
        host.hugepage_sizes = vec!["2MB".into()];
        let oci = apply(&kubelet_defaults(), &host).unwrap();
        let kept = oci.hugepage_limits().as_ref().unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].page_size(), "2MB");
    }

    #[test]
    fn a_hugepage_limit_the_user_set_is_refused_naming_hugetlb() {
        let mut cri = kubelet_defaults();
        cri.hugepage_limits[1].limit = 1 << 30;
        let err = apply(&cri, &hybrid_without_hugetlb()).unwrap_err();
        assert!(err.is_invalid_argument());
        let text = err.to_string();
        assert!(
            text.contains("hugepage_limits[1GB]") && text.contains("hugetlb"),
            "{text}"
        );
    }

    #[test]
    fn cpu_and_memory_defaults_drop_and_user_limits_are_refused_without_the_controllers() {
        let host = ChildLimits::default();
        let oci = apply(&kubelet_defaults(), &host).unwrap();
        assert_eq!(
            (oci.cpu(), oci.memory(), oci.hugepage_limits()),
            (&None, &None, &None)
        );

        let refused = [
            (
                LinuxContainerResources {
                    cpu_quota: 50_000,
                    ..kubelet_defaults()
                },
                "cpu_quota",
                "cpu cgroup controller",
            ),
            (
                LinuxContainerResources {
                    memory_limit_in_bytes: 64 << 20,
                    ..kubelet_defaults()
                },
                "memory_limit_in_bytes",
                "memory cgroup controller",
            ),
            (
                LinuxContainerResources {
                    cpuset_cpus: "0".into(),
                    ..kubelet_defaults()
                },
                "cpuset_cpus",
                "cpuset",
            ),
        ];
        for (cri, field, controller) in refused {
            let err = apply(&cri, &host).unwrap_err();
            assert!(err.is_invalid_argument());
            let text = err.to_string();
            assert!(text.contains(field) && text.contains(controller), "{text}");
        }
    }

    #[test]
    fn swap_without_accounting_drops_when_it_adds_nothing() {
        let mut host = hybrid_without_hugetlb();
        host.memory_swap = false;
        for swap in [-1, 64 << 20] {
            let cri = LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                memory_swap_limit_in_bytes: swap,
                ..Default::default()
            };
            let oci = apply(&cri, &host).unwrap();
            let memory = oci.memory().as_ref().unwrap();
            assert_eq!((memory.limit(), memory.swap()), (Some(64 << 20), None));
        }
        let cri = LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 128 << 20,
            ..Default::default()
        };
        let err = apply(&cri, &host).unwrap_err();
        assert!(err.to_string().contains("swap"), "{err}");
    }

    fn unified(key: &str, value: &str) -> LinuxContainerResources {
        LinuxContainerResources {
            unified: [(key.to_owned(), value.to_owned())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn unified_entries_need_v2_and_their_controller() {
        let swap_off = unified("memory.swap.max", "0");
        let oom_group = unified("memory.oom.group", "1");
        let unlimited = unified("memory.high", "max");
        let user_set = unified("memory.high", "1000000");
        // v1/hybrid: kubelet's defaults are dropped, a real limit is refused.
        let host = hybrid_without_hugetlb();
        for default in [&swap_off, &oom_group, &unlimited] {
            assert_eq!(apply(default, &host).unwrap().unified(), &None);
        }
        let err = apply(&user_set, &host).unwrap_err();
        assert!(err.to_string().contains("cgroup v2"), "{err}");
        // v2 with memory: kept.
        let v2 = ChildLimits {
            unified_controllers: Some(vec!["cpu".into(), "memory".into()]),
            ..host.clone()
        };
        assert!(apply(&swap_off, &v2).unwrap().unified().is_some());
        assert!(apply(&user_set, &v2).unwrap().unified().is_some());
        // v2 without memory: defaults dropped, a real limit refused.
        let v2_no_memory = ChildLimits {
            unified_controllers: Some(vec!["cpu".into()]),
            ..host
        };
        assert_eq!(apply(&oom_group, &v2_no_memory).unwrap().unified(), &None);
        let err = apply(&user_set, &v2_no_memory).unwrap_err();
        assert!(
            err.to_string().contains("memory cgroup controller"),
            "{err}"
        );
        // v2 with memory but without swap accounting: only "no swap" passes (dropped).
        let v2_no_swap = ChildLimits {
            memory_swap: false,
            ..v2
        };
        assert_eq!(apply(&swap_off, &v2_no_swap).unwrap().unified(), &None);
        let err = apply(&unified("memory.swap.max", "1000000"), &v2_no_swap).unwrap_err();
        assert!(err.to_string().contains("swap"), "{err}");
    }
}
