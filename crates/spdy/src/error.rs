//! The crate's error type.

use std::fmt;
use std::io;

use corral_error_kind::ErrorKind;

use crate::frame::{GoAwayStatus, RstStatus, StreamId};

/// Why a connection stopped carrying frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// This side closed it ([`Connection::close`](crate::Connection::close) or drop).
    Local,
    /// The peer sent GOAWAY and then closed the transport.
    PeerGoAway {
        /// The last stream id the peer says it processed.
        last_good_stream_id: StreamId,
        /// The peer's reason.
        status: GoAwayStatus,
    },
    /// The transport reached end-of-file without a GOAWAY first.
    PeerEof,
    /// A protocol violation or an I/O failure ended the session.
    Failed(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => write!(f, "closed locally"),
            CloseReason::PeerGoAway {
                last_good_stream_id,
                status,
            } => write!(
                f,
                "peer sent GOAWAY ({status}, last good stream {last_good_stream_id})"
            ),
            CloseReason::PeerEof => write!(f, "peer closed the transport"),
            CloseReason::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

/// Errors from framing, header compression and the connection layer.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// A frame's bytes do not follow the SPDY/3 layout.
    #[error("malformed {frame} frame: {reason}")]
    MalformedFrame {
        /// Frame type name (`SYN_STREAM`, `DATA`, ...).
        frame: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A control frame carries a version other than 3.
    #[error("unsupported SPDY version {version} in control frame")]
    UnsupportedVersion {
        /// The version found on the wire.
        version: u16,
    },
    /// A frame to encode does not fit the 24-bit length field.
    #[error("{frame} frame payload of {len} bytes exceeds the 24-bit length field")]
    FrameTooLarge {
        /// Frame type name.
        frame: &'static str,
        /// Payload length that was requested.
        len: usize,
    },
    /// A decompressed name/value header block is malformed.
    #[error("invalid name/value header block: {reason}")]
    InvalidHeaderBlock {
        /// What is wrong with it.
        reason: String,
    },
    /// A header to send cannot be represented in a name/value block.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// zlib failed while compressing a header block.
    #[error("header compression failed: {reason}")]
    Compression {
        /// zlib's message.
        reason: String,
    },
    /// zlib failed while decompressing a header block.
    #[error("header decompression failed: {reason}")]
    Decompression {
        /// zlib's message or what was wrong with the stream.
        reason: String,
    },
    /// The stream was reset with RST_STREAM.
    #[error("stream {stream_id} was reset by {}: {status}", if *.by_peer { "the peer" } else { "this side" })]
    StreamReset {
        /// The stream.
        stream_id: StreamId,
        /// The RST_STREAM status code.
        status: RstStatus,
        /// Whether the peer sent the RST_STREAM.
        by_peer: bool,
    },
    /// The operation is not allowed in the stream's current state.
    #[error("cannot {op} on stream {stream_id}: {reason}")]
    InvalidStreamState {
        /// The stream.
        stream_id: StreamId,
        /// The attempted operation.
        op: &'static str,
        /// Why it is not allowed.
        reason: &'static str,
    },
    /// No new stream can be opened: a GOAWAY was sent or received.
    #[error("cannot open a stream: the session is going away")]
    GoingAway,
    /// All 31-bit stream ids of this side have been used.
    #[error("cannot open a stream: stream ids exhausted")]
    StreamIdsExhausted,
    /// The connection is closed.
    #[error("SPDY connection {0}")]
    ConnectionClosed(CloseReason),
}

impl SpdyError {
    /// Whose fault the error is: frames and headers the peer sent that break the protocol are
    /// the peer's (`InvalidArgument`); a stream or session that went away is `Unavailable`; a
    /// failure of this side (compression, running out of stream ids) is `Internal`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SpdyError::MalformedFrame { .. }
            | SpdyError::UnsupportedVersion { .. }
            | SpdyError::InvalidHeaderBlock { .. }
            | SpdyError::Decompression { .. }
            | SpdyError::InvalidHeader { .. }
            | SpdyError::FrameTooLarge { .. } => ErrorKind::InvalidArgument,
            SpdyError::StreamReset { .. }
            | SpdyError::ConnectionClosed(_)
            | SpdyError::GoingAway => ErrorKind::Unavailable,
            SpdyError::InvalidStreamState { .. } => ErrorKind::FailedPrecondition,
            SpdyError::Compression { .. } | SpdyError::StreamIdsExhausted => ErrorKind::Internal,
        }
    }

    pub(crate) fn malformed(frame: &'static str, reason: impl Into<String>) -> Self {
        SpdyError::MalformedFrame {
            frame,
            reason: reason.into(),
        }
    }

    pub(crate) fn header_block(reason: impl Into<String>) -> Self {
        SpdyError::InvalidHeaderBlock {
            reason: reason.into(),
        }
    }
}

impl From<SpdyError> for io::Error {
    fn from(err: SpdyError) -> Self {
        let kind = match &err {
            SpdyError::StreamReset { .. } => io::ErrorKind::ConnectionReset,
            SpdyError::ConnectionClosed(_) => io::ErrorKind::ConnectionAborted,
            SpdyError::InvalidStreamState { .. } => io::ErrorKind::BrokenPipe,
            SpdyError::MalformedFrame { .. }
            | SpdyError::UnsupportedVersion { .. }
            | SpdyError::InvalidHeaderBlock { .. }
            | SpdyError::Decompression { .. } => io::ErrorKind::InvalidData,
            SpdyError::InvalidHeader { .. } | SpdyError::FrameTooLarge { .. } => {
                io::ErrorKind::InvalidInput
            }
            SpdyError::Compression { .. }
            | SpdyError::GoingAway
            | SpdyError::StreamIdsExhausted => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}
