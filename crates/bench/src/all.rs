//! `corral-bench all`: every benchmark of issue 13 in one run — the OCI runtime calls alone,
//! the pod paths with corral's RunPodSandbox steps and a burst of pods, a node with hundreds of
//! pods (relist, stats, idle CPU, memory per process kind, restart) and cold pulls — each
//! against a private containerd with `--with-containerd`, then one table of every row with the
//! ratios and the load average (see [`crate::summary`]). A part that fails is reported in the
//! table and the others still run.

use std::path::PathBuf;

use crate::summary;

/// `corral-bench all` options.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Interleaved rounds of the pod paths.
    #[arg(short, default_value_t = 10)]
    pub n: usize,
    /// Pods started at once in the burst round.
    #[arg(long, default_value_t = 100)]
    pub burst: usize,
    /// Pods (one container each) on the node.
    #[arg(long, default_value_t = 500)]
    pub pods: usize,
    /// Timed relists per runtime on the node.
    #[arg(long, default_value_t = 200)]
    pub relists: usize,
    /// Timed stats rounds per runtime on the node.
    #[arg(long, default_value_t = 10)]
    pub stats: usize,
    /// At most this many stats rounds for containerd (slow at hundreds of pods).
    #[arg(long, default_value_t = 3)]
    pub containerd_stats: usize,
    /// Seconds of idle CPU measured on the node.
    #[arg(long, default_value_t = 20)]
    pub idle_secs: u64,
    /// Restarts per runtime on the node.
    #[arg(long, default_value_t = 3)]
    pub restarts: usize,
    /// Cold pulls per runtime and compression.
    #[arg(long, default_value_t = 2)]
    pub pulls: usize,
    /// Runs of each OCI runtime call.
    #[arg(long, default_value_t = 10)]
    pub calls: usize,
    /// Also measure a private containerd (Debian's `containerd` package).
    #[arg(long)]
    pub with_containerd: bool,
    /// More OCI runtime handlers, as NAME=PATH (e.g. youki=/usr/local/bin/youki), beside runc.
    #[arg(long = "extra-handler", value_delimiter = ',')]
    pub extra_handlers: Vec<String>,
}

/// Runs every part, then prints the table of every row.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let load_start = crate::containers::load_average();
    let mut runtimes = vec![("runc".to_string(), on_path("runc"))];
    runtimes.extend(options.extra_handlers.iter().filter_map(|s| {
        let (name, path) = s.split_once('=')?;
        Some((name.to_string(), PathBuf::from(path)))
    }));
    crate::oci_calls::run(&runtimes, options.calls);

    let pods = crate::pod_paths::run(crate::pod_paths::Options {
        n: options.n,
        burst: options.burst,
        with_containerd: options.with_containerd,
        phases: true,
        extra_handlers: options.extra_handlers.clone(),
    })
    .await;
    failed("pod start and stop", pods);

    let node = crate::node::run(crate::node::Options {
        n: options.pods,
        concurrency: 8,
        relists: options.relists,
        stats: options.stats,
        containerd_stats: options.containerd_stats,
        idle_secs: options.idle_secs,
        restarts: options.restarts,
        with_containerd: options.with_containerd,
    })
    .await;
    failed(&format!("a node with {} pods", options.pods), node);

    let pull = crate::pull::run(crate::pull::Options {
        pulls: options.pulls,
        mib: 200,
        layers: 8,
        with_containerd: options.with_containerd,
    })
    .await;
    failed("cold PullImage", pull);

    summary::print(
        &summary::machine(),
        &load_start,
        &crate::containers::load_average(),
    );
    Ok(())
}

/// `name` found on `PATH`, or `name` itself (the call then fails with its error as a row).
fn on_path(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Records a part that failed as a row of the table.
fn failed(part: &str, outcome: anyhow::Result<()>) {
    if let Err(e) = outcome {
        println!("\n{part} failed: {e:#}");
        summary::record(
            part,
            "FAILED",
            crate::figures::short(&format!("{e:#}"), 200),
            "-".into(),
            None,
        );
    }
}
