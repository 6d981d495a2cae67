//! The CRI streaming server and its client.
//!
//! The CRI calls `Exec`, `Attach` and `PortForward` only return a URL; the stream itself is
//! served over HTTP at that URL, as kubelet's own streaming server does it:
//!
//! - [`StreamingServer`] listens on a TCP address and hands out absolute URLs
//!   `http://HOST:PORT/{exec|attach|portforward}/<token>` behind random, single-use tokens
//!   that expire after a minute unused (an unknown, used or expired token gets 404);
//! - a request to such a URL upgrades to **SPDY/3.1** (`X-Stream-Protocol-Version`:
//!   `v4.channel.k8s.io` … `channel.k8s.io` for exec/attach, `portforward.k8s.io`) or to
//!   **WebSocket** (`v5.channel.k8s.io`, `v4.channel.k8s.io`, the base64 variants, and
//!   `v4.channel.k8s.io` port-forward with two channels per port), and port-forward's SPDY
//!   session tunnelled through a WebSocket (`SPDY/3.1+portforward.k8s.io`, kubectl >= 1.30);
//! - the streams are handed to a [`Backend`] (corrald's containers), and the command's end
//!   is reported on the error stream as a Kubernetes `Status`, so clients print the right
//!   exit code.
//!
//! [`client`] speaks the same protocols, for `corralctl exec`, `attach` and `port-forward`.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn demo(backend: Arc<dyn corral_streaming::Backend>) -> Result<(), corral_streaming::StreamingError> {
//! use corral_streaming::client::{self, Protocol};
//! use corral_streaming::{StreamIo, StreamingServer};
//!
//! let server = StreamingServer::start("127.0.0.1:0".parse().unwrap(), backend).await?;
//! let url = server.exec_url(&cri_proto::v1::ExecRequest {
//!     container_id: "c1".into(),
//!     cmd: vec!["echo".into(), "hi".into()],
//!     stdout: true,
//!     ..Default::default()
//! })?;
//! // Any AsyncWrite: a terminal, a file, a pipe.
//! let (output, _reader) = tokio::io::duplex(64 * 1024);
//! let io = StreamIo { stdout: Some(Box::new(output)), ..StreamIo::default() };
//! let exit_code = client::exec(&url, Protocol::Spdy, false, io).await?;
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod backend;
pub mod client;
mod error;
mod protocol;
pub mod pump;
mod server;
mod token;
mod tunnel;
mod websocket;

pub use backend::{Backend, BackendError, BoxFuture, BoxReader, BoxWriter, StreamIo, TerminalSize};
pub use error::StreamingError;
pub use server::{ServerConfig, StreamingServer};
