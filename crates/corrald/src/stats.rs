//! ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats and their Stream
//! variants: what kubelet's CRI stats provider reads for the summary API.
//!
//! CPU and memory come from the cgroups (the container's `cgroup_relative`, the pod's
//! `pod_cgroup`; cgroup v1 or v2, whichever hierarchy has the controller), the writable layer
//! from walking the container's overlay upper directory, a pod's network from the pause
//! process's `/proc/<pid>/net/dev`. The CPU rate (`usage_nano_cores`) is the change since the
//! previous sample of the same object, kept in memory. Files that are missing (a cgroup already
//! removed, a controller the host lacks) leave the matching field unset instead of failing.
//!
//! Each object's cgroup directories are opened once per call ([`CgroupFiles`]) and its files
//! read relative to them; the memory counters read for `memory` also give v1's swap figures.
//! No descriptor is kept between calls.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use corral_cgroups::dir::CgroupFiles;
use corral_cgroups::stats::{CpuTimes, MemoryCounters, Pressure, PressureLine};
use corral_cgroups::usage::SwapCounters;
use corral_cgroups::CgroupLayout;
pub(crate) use corral_image::usage::layer_usage;
use corral_sandbox::net_dev::InterfaceCounters;
use corral_store::CONTAINERS;
use cri_proto::v1::{
    ContainerAttributes, ContainerFilter, ContainerStateValue, ContainerStats,
    ContainerStatsFilter, CpuUsage, FilesystemIdentifier, FilesystemUsage, IoUsage,
    LinuxPodSandboxStats, MemoryUsage, NamespaceMode, NetworkInterfaceUsage, NetworkUsage,
    PodSandboxAttributes, PodSandboxFilter, PodSandboxStateValue, PodSandboxStats,
    PodSandboxStatsFilter, ProcessUsage, PsiData, PsiStats, SwapUsage, UInt64Value,
};

use crate::container::{ContainerEnv, ContainerRecord};
use crate::error::{CriError, CriResult};
use crate::ids::lock;
use crate::ids::now_nanos;
use crate::pod::SandboxRecord;
use crate::Daemon;

/// Below this many nanoseconds since an object's previous CPU sample, the previous rate is
/// reported again (and the sample kept): two callers asking at nearly the same moment would
/// otherwise get a rate over a few microseconds.
const MIN_RATE_INTERVAL_NS: i64 = 1_000_000_000;

/// A CPU sample of an object nobody asked about for this long is dropped.
const SAMPLE_TTL_NS: i64 = 10 * 60 * 1_000_000_000;

/// Old CPU samples are looked for at most this often: one pass over all of them, not one per
/// object read (which made a stats call over N containers cost N²).
const SAMPLE_PRUNE_EVERY_NS: i64 = 60 * 1_000_000_000;

/// Below this many objects a stats call is collected on one thread; above, on up to
/// [`MAX_WORKERS`] blocking threads at once (each object is a dozen small cgroup and `/proc`
/// reads, most of a call's time, and independent of the others).
const PARALLEL_FROM: usize = 16;

/// The most blocking threads one stats call uses.
const MAX_WORKERS: usize = 8;

/// At most this many entries of a writable layer are looked at; a larger layer is reported
/// with what was counted so far (a stats call must stay cheap).
pub(crate) const MAX_LAYER_ENTRIES: usize = 100_000;

/// At most this many cgroup directories of a pod are read to count its processes.
const MAX_POD_CGROUPS: usize = 1_000;

/// The interface kubelet reports as a pod's network.
const DEFAULT_INTERFACE: &str = "eth0";

/// One CPU reading of a container or pod, and the rate reported with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuSample {
    /// When it was read, nanoseconds since the epoch.
    at_ns: i64,
    /// Cumulative CPU time, nanoseconds.
    usage_ns: u64,
    /// The rate since the sample before it, in billionths of a core.
    nano_cores: u64,
}

/// The sample to keep after reading `usage_ns` at `at_ns`, given the previous one; its
/// `nano_cores` is the rate to report. The first sample, a clock that went back and a counter
/// that went back (a new cgroup) all rate 0.
fn next_cpu_sample(previous: Option<CpuSample>, at_ns: i64, usage_ns: u64) -> CpuSample {
    let fresh = |nano_cores| CpuSample {
        at_ns,
        usage_ns,
        nano_cores,
    };
    let Some(previous) = previous else {
        return fresh(0);
    };
    let elapsed = at_ns.saturating_sub(previous.at_ns);
    if (0..MIN_RATE_INTERVAL_NS).contains(&elapsed) && usage_ns >= previous.usage_ns {
        return previous;
    }
    if elapsed <= 0 || usage_ns < previous.usage_ns {
        return fresh(0);
    }
    let used = u128::from(usage_ns - previous.usage_ns);
    let rate = used * 1_000_000_000 / elapsed.unsigned_abs() as u128;
    fresh(u64::try_from(rate).unwrap_or(u64::MAX))
}

/// The last CPU sample of each object, for the rates; samples of objects nobody asked about
/// for [`SAMPLE_TTL_NS`] are dropped, in one pass at most every [`SAMPLE_PRUNE_EVERY_NS`].
#[derive(Debug, Default)]
struct CpuSamples {
    samples: HashMap<String, CpuSample>,
    /// When the samples were last pruned, nanoseconds since the epoch.
    pruned_at_ns: i64,
}

impl CpuSamples {
    /// Records `usage_ns` of `id` read at `now`; returns the sample kept, whose `nano_cores`
    /// is the rate to report.
    fn record(&mut self, id: &str, now: i64, usage_ns: u64) -> CpuSample {
        if now.saturating_sub(self.pruned_at_ns) >= SAMPLE_PRUNE_EVERY_NS {
            self.samples
                .retain(|_, s| now.saturating_sub(s.at_ns) < SAMPLE_TTL_NS);
            self.pruned_at_ns = now;
        }
        let sample = next_cpu_sample(self.samples.get(id).copied(), now, usage_ns);
        match self.samples.get_mut(id) {
            Some(kept) => *kept = sample,
            None => {
                self.samples.insert(id.to_string(), sample);
            }
        }
        sample
    }
}

/// Serves the stats RPCs from the daemon's containers and pods; remembers the last CPU sample
/// of each object for the rates.
#[derive(Clone)]
pub struct StatsService {
    daemon: Arc<Daemon>,
    cpu_samples: Arc<Mutex<CpuSamples>>,
}

impl StatsService {
    /// Stats of `daemon`'s objects, with no CPU samples yet.
    pub fn new(daemon: Arc<Daemon>) -> Self {
        StatsService {
            daemon,
            cpu_samples: Arc::default(),
        }
    }

    /// ContainerStats: the container named by `id` (or a unique prefix), whatever its state.
    pub async fn container(&self, id: &str) -> CriResult<ContainerStats> {
        let id = self.daemon.containers.resolve_async(id).await?;
        let (store, key) = (self.daemon.store.clone(), id.clone());
        let record = blocking("ContainerStats", move || {
            store.get::<ContainerRecord>(CONTAINERS, &key)
        })
        .await??
        .ok_or_else(|| CriError::NotFound(format!("container {id} not found")))?;
        let collector = self.collector();
        blocking("ContainerStats", move || collector.container(&record)).await
    }

    /// ListContainerStats and StreamContainerStats: the running containers the filter passes.
    pub async fn containers(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> CriResult<Vec<ContainerStats>> {
        let filter = filter.unwrap_or_default();
        let records = self
            .running_containers(filter.id, filter.pod_sandbox_id, filter.label_selector)
            .await?;
        let collector = Arc::new(self.collector());
        in_parallel("ListContainerStats", records, move |r| {
            collector.container(r)
        })
        .await
    }

    /// PodSandboxStats: the sandbox named by `id` (or a unique prefix), whatever its state,
    /// with its running containers.
    pub async fn pod(&self, id: &str) -> CriResult<PodSandboxStats> {
        let sandbox = self.daemon.pods.sandbox_async(id).await?;
        let containers = self
            .running_containers(String::new(), sandbox.id.clone(), HashMap::new())
            .await?;
        let collector = self.collector();
        blocking("PodSandboxStats", move || {
            collector.pod(&sandbox, &containers)
        })
        .await
    }

    /// ListPodSandboxStats and StreamPodSandboxStats: the ready sandboxes the filter passes.
    pub async fn pods(
        &self,
        filter: Option<PodSandboxStatsFilter>,
    ) -> CriResult<Vec<PodSandboxStats>> {
        let filter = filter.unwrap_or_default();
        let sandboxes = self.daemon.pods.records(Some(&PodSandboxFilter {
            id: filter.id,
            state: Some(PodSandboxStateValue {
                state: cri_proto::v1::PodSandboxState::SandboxReady as i32,
            }),
            label_selector: filter.label_selector,
        }))?;
        let mut by_pod: HashMap<String, Vec<ContainerRecord>> = HashMap::new();
        for record in self
            .running_containers(String::new(), String::new(), HashMap::new())
            .await?
        {
            by_pod
                .entry(record.pod_sandbox_id.clone())
                .or_default()
                .push(record);
        }
        let collector = Arc::new(self.collector());
        in_parallel("ListPodSandboxStats", sandboxes, move |s| {
            let containers = by_pod.get(&s.id).map(Vec::as_slice).unwrap_or_default();
            collector.pod(s, containers)
        })
        .await
    }

    /// The records of the running containers matching an id prefix, a pod id prefix and
    /// labels (ListContainers' filter, so "running" is checked against the shim).
    async fn running_containers(
        &self,
        id: String,
        pod_sandbox_id: String,
        label_selector: HashMap<String, String>,
    ) -> CriResult<Vec<ContainerRecord>> {
        self.daemon
            .containers
            .records(Some(ContainerFilter {
                id,
                pod_sandbox_id,
                state: Some(ContainerStateValue {
                    state: cri_proto::v1::ContainerState::ContainerRunning as i32,
                }),
                label_selector,
            }))
            .await
    }

    fn collector(&self) -> Collector {
        Collector {
            containers: self.daemon.containers.env_handle(),
            cpu_samples: self.cpu_samples.clone(),
        }
    }
}

/// Runs a collection on a blocking thread (it reads many small files).
async fn blocking<T: Send + 'static>(
    rpc: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> CriResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CriError::internal(&format!("{rpc} task"), e))
}

/// `collect` of every item, in their order, on up to [`MAX_WORKERS`] blocking threads at once
/// (one for a few items): each takes a contiguous share of the items.
async fn in_parallel<I, T, F>(rpc: &str, items: Vec<I>, collect: F) -> CriResult<Vec<T>>
where
    I: Send + Sync + 'static,
    T: Send + 'static,
    F: Fn(&I) -> T + Send + Sync + 'static,
{
    let workers = workers_for(items.len());
    let items = Arc::new(items);
    let collect = Arc::new(collect);
    let share = items.len().div_ceil(workers.max(1));
    let tasks = (0..workers).map(|worker| {
        let (items, collect) = (items.clone(), collect.clone());
        blocking(rpc, move || {
            let end = ((worker + 1) * share).min(items.len());
            let start = (worker * share).min(end);
            items[start..end]
                .iter()
                .map(|i| collect(i))
                .collect::<Vec<_>>()
        })
    });
    let mut out = Vec::with_capacity(items.len());
    for part in futures::future::join_all(tasks).await {
        out.extend(part?);
    }
    Ok(out)
}

/// How many blocking threads collect `items` objects: one below [`PARALLEL_FROM`], else one
/// per core up to [`MAX_WORKERS`] (the reads are kernel work: more threads than cores only
/// queue).
fn workers_for(items: usize) -> usize {
    if items < PARALLEL_FROM {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores
        .clamp(1, MAX_WORKERS)
        .min(items.div_ceil(PARALLEL_FROM / 2))
}

/// What a blocking collection reads from.
struct Collector {
    containers: Arc<ContainerEnv>,
    cpu_samples: Arc<Mutex<CpuSamples>>,
}

impl Collector {
    /// The stats of one container.
    fn container(&self, record: &ContainerRecord) -> ContainerStats {
        let now = now_nanos();
        let layout = &self.containers.cgroup_layout;
        let relative = Some(record.cgroup_relative.as_path()).filter(|p| !p.as_os_str().is_empty());
        // Each hierarchy's directory of the cgroup is opened once for all its files.
        let files = relative.map(|r| CgroupFiles::new(layout, r));
        let cgroup = files.as_ref();
        let memory = cgroup.and_then(MemoryCounters::usage_from);
        ContainerStats {
            attributes: Some(ContainerAttributes {
                id: record.id.clone(),
                metadata: record.config.metadata.clone(),
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
            }),
            cpu: cgroup.and_then(|c| self.cpu(&record.id, c, now)),
            memory: cgroup.and_then(|c| memory_usage(c, memory.as_ref()?, now)),
            writable_layer: self.writable_layer(&record.id, now),
            swap: cgroup.and_then(|c| swap_usage(c, memory.as_ref(), now)),
            io: cgroup.and_then(|c| io_usage(c, now)),
        }
    }

    /// The stats of one sandbox and of the given containers of it.
    fn pod(&self, sandbox: &SandboxRecord, containers: &[ContainerRecord]) -> PodSandboxStats {
        let now = now_nanos();
        let pod_cgroup = sandbox.pod_cgroup.as_ref();
        let files = pod_cgroup.map(|c| CgroupFiles::new(c.layout(), c.relative_path()));
        let cgroup = files.as_ref();
        let linux = LinuxPodSandboxStats {
            cpu: cgroup.and_then(|c| self.cpu(&sandbox.id, c, now)),
            memory: cgroup.and_then(|c| memory_usage(c, &MemoryCounters::usage_from(c)?, now)),
            network: network_usage(sandbox, now),
            process: pod_cgroup.and_then(|c| {
                process_count(c.layout(), c.relative_path()).map(|count| ProcessUsage {
                    timestamp: now,
                    process_count: Some(UInt64Value { value: count }),
                })
            }),
            containers: containers.iter().map(|c| self.container(c)).collect(),
            io: cgroup.and_then(|c| io_usage(c, now)),
        };
        PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: sandbox.id.clone(),
                metadata: sandbox.config.metadata.clone(),
                labels: sandbox.config.labels.clone(),
                annotations: sandbox.config.annotations.clone(),
            }),
            linux: Some(linux),
            windows: None,
        }
    }

    /// CPU time of the cgroup, with the rate since `id`'s previous sample.
    fn cpu(&self, id: &str, cgroup: &CgroupFiles, now: i64) -> Option<CpuUsage> {
        let usage_ns = CpuTimes::usage_from(cgroup)?;
        let sample = lock(&self.cpu_samples).record(id, now, usage_ns);
        Some(CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: Some(UInt64Value { value: usage_ns }),
            usage_nano_cores: Some(UInt64Value {
                value: sample.nano_cores,
            }),
            psi: psi(cgroup, "cpu"),
        })
    }

    /// Disk use of the container's overlay upper directory.
    fn writable_layer(&self, id: &str, now: i64) -> Option<FilesystemUsage> {
        let upper = self.containers.images.container_dir(id).ok()?.join("upper");
        let usage = layer_usage(&upper, MAX_LAYER_ENTRIES)?;
        if !usage.complete {
            tracing::debug!(
                container_id = id,
                entries = MAX_LAYER_ENTRIES,
                "writable layer too large to count fully"
            );
        }
        Some(FilesystemUsage {
            timestamp: now,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: upper.to_string_lossy().into_owned(),
            }),
            used_bytes: Some(UInt64Value { value: usage.bytes }),
            inodes_used: Some(UInt64Value {
                value: usage.inodes,
            }),
        })
    }
}

/// The CRI memory usage of `memory`: the working set is usage less inactive file pages, and
/// what is available is the limit less the working set.
fn memory_from(now: i64, memory: &MemoryCounters) -> MemoryUsage {
    let working_set = memory.working_set();
    let value = |value| Some(UInt64Value { value });
    MemoryUsage {
        timestamp: now,
        working_set_bytes: value(working_set),
        available_bytes: memory
            .limit
            .and_then(|l| value(l.saturating_sub(working_set))),
        usage_bytes: value(memory.usage),
        rss_bytes: value(memory.rss),
        page_faults: value(memory.page_faults),
        major_page_faults: value(memory.major_page_faults),
        psi: None,
    }
}

/// Memory use of the cgroup (its `memory` counters), with its memory pressure where the
/// kernel has it.
fn memory_usage(cgroup: &CgroupFiles, memory: &MemoryCounters, now: i64) -> Option<MemoryUsage> {
    let mut usage = memory_from(now, memory);
    usage.psi = psi(cgroup, "memory");
    Some(usage)
}

/// The I/O of the cgroup: its I/O pressure (`io.pressure`, cgroup v2 with PSI), the only
/// thing the CRI's `IoUsage` carries.
fn io_usage(cgroup: &CgroupFiles, now: i64) -> Option<IoUsage> {
    Some(IoUsage {
        timestamp: now,
        psi: Some(psi(cgroup, "io")?),
    })
}

/// The pressure stall information of `resource` for the cgroup, in the CRI's shape (totals in
/// microseconds as the kernel counts them).
fn psi(cgroup: &CgroupFiles, resource: &str) -> Option<PsiStats> {
    let pressure = Pressure::read_from(cgroup, resource)?;
    let data = |line: &PressureLine| PsiData {
        total: line.total_us,
        avg10: line.avg10,
        avg60: line.avg60,
        avg300: line.avg300,
    };
    Some(PsiStats {
        full: Some(data(&pressure.full.unwrap_or_default())),
        some: Some(data(&pressure.some)),
    })
}

/// Swap use of the cgroup (absent when the kernel does not account swap); `memory` is its
/// memory counters when they could be read.
fn swap_usage(
    cgroup: &CgroupFiles,
    memory: Option<&MemoryCounters>,
    now: i64,
) -> Option<SwapUsage> {
    let swap = SwapCounters::read_from(cgroup, memory)?;
    Some(SwapUsage {
        timestamp: now,
        swap_available_bytes: swap.available().map(|value| UInt64Value { value }),
        swap_usage_bytes: Some(UInt64Value { value: swap.usage }),
    })
}

/// The processes in the pod's cgroup and every cgroup below it.
pub(crate) fn process_count(layout: &CgroupLayout, relative: &Path) -> Option<u64> {
    corral_cgroups::usage::process_count(layout, relative, MAX_POD_CGROUPS)
}

/// The pod's network interfaces as its pause process sees them; none for a pod on the host
/// network or whose pause process is gone.
fn network_usage(sandbox: &SandboxRecord, now: i64) -> Option<NetworkUsage> {
    let interfaces: Vec<_> = pod_interfaces(sandbox)?
        .iter()
        .map(|i| {
            let value = |value| Some(UInt64Value { value });
            NetworkInterfaceUsage {
                name: i.name.clone(),
                rx_bytes: value(i.rx_bytes),
                rx_errors: value(i.rx_errors),
                tx_bytes: value(i.tx_bytes),
                tx_errors: value(i.tx_errors),
            }
        })
        .collect();
    let default_interface = interfaces
        .iter()
        .find(|i| i.name == DEFAULT_INTERFACE)
        .cloned();
    Some(NetworkUsage {
        timestamp: now,
        default_interface,
        interfaces,
    })
}

/// The interfaces of the pod's network namespace (read through its pause process); `None`
/// for a pod on the host network or whose pause process is gone.
pub(crate) fn pod_interfaces(sandbox: &SandboxRecord) -> Option<Vec<InterfaceCounters>> {
    if sandbox.namespace_modes().network == NamespaceMode::Node || !sandbox.pause_alive() {
        return None;
    }
    corral_sandbox::net_dev::read_net_dev(sandbox.pause?.pid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const SECOND: i64 = 1_000_000_000;

    #[test]
    fn io_usage_is_the_io_pressure_of_a_v2_cgroup() {
        let root = tempfile::tempdir().unwrap();
        let layout = CgroupLayout::from_hierarchies(vec![corral_cgroups::Hierarchy::new(
            corral_cgroups::CgroupVersion::V2,
            root.path().to_path_buf(),
            vec!["io".into()],
        )])
        .unwrap();
        let dir = root.path().join("pod/c1");
        std::fs::create_dir_all(&dir).unwrap();
        let rel = Path::new("pod/c1");
        assert_eq!(
            io_usage(&CgroupFiles::new(&layout, rel), 7),
            None,
            "no io.pressure: no IoUsage"
        );
        std::fs::write(
            dir.join("io.pressure"),
            "some avg10=0.50 avg60=0.10 avg300=0.00 total=4321\n\
             full avg10=0.25 avg60=0.00 avg300=0.00 total=1234\n",
        )
        .unwrap();
        let io = io_usage(&CgroupFiles::new(&layout, rel), 7).unwrap();
        assert_eq!(io.timestamp, 7);
        let psi = io.psi.unwrap();
        assert_eq!(psi.some.unwrap().total, 4321);
        let full = psi.full.unwrap();
        assert_eq!((full.total, full.avg10), (1234, 0.25));
    }

    #[test]
    fn the_first_cpu_sample_rates_zero() {
        let s = next_cpu_sample(None, 5 * SECOND, 123);
        assert_eq!(
            s,
            CpuSample {
                at_ns: 5 * SECOND,
                usage_ns: 123,
                nano_cores: 0
            }
        );
    }

    #[test]
    fn the_rate_is_cpu_time_over_wall_time() {
        let first = next_cpu_sample(None, 10 * SECOND, 1_000);
        // Half a core for two seconds.
        let second = next_cpu_sample(Some(first), 12 * SECOND, 1_000 + SECOND as u64);
        assert_eq!(second.nano_cores, 500_000_000);
        assert_eq!(second.usage_ns, 1_000 + SECOND as u64);
        // Two cores for one second.
        let third = next_cpu_sample(
            Some(second),
            13 * SECOND,
            second.usage_ns + 2 * SECOND as u64,
        );
        assert_eq!(third.nano_cores, 2_000_000_000);
    }

    #[test]
    fn a_sample_soon_after_the_last_reports_the_last_rate() {
        let first = next_cpu_sample(None, 10 * SECOND, 0);
        let second = next_cpu_sample(Some(first), 12 * SECOND, SECOND as u64);
        let third = next_cpu_sample(Some(second), 12 * SECOND + 1_000, SECOND as u64 + 999);
        assert_eq!(third, second);
    }

    #[test]
    fn old_samples_are_pruned_once_a_minute_and_fresh_ones_kept() {
        let mut book = CpuSamples::default();
        book.record("old", 1_000 * SECOND, 5);
        book.record("fresh", 1_000 * SECOND, 5);
        assert_eq!(book.pruned_at_ns, 1_000 * SECOND);
        // Inside the TTL: both kept, and the fresh one read again.
        book.record("fresh", 1_000 * SECOND + SAMPLE_TTL_NS - SECOND, 9);
        assert_eq!(book.samples.len(), 2);
        // Past the old one's TTL, but the last prune is under a minute ago: not yet pruned.
        let late = 1_000 * SECOND + SAMPLE_TTL_NS + SECOND;
        book.pruned_at_ns = late - SAMPLE_PRUNE_EVERY_NS + SECOND;
        book.record("other", late, 1);
        assert!(book.samples.contains_key("old"));
        // A minute after the last prune: the old sample goes, the fresh and new stay.
        let later = late + SAMPLE_PRUNE_EVERY_NS;
        book.record("other", later, 2);
        assert!(!book.samples.contains_key("old"));
        assert!(book.samples.contains_key("fresh"));
        assert!(book.samples.contains_key("other"));
        assert_eq!(book.pruned_at_ns, later);
    }

    #[test]
    fn a_recorded_sample_rates_against_the_previous_one_of_the_same_id() {
        let mut book = CpuSamples::default();
        book.record("a", 10 * SECOND, 0);
        book.record("b", 10 * SECOND, 0);
        let a = book.record("a", 12 * SECOND, SECOND as u64);
        assert_eq!(a.nano_cores, 500_000_000);
        assert_eq!(book.record("b", 12 * SECOND, 0).nano_cores, 0);
    }

    #[test]
    fn few_objects_use_one_thread_many_at_most_one_per_core() {
        assert_eq!(workers_for(0), 1);
        assert_eq!(workers_for(PARALLEL_FROM - 1), 1);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert!(workers_for(10_000) <= cores.clamp(1, MAX_WORKERS));
        assert!(workers_for(10_000) >= 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_parallel_keeps_every_item_in_order() {
        for n in [0, 1, PARALLEL_FROM - 1, PARALLEL_FROM, 1_001] {
            let items: Vec<usize> = (0..n).collect();
            let out = in_parallel("test", items, |i| i * 2).await.unwrap();
            assert_eq!(out, (0..n).map(|i| i * 2).collect::<Vec<_>>(), "{n} items");
        }
    }

    #[test]
    fn a_counter_or_clock_going_back_rates_zero() {
        let first = next_cpu_sample(None, 10 * SECOND, 5 * SECOND as u64);
        let reset = next_cpu_sample(Some(first), 12 * SECOND, 10);
        assert_eq!((reset.nano_cores, reset.usage_ns), (0, 10));
        let back = next_cpu_sample(Some(first), 8 * SECOND, 6 * SECOND as u64);
        assert_eq!((back.nano_cores, back.at_ns), (0, 8 * SECOND));
    }

    #[test]
    fn working_set_is_usage_less_inactive_file_and_available_needs_a_limit() {
        let mut memory = MemoryCounters {
            usage: 1000,
            limit: Some(4000),
            inactive_file: 300,
            rss: 500,
            page_faults: 9,
            major_page_faults: 1,
            ..Default::default()
        };
        let m = memory_from(7, &memory);
        assert_eq!(m.working_set_bytes.unwrap().value, 700);
        assert_eq!(m.available_bytes.unwrap().value, 3300);
        assert_eq!(m.usage_bytes.unwrap().value, 1000);
        assert_eq!(m.rss_bytes.unwrap().value, 500);
        assert_eq!(m.page_faults.unwrap().value, 9);
        assert_eq!(m.major_page_faults.unwrap().value, 1);
        assert_eq!(m.timestamp, 7);

        memory.usage = 100;
        memory.limit = None;
        let unlimited = memory_from(7, &memory);
        assert_eq!(unlimited.working_set_bytes.unwrap().value, 0);
        assert!(unlimited.available_bytes.is_none());
    }
}
