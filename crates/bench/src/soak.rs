//! `corral-bench soak`: N full pod lifecycles (RunPodSandbox, CreateContainer,
//! StartContainer, ExecSync, StopPodSandbox, RemovePodSandbox) one after another against a
//! private corrald, printing corrald's RSS and open descriptors after the first 100 and at the
//! end, and whether the host is clean. A leak shows as growth between the two samples.

use std::path::Path;

use anyhow::{bail, Context};
use corral_e2e::registry::{self, Registry};
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use cri_proto::v1::*;
use tonic::transport::Channel;

/// corrald's resident memory (KiB) and open descriptors.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    fds: usize,
}

fn sample(pid: i32) -> anyhow::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("read /proc/{pid}/fd"))?
        .count();
    Ok(Sample { rss_kib, fds })
}

/// Entries of a directory (none when it does not exist).
fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

async fn lifecycle(
    rt: &mut RuntimeServiceClient<Channel>,
    image: &str,
    log_dir: &Path,
    i: usize,
) -> anyhow::Result<()> {
    let name = format!("soak-{i}");
    let mut pod = corral_e2e::pod_config(
        &name,
        &format!("/corral-bench-soak/pod{i}"),
        (
            NamespaceMode::Pod as i32,
            NamespaceMode::Container as i32,
            NamespaceMode::Pod as i32,
        ),
    );
    pod.log_directory = log_dir.join(&name).to_string_lossy().into_owned();
    let pod_id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .with_context(|| format!("RunPodSandbox {name}"))?
        .into_inner()
        .pod_sandbox_id;
    let mut config = corral_e2e::cri::container_config("c", image, &["sleep", "3600"]);
    config.log_path = "c/0.log".into();
    let id = crate::containers::create_and_start(rt.clone(), &pod_id, &pod, config)
        .await?
        .id;
    let exec = rt
        .exec_sync(ExecSyncRequest {
            container_id: id,
            cmd: vec!["true".into()],
            timeout: 30,
        })
        .await
        .context("ExecSync")?
        .into_inner();
    if exec.exit_code != 0 {
        bail!("ExecSync true exited {}", exec.exit_code);
    }
    crate::containers::remove_pod(rt.clone(), pod_id).await?;
    Ok(())
}

/// Runs the soak: `n` lifecycles, samples after the first 100 (or `n`) and at the end.
pub async fn run(n: usize) -> anyhow::Result<()> {
    if let Some(reason) = registry::skip_reason() {
        bail!("cannot run a local registry: {reason}");
    }
    let registry = Registry::start();
    let image = crate::setup::push_workload_image(&registry);
    let daemon = corral_e2e::Daemon::start(corral_e2e::DaemonOptions::default());
    let channel = daemon.channel().await;
    crate::print_version(&channel).await?;
    corral_e2e::cri::pull(&mut daemon.images().await, &image).await;
    let mut rt = RuntimeServiceClient::new(channel);
    let logs = daemon.dir().join("soak-logs");
    let warm = n.min(100);
    let started = std::time::Instant::now();
    let mut early = None;
    for i in 0..n {
        lifecycle(&mut rt, &image, &logs, i).await?;
        if i + 1 == warm {
            early = Some(sample(daemon.pid())?);
        }
    }
    let wall = started.elapsed();
    let end = sample(daemon.pid())?;
    let early = early.unwrap_or(end);
    println!(
        "\nsoak: {n} pod lifecycles (run, create, start, exec, stop, remove), {:.1}s, {:.1}/s",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64()
    );
    let growth = |a: f64, b: f64| if a > 0.0 { (b - a) / a * 100.0 } else { 0.0 };
    println!(
        "corrald RSS: {} KiB after {warm}, {} KiB after {n} ({:+.1}%)",
        early.rss_kib,
        end.rss_kib,
        growth(early.rss_kib as f64, end.rss_kib as f64)
    );
    println!(
        "corrald open fds: {} after {warm}, {} after {n} ({:+.1}%)",
        early.fds,
        end.fds,
        growth(early.fds as f64, end.fds as f64)
    );
    let state = daemon.state();
    let left = [
        ("pod state dirs", entries(&state.join("sandboxes"))),
        ("container state dirs", entries(&state.join("containers"))),
        ("netns pins", entries(&state.join("netns"))),
        (
            "mounts",
            corral_e2e::mounts_containing(&state.to_string_lossy()).len(),
        ),
        (
            "cgroups",
            corral_e2e::cgroup_dirs_containing("corral-bench-soak").len(),
        ),
    ];
    let dirty: Vec<String> = left
        .iter()
        .filter(|(_, count)| *count > 0)
        .map(|(what, count)| format!("{count} {what}"))
        .collect();
    if dirty.is_empty() {
        println!("host clean: no pod state, netns pin, mount or cgroup left");
    } else {
        println!("LEFT BEHIND: {}", dirty.join(", "));
    }
    corral_e2e::remove_cgroup_dirs("corral-bench-soak");
    drop(daemon);
    drop(registry);
    Ok(())
}
