//! `corral-bench pods --with-containerd` and `--phases`: the pod paths of issue 13, corral and
//! a private containerd measured in the same run, *interleaved* (one pod of each in turn, the
//! order swapped every round) so that both see the same load on a shared machine:
//!
//! - RunPodSandbox with a pod network, and with hostNetwork (no CNI); their difference is the
//!   time the CNI chain costs each runtime;
//! - RunPodSandbox + CreateContainer + StartContainer, then StopPodSandbox of that pod;
//! - StopPodSandbox of a pod without containers;
//! - N pods started at once (failures, p50, p99).
//!
//! Both runtimes get the same CNI conflist (bridge + host-local + portmap, each on its own
//! bridge and subnet) and the same busybox image from one loopback registry. With `--phases`
//! the steps corrald logged for each sequential pod-network RunPodSandbox (see corrald's
//! `pod::phases`) are summed up into a table.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use corral_e2e::cri::container_config;
use corral_e2e::registry::{self, Registry};
use cri_proto::v1::image_service_client::ImageServiceClient;
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use cri_proto::v1::*;
use futures::stream::{self, StreamExt};
use tonic::transport::Channel;

use crate::cleanup::{self, Traces};
use crate::containerd::Containerd;
use crate::containers::load_average;
use crate::containers::{create_and_start, remove_pod};
use crate::percentile;
use crate::setup::{labelled_pod_config, LABEL};

/// The container of the pod+container path.
const WORKLOAD: [&str; 2] = ["sleep", "3600"];

/// `corral-bench pods --with-containerd / --phases` options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rounds: each round makes one pod of every kind on every runtime.
    pub n: usize,
    /// Pods started at once in the burst round (0: no burst).
    pub burst: usize,
    /// Also measure a private containerd, interleaved with corral.
    pub with_containerd: bool,
    /// Print the steps of corral's RunPodSandbox (from corrald's log) as a table.
    pub phases: bool,
    /// More OCI runtime handlers for corral's pod+container path, as NAME=PATH.
    pub extra_handlers: Vec<String>,
}

/// A timed path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Row {
    RunPodNetwork,
    RunHostNetwork,
    PodWithContainer(String),
    StopWithContainer(String),
    StopPodOnly,
}

impl Row {
    fn label(&self) -> String {
        match self {
            Row::RunPodNetwork => "RunPodSandbox, pod network".into(),
            Row::RunHostNetwork => "RunPodSandbox, hostNetwork (no CNI)".into(),
            Row::PodWithContainer(h) => format!("RunPodSandbox+Create+StartContainer ({h})"),
            Row::StopWithContainer(h) => format!("StopPodSandbox, 1 container ({h})"),
            Row::StopPodOnly => "StopPodSandbox, no container".into(),
        }
    }
}

/// A runtime under test.
struct Target {
    /// `corral` or `containerd`.
    name: &'static str,
    channel: Channel,
    /// The parent of every pod cgroup.
    cgroup_root: String,
    /// Handlers this target runs the pod+container path with.
    handlers: Vec<String>,
    /// Latencies per path.
    samples: BTreeMap<Row, Vec<Duration>>,
    /// The sandbox ids of the sequential pod-network RunPodSandbox calls, with their latency.
    pod_network_ids: Vec<(String, Duration)>,
    /// The timed pod + container (runc) paths, call by call.
    pod_container_paths: Vec<PodContainerPath>,
    burst: Option<Burst>,
}

/// One timed RunPodSandbox + CreateContainer + StartContainer: the ids and what the client
/// saw of each call.
#[derive(Debug, Clone)]
struct PodContainerPath {
    pod_id: String,
    container_id: String,
    run: Duration,
    create: Duration,
    start: Duration,
}

impl Target {
    fn rt(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    fn p50(&self, row: &Row) -> Option<Duration> {
        let mut samples = self.samples.get(row)?.clone();
        samples.sort();
        Some(percentile(&samples, 0.5))
    }
}

/// The burst round's outcome.
struct Burst {
    pods: usize,
    failures: Vec<String>,
    samples: Vec<Duration>,
    wall: Duration,
}

/// Runs the comparison.
pub async fn run(options: Options) -> anyhow::Result<()> {
    if let Some(reason) = registry::skip_reason() {
        bail!("cannot run a local registry: {reason}");
    }
    println!("load average at start: {}", load_average());
    let registry = Registry::start();
    let image = crate::setup::push_workload_image(&registry);
    let logs = crate::setup::log_dir()?;
    let (daemon, corral, corral_traces) = start_corral(&options.extra_handlers).await?;
    let mut targets = vec![corral];
    let mut traces = vec![corral_traces];
    let mut containerd = None;
    if options.with_containerd {
        let (started, target) = start_containerd(&registry, &mut traces).await?;
        targets.push(target);
        containerd = Some(started);
    }
    for target in &targets {
        crate::print_version(&target.channel).await?;
        crate::images::pull(&mut ImageServiceClient::new(target.channel.clone()), &image).await?;
    }

    let measured = measure_all(&mut targets, &image, logs.path(), &options).await;
    if let Err(e) = &measured {
        println!("\nthe run failed: {e:#}");
    }
    println!("\nload average after the runs: {}", load_average());
    print_table(&targets, options.burst);
    if options.phases {
        print_phases(&targets[0], &daemon.log());
    }
    tear_down(&targets, containerd, daemon, registry, &traces).await;
    measured
}

/// A private corrald with runc and the `extra` handlers (`NAME=PATH`), as a target, with what
/// it could leave behind.
async fn start_corral(extra: &[String]) -> anyhow::Result<(corral_e2e::Daemon, Target, Traces)> {
    let extra = extra_handlers(extra)?;
    let handlers_toml: String = extra
        .iter()
        .map(|(name, path)| format!("[runtimes.{name}]\npath = {path:?}\n"))
        .collect();
    let daemon = corral_e2e::Daemon::start(corral_e2e::DaemonOptions {
        extra_config_toml: handlers_toml,
        with_cni: true,
        cgroup_driver: "cgroupfs",
    });
    let traces = Traces {
        dir: Some(daemon.dir().to_path_buf()),
        cgroup_root: format!("/corral-bench-{}", std::process::id()),
        bridge: Some(daemon.net.bridge.clone()),
    };
    let mut handlers = vec!["runc".to_string()];
    handlers.extend(extra.iter().map(|(name, _)| name.clone()));
    let target = Target {
        name: "corral",
        channel: daemon.channel().await,
        cgroup_root: traces.cgroup_root.clone(),
        handlers,
        samples: BTreeMap::new(),
        pod_network_ids: Vec::new(),
        pod_container_paths: Vec::new(),
        burst: None,
    };
    Ok((daemon, target, traces))
}

/// A private containerd with its pause image pulled, as a target; what it could leave behind
/// goes to `traces` as soon as it runs.
async fn start_containerd(
    registry: &Registry,
    traces: &mut Vec<Traces>,
) -> anyhow::Result<(Containerd, Target)> {
    let pause = crate::setup::push_pause_image(registry);
    let cgroup_root = format!("/containerd-bench-{}", std::process::id());
    let mut started = Containerd::start(&registry.host, &pause, &cgroup_root)?;
    traces.push(Traces {
        dir: Some(started.dir().to_path_buf()),
        cgroup_root: cgroup_root.clone(),
        bridge: Some(started.bridge().to_string()),
    });
    let channel = started.ready_channel(Duration::from_secs(30)).await?;
    crate::images::pull(&mut ImageServiceClient::new(channel.clone()), &pause).await?;
    let target = Target {
        name: "containerd",
        channel,
        cgroup_root,
        handlers: vec!["runc".into()],
        samples: BTreeMap::new(),
        pod_network_ids: Vec::new(),
        pod_container_paths: Vec::new(),
        burst: None,
    };
    Ok((started, target))
}

/// Removes the bench's pods, stops the runtimes and the registry, and prints whatever of
/// the runs is left.
async fn tear_down(
    targets: &[Target],
    containerd: Option<Containerd>,
    daemon: corral_e2e::Daemon,
    registry: Registry,
    traces: &[Traces],
) {
    for target in targets {
        cleanup::remove_pods_labelled(
            target.channel.clone(),
            &[(LABEL, &std::process::id().to_string())],
        )
        .await;
    }
    if let (Some(containerd), Some(target)) = (containerd, targets.get(1)) {
        containerd.shutdown(target.channel.clone()).await;
    }
    drop(daemon);
    for target in targets {
        cleanup::remove_cgroups(&target.cgroup_root);
    }
    drop(registry);
    // containerd's shims run runc below this bench (a subreaper); whatever exited is ours.
    crate::processes::reap_zombie_children(|_| true);
    println!("\n{}", cleanup::report(traces));
    println!("load average at the end: {}", load_average());
}

/// `NAME=PATH` pairs.
fn extra_handlers(given: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    given
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once('=') {
            Some((name, path)) if !name.is_empty() && Path::new(path).is_absolute() => {
                Ok((name.to_string(), path.to_string()))
            }
            _ => bail!("--extra-handler {s:?}: give NAME=/absolute/path/to/runtime"),
        })
        .collect()
}

/// One untimed round per target, then `n` interleaved rounds, then the burst.
async fn measure_all(
    targets: &mut [Target],
    image: &str,
    logs: &Path,
    options: &Options,
) -> anyhow::Result<()> {
    for target in targets.iter_mut() {
        one_round(target, image, logs, "warmup", false).await?;
    }
    for round in 0..options.n {
        let count = targets.len();
        for k in 0..count {
            // Swap who goes first every round.
            let i = if round % 2 == 0 { k } else { count - 1 - k };
            one_round(&mut targets[i], image, logs, &round.to_string(), true).await?;
        }
        if round % 5 == 4 {
            println!("  {} rounds done, load {}", round + 1, load_average());
        }
    }
    if options.burst > 0 {
        for target in targets.iter_mut() {
            let burst = burst(target, logs, options.burst).await;
            target.burst = Some(burst);
            println!("  burst on {} done, load {}", target.name, load_average());
        }
    }
    Ok(())
}

/// One pod of every kind on `target`; records the latencies when `timed`.
async fn one_round(
    target: &mut Target,
    image: &str,
    logs: &Path,
    round: &str,
    timed: bool,
) -> anyhow::Result<()> {
    let mut times: Vec<(Row, Duration)> = Vec::new();
    let name = format!("net-{round}");
    let t = Instant::now();
    let (id, _) = run_pod(target, &name, NamespaceMode::Pod, "runc", logs).await?;
    let run = t.elapsed();
    times.push((Row::RunPodNetwork, run));
    if timed {
        target.pod_network_ids.push((id.clone(), run));
    }
    let t = Instant::now();
    stop_pod(target.rt(), &id).await?;
    times.push((Row::StopPodOnly, t.elapsed()));
    remove_pod(target.rt(), id).await?;

    let name = format!("host-{round}");
    let t = Instant::now();
    let (id, _) = run_pod(target, &name, NamespaceMode::Node, "runc", logs).await?;
    times.push((Row::RunHostNetwork, t.elapsed()));
    remove_pod(target.rt(), id).await?;

    for handler in target.handlers.clone() {
        let name = format!("ctr-{handler}-{round}");
        let t = Instant::now();
        let (id, pod) = run_pod(target, &name, NamespaceMode::Pod, &handler, logs).await?;
        let run = t.elapsed();
        let started = create_and_start(
            target.rt(),
            &id,
            &pod,
            container_config("c", image, &WORKLOAD),
        )
        .await
        .with_context(|| format!("{}: container in {name}", target.name))?;
        let whole = t.elapsed();
        times.push((Row::PodWithContainer(handler.clone()), whole));
        if timed && handler == "runc" {
            target.pod_container_paths.push(PodContainerPath {
                pod_id: id.clone(),
                container_id: started.id,
                run,
                create: started.create,
                start: started.start,
            });
        }
        let t = Instant::now();
        stop_pod(target.rt(), &id).await?;
        times.push((Row::StopWithContainer(handler.clone()), t.elapsed()));
        remove_pod(target.rt(), id).await?;
    }
    if timed {
        for (row, took) in times {
            target.samples.entry(row).or_default().push(took);
        }
    }
    Ok(())
}

/// `pods` pod-network RunPodSandbox calls all at once; then the pods are removed (untimed).
async fn burst(target: &Target, logs: &Path, pods: usize) -> Burst {
    let started = Instant::now();
    let outcomes: Vec<anyhow::Result<(String, Duration)>> =
        futures::future::join_all((0..pods).map(|i| async move {
            let t = Instant::now();
            let (id, _) = run_pod(
                target,
                &format!("burst-{i}"),
                NamespaceMode::Pod,
                "runc",
                logs,
            )
            .await?;
            Ok((id, t.elapsed()))
        }))
        .await;
    let wall = started.elapsed();
    let mut ids = Vec::new();
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok((id, took)) => {
                ids.push(id);
                samples.push(took);
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    stream::iter(ids)
        .for_each_concurrent(10, |id| async move {
            if let Err(e) = remove_pod(target.rt(), id).await {
                println!("  {}: removing a burst pod: {e:#}", target.name);
            }
        })
        .await;
    samples.sort();
    Burst {
        pods,
        failures,
        samples,
        wall,
    }
}

/// RunPodSandbox: network `mode` (POD or NODE), IPC in the pod, PID per container, cgroup under
/// the target's root, labelled as ours.
async fn run_pod(
    target: &Target,
    name: &str,
    network: NamespaceMode,
    handler: &str,
    logs: &Path,
) -> anyhow::Result<(String, PodSandboxConfig)> {
    let log_dir = logs.join(target.name).join(name);
    let mut config = labelled_pod_config(name, &target.cgroup_root, network, &log_dir)?;
    if network == NamespaceMode::Node {
        // As kubelet sends a hostNetwork pod: the node's name, not one of its own.
        config.hostname = String::new();
    }
    let id = target
        .rt()
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .with_context(|| format!("{}: RunPodSandbox {name} ({handler})", target.name))?
        .into_inner()
        .pod_sandbox_id;
    Ok((id, config))
}

async fn stop_pod(mut rt: RuntimeServiceClient<Channel>, id: &str) -> anyhow::Result<()> {
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .context("StopPodSandbox")?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The comparison table: p50 per path and runtime, corral / containerd; then the burst.
fn print_table(targets: &[Target], burst_size: usize) {
    print_paths(targets);
    if burst_size > 0 {
        print_bursts(targets, burst_size);
    }
}

/// The p50 of every path on corral against containerd (with runc).
fn print_paths(targets: &[Target]) {
    let corral = &targets[0];
    let containerd = targets.get(1);
    let rounds = corral.samples.get(&Row::RunPodNetwork).map_or(0, Vec::len);
    println!(
        "\n=== pod paths, p50 of {rounds} interleaved rounds (ms); ratio = corral / containerd (below 1: corral is faster) ==="
    );
    println!(
        "{:<48} {:>9} {:>11} {:>7}",
        "", "corral", "containerd", "ratio"
    );
    let section = format!("pod start and stop (p50 of {rounds} interleaved rounds)");
    let line = |label: &str, ours: Option<Duration>, theirs: Option<Duration>| {
        path_row(&section, label, ours, theirs)
    };
    let p50 = |t: Option<&Target>, row: &Row| t.and_then(|t| t.p50(row));
    let difference = |t: Option<&Target>| {
        let net = p50(t, &Row::RunPodNetwork)?;
        let host = p50(t, &Row::RunHostNetwork)?;
        Some(net.saturating_sub(host))
    };
    for row in [Row::RunPodNetwork, Row::RunHostNetwork] {
        line(&row.label(), p50(Some(corral), &row), p50(containerd, &row));
    }
    line(
        "  -> time in the CNI chain (difference)",
        difference(Some(corral)),
        difference(containerd),
    );
    for handler in &corral.handlers {
        // Every handler of corral against containerd with runc.
        for (ours, theirs) in [
            (
                Row::PodWithContainer(handler.clone()),
                Row::PodWithContainer("runc".into()),
            ),
            (
                Row::StopWithContainer(handler.clone()),
                Row::StopWithContainer("runc".into()),
            ),
        ] {
            line(
                &ours.label(),
                p50(Some(corral), &ours),
                p50(containerd, &theirs),
            );
        }
    }
    let row = Row::StopPodOnly;
    line(&row.label(), p50(Some(corral), &row), p50(containerd, &row));
}

/// Prints and records one row of the pod paths table.
fn path_row(section: &str, label: &str, ours: Option<Duration>, theirs: Option<Duration>) {
    let fmt = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.1}", ms(d)));
    let ratio = crate::summary::ratio(ours.map(ms), theirs.map(ms));
    println!(
        "{label:<48} {:>9} {:>11} {:>7}",
        fmt(ours),
        fmt(theirs),
        ratio.map_or("-".to_string(), |r| format!("{r:.2}"))
    );
    let in_ms = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.0} ms", ms(d)));
    crate::summary::record_with_target(
        section,
        label,
        in_ms(ours),
        in_ms(theirs),
        ratio,
        target_of(label),
    );
}

/// The burst round of every target: failures, p50, p99 and wall time.
fn print_bursts(targets: &[Target], burst_size: usize) {
    println!("\n{burst_size} pods at once (RunPodSandbox, pod network):");
    let mut burst_cells = Vec::new();
    for target in targets {
        let Some(b) = &target.burst else { continue };
        burst_cells.push(burst_row(target.name, b));
    }
    let mut cells = burst_cells.into_iter();
    crate::summary::record_with_target(
        &format!("{burst_size} pods at once"),
        "RunPodSandbox (pod network): failures, p50, p99",
        cells.next().unwrap_or_else(|| "-".into()),
        cells.next().unwrap_or_else(|| "-".into()),
        None,
        "0 failures, p99 ≤ 2× p50",
    );
}

/// Prints one runtime's burst and its first failures; returns its summary cell.
fn burst_row(name: &str, b: &Burst) -> String {
    let p = |q| ms(percentile(&b.samples, q));
    let (p50, p99) = (p(0.5), p(0.99));
    let spread = if p50 > 0.0 { p99 / p50 } else { 0.0 };
    println!(
        "  {:<11} {}/{} failed   p50 {:>7.1}   p99 {:>7.1}   p99/p50 {:.2}   wall {:.2}s",
        name,
        b.failures.len(),
        b.pods,
        p50,
        p99,
        spread,
        b.wall.as_secs_f64()
    );
    for failure in b.failures.iter().take(3) {
        println!("      {}", crate::figures::short(failure, 160));
    }
    format!(
        "{} failed, p50 {:.1} s, p99 {:.1} s (p99/p50 {:.2})",
        b.failures.len(),
        p50 / 1e3,
        p99 / 1e3,
        spread
    )
}

/// The target for a row of the pod paths table.
fn target_of(label: &str) -> &'static str {
    let runc = |row: Row| row.label() == label;
    if label == Row::RunPodNetwork.label()
        || runc(Row::PodWithContainer("runc".into()))
        || runc(Row::StopWithContainer("runc".into()))
    {
        "≤ 0.5"
    } else {
        ""
    }
}

/// One logged step: where it started and how long it took (ms).
#[derive(Debug, Clone, Copy, PartialEq)]
struct LoggedStep {
    start: f64,
    took: f64,
}

/// Where corrald logs the steps of a call (`phases=name@start+took,...`): the line's message
/// and the field naming the object.
#[derive(Debug, Clone, Copy)]
struct PhaseLine {
    message: &'static str,
    id_field: &'static str,
}

const POD_READY: PhaseLine = PhaseLine {
    message: "pod sandbox ready",
    id_field: "pod_id",
};
const CONTAINER_CREATED: PhaseLine = PhaseLine {
    message: "container created",
    id_field: "container_id",
};
const CONTAINER_STARTED: PhaseLine = PhaseLine {
    message: "container started",
    id_field: "container_id",
};

/// The steps corrald logged on each `line` (e.g. a pod's "pod sandbox ready"), by the id the
/// line names.
fn logged_phases(log: &str, line: PhaseLine) -> BTreeMap<String, Vec<(String, LoggedStep)>> {
    let field = |text: &str, key: &str| -> Option<String> {
        // The last: a span prefix may carry the same field.
        let at = text.rfind(&format!(" {key}="))? + key.len() + 2;
        Some(text[at..].split_whitespace().next()?.to_string())
    };
    let mut out = BTreeMap::new();
    for text in log.lines().filter(|l| l.contains(line.message)) {
        let (Some(id), Some(phases)) = (field(text, line.id_field), field(text, "phases")) else {
            continue;
        };
        let steps = phases
            .split(',')
            .filter_map(|step| {
                let (name, times) = step.split_once('@')?;
                let (start, took) = times.split_once('+')?;
                Some((
                    name.to_string(),
                    LoggedStep {
                        start: start.parse().ok()?,
                        took: took.parse().ok()?,
                    },
                ))
            })
            .collect();
        out.insert(id, steps);
    }
    out
}

/// The table of RunPodSandbox's steps for corral's sequential pod-network pods: per step the
/// p50 of its start and of its length, in the order they start.
fn print_phases(corral: &Target, log: &str) {
    print_pod_phases(corral, log);
    print_pod_container_phases(corral, log);
}

/// The p50 of each step's start and length over `runs` (each a list of logged steps), in the
/// order the steps start.
fn step_medians<'a>(runs: impl Iterator<Item = &'a Vec<(String, LoggedStep)>>) -> Vec<StepRow> {
    let mut per_step: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for steps in runs {
        for (name, step) in steps {
            let entry = per_step.entry(name.clone()).or_default();
            entry.0.push(step.start);
            entry.1.push(step.took);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let mut rows: Vec<StepRow> = per_step
        .into_iter()
        .map(|(name, (starts, tooks))| (name, median(starts), median(tooks)))
        .collect();
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    rows
}

/// A step's name and the p50 of its start and of its length (ms).
type StepRow = (String, f64, f64);

/// The pod + container (runc) path call by call: what the client saw of each call and, under
/// it, the steps corrald logged, p50 over the timed rounds.
fn print_pod_container_phases(corral: &Target, log: &str) {
    let paths = &corral.pod_container_paths;
    if paths.is_empty() {
        return;
    }
    let section = "corral's pod + container (runc) calls and steps (p50, ms: start + took)";
    println!(
        "\n=== corral pod + container (runc), p50 over {} paths (ms; steps from the start of each call's work) ===",
        paths.len()
    );
    println!(
        "{:<26} {:>8} {:>8} {:>8}",
        "call / step", "start", "took", "end"
    );
    let client = |pick: fn(&PodContainerPath) -> Duration| {
        let mut v: Vec<Duration> = paths.iter().map(pick).collect();
        v.sort();
        ms(percentile(&v, 0.5))
    };
    let pods = logged_phases(log, POD_READY);
    let created = logged_phases(log, CONTAINER_CREATED);
    let started = logged_phases(log, CONTAINER_STARTED);
    let calls: [(&str, f64, Vec<StepRow>); 3] = [
        (
            "RunPodSandbox",
            client(|p| p.run),
            step_medians(paths.iter().filter_map(|p| pods.get(&p.pod_id))),
        ),
        (
            "CreateContainer",
            client(|p| p.create),
            step_medians(paths.iter().filter_map(|p| created.get(&p.container_id))),
        ),
        (
            "StartContainer",
            client(|p| p.start),
            step_medians(paths.iter().filter_map(|p| started.get(&p.container_id))),
        ),
    ];
    for (call, took, steps) in calls {
        println!("{call:<26} {:>8} {took:>8.2}   (as the client saw it)", "");
        crate::summary::record(section, call, format!("{took:.1}"), "-".into(), None);
        for (name, start, took) in steps {
            println!(
                "  {name:<24} {start:>8.2} {took:>8.2} {:>8.2}",
                start + took
            );
            crate::summary::record(
                section,
                &format!("  {call}: {name}"),
                format!("{start:.1} + {took:.1}"),
                "-".into(),
                None,
            );
        }
    }
}

/// The table of RunPodSandbox's steps for corral's sequential pod-network pods.
fn print_pod_phases(corral: &Target, log: &str) {
    let logged = logged_phases(log, POD_READY);
    let measured: Vec<_> = corral
        .pod_network_ids
        .iter()
        .filter_map(|(id, total)| Some((*total, logged.get(id)?)))
        .collect();
    if measured.is_empty() {
        println!("\nno phases found in corrald's log");
        return;
    }
    let rows = step_medians(measured.iter().map(|(_, steps)| *steps));
    let mut totals: Vec<Duration> = measured.iter().map(|(total, _)| *total).collect();
    totals.sort();
    println!(
        "\n=== corral RunPodSandbox (pod network) steps, p50 over {} pods (ms, from the start of the call's work) ===",
        totals.len()
    );
    println!("{:<20} {:>8} {:>8} {:>8}", "step", "start", "took", "end");
    for (name, start, took) in &rows {
        println!("{name:<20} {start:>8.2} {took:>8.2} {:>8.2}", start + took);
        crate::summary::record(
            "corral's RunPodSandbox steps (p50, ms: start + took)",
            name,
            format!("{start:.1} + {took:.1}"),
            "-".into(),
            None,
        );
    }
    println!(
        "{:<20} {:>8} {:>8.2}   (as the client saw it: gRPC, validation, locks and steps)",
        "RunPodSandbox",
        "",
        ms(percentile(&totals, 0.5))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_phases_are_read_back_by_pod() {
        let log =
            "2026-12-07T08:00:00Z  INFO run_pod_sandbox: corrald::pod::run: pod sandbox ready \
                   pod_id=abc pod=x ips=[\"10.0.0.2\"] phases=pause@0.10+3.50,cni_add@3.70+40.00\n\
                   other line phases=nope@1+2\n";
        let phases = logged_phases(log, POD_READY);
        assert_eq!(phases.len(), 1);
        let steps = &phases["abc"];
        assert_eq!(steps[0].0, "pause");
        assert_eq!(
            steps[1].1,
            LoggedStep {
                start: 3.7,
                took: 40.0
            }
        );
    }

    #[test]
    fn container_lines_are_read_back_by_container() {
        let log = "INFO corrald::container::create: container created container_id=c1 \
                   pod_id=p1 name=x phases=record_creating@0.01+0.60,rootfs@0.70+1.20\n\
                   INFO corrald::container::start: container started container_id=c1 \
                   pod_id=p1 phases=refresh@0.00+0.10,runtime_start@0.20+6.00\n";
        let created = logged_phases(log, CONTAINER_CREATED);
        assert_eq!(created.len(), 1);
        assert_eq!(created["c1"][1].0, "rootfs");
        let started = logged_phases(log, CONTAINER_STARTED);
        assert_eq!(started["c1"][1].1.took, 6.0);
        assert!(logged_phases(log, POD_READY).is_empty());
        let rows = step_medians([&created["c1"], &created["c1"]].into_iter());
        assert_eq!(rows[0], ("record_creating".to_string(), 0.01, 0.6));
    }

    #[test]
    fn extra_handlers_need_a_name_and_an_absolute_path() {
        assert_eq!(
            extra_handlers(&["youki=/usr/bin/youki".into()]).expect("valid"),
            [("youki".to_string(), "/usr/bin/youki".to_string())]
        );
        assert!(extra_handlers(&["youki".into()]).is_err());
        assert!(extra_handlers(&["youki=youki".into()]).is_err());
    }
}
