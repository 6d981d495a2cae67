//! CRI resource requests as cgroup limits.

use corral_cgroups::Resources;
use cri_proto::v1::LinuxContainerResources;

/// The cgroup limits a `LinuxContainerResources` asks for; zero or empty fields mean "unset".
pub fn from_cri(r: &LinuxContainerResources) -> Resources {
    let positive = |v: i64| (v > 0).then_some(v);
    Resources {
        cpu_shares: u64::try_from(r.cpu_shares).ok().filter(|v| *v > 0),
        cpu_quota: positive(r.cpu_quota),
        cpu_period: u64::try_from(r.cpu_period).ok().filter(|v| *v > 0),
        cpuset_cpus: (!r.cpuset_cpus.is_empty()).then(|| r.cpuset_cpus.clone()),
        cpuset_mems: (!r.cpuset_mems.is_empty()).then(|| r.cpuset_mems.clone()),
        memory_limit_bytes: positive(r.memory_limit_in_bytes),
        memory_swap_limit_bytes: positive(r.memory_swap_limit_in_bytes),
        pids_limit: None,
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|h| (h.page_size.clone(), h.limit))
            .collect(),
        unified: r.unified.clone().into_iter().collect(),
    }
}

/// Adds a pod's overhead to its limits: CPU and memory the sandbox itself needs on top of its
/// containers (only where a limit is set; an unset limit stays unlimited).
pub fn add_overhead(res: &mut Resources, overhead: &LinuxContainerResources) {
    if let (Some(limit), true) = (
        res.memory_limit_bytes.as_mut(),
        overhead.memory_limit_in_bytes > 0,
    ) {
        *limit = limit.saturating_add(overhead.memory_limit_in_bytes);
    }
    if let (Some(quota), true) = (res.cpu_quota.as_mut(), overhead.cpu_quota > 0) {
        *quota = quota.saturating_add(overhead.cpu_quota);
    }
    if let (Some(shares), Ok(extra)) = (res.cpu_shares.as_mut(), u64::try_from(overhead.cpu_shares))
    {
        *shares = shares.saturating_add(extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_fields_are_unset() {
        let r = from_cri(&LinuxContainerResources::default());
        assert_eq!(r.cpu_shares, None);
        assert_eq!(r.memory_limit_bytes, None);
        assert!(r.hugepage_limits.is_empty());
    }

    #[test]
    fn limits_and_overhead() {
        let mut r = from_cri(&LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        });
        add_overhead(
            &mut r,
            &LinuxContainerResources {
                memory_limit_in_bytes: 1 << 20,
                cpu_quota: 1000,
                cpu_shares: 2,
                ..Default::default()
            },
        );
        assert_eq!(r.memory_limit_bytes, Some(65 << 20));
        assert_eq!(r.cpu_quota, Some(51_000));
        assert_eq!(r.cpu_shares, Some(514));
        assert_eq!(r.cpu_period, Some(100_000));
    }
}
