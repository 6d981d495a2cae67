//! `corralctl explain POD` and `corralctl explain-mount HOST_PATH`: corrald's explanations,
//! printed as a tree (or the JSON as it came, with `--json`).

use anyhow::{Context, Result};
use clap::Args;
use corral_explain::render;
use corral_explain::report::{Explanation, MountPreflight};
use cri_proto::admin::{ExplainMountRequest, ExplainPodRequest};

use crate::client::Cri;

/// `corralctl explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The pod: id, id prefix or namespace/name.
    pub pod: String,
    /// Only this container (name or id prefix).
    #[arg(long, short = 'c')]
    pub container: Option<String>,
    /// Print the JSON (stable field names) instead of the tree.
    #[arg(long)]
    pub json: bool,
}

/// `corralctl explain-mount`.
#[derive(Debug, Args)]
pub struct ExplainMountArgs {
    /// The volume's source on the node.
    pub host_path: String,
    /// PRIVATE, HOST_TO_CONTAINER or BIDIRECTIONAL (Kubernetes' None, HostToContainer and
    /// Bidirectional are accepted too).
    #[arg(long)]
    pub propagation: String,
    /// The container would be privileged.
    #[arg(long)]
    pub privileged: bool,
    /// Print the JSON (stable field names) instead of the tree.
    #[arg(long)]
    pub json: bool,
}

/// Prints the explanation of a pod.
pub async fn explain(cri: &mut Cri, args: ExplainArgs) -> Result<()> {
    let json = cri
        .explain
        .explain_pod(ExplainPodRequest {
            pod: args.pod.clone(),
            container: args.container.unwrap_or_default(),
        })
        .await
        .with_context(|| format!("explain pod {}", args.pod))?
        .into_inner()
        .json;
    if args.json {
        println!("{json}");
        return Ok(());
    }
    let explanation: Explanation =
        serde_json::from_str(&json).context("read corrald's explanation")?;
    print!("{}", render::render_pod(&explanation));
    Ok(())
}

/// Prints CreateContainer's verdict on a mount.
pub async fn explain_mount(cri: &mut Cri, args: ExplainMountArgs) -> Result<()> {
    let json = cri
        .explain
        .explain_mount(ExplainMountRequest {
            host_path: args.host_path.clone(),
            propagation: args.propagation,
            privileged: args.privileged,
        })
        .await
        .with_context(|| format!("explain mount {}", args.host_path))?
        .into_inner()
        .json;
    if args.json {
        println!("{json}");
        return Ok(());
    }
    let answer: MountPreflight =
        serde_json::from_str(&json).context("read corrald's explanation")?;
    print!("{}", render::render_mount(&answer));
    Ok(())
}
