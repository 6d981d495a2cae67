//! A SPDY/3.1 session over any byte transport: one reader task decodes frames and applies
//! them, one writer task encodes and writes queued frames.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, trace, warn};

use crate::error::{CloseReason, SpdyError};
use crate::frame::{FrameDecoder, FrameEncoder, GoAwayStatus, MAX_WINDOW_DELTA};
use crate::headers::Headers;
use crate::session::{FrameOutcome, QueuedFrame, Shared, TaskHandles, WriterPhase};
use crate::stream::Stream;

/// Bytes requested from the transport per read.
const READ_CHUNK: usize = 32 * 1024;

/// Which end of the session this side is: the client opens odd stream ids, the server even.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that initiated the transport (e.g. `kubectl`, `corralctl`).
    Client,
    /// The side that accepted it (e.g. the streaming server).
    Server,
}

/// How the peer's flow-control windows govern this side's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerFlowControl {
    /// Writers wait for the peer's windows (64 KiB to start with) until the peer turns out
    /// not to do flow control. A peer that has sent SETTINGS with an initial window or any
    /// WINDOW_UPDATE does flow control. One that has sent neither does not if it overruns one
    /// of this side's windows, or if it echoes a PING (sent when a writer runs out of window)
    /// without either frame coming first; its windows are ignored from then on. Overruns of
    /// this side's windows are tolerated: the reader pauses at [`Config::max_stream_buffer`].
    ///
    /// Needed for `moby/spdystream` (kubectl, kube-apiserver, kubelet), which neither sends
    /// nor honours WINDOW_UPDATE.
    #[default]
    Detect,
    /// The peer implements SPDY/3.1 flow control: writers wait for its windows from the
    /// start, and a stream whose window the peer overruns is reset with FLOW_CONTROL_ERROR.
    Enforce,
}

/// Connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Receive window of each stream, announced in SETTINGS (default 64 KiB). WINDOW_UPDATEs
    /// return it as the application reads.
    pub initial_window_size: u32,
    /// Session-level receive window (default 1 MiB; SPDY/3.1 starts at 64 KiB and this side
    /// raises it with a WINDOW_UPDATE on stream 0).
    pub connection_window_size: u32,
    /// How the peer's windows are honoured.
    pub peer_flow_control: PeerFlowControl,
    /// Bytes buffered on one stream (accepted or not yet) beyond which the reader stops
    /// reading the transport until the application reads that stream (default 1 MiB; only
    /// reached by peers that ignore flow control).
    pub max_stream_buffer: usize,
    /// Time allowed to write the final frames (RST_STREAMs, GOAWAY) when closing.
    pub close_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            initial_window_size: 64 * 1024,
            connection_window_size: 1024 * 1024,
            peer_flow_control: PeerFlowControl::Detect,
            max_stream_buffer: 1024 * 1024,
            close_timeout: Duration::from_secs(5),
        }
    }
}

impl Config {
    fn normalized(mut self) -> Self {
        self.initial_window_size = self.initial_window_size.clamp(1, MAX_WINDOW_DELTA);
        self.connection_window_size = self
            .connection_window_size
            .clamp(64 * 1024, MAX_WINDOW_DELTA);
        self.max_stream_buffer = self
            .max_stream_buffer
            .max(self.initial_window_size as usize);
        self
    }
}

/// A SPDY/3.1 session over an upgraded connection.
///
/// All methods take `&self`; share it with `Arc` to accept and open streams from several
/// tasks. Dropping the `Connection` closes it like [`Connection::close`] without waiting:
/// keep it alive while its streams are in use.
pub struct Connection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.shared.role)
            .field("closed", &self.shared.lock().closed)
            .finish()
    }
}

impl Connection {
    /// Starts the client end of a session on `io` with the default [`Config`].
    ///
    /// Must be called inside a tokio runtime (it spawns the reader and writer tasks).
    pub fn client<T>(io: T) -> Connection
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        Connection::with_config(io, Role::Client, Config::default())
    }

    /// Starts the server end of a session on `io` with the default [`Config`].
    ///
    /// Must be called inside a tokio runtime (it spawns the reader and writer tasks).
    pub fn server<T>(io: T) -> Connection
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        Connection::with_config(io, Role::Server, Config::default())
    }

    /// Starts a session on `io`. Sends SETTINGS (initial window) and the session
    /// WINDOW_UPDATE right away.
    ///
    /// Must be called inside a tokio runtime (it spawns the reader and writer tasks).
    pub fn with_config<T>(io: T, role: Role, config: Config) -> Connection
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let shared = Shared::new(role, config.normalized());
        let (read_half, write_half) = tokio::io::split(io);
        shared.tasks.send_replace(2);
        let reader = tokio::spawn(run_reader(shared.clone(), read_half));
        let writer = tokio::spawn(run_writer(shared.clone(), write_half));
        shared.set_task_handles(TaskHandles {
            reader: Some(reader.abort_handle()),
            writer: Some(writer.abort_handle()),
        });
        debug!(?role, "SPDY connection started");
        Connection { shared }
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.shared.role
    }

    /// The next stream the peer opened (its SYN_STREAM headers are in [`Stream::headers`]).
    /// `None` once the connection is closed or the peer sent GOAWAY.
    ///
    /// Answer each stream with [`Stream::reply`]; writing to it first sends an empty reply.
    pub async fn accept(&self) -> Option<Stream> {
        let (stream_id, headers) = poll_fn(|cx| self.shared.poll_accept(cx)).await?;
        Some(Stream::new(self.shared.clone(), stream_id, headers))
    }

    /// Opens a stream by sending SYN_STREAM with `headers`; `fin` half-closes it at once.
    ///
    /// Does not wait for the peer's SYN_REPLY: see [`Stream::wait_reply`].
    pub fn open_stream(&self, headers: Headers, fin: bool) -> Result<Stream, SpdyError> {
        let stream_id = self.shared.open_stream(&headers, fin)?;
        Ok(Stream::new(self.shared.clone(), stream_id, headers))
    }

    /// Sends a PING and waits for the peer's echo; returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration, SpdyError> {
        let start = Instant::now();
        let echo = self.shared.send_ping()?;
        match echo.await {
            Ok(()) => Ok(start.elapsed()),
            Err(_) => Err(SpdyError::ConnectionClosed(self.close_reason_or_failed())),
        }
    }

    /// Closes the session: resets streams still open (RST_STREAM CANCEL), sends GOAWAY(OK),
    /// writes what is queued, shuts the transport down, and waits for the tasks to end.
    ///
    /// Data written to streams before the call is sent before the resets.
    pub async fn close(&self) {
        self.shared
            .begin_close(GoAwayStatus::Ok, CloseReason::Local);
        self.closed().await;
    }

    /// Waits until the session has ended and its tasks have finished; returns why it ended.
    pub async fn closed(&self) -> CloseReason {
        let mut tasks = self.shared.tasks.subscribe();
        // The sender lives in `shared`, which `self` keeps alive, so this cannot fail.
        let _ = tasks.wait_for(|running| *running == 0).await;
        self.close_reason_or_failed()
    }

    /// Why the session ended, if it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.lock().closed.clone()
    }

    /// Whether the reader and writer tasks have both finished.
    pub fn is_terminated(&self) -> bool {
        *self.shared.tasks.borrow() == 0
    }

    fn close_reason_or_failed(&self) -> CloseReason {
        self.close_reason()
            .unwrap_or_else(|| CloseReason::Failed("connection tasks ended".into()))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared
            .begin_close(GoAwayStatus::Ok, CloseReason::Local);
    }
}

/// Counts a running task; the count drops when the task ends or is aborted.
struct TaskGuard(Arc<Shared>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0
            .tasks
            .send_modify(|running| *running = running.saturating_sub(1));
    }
}

/// Why the reader stopped.
enum ReaderEnd {
    Eof,
    Io(String),
    Protocol(String),
}

async fn run_reader<R>(shared: Arc<Shared>, mut io: R)
where
    R: AsyncRead + Unpin,
{
    let _guard = TaskGuard(shared.clone());
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let end = 'read: loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => match shared.on_frame(frame) {
                    FrameOutcome::Continue => {}
                    FrameOutcome::WaitForSpace(stream_id) => {
                        shared.wait_for_space(stream_id).await;
                    }
                    FrameOutcome::Fatal(reason) => break 'read ReaderEnd::Protocol(reason),
                },
                Ok(None) => break,
                Err(err) => break 'read ReaderEnd::Protocol(err.to_string()),
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        match io.read_buf(&mut buf).await {
            Ok(0) => break ReaderEnd::Eof,
            Ok(_) => {}
            Err(err) => break ReaderEnd::Io(format!("reading the transport: {err}")),
        }
    };
    match end {
        ReaderEnd::Eof => {
            debug!("transport reached end-of-file");
            shared.terminate(shared.eof_reason());
        }
        ReaderEnd::Io(reason) => {
            debug!(%reason, "transport read failed");
            shared.terminate(CloseReason::Failed(reason));
        }
        ReaderEnd::Protocol(reason) => {
            warn!(%reason, "SPDY protocol error; sending GOAWAY");
            shared.begin_close(
                GoAwayStatus::ProtocolError,
                CloseReason::Failed(format!("protocol error: {reason}")),
            );
        }
    }
}

async fn run_writer<W>(shared: Arc<Shared>, mut io: W)
where
    W: AsyncWrite + Unpin,
{
    let _guard = TaskGuard(shared.clone());
    let mut encoder = match FrameEncoder::new() {
        Ok(encoder) => encoder,
        Err(err) => {
            shared.terminate(CloseReason::Failed(err.to_string()));
            return;
        }
    };
    let close_timeout = shared.config.close_timeout;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        let notified = shared.writer_wake.notified();
        let (frames, phase) = shared.take_outbound();
        if phase == WriterPhase::Stop {
            return;
        }
        if frames.is_empty() {
            if phase == WriterPhase::Flush {
                match tokio::time::timeout(close_timeout, io.shutdown()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => debug!(%err, "shutting the transport down failed"),
                    Err(_) => debug!("shutting the transport down timed out"),
                }
                shared.terminate(CloseReason::Local);
                return;
            }
            notified.await;
            continue;
        }
        if let Err(err) = encode_all(&mut encoder, &frames, &mut buf) {
            warn!(%err, "encoding a frame failed");
            shared.terminate(CloseReason::Failed(format!("encoding a frame: {err}")));
            return;
        }
        let write = async {
            io.write_all(&buf).await?;
            io.flush().await
        };
        tokio::pin!(write);
        let closing = async {
            if phase != WriterPhase::Flush {
                shared.close_started.notified().await;
            }
        };
        // Writes may take as long as the peer needs, until closing begins: from then on the
        // transport gets `close_timeout` to take what is left.
        let result = tokio::select! {
            result = &mut write => result,
            () = closing => tokio::time::timeout(close_timeout, &mut write)
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
        };
        buf.clear();
        if let Err(err) = result {
            debug!(%err, "transport write failed");
            shared.terminate(CloseReason::Failed(format!("writing the transport: {err}")));
            return;
        }
        shared.frames_written(frames.iter().filter_map(|queued| queued.counted_for));
    }
}

fn encode_all(
    encoder: &mut FrameEncoder,
    frames: &[QueuedFrame],
    buf: &mut BytesMut,
) -> Result<(), SpdyError> {
    for queued in frames {
        trace!(frame = queued.frame.name(), "sending frame");
        encoder.encode(&queued.frame, buf)?;
    }
    Ok(())
}
