//! `stats` (ContainerStats / ListContainerStats), `statsp` (PodSandboxStats /
//! ListPodSandboxStats) and `updatep` (UpdatePodSandboxResources): the stats documents as the
//! CRI returns them (JSON or YAML, not crictl's summary table, so every field, PSI included,
//! can be checked), and pod-level limits from a JSON file.

use anyhow::{Context, Result};
use clap::Args;
use cri_proto::v1::{
    ContainerStatsFilter, ContainerStatsRequest, LinuxContainerResources,
    ListContainerStatsRequest, ListPodSandboxStatsRequest, PodSandboxStatsFilter,
    PodSandboxStatsRequest, UpdatePodSandboxResourcesRequest,
};
use serde::Deserialize;

use crate::client::Cri;
use crate::output::{print_document, DocumentFormat};

/// `stats`: resource usage of containers.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = DocumentFormat::Json)]
    pub output: DocumentFormat,
    /// Only the containers of this pod sandbox (ID or unique prefix).
    #[arg(short, long)]
    pub pod: Option<String>,
    /// A container ID or unique prefix (ContainerStats, any state); without it, every running
    /// container (ListContainerStats).
    pub id: Option<String>,
}

/// `statsp`: resource usage of pod sandboxes and their containers.
#[derive(Debug, Args)]
pub struct StatspArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = DocumentFormat::Json)]
    pub output: DocumentFormat,
    /// A pod sandbox ID or unique prefix (PodSandboxStats); without it, every ready pod
    /// (ListPodSandboxStats).
    pub id: Option<String>,
}

/// `updatep`: change a pod sandbox's pod-level limits.
#[derive(Debug, Args)]
pub struct UpdatepArgs {
    /// Pod sandbox ID or unique prefix.
    pub id: String,
    /// A JSON file `{"resources": {...}, "overhead": {...}}` with CRI LinuxContainerResources
    /// (`memory_limit_in_bytes`, `cpu_quota`, `cpu_period`, `cpu_shares`, `unified`, ...).
    pub file: String,
}

/// What `updatep`'s file holds.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PodResources {
    resources: Option<LinuxContainerResources>,
    overhead: Option<LinuxContainerResources>,
}

/// Prints one container's stats, or the running containers' (of one pod with `--pod`).
pub async fn stats(cri: &mut Cri, args: StatsArgs) -> Result<()> {
    if let Some(prefix) = &args.id {
        let container_id = cri.resolve_container_id(prefix).await?;
        let response = cri
            .runtime
            .container_stats(ContainerStatsRequest { container_id })
            .await?
            .into_inner();
        return print_document(&response.stats, args.output);
    }
    let pod_sandbox_id = match &args.pod {
        Some(prefix) => cri.resolve_pod_id(prefix).await?,
        None => String::new(),
    };
    let request = ListContainerStatsRequest {
        filter: Some(ContainerStatsFilter {
            pod_sandbox_id,
            ..Default::default()
        }),
    };
    let response = cri
        .runtime
        .list_container_stats(request)
        .await?
        .into_inner();
    print_document(&response.stats, args.output)
}

/// Prints one pod's stats, or every ready pod's.
pub async fn statsp(cri: &mut Cri, args: StatspArgs) -> Result<()> {
    if let Some(prefix) = &args.id {
        let pod_sandbox_id = cri.resolve_pod_id(prefix).await?;
        let response = cri
            .runtime
            .pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id })
            .await?
            .into_inner();
        return print_document(&response.stats, args.output);
    }
    let request = ListPodSandboxStatsRequest {
        filter: Some(PodSandboxStatsFilter::default()),
    };
    let response = cri
        .runtime
        .list_pod_sandbox_stats(request)
        .await?
        .into_inner();
    print_document(&response.stats, args.output)
}

/// Sends the file's pod-level limits and prints the pod's ID.
pub async fn updatep(cri: &mut Cri, args: UpdatepArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("read pod resources from {}", args.file))?;
    let limits: PodResources = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not {{\"resources\": ..., \"overhead\": ...}}",
            args.file
        )
    })?;
    let pod_sandbox_id = cri.resolve_pod_id(&args.id).await?;
    cri.runtime
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: pod_sandbox_id.clone(),
            overhead: limits.overhead,
            resources: limits.resources,
        })
        .await?;
    println!("{pod_sandbox_id}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updatep_file_takes_resources_and_overhead() {
        let limits: PodResources = serde_json::from_str(
            r#"{"resources": {"memory_limit_in_bytes": 1024, "unified": {"pids.max": "9"}},
                "overhead": {"cpu_quota": 5}}"#,
        )
        .expect("parses");
        let resources = limits.resources.expect("resources");
        assert_eq!(resources.memory_limit_in_bytes, 1024);
        assert_eq!(
            resources.unified.get("pids.max").map(String::as_str),
            Some("9")
        );
        assert_eq!(limits.overhead.map(|o| o.cpu_quota), Some(5));
    }

    #[test]
    fn updatep_file_with_a_misspelt_key_is_refused() {
        assert!(serde_json::from_str::<PodResources>(r#"{"resource": {}}"#).is_err());
    }
}
