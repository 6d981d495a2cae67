//! The connection to corrald: CRI clients over its unix socket, ID prefix resolution, and
//! how errors are reported.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use cri_proto::v1::image_service_client::ImageServiceClient;
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use cri_proto::v1::{
    ContainerFilter, ListContainersRequest, ListPodSandboxRequest, PodSandboxFilter,
};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::ids::resolve_prefix;

/// Where corrald listens unless `--socket` or `CORRAL_SOCKET` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/corral/corral.sock";

/// How long to wait for the socket to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The two CRI services of one corrald.
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    /// corral's own administration API on the same socket.
    pub admin: cri_proto::admin::admin_client::AdminClient<Channel>,
    /// corral's explanations of pods and mounts (`explain`, `explain-mount`).
    pub explain: cri_proto::admin::explain_client::ExplainClient<Channel>,
}

/// A socket path as given by the user; crictl-style `unix://` endpoints are accepted too.
pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

impl Cri {
    /// Connects to corrald's socket at `socket`.
    pub async fn connect(socket: &Path) -> Result<Self> {
        let path = socket.to_path_buf();
        // The URI is required by the HTTP/2 layer but never resolved: the connector below
        // always dials the unix socket.
        let channel = Endpoint::from_static("http://corrald.local")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|err| connect_error(socket, &err))?;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel.clone()),
            admin: cri_proto::admin::admin_client::AdminClient::new(channel.clone()),
            explain: cri_proto::admin::explain_client::ExplainClient::new(channel),
        })
    }

    /// The full ID of the pod sandbox that `prefix` names (see [`resolve_prefix`]).
    pub async fn resolve_pod_id(&mut self, prefix: &str) -> Result<String> {
        anyhow::ensure!(!prefix.is_empty(), "pod sandbox ID cannot be empty");
        // The id filter matches exactly on some runtimes and by prefix on others: if it finds
        // nothing, match against the full list.
        for filter_id in [prefix, ""] {
            let request = ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    id: filter_id.to_string(),
                    ..Default::default()
                }),
            };
            let items = self
                .runtime
                .list_pod_sandbox(request)
                .await?
                .into_inner()
                .items;
            if let Some(id) = resolve_prefix(prefix, items.iter().map(|p| p.id.as_str()))? {
                return Ok(id);
            }
        }
        Ok(prefix.to_string())
    }

    /// The full ID of the container that `prefix` names (see [`resolve_prefix`]).
    pub async fn resolve_container_id(&mut self, prefix: &str) -> Result<String> {
        anyhow::ensure!(!prefix.is_empty(), "container ID cannot be empty");
        for filter_id in [prefix, ""] {
            let request = ListContainersRequest {
                filter: Some(ContainerFilter {
                    id: filter_id.to_string(),
                    ..Default::default()
                }),
            };
            let containers = self
                .runtime
                .list_containers(request)
                .await?
                .into_inner()
                .containers;
            if let Some(id) = resolve_prefix(prefix, containers.iter().map(|c| c.id.as_str()))? {
                return Ok(id);
            }
        }
        Ok(prefix.to_string())
    }
}

/// Explains a failed connection: which socket, the OS's reason, and what to check.
fn connect_error(socket: &Path, err: &tonic::transport::Error) -> anyhow::Error {
    let mut reason = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        reason = cause.to_string();
        source = cause.source();
    }
    anyhow::anyhow!(
        "cannot connect to corrald at {}: {reason} (is corrald running?)",
        socket.display()
    )
}

/// The line printed after `error: ` when a command fails. A gRPC status reads
/// `<code>: <message>`; other errors show their context chain.
pub fn describe_error(err: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in err.chain() {
        if let Some(status) = cause.downcast_ref::<tonic::Status>() {
            parts.push(describe_status(status));
            break;
        }
        parts.push(cause.to_string());
    }
    parts.join(": ")
}

/// Only a status the client made itself (a transport failure, which carries its cause as the
/// source) asks whether corrald runs: an Unavailable that corrald sent (a registry it could not
/// reach, say) proves corrald is up.
fn describe_status(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if status.code() == tonic::Code::Unavailable && std::error::Error::source(status).is_some() {
        text.push_str(" (is corrald running?)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_accept_unix_endpoints() {
        assert_eq!(socket_path("/run/x.sock"), PathBuf::from("/run/x.sock"));
        assert_eq!(
            socket_path("unix:///run/x.sock"),
            PathBuf::from("/run/x.sock")
        );
    }

    #[test]
    fn grpc_errors_read_code_then_message() {
        let err = anyhow::Error::new(tonic::Status::not_found("pod \"abc\" not found"));
        assert_eq!(describe_error(&err), "NotFound: pod \"abc\" not found");
    }

    #[test]
    fn context_is_kept_before_the_status() {
        let err =
            anyhow::Error::new(tonic::Status::invalid_argument("bad")).context("removing pod abc");
        assert_eq!(
            describe_error(&err),
            "removing pod abc: InvalidArgument: bad"
        );
    }

    #[test]
    fn other_errors_show_their_chain() {
        let err = anyhow::anyhow!("root cause").context("outer");
        assert_eq!(describe_error(&err), "outer: root cause");
    }

    #[test]
    fn unavailable_from_corrald_does_not_ask_whether_it_runs() {
        let err = anyhow::Error::new(tonic::Status::unavailable(
            "pull docker.io/library/busybox: registry unreachable",
        ));
        assert_eq!(
            describe_error(&err),
            "Unavailable: pull docker.io/library/busybox: registry unreachable"
        );
    }

    #[test]
    fn a_broken_connection_asks_whether_corrald_runs() {
        // tonic's client marks a status it made from a transport failure with that failure as
        // the source.
        let mut status = tonic::Status::unavailable("error trying to connect");
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        status.set_source(std::sync::Arc::new(io));
        let message = describe_error(&anyhow::Error::new(status));
        assert!(message.ends_with("(is corrald running?)"), "{message}");
    }

    #[tokio::test]
    async fn missing_socket_names_the_path_and_hints() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("nothing.sock");
        let err = match Cri::connect(&socket).await {
            Ok(_) => panic!("nothing listens there"),
            Err(err) => err,
        };
        let message = describe_error(&err);
        assert!(message.contains(&socket.display().to_string()), "{message}");
        assert!(message.contains("is corrald running?"), "{message}");
        assert!(message.contains("No such file or directory"), "{message}");
    }
}
