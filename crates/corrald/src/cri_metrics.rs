//! ListMetricDescriptors, ListPodSandboxMetrics and StreamPodSandboxMetrics: the container
//! metrics kubelet's `/metrics/cadvisor` endpoint exposes, served by the runtime for kubelet's
//! `PodAndContainerStatsFromCRI` mode (kubelet turns each descriptor into a Prometheus
//! description and each metric into a sample, so names, help texts and label keys are cAdvisor's).
//!
//! Every series carries cAdvisor's base labels `container, id, image, name, namespace, pod`
//! (for a pod's own series `container`, `image` and `name` are empty and `id` is the pod
//! cgroup, as cAdvisor reports the pod cgroup); network series add `interface`, filesystem
//! series `device`, CPU usage `cpu` (always `total`: cAdvisor's value when per-CPU usage is
//! off, as kubelet runs it). The CRI carries values as unsigned integers, so the `_seconds`
//! metrics are whole seconds.
//!
//! Values come from the cgroups (`corral_cgroups::stats`), the writable layer and the pod's
//! network namespace, through the same readers as the stats RPCs (`crate::stats`).

use std::path::Path;
use std::sync::Arc;

use corral_cgroups::stats::{processes_and_threads, CpuSpec, CpuTimes, MemoryCounters};
use corral_cgroups::CgroupLayout;
use cri_proto::v1::{
    ContainerMetrics, ContainerState, ContainerStateValue, Metric, MetricDescriptor, MetricType,
    PodSandboxFilter, PodSandboxMetrics, PodSandboxStateValue, UInt64Value,
};

use crate::container::ContainerRecord;
use crate::error::{CriError, CriResult};
use crate::ids::now_nanos;
use crate::pod::SandboxRecord;
use crate::Daemon;

/// cAdvisor's labels on every series.
pub const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// One metric family: name, help, the labels beyond the base ones, counter or gauge.
struct Family {
    name: &'static str,
    help: &'static str,
    extra_label: Option<&'static str>,
    kind: MetricType,
}

const fn family(
    name: &'static str,
    help: &'static str,
    extra_label: Option<&'static str>,
    kind: MetricType,
) -> Family {
    Family {
        name,
        help,
        extra_label,
        kind,
    }
}

use MetricType::{Counter, Gauge};

/// Every metric family served, with cAdvisor's names and help texts.
const FAMILIES: &[Family] = &[
    family(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        Some("cpu"),
        Counter,
    ),
    family(
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
        None,
        Counter,
    ),
    family(
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
        None,
        Counter,
    ),
    family(
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
        None,
        Counter,
    ),
    family(
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
        None,
        Counter,
    ),
    family(
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
        None,
        Counter,
    ),
    family(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        None,
        Gauge,
    ),
    family(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        None,
        Gauge,
    ),
    family("container_memory_rss", "Size of RSS in bytes.", None, Gauge),
    family(
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        None,
        Gauge,
    ),
    family(
        "container_memory_failcnt",
        "Number of memory usage hits limits",
        None,
        Counter,
    ),
    family(
        "container_oom_events_total",
        "Count of out of memory events observed for the container",
        None,
        Counter,
    ),
    family(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        None,
        Gauge,
    ),
    family(
        "container_spec_cpu_quota",
        "CPU quota of the container.",
        None,
        Gauge,
    ),
    family(
        "container_spec_cpu_period",
        "CPU period of the container.",
        None,
        Gauge,
    ),
    family(
        "container_spec_cpu_shares",
        "CPU share of the container.",
        None,
        Gauge,
    ),
    family(
        "container_processes",
        "Number of processes running inside the container.",
        None,
        Gauge,
    ),
    family(
        "container_threads",
        "Number of threads running inside the container",
        None,
        Gauge,
    ),
    family(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        Some("device"),
        Gauge,
    ),
    family(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        Some("interface"),
        Counter,
    ),
    family(
        "container_network_receive_packets_total",
        "Cumulative count of packets received",
        Some("interface"),
        Counter,
    ),
    family(
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        Some("interface"),
        Counter,
    ),
    family(
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving",
        Some("interface"),
        Counter,
    ),
    family(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        Some("interface"),
        Counter,
    ),
    family(
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted",
        Some("interface"),
        Counter,
    ),
    family(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        Some("interface"),
        Counter,
    ),
    family(
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting",
        Some("interface"),
        Counter,
    ),
    family(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        None,
        Gauge,
    ),
    family(
        "container_last_seen",
        "Last time a container was seen by the exporter",
        None,
        Gauge,
    ),
];

/// ListMetricDescriptors.
pub fn descriptors() -> Vec<MetricDescriptor> {
    FAMILIES
        .iter()
        .map(|f| MetricDescriptor {
            name: f.name.into(),
            help: f.help.into(),
            label_keys: BASE_LABELS
                .iter()
                .chain(f.extra_label.as_ref())
                .map(|l| l.to_string())
                .collect(),
        })
        .collect()
}

/// Collects the samples of one object (a pod or a container) under its base label values.
struct Samples {
    base: Vec<String>,
    at: i64,
    out: Vec<Metric>,
}

impl Samples {
    fn new(base: Vec<String>) -> Samples {
        Samples {
            base,
            at: now_nanos(),
            out: Vec::new(),
        }
    }

    /// A sample of `name` (a family of [`FAMILIES`]) with the extra label value, if any.
    fn add(&mut self, name: &str, extra: Option<&str>, value: u64) {
        let Some(family) = FAMILIES.iter().find(|f| f.name == name) else {
            tracing::error!(metric = name, "metric without a descriptor left out");
            return;
        };
        let mut label_values = self.base.clone();
        label_values.extend(extra.map(String::from));
        self.out.push(Metric {
            name: name.into(),
            timestamp: self.at,
            metric_type: family.kind as i32,
            label_values,
            value: Some(UInt64Value { value }),
        });
    }

    fn cgroup(&mut self, layout: &CgroupLayout, relative: &Path) {
        if let Some(cpu) = CpuTimes::read(layout, relative) {
            let seconds = |ns: u64| ns / 1_000_000_000;
            if let Some(v) = cpu.usage_ns {
                self.add(
                    "container_cpu_usage_seconds_total",
                    Some("total"),
                    seconds(v),
                );
            }
            if let Some(v) = cpu.user_ns {
                self.add("container_cpu_user_seconds_total", None, seconds(v));
            }
            if let Some(v) = cpu.system_ns {
                self.add("container_cpu_system_seconds_total", None, seconds(v));
            }
            if let Some(v) = cpu.periods {
                self.add("container_cpu_cfs_periods_total", None, v);
            }
            if let Some(v) = cpu.throttled_periods {
                self.add("container_cpu_cfs_throttled_periods_total", None, v);
            }
            if let Some(v) = cpu.throttled_ns {
                self.add(
                    "container_cpu_cfs_throttled_seconds_total",
                    None,
                    seconds(v),
                );
            }
        }
        if let Some(memory) = MemoryCounters::read(layout, relative) {
            self.add("container_memory_usage_bytes", None, memory.usage);
            self.add(
                "container_memory_working_set_bytes",
                None,
                memory.working_set(),
            );
            self.add("container_memory_rss", None, memory.rss);
            self.add("container_memory_cache", None, memory.cache);
            if let Some(v) = memory.failcnt {
                self.add("container_memory_failcnt", None, v);
            }
            if let Some(v) = memory.oom_kills {
                self.add("container_oom_events_total", None, v);
            }
            // cAdvisor reports no limit as 0.
            self.add(
                "container_spec_memory_limit_bytes",
                None,
                memory.limit.unwrap_or(0),
            );
        }
        if let Some(spec) = CpuSpec::read(layout, relative) {
            self.add("container_spec_cpu_quota", None, spec.quota_us.unwrap_or(0));
            if let Some(v) = spec.period_us {
                self.add("container_spec_cpu_period", None, v);
            }
            if let Some(v) = spec.shares {
                self.add("container_spec_cpu_shares", None, v);
            }
        }
    }

    fn times(&mut self, start_ns: i64) {
        let seconds = |ns: i64| u64::try_from(ns / 1_000_000_000).unwrap_or(0);
        self.add("container_start_time_seconds", None, seconds(start_ns));
        self.add("container_last_seen", None, seconds(self.at));
    }
}

/// The metrics of one running container.
fn container_metrics(
    env: &crate::container::ContainerEnv,
    sandbox: &SandboxRecord,
    record: &ContainerRecord,
) -> ContainerMetrics {
    let meta = sandbox.config.metadata.clone().unwrap_or_default();
    let relative = record.cgroup_relative.as_path();
    let mut samples = Samples::new(vec![
        record
            .config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        Path::new("/").join(relative).to_string_lossy().into_owned(),
        record.image_name.clone(),
        record.id.clone(),
        meta.namespace,
        meta.name,
    ]);
    if !relative.as_os_str().is_empty() {
        samples.cgroup(&env.cgroup_layout, relative);
        if let Some((processes, threads)) = processes_and_threads(&env.cgroup_layout, relative) {
            samples.add("container_processes", None, processes);
            samples.add("container_threads", None, threads);
        }
    }
    if let Ok(dir) = env.images.container_dir(&record.id) {
        let upper = dir.join("upper");
        if let Some(usage) = crate::stats::layer_usage(&upper, crate::stats::MAX_LAYER_ENTRIES) {
            let device = upper.to_string_lossy().into_owned();
            samples.add("container_fs_usage_bytes", Some(&device), usage.bytes);
        }
    }
    samples.times(record.started_at);
    ContainerMetrics {
        container_id: record.id.clone(),
        metrics: samples.out,
    }
}

/// The metrics of a pod: its cgroup, its network namespace, and its running containers.
fn pod_metrics(
    env: &crate::container::ContainerEnv,
    sandbox: &SandboxRecord,
    containers: &[ContainerRecord],
) -> PodSandboxMetrics {
    let meta = sandbox.config.metadata.clone().unwrap_or_default();
    let cgroup = sandbox.pod_cgroup.as_ref();
    let id = cgroup
        .map(|c| {
            Path::new("/")
                .join(c.relative_path())
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let mut samples = Samples::new(vec![
        String::new(),
        id,
        String::new(),
        String::new(),
        meta.namespace,
        meta.name,
    ]);
    if let Some(c) = cgroup {
        samples.cgroup(c.layout(), c.relative_path());
        if let Some(count) = crate::stats::process_count(c.layout(), c.relative_path()) {
            samples.add("container_processes", None, count);
        }
    }
    for i in crate::stats::pod_interfaces(sandbox).unwrap_or_default() {
        let name = Some(i.name.as_str());
        for (metric, value) in [
            ("container_network_receive_bytes_total", i.rx_bytes),
            ("container_network_receive_packets_total", i.rx_packets),
            ("container_network_receive_errors_total", i.rx_errors),
            (
                "container_network_receive_packets_dropped_total",
                i.rx_dropped,
            ),
            ("container_network_transmit_bytes_total", i.tx_bytes),
            ("container_network_transmit_packets_total", i.tx_packets),
            ("container_network_transmit_errors_total", i.tx_errors),
            (
                "container_network_transmit_packets_dropped_total",
                i.tx_dropped,
            ),
        ] {
            samples.add(metric, name, value);
        }
    }
    samples.times(sandbox.created_at);
    PodSandboxMetrics {
        pod_sandbox_id: sandbox.id.clone(),
        metrics: samples.out,
        container_metrics: containers
            .iter()
            .map(|c| container_metrics(env, sandbox, c))
            .collect(),
    }
}

/// ListPodSandboxMetrics and StreamPodSandboxMetrics: every ready pod with its running
/// containers.
pub async fn pods(daemon: &Arc<Daemon>) -> CriResult<Vec<PodSandboxMetrics>> {
    let ready = daemon
        .pods
        .list(Some(&PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: cri_proto::v1::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        }))
        .await?;
    // Those removed since they were listed are left out.
    let sandboxes = daemon
        .pods
        .sandboxes_async(ready.into_iter().map(|pod| pod.id).collect())
        .await?;
    let running = daemon
        .containers
        .list(Some(cri_proto::v1::ContainerFilter {
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        }))
        .await?;
    let mut records = Vec::with_capacity(running.len());
    for c in running {
        records.extend(
            daemon
                .store
                .get::<ContainerRecord>(corral_store::CONTAINERS, &c.id)?,
        );
    }
    let env = daemon.containers.env_handle();
    tokio::task::spawn_blocking(move || {
        sandboxes
            .iter()
            .map(|s| {
                let containers: Vec<_> = records
                    .iter()
                    .filter(|r| r.pod_sandbox_id == s.id)
                    .cloned()
                    .collect();
                pod_metrics(&env, s, &containers)
            })
            .collect()
    })
    .await
    .map_err(|e| CriError::internal("ListPodSandboxMetrics task", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_cadvisors_with_its_base_labels() {
        let descriptors = descriptors();
        assert_eq!(descriptors.len(), FAMILIES.len());
        let mut names: Vec<_> = descriptors.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len(), "no family twice");
        for d in &descriptors {
            assert!(d.name.starts_with("container_"), "{}", d.name);
            assert!(!d.help.is_empty(), "{}", d.name);
            assert_eq!(&d.label_keys[..6], &BASE_LABELS.map(String::from)[..]);
        }
    }

    #[test]
    fn samples_carry_the_base_labels_then_the_extra_one() {
        let mut samples = Samples::new(vec!["c".into(); 6]);
        samples.add("container_network_receive_bytes_total", Some("eth0"), 5);
        samples.add("container_last_seen", None, 7);
        samples.add("not_a_family", None, 1);
        assert_eq!(samples.out.len(), 2);
        assert_eq!(samples.out[0].label_values.len(), 7);
        assert_eq!(samples.out[0].label_values[6], "eth0");
        assert_eq!(samples.out[0].metric_type, MetricType::Counter as i32);
        assert_eq!(samples.out[1].label_values.len(), 6);
        assert_eq!(samples.out[1].metric_type, MetricType::Gauge as i32);
    }
}
