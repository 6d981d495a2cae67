//! Accepting any HTTP/2 `:authority` on the CRI socket.
//!
//! gRPC clients that dial a unix socket put something in `:authority` that is not a URI
//! authority: kubelet 1.20's grpc-go and grpc-core (Python/C++/Ruby `grpcio`) send the socket
//! path (`/run/corral/corral.sock`), others send `localhost`, an empty value or none. h2 (under
//! tonic) resets every stream whose `:authority` does not parse as a URI authority, with
//! `PROTOCOL_ERROR`, and has no switch to allow it. The authority means nothing on a unix socket,
//! so [`AuthorityFix`] wraps each accepted connection below h2 and, in every header block the
//! client sends, replaces an `:authority` that does not parse with `localhost`.
//!
//! Header blocks are HPACK-compressed against a dynamic table that the client's encoder and the
//! server's decoder keep in step, so bytes cannot be patched in place. The wrapper decodes each
//! block (HEADERS plus its CONTINUATIONs) with `loona-hpack`'s decoder, which tracks the client's
//! table, and re-encodes every field as a literal *without indexing* (RFC 7541 §6.2.2), which
//! never touches h2's dynamic table: h2's table stays empty and both tables stay consistent
//! whatever the client does. The re-encoder is ours (a few lines; the crate's encoder indexes).
//! All other frames, and everything the server writes, pass through unchanged.
//!
//! The wrapper also watches the frames the server writes: an RST_STREAM or GOAWAY with an error
//! code (not NO_ERROR, CANCEL or REFUSED_STREAM) is logged at `warn` with the code, and a client
//! that does not speak HTTP/2 or sends a malformed header block is refused with a `warn` naming
//! the reason, so an operator sees why a client fails (h2 itself only logs at `debug`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

/// The client's connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// SETTINGS_MAX_FRAME_SIZE's initial value: the largest frame every peer accepts.
const MAX_FRAME: usize = 16_384;
/// SETTINGS_HEADER_TABLE_SIZE's initial value; h2 as tonic sets it up never announces another.
const HEADER_TABLE_SIZE: usize = 4_096;
/// Largest header block accepted (tonic limits the decoded list to far less).
const MAX_BLOCK: usize = 1024 * 1024;
/// What an `:authority` that is not a URI authority becomes.
const LOCAL_AUTHORITY: &[u8] = b"localhost";

/// Why a connection is refused before h2 sees it.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("not an HTTP/2 client: the connection does not start with the HTTP/2 preface")]
    Preface,
    #[error("malformed HEADERS frame on stream {0}: shorter than its padding and priority fields")]
    ShortHeaders(u32),
    #[error("frame type {frame_type:#x} on stream {stream} where a CONTINUATION of stream {expected} was due")]
    ExpectedContinuation {
        frame_type: u8,
        stream: u32,
        expected: u32,
    },
    #[error("CONTINUATION frame on stream {0} without a HEADERS frame before it")]
    StrayContinuation(u32),
    #[error("header block on stream {0} is larger than {MAX_BLOCK} bytes")]
    BlockTooLarge(u32),
    #[error("header block on stream {stream} does not decode (HPACK): {reason}")]
    Hpack { stream: u32, reason: String },
}

/// A connection whose request headers are rewritten as the module doc says.
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: Rewriter,
    /// Rewritten bytes not yet handed to h2, from `pos`.
    out: Vec<u8>,
    pos: usize,
    eof: bool,
    watcher: ServerFrames,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            rewriter: Rewriter::new(),
            out: Vec::new(),
            pos: 0,
            eof: false,
            watcher: ServerFrames::default(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.pos);
                buf.put_slice(&this.out[this.pos..this.pos + n]);
                this.pos += n;
                if this.pos == this.out.len() {
                    this.out.clear();
                    this.pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            if read.filled().is_empty() {
                this.eof = true;
                continue;
            }
            if let Err(e) = this.rewriter.feed(read.filled(), &mut this.out) {
                tracing::warn!(error = %e, "CRI client refused");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.watcher.observe(&buf[..n]);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for AuthorityFix<UnixStream> {
    type ConnectInfo = <UnixStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// A HEADERS frame whose block continues in CONTINUATION frames.
struct OpenBlock {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The client-to-server byte stream: passes frames through, rewrites header blocks.
struct Rewriter {
    preface_seen: usize,
    /// Bytes of a frame not complete yet (a frame header, or a HEADERS/CONTINUATION frame).
    pending: Vec<u8>,
    /// Payload bytes of a passed-through frame still to come.
    passthrough: usize,
    open: Option<OpenBlock>,
    decoder: loona_hpack::Decoder<'static>,
}

impl Rewriter {
    fn new() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Rewriter {
            preface_seen: 0,
            pending: Vec::new(),
            passthrough: 0,
            open: None,
            decoder,
        }
    }

    /// Takes bytes read from the client, appends what h2 should read to `out`.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), AuthorityError> {
        while !input.is_empty() {
            if self.preface_seen < PREFACE.len() {
                let n = input.len().min(PREFACE.len() - self.preface_seen);
                if input[..n] != PREFACE[self.preface_seen..self.preface_seen + n] {
                    return Err(AuthorityError::Preface);
                }
                out.extend_from_slice(&input[..n]);
                self.preface_seen += n;
                input = &input[n..];
            } else if self.passthrough > 0 {
                let n = input.len().min(self.passthrough);
                out.extend_from_slice(&input[..n]);
                self.passthrough -= n;
                input = &input[n..];
            } else {
                self.pending.extend_from_slice(input);
                input = &[];
                self.drain(out)?;
            }
        }
        Ok(())
    }

    /// Handles the complete frames (and the start of a passed-through one) in `pending`.
    fn drain(&mut self, out: &mut Vec<u8>) -> Result<(), AuthorityError> {
        while self.pending.len() >= FRAME_HEADER {
            let header = &self.pending[..FRAME_HEADER];
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let (frame_type, flags) = (header[3], header[4]);
            let stream =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            if let Some(open) = &self.open {
                if frame_type != CONTINUATION {
                    return Err(AuthorityError::ExpectedContinuation {
                        frame_type,
                        stream,
                        expected: open.stream,
                    });
                }
            }
            if frame_type == HEADERS || frame_type == CONTINUATION {
                if len > MAX_BLOCK {
                    return Err(AuthorityError::BlockTooLarge(stream));
                }
                if self.pending.len() < FRAME_HEADER + len {
                    return Ok(());
                }
                let payload = self.pending[FRAME_HEADER..FRAME_HEADER + len].to_vec();
                self.pending.drain(..FRAME_HEADER + len);
                self.header_frame(frame_type, flags, stream, &payload, out)?;
            } else {
                let available = len.min(self.pending.len() - FRAME_HEADER);
                out.extend_from_slice(&self.pending[..FRAME_HEADER + available]);
                self.pending.drain(..FRAME_HEADER + available);
                self.passthrough = len - available;
                if self.passthrough > 0 {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn header_frame(
        &mut self,
        frame_type: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), AuthorityError> {
        let mut open = if frame_type == HEADERS {
            let mut rest = payload;
            let mut padding = 0;
            if flags & PADDED != 0 {
                let (&pad, tail) = rest
                    .split_first()
                    .ok_or(AuthorityError::ShortHeaders(stream))?;
                padding = usize::from(pad);
                rest = tail;
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                let fields = rest.get(..5).ok_or(AuthorityError::ShortHeaders(stream))?;
                priority = Some([fields[0], fields[1], fields[2], fields[3], fields[4]]);
                rest = &rest[5..];
            }
            let end = rest
                .len()
                .checked_sub(padding)
                .ok_or(AuthorityError::ShortHeaders(stream))?;
            OpenBlock {
                stream,
                flags,
                priority,
                fragment: rest[..end].to_vec(),
            }
        } else {
            let mut open = self
                .open
                .take()
                .filter(|open| open.stream == stream)
                .ok_or(AuthorityError::StrayContinuation(stream))?;
            if open.fragment.len() + payload.len() > MAX_BLOCK {
                return Err(AuthorityError::BlockTooLarge(stream));
            }
            open.fragment.extend_from_slice(payload);
            open
        };
        if flags & END_HEADERS == 0 {
            self.open = Some(open);
            return Ok(());
        }
        let block = self.reencode(stream, &open.fragment)?;
        open.fragment = block;
        write_header_frames(&open, out);
        Ok(())
    }

    /// Decodes a complete header block and encodes it again without the dynamic table, with an
    /// `:authority` that parses.
    fn reencode(&mut self, stream: u32, block: &[u8]) -> Result<Vec<u8>, AuthorityError> {
        let mut encoded = Vec::with_capacity(block.len() * 2);
        self.decoder
            .decode_with_cb(block, |name, value| {
                let value: &[u8] = if name.as_ref() == b":authority"
                    && http::uri::Authority::try_from(value.as_ref()).is_err()
                {
                    tracing::debug!(
                        authority = %String::from_utf8_lossy(&value),
                        "serving a request whose :authority is not a URI authority as localhost"
                    );
                    LOCAL_AUTHORITY
                } else {
                    &value
                };
                encode_literal(&name, value, &mut encoded);
            })
            .map_err(|e| AuthorityError::Hpack {
                stream,
                reason: format!("{e:?}"),
            })?;
        Ok(encoded)
    }
}

/// One header field as "literal header field without indexing, new name" (RFC 7541 §6.2.2).
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    encode_string(name, out);
    encode_string(value, out);
}

/// A string literal without Huffman coding: 7-bit-prefix length, then the bytes (§5.2).
fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    let mut len = s.len();
    if len < 0x7f {
        out.push(len as u8);
    } else {
        out.push(0x7f);
        len -= 0x7f;
        while len >= 0x80 {
            out.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(s);
}

/// A HEADERS frame (priority kept, padding dropped) and CONTINUATIONs carrying `open.fragment`.
fn write_header_frames(open: &OpenBlock, out: &mut Vec<u8>) {
    let first_room = MAX_FRAME - if open.priority.is_some() { 5 } else { 0 };
    let first_len = open.fragment.len().min(first_room);
    let mut flags = open.flags & (END_STREAM | PRIORITY);
    if first_len == open.fragment.len() {
        flags |= END_HEADERS;
    }
    let priority: &[u8] = match &open.priority {
        Some(fields) => fields,
        None => &[],
    };
    write_frame_header(priority.len() + first_len, HEADERS, flags, open.stream, out);
    out.extend_from_slice(priority);
    out.extend_from_slice(&open.fragment[..first_len]);
    let mut rest = &open.fragment[first_len..];
    while !rest.is_empty() {
        let n = rest.len().min(MAX_FRAME);
        let flags = if n == rest.len() { END_HEADERS } else { 0 };
        write_frame_header(n, CONTINUATION, flags, open.stream, out);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
}

fn write_frame_header(len: usize, frame_type: u8, flags: u8, stream: u32, out: &mut Vec<u8>) {
    let len = (len as u32).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(frame_type);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// The server-to-client byte stream, watched for error resets.
#[derive(Default)]
struct ServerFrames {
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    remaining: usize,
    /// The current frame is RST_STREAM or GOAWAY: its payload (start) is kept here.
    capture: Option<Vec<u8>>,
    frame_type: u8,
    stream: u32,
}

/// Enough of a GOAWAY to show its debug data.
const CAPTURE_LIMIT: usize = 8 + 4 + 256;

impl ServerFrames {
    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining == 0 && self.capture.is_none() {
                let n = bytes.len().min(FRAME_HEADER - self.header.len());
                self.header.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                if self.header.len() < FRAME_HEADER {
                    return;
                }
                let h = std::mem::take(&mut self.header);
                self.remaining =
                    usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.frame_type = h[3];
                self.stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                if self.frame_type == RST_STREAM || self.frame_type == GOAWAY {
                    self.capture = Some(Vec::new());
                }
            } else {
                let n = bytes.len().min(self.remaining);
                if let Some(capture) = &mut self.capture {
                    let keep = n.min(CAPTURE_LIMIT.saturating_sub(capture.len()));
                    capture.extend_from_slice(&bytes[..keep]);
                }
                self.remaining -= n;
                bytes = &bytes[n..];
            }
            if self.remaining == 0 {
                if let Some(payload) = self.capture.take() {
                    self.report(&payload);
                }
            }
        }
    }

    fn report(&self, payload: &[u8]) {
        let code_at = if self.frame_type == GOAWAY { 4 } else { 0 };
        let Some(code) = payload.get(code_at..code_at + 4) else {
            return;
        };
        let reason = h2::Reason::from(u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
        if [
            h2::Reason::NO_ERROR,
            h2::Reason::CANCEL,
            h2::Reason::REFUSED_STREAM,
        ]
        .contains(&reason)
        {
            return;
        }
        if self.frame_type == GOAWAY {
            let detail = String::from_utf8_lossy(payload.get(8..).unwrap_or_default());
            tracing::warn!(code = ?reason, %reason, %detail, "closing a CRI client's connection (GOAWAY)");
        } else {
            tracing::warn!(
                code = ?reason,
                %reason,
                stream = self.stream,
                "refusing a CRI client's request (RST_STREAM); `h2=debug` in the log level shows why"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(frame_type: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame_header(payload.len(), frame_type, flags, stream, &mut out);
        out.extend_from_slice(payload);
        out
    }

    /// Splits the server's view back into frames and decodes every header block the way h2
    /// does (own decoder, fresh table).
    type Frame = (u8, u8, u32, Vec<u8>);
    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn server_view(bytes: &[u8]) -> (Vec<Frame>, Vec<Fields>) {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let (mut frames, mut blocks) = (Vec::new(), Vec::new());
        let mut decoder = loona_hpack::Decoder::new();
        let mut block = Vec::new();
        while !rest.is_empty() {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (frame_type, flags) = (rest[3], rest[4]);
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            let payload = rest[FRAME_HEADER..FRAME_HEADER + len].to_vec();
            rest = &rest[FRAME_HEADER + len..];
            if frame_type == HEADERS || frame_type == CONTINUATION {
                let skip = if frame_type == HEADERS && flags & PRIORITY != 0 {
                    5
                } else {
                    0
                };
                block.extend_from_slice(&payload[skip..]);
                if flags & END_HEADERS != 0 {
                    blocks.push(decoder.decode(&block).expect("server decodes the block"));
                    block.clear();
                }
            }
            frames.push((frame_type, flags, stream, payload));
        }
        (frames, blocks)
    }

    fn request(authority: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (
                b":path".to_vec(),
                b"/runtime.v1.RuntimeService/Version".to_vec(),
            ),
            (b":authority".to_vec(), authority.to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
            (b"user-agent".to_vec(), vec![b'x'; 300]),
        ]
    }

    fn encode(encoder: &mut loona_hpack::Encoder, headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        encoder.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])))
    }

    /// Feeds `input` to a rewriter in pieces of `chunk` bytes.
    fn rewrite(input: &[u8], chunk: usize) -> Result<Vec<u8>, AuthorityError> {
        let mut rewriter = Rewriter::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            rewriter.feed(piece, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn socket_path_and_empty_authorities_become_localhost_with_the_tables_in_step() {
        // The client's encoder indexes: the second and third requests refer to its dynamic
        // table, which the server's decoder never saw.
        let mut encoder = loona_hpack::Encoder::new();
        let sent = [
            request(b"/run/corral/corral.sock"),
            request(b"/run/corral/corral.sock"),
            request(b""),
            request(b"localhost:1234"),
        ];
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        for (i, headers) in sent.iter().enumerate() {
            let stream = 2 * i as u32 + 1;
            input.extend(frame(
                HEADERS,
                END_HEADERS,
                stream,
                &encode(&mut encoder, headers),
            ));
            input.extend(frame(0x0, END_STREAM, stream, &[0, 0, 0, 0, 0])); // DATA
        }
        for chunk in [1, 7, 4096] {
            let (frames, blocks) = server_view(&rewrite(&input, chunk).expect("rewritten"));
            assert_eq!(frames.len(), 1 + 2 * sent.len());
            assert_eq!(frames[2], (0x0, END_STREAM, 1, vec![0, 0, 0, 0, 0]));
            let authorities: Vec<&[u8]> = blocks
                .iter()
                .map(|block| {
                    &block
                        .iter()
                        .find(|(n, _)| n == b":authority")
                        .expect(":authority")
                        .1[..]
                })
                .collect();
            assert_eq!(
                authorities,
                [
                    &b"localhost"[..],
                    b"localhost",
                    b"localhost",
                    b"localhost:1234"
                ]
            );
            for (block, headers) in blocks.iter().zip(&sent) {
                let others = |list: &[(Vec<u8>, Vec<u8>)]| -> Vec<(Vec<u8>, Vec<u8>)> {
                    list.iter()
                        .filter(|(n, _)| n != b":authority")
                        .cloned()
                        .collect()
                };
                assert_eq!(others(block), others(headers));
            }
        }
    }

    #[test]
    fn padding_is_dropped_priority_kept_and_continuations_joined() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = encode(&mut encoder, &request(b"/sock"));
        let (first, second) = block.split_at(10);
        let mut payload = vec![3]; // pad length
        payload.extend([0, 0, 0, 0, 16]); // priority: no dependency, weight 16
        payload.extend_from_slice(first);
        payload.extend([0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &payload));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, second));
        let (frames, blocks) = server_view(&rewrite(&input, 3).expect("rewritten"));
        assert_eq!(frames.len(), 1);
        let (frame_type, flags, stream, payload) = &frames[0];
        assert_eq!(
            (*frame_type, *flags, *stream),
            (HEADERS, PRIORITY | END_STREAM | END_HEADERS, 1)
        );
        assert_eq!(&payload[..5], &[0, 0, 0, 0, 16]);
        assert!(blocks[0].contains(&(b":authority".to_vec(), b"localhost".to_vec())));
    }

    #[test]
    fn a_block_larger_than_a_frame_is_split_into_continuations() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut headers = request(b"/sock");
        headers.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &encode(&mut encoder, &headers[..3])));
        let rest = encode(&mut encoder, &headers[3..]);
        for (i, piece) in rest.chunks(MAX_FRAME).enumerate() {
            let last = (i + 1) * MAX_FRAME >= rest.len();
            input.extend(frame(
                CONTINUATION,
                if last { END_HEADERS } else { 0 },
                1,
                piece,
            ));
        }
        let (frames, blocks) = server_view(&rewrite(&input, 5000).expect("rewritten"));
        assert!(frames.len() >= 3);
        assert!(frames.iter().all(|f| f.3.len() <= MAX_FRAME));
        assert_eq!(blocks[0].len(), headers.len());
        assert_eq!(blocks[0][6].1.len(), 40_000);
    }

    #[test]
    fn malformed_input_is_refused_with_the_reason() {
        assert!(matches!(
            rewrite(b"GET / HTTP/1.1\r\n\r\n", 64),
            Err(AuthorityError::Preface)
        ));
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &[0x82]));
        input.extend(frame(0x0, 0, 1, &[]));
        assert!(matches!(
            rewrite(&input, 64),
            Err(AuthorityError::ExpectedContinuation { expected: 1, .. })
        ));
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0x7f])); // index out of range
        let err = rewrite(&input, 64).expect_err("bad index");
        assert!(err.to_string().contains("HPACK"), "{err}");
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | END_HEADERS, 1, &[10, 0x82, 0x86]));
        assert!(matches!(
            rewrite(&input, 64),
            Err(AuthorityError::ShortHeaders(1))
        ));
        let mut input = PREFACE.to_vec();
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &[0x82]));
        assert!(matches!(
            rewrite(&input, 64),
            Err(AuthorityError::StrayContinuation(1))
        ));
    }

    #[test]
    fn server_frames_are_followed_across_writes() {
        let mut watcher = ServerFrames::default();
        let mut bytes = frame(0x4, 0, 0, &[0; 6]);
        bytes.extend(frame(0x0, 0, 1, &[7; 100]));
        bytes.extend(frame(RST_STREAM, 0, 1, &1u32.to_be_bytes()));
        for piece in bytes.chunks(5) {
            watcher.observe(piece);
        }
        assert_eq!(
            (watcher.frame_type, watcher.stream, watcher.remaining),
            (RST_STREAM, 1, 0)
        );
        assert!(watcher.capture.is_none() && watcher.header.is_empty());
    }
}
