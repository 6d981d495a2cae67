//! SPDY/3.1 as the Kubernetes streaming protocols use it (`v4.channel.k8s.io` remotecommand,
//! `portforward.k8s.io`) over an upgraded HTTP/1.1 connection.
//!
//! Two layers:
//! - framing: [`Frame`], [`FrameEncoder`] / [`FrameDecoder`] (exact SPDY/3 byte layout) and
//!   the name/value [`Headers`] block, compressed with zlib primed by the SPDY/3 dictionary,
//!   one context per direction ([`HeaderCompressor`] / [`HeaderDecompressor`]);
//! - sessions: a [`Connection`] over any `AsyncRead + AsyncWrite` runs a reader and a writer
//!   task; [`Connection::accept`] yields streams the peer opens, [`Connection::open_stream`]
//!   opens one, and each [`Stream`] is `AsyncRead + AsyncWrite` with SPDY/3.1 flow control.
//!
//! ```no_run
//! # async fn serve(io: tokio::net::TcpStream) -> Result<(), Box<dyn std::error::Error>> {
//! use corral_spdy::{Connection, Headers};
//! use tokio::io::AsyncWriteExt;
//!
//! let conn = Connection::server(io);
//! while let Some(mut stream) = conn.accept().await {
//!     let kind = stream.headers().get("streamtype").unwrap_or_default().to_owned();
//!     stream.reply(Headers::new(), false)?;
//!     if kind == "stdout" {
//!         stream.write_all(b"hello\n").await?;
//!         stream.shutdown().await?;
//!     }
//! }
//! # Ok(()) }
//! ```

mod compression;
mod connection;
mod dictionary;
mod error;
mod frame;
mod headers;
mod session;
mod stream;

pub use compression::{HeaderCompressor, HeaderDecompressor};
pub use connection::{Config, Connection, PeerFlowControl, Role};
pub use dictionary::{SPDY3_DICTIONARY, SPDY3_DICTIONARY_ID};
pub use error::{CloseReason, SpdyError};
pub use frame::{
    Frame, FrameDecoder, FrameEncoder, GoAwayStatus, RstStatus, Setting, StreamId, FLAG_FIN,
    FLAG_SETTINGS_CLEAR_SETTINGS, FLAG_UNIDIRECTIONAL, FRAME_HEADER_LEN, MAX_FRAME_PAYLOAD,
    MAX_STREAM_ID, MAX_WINDOW_DELTA, SPDY_VERSION,
};
pub use headers::{Headers, MAX_HEADER_BLOCK_LEN};
pub use stream::Stream;
