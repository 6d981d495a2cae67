//! `corral-bench containers`: how long a busybox `sleep 3600` container takes to
//! CreateContainer+StartContainer and to StopContainer+RemoveContainer in an existing pod, and
//! the whole "pod + one container running" path (RunPodSandbox + CreateContainer +
//! StartContainer), each sequential and N at a time, per OCI runtime handler; then memory per
//! pod. With `--with-containerd` the same client measures a private containerd the same way,
//! and a table sets the two side by side.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use corral_e2e::cri::container_config;
use corral_e2e::registry::{self, Registry};
use cri_proto::v1::image_service_client::ImageServiceClient;
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use cri_proto::v1::*;
use futures::stream::{self, StreamExt, TryStreamExt};
use tonic::transport::Channel;

use crate::cleanup::{self, Traces};
use crate::containerd::Containerd;
use crate::figures::{self, short, Figures, HandlerFigures, Series, Timed, MEMORY_PODS};
use crate::memory::{self, PodMemory};
use crate::report;
use crate::setup::{labelled_pod_config, LABEL};

/// The container every measurement runs.
const WORKLOAD: [&str; 2] = ["sleep", "3600"];
/// corrald's config for the second handler.
const CORRALD_HANDLERS_TOML: &str = "[runtimes.crun]\npath = \"/usr/bin/crun\"\n";

/// `corral-bench containers` options.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Containers (and pods) per round.
    #[arg(short, default_value_t = 20)]
    pub n: usize,
    /// Calls in flight at once in the concurrent rounds.
    #[arg(long, default_value_t = 20)]
    pub concurrency: usize,
    /// OCI runtime handlers to measure, in order (repeat, or separate with commas). A handler
    /// that cannot run on this host is reported with its error; the others still run.
    #[arg(
        long = "handler",
        value_delimiter = ',',
        default_values_t = ["runc".to_string(), "crun".to_string()]
    )]
    pub handlers: Vec<String>,
    /// Also start a private containerd (Debian's `containerd` package) and measure it the
    /// same way, with the same images from the same registry.
    #[arg(long)]
    pub with_containerd: bool,
}

/// A runtime under test, reached over its CRI socket.
struct Target<'a> {
    /// `corral` or `containerd`.
    name: &'static str,
    channel: Channel,
    /// The parent of every pod cgroup (`/corral-bench-PID`, `/containerd-bench-PID`).
    cgroup_root: String,
    /// The pods' log directories go under this.
    log_root: PathBuf,
    /// The daemon's pid when this bench started it; memory is measured only then.
    daemon_pid: Option<i32>,
    /// The busybox image, pulled.
    image: &'a str,
}

impl Target<'_> {
    fn rt(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }
}

/// Runs the whole benchmark: corral (private, or the runtime on `socket`), then containerd
/// when asked, then the comparison and the memory table; checks that nothing is left.
pub async fn run(socket: Option<PathBuf>, options: Options) -> anyhow::Result<()> {
    if let Some(reason) = registry::skip_reason() {
        bail!("cannot run a local registry: {reason}");
    }
    let registry = Registry::start();
    let image = crate::setup::push_workload_image(&registry);
    let logs = crate::setup::log_dir()?;
    let mut traces = Vec::new();
    println!("load average at start: {}", load_average());

    let corral = measure_corral(socket, &image, logs.path(), &options, &mut traces).await?;
    let containerd = if options.with_containerd {
        // containerd runs an image as each pod's pause container; corral needs none.
        let pause = crate::setup::push_pause_image(&registry);
        let logs = logs.path();
        Some(measure_containerd(&registry.host, &image, &pause, logs, &options, &mut traces).await)
    } else {
        None
    };

    let containerd = match containerd {
        Some(Ok(figures)) => {
            figures::print_comparison(&corral, &figures);
            Some(figures)
        }
        Some(Err(e)) => {
            println!("\ncontainerd could not be measured: {e:#}");
            None
        }
        None => None,
    };
    figures::print_memory(&corral, containerd.as_ref());
    println!("\nload average at the end: {}", load_average());
    drop(registry);
    println!("\n{}", cleanup::report(&traces));
    if options.with_containerd && containerd.is_none() {
        bail!("containerd could not be measured (see above)");
    }
    Ok(())
}

/// The first three fields of /proc/loadavg: the figures mean little on a busy machine.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// corrald with runc and crun handlers, started privately (or the runtime on `socket`).
async fn measure_corral(
    socket: Option<PathBuf>,
    image: &str,
    logs: &Path,
    options: &Options,
    traces: &mut Vec<Traces>,
) -> anyhow::Result<Figures> {
    let cgroup_root = format!("/corral-bench-{}", std::process::id());
    let daemon = match socket {
        Some(_) => None,
        None => Some(corral_e2e::Daemon::start(corral_e2e::DaemonOptions {
            extra_config_toml: CORRALD_HANDLERS_TOML.into(),
            with_cni: true,
            cgroup_driver: "cgroupfs",
        })),
    };
    let channel = match (&socket, &daemon) {
        (Some(path), _) => corral_e2e::connect_unix(path.clone()).await,
        (None, Some(daemon)) => daemon.channel().await,
        (None, None) => bail!("no corrald to measure"),
    };
    traces.push(Traces {
        dir: daemon.as_ref().map(|d| d.dir().to_path_buf()),
        cgroup_root: cgroup_root.clone(),
        bridge: daemon.as_ref().map(|d| d.net.bridge.clone()),
    });
    let target = Target {
        name: "corral",
        channel,
        cgroup_root: cgroup_root.clone(),
        log_root: logs.join("corral"),
        daemon_pid: daemon.as_ref().map(|d| d.pid()),
        image,
    };
    let figures = measure(&target, options, &[image]).await;
    // The daemon removes its remaining pods, stops, unmounts and deletes its bridge on drop;
    // the pod cgroups' parents are ours to remove (as kubelet's are on a node).
    drop(daemon);
    cleanup::remove_cgroups(&cgroup_root);
    figures
}

/// A private containerd with the same handlers, images and client.
async fn measure_containerd(
    registry_host: &str,
    image: &str,
    pause: &str,
    logs: &Path,
    options: &Options,
    traces: &mut Vec<Traces>,
) -> anyhow::Result<Figures> {
    let cgroup_root = format!("/containerd-bench-{}", std::process::id());
    let mut containerd = Containerd::start(registry_host, pause, &cgroup_root)?;
    traces.push(Traces {
        dir: Some(containerd.dir().to_path_buf()),
        cgroup_root: cgroup_root.clone(),
        bridge: Some(containerd.bridge().to_string()),
    });
    let channel = containerd.ready_channel(Duration::from_secs(30)).await?;
    let target = Target {
        name: "containerd",
        channel: channel.clone(),
        cgroup_root,
        log_root: logs.join("containerd"),
        daemon_pid: Some(containerd.pid()),
        image,
    };
    let figures = measure(&target, options, &[image, pause]).await;
    if figures.is_err() {
        eprintln!("containerd log (tail):\n{}", containerd.log_tail(40));
    }
    let problems = containerd.logged_problems();
    if !problems.is_empty() {
        println!("\ncontainerd's warnings and errors during the run (count, message):");
        for (count, problem) in problems.iter().take(10) {
            println!("  {count:>5}  {}", short(problem, 200));
        }
    }
    containerd.shutdown(channel).await;
    figures
}

/// Pulls `images`, then measures every handler and the memory of `target`.
async fn measure(
    target: &Target<'_>,
    options: &Options,
    images: &[&str],
) -> anyhow::Result<Figures> {
    let version = RuntimeServiceClient::new(target.channel.clone())
        .version(VersionRequest::default())
        .await
        .context("Version")?
        .into_inner();
    let runtime = format!("{} {}", version.runtime_name, version.runtime_version);
    println!("\n=== {} ({runtime}) ===", target.name);
    let mut image_service = ImageServiceClient::new(target.channel.clone());
    for image in images {
        crate::images::pull(&mut image_service, image).await?;
    }
    let mut handlers = Vec::new();
    for handler in &options.handlers {
        println!("\n{} / {handler}:", target.name);
        let outcome = measure_handler(target, handler, options).await;
        if let Err(e) = &outcome {
            println!("  {handler} failed: {e:#}");
            remove_bench_pods(target).await;
        }
        handlers.push(HandlerFigures {
            handler: handler.clone(),
            outcome: outcome.map_err(|e| format!("{e:#}")),
        });
    }
    let ran = handlers.iter().find(|h| h.outcome.is_ok());
    let memory = match (target.daemon_pid, ran) {
        (Some(pid), Some(h)) => {
            let measured = measure_memory(target, &h.handler, pid).await;
            if measured.is_err() {
                remove_bench_pods(target).await;
            }
            measured.map_err(|e| format!("{e:#}"))
        }
        (None, _) => Err("not measured: the runtime was not started by this bench".into()),
        (_, None) => Err("not measured: no handler could run".into()),
    };
    Ok(Figures {
        runtime,
        handlers,
        memory,
    })
}

/// The sequential round, then the concurrent one.
fn rounds(options: &Options) -> [usize; 2] {
    [1, options.concurrency.max(1)]
}

/// All measurements of one handler; the first failure ends them.
async fn measure_handler(
    target: &Target<'_>,
    handler: &str,
    options: &Options,
) -> anyhow::Result<Vec<Series>> {
    let mut all = Vec::new();
    let (pod_id, pod) = run_pod(target, handler, &format!("{handler}-containers")).await?;
    let mut in_pod = Ok(());
    for concurrency in rounds(options) {
        match containers_in_pod(target, &pod_id, &pod, options.n, concurrency).await {
            Ok(series) => all.extend(series),
            Err(e) => {
                in_pod = Err(e);
                break;
            }
        }
    }
    remove_pod(target.rt(), pod_id).await?;
    in_pod?;
    for concurrency in rounds(options) {
        all.push(pods_with_container(target, handler, options.n, concurrency).await?);
    }
    Ok(all)
}

/// Create+Start of `n` containers in the pod, `concurrency` at a time, then Stop+Remove of
/// them the same way.
async fn containers_in_pod(
    target: &Target<'_>,
    pod_id: &str,
    pod: &PodSandboxConfig,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<[Series; 2]> {
    let started = Instant::now();
    let created = bounded(n, concurrency, |i| {
        let config = container_config(&format!("c{concurrency}-{i}"), target.image, &WORKLOAD);
        let rt = target.rt();
        async move {
            let t = Instant::now();
            let id = create_and_start(rt, pod_id, pod, config).await?.id;
            Ok((id, t.elapsed()))
        }
    })
    .await?;
    print_wall("containers", n, concurrency, started.elapsed());
    let create_start = Series::new(
        Timed::CreateStart,
        concurrency,
        created.iter().map(|(_, d)| *d).collect(),
    );
    report(&create_start.name(), create_start.samples.clone());

    let removed = bounded(created.len(), concurrency, |i| {
        let id = created[i].0.clone();
        let mut rt = target.rt();
        async move {
            let t = Instant::now();
            rt.stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await
            .context("StopContainer")?;
            rt.remove_container(RemoveContainerRequest { container_id: id })
                .await
                .context("RemoveContainer")?;
            Ok(t.elapsed())
        }
    })
    .await?;
    let stop_remove = Series::new(Timed::StopRemove, concurrency, removed);
    report(&stop_remove.name(), stop_remove.samples.clone());
    Ok([create_start, stop_remove])
}

/// RunPodSandbox + CreateContainer + StartContainer for `n` pods, `concurrency` at a time;
/// the pods are removed afterwards (not timed).
async fn pods_with_container(
    target: &Target<'_>,
    handler: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Series> {
    let started = Instant::now();
    let pods = bounded(n, concurrency, |i| {
        let name = format!("{handler}-pod{concurrency}-{i}");
        async move {
            let t = Instant::now();
            let (pod_id, pod) = run_pod(target, handler, &name).await?;
            let config = container_config("c", target.image, &WORKLOAD);
            create_and_start(target.rt(), &pod_id, &pod, config).await?;
            Ok((pod_id, t.elapsed()))
        }
    })
    .await?;
    print_wall("pods", n, concurrency, started.elapsed());
    bounded(pods.len(), concurrency, |i| {
        remove_pod(target.rt(), pods[i].0.clone())
    })
    .await?;
    let series = Series::new(
        Timed::PodWithContainer,
        concurrency,
        pods.iter().map(|(_, d)| *d).collect(),
    );
    report(&series.name(), series.samples.clone());
    Ok(series)
}

/// Memory of [`MEMORY_PODS`] pods each running one container, against the snapshot taken
/// before they were made.
async fn measure_memory(
    target: &Target<'_>,
    handler: &str,
    daemon_pid: i32,
) -> anyhow::Result<PodMemory> {
    let before = memory::before(daemon_pid);
    let mut pods = Vec::new();
    let mut made = Ok(());
    for i in 0..MEMORY_PODS {
        let step = async {
            let (pod_id, pod) = run_pod(target, handler, &format!("{handler}-memory-{i}")).await?;
            pods.push(pod_id.clone());
            let config = container_config("c", target.image, &WORKLOAD);
            create_and_start(target.rt(), &pod_id, &pod, config)
                .await
                .map(drop)
        };
        if let Err(e) = step.await {
            made = Err(e);
            break;
        }
    }
    // Let the shims finish starting up (and Go runtimes settle) before reading /proc.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let measured = made.map(|()| memory::after(&before, daemon_pid, &WORKLOAD, MEMORY_PODS));
    for pod_id in pods {
        remove_pod(target.rt(), pod_id).await?;
    }
    measured
}

/// Runs `n` calls of `call`, `concurrency` in flight at once; fails on the first error.
async fn bounded<T, F, Fut>(n: usize, concurrency: usize, call: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    stream::iter((0..n).map(call))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// RunPodSandbox with `handler`: network, IPC in the pod, PID per container, its cgroup
/// under the target's root, its logs under the target's log root, labelled as ours.
async fn run_pod(
    target: &Target<'_>,
    handler: &str,
    name: &str,
) -> anyhow::Result<(String, PodSandboxConfig)> {
    let log_dir = target.log_root.join(name);
    let config = labelled_pod_config(name, &target.cgroup_root, NamespaceMode::Pod, &log_dir)?;
    let id = target
        .rt()
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .with_context(|| format!("RunPodSandbox {name} (handler {handler})"))?
        .into_inner()
        .pod_sandbox_id;
    Ok((id, config))
}

/// A container made by [`create_and_start`], with how long each call took.
pub(crate) struct Started {
    pub id: String,
    pub create: Duration,
    pub start: Duration,
}

/// CreateContainer then StartContainer.
pub(crate) async fn create_and_start(
    mut rt: RuntimeServiceClient<Channel>,
    pod_id: &str,
    pod: &PodSandboxConfig,
    config: ContainerConfig,
) -> anyhow::Result<Started> {
    let t = Instant::now();
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .context("CreateContainer")?
        .into_inner()
        .container_id;
    let create = t.elapsed();
    let t = Instant::now();
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .context("StartContainer")?;
    Ok(Started {
        id,
        create,
        start: t.elapsed(),
    })
}

/// StopPodSandbox then RemovePodSandbox.
pub(crate) async fn remove_pod(
    mut rt: RuntimeServiceClient<Channel>,
    pod_id: String,
) -> anyhow::Result<()> {
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .context("StopPodSandbox")?;
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .context("RemovePodSandbox")?;
    Ok(())
}

/// Removes the pods this bench made on `target` (after a failed round).
async fn remove_bench_pods(target: &Target<'_>) {
    let pid = std::process::id().to_string();
    cleanup::remove_pods_labelled(target.channel.clone(), &[(LABEL, pid.as_str())]).await;
}

fn print_wall(what: &str, n: usize, concurrency: usize, wall: Duration) {
    println!(
        "  {n} {what}, {concurrency} at a time: {:.2}s wall, {:.1}/s",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64()
    );
}
