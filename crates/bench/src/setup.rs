//! What several benchmarks set up the same way: the images they push to their loopback
//! registry, the directory their pods log to, and their pods' config.

use std::path::Path;

use anyhow::Context;
use corral_e2e::registry::Registry;
use cri_proto::v1::{NamespaceMode, PodSandboxConfig};
use tempfile::TempDir;

/// The label every pod of the comparing benchmarks carries (value: the bench's pid), so that
/// the clean-up finds them.
pub const LABEL: &str = "corral-bench";

/// Pushes the busybox image the benchmarks' containers run; returns its reference.
pub fn push_workload_image(registry: &Registry) -> String {
    corral_e2e::images::push_busybox(
        registry,
        "bench/busybox",
        "1",
        corral_e2e::images::default_config(),
    )
}

/// Pushes the image containerd runs as each pod's pause container (corral needs none);
/// returns its reference.
pub fn push_pause_image(registry: &Registry) -> String {
    corral_e2e::images::push_busybox(
        registry,
        "bench/pause",
        "1",
        serde_json::json!({ "Env": ["PATH=/bin"], "Entrypoint": ["/bin/sleep", "infinity"] }),
    )
}

/// A temp dir for the pods' log directories, removed when dropped.
pub fn log_dir() -> anyhow::Result<TempDir> {
    tempfile::Builder::new()
        .prefix("corral-bench-logs-")
        .tempdir()
        .context("create the log dir")
}

/// A pod's config: `network` (POD or NODE), IPC in the pod, PID per container, its cgroup
/// under `cgroup_root`, its logs in `log_dir` (made now, as kubelet does before
/// RunPodSandbox), labelled as ours.
pub fn labelled_pod_config(
    name: &str,
    cgroup_root: &str,
    network: NamespaceMode,
    log_dir: &Path,
) -> anyhow::Result<PodSandboxConfig> {
    let parent = format!("{cgroup_root}/pod{name}");
    let pod_mode = NamespaceMode::Pod as i32;
    let mut config = corral_e2e::pod_config(
        name,
        &parent,
        (network as i32, NamespaceMode::Container as i32, pod_mode),
    );
    std::fs::create_dir_all(log_dir).with_context(|| format!("create {}", log_dir.display()))?;
    config.log_directory = log_dir.to_string_lossy().into_owned();
    config
        .labels
        .insert(LABEL.into(), std::process::id().to_string());
    Ok(config)
}
