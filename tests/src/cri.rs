//! Small CRI helpers for the container tests.

use std::time::{Duration, Instant};

use cri_proto::v1::image_service_client::ImageServiceClient;
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use cri_proto::v1::*;
use tonic::transport::Channel;

/// A RuntimeService client.
pub type Rt = RuntimeServiceClient<Channel>;

/// Pulls `image` through the daemon; returns the image id.
pub async fn pull(images: &mut ImageServiceClient<Channel>, image: &str) -> String {
    images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await
        .expect("PullImage")
        .into_inner()
        .image_ref
}

/// A container config: `name`, `image`, the command (empty: the image's), logging to
/// `<name>.log` under the pod's log directory.
pub fn container_config(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: [("container".to_string(), name.to_string())].into(),
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// CreateContainer; panics with the status on failure.
pub async fn create(
    rt: &mut Rt,
    pod_id: &str,
    pod: &PodSandboxConfig,
    config: ContainerConfig,
) -> String {
    try_create(rt, pod_id, pod, config)
        .await
        .expect("CreateContainer")
}

/// CreateContainer.
pub async fn try_create(
    rt: &mut Rt,
    pod_id: &str,
    pod: &PodSandboxConfig,
    config: ContainerConfig,
) -> Result<String, tonic::Status> {
    rt.create_container(CreateContainerRequest {
        pod_sandbox_id: pod_id.into(),
        config: Some(config),
        sandbox_config: Some(pod.clone()),
    })
    .await
    .map(|r| r.into_inner().container_id)
}

/// CreateContainer then StartContainer.
pub async fn run(
    rt: &mut Rt,
    pod_id: &str,
    pod: &PodSandboxConfig,
    config: ContainerConfig,
) -> String {
    let id = create(rt, pod_id, pod, config).await;
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("StartContainer");
    id
}

/// ContainerStatus (verbose) and its info JSON.
pub async fn status(rt: &mut Rt, id: &str) -> (ContainerStatus, serde_json::Value) {
    let resp = rt
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner();
    let info = resp
        .info
        .get("info")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(serde_json::Value::Null);
    (resp.status.expect("status"), info)
}

/// Waits until the container has exited; returns its status.
pub async fn wait_exited(rt: &mut Rt, id: &str, timeout: Duration) -> ContainerStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let (st, _) = status(rt, id).await;
        if st.state == ContainerState::ContainerExited as i32 {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} did not exit: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// ExecSync: exit code, stdout, stderr.
pub async fn exec(rt: &mut Rt, id: &str, cmd: &[&str]) -> (i32, String, String) {
    let r = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// StopPodSandbox then RemovePodSandbox.
pub async fn remove_pod(rt: &mut Rt, id: &str) {
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .expect("StopPodSandbox");
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .expect("RemovePodSandbox");
}

/// The message parts of a CRI log file's lines: `(stream, tag, text)`.
pub fn log_lines(path: &std::path::Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(4, ' ');
            let _ts = parts.next()?;
            Some((
                parts.next()?.to_string(),
                parts.next()?.to_string(),
                parts.next().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

/// RunPodSandbox with the default handler; returns the sandbox id.
pub async fn run_pod(rt: &mut Rt, config: &PodSandboxConfig) -> String {
    rt.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    })
    .await
    .expect("RunPodSandbox")
    .into_inner()
    .pod_sandbox_id
}

/// The host pid of a pod's pause process (PodSandboxStatus verbose `info.pid`).
pub async fn pause_pid(rt: &mut Rt, pod_id: &str) -> i32 {
    let (_, info) = pod_status(rt, pod_id).await;
    let pid = info["pid"].as_i64().expect("info.pid") as i32;
    assert!(pid > 0, "pod {pod_id} has no pause pid: {info}");
    pid
}

/// The host pids of a container's init and of its shim (ContainerStatus verbose `info.pid`,
/// `info.shimPid`).
pub async fn pids(rt: &mut Rt, id: &str) -> (i32, i32) {
    let (_, info) = status(rt, id).await;
    let pid = info["pid"].as_i64().expect("info.pid") as i32;
    let shim = info["shimPid"].as_i64().expect("info.shimPid") as i32;
    assert!(pid > 0 && shim > 0, "container {id} has no pids: {info}");
    (pid, shim)
}

/// The host pid of a container's init.
pub async fn pid(rt: &mut Rt, id: &str) -> i32 {
    pids(rt, id).await.0
}

/// ExecSync that must succeed: panics with the output unless the exit code is 0; returns
/// stdout.
pub async fn exec_ok(rt: &mut Rt, id: &str, cmd: &[&str]) -> String {
    let (code, out, err) = exec(rt, id, cmd).await;
    assert_eq!(
        code, 0,
        "{cmd:?} in {id}: exit {code}, stdout {out:?}, stderr {err:?}"
    );
    out
}

/// A CRI mount of `host_path` at `container_path` with `propagation`.
pub fn mount(
    host_path: &std::path::Path,
    container_path: &str,
    propagation: MountPropagation,
) -> Mount {
    Mount {
        container_path: container_path.into(),
        host_path: host_path.to_string_lossy().into_owned(),
        propagation: propagation as i32,
        ..Default::default()
    }
}

/// Sets `privileged` in a container config's security context.
pub fn privileged(mut config: ContainerConfig) -> ContainerConfig {
    let linux = config.linux.get_or_insert_with(Default::default);
    linux
        .security_context
        .get_or_insert_with(Default::default)
        .privileged = true;
    config
}

/// What most container tests start from: a daemon, a loopback registry holding the busybox test
/// image, that image pulled, and a runtime client.
pub struct ContainerEnv {
    /// The daemon.
    pub daemon: crate::Daemon,
    /// The registry (kept running for the test's lifetime).
    pub registry: crate::registry::Registry,
    /// The busybox image reference, pulled.
    pub image: String,
    /// A RuntimeService client.
    pub rt: Rt,
}

impl ContainerEnv {
    /// Runs a pod named `name` (namespace modes: network, pid, ipc) under its own cgroup
    /// parent, with its log directory in the daemon's temp directory; `edit` changes the config
    /// first. Returns the sandbox id and the config.
    pub async fn pod_with(
        &mut self,
        name: &str,
        modes: (i32, i32, i32),
        edit: impl FnOnce(&mut PodSandboxConfig),
    ) -> (String, PodSandboxConfig) {
        let mut config = crate::pod_config(name, &crate::unique_cgroup_parent(name), modes);
        edit(&mut config);
        config.log_directory = self
            .daemon
            .dir()
            .join("logs")
            .join(name)
            .to_string_lossy()
            .into_owned();
        let id = run_pod(&mut self.rt, &config).await;
        (id, config)
    }
}

/// Sets up a [`ContainerEnv`], or `None` (with the reason printed) when the registry or busybox
/// is not installed.
pub async fn container_env() -> Option<ContainerEnv> {
    container_env_with(crate::DaemonOptions::default()).await
}

/// [`container_env`] with a daemon started with `opts`.
pub async fn container_env_with(opts: crate::DaemonOptions) -> Option<ContainerEnv> {
    let (registry, image) = busybox_registry()?;
    let daemon = crate::Daemon::start(opts);
    let mut imgs = daemon.images().await;
    pull(&mut imgs, &image).await;
    let rt = daemon.runtime().await;
    Some(ContainerEnv {
        daemon,
        registry,
        image,
        rt,
    })
}

/// Makes a pod privileged (`linux.security_context.privileged`).
pub fn privileged_pod(config: &mut PodSandboxConfig) {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .privileged = true;
}

/// Sets a container's namespace modes (network, pid, ipc), as kubelet does from the pod spec.
pub fn with_namespaces(mut config: ContainerConfig, modes: (i32, i32, i32)) -> ContainerConfig {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options = Some(NamespaceOption {
        network: modes.0,
        pid: modes.1,
        ipc: modes.2,
        ..Default::default()
    });
    config
}

/// Every container ListContainers returns, unfiltered.
pub async fn all_containers(rt: &mut Rt) -> Vec<Container> {
    rt.list_containers(ListContainersRequest::default())
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
}

/// CreateContainer that must be refused with `code`; `why` names the case. Returns the refusal.
pub async fn create_refused(
    rt: &mut Rt,
    pod_id: &str,
    pod: &PodSandboxConfig,
    config: ContainerConfig,
    code: tonic::Code,
    why: &str,
) -> tonic::Status {
    let err = try_create(rt, pod_id, pod, config).await.expect_err(why);
    assert_eq!(err.code(), code, "{why}: {err:?}");
    err
}

/// StopContainer that must succeed, with `timeout` seconds before SIGKILL.
pub async fn stop(rt: &mut Rt, id: &str, timeout: i64) {
    rt.stop_container(StopContainerRequest {
        container_id: id.into(),
        timeout,
    })
    .await
    .expect("StopContainer");
}

/// RunPodSandbox with the default handler, refused or not; the sandbox id.
pub async fn try_run_pod(rt: &mut Rt, config: PodSandboxConfig) -> Result<String, tonic::Status> {
    rt.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

/// Every pod ListPodSandbox returns, unfiltered.
pub async fn all_pods(rt: &mut Rt) -> Vec<PodSandbox> {
    rt.list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
}

/// PodSandboxStatus, verbose: the status and the parsed `info`.
pub async fn pod_status(rt: &mut Rt, pod_id: &str) -> (PodSandboxStatus, serde_json::Value) {
    let resp = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.into(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(resp.info.get("info").expect("verbose info")).expect("info is JSON");
    (resp.status.expect("PodSandboxStatus.status"), info)
}

/// A container config's security context, created when missing.
pub fn security_context(config: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// Sets a container's `linux.resources`.
pub fn with_resources(
    mut config: ContainerConfig,
    resources: LinuxContainerResources,
) -> ContainerConfig {
    config.linux.get_or_insert_with(Default::default).resources = Some(resources);
    config
}

/// The runtime's Status, not verbose.
pub async fn runtime_status(rt: &mut Rt) -> StatusResponse {
    rt.status(StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner()
}

/// A loopback registry holding the busybox test image, and the image's reference; `None` (with
/// the reason printed) when the registry is not installed.
pub fn busybox_registry() -> Option<(crate::registry::Registry, String)> {
    if let Some(reason) = crate::registry::skip_reason() {
        eprintln!("skipped: {reason}");
        return None;
    }
    let registry = crate::registry::Registry::start();
    let image = crate::images::push_busybox(
        &registry,
        "e2e/busybox",
        "1",
        crate::images::default_config(),
    );
    Some((registry, image))
}
