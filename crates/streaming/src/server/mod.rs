//! The streaming server: an HTTP/1.1 listener whose `/exec`, `/attach` and `/portforward`
//! URLs (one per CRI request, behind a single-use token) upgrade to SPDY/3.1 or WebSocket.

mod http;
mod port_forward;
mod remote_command;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cri_proto::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::backend::Backend;
use crate::error::StreamingError;
use crate::token::{CachedRequest, TokenCache};

/// Settings of a [`StreamingServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Host written into URLs. Default: the listening address, loopback if unspecified.
    pub advertise_ip: Option<IpAddr>,
    /// How long a URL stays valid unused (default 1 minute).
    pub token_ttl: Duration,
    /// How many URLs may be pending at once (default 1000).
    pub max_pending_requests: usize,
    /// How long the client may take to open its SPDY streams (default 30 s).
    pub stream_creation_timeout: Duration,
    /// How long output is still forwarded after the backend has finished (default 10 s).
    pub output_drain_timeout: Duration,
}

impl ServerConfig {
    /// The defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        ServerConfig {
            listen,
            advertise_ip: None,
            token_ttl: Duration::from_secs(60),
            max_pending_requests: 1000,
            stream_creation_timeout: Duration::from_secs(30),
            output_drain_timeout: Duration::from_secs(10),
        }
    }
}

/// What every session needs.
pub(crate) struct SessionContext {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) stream_creation_timeout: Duration,
    pub(crate) output_drain_timeout: Duration,
}

/// State shared by the listener, its connections and their sessions.
pub(crate) struct ServerShared {
    pub(crate) tokens: TokenCache,
    pub(crate) sessions: Arc<SessionContext>,
    pub(crate) tasks: TaskTracker,
}

/// A running streaming server. Dropping it stops it without waiting; prefer
/// [`StreamingServer::shutdown`].
pub struct StreamingServer {
    shared: Arc<ServerShared>,
    local_addr: SocketAddr,
    base_url: String,
}

impl std::fmt::Debug for StreamingServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingServer")
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl StreamingServer {
    /// Starts a server on `addr` (port 0 for a free port) with the default settings.
    pub async fn start(
        addr: SocketAddr,
        backend: Arc<dyn Backend>,
    ) -> Result<StreamingServer, StreamingError> {
        StreamingServer::start_with_config(ServerConfig::new(addr), backend).await
    }

    /// Starts a server with `config`. Must be called inside a tokio runtime.
    pub async fn start_with_config(
        config: ServerConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<StreamingServer, StreamingError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StreamingError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StreamingError::Bind {
                addr: config.listen,
                source,
            })?;
        let host = config
            .advertise_ip
            .unwrap_or_else(|| reachable_ip(local_addr.ip()));
        let base_url = format!("http://{}", SocketAddr::new(host, local_addr.port()));
        let shared = Arc::new(ServerShared {
            tokens: TokenCache::new(config.token_ttl, config.max_pending_requests),
            sessions: Arc::new(SessionContext {
                backend,
                shutdown: CancellationToken::new(),
                stream_creation_timeout: config.stream_creation_timeout,
                output_drain_timeout: config.output_drain_timeout,
            }),
            tasks: TaskTracker::new(),
        });
        shared
            .tasks
            .spawn(accept_connections(listener, shared.clone()));
        info!(%local_addr, %base_url, "streaming server listening");
        Ok(StreamingServer {
            shared,
            local_addr,
            base_url,
        })
    }

    /// `http://HOST:PORT`, the prefix of every URL this server hands out.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL serving `request` (single use, valid for the token TTL).
    pub fn exec_url(&self, request: &ExecRequest) -> Result<String, StreamingError> {
        let streams = [request.stdin, request.stdout, request.stderr, request.tty];
        validate_command("exec", &request.container_id, streams)?;
        if request.cmd.is_empty() {
            return Err(invalid("exec", "cmd is empty"));
        }
        self.url("exec", CachedRequest::Exec(request.clone()))
    }

    /// The URL serving `request` (single use, valid for the token TTL).
    pub fn attach_url(&self, request: &AttachRequest) -> Result<String, StreamingError> {
        let streams = [request.stdin, request.stdout, request.stderr, request.tty];
        validate_command("attach", &request.container_id, streams)?;
        self.url("attach", CachedRequest::Attach(request.clone()))
    }

    /// The URL serving `request` (single use, valid for the token TTL).
    pub fn port_forward_url(&self, request: &PortForwardRequest) -> Result<String, StreamingError> {
        if request.pod_sandbox_id.is_empty() {
            return Err(invalid("portforward", "missing required pod_sandbox_id"));
        }
        if request
            .port
            .iter()
            .any(|port| u16::try_from(*port).map_or(true, |p| p == 0))
        {
            return Err(invalid("portforward", "ports must be in 1-65535"));
        }
        self.url("portforward", CachedRequest::PortForward(request.clone()))
    }

    fn url(&self, endpoint: &str, request: CachedRequest) -> Result<String, StreamingError> {
        let token = self.shared.tokens.insert(request)?;
        Ok(format!("{}/{endpoint}/{token}", self.base_url))
    }

    /// Stops listening, tears down every stream (backend futures are dropped) and waits until
    /// all of the server's tasks have ended. Calling it again returns at once.
    pub async fn shutdown(&self) {
        debug!("streaming server shutting down");
        self.shared.sessions.shutdown.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        info!("streaming server stopped");
    }
}

impl Drop for StreamingServer {
    fn drop(&mut self) {
        self.shared.sessions.shutdown.cancel();
        self.shared.tasks.close();
    }
}

fn invalid(kind: &'static str, reason: &'static str) -> StreamingError {
    StreamingError::InvalidRequest { kind, reason }
}

/// kubelet's checks of Exec and Attach requests.
/// What exec and attach requests share: sensible streams (`[stdin, stdout, stderr, tty]`) and
/// a container id.
fn validate_command(
    kind: &'static str,
    container_id: &str,
    [stdin, stdout, stderr, tty]: [bool; 4],
) -> Result<(), StreamingError> {
    validate_streams(kind, stdin, stdout, stderr, tty)?;
    if container_id.is_empty() {
        return Err(invalid(kind, "missing required container_id"));
    }
    Ok(())
}

fn validate_streams(
    kind: &'static str,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> Result<(), StreamingError> {
    if tty && stderr {
        return Err(invalid(kind, "tty and stderr cannot both be true"));
    }
    if !stdin && !stdout && !stderr {
        return Err(invalid(
            kind,
            "one of stdin, stdout, and stderr must be set",
        ));
    }
    Ok(())
}

/// The listening IP, or loopback of the same family when it is unspecified.
fn reachable_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

async fn accept_connections(listener: TcpListener, shared: Arc<ServerShared>) {
    let shutdown = shared.sessions.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                shared
                    .tasks
                    .spawn(http::serve_connection(tcp, peer, shared.clone()));
            }
            Err(err) => {
                // Out of descriptors and the like: back off instead of spinning.
                warn!(%err, "accepting a streaming connection failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    debug!("streaming listener closed");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_advertise_loopback() {
        assert_eq!(
            reachable_ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            reachable_ip(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
        let node: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(reachable_ip(node), node);
    }

    #[test]
    fn stream_flags_are_validated_like_kubelet() {
        assert!(validate_streams("exec", true, true, false, true).is_ok());
        assert!(matches!(
            validate_streams("exec", false, true, true, true),
            Err(StreamingError::InvalidRequest { kind: "exec", .. })
        ));
        assert!(validate_streams("attach", false, false, false, false).is_err());
    }
}
