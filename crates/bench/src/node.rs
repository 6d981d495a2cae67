//! `corral-bench node`: a node with hundreds of pods, as kubelet sees it. Every pod runs one
//! `sleep 3600` container; then, with corral and (optionally) a private containerd holding
//! their pods at the same time, the calls kubelet makes over and over are timed in turns —
//! the relist (ListPodSandbox, ListContainers) and the stats (ListContainerStats,
//! ListPodSandboxStats) —, the daemons' CPU while nobody calls them, the memory of the per-pod
//! processes, and how long a restarted daemon takes to serve the pod list again.
//!
//! Both runtimes get the same CNI conflist on a /22, so that 500 pods get an address each.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use corral_e2e::cri::container_config;
use corral_e2e::net::TestNetwork;
use corral_e2e::registry::{self, Registry};
use cri_proto::v1::image_service_client::ImageServiceClient;
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use cri_proto::v1::*;
use futures::stream::{self, StreamExt, TryStreamExt};
use tonic::transport::Channel;

use crate::cleanup::{self, Traces};
use crate::containerd::Containerd;
use crate::containers::{create_and_start, remove_pod};
use crate::memory::{self, PodMemory};
use crate::processes;

/// The container every pod runs.
const WORKLOAD: [&str; 2] = ["sleep", "3600"];

/// `corral-bench node` options.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Pods, each with one running container.
    #[arg(short, default_value_t = 500)]
    pub n: usize,
    /// Pods started at once while filling the node.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Timed relists (ListPodSandbox + ListContainers) per runtime.
    #[arg(long, default_value_t = 200)]
    pub relists: usize,
    /// Timed stats rounds (ListContainerStats + ListPodSandboxStats) per runtime.
    #[arg(long, default_value_t = 20)]
    pub stats: usize,
    /// At most this many of the stats rounds for containerd (its ListPodSandboxStats over
    /// 500 pods takes minutes on a busy 2-core machine).
    #[arg(long, default_value_t = usize::MAX)]
    pub containerd_stats: usize,
    /// Seconds over which the idle daemons' CPU is measured.
    #[arg(long, default_value_t = 20)]
    pub idle_secs: u64,
    /// Timed restarts per runtime.
    #[arg(long, default_value_t = 3)]
    pub restarts: usize,
    /// Also start a private containerd and fill it the same way, at the same time.
    #[arg(long)]
    pub with_containerd: bool,
}

/// One runtime holding its pods.
struct Node {
    name: &'static str,
    channel: Channel,
    cgroup_root: String,
    log_root: PathBuf,
    daemon: Daemon,
    pods: Vec<String>,
}

enum Daemon {
    Corral(corral_e2e::Daemon),
    Containerd(Containerd),
}

impl Node {
    fn rt(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    fn pid(&self) -> i32 {
        match &self.daemon {
            Daemon::Corral(d) => d.pid(),
            Daemon::Containerd(d) => d.pid(),
        }
    }

    /// Stops the daemon (its pods keep running) and starts it again; returns how long the
    /// stop took and how long from the new process's spawn until it listed every pod.
    async fn restart(&mut self) -> anyhow::Result<(Duration, Duration)> {
        let (stopped, started) = match &mut self.daemon {
            Daemon::Corral(d) => {
                let t = Instant::now();
                d.stop();
                let stopped = t.elapsed();
                let started = Instant::now();
                d.start_again();
                (stopped, started)
            }
            Daemon::Containerd(d) => {
                let stopped = d.stop_daemon();
                let started = Instant::now();
                d.start_again()?;
                (stopped, started)
            }
        };
        let socket = match &self.daemon {
            Daemon::Corral(d) => d.socket(),
            Daemon::Containerd(d) => d.socket(),
        };
        self.channel = corral_e2e::connect_unix(socket).await;
        let want = self.pods.len();
        loop {
            let listed = self
                .rt()
                .list_pod_sandbox(ListPodSandboxRequest::default())
                .await
                .map(|r| r.into_inner().items.len());
            match listed {
                Ok(n) if n >= want => return Ok((stopped, started.elapsed())),
                _ if started.elapsed() > Duration::from_secs(120) => {
                    bail!("{} did not list its {want} pods after a restart", self.name)
                }
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
}

/// The network's conflist with its subnet widened to the /22 holding its /24.
pub fn wide_conflist(net: &TestNetwork) -> String {
    let mut conflist: serde_json::Value = serde_json::from_str(&net.conflist()).unwrap_or_default();
    let (first, third) = net.prefix.rsplit_once('.').unwrap_or(("10.199", "0"));
    let third: u32 = third.parse().unwrap_or(0) & !3;
    conflist["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] =
        format!("{first}.{third}.0/22").into();
    conflist.to_string()
}

/// Runs the node benchmark.
pub async fn run(options: Options) -> anyhow::Result<()> {
    if let Some(reason) = registry::skip_reason() {
        bail!("cannot run a local registry: {reason}");
    }
    let registry = Registry::start();
    let image = crate::setup::push_workload_image(&registry);
    let logs = crate::setup::log_dir()?;
    println!(
        "load average at start: {}",
        crate::containers::load_average()
    );

    let mut nodes = vec![start_corral(logs.path()).await?];
    let mut traces = vec![traces_of(&nodes[0])];
    if options.with_containerd {
        let pause = crate::setup::push_pause_image(&registry);
        let node = start_containerd(&registry.host, &pause, logs.path()).await?;
        traces.push(traces_of(&node));
        crate::images::pull(&mut ImageServiceClient::new(node.channel.clone()), &pause).await?;
        nodes.push(node);
    }
    for node in &nodes {
        crate::images::pull(&mut ImageServiceClient::new(node.channel.clone()), &image).await?;
    }

    let outcome = measure(&mut nodes, &image, &options).await;
    for node in &mut nodes {
        empty(node, options.concurrency).await;
    }
    drop(nodes);
    for t in &traces {
        cleanup::remove_cgroups(&t.cgroup_root);
    }
    println!(
        "\nload average at the end: {}",
        crate::containers::load_average()
    );
    drop(registry);
    println!("{}", cleanup::report(&traces));
    outcome
}

fn traces_of(node: &Node) -> Traces {
    let (dir, bridge) = match &node.daemon {
        Daemon::Corral(d) => (d.dir().to_path_buf(), d.net.bridge.clone()),
        Daemon::Containerd(d) => (d.dir().to_path_buf(), d.bridge().to_string()),
    };
    Traces {
        dir: Some(dir),
        cgroup_root: node.cgroup_root.clone(),
        bridge: Some(bridge),
    }
}

/// A private corrald logging at `info`, as on a node: the test harness's `debug` logs every
/// HTTP/2 frame, which would be most of what a list costs.
pub fn start_quiet_corrald() -> anyhow::Result<corral_e2e::Daemon> {
    let mut daemon = corral_e2e::Daemon::start(corral_e2e::DaemonOptions {
        extra_config_toml: String::new(),
        with_cni: false,
        cgroup_driver: "cgroupfs",
    });
    let path = daemon.dir().join("config.toml");
    let config = std::fs::read_to_string(&path).context("read corrald's config")?;
    let quiet = config.replace("log_level = \"debug\"", "log_level = \"info\"");
    std::fs::write(&path, quiet).context("write corrald's config")?;
    daemon.restart();
    Ok(daemon)
}

async fn start_corral(logs: &Path) -> anyhow::Result<Node> {
    let daemon = start_quiet_corrald()?;
    // corrald reads the CNI config for every pod: writing it now is in time.
    std::fs::write(
        daemon.dir().join("cni-conf/10-bench.conflist"),
        wide_conflist(&daemon.net),
    )
    .context("write corrald's CNI conflist")?;
    let channel = daemon.channel().await;
    Ok(Node {
        name: "corral",
        channel,
        cgroup_root: format!("/corral-bench-{}", std::process::id()),
        log_root: logs.join("corral"),
        daemon: Daemon::Corral(daemon),
        pods: Vec::new(),
    })
}

async fn start_containerd(registry_host: &str, pause: &str, logs: &Path) -> anyhow::Result<Node> {
    let cgroup_root = format!("/containerd-bench-{}", std::process::id());
    let mut containerd =
        Containerd::start_with_conflist(registry_host, pause, &cgroup_root, wide_conflist)?;
    let channel = containerd.ready_channel(Duration::from_secs(30)).await?;
    Ok(Node {
        name: "containerd",
        channel,
        cgroup_root,
        log_root: logs.join("containerd"),
        daemon: Daemon::Containerd(containerd),
        pods: Vec::new(),
    })
}

/// Fills every node, then measures them in turns.
async fn measure(nodes: &mut [Node], image: &str, options: &Options) -> anyhow::Result<()> {
    let before = processes::ours()
        .iter()
        .map(|p| (p.pid, p.start_time))
        .collect();
    let rss_before: Vec<u64> = nodes.iter().map(|n| processes::rss_kib(n.pid())).collect();
    for node in nodes.iter_mut() {
        fill(node, image, options).await?;
    }
    // Let the shims settle (and Go runtimes shrink) before reading /proc.
    tokio::time::sleep(Duration::from_secs(2)).await;
    print_memory(nodes, &before, &rss_before);

    let section = format!("a node with {} pods, one container each", options.n);
    measure_idle(nodes, options, &section).await;
    let samples = time_calls(nodes, options).await?;
    let restarts = time_restarts(nodes, options).await?;
    print_latencies(nodes, samples, restarts, options, &section);
    Ok(())
}

/// The calls timed in turns, in the order of the table.
const CALLS: [Call; 4] = [
    Call::PodSandboxes,
    Call::Containers,
    Call::ContainerStats,
    Call::PodSandboxStats,
];

/// Each node's samples per call of [`CALLS`]: `samples[node][call]`.
type CallSamples = Vec<Vec<Vec<Duration>>>;

/// Each node's daemon stop times and its spawn-to-all-pods-listed times.
type RestartSamples = Vec<(Vec<Duration>, Vec<Duration>)>;

/// The daemons' and their pods' CPU while nobody calls them: printed and recorded.
async fn measure_idle(nodes: &[Node], options: &Options, section: &str) {
    println!(
        "\nidle: nobody calls the daemons for {} s",
        options.idle_secs
    );
    let cpu_before: Vec<(u64, u64)> = nodes.iter().map(cpu_of_node).collect();
    tokio::time::sleep(Duration::from_secs(options.idle_secs)).await;
    let mut idle = Vec::new();
    for (node, (daemon0, pods0)) in nodes.iter().zip(cpu_before) {
        let (daemon1, pods1) = cpu_of_node(node);
        let per_sec =
            |ticks: u64| ticks as f64 / ticks_per_second() / options.idle_secs as f64 * 100.0;
        let (daemon, pods) = (
            per_sec(daemon1.saturating_sub(daemon0)),
            per_sec(pods1.saturating_sub(pods0)),
        );
        println!(
            "  {:<11} daemon CPU {daemon:>6.2}% of a core; its {} pods' processes together {pods:>6.2}%",
            node.name,
            node.pods.len(),
        );
        idle.push((daemon, pods));
    }
    let cell = |i: usize| {
        idle.get(i).map_or("-".to_string(), |(d, p)| {
            format!("{d:.2} % (+{p:.2} % in its per-pod processes)")
        })
    };
    crate::summary::record_with_target(
        section,
        &format!(
            "daemon CPU while idle ({} s), % of a core",
            options.idle_secs
        ),
        cell(0),
        cell(1),
        crate::summary::ratio(idle.first().map(|i| i.0), idle.get(1).map(|i| i.0)),
        "≤ 1 %",
    );
}

/// Times every call of [`CALLS`] on every node in turns: one relist of each runtime after the
/// other, so that both see the same load.
async fn time_calls(nodes: &[Node], options: &Options) -> anyhow::Result<CallSamples> {
    let mut samples: CallSamples = vec![vec![Vec::new(); CALLS.len()]; nodes.len()];
    for round in 0..options.relists.max(options.stats) {
        for (i, node) in nodes.iter().enumerate() {
            for (c, call) in CALLS.iter().enumerate() {
                let rounds = match (call.is_stats(), node.name) {
                    (true, "containerd") => options.stats.min(options.containerd_stats),
                    (true, _) => options.stats,
                    (false, _) => options.relists,
                };
                if round < rounds {
                    samples[i][c].push(call.time(node).await?);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(samples)
}

/// Restarts every node `options.restarts` times, in turns.
async fn time_restarts(nodes: &mut [Node], options: &Options) -> anyhow::Result<RestartSamples> {
    let mut restarts: RestartSamples = vec![Default::default(); nodes.len()];
    for _ in 0..options.restarts {
        for (i, node) in nodes.iter_mut().enumerate() {
            let (stop, serve) = node.restart().await?;
            restarts[i].0.push(stop);
            restarts[i].1.push(serve);
        }
    }
    Ok(restarts)
}

/// The latency table: a row per call, the relist, the stop and the restart; printed and
/// recorded.
fn print_latencies(
    nodes: &[Node],
    samples: CallSamples,
    restarts: RestartSamples,
    options: &Options,
    section: &str,
) {
    println!(
        "\n=== a node with {} pods, one container each (ms) ===",
        options.n
    );
    print!("{:<34}", "");
    for node in nodes.iter() {
        print!(" {:>24}", format!("{} p50 / p99", node.name));
    }
    println!("   ratio p50");
    for (label, per_node) in latency_rows(samples, restarts) {
        let cells = print_row(&label, per_node);
        record_latency(section, &label, &cells);
    }
}

/// The rows of the latency table: label, and each node's samples.
fn latency_rows(
    samples: CallSamples,
    restarts: RestartSamples,
) -> Vec<(String, Vec<Vec<Duration>>)> {
    let mut table: Vec<(String, Vec<Vec<Duration>>)> = CALLS
        .iter()
        .enumerate()
        .map(|(c, call)| {
            let per_node = samples.iter().map(|s| s[c].clone()).collect();
            (call.label().to_string(), per_node)
        })
        .collect();
    table.push((
        "relist (both lists)".into(),
        samples
            .iter()
            .map(|s| s[0].iter().zip(&s[1]).map(|(a, b)| *a + *b).collect())
            .collect(),
    ));
    table.push((
        "daemon stop (SIGTERM to exit)".into(),
        restarts.iter().map(|r| r.0.clone()).collect(),
    ));
    table.push((
        "restart: spawn to all pods listed".into(),
        restarts.iter().map(|r| r.1.clone()).collect(),
    ));
    table
}

/// Records one latency row (each node's p50, p99 and count) with the target.
fn record_latency(section: &str, label: &str, cells: &[(f64, f64, usize)]) {
    let target = match label {
        "ListPodSandbox" | "ListContainers" => "p99 ≤ 5 ms",
        "ListContainerStats" => "p99 ≤ 100 ms",
        "restart: spawn to all pods listed" => "≤ 1 s",
        _ => "",
    };
    let cell = |i: usize| {
        cells.get(i).map_or("-".to_string(), |(p50, p99, n)| {
            format!("{p50:.1} / {p99:.1} ms (n={n})")
        })
    };
    crate::summary::record_with_target(
        section,
        &format!("{label}, p50 / p99"),
        cell(0),
        cell(1),
        crate::summary::ratio(cells.first().map(|c| c.0), cells.get(1).map(|c| c.0)),
        target,
    );
}

/// Prints one row of p50 / p99 per node and the ratio of the p50s; returns each node's p50,
/// p99 (ms) and sample count.
fn print_row(label: &str, per_node: Vec<Vec<Duration>>) -> Vec<(f64, f64, usize)> {
    print!("{label:<34}");
    let mut cells = Vec::new();
    for mut s in per_node {
        s.sort();
        let (p50, p99) = (
            crate::percentile(&s, 0.5).as_secs_f64() * 1e3,
            crate::percentile(&s, 0.99).as_secs_f64() * 1e3,
        );
        cells.push((p50, p99, s.len()));
        print!(" {:>24}", format!("{p50:.2} / {p99:.2}"));
    }
    if let [corral, containerd] = cells.as_slice() {
        if containerd.0 > 0.0 {
            print!("   {:.2}", corral.0 / containerd.0);
        }
    }
    println!();
    cells
}

#[derive(Clone, Copy)]
enum Call {
    PodSandboxes,
    Containers,
    ContainerStats,
    PodSandboxStats,
}

impl Call {
    fn label(self) -> &'static str {
        match self {
            Call::PodSandboxes => "ListPodSandbox",
            Call::Containers => "ListContainers",
            Call::ContainerStats => "ListContainerStats",
            Call::PodSandboxStats => "ListPodSandboxStats",
        }
    }

    fn is_stats(self) -> bool {
        matches!(self, Call::ContainerStats | Call::PodSandboxStats)
    }

    /// Times one call and checks that it saw every pod.
    async fn time(self, node: &Node) -> anyhow::Result<Duration> {
        let mut rt = node.rt();
        let t = Instant::now();
        let n = match self {
            Call::PodSandboxes => rt
                .list_pod_sandbox(ListPodSandboxRequest::default())
                .await
                .map(|r| r.into_inner().items.len()),
            Call::Containers => rt
                .list_containers(ListContainersRequest::default())
                .await
                .map(|r| r.into_inner().containers.len()),
            Call::ContainerStats => rt
                .list_container_stats(ListContainerStatsRequest::default())
                .await
                .map(|r| r.into_inner().stats.len()),
            Call::PodSandboxStats => rt
                .list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
                .await
                .map(|r| r.into_inner().stats.len()),
        }
        .with_context(|| format!("{} on {}", self.label(), node.name))?;
        let elapsed = t.elapsed();
        if n < node.pods.len() {
            bail!(
                "{} on {} returned {n} items for {} pods",
                self.label(),
                node.name,
                node.pods.len()
            );
        }
        Ok(elapsed)
    }
}

/// Starts `options.n` pods with one container each on `node`.
async fn fill(node: &mut Node, image: &str, options: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let made = stream::iter(0..options.n)
        .map(|i| start_pod(node, image, i))
        .buffer_unordered(options.concurrency.max(1))
        .try_collect::<Vec<String>>()
        .await;
    match made {
        Ok(pods) => node.pods = pods,
        Err(e) => {
            empty(node, options.concurrency).await;
            return Err(e);
        }
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{}: {} pods with a container each, {} at a time: {wall:.1} s ({:.1} pods/s)",
        node.name,
        options.n,
        options.concurrency,
        options.n as f64 / wall
    );
    Ok(())
}

async fn start_pod(node: &Node, image: &str, i: usize) -> anyhow::Result<String> {
    let name = format!("node-{i}");
    let pod_mode = NamespaceMode::Pod as i32;
    let mut config = corral_e2e::pod_config(
        &name,
        &format!("{}/pod{name}", node.cgroup_root),
        (pod_mode, NamespaceMode::Container as i32, pod_mode),
    );
    let log_dir = node.log_root.join(&name);
    std::fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;
    config.log_directory = log_dir.to_string_lossy().into_owned();
    let id = node
        .rt()
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .with_context(|| format!("RunPodSandbox {name} on {}", node.name))?
        .into_inner()
        .pod_sandbox_id;
    let container = container_config("c", image, &WORKLOAD);
    if let Err(e) = create_and_start(node.rt(), &id, &config, container).await {
        let _ = remove_pod(node.rt(), id).await;
        return Err(e.context(format!("container of {name} on {}", node.name)));
    }
    Ok(id)
}

/// Removes every pod of `node`, `concurrency` at a time.
async fn empty(node: &mut Node, concurrency: usize) {
    let listed = node
        .rt()
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await;
    let ids: Vec<String> = match listed {
        Ok(r) => r.into_inner().items.into_iter().map(|p| p.id).collect(),
        Err(_) => std::mem::take(&mut node.pods),
    };
    let started = Instant::now();
    let n = ids.len();
    let results: Vec<anyhow::Result<()>> = stream::iter(ids)
        .map(|id| remove_pod(node.rt(), id))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    println!(
        "{}: removed {n} pods in {:.1} s ({} failed)",
        node.name,
        started.elapsed().as_secs_f64(),
        failed.len()
    );
    for e in failed.iter().take(3) {
        println!("  {}", crate::figures::short(&format!("{e:#}"), 200));
    }
    node.pods.clear();
}

/// Memory of the processes each runtime added for its pods, by program.
fn print_memory(
    nodes: &[Node],
    before: &std::collections::BTreeSet<(i32, u64)>,
    rss_before: &[u64],
) {
    let now = processes::ours();
    let pids: Vec<i32> = nodes.iter().map(Node::pid).collect();
    let all = memory::classify(before, &now, 0, &WORKLOAD, |pid| {
        if pids.contains(&pid) {
            (0, 0)
        } else {
            (processes::rss_kib(pid), processes::pss_kib(pid))
        }
    });
    println!("\nmemory of the per-pod processes (the `sleep 3600` workload left out):");
    let mut per_pod = Vec::new();
    let mut kind_cells = Vec::new();
    let mut growth = Vec::new();
    for (node, rss_before) in nodes.iter().zip(rss_before) {
        let memory = node_memory(node, &all, *rss_before);
        kind_cells.push(print_node_memory(node, &memory));
        per_pod.push((
            memory.processes_rss_per_pod_kib(),
            memory.processes_pss_per_pod_kib(),
        ));
        growth.push(memory.daemon_growth_per_pod_kib());
    }
    let section = format!("memory, a node with {} pods", nodes[0].pods.len());
    record_memory(&section, &per_pod, &kind_cells, &growth);
}

/// The memory of `node`'s per-pod processes (corral's or the others' programs in `all`) and
/// of its daemon.
fn node_memory(
    node: &Node,
    all: &BTreeMap<String, memory::ProcessKind>,
    rss_before_kib: u64,
) -> PodMemory {
    let corral = node.name == "corral";
    let kinds = all
        .iter()
        .filter(|(program, k)| program.starts_with("corral-") == corral && k.count > 0)
        .map(|(p, k)| (p.clone(), k.clone()))
        .collect();
    PodMemory {
        pods: node.pods.len(),
        kinds,
        daemon_rss_before_kib: rss_before_kib,
        daemon_rss_after_kib: processes::rss_kib(node.pid()),
    }
}

/// Prints `node`'s memory per pod and a line per process kind most pods have; returns those
/// kinds as a summary cell.
fn print_node_memory(node: &Node, memory: &PodMemory) -> String {
    println!(
        "  {:<11} per pod: RSS {:.0} KiB, PSS {:.0} KiB; daemon RSS {:.1} MiB ({:+.1} KiB / pod)",
        node.name,
        memory.processes_rss_per_pod_kib(),
        memory.processes_pss_per_pod_kib(),
        memory.daemon_rss_after_kib as f64 / 1024.0,
        memory.daemon_growth_per_pod_kib(),
    );
    let mut kinds = Vec::new();
    for (program, k) in &memory.kinds {
        if k.count < node.pods.len() / 2 {
            continue;
        }
        let (rss, pss) = (
            k.rss_kib as f64 / k.count as f64,
            k.pss_kib as f64 / k.count as f64,
        );
        println!(
            "    {:>4} x {program:<24} RSS {rss:>6.0} KiB  PSS {pss:>6.0} KiB each",
            k.count,
        );
        kinds.push(format!("{program}: {rss:.0} / {pss:.0} KiB"));
    }
    kinds.join("; ")
}

/// Records the memory rows: per-pod RSS / PSS, each kind, and the daemon's growth per pod.
fn record_memory(section: &str, per_pod: &[(f64, f64)], kind_cells: &[String], growth: &[f64]) {
    let cell = |i: usize| {
        per_pod.get(i).map_or("-".to_string(), |(rss, pss)| {
            format!("{rss:.0} / {pss:.0} KiB")
        })
    };
    crate::summary::record_with_target(
        section,
        "per-pod processes per pod, RSS / PSS",
        cell(0),
        cell(1),
        crate::summary::ratio(per_pod.first().map(|m| m.1), per_pod.get(1).map(|m| m.1)),
        "PSS ≤ 0.1×",
    );
    let text = |v: &[String], i: usize| v.get(i).cloned().unwrap_or_else(|| "-".into());
    crate::summary::record(
        section,
        "each process kind, RSS / PSS",
        text(kind_cells, 0),
        text(kind_cells, 1),
        None,
    );
    let grew = |i: usize| {
        growth
            .get(i)
            .map_or("-".to_string(), |g| format!("{g:.0} KiB"))
    };
    crate::summary::record(
        section,
        "daemon RSS growth per pod",
        grew(0),
        grew(1),
        crate::summary::ratio(growth.first().copied(), growth.get(1).copied()),
    );
}

/// CPU ticks (user + system, of every thread, and of reaped children) of the daemon, and of
/// the processes it runs for its pods.
fn cpu_of_node(node: &Node) -> (u64, u64) {
    let daemon = node.pid();
    let all = processes::all();
    let pods = processes::descendants(&all, std::process::id() as i32)
        .iter()
        .filter(|p| p.pid != daemon)
        .filter(|p| {
            let corral = p.program().starts_with("corral-");
            corral == (node.name == "corral") && p.argv != WORKLOAD
        })
        .map(|p| cpu_ticks(p.pid))
        .sum();
    (cpu_ticks(daemon), pods)
}

/// utime + stime + cutime + cstime of `pid` from /proc/PID/stat; 0 when gone.
pub fn cpu_ticks(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| ticks_of_stat(&stat))
        .unwrap_or(0)
}

/// utime + stime + cutime + cstime (fields 14 to 17) of a /proc/PID/stat line.
fn ticks_of_stat(stat: &str) -> u64 {
    // The fields after the command name (which may hold spaces and parentheses) start at
    // state, field 3.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    rest.split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum()
}

/// Clock ticks per second of the times in /proc/PID/stat.
pub fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|t| t as f64)
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conflist_subnet_is_the_22_around_the_24() {
        let net = TestNetwork {
            bridge: "crl1".into(),
            prefix: "10.150.201".into(),
            ipam_dir: "/tmp/x".into(),
        };
        let conflist: serde_json::Value = serde_json::from_str(&wide_conflist(&net)).expect("JSON");
        assert_eq!(
            conflist["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.150.200.0/22"
        );
        assert_eq!(conflist["plugins"][0]["bridge"], "crl1");
    }

    #[test]
    fn cpu_ticks_are_the_four_time_fields_after_the_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 2 1 20 0 1 0 5 0 0";
        assert_eq!(ticks_of_stat(stat), 7 + 3 + 2 + 1);
        assert_eq!(ticks_of_stat("garbage"), 0);
    }
}
