//! corral-bench: times CRI calls against a corrald and prints p50/p90/p99.
//!
//! By default it starts a private corrald (the binaries next to this one, temp dirs, its own
//! CNI bridge) exactly as the end-to-end tests do; `--socket` measures an already running
//! runtime instead — corrald or any other CRI runtime, so the same client compares them.
//! Timings are printed, never asserted.

mod all;
mod cleanup;
mod containerd;
mod containers;
mod events;
mod figures;
mod images;
mod memory;
mod node;
mod oci_calls;
mod pod_paths;
mod processes;
mod pull;
mod setup;
mod soak;
mod summary;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use cri_proto::v1::*;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(name = "corral-bench", about = "Time CRI calls and report percentiles")]
struct Cli {
    /// Measure the runtime on this socket instead of starting a private corrald.
    #[arg(long, global = true)]
    socket: Option<std::path::PathBuf>,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// RunPodSandbox, StopPodSandbox and RemovePodSandbox over N pods. With
    /// `--with-containerd` or `--phases`: the pod paths of issue 13 (pod network, hostNetwork,
    /// pod + container, stop; N interleaved rounds, then a burst of pods at once), against a
    /// private containerd in the same run, and corral's RunPodSandbox steps.
    Pods {
        /// Number of pods per round (with --with-containerd / --phases: rounds).
        #[arg(short, default_value_t = 50)]
        n: usize,
        /// Pods in flight at once in the concurrent round.
        #[arg(long, default_value_t = 10)]
        concurrency: usize,
        /// Also start a private containerd (Debian's `containerd` package) and measure it the
        /// same way, interleaved with corral.
        #[arg(long)]
        with_containerd: bool,
        /// Print the steps of corral's RunPodSandbox, from corrald's log, as a table.
        #[arg(long)]
        phases: bool,
        /// Pods started at once in the burst round of --with-containerd / --phases (0: none).
        #[arg(long, default_value_t = 100)]
        burst: usize,
        /// More OCI runtime handlers for corral's pod+container path, as NAME=PATH (e.g.
        /// youki=/usr/local/bin/youki), beside runc.
        #[arg(long = "extra-handler", value_delimiter = ',')]
        extra_handlers: Vec<String>,
    },
    /// PullImage of a 5-layer image from a loopback registry, then ListImages and ImageStatus
    /// latency with 200 more images stored.
    Images {
        /// Timed pulls of the 5-layer image (removed between pulls).
        #[arg(long, default_value_t = 5)]
        pulls: usize,
        /// Timed ListImages / ImageStatus calls.
        #[arg(long, default_value_t = 500)]
        calls: usize,
    },
    /// Create+Start and Stop+Remove of a busybox container in a pod, and the whole "pod + one
    /// container running" path, per OCI runtime handler; optionally the same against a private
    /// containerd, side by side.
    Containers(containers::Options),
    /// Latency from a container's own exit to its CONTAINER_STOPPED event on
    /// GetContainerEvents, over N short-lived containers.
    Events {
        /// Number of containers.
        #[arg(short, default_value_t = 30)]
        n: usize,
    },
    /// N pod lifecycles (run, create, start, exec, stop, remove) in a row; corrald's RSS and
    /// open fds after the first 100 and at the end, and whether the host is clean.
    Soak {
        /// Pod lifecycles.
        #[arg(short, default_value_t = 1000)]
        n: usize,
    },
    /// A node with N pods (one container each): relist and stats latency, idle CPU, memory
    /// per pod and restart-to-serving, optionally against a private containerd in turns.
    Node(node::Options),
    /// Cold pulls of a ~200 MB, 8-layer image (gzip and zstd) from a loopback registry: wall
    /// and CPU time, optionally against a private containerd in turns.
    Pull(pull::Options),
    /// Every benchmark of issue 13 in one run (OCI runtime calls, pod paths with steps and a
    /// burst, a node with 500 pods, cold pulls), then one table of every row with the ratios
    /// against containerd and the load average.
    All(all::Options),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("corral-bench runs pods: run it as root");
    }
    match cli.what {
        What::Pods {
            n,
            with_containerd,
            phases,
            burst,
            extra_handlers,
            ..
        } if with_containerd || phases => {
            if cli.socket.is_some() {
                bail!("--with-containerd and --phases start their own corrald: drop --socket");
            }
            pod_paths::run(pod_paths::Options {
                n,
                burst,
                with_containerd,
                phases,
                extra_handlers,
            })
            .await?
        }
        What::Pods { n, concurrency, .. } => {
            let (daemon, channel) = connect(cli.socket).await?;
            let rt = RuntimeServiceClient::new(channel);
            pods(rt.clone(), n, 1, "sequential").await?;
            pods(rt, n, concurrency.max(1), "concurrent").await?;
            drop(daemon);
        }
        What::Images { pulls, calls } => {
            let (daemon, channel) = connect(cli.socket).await?;
            images::run(channel, pulls, calls).await?;
            drop(daemon);
        }
        What::Containers(options) => containers::run(cli.socket, options).await?,
        What::Events { n } => {
            let (daemon, channel) = connect(cli.socket).await?;
            events::run(channel, n).await?;
            drop(daemon);
        }
        What::Soak { n } => soak::run(n).await?,
        What::Node(options) => node::run(options).await?,
        What::Pull(options) => pull::run(options).await?,
        What::All(options) => {
            if cli.socket.is_some() {
                bail!("all starts its own corrald (and containerd): drop --socket");
            }
            all::run(options).await?
        }
    }
    Ok(())
}

/// Connects to the runtime on `socket`, or starts a private corrald when there is none, and
/// prints the runtime's version.
async fn connect(
    socket: Option<std::path::PathBuf>,
) -> anyhow::Result<(Option<corral_e2e::Daemon>, Channel)> {
    let (daemon, channel) = match socket {
        Some(path) => (None, corral_e2e::connect_unix(path).await),
        None => {
            let d = corral_e2e::Daemon::start(corral_e2e::DaemonOptions {
                extra_config_toml: String::new(),
                with_cni: true,
                cgroup_driver: "cgroupfs",
            });
            let c = d.channel().await;
            (Some(d), c)
        }
    };
    print_version(&channel).await?;
    Ok((daemon, channel))
}

/// Prints the runtime's name and version as it reports them.
pub(crate) async fn print_version(channel: &Channel) -> anyhow::Result<()> {
    let version = RuntimeServiceClient::new(channel.clone())
        .version(VersionRequest::default())
        .await
        .context("Version")?
        .into_inner();
    println!(
        "runtime: {} {} (CRI {})",
        version.runtime_name, version.runtime_version, version.runtime_api_version
    );
    Ok(())
}

/// Latencies of one pod's three calls.
struct PodTimes {
    run: Duration,
    stop: Duration,
    remove: Duration,
}

async fn pods(
    rt: RuntimeServiceClient<Channel>,
    n: usize,
    concurrency: usize,
    label: &str,
) -> anyhow::Result<()> {
    let round = std::process::id() ^ (Instant::now().elapsed().subsec_nanos());
    let started = Instant::now();
    let mut results = Vec::with_capacity(n);
    let mut next = 0usize;
    while next < n {
        let batch: Vec<_> = (next..n.min(next + concurrency))
            .map(|i| one_pod(rt.clone(), format!("bench-{label}-{round}-{i}")))
            .collect();
        next += batch.len();
        for r in futures::future::join_all(batch).await {
            results.push(r?);
        }
    }
    let wall = started.elapsed();
    println!(
        "\n{label}: {n} pods, {concurrency} at a time, {:.2}s wall, {:.1} pods/s",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64()
    );
    report("RunPodSandbox", results.iter().map(|r| r.run).collect());
    report("StopPodSandbox", results.iter().map(|r| r.stop).collect());
    report(
        "RemovePodSandbox",
        results.iter().map(|r| r.remove).collect(),
    );
    Ok(())
}

async fn one_pod(mut rt: RuntimeServiceClient<Channel>, name: String) -> anyhow::Result<PodTimes> {
    let parent = format!("/corral-bench/pod{name}");
    let config = corral_e2e::pod_config(
        &name,
        &parent,
        (
            NamespaceMode::Pod as i32,
            NamespaceMode::Container as i32,
            NamespaceMode::Pod as i32,
        ),
    );
    let t = Instant::now();
    let id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .with_context(|| format!("RunPodSandbox {name}"))?
        .into_inner()
        .pod_sandbox_id;
    let run = t.elapsed();
    let t = Instant::now();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .context("StopPodSandbox")?;
    let stop = t.elapsed();
    let t = Instant::now();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .context("RemovePodSandbox")?;
    let remove = t.elapsed();
    Ok(PodTimes { run, stop, remove })
}

/// The `p` quantile (0.0..=1.0) of `sorted` samples (nearest rank); zero when empty.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// Prints p50/p90/p99 of `samples`.
pub(crate) fn report(call: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pct = |p: f64| percentile(&samples, p);
    println!(
        "  {call:<18} p50 {:>8.2} ms   p90 {:>8.2} ms   p99 {:>8.2} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.90).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
}
