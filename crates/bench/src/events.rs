//! `corral-bench events`: how long after a container exits on its own its CONTAINER_STOPPED
//! event reaches a GetContainerEvents subscriber.
//!
//! Each container runs `sleep` briefly and exits; nobody calls StopContainer or
//! ContainerStatus. The latency is the subscriber's clock when the event arrives minus the
//! container's `finished_at` (the shim's clock when it reaped the container), both this host's
//! realtime clock. Timings are printed, never asserted.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use corral_e2e::registry::{self, Registry};
use cri_proto::v1::image_service_client::ImageServiceClient;
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use cri_proto::v1::*;
use tonic::transport::Channel;

/// How long one container may take to be reported stopped before the run fails.
const STOPPED_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `n` short containers one after another in one pod and reports the exit → STOPPED
/// latency percentiles.
pub async fn run(channel: Channel, n: usize) -> anyhow::Result<()> {
    if let Some(reason) = registry::skip_reason() {
        bail!("cannot run a local registry: {reason}");
    }
    let registry = Registry::start();
    let image = crate::setup::push_workload_image(&registry);
    crate::images::pull(&mut ImageServiceClient::new(channel.clone()), &image).await?;
    let mut rt = RuntimeServiceClient::new(channel);
    let logs = tempfile::Builder::new()
        .prefix("corral-bench-events-")
        .tempdir()
        .context("create the log dir")?;
    let name = format!("bench-events-{}", std::process::id());
    let mut pod = corral_e2e::pod_config(
        &name,
        &format!("/corral-bench-{}/events", std::process::id()),
        (
            NamespaceMode::Pod as i32,
            NamespaceMode::Container as i32,
            NamespaceMode::Pod as i32,
        ),
    );
    pod.log_directory = logs.path().to_string_lossy().into_owned();
    let pod_id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .context("RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id;
    let result = measure(&mut rt, &pod_id, &pod, &image, n).await;
    crate::containers::remove_pod(rt.clone(), pod_id).await?;
    let samples = result?;
    println!("\ncontainer exit -> CONTAINER_STOPPED event, {n} containers:");
    crate::report("exit->STOPPED", samples);
    Ok(())
}

async fn measure(
    rt: &mut RuntimeServiceClient<Channel>,
    pod_id: &str,
    pod: &PodSandboxConfig,
    image: &str,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut events = rt
        .get_container_events(GetEventsRequest {})
        .await
        .context("GetContainerEvents")?
        .into_inner();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: format!("short{i}"),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            command: vec!["sleep".into(), "0.2".into()],
            log_path: format!("short{i}.log"),
            linux: Some(LinuxContainerConfig::default()),
            ..Default::default()
        };
        let id = crate::containers::create_and_start(rt.clone(), pod_id, pod, config)
            .await?
            .id;
        let deadline = Instant::now() + STOPPED_TIMEOUT;
        let event = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = tokio::time::timeout(left, events.message())
                .await
                .with_context(|| format!("no STOPPED event for {id} in {STOPPED_TIMEOUT:?}"))?
                .context("event stream")?
                .context("the event stream ended")?;
            if event.container_id == id
                && event.container_event_type == ContainerEventType::ContainerStoppedEvent as i32
            {
                break event;
            }
        };
        let received = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("clock before 1970")?;
        let finished_at = event
            .containers_statuses
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.finished_at)
            .context("the STOPPED event has no status of the container")?;
        let finished = Duration::from_nanos(u64::try_from(finished_at).unwrap_or(0));
        samples.push(received.saturating_sub(finished));
        rt.remove_container(RemoveContainerRequest { container_id: id })
            .await
            .context("RemoveContainer")?;
    }
    Ok(samples)
}
