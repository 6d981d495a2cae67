//! `runtime.v1.RuntimeService`: each RPC is handled here or handed to the module that owns it
//! (`pod` for sandboxes, `stats` for the stats RPCs, `events`, `cri_metrics`, `checkpoint`).

use std::pin::Pin;
use std::sync::Arc;

use cri_proto::v1::runtime_service_server::RuntimeService;
use cri_proto::v1::*;
use futures::Stream;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::pod::PodManager;
use crate::stats::StatsService;
use crate::v1alpha2::ApiVersion;
use crate::Daemon;

/// The RuntimeService implementation over the daemon's shared state.
#[derive(Clone)]
pub struct RuntimeServiceImpl {
    daemon: Arc<Daemon>,
    stats: StatsService,
}

impl RuntimeServiceImpl {
    /// Serves the runtime service from `daemon`.
    pub fn new(daemon: Arc<Daemon>) -> Self {
        RuntimeServiceImpl {
            stats: StatsService::new(daemon.clone()),
            daemon,
        }
    }

    fn pods(&self) -> &PodManager {
        &self.daemon.pods
    }

    /// The full id of a running container, or the right error for `what` it is needed for.
    async fn running_container(&self, id: &str, what: &str) -> Result<String, Status> {
        let record = self.daemon.containers.record(id).await?;
        if record.state != crate::container::ContainerState::Running {
            return Err(Status::failed_precondition(format!(
                "container {} is not running; cannot {what} it",
                record.id
            )));
        }
        Ok(record.id)
    }
}

/// A server stream of results.
type ResultStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A streaming request must ask for at least one stream, and a terminal merges stderr into
/// stdout.
fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), Status> {
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument(
            "one of stdin, stdout and stderr must be true",
        ));
    }
    if tty && stderr {
        return Err(Status::invalid_argument(
            "tty and stderr cannot both be true: a terminal carries stderr on stdout",
        ));
    }
    Ok(())
}

/// Splits a list into stream messages of at most this many items.
const STREAM_CHUNK: usize = 100;

fn chunked<T: Send + 'static, R: Send + 'static>(
    items: Vec<T>,
    wrap: fn(Vec<T>) -> R,
) -> ResultStream<R> {
    let mut batches = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        batches.push(Ok(wrap(items.by_ref().take(STREAM_CHUNK).collect())));
    }
    Box::pin(futures::stream::iter(batches))
}

#[tonic::async_trait]
impl RuntimeService for RuntimeServiceImpl {
    #[instrument(skip_all)]
    async fn version(
        &self,
        request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        let api = match request.extensions().get::<ApiVersion>() {
            Some(ApiVersion::V1alpha2) => "v1alpha2",
            None => "v1",
        };
        Ok(Response::new(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "corral".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: api.into(),
        }))
    }

    #[instrument(skip_all, fields(pod = tracing::field::Empty))]
    async fn run_pod_sandbox(
        &self,
        request: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        let id = self.pods().run(request.into_inner()).await?;
        tracing::Span::current().record("pod", id.as_str());
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id: id }))
    }

    #[instrument(skip_all, fields(pod_id = %request.get_ref().pod_sandbox_id))]
    async fn stop_pod_sandbox(
        &self,
        request: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let id = match self.pods().sandbox_async(&id).await {
            Ok(sandbox) => sandbox.id,
            // Stopping an unknown sandbox succeeds: there is nothing to stop (CRI contract).
            Err(crate::error::CriError::NotFound(_)) => {
                return Ok(Response::new(StopPodSandboxResponse {}))
            }
            Err(e) => return Err(e.into()),
        };
        let _pod = self.daemon.containers.lock_pod(&id).await;
        self.daemon.containers.stop_pod(&id).await?;
        self.pods().stop(&id).await?;
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    #[instrument(skip_all, fields(pod_id = %request.get_ref().pod_sandbox_id))]
    async fn remove_pod_sandbox(
        &self,
        request: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let Ok(sandbox) = self.pods().sandbox_async(&id).await else {
            // Removing an unknown sandbox succeeds (CRI contract).
            return Ok(Response::new(RemovePodSandboxResponse {}));
        };
        let pod = self.daemon.containers.lock_pod(&sandbox.id).await;
        self.daemon.containers.remove_pod(&sandbox.id).await?;
        self.pods().remove(&sandbox.id).await?;
        drop(pod);
        self.daemon.containers.forget_pod(&sandbox.id);
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    #[instrument(skip_all, fields(pod_id = %request.get_ref().pod_sandbox_id))]
    async fn pod_sandbox_status(
        &self,
        request: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        let req = request.into_inner();
        let mut response = self.pods().status(&req.pod_sandbox_id, req.verbose).await?;
        if req.verbose {
            // `crictl inspectp` shows corral's explanation of the pod beside its info.
            match crate::explain::pod_json(&self.daemon, &req.pod_sandbox_id, "").await {
                Ok(json) => {
                    response.info.insert("explain".to_owned(), json);
                }
                Err(e) => tracing::debug!(error = %e.message(), "no explanation for the pod"),
            }
        }
        Ok(Response::new(response))
    }

    #[instrument(skip_all)]
    async fn list_pod_sandbox(
        &self,
        request: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        let encoded_items = self
            .pods()
            .list_encoded(request.into_inner().filter.as_ref())
            .await?;
        Ok(Response::new(ListPodSandboxResponse {
            items: Vec::new(),
            encoded_items,
        }))
    }

    type StreamPodSandboxesStream = ResultStream<StreamPodSandboxesResponse>;

    #[instrument(skip_all)]
    async fn stream_pod_sandboxes(
        &self,
        request: Request<StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let items = self
            .pods()
            .list(request.into_inner().filter.as_ref())
            .await?;
        Ok(Response::new(chunked(items, |pod_sandboxes| {
            StreamPodSandboxesResponse { pod_sandboxes }
        })))
    }

    #[instrument(skip_all, fields(pod_id = %request.get_ref().pod_sandbox_id, container_id = tracing::field::Empty))]
    async fn create_container(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let request = request.into_inner();
        let sandbox = self.pods().sandbox_async(&request.pod_sandbox_id).await?;
        let id = self.daemon.containers.create(request, sandbox).await?;
        tracing::Span::current().record("container_id", id.as_str());
        Ok(Response::new(CreateContainerResponse { container_id: id }))
    }

    #[instrument(skip_all, fields(container_id = %request.get_ref().container_id))]
    async fn start_container(
        &self,
        request: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        self.daemon
            .containers
            .start_container(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(StartContainerResponse {}))
    }

    #[instrument(skip_all, fields(container_id = %request.get_ref().container_id))]
    async fn stop_container(
        &self,
        request: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        let req = request.into_inner();
        self.daemon
            .containers
            .stop(&req.container_id, req.timeout)
            .await?;
        Ok(Response::new(StopContainerResponse {}))
    }

    #[instrument(skip_all, fields(container_id = %request.get_ref().container_id))]
    async fn remove_container(
        &self,
        request: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        self.daemon
            .containers
            .remove(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(RemoveContainerResponse {}))
    }

    #[instrument(skip_all)]
    async fn list_containers(
        &self,
        request: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let encoded_containers = self
            .daemon
            .containers
            .list_encoded(request.into_inner().filter)
            .await?;
        Ok(Response::new(ListContainersResponse {
            containers: Vec::new(),
            encoded_containers,
        }))
    }

    type StreamContainersStream = ResultStream<StreamContainersResponse>;

    #[instrument(skip_all)]
    async fn stream_containers(
        &self,
        request: Request<StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        let items = self
            .daemon
            .containers
            .list(request.into_inner().filter)
            .await?;
        Ok(Response::new(chunked(items, |containers| {
            StreamContainersResponse { containers }
        })))
    }

    #[instrument(skip_all, fields(container_id = %request.get_ref().container_id))]
    async fn container_status(
        &self,
        request: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(
            self.daemon
                .containers
                .status(&req.container_id, req.verbose)
                .await?,
        ))
    }

    #[instrument(skip_all, fields(container_id = %request.get_ref().container_id))]
    async fn update_container_resources(
        &self,
        request: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        let req = request.into_inner();
        let linux = req
            .linux
            .ok_or_else(|| Status::invalid_argument("linux: missing the resources to apply"))?;
        self.daemon
            .containers
            .update(&req.container_id, linux)
            .await?;
        Ok(Response::new(UpdateContainerResourcesResponse {}))
    }

    #[instrument(skip_all, fields(container_id = %request.get_ref().container_id))]
    async fn reopen_container_log(
        &self,
        request: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        self.daemon
            .containers
            .reopen_log(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(ReopenContainerLogResponse {}))
    }

    #[instrument(skip_all, fields(container_id = %request.get_ref().container_id))]
    async fn exec_sync(
        &self,
        request: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(
            self.daemon
                .containers
                .exec_sync(&req.container_id, req.cmd, req.timeout)
                .await?,
        ))
    }

    #[instrument(skip_all, fields(container_id = %request.get_ref().container_id))]
    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let mut req = request.into_inner();
        if req.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd: must not be empty"));
        }
        check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        req.container_id = self
            .running_container(&req.container_id, "exec into")
            .await?;
        let url = self
            .daemon
            .streaming
            .exec_url(&req)
            .map_err(|e| Status::from(crate::error::CriError::from(e)))?;
        Ok(Response::new(ExecResponse { url }))
    }

    #[instrument(skip_all, fields(container_id = %request.get_ref().container_id))]
    async fn attach(
        &self,
        request: Request<AttachRequest>,
    ) -> Result<Response<AttachResponse>, Status> {
        let mut req = request.into_inner();
        check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        req.container_id = self
            .running_container(&req.container_id, "attach to")
            .await?;
        let url = self
            .daemon
            .streaming
            .attach_url(&req)
            .map_err(|e| Status::from(crate::error::CriError::from(e)))?;
        Ok(Response::new(AttachResponse { url }))
    }

    #[instrument(skip_all, fields(pod_id = %request.get_ref().pod_sandbox_id))]
    async fn port_forward(
        &self,
        request: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        let mut req = request.into_inner();
        let sandbox = self.pods().sandbox_async(&req.pod_sandbox_id).await?;
        // The record says stopped before the pause is gone (and after a pause that died).
        if sandbox.state != crate::pod::SandboxState::Ready
            || !self.pods().pause_alive_async(&sandbox).await
        {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready; port-forward needs a running pod",
                sandbox.id
            )));
        }
        if let Some(bad) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Status::invalid_argument(format!(
                "port: {bad} is not a TCP port (1-65535)"
            )));
        }
        req.pod_sandbox_id = sandbox.id;
        let url = self
            .daemon
            .streaming
            .port_forward_url(&req)
            .map_err(|e| Status::from(crate::error::CriError::from(e)))?;
        Ok(Response::new(PortForwardResponse { url }))
    }

    #[instrument(skip_all, fields(container_id = %request.get_ref().container_id))]
    async fn container_stats(
        &self,
        request: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        let stats = self
            .stats
            .container(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(ContainerStatsResponse { stats: Some(stats) }))
    }

    #[instrument(skip_all)]
    async fn list_container_stats(
        &self,
        request: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        let stats = self.stats.containers(request.into_inner().filter).await?;
        Ok(Response::new(ListContainerStatsResponse { stats }))
    }

    type StreamContainerStatsStream = ResultStream<StreamContainerStatsResponse>;

    #[instrument(skip_all)]
    async fn stream_container_stats(
        &self,
        request: Request<StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        let stats = self.stats.containers(request.into_inner().filter).await?;
        Ok(Response::new(chunked(stats, |container_stats| {
            StreamContainerStatsResponse { container_stats }
        })))
    }

    #[instrument(skip_all, fields(pod_id = %request.get_ref().pod_sandbox_id))]
    async fn pod_sandbox_stats(
        &self,
        request: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        let stats = self.stats.pod(&request.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    #[instrument(skip_all)]
    async fn list_pod_sandbox_stats(
        &self,
        request: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        let stats = self.stats.pods(request.into_inner().filter).await?;
        Ok(Response::new(ListPodSandboxStatsResponse { stats }))
    }

    type StreamPodSandboxStatsStream = ResultStream<StreamPodSandboxStatsResponse>;

    #[instrument(skip_all)]
    async fn stream_pod_sandbox_stats(
        &self,
        request: Request<StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let stats = self.stats.pods(request.into_inner().filter).await?;
        Ok(Response::new(chunked(stats, |pod_sandbox_stats| {
            StreamPodSandboxStatsResponse { pod_sandbox_stats }
        })))
    }

    #[instrument(skip_all)]
    async fn update_runtime_config(
        &self,
        request: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        let cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        self.pods().set_pod_cidr(&cidr).await?;
        Ok(Response::new(UpdateRuntimeConfigResponse {}))
    }

    #[instrument(skip_all)]
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let verbose = request.into_inner().verbose;
        Ok(Response::new(self.daemon.status(verbose).await))
    }

    #[instrument(skip_all, fields(container_id = %request.get_ref().container_id))]
    async fn checkpoint_container(
        &self,
        request: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        crate::checkpoint::checkpoint(&self.daemon, request.into_inner()).await?;
        Ok(Response::new(CheckpointContainerResponse {}))
    }

    type GetContainerEventsStream = ResultStream<ContainerEventResponse>;

    #[instrument(skip_all)]
    async fn get_container_events(
        &self,
        _: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Ok(Response::new(self.daemon.events.subscribe()))
    }

    #[instrument(skip_all)]
    async fn list_metric_descriptors(
        &self,
        _: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(ListMetricDescriptorsResponse {
            descriptors: crate::cri_metrics::descriptors(),
        }))
    }

    #[instrument(skip_all)]
    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        let pod_metrics = crate::cri_metrics::pods(&self.daemon).await?;
        Ok(Response::new(ListPodSandboxMetricsResponse { pod_metrics }))
    }

    type StreamPodSandboxMetricsStream = ResultStream<StreamPodSandboxMetricsResponse>;

    #[instrument(skip_all)]
    async fn stream_pod_sandbox_metrics(
        &self,
        _: Request<StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        let metrics = crate::cri_metrics::pods(&self.daemon).await?;
        Ok(Response::new(chunked(metrics, |pod_sandbox_metrics| {
            StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            }
        })))
    }

    async fn runtime_config(
        &self,
        _: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        let driver = match self.daemon.config.cgroup_driver {
            crate::config::CgroupDriverName::Systemd => CgroupDriver::Systemd,
            crate::config::CgroupDriverName::Cgroupfs => CgroupDriver::Cgroupfs,
        };
        Ok(Response::new(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }

    #[instrument(skip_all, fields(pod_id = %request.get_ref().pod_sandbox_id))]
    async fn update_pod_sandbox_resources(
        &self,
        request: Request<UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<UpdatePodSandboxResourcesResponse>, Status> {
        let req = request.into_inner();
        self.pods()
            .update_resources(&req.pod_sandbox_id, req.resources, req.overhead)
            .await?;
        Ok(Response::new(UpdatePodSandboxResourcesResponse {}))
    }
}
