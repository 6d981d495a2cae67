//! corralctl: a command line client for corrald's CRI socket, modelled on crictl.
//!
//! Verbs, flags, tables and `-o json|yaml` output follow crictl's, so that what one knows of
//! crictl works here. Every verb is one CRI call (or a few) over the unix socket.

mod client;
mod config;
mod containers;
mod events;
mod explain;
mod flags;
mod ids;
mod images;
mod logs;
mod output;
mod pods;
mod stats;
mod status;
mod streams;
mod terminal;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::client::{describe_error, socket_path, Cri, DEFAULT_SOCKET};

/// Talk to corrald, the corral container runtime, over its CRI socket.
#[derive(Debug, Parser)]
#[command(name = "corralctl", version, about)]
struct Cli {
    /// corrald's unix socket (a `unix://` prefix is accepted).
    #[arg(
        long,
        global = true,
        env = "CORRAL_SOCKET",
        default_value = DEFAULT_SOCKET,
        visible_alias = "runtime-endpoint"
    )]
    socket: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the runtime's name and versions.
    Version(status::VersionArgs),
    /// Print the runtime's status and configuration (verbose Status).
    Info(status::InfoArgs),
    /// Run a pod sandbox from a config file.
    Runp(pods::RunpArgs),
    /// Stop pod sandboxes.
    Stopp(pods::StoppArgs),
    /// Remove pod sandboxes.
    Rmp(pods::RmpArgs),
    /// List pod sandboxes.
    Pods(pods::PodsArgs),
    /// Print the status of pod sandboxes.
    Inspectp(pods::InspectpArgs),
    /// Pull an image.
    Pull(images::PullArgs),
    /// List images.
    #[command(alias = "img")]
    Images(images::ImagesArgs),
    /// Image store management that the CRI has no call for (`image import PATH`).
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Print the status of images.
    Inspecti(images::InspectiArgs),
    /// Remove images.
    Rmi(images::RmiArgs),
    /// Print image filesystem usage.
    Imagefsinfo(images::ImagefsinfoArgs),
    /// Create a container in a pod sandbox.
    Create(containers::CreateArgs),
    /// Start created containers.
    Start(containers::StartArgs),
    /// Stop running containers.
    Stop(containers::StopArgs),
    /// Remove containers.
    Rm(containers::RmArgs),
    /// List containers.
    Ps(containers::PsArgs),
    /// Print the status of containers.
    Inspect(containers::InspectArgs),
    /// Run a command in a running container (-i/-t: interactively, over the streaming API).
    Exec(containers::ExecArgs),
    /// Attach to a running container's stdio.
    Attach(streams::AttachArgs),
    /// Forward local ports to a pod: LOCAL:REMOTE...
    PortForward(streams::PortForwardArgs),
    /// Update the resources of running containers.
    Update(containers::UpdateArgs),
    /// Print a container's log (-f: and follow it).
    Logs(containers::LogsArgs),
    /// Explain a pod: namespaces, cgroups, containers and why each volume propagates or not.
    Explain(explain::ExplainArgs),
    /// Say what CreateContainer would do with a volume, on the host as it is now.
    ExplainMount(explain::ExplainMountArgs),
    /// Stream the events of containers and pod sandboxes.
    #[command(alias = "event")]
    Events(events::EventsArgs),
    /// List pod and container metrics (cAdvisor's names, from the runtime).
    Metricsp(events::MetricspArgs),
    /// Checkpoint running containers into an archive (--export).
    Checkpoint(events::CheckpointArgs),
    /// Resource usage of containers (ContainerStats, ListContainerStats).
    Stats(stats::StatsArgs),
    /// Resource usage of pod sandboxes (PodSandboxStats, ListPodSandboxStats).
    Statsp(stats::StatspArgs),
    /// Change a pod sandbox's pod-level limits (UpdatePodSandboxResources).
    Updatep(stats::UpdatepArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", describe_error(&err));
            ExitCode::FAILURE
        }
    }
}

/// Connects to corrald and runs one verb; the exit code is `exec`'s command's, else success.
async fn run(cli: Cli) -> Result<ExitCode> {
    let socket: PathBuf = socket_path(&cli.socket);
    let mut cri = Cri::connect(&socket).await?;
    let cri = &mut cri;
    match cli.command {
        Command::Version(args) => status::version(cri, args).await?,
        Command::Info(args) => status::info(cri, args).await?,
        Command::Runp(args) => pods::runp(cri, args).await?,
        Command::Stopp(args) => pods::stopp(cri, args).await?,
        Command::Rmp(args) => pods::rmp(cri, args).await?,
        Command::Pods(args) => pods::pods(cri, args).await?,
        Command::Inspectp(args) => pods::inspectp(cri, args).await?,
        Command::Pull(args) => images::pull(cri, args).await?,
        Command::Images(args) => images::images(cri, args).await?,
        Command::Inspecti(args) => images::inspecti(cri, args).await?,
        Command::Rmi(args) => images::rmi(cri, args).await?,
        Command::Imagefsinfo(args) => images::imagefsinfo(cri, args).await?,
        Command::Image(images::ImageCommand::Import(args)) => images::import(cri, args).await?,
        Command::Create(args) => containers::create(cri, args).await?,
        Command::Start(args) => containers::start(cri, args).await?,
        Command::Stop(args) => containers::stop(cri, args).await?,
        Command::Rm(args) => containers::rm(cri, args).await?,
        Command::Ps(args) => containers::ps(cri, args).await?,
        Command::Inspect(args) => containers::inspect(cri, args).await?,
        Command::Exec(args) => return containers::exec(cri, args).await,
        Command::Attach(args) => streams::attach(cri, args).await?,
        Command::PortForward(args) => streams::port_forward(cri, args).await?,
        Command::Update(args) => containers::update(cri, args).await?,
        Command::Logs(args) => containers::logs(cri, args).await?,
        Command::Explain(args) => explain::explain(cri, args).await?,
        Command::ExplainMount(args) => explain::explain_mount(cri, args).await?,
        Command::Events(args) => events::events(cri, args).await?,
        Command::Metricsp(args) => events::metricsp(cri, args).await?,
        Command::Checkpoint(args) => events::checkpoint(cri, args).await?,
        Command::Stats(args) => stats::stats(cri, args).await?,
        Command::Statsp(args) => stats::statsp(cri, args).await?,
        Command::Updatep(args) => stats::updatep(cri, args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exec_takes_the_command_after_the_id() {
        let cli = Cli::try_parse_from(["corralctl", "exec", "-s", "abc", "ls", "-l", "/"])
            .expect("valid command line");
        let Command::Exec(args) = cli.command else {
            panic!("parsed as exec");
        };
        assert!(args.sync);
        assert_eq!(args.id, "abc");
        assert_eq!(args.command, vec!["ls", "-l", "/"]);
    }

    #[test]
    fn streaming_exec_flags() {
        let cli = Cli::try_parse_from([
            "corralctl",
            "exec",
            "-it",
            "--transport",
            "websocket",
            "abc",
            "sh",
            "-c",
            "exit 5",
        ])
        .expect("valid command line");
        let Command::Exec(args) = cli.command else {
            panic!("parsed as exec");
        };
        assert!(args.interactive && args.tty && !args.sync);
        assert_eq!(args.transport, streams::Transport::Websocket);
        assert_eq!(args.command, vec!["sh", "-c", "exit 5"]);
        assert!(Cli::try_parse_from(["corralctl", "exec", "-s", "-i", "abc", "cat"]).is_err());
    }

    #[test]
    fn port_forward_takes_several_mappings() {
        let cli = Cli::try_parse_from(["corralctl", "port-forward", "pod1", "8080:80", ":443"])
            .expect("valid command line");
        let Command::PortForward(args) = cli.command else {
            panic!("parsed as port-forward");
        };
        assert_eq!(args.pod_id, "pod1");
        assert_eq!(args.ports, vec!["8080:80", ":443"]);
        assert_eq!(args.transport, streams::Transport::Spdy);
        assert!(Cli::try_parse_from(["corralctl", "port-forward", "pod1"]).is_err());
    }

    #[test]
    fn socket_flag_works_after_the_verb() {
        let cli = Cli::try_parse_from(["corralctl", "pods", "--socket", "/tmp/c.sock", "-q"])
            .expect("valid command line");
        assert_eq!(cli.socket, "/tmp/c.sock");
    }

    #[test]
    fn repeated_labels_and_output_format() {
        let cli = Cli::try_parse_from([
            "corralctl",
            "ps",
            "-a",
            "--label",
            "a=1",
            "--label",
            "b=2",
            "-o",
            "yaml",
        ])
        .expect("valid command line");
        let Command::Ps(args) = cli.command else {
            panic!("parsed as ps");
        };
        assert!(args.all);
        assert_eq!(args.labels, vec!["a=1", "b=2"]);
        assert_eq!(args.format.output, output::OutputFormat::Yaml);
    }
}
