//! ListMetricDescriptors, ListPodSandboxMetrics and StreamPodSandboxMetrics against a real
//! corrald: cAdvisor's metric names and label keys, and values compared with the cgroup files
//! and the pod's network counters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use corral_e2e::cri::{self, container_env as env};
use cri_proto::v1::*;

const POD: i32 = NamespaceMode::Pod as i32;
const CONTAINER: i32 = NamespaceMode::Container as i32;

const BASE: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// The cAdvisor metrics kubelet's /metrics/cadvisor exposes that corral must serve, with the
/// label beyond the base ones.
const EXPECTED: &[(&str, Option<&str>)] = &[
    ("container_cpu_usage_seconds_total", Some("cpu")),
    ("container_cpu_user_seconds_total", None),
    ("container_cpu_system_seconds_total", None),
    ("container_cpu_cfs_throttled_periods_total", None),
    ("container_memory_usage_bytes", None),
    ("container_memory_working_set_bytes", None),
    ("container_memory_rss", None),
    ("container_memory_cache", None),
    ("container_memory_failcnt", None),
    ("container_oom_events_total", None),
    ("container_spec_memory_limit_bytes", None),
    ("container_spec_cpu_quota", None),
    ("container_spec_cpu_shares", None),
    ("container_processes", None),
    ("container_threads", None),
    ("container_fs_usage_bytes", Some("device")),
    ("container_network_receive_bytes_total", Some("interface")),
    ("container_network_transmit_bytes_total", Some("interface")),
    ("container_network_receive_packets_total", Some("interface")),
    (
        "container_network_transmit_packets_total",
        Some("interface"),
    ),
    ("container_network_receive_errors_total", Some("interface")),
    ("container_network_transmit_errors_total", Some("interface")),
    (
        "container_network_receive_packets_dropped_total",
        Some("interface"),
    ),
    (
        "container_network_transmit_packets_dropped_total",
        Some("interface"),
    ),
    ("container_start_time_seconds", None),
    ("container_last_seen", None),
];

fn value(metrics: &[Metric], name: &str) -> u64 {
    metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no {name} in {metrics:#?}"))
        .value
        .as_ref()
        .unwrap()
        .value
}

/// The directory of cgroup `id` (a path from the cgroup root) for `controller`: the v1
/// hierarchy when the host has one, else the unified one.
fn cgroup_dir(controller: &str, id: &str) -> (PathBuf, bool) {
    let v1 = Path::new("/sys/fs/cgroup").join(controller);
    let relative = id.trim_start_matches('/');
    if v1.is_dir() {
        (v1.join(relative), true)
    } else {
        (Path::new("/sys/fs/cgroup").join(relative), false)
    }
}

fn read_u64(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn descriptors_are_cadvisors_names_and_labels() {
    let Some(mut env) = env().await else { return };
    let descriptors = env
        .rt
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors;
    for (name, extra) in EXPECTED {
        let d = descriptors
            .iter()
            .find(|d| d.name == *name)
            .unwrap_or_else(|| panic!("no descriptor {name}"));
        let mut want: Vec<&str> = BASE.to_vec();
        want.extend(extra);
        assert_eq!(d.label_keys, want, "labels of {name}");
        assert!(!d.help.is_empty(), "help of {name}");
    }
    let usage = descriptors
        .iter()
        .find(|d| d.name == "container_memory_working_set_bytes")
        .unwrap();
    assert_eq!(usage.help, "Current working set in bytes.");
}

#[tokio::test]
async fn pod_and_container_metrics_match_the_cgroup_files() {
    let Some(mut env) = env().await else { return };
    let (pod_id, config) = env.pod_with("metrics", (POD, CONTAINER, POD), |_| {}).await;
    let mut cfg = cri::container_config("worker", &env.image, &["sleep", "3600"]);
    cfg.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 * 1024 * 1024,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = cri::run(&mut env.rt, &pod_id, &config, cfg).await;
    let (status, _) = cri::status(&mut env.rt, &id).await;

    let pods = env
        .rt
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics;
    let pod = pods
        .iter()
        .find(|p| p.pod_sandbox_id == pod_id)
        .expect("metrics of the pod");
    let container = pod
        .container_metrics
        .iter()
        .find(|c| c.container_id == id)
        .expect("metrics of the container");
    let m = &container.metrics;
    for metric in m {
        let labels = &metric.label_values;
        assert!(labels.len() >= 6, "{metric:?}");
        assert_eq!(labels[0], "worker");
        assert_eq!(labels[2], env.image);
        assert_eq!(labels[3], id);
        assert_eq!(labels[4], "e2e");
        assert_eq!(labels[5], "metrics");
        assert!(metric.timestamp > 0);
    }
    let cgroup_id = m[0].label_values[1].clone();

    // Settings: exactly what the cgroup files say.
    let (memory, v1) = cgroup_dir("memory", &cgroup_id);
    let limit_file = if v1 {
        "memory.limit_in_bytes"
    } else {
        "memory.max"
    };
    assert_eq!(
        value(m, "container_spec_memory_limit_bytes"),
        read_u64(&memory.join(limit_file))
    );
    assert_eq!(
        value(m, "container_spec_memory_limit_bytes"),
        64 * 1024 * 1024
    );
    let (cpu, v1) = cgroup_dir("cpu", &cgroup_id);
    if v1 {
        assert_eq!(
            value(m, "container_spec_cpu_quota"),
            read_u64(&cpu.join("cpu.cfs_quota_us"))
        );
        assert_eq!(
            value(m, "container_spec_cpu_shares"),
            read_u64(&cpu.join("cpu.shares"))
        );
    }
    assert_eq!(value(m, "container_spec_cpu_quota"), 50_000);
    if v1 {
        assert_eq!(
            value(m, "container_memory_failcnt"),
            read_u64(&memory.join("memory.failcnt"))
        );
    }
    assert_eq!(value(m, "container_oom_events_total"), 0);

    // Processes: one `sleep`, the same as cgroup.procs.
    let (pids, _) = cgroup_dir("pids", &cgroup_id);
    let procs = std::fs::read_to_string(pids.join("cgroup.procs")).unwrap();
    assert_eq!(
        value(m, "container_processes"),
        procs.lines().count() as u64
    );
    assert_eq!(value(m, "container_processes"), 1);
    assert_eq!(value(m, "container_threads"), 1);

    // Counters and gauges: between readings of the file taken around the call.
    let usage_file = if v1 {
        "memory.usage_in_bytes"
    } else {
        "memory.current"
    };
    let usage = value(m, "container_memory_usage_bytes");
    assert!(usage > 0);
    assert!(value(m, "container_memory_working_set_bytes") <= usage);
    let now_usage = read_u64(&memory.join(usage_file));
    assert!(
        usage.abs_diff(now_usage) < 16 * 1024 * 1024,
        "usage {usage} vs file {now_usage}"
    );
    assert_eq!(
        value(m, "container_start_time_seconds"),
        u64::try_from(status.started_at / 1_000_000_000).unwrap()
    );
    assert!(value(m, "container_last_seen") >= value(m, "container_start_time_seconds"));
    assert!(m
        .iter()
        .any(|x| x.name == "container_fs_usage_bytes" && x.label_values.len() == 7));

    // The pod: network counters of eth0 no larger than the kernel's a moment later.
    let p = &pod.metrics;
    let rx = p
        .iter()
        .find(|x| {
            x.name == "container_network_receive_bytes_total"
                && x.label_values.get(6).map(String::as_str) == Some("eth0")
        })
        .expect("eth0 receive bytes of the pod");
    assert_eq!(
        rx.label_values[0], "",
        "a pod's own series has no container"
    );
    let pause = cri::pause_pid(&mut env.rt, &pod_id).await;
    let dev = std::fs::read_to_string(format!("/proc/{pause}/net/dev")).unwrap();
    let eth0_rx: u64 = dev
        .lines()
        .find_map(|l| l.trim().strip_prefix("eth0:"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(rx.value.as_ref().unwrap().value <= eth0_rx);
    assert!(value(p, "container_processes") >= 2, "pause and sleep");

    // PSI in the stats RPCs where the kernel has it for this cgroup (cgroup v2 files).
    let unified = if Path::new("/sys/fs/cgroup/unified").is_dir() {
        Path::new("/sys/fs/cgroup/unified").join(cgroup_id.trim_start_matches('/'))
    } else {
        Path::new("/sys/fs/cgroup").join(cgroup_id.trim_start_matches('/'))
    };
    let stats = env
        .rt
        .container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .unwrap();
    let psi = stats.cpu.as_ref().and_then(|c| c.psi.as_ref());
    if unified.join("cpu.pressure").exists() {
        let some = psi.and_then(|p| p.some.as_ref()).expect("cpu PSI");
        let file = std::fs::read_to_string(unified.join("cpu.pressure")).unwrap();
        let total: u64 = file
            .split_whitespace()
            .find_map(|f| f.strip_prefix("total="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            some.total <= total,
            "PSI total {} vs file {total}",
            some.total
        );
        assert!(stats.memory.as_ref().unwrap().psi.is_some(), "memory PSI");
    } else {
        eprintln!("no cpu.pressure for the container's cgroup: PSI not checked");
        assert!(psi.is_none());
    }

    // The stream variant carries the same pods.
    let mut stream = env
        .rt
        .stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest {})
        .await
        .expect("StreamPodSandboxMetrics")
        .into_inner();
    let mut seen = false;
    while let Some(batch) = stream.message().await.expect("stream") {
        seen |= batch
            .pod_sandbox_metrics
            .iter()
            .any(|p| p.pod_sandbox_id == pod_id);
    }
    assert!(seen, "the pod in the stream");
    cri::remove_pod(&mut env.rt, &pod_id).await;
}
