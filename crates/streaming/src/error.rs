//! The crate's error type.

use std::io;
use std::net::SocketAddr;

use corral_error_kind::ErrorKind;
use corral_spdy::SpdyError;

/// Errors of the streaming server and client.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    /// The server could not listen on its address.
    #[error("binding the streaming server to {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// A CRI Exec/Attach/PortForward request cannot be served.
    #[error("invalid {kind} request: {reason}")]
    InvalidRequest {
        /// `exec`, `attach` or `portforward`.
        kind: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The system's random source failed.
    #[error("drawing random bytes for {what}: {reason}")]
    Random {
        /// What they were for (`a stream token`, `a WebSocket key`).
        what: &'static str,
        /// The random source's error.
        reason: String,
    },
    /// Too many URLs were handed out and not used yet.
    #[error("too many pending stream requests (limit {limit})")]
    TooManyPendingRequests {
        /// The configured limit.
        limit: usize,
    },
    /// A streaming URL given to the client cannot be used.
    #[error("invalid streaming URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done (`connecting to 127.0.0.1:1234`, ...).
        op: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The HTTP exchange before the upgrade failed.
    #[error("HTTP {op} for {url}: {source}")]
    Http {
        /// What was being done.
        op: &'static str,
        /// The streaming URL.
        url: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// The server answered the upgrade request with something other than 101.
    #[error("upgrading {url} refused with HTTP {status}: {body}")]
    UpgradeRefused {
        /// The streaming URL.
        url: String,
        /// The HTTP status code (404 for an unknown, used or expired token).
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The server's 101 response does not complete the handshake.
    #[error("upgrading {url}: {reason}")]
    Handshake {
        /// The streaming URL.
        url: String,
        /// What is wrong with the response.
        reason: String,
    },
    /// The SPDY session failed.
    #[error("SPDY {op}: {source}")]
    Spdy {
        /// What was being done.
        op: &'static str,
        /// The SPDY error.
        source: SpdyError,
    },
    /// The server did not do something in time.
    #[error("timed out {what}")]
    Timeout {
        /// What was being waited for.
        what: &'static str,
    },
    /// The remote command failed without an exit code (the server's message).
    #[error("remote command failed: {message}")]
    RemoteCommand {
        /// The server's message.
        message: String,
    },
    /// The server reported an error on a port-forward connection.
    #[error("port-forward to port {port}: {message}")]
    PortForward {
        /// The remote port.
        port: u16,
        /// The server's message (or why the connection cannot be opened).
        message: String,
    },
}

impl StreamingError {
    /// Whose fault the error is: a request or URL that cannot be served is the caller's
    /// (`InvalidArgument`); too many unused URLs is `ResourceExhausted`; a server that refused
    /// the upgrade (an unknown or expired token) is `NotFound`; a peer that went away or timed
    /// out is `Unavailable`; the rest is the host's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StreamingError::InvalidRequest { .. } | StreamingError::InvalidUrl { .. } => {
                ErrorKind::InvalidArgument
            }
            StreamingError::TooManyPendingRequests { .. } => ErrorKind::ResourceExhausted,
            StreamingError::UpgradeRefused { status: 404, .. } => ErrorKind::NotFound,
            StreamingError::Spdy { source, .. } => source.kind(),
            StreamingError::Http { .. }
            | StreamingError::Handshake { .. }
            | StreamingError::Timeout { .. }
            | StreamingError::UpgradeRefused { .. }
            | StreamingError::PortForward { .. } => ErrorKind::Unavailable,
            StreamingError::Io { source, .. } => ErrorKind::of_io(source),
            StreamingError::Bind { .. }
            | StreamingError::Random { .. }
            | StreamingError::RemoteCommand { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(op: impl Into<String>, source: io::Error) -> Self {
        StreamingError::Io {
            op: op.into(),
            source,
        }
    }

    pub(crate) fn spdy(op: &'static str) -> impl FnOnce(SpdyError) -> Self {
        move |source| StreamingError::Spdy { op, source }
    }
}
