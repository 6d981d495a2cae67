//! What the streaming server needs from the runtime: running commands in containers,
//! attaching to them, and connecting into a pod's network namespace.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// A boxed, sendable future (what [`Backend`] methods return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A byte source handed across the [`Backend`] boundary.
pub type BoxReader = Box<dyn AsyncRead + Send + Unpin>;

/// A byte sink handed across the [`Backend`] boundary.
pub type BoxWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A terminal size, as carried on the resize stream (`{"Width":80,"Height":24}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width", alias = "width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height", alias = "height")]
    pub height: u16,
}

/// The client's side of a remote command: each field is present when the request asked for
/// it.
///
/// On the server, the [`Backend`] owns these for the duration of its future: reading `stdin`
/// gives what the client sends (end-of-file when the client closes it), bytes written to
/// `stdout`/`stderr` reach the client, and `resize` yields the client's terminal sizes (only
/// with a tty). Dropping `stdout`/`stderr` (or shutting them down) ends those streams.
///
/// In [`client`](crate::client) calls the same struct carries the local ends: `stdin` is sent
/// to the command, its output is written to `stdout`/`stderr`, and sizes from `resize` are
/// sent to the server.
#[derive(Default)]
pub struct StreamIo {
    /// The command's standard input.
    pub stdin: Option<BoxReader>,
    /// The command's standard output (with a tty, also its standard error).
    pub stdout: Option<BoxWriter>,
    /// The command's standard error (never with a tty).
    pub stderr: Option<BoxWriter>,
    /// Terminal size changes (only with a tty).
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

impl fmt::Debug for StreamIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamIo")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
            .finish()
    }
}

/// Why a [`Backend`] call failed. The message reaches the client (on the error stream).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The container or pod sandbox does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// `container` or `pod sandbox`.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// The container is not running.
    #[error("container {id} is not running")]
    NotRunning {
        /// The container id.
        id: String,
    },
    /// An I/O operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Any other failure.
    #[error("{0}")]
    Other(String),
}

/// The runtime operations behind the streaming endpoints; corrald implements it.
///
/// The futures are dropped when the client goes away or the server shuts down: an
/// implementation must release what it holds on drop (for processes, `kill_on_drop`).
pub trait Backend: Send + Sync + 'static {
    /// Runs `cmd` in the container with the client's streams; resolves to the exit code once
    /// the command has exited and its output has been written.
    fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        io: StreamIo,
    ) -> BoxFuture<'static, Result<i32, BackendError>>;

    /// Attaches the client's streams to the running container's stdio; resolves when the
    /// attachment ends (the container exited, or its streams closed).
    fn attach(
        &self,
        container_id: &str,
        tty: bool,
        io: StreamIo,
    ) -> BoxFuture<'static, Result<(), BackendError>>;

    /// A connection to `localhost:port` inside the pod's network namespace.
    fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> BoxFuture<'static, Result<tokio::net::TcpStream, BackendError>>;
}
