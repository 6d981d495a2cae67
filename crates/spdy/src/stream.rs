//! One multiplexed stream: `AsyncRead` for the peer's DATA, `AsyncWrite` for this side's;
//! `shutdown` half-closes with FLAG_FIN.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use crate::error::SpdyError;
use crate::frame::{Frame, RstStatus, StreamId};
use crate::headers::Headers;
use crate::session::{
    ConnState, ReplyState, ResetInfo, Shared, StreamState, WriterPhase, MAX_DATA_FRAME_LEN,
    MAX_QUEUED_DATA,
};

/// A stream of a [`Connection`](crate::Connection).
///
/// Reading yields the peer's DATA and then end-of-file once the peer half-closed; a reset
/// stream or a closed connection reads as an error. Writing sends DATA, waiting for flow
/// control window; `shutdown` sends FLAG_FIN and waits until everything is written.
/// Dropping a stream that is still open in either direction resets it (CANCEL).
pub struct Stream {
    shared: Arc<Shared>,
    id: StreamId,
    headers: Headers,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .finish()
    }
}

impl Stream {
    pub(crate) fn new(shared: Arc<Shared>, id: StreamId, headers: Headers) -> Self {
        Stream {
            shared,
            id,
            headers,
        }
    }

    /// The stream id (odd when the client opened it, even for the server).
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The SYN_STREAM headers: the peer's for accepted streams, this side's for opened ones.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Headers the peer sent later in HEADERS frames, merged.
    pub fn extra_headers(&self) -> Headers {
        let st = self.shared.lock();
        st.streams
            .get(&self.id)
            .map(|stream| stream.extra_headers.clone())
            .unwrap_or_default()
    }

    /// Accepts a stream the peer opened by sending SYN_REPLY; `fin` half-closes this side.
    pub fn reply(&self, headers: Headers, fin: bool) -> Result<(), SpdyError> {
        headers.validate()?;
        self.update(|st, stream_id| {
            let stream = writable_stream(st, stream_id, "reply")?;
            match stream.reply {
                ReplyState::NotSent => {}
                ReplyState::Sent => return Err(state_error(stream_id, "reply", "already replied")),
                ReplyState::Awaiting | ReplyState::Received(_) => {
                    return Err(state_error(
                        stream_id,
                        "reply",
                        "stream was opened by this side",
                    ))
                }
            }
            stream.reply = ReplyState::Sent;
            stream.send_closed = fin;
            let frame = Frame::SynReply {
                stream_id,
                fin,
                headers,
            };
            queue_for(st, stream_id, frame);
            Ok(())
        })
    }

    /// Waits for the peer's SYN_REPLY to a stream this side opened and returns its headers.
    pub async fn wait_reply(&self) -> Result<Headers, SpdyError> {
        poll_fn(|cx| {
            let mut guard = self.shared.lock();
            let st = &mut *guard;
            let closed = st.closed.clone();
            let Some(stream) = st.streams.get_mut(&self.id) else {
                return Poll::Ready(Err(state_error(
                    self.id,
                    "wait for reply",
                    "stream is gone",
                )));
            };
            match &stream.reply {
                ReplyState::Received(headers) => return Poll::Ready(Ok(headers.clone())),
                ReplyState::Awaiting => {}
                ReplyState::NotSent | ReplyState::Sent => {
                    return Poll::Ready(Err(state_error(
                        self.id,
                        "wait for reply",
                        "stream was opened by the peer",
                    )))
                }
            }
            if let Some(reset) = stream.reset {
                return Poll::Ready(Err(reset_error(self.id, reset)));
            }
            if let Some(reason) = closed {
                return Poll::Ready(Err(SpdyError::ConnectionClosed(reason)));
            }
            stream.reply_wakers.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Sends a HEADERS frame; `fin` half-closes this side.
    pub fn send_headers(&self, headers: Headers, fin: bool) -> Result<(), SpdyError> {
        headers.validate()?;
        self.update(|st, stream_id| {
            let stream = writable_stream(st, stream_id, "send headers")?;
            let implicit_reply = accept_on_send(stream);
            stream.send_closed = fin;
            if implicit_reply {
                queue_for(st, stream_id, empty_reply(stream_id, false));
            }
            let frame = Frame::Headers {
                stream_id,
                fin,
                headers,
            };
            queue_for(st, stream_id, frame);
            Ok(())
        })
    }

    /// Aborts the stream with RST_STREAM; later reads and writes fail. Does nothing if the
    /// stream was already reset.
    pub fn reset(&self, status: RstStatus) {
        // A closed connection has nothing left to reset; the error is of no interest.
        let _ = self.update(|st, stream_id| {
            let Some(stream) = st.streams.get_mut(&stream_id) else {
                return Ok(());
            };
            if stream.reset.is_some() {
                return Ok(());
            }
            debug!(stream_id, %status, "resetting stream");
            stream.reset = Some(ResetInfo {
                status,
                by_peer: false,
            });
            stream.wake_all();
            st.outbound.push(Frame::RstStream { stream_id, status });
            Ok(())
        });
    }

    /// Runs `action` on the connection state (open connection only) and wakes the writer.
    fn update<T>(
        &self,
        action: impl FnOnce(&mut ConnState, StreamId) -> Result<T, SpdyError>,
    ) -> Result<T, SpdyError> {
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        if let Some(reason) = &st.closed {
            return Err(SpdyError::ConnectionClosed(reason.clone()));
        }
        let result = action(st, self.id);
        drop(guard);
        self.shared.writer_wake.notify_one();
        result
    }

    /// Waits until every frame queued for this stream has been written to the transport.
    fn poll_written(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        let phase = st.writer_phase;
        let closed = st.closed.clone();
        let Some(stream) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(state_error(self.id, "flush", "stream is gone").into()));
        };
        if stream.unwritten == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(reset) = stream.reset {
            return Poll::Ready(Err(reset_error(self.id, reset).into()));
        }
        if phase == WriterPhase::Stop {
            let reason = closed.unwrap_or(crate::CloseReason::Local);
            return Poll::Ready(Err(SpdyError::ConnectionClosed(reason).into()));
        }
        stream.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut guard = this.shared.lock();
        let st = &mut *guard;
        let closed = st.closed.clone();
        let Some(stream) = st.streams.get_mut(&this.id) else {
            return Poll::Ready(Err(state_error(this.id, "read", "stream is gone").into()));
        };
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut copied = 0;
        while buf.remaining() > 0 {
            let Some(chunk) = stream.recv_buf.front_mut() else {
                break;
            };
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            chunk.advance(n);
            if chunk.is_empty() {
                stream.recv_buf.pop_front();
            }
            copied += n;
        }
        if copied > 0 {
            this.shared.consumed(st, this.id, copied);
            return Poll::Ready(Ok(()));
        }
        if stream.recv_closed {
            return Poll::Ready(Ok(()));
        }
        if let Some(reset) = stream.reset {
            return Poll::Ready(Err(reset_error(this.id, reset).into()));
        }
        if let Some(reason) = closed {
            return Poll::Ready(Err(SpdyError::ConnectionClosed(reason).into()));
        }
        stream.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut guard = this.shared.lock();
        let st = &mut *guard;
        if let Some(reason) = &st.closed {
            return Poll::Ready(Err(SpdyError::ConnectionClosed(reason.clone()).into()));
        }
        let enforce = st.enforce_send_windows;
        let session_window = st.send_window;
        let queue_room = MAX_QUEUED_DATA.saturating_sub(st.outbound.data_bytes);
        let stream = match writable_stream(st, this.id, "write") {
            Ok(stream) => stream,
            Err(err) => return Poll::Ready(Err(err.into())),
        };
        let mut len = buf.len().min(MAX_DATA_FRAME_LEN).min(queue_room);
        let mut window_exhausted = false;
        if enforce {
            let window = stream.send_window.min(session_window).max(0);
            window_exhausted = window == 0;
            len = len.min(usize::try_from(window).unwrap_or(0));
        }
        if len == 0 {
            stream.write_waker = Some(cx.waker().clone());
            if window_exhausted {
                this.shared.probe_peer_flow_control(st);
            }
            return Poll::Pending;
        }
        let sent = i64::try_from(len).unwrap_or(i64::MAX);
        stream.send_window -= sent;
        let implicit_reply = accept_on_send(stream);
        st.send_window -= sent;
        if implicit_reply {
            queue_for(st, this.id, empty_reply(this.id, false));
        }
        let frame = Frame::Data {
            stream_id: this.id,
            fin: false,
            data: Bytes::copy_from_slice(&buf[..len]),
        };
        queue_for(st, this.id, frame);
        drop(guard);
        this.shared.writer_wake.notify_one();
        Poll::Ready(Ok(len))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_written(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let queued_fin = {
            let mut guard = this.shared.lock();
            let st = &mut *guard;
            let closed = st.closed.clone();
            let Some(stream) = st.streams.get_mut(&this.id) else {
                return Poll::Ready(Err(
                    state_error(this.id, "shut down", "stream is gone").into()
                ));
            };
            if stream.send_closed {
                false
            } else {
                if let Some(reason) = closed {
                    return Poll::Ready(Err(SpdyError::ConnectionClosed(reason).into()));
                }
                if let Some(reset) = stream.reset {
                    return Poll::Ready(Err(reset_error(this.id, reset).into()));
                }
                stream.send_closed = true;
                let frame = if stream.reply == ReplyState::NotSent {
                    stream.reply = ReplyState::Sent;
                    empty_reply(this.id, true)
                } else {
                    Frame::Data {
                        stream_id: this.id,
                        fin: true,
                        data: Bytes::new(),
                    }
                };
                queue_for(st, this.id, frame);
                true
            }
        };
        if queued_fin {
            debug!(stream_id = this.id, "half-closed stream");
            this.shared.writer_wake.notify_one();
        }
        this.poll_written(cx)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.shared.release_stream(self.id);
    }
}

/// The stream's state if this side may still send on it.
fn writable_stream<'a>(
    st: &'a mut ConnState,
    stream_id: StreamId,
    op: &'static str,
) -> Result<&'a mut StreamState, SpdyError> {
    let stream = st
        .streams
        .get_mut(&stream_id)
        .ok_or_else(|| state_error(stream_id, op, "stream is gone"))?;
    if let Some(reset) = stream.reset {
        return Err(reset_error(stream_id, reset));
    }
    if stream.send_closed {
        return Err(state_error(
            stream_id,
            op,
            "this side already half-closed it",
        ));
    }
    Ok(stream)
}

/// Queues a frame of `stream_id`, counting it for `poll_flush`.
fn queue_for(st: &mut ConnState, stream_id: StreamId, frame: Frame) {
    match st.streams.get_mut(&stream_id) {
        Some(stream) => st.outbound.push_for(frame, stream_id, stream),
        None => st.outbound.push(frame),
    }
}

/// Sending anything on a stream the peer opened implies accepting it: returns whether an
/// empty SYN_REPLY must go first.
fn accept_on_send(stream: &mut StreamState) -> bool {
    if stream.reply == ReplyState::NotSent {
        stream.reply = ReplyState::Sent;
        true
    } else {
        false
    }
}

fn empty_reply(stream_id: StreamId, fin: bool) -> Frame {
    Frame::SynReply {
        stream_id,
        fin,
        headers: Headers::new(),
    }
}

fn state_error(stream_id: StreamId, op: &'static str, reason: &'static str) -> SpdyError {
    SpdyError::InvalidStreamState {
        stream_id,
        op,
        reason,
    }
}

fn reset_error(stream_id: StreamId, reset: ResetInfo) -> SpdyError {
    SpdyError::StreamReset {
        stream_id,
        status: reset.status,
        by_peer: reset.by_peer,
    }
}
