//! `events` (GetContainerEvents, one document per event as it arrives), `metricsp`
//! (ListPodSandboxMetrics, once or every few seconds) and `checkpoint` (CheckpointContainer),
//! with crictl's flags.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use cri_proto::v1::{CheckpointContainerRequest, GetEventsRequest, ListPodSandboxMetricsRequest};

use crate::client::Cri;
use crate::output::{print_document, DocumentFormat};

/// `events`: stream the events of containers and pod sandboxes.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Output format of each event.
    #[arg(short, long, value_enum, default_value_t = DocumentFormat::Json)]
    pub output: DocumentFormat,
}

/// `metricsp`: list pod and container metrics (cAdvisor's names).
#[derive(Debug, Args)]
pub struct MetricspArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = DocumentFormat::Json)]
    pub output: DocumentFormat,
    /// Print the metrics again every few seconds until interrupted.
    #[arg(short, long)]
    pub watch: bool,
}

/// `checkpoint`: checkpoint running containers into an archive.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// The tar archive to write (/path/to/checkpoint.tar).
    #[arg(short, long)]
    pub export: Option<String>,
    /// Containers to checkpoint (ids or unique prefixes).
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// How often `metricsp --watch` asks again.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Prints each event as it arrives, until the stream ends or the user interrupts.
pub async fn events(cri: &mut Cri, args: EventsArgs) -> Result<()> {
    let mut stream = cri
        .runtime
        .get_container_events(GetEventsRequest {})
        .await?
        .into_inner();
    while let Some(event) = stream.message().await.context("container events")? {
        print_document(&event, args.output)?;
    }
    Ok(())
}

/// Prints the pods' metrics, once or (with `--watch`) repeatedly.
pub async fn metricsp(cri: &mut Cri, args: MetricspArgs) -> Result<()> {
    loop {
        let response = cri
            .runtime
            .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
            .await?
            .into_inner();
        print_document(&response, args.output)?;
        if !args.watch {
            return Ok(());
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

/// Checkpoints each container into the `--export` archive, printing its id.
pub async fn checkpoint(cri: &mut Cri, args: CheckpointArgs) -> Result<()> {
    let Some(location) = args.export.filter(|e| !e.is_empty()) else {
        bail!(
            "cannot checkpoint a container without a destination: \
             use --export=/path/to/checkpoint.tar"
        );
    };
    for id in &args.ids {
        let container_id = cri.resolve_container_id(id).await?;
        cri.runtime
            .checkpoint_container(CheckpointContainerRequest {
                container_id: container_id.clone(),
                location: location.clone(),
                timeout: 0,
            })
            .await
            .with_context(|| format!("checkpointing the container {id:?} failed"))?;
        println!("{container_id}");
    }
    Ok(())
}
