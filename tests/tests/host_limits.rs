//! Limits the host cannot enforce: kubelet sends a hugepage limit of 0 for every page size in
//! `/sys/kernel/mm/hugepages`, also where the container's cgroup has no hugetlb controller (a
//! hybrid host with hugetlb only on the unified mount, as the Debian 12 CI VMs). Those defaults
//! are left out and the container runs under real runc; a limit the user really set on a
//! missing controller is refused with InvalidArgument naming the controller.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use corral_e2e::cri::*;
use corral_e2e::*;
use cri_proto::v1::*;
use tonic::Code;

/// The host's hugepage sizes as kubelet names them for the CRI (`2MB`, `1GB`).
fn host_page_sizes() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Vec::new();
    };
    let mut sizes: Vec<String> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(match kb {
                kb if kb >= 1 << 20 => format!("{}GB", kb >> 20),
                kb if kb >= 1 << 10 => format!("{}MB", kb >> 10),
                kb => format!("{kb}KB"),
            })
        })
        .collect();
    sizes.sort();
    sizes
}

/// Page sizes the pod cgroup's children cannot limit: no v1 hugetlb hierarchy (runc on a v1 or
/// hybrid host uses only those), or on a pure v2 host not enabled for the pod.
fn sizes_without_hugetlb(pod_cgroup_parent: &str) -> Vec<String> {
    let v2_only = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    host_page_sizes()
        .into_iter()
        .filter(|size| {
            let file = if v2_only {
                Path::new("/sys/fs/cgroup")
                    .join(pod_cgroup_parent.trim_start_matches('/'))
                    .join(format!("hugetlb.{size}.max"))
            } else {
                Path::new("/sys/fs/cgroup/hugetlb")
                    .join(pod_cgroup_parent.trim_start_matches('/'))
                    .join(format!("hugetlb.{size}.limit_in_bytes"))
            };
            !file.exists()
        })
        .collect()
}

/// What kubelet 1.20 sends for a container with a cpu and memory limit.
fn kubelet_resources() -> LinuxContainerResources {
    LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 << 20,
        oom_score_adj: 900,
        hugepage_limits: host_page_sizes()
            .into_iter()
            .map(|page_size| HugepageLimit {
                page_size,
                limit: 0,
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn kubelet_default_hugepage_limits_without_hugetlb_do_not_stop_a_container() {
    require_root!();
    let Some(mut env) = container_env().await else {
        return;
    };
    let (pod, config) = env.pod_with("hugetlb", (0, 0, 0), |_| {}).await;
    let parent = config.linux.as_ref().unwrap().cgroup_parent.clone();
    let missing = sizes_without_hugetlb(&parent);
    if missing.is_empty() {
        eprintln!("skipped: every hugepage size has a hugetlb controller for the pod here");
        return;
    }

    let container = with_resources(
        container_config("limited", &env.image, &["sleep", "3600"]),
        kubelet_resources(),
    );
    let id = run(&mut env.rt, &pod, &config, container).await;
    let (status, _) = status(&mut env.rt, &id).await;
    assert_eq!(status.state(), ContainerState::ContainerRunning);
    // The limits the host has are still set.
    let pid = pid(&mut env.rt, &id).await;
    let cpu_dir = cgroup_of(pid, "cpu").expect("cpu cgroup");
    let quota = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu{cpu_dir}/cpu.cfs_quota_us"))
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup{cpu_dir}/cpu.max")))
        .unwrap();
    assert!(quota.starts_with("50000"), "{quota}");

    // A hugepage limit the user set for a size without a controller is refused, clearly.
    let mut resources = kubelet_resources();
    for limit in &mut resources.hugepage_limits {
        if limit.page_size == missing[0] {
            limit.limit = 2 << 30;
        }
    }
    let err = try_create(
        &mut env.rt,
        &pod,
        &config,
        with_resources(
            container_config("huge", &env.image, &["sleep", "3600"]),
            resources,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("hugetlb") && err.message().contains(&missing[0]),
        "{}",
        err.message()
    );
    // Nothing of the refused container is left.
    let listed = cri::all_containers(&mut env.rt).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    remove_pod(&mut env.rt, &pod).await;
}
