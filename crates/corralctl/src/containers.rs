//! Container verbs: `create`, `start`, `stop`, `rm`, `ps`, `inspect`, `exec`, `update`, `logs`.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use clap::Args;
use cri_proto::v1::{
    Container, ContainerConfig, ContainerFilter, ContainerState, ContainerStateValue,
    ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, HugepageLimit,
    LinuxContainerResources, ListContainersRequest, ListContainersResponse, ListPodSandboxRequest,
    PodSandboxConfig, PullImageRequest, RemoveContainerRequest, StartContainerRequest,
    StopContainerRequest, UpdateContainerResourcesRequest,
};

use crate::client::Cri;
use crate::config::load_config;
use crate::flags::{parse_labels, parse_memory_size};
use crate::logs::{assemble, complete_lines_end, parse_line, LinePrinter, LogStream, LogTail};
use crate::output::{
    age, container_state_name, print_document, push_labels_and_annotations, short_id,
    status_document, DocumentFormat, ListFormat, Table,
};
use crate::streams::{self, Transport};

/// Label the kubelet puts on containers naming their pod.
const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// Label the kubelet puts on containers naming their pod's namespace.
const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// `create`: create a container in a pod sandbox and print its ID.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Pull the image before creating the container.
    #[arg(long)]
    pub with_pull: bool,
    /// Pod sandbox ID or unique prefix.
    pub pod_id: String,
    /// ContainerConfig file, JSON or YAML.
    pub container_config: PathBuf,
    /// PodSandboxConfig file the pod was run with, JSON or YAML.
    pub pod_config: PathBuf,
}

/// `start`: start created containers.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Container IDs or unique prefixes.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// `stop`: stop running containers.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after the stop signal before killing the container.
    #[arg(short, long, default_value_t = 0)]
    pub timeout: i64,
    /// Container IDs or unique prefixes.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// `rm`: remove containers.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Stop a running container (without grace period) before removing it.
    #[arg(short, long)]
    pub force: bool,
    /// Container IDs or unique prefixes.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// `ps`: list containers (running ones unless `-a` or `--state`).
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show containers in every state.
    #[arg(short, long)]
    pub all: bool,
    /// Only the container with this ID.
    #[arg(long)]
    pub id: Option<String>,
    /// Only containers of this pod sandbox (ID or unique prefix).
    #[arg(short, long)]
    pub pod: Option<String>,
    /// Only containers whose name contains this.
    #[arg(long)]
    pub name: Option<String>,
    /// Only containers in this state: created, running, exited or unknown.
    #[arg(short, long)]
    pub state: Option<String>,
    /// Only containers with this label (key=value); repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Output flags shared by the list verbs.
    #[command(flatten)]
    pub format: ListFormat,
}

/// `inspect`: print the verbose status of containers.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = DocumentFormat::Json)]
    pub output: DocumentFormat,
    /// Container IDs or unique prefixes.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// `exec`: run a command in a container and wait for it: through ExecSync, or with `-i`/`-t`
/// through the streaming Exec API.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Run through ExecSync (the default without -i/-t; accepted for crictl compatibility).
    #[arg(short, long, conflicts_with_all = ["interactive", "tty"])]
    pub sync: bool,
    /// Send stdin to the command (streaming exec).
    #[arg(short, long)]
    pub interactive: bool,
    /// Run the command on a TTY: the local terminal goes into raw mode and its size is
    /// followed (streaming exec).
    #[arg(short, long)]
    pub tty: bool,
    /// Protocol of a streaming exec.
    #[arg(long, value_enum, default_value_t = Transport::Spdy)]
    pub transport: Transport,
    /// Seconds before the runtime kills the command; 0 waits forever (ExecSync only).
    #[arg(long, default_value_t = 0)]
    pub timeout: i64,
    /// Container ID or unique prefix.
    pub id: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `update`: change the resources of running containers.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Memory limit: bytes, or with a unit (512m, 1g).
    #[arg(long)]
    pub memory: Option<String>,
    /// CPU CFS quota in microseconds per period.
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long)]
    pub cpu_share: Option<i64>,
    /// CPUs the container may use (e.g. 0-3,5).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use.
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// A cgroup v2 interface file to set, KEY=VALUE (e.g. pids.max=64); repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub unified: Vec<String>,
    /// A hugepage limit, PAGE_SIZE=BYTES (e.g. 2MB=4194304); repeatable.
    #[arg(long, value_name = "PAGE_SIZE=BYTES")]
    pub hugepage_limit: Vec<String>,
    /// Container IDs or unique prefixes.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// `logs`: print a container's log.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing what the container writes (across log rotations) until it has exited.
    #[arg(short, long)]
    pub follow: bool,
    /// Print only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
    /// Prefix each line with its timestamp.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Container ID or unique prefix.
    pub id: String,
}

/// Creates a container and prints its ID.
pub async fn create(cri: &mut Cri, args: CreateArgs) -> Result<()> {
    let pod_id = cri.resolve_pod_id(&args.pod_id).await?;
    let config: ContainerConfig = load_config(&args.container_config)?;
    let pod_config: PodSandboxConfig = load_config(&args.pod_config)?;
    if args.with_pull {
        let image = config.image.clone().unwrap_or_default();
        if image.image.is_empty() {
            bail!("the container config names no image to pull");
        }
        let request = PullImageRequest {
            image: Some(image),
            auth: None,
            sandbox_config: Some(pod_config.clone()),
        };
        cri.images.pull_image(request).await?;
    }
    let request = CreateContainerRequest {
        pod_sandbox_id: pod_id,
        config: Some(config),
        sandbox_config: Some(pod_config),
    };
    let response = cri.runtime.create_container(request).await?.into_inner();
    println!("{}", response.container_id);
    Ok(())
}

/// Starts each container and prints its ID.
pub async fn start(cri: &mut Cri, args: StartArgs) -> Result<()> {
    for prefix in &args.ids {
        let id = cri.resolve_container_id(prefix).await?;
        let request = StartContainerRequest {
            container_id: id.clone(),
        };
        cri.runtime.start_container(request).await?;
        println!("{id}");
    }
    Ok(())
}

/// Stops each container and prints its ID.
pub async fn stop(cri: &mut Cri, args: StopArgs) -> Result<()> {
    for prefix in &args.ids {
        let id = cri.resolve_container_id(prefix).await?;
        let request = StopContainerRequest {
            container_id: id.clone(),
            timeout: args.timeout,
        };
        cri.runtime.stop_container(request).await?;
        println!("{id}");
    }
    Ok(())
}

/// Removes each container; a running one only with `--force` (it is stopped first).
pub async fn rm(cri: &mut Cri, args: RmArgs) -> Result<()> {
    for prefix in &args.ids {
        let id = cri.resolve_container_id(prefix).await?;
        let request = ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        };
        let status = cri.runtime.container_status(request).await?.into_inner();
        let running = status
            .status
            .is_some_and(|s| s.state == ContainerState::ContainerRunning as i32);
        if running {
            if !args.force {
                bail!("container {id} is running: stop it first, or use --force");
            }
            let request = StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            };
            cri.runtime.stop_container(request).await?;
        }
        let request = RemoveContainerRequest {
            container_id: id.clone(),
        };
        cri.runtime.remove_container(request).await?;
        println!("{id}");
    }
    Ok(())
}

/// Lists containers as a table, IDs, details, JSON or YAML.
pub async fn ps(cri: &mut Cri, args: PsArgs) -> Result<()> {
    let pod_id = match &args.pod {
        Some(prefix) => Some(cri.resolve_pod_id(prefix).await?),
        None => None,
    };
    let filter = container_filter(&args, pod_id)?;
    let request = ListContainersRequest {
        filter: Some(filter),
    };
    let containers = cri
        .runtime
        .list_containers(request)
        .await?
        .into_inner()
        .containers;
    let containers = select_containers(containers, args.name.as_deref());

    if let Some(format) = args.format.output.document() {
        return print_document(
            &ListContainersResponse {
                containers,
                ..Default::default()
            },
            format,
        );
    }
    if args.format.quiet {
        for container in &containers {
            println!("{}", container.id);
        }
        return Ok(());
    }
    let pods = pod_names(cri).await?;
    if args.format.verbose {
        for container in &containers {
            print!("{}", container_details(container, &pods, SystemTime::now()));
        }
    } else {
        container_table(&containers, &pods, SystemTime::now(), args.format.no_trunc).print();
    }
    Ok(())
}

/// Prints `{"status": ..., "info": ...}` for each container (a list when more than one).
pub async fn inspect(cri: &mut Cri, args: InspectArgs) -> Result<()> {
    let mut documents = Vec::new();
    for prefix in &args.ids {
        let id = cri.resolve_container_id(prefix).await?;
        let request = ContainerStatusRequest {
            container_id: id,
            verbose: true,
        };
        let response = cri.runtime.container_status(request).await?.into_inner();
        documents.push(status_document(&response.status, &response.info)?);
    }
    match documents.as_slice() {
        [single] => print_document(single, args.output),
        all => print_document(all, args.output),
    }
}

/// Runs a command (through ExecSync, or streaming with `-i`/`-t`), forwards its output and
/// returns its exit code.
pub async fn exec(cri: &mut Cri, args: ExecArgs) -> Result<ExitCode> {
    let id = cri.resolve_container_id(&args.id).await?;
    if args.interactive || args.tty {
        return streams::exec(
            cri,
            id,
            args.command,
            args.interactive,
            args.tty,
            args.transport,
        )
        .await;
    }
    let request = ExecSyncRequest {
        container_id: id,
        cmd: args.command,
        timeout: args.timeout,
    };
    let response = cri.runtime.exec_sync(request).await?.into_inner();
    std::io::stdout()
        .write_all(&response.stdout)
        .and_then(|()| std::io::stdout().flush())
        .context("writing the command's stdout")?;
    std::io::stderr()
        .write_all(&response.stderr)
        .context("writing the command's stderr")?;
    Ok(exit_code(response.exit_code))
}

/// Applies new resource limits to each container and prints its ID.
pub async fn update(cri: &mut Cri, args: UpdateArgs) -> Result<()> {
    let resources = requested_resources(&args)?;
    for prefix in &args.ids {
        let id = cri.resolve_container_id(prefix).await?;
        let request = UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(resources.clone()),
            ..Default::default()
        };
        cri.runtime.update_container_resources(request).await?;
        println!("{id}");
    }
    Ok(())
}

/// Prints the container's log file, read directly from the node's disk.
pub async fn logs(cri: &mut Cri, args: LogsArgs) -> Result<()> {
    let id = cri.resolve_container_id(&args.id).await?;
    let request = ContainerStatusRequest {
        container_id: id.clone(),
        verbose: false,
    };
    let status = cri
        .runtime
        .container_status(request)
        .await?
        .into_inner()
        .status
        .unwrap_or_default();
    if status.log_path.is_empty() {
        bail!("container {id} has no log file (its config sets no log_path)");
    }
    let log_path = PathBuf::from(&status.log_path);
    let mut tail = LogTail::open(&log_path)
        .with_context(|| format!("opening log file {}", status.log_path))?;
    let mut content = tail
        .read_new()
        .with_context(|| format!("reading log file {}", status.log_path))?;
    // Following, a line is printed once it is complete; the rest waits for its newline.
    let unfinished = if args.follow {
        content.split_off(complete_lines_end(&content))
    } else {
        Vec::new()
    };
    let (messages, malformed) = assemble(&String::from_utf8_lossy(&content));
    for line in &malformed {
        eprintln!("warning: {}: {line}", status.log_path);
    }
    let skip = args
        .tail
        .map_or(0, |tail| messages.len().saturating_sub(tail));
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for message in &messages[skip..] {
        let text = message.render(args.timestamps);
        let written = match message.stream {
            LogStream::Stdout => stdout.write_all(text.as_bytes()),
            LogStream::Stderr => stderr.write_all(text.as_bytes()),
        };
        written.context("writing log output")?;
    }
    stdout.flush().context("writing log output")?;
    drop((stdout, stderr));
    if args.follow {
        let mut printer = LinePrinter::new(args.timestamps);
        for message in messages.iter().filter(|message| !message.complete) {
            printer.continue_message(message.stream);
        }
        follow_log(cri, &id, tail, unfinished, printer).await?;
    }
    Ok(())
}

/// How often `logs -f` looks for new lines when there were none.
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// How many idle looks `logs -f` takes between asking whether the container still runs.
const STATE_CHECK_EVERY: u32 = 10;

/// Prints the lines appended to a container's log until the container is no longer running
/// and its log is drained.
async fn follow_log(
    cri: &mut Cri,
    id: &str,
    mut tail: LogTail,
    mut pending: Vec<u8>,
    mut printer: LinePrinter,
) -> Result<()> {
    let mut idle = 0;
    let mut finishing = false;
    loop {
        let new = tail.read_new().context("reading the log file")?;
        if new.is_empty() {
            if finishing {
                return Ok(());
            }
            idle += 1;
            if (idle - 1) % STATE_CHECK_EVERY == 0 && !container_running(cri, id).await? {
                // One more read: what the container wrote before it exited.
                finishing = true;
                continue;
            }
            tokio::time::sleep(FOLLOW_INTERVAL).await;
            continue;
        }
        idle = 0;
        pending.extend_from_slice(&new);
        let end = complete_lines_end(&pending);
        let rest = pending.split_off(end);
        print_lines(&pending, &mut printer)?;
        pending = rest;
    }
}

/// Prints complete log lines as they come, each on its stream; malformed ones are reported.
fn print_lines(lines: &[u8], printer: &mut LinePrinter) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for line in String::from_utf8_lossy(lines).lines() {
        if line.is_empty() {
            continue;
        }
        let written = match parse_line(line) {
            Ok(parsed) => {
                let text = printer.render(&parsed);
                match parsed.stream {
                    LogStream::Stdout => stdout.write_all(text.as_bytes()),
                    LogStream::Stderr => stderr.write_all(text.as_bytes()),
                }
            }
            Err(reason) => writeln!(stderr, "warning: log line is not in CRI format: {reason}"),
        };
        written.context("writing log output")?;
    }
    stdout.flush().context("writing log output")
}

/// Whether the container is running (ContainerStatus).
async fn container_running(cri: &mut Cri, id: &str) -> Result<bool> {
    let request = ContainerStatusRequest {
        container_id: id.to_string(),
        verbose: false,
    };
    let status = cri.runtime.container_status(request).await?.into_inner();
    Ok(status
        .status
        .is_some_and(|s| s.state == ContainerState::ContainerRunning as i32))
}

/// The server-side filter for `ps`: running containers unless `-a` or `--state` say otherwise.
fn container_filter(args: &PsArgs, pod_id: Option<String>) -> Result<ContainerFilter> {
    let state = match (&args.state, args.all) {
        (Some(state), _) => Some(parse_container_state(state)?),
        (None, false) => Some(ContainerState::ContainerRunning),
        (None, true) => None,
    };
    Ok(ContainerFilter {
        id: args.id.clone().unwrap_or_default(),
        state: state.map(|s| ContainerStateValue { state: s as i32 }),
        pod_sandbox_id: pod_id.unwrap_or_default(),
        label_selector: parse_labels(&args.labels)?,
    })
}

/// `--state` of `ps`: created, running, exited or unknown, any case.
pub fn parse_container_state(state: &str) -> Result<ContainerState> {
    match state.to_ascii_lowercase().as_str() {
        "created" => Ok(ContainerState::ContainerCreated),
        "running" => Ok(ContainerState::ContainerRunning),
        "exited" => Ok(ContainerState::ContainerExited),
        "unknown" => Ok(ContainerState::ContainerUnknown),
        _ => bail!("--state must be one of created, running, exited or unknown, not {state:?}"),
    }
}

/// Keeps the containers whose name contains `name`, newest first.
pub fn select_containers(mut containers: Vec<Container>, name: Option<&str>) -> Vec<Container> {
    containers
        .retain(|c| name.is_none_or(|n| c.metadata.as_ref().is_some_and(|m| m.name.contains(n))));
    containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    containers
}

/// Name and namespace of a pod, for the POD and NAMESPACE columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodName {
    pub name: String,
    pub namespace: String,
}

/// Names of all pod sandboxes by ID, for containers that carry no kubelet labels.
async fn pod_names(cri: &mut Cri) -> Result<HashMap<String, PodName>> {
    let items = cri
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    Ok(items
        .into_iter()
        .map(|pod| {
            let metadata = pod.metadata.unwrap_or_default();
            let name = PodName {
                name: metadata.name,
                namespace: metadata.namespace,
            };
            (pod.id, name)
        })
        .collect())
}

/// The container's pod name and namespace: from the kubelet's labels, else from the pod
/// sandbox, else "unknown".
fn pod_name_of(container: &Container, pods: &HashMap<String, PodName>) -> PodName {
    let from_pod = pods.get(&container.pod_sandbox_id);
    let pick = |label: &str, from_pod: Option<&String>| {
        container
            .labels
            .get(label)
            .or(from_pod)
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| "unknown".to_string())
    };
    PodName {
        name: pick(POD_NAME_LABEL, from_pod.map(|p| &p.name)),
        namespace: pick(POD_NAMESPACE_LABEL, from_pod.map(|p| &p.namespace)),
    }
}

/// The IMAGE column: the image reference, or a short ID when it is a digest.
fn image_column(image: &str, no_trunc: bool) -> String {
    let is_digest = image
        .strip_prefix("sha256:")
        .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()));
    if is_digest && !no_trunc {
        short_id(image).to_string()
    } else {
        image.to_string()
    }
}

/// The `ps` table:
/// `CONTAINER  IMAGE  CREATED  STATE  NAME  ATTEMPT  POD ID  POD  NAMESPACE`.
pub fn container_table(
    containers: &[Container],
    pods: &HashMap<String, PodName>,
    now: SystemTime,
    no_trunc: bool,
) -> Table {
    let mut table = Table::with_header(&[
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD ID",
        "POD",
        "NAMESPACE",
    ]);
    let shorten = |id: &str| {
        if no_trunc {
            id.to_string()
        } else {
            short_id(id).to_string()
        }
    };
    for container in containers {
        let metadata = container.metadata.clone().unwrap_or_default();
        let image = container.image.clone().unwrap_or_default().image;
        let pod = pod_name_of(container, pods);
        table.push(vec![
            shorten(&container.id),
            image_column(&image, no_trunc),
            age(container.created_at, now),
            container_state_name(container.state).to_string(),
            metadata.name,
            metadata.attempt.to_string(),
            shorten(&container.pod_sandbox_id),
            pod.name,
            pod.namespace,
        ]);
    }
    table
}

/// The `ps -v` block of one container.
fn container_details(
    container: &Container,
    pods: &HashMap<String, PodName>,
    now: SystemTime,
) -> String {
    let metadata = container.metadata.clone().unwrap_or_default();
    let pod = pod_name_of(container, pods);
    let mut out = format!("ID: {}\n", container.id);
    out += &format!("PodID: {}\n", container.pod_sandbox_id);
    out += &format!("Pod: {}\n", pod.name);
    out += &format!("Namespace: {}\n", pod.namespace);
    out += &format!("Name: {}\n", metadata.name);
    out += &format!("Attempt: {}\n", metadata.attempt);
    out += &format!("State: {}\n", container_state_name(container.state));
    out += &format!(
        "Image: {}\n",
        container.image.clone().unwrap_or_default().image
    );
    out += &format!("Created: {}\n", age(container.created_at, now));
    push_labels_and_annotations(&mut out, &container.labels, &container.annotations);
    out.push('\n');
    out
}

/// The resources `update` sends; unset flags stay 0 / empty ("not specified" in CRI).
fn requested_resources(args: &UpdateArgs) -> Result<LinuxContainerResources> {
    let memory_limit_in_bytes = match &args.memory {
        Some(memory) => parse_memory_size(memory)?,
        None => 0,
    };
    let resources = LinuxContainerResources {
        memory_limit_in_bytes,
        cpu_quota: args.cpu_quota.unwrap_or(0),
        cpu_period: args.cpu_period.unwrap_or(0),
        cpu_shares: args.cpu_share.unwrap_or(0),
        cpuset_cpus: args.cpuset_cpus.clone().unwrap_or_default(),
        cpuset_mems: args.cpuset_mems.clone().unwrap_or_default(),
        unified: args
            .unified
            .iter()
            .map(|pair| key_value(pair, "--unified"))
            .collect::<Result<_>>()?,
        hugepage_limits: args
            .hugepage_limit
            .iter()
            .map(|pair| {
                let (page_size, limit) = key_value(pair, "--hugepage-limit")?;
                let limit = limit.parse().with_context(|| {
                    format!("--hugepage-limit {pair}: the limit is a number of bytes")
                })?;
                Ok(HugepageLimit { page_size, limit })
            })
            .collect::<Result<_>>()?,
        ..Default::default()
    };
    if resources == LinuxContainerResources::default() {
        bail!("nothing to update: give at least one of --memory, --cpu-quota, --cpu-period, --cpu-share, --cpuset-cpus, --cpuset-mems, --unified, --hugepage-limit");
    }
    Ok(resources)
}

/// `KEY=VALUE` of `flag`, split.
fn key_value(pair: &str, flag: &str) -> Result<(String, String)> {
    match pair.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => bail!("{flag} {pair}: expected KEY=VALUE"),
    }
}

/// A process exit status from a command's exit code (codes outside 0..=255 become 255).
fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri_proto::v1::{ContainerMetadata, ImageSpec};
    use std::time::{Duration, UNIX_EPOCH};

    const NOW_SECS: i64 = 1_700_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW_SECS as u64)
    }

    fn container(id: &str, name: &str, pod_id: &str, secs_ago: i64) -> Container {
        Container {
            id: id.to_string(),
            pod_sandbox_id: pod_id.to_string(),
            metadata: Some(ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: "docker.io/library/busybox:latest".to_string(),
                ..Default::default()
            }),
            state: ContainerState::ContainerRunning as i32,
            created_at: (NOW_SECS - secs_ago) * 1_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn table_has_crictl_columns_and_pod_names() {
        let mut labelled = container("c0ffee0123456789", "web", "p0d0123456789abc", 30);
        labelled
            .labels
            .insert(POD_NAME_LABEL.into(), "web-pod".into());
        labelled
            .labels
            .insert(POD_NAMESPACE_LABEL.into(), "prod".into());
        let mut exited = container("deadbeef", "job", "p1", 3 * 3600);
        exited.state = ContainerState::ContainerExited as i32;
        exited.image = Some(ImageSpec {
            image: format!("sha256:{}", "ab".repeat(32)),
            ..Default::default()
        });
        let orphan = container("feed", "lost", "gone", 5);
        let pods = HashMap::from([(
            "p1".to_string(),
            PodName {
                name: "batch".into(),
                namespace: "default".into(),
            },
        )]);
        let rendered = container_table(&[labelled, exited, orphan], &pods, now(), false).render();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(
            lines[0],
            "CONTAINER           IMAGE                              CREATED             STATE               NAME                ATTEMPT             POD ID              POD                 NAMESPACE"
        );
        assert_eq!(
            lines[1],
            "c0ffee0123456       docker.io/library/busybox:latest   30 seconds ago      Running             web                 0                   p0d0123456789       web-pod             prod"
        );
        assert_eq!(
            lines[2],
            "deadbeef            ababababababa                      3 hours ago         Exited              job                 0                   p1                  batch               default"
        );
        assert!(
            lines[3].ends_with("gone                unknown             unknown"),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn image_column_shortens_digests_only() {
        let digest = format!("sha256:{}", "0123456789".repeat(6) + "abcd");
        assert_eq!(image_column(&digest, false), "0123456789012");
        assert_eq!(image_column(&digest, true), digest);
        assert_eq!(image_column("busybox:1.36", false), "busybox:1.36");
    }

    #[test]
    fn ps_shows_running_unless_told_otherwise() {
        let mut args = PsArgs {
            all: false,
            id: None,
            pod: None,
            name: None,
            state: None,
            labels: vec!["app=web".into()],
            format: crate::output::ListFormat::table(),
        };
        let filter = container_filter(&args, Some("pod1".into())).expect("valid");
        assert_eq!(
            filter.state.map(|s| s.state),
            Some(ContainerState::ContainerRunning as i32)
        );
        assert_eq!(filter.pod_sandbox_id, "pod1");
        assert_eq!(filter.label_selector["app"], "web");

        args.all = true;
        assert!(container_filter(&args, None)
            .expect("valid")
            .state
            .is_none());

        args.state = Some("Exited".into());
        assert_eq!(
            container_filter(&args, None)
                .expect("valid")
                .state
                .map(|s| s.state),
            Some(ContainerState::ContainerExited as i32)
        );
        args.state = Some("dead".into());
        assert!(container_filter(&args, None).is_err());
    }

    #[test]
    fn selection_filters_by_name_and_sorts_newest_first() {
        let containers = vec![
            container("a", "web-1", "p", 100),
            container("b", "db", "p", 50),
            container("c", "web-2", "p", 1),
        ];
        let ids: Vec<String> = select_containers(containers, Some("web"))
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, vec!["c", "a"]);
    }

    #[test]
    fn update_sends_only_given_resources() {
        let args = UpdateArgs {
            memory: Some("64m".into()),
            cpu_quota: Some(50_000),
            cpu_period: None,
            cpu_share: None,
            cpuset_cpus: None,
            cpuset_mems: None,
            unified: Vec::new(),
            hugepage_limit: Vec::new(),
            ids: vec!["x".into()],
        };
        let resources = requested_resources(&args).expect("valid");
        assert_eq!(resources.memory_limit_in_bytes, 64 << 20);
        assert_eq!(resources.cpu_quota, 50_000);
        assert_eq!(resources.cpu_period, 0);

        let nothing = UpdateArgs {
            memory: None,
            cpu_quota: None,
            ..args
        };
        assert!(requested_resources(&nothing).is_err());
    }

    #[test]
    fn update_sends_unified_files_and_hugepage_limits() {
        let args = |unified: &str, hugepage: &str| UpdateArgs {
            memory: None,
            cpu_quota: None,
            cpu_period: None,
            cpu_share: None,
            cpuset_cpus: None,
            cpuset_mems: None,
            unified: vec![unified.into()],
            hugepage_limit: vec![hugepage.into()],
            ids: vec!["x".into()],
        };
        let resources = requested_resources(&args("pids.max=64", "2MB=4194304")).expect("valid");
        assert_eq!(
            resources.unified.get("pids.max").map(String::as_str),
            Some("64")
        );
        assert_eq!(resources.hugepage_limits[0].page_size, "2MB");
        assert_eq!(resources.hugepage_limits[0].limit, 4 << 20);
        for (unified, hugepage) in [("pids.max", "2MB=1"), ("=1", "2MB=1"), ("a=1", "2MB=lots")] {
            let err = requested_resources(&args(unified, hugepage)).expect_err("refused");
            assert!(err.to_string().contains("--"), "{err}");
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(0), ExitCode::SUCCESS);
        assert_eq!(exit_code(3), ExitCode::from(3));
        assert_eq!(exit_code(-1), ExitCode::from(255));
        assert_eq!(exit_code(300), ExitCode::from(255));
    }

    #[test]
    fn verbose_details() {
        let c = container("abc", "web", "pod1", 10);
        let pods = HashMap::from([(
            "pod1".to_string(),
            PodName {
                name: "nginx".into(),
                namespace: "default".into(),
            },
        )]);
        let details = container_details(&c, &pods, now());
        assert!(
            details
                .starts_with("ID: abc\nPodID: pod1\nPod: nginx\nNamespace: default\nName: web\n"),
            "{details}"
        );
        assert!(details.contains("State: Running\n"));
        assert!(details.ends_with("\n\n"));
    }
}
