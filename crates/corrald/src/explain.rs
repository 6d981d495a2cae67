//! `corral.admin.v1.Explain`: `corralctl explain POD` and `corralctl explain-mount`.
//!
//! corrald knows which processes, files and cgroups are a pod's (its records); `corral-explain`
//! reads everything else from the live system. The mount pre-flight runs the very function
//! CreateContainer's check runs, against the same mount table (`/proc/self/mountinfo`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use corral_explain::{ContainerInput, PodCgroupInput, PodInput};
use corral_store::SANDBOXES;
use cri_proto::admin::explain_server::Explain;
use cri_proto::admin::{ExplainMountRequest, ExplainPodRequest, ExplainResponse};
use cri_proto::v1::{NamespaceMode, PodSandboxState};
use tonic::{Request, Response, Status};

use crate::container::{ContainerRecord, ContainerState};
use crate::error::{CriError, CriResult};
use crate::pod::{SandboxRecord, SandboxState};
use crate::Daemon;

/// The mount table CreateContainer checks volumes against.
const HOST_MOUNTINFO: &str = "/proc/self/mountinfo";

/// The Explain service.
#[derive(Clone)]
pub struct ExplainServiceImpl {
    daemon: Arc<Daemon>,
}

impl ExplainServiceImpl {
    /// Explains the daemon's pods.
    pub fn new(daemon: Arc<Daemon>) -> Self {
        ExplainServiceImpl { daemon }
    }
}

/// The explanation of `pod` (id, prefix or `namespace/name`) as JSON, only `container` when not
/// empty. Also served as the `explain` key of a verbose PodSandboxStatus (`crictl inspectp`).
pub async fn pod_json(daemon: &Daemon, pod: &str, container: &str) -> Result<String, Status> {
    let sandbox = find_pod(daemon, pod)?;
    let mut containers = Vec::new();
    for id in daemon.containers.ids_in_pod(&sandbox.id)? {
        containers.push(daemon.containers.record(&id).await?);
    }
    let state_dir = daemon.config.state.clone();
    let only = Some(container.to_owned()).filter(|c| !c.is_empty());
    let explanation = tokio::task::spawn_blocking(move || {
        let mut inputs: Vec<ContainerInput> = containers
            .iter()
            .map(|r| container_input(r, &state_dir))
            .collect();
        inputs.sort_by_key(|c| c.name.clone());
        corral_explain::explain_pod(&pod_input(&sandbox, inputs, only, &state_dir))
    })
    .await
    .map_err(|e| Status::internal(format!("explain task: {e}")))?
    .map_err(explain_error)?;
    serde_json::to_string(&explanation)
        .map_err(|e| Status::internal(format!("encode the explanation: {e}")))
}

/// The sandbox a user named: `namespace/name` (the newest attempt), else an id or prefix.
fn find_pod(daemon: &Daemon, pod: &str) -> CriResult<SandboxRecord> {
    let Some((namespace, name)) = pod.split_once('/') else {
        return daemon.pods.sandbox(pod);
    };
    daemon
        .store
        .list::<SandboxRecord>(SANDBOXES)?
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| {
            r.config
                .metadata
                .as_ref()
                .is_some_and(|m| m.namespace == namespace && m.name == name)
        })
        .max_by_key(|r| (r.state == SandboxState::Ready, r.created_at))
        .ok_or_else(|| {
            CriError::NotFound(format!(
                "no pod named {name:?} in namespace {namespace:?}; `corralctl pods` lists them"
            ))
        })
}

fn mode_name(mode: NamespaceMode) -> String {
    mode.as_str_name().to_owned()
}

fn explain_error(err: corral_explain::ExplainError) -> Status {
    crate::error::CriError::from(err).into()
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Response<ExplainResponse>, Status> {
    serde_json::to_string(value)
        .map(|json| Response::new(ExplainResponse { json }))
        .map_err(|e| Status::internal(format!("encode the explanation: {e}")))
}

/// What the explanation needs of a container record.
fn container_input(record: &ContainerRecord, state_dir: &Path) -> ContainerInput {
    let running = record.state == ContainerState::Running;
    ContainerInput {
        name: record
            .config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        id: record.id.clone(),
        pid: record
            .shim
            .filter(|_| running)
            .map(|s| s.container_pid)
            .filter(|pid| *pid > 0),
        state: match record.state {
            ContainerState::Creating => "CONTAINER_UNKNOWN",
            ContainerState::Created => "CONTAINER_CREATED",
            ContainerState::Running => "CONTAINER_RUNNING",
            ContainerState::Exited => "CONTAINER_EXITED",
        }
        .to_owned(),
        privileged: record
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged),
        image: record.image_name.clone(),
        rootfs_dir: state_dir.join("containers").join(&record.id).join("rootfs"),
        cgroup_relative: record.cgroup_relative.clone(),
        mounts: record.config.mounts.clone(),
    }
}

/// What the explanation needs of a sandbox record.
fn pod_input(
    sandbox: &SandboxRecord,
    containers: Vec<ContainerInput>,
    only: Option<String>,
    state_dir: &Path,
) -> PodInput {
    let meta = sandbox.config.metadata.clone().unwrap_or_default();
    let alive = sandbox.pause_alive();
    let crate::pod::NamespaceModes { network, pid, ipc } = sandbox.namespace_modes();
    let ready = sandbox.state == SandboxState::Ready && alive;
    PodInput {
        pod: corral_explain::report::PodFacts {
            id: sandbox.id.clone(),
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            state: if ready {
                PodSandboxState::SandboxReady
            } else {
                PodSandboxState::SandboxNotready
            }
            .as_str_name()
            .to_owned(),
            ips: sandbox.ips.clone(),
            runtime_handler: sandbox.runtime_handler.clone(),
            pause_pid: sandbox.pause.filter(|_| alive).map(|p| p.pid),
        },
        netns_pin: sandbox.netns_path.clone(),
        network_mode: mode_name(network),
        pid_mode: mode_name(pid),
        ipc_mode: mode_name(ipc),
        sysctls: sandbox
            .config
            .linux
            .as_ref()
            .map(|l| l.sysctls.clone().into_iter().collect())
            .unwrap_or_default(),
        sandbox_dir: state_dir.join("sandboxes").join(&sandbox.id),
        cgroup: sandbox.pod_cgroup.as_ref().map(|c| PodCgroupInput {
            driver: c.driver().to_string(),
            layout: c.layout().clone(),
            relative: c.relative_path().to_path_buf(),
        }),
        containers,
        only,
        host_mountinfo: PathBuf::from(HOST_MOUNTINFO),
    }
}

#[tonic::async_trait]
impl Explain for ExplainServiceImpl {
    async fn explain_pod(
        &self,
        request: Request<ExplainPodRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        let request = request.into_inner();
        if request.pod.is_empty() {
            return Err(Status::invalid_argument(
                "pod: name the pod by id, id prefix or namespace/name",
            ));
        }
        let json = pod_json(&self.daemon, &request.pod, &request.container).await?;
        Ok(Response::new(ExplainResponse { json }))
    }

    async fn explain_mount(
        &self,
        request: Request<ExplainMountRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        let r = request.into_inner();
        let answer = tokio::task::spawn_blocking(move || {
            corral_explain::explain_mount(
                &r.host_path,
                &r.propagation,
                r.privileged,
                Path::new(HOST_MOUNTINFO),
            )
        })
        .await
        .map_err(|e| Status::internal(format!("explain task: {e}")))?
        .map_err(explain_error)?;
        to_json(&answer)
    }
}
