//! Exec and attach sessions: set up the client's streams (SPDY streams or WebSocket
//! channels), run the backend with them, report how the command ended on the error stream,
//! and tear everything down.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use corral_spdy::{Connection, Headers, RstStatus, Stream};
use cri_proto::v1::{AttachRequest, ExecRequest};
use tokio::io::{duplex, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::SessionContext;
use crate::backend::{BackendError, BoxFuture, StreamIo, TerminalSize};
use crate::protocol::{
    CommandOutcome, ResizeDecoder, SpdyCommandVersion, StatusFormat, StreamType, WsProtocol,
    STREAM_TYPE_HEADER,
};
use crate::websocket::{pump_to_channel, ChannelMux, ChannelSender};

/// Bytes buffered between a client stream and the backend, per direction.
pub(crate) const PIPE_CAPACITY: usize = 64 * 1024;
/// Resize events queued for a backend that is slow to read them.
const RESIZE_QUEUE: usize = 16;

/// What the command runs against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CommandTarget {
    Exec {
        container_id: String,
        cmd: Vec<String>,
    },
    Attach {
        container_id: String,
    },
}

/// An exec or attach request with the streams it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandRequest {
    pub(crate) target: CommandTarget,
    pub(crate) stdin: bool,
    pub(crate) stdout: bool,
    pub(crate) stderr: bool,
    pub(crate) tty: bool,
}

impl From<ExecRequest> for CommandRequest {
    fn from(request: ExecRequest) -> Self {
        CommandRequest {
            target: CommandTarget::Exec {
                container_id: request.container_id,
                cmd: request.cmd,
            },
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
            tty: request.tty,
        }
    }
}

impl From<AttachRequest> for CommandRequest {
    fn from(request: AttachRequest) -> Self {
        CommandRequest {
            target: CommandTarget::Attach {
                container_id: request.container_id,
            },
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
            tty: request.tty,
        }
    }
}

impl CommandRequest {
    /// The SPDY streams kubelet waits for: error, the requested stdio, resize with a tty.
    fn expected_streams(&self, version: SpdyCommandVersion) -> Vec<StreamType> {
        let mut kinds = vec![StreamType::Error];
        for (kind, wanted) in [
            (StreamType::Stdin, self.stdin),
            (StreamType::Stdout, self.stdout),
            (StreamType::Stderr, self.stderr),
            (StreamType::Resize, self.tty && version.supports_resize()),
        ] {
            if wanted {
                kinds.push(kind);
            }
        }
        kinds
    }

    /// Calls the backend; the outcome as the error stream reports it.
    fn run(
        &self,
        ctx: &SessionContext,
        io: StreamIo,
    ) -> BoxFuture<'static, Result<CommandOutcome, BackendError>> {
        match &self.target {
            CommandTarget::Exec { container_id, cmd } => {
                let call = ctx.backend.exec(container_id, cmd.clone(), self.tty, io);
                Box::pin(async move { call.await.map(CommandOutcome::from_exit_code) })
            }
            CommandTarget::Attach { container_id } => {
                let call = ctx.backend.attach(container_id, self.tty, io);
                Box::pin(async move { call.await.map(|()| CommandOutcome::Success) })
            }
        }
    }

    fn failure(&self, err: &BackendError) -> CommandOutcome {
        CommandOutcome::Failed(match self.target {
            CommandTarget::Exec { .. } => format!("error executing command in container: {err}"),
            CommandTarget::Attach { .. } => format!("error attaching to container: {err}"),
        })
    }
}

/// Serves an exec/attach over an upgraded SPDY/3.1 connection.
pub(crate) async fn serve_spdy<T>(
    io: T,
    version: SpdyCommandVersion,
    request: CommandRequest,
    ctx: Arc<SessionContext>,
) where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let conn = Connection::server(io);
    let Some(mut streams) = client_streams(&conn, &request, version, &ctx).await else {
        conn.close().await;
        return;
    };
    let Some(error_stream) = streams.remove(&StreamType::Error) else {
        conn.close().await;
        return;
    };
    debug!(protocol = version.name(), "SPDY streams ready");
    let (io, inputs, outputs) = wire_spdy_streams(&mut streams, &request);
    let session = Session {
        ctx,
        request,
        status: StatusSink::Spdy(error_stream),
        status_format: version.status_format(),
        transport: Transport::Spdy(conn),
        inputs,
        outputs,
    };
    session.run(io).await;
    // Streams the client opened beyond the request's live until the connection is closed.
    drop(streams);
}

/// The streams the client opens for `request`; `None` when the connection ends, the server
/// shuts down or the client is too slow (said in the log).
async fn client_streams(
    conn: &Connection,
    request: &CommandRequest,
    version: SpdyCommandVersion,
    ctx: &SessionContext,
) -> Option<HashMap<StreamType, Stream>> {
    let expected = request.expected_streams(version);
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(
            ctx.stream_creation_timeout,
            accept_streams(conn, &expected, version),
        ) => accepted,
        () = ctx.shutdown.cancelled() => Ok(None),
    };
    match accepted {
        Ok(Some(streams)) => Some(streams),
        Ok(None) => {
            debug!("connection ended before the client opened its streams");
            None
        }
        Err(_) => {
            warn!(?expected, "timed out waiting for client to create streams");
            None
        }
    }
}

/// Connects the client's SPDY streams that `request` asked for to the backend's side: the
/// backend's streams, the tasks copying input to it and those copying its output out.
fn wire_spdy_streams(
    streams: &mut HashMap<StreamType, Stream>,
    request: &CommandRequest,
) -> (StreamIo, JoinSet<()>, JoinSet<()>) {
    let mut io = StreamIo::default();
    let mut inputs = JoinSet::new();
    let mut outputs = JoinSet::new();
    if let Some(stream) = streams.remove(&StreamType::Stdin).filter(|_| request.stdin) {
        let (backend_end, pump_end) = duplex(PIPE_CAPACITY);
        inputs.spawn(copy_input(stream, pump_end));
        io.stdin = Some(Box::new(backend_end));
    }
    if let Some(stream) = streams
        .remove(&StreamType::Stdout)
        .filter(|_| request.stdout)
    {
        let (backend_end, pump_end) = duplex(PIPE_CAPACITY);
        outputs.spawn(copy_output(pump_end, stream));
        io.stdout = Some(Box::new(backend_end));
    }
    if let Some(stream) = streams
        .remove(&StreamType::Stderr)
        .filter(|_| request.stderr)
    {
        let (backend_end, pump_end) = duplex(PIPE_CAPACITY);
        outputs.spawn(copy_output(pump_end, stream));
        io.stderr = Some(Box::new(backend_end));
    }
    if let Some(stream) = streams.remove(&StreamType::Resize) {
        let sizes = request.tty.then(|| {
            let (sender, receiver) = mpsc::channel(RESIZE_QUEUE);
            io.resize = Some(receiver);
            sender
        });
        inputs.spawn(forward_resizes(stream, sizes));
    }
    (io, inputs, outputs)
}

/// Accepts streams until one of each expected type is there; `None` if the connection ends.
async fn accept_streams(
    conn: &Connection,
    expected: &[StreamType],
    version: SpdyCommandVersion,
) -> Option<HashMap<StreamType, Stream>> {
    let mut streams = HashMap::new();
    while !expected.iter().all(|kind| streams.contains_key(kind)) {
        let stream = conn.accept().await?;
        let name = stream.headers().get(STREAM_TYPE_HEADER).unwrap_or_default();
        let Some(kind) = StreamType::from_name(name) else {
            warn!(
                stream_type = name,
                "unexpected stream type; refusing the stream"
            );
            stream.reset(RstStatus::RefusedStream);
            continue;
        };
        if streams.contains_key(&kind) {
            warn!(stream_type = name, "duplicate stream; refusing it");
            stream.reset(RstStatus::RefusedStream);
            continue;
        }
        // Streams stay open both ways: kubectl takes the server closing stdin as the end of
        // the session and closes its own side, even mid-copy. Only the original protocol
        // closes stdin at once (as kubelet does).
        let half_close = version == SpdyCommandVersion::V1 && kind == StreamType::Stdin;
        if let Err(err) = stream.reply(Headers::new(), half_close) {
            debug!(%err, "replying to a stream failed");
            return None;
        }
        streams.insert(kind, stream);
    }
    Some(streams)
}

/// Serves an exec/attach over an upgraded WebSocket.
pub(crate) async fn serve_websocket<S>(
    socket: WebSocketStream<S>,
    protocol: WsProtocol,
    request: CommandRequest,
    ctx: Arc<SessionContext>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut io = StreamIo::default();
    let mut inbound = Vec::new();
    if request.stdin {
        let (backend_end, mux_end) = duplex(PIPE_CAPACITY);
        inbound.push((StreamType::Stdin.channel(), mux_end));
        io.stdin = Some(Box::new(backend_end));
    }
    let (resize_source, resize_mux_end) = duplex(PIPE_CAPACITY);
    inbound.push((StreamType::Resize.channel(), resize_mux_end));
    let mux = ChannelMux::start(socket, protocol.framing, protocol.close_signal, inbound);
    debug!(protocol = protocol.name, "WebSocket channels ready");

    // kubelet's "connected" hint: an empty message on the lowest channel the client reads.
    let hint = if request.stdout {
        StreamType::Stdout
    } else if request.stderr {
        StreamType::Stderr
    } else {
        StreamType::Error
    };
    if mux.sender(hint.channel()).send(Bytes::new()).await.is_err() {
        mux.close(&ctx.shutdown).await;
        return;
    }

    let mut outputs = JoinSet::new();
    if request.stdout {
        let (backend_end, pump_end) = duplex(PIPE_CAPACITY);
        outputs.spawn(send_output(
            pump_end,
            mux.sender(StreamType::Stdout.channel()),
        ));
        io.stdout = Some(Box::new(backend_end));
    }
    if request.stderr {
        let (backend_end, pump_end) = duplex(PIPE_CAPACITY);
        outputs.spawn(send_output(
            pump_end,
            mux.sender(StreamType::Stderr.channel()),
        ));
        io.stderr = Some(Box::new(backend_end));
    }
    let mut inputs = JoinSet::new();
    let sizes = request.tty.then(|| {
        let (sender, receiver) = mpsc::channel(RESIZE_QUEUE);
        io.resize = Some(receiver);
        sender
    });
    inputs.spawn(forward_resizes(resize_source, sizes));
    let session = Session {
        ctx,
        request,
        status: StatusSink::WebSocket(mux.sender(StreamType::Error.channel())),
        status_format: protocol.status,
        transport: Transport::WebSocket(mux),
        inputs,
        outputs,
    };
    session.run(io).await;
}

/// The upgraded connection of a session.
enum Transport {
    Spdy(Connection),
    WebSocket(ChannelMux),
}

impl Transport {
    /// Resolves when the client has gone away.
    async fn peer_gone(&self) {
        match self {
            Transport::Spdy(conn) => {
                conn.closed().await;
            }
            Transport::WebSocket(mux) => mux.peer_gone().await,
        }
    }

    async fn close(self, shutdown: &CancellationToken) {
        match self {
            Transport::Spdy(conn) => conn.close().await,
            Transport::WebSocket(mux) => mux.close(shutdown).await,
        }
    }
}

/// Where the command's end is reported.
enum StatusSink {
    Spdy(Stream),
    WebSocket(ChannelSender),
}

impl StatusSink {
    async fn write(self, outcome: &CommandOutcome, format: StatusFormat) -> io::Result<()> {
        let message = outcome.encode(format);
        match self {
            StatusSink::Spdy(mut stream) => {
                if let Some(message) = message {
                    stream.write_all(&message).await?;
                }
                stream.shutdown().await
            }
            StatusSink::WebSocket(sender) => match message {
                Some(message) => sender.send(message.into()).await,
                None => Ok(()),
            },
        }
    }
}

/// A remote-command session with its streams in place.
struct Session {
    ctx: Arc<SessionContext>,
    request: CommandRequest,
    status: StatusSink,
    status_format: StatusFormat,
    transport: Transport,
    /// Client → backend pumps (stdin, resize); stopped when the command ends.
    inputs: JoinSet<()>,
    /// Backend → client pumps (stdout, stderr); drained when the command ends.
    outputs: JoinSet<()>,
}

impl Session {
    async fn run(self, io: StreamIo) {
        let ctx = self.ctx.clone();
        let call = self.request.run(&ctx, io);
        let result = tokio::select! {
            result = call => Some(result),
            () = self.transport.peer_gone() => {
                debug!("client went away; stopping the command");
                None
            }
            () = ctx.shutdown.cancelled() => {
                debug!("server shutting down; stopping the command");
                None
            }
        };
        if let Some(result) = result {
            let outcome = result.unwrap_or_else(|err| {
                warn!(%err, "remote command failed");
                self.request.failure(&err)
            });
            debug!(?outcome, "remote command ended");
            let Session {
                status,
                status_format,
                transport,
                mut outputs,
                inputs,
                ..
            } = self;
            let deliver = async {
                let drained = tokio::time::timeout(ctx.output_drain_timeout, async {
                    while outputs.join_next().await.is_some() {}
                })
                .await;
                if drained.is_err() {
                    warn!("output still open after the command ended; cutting it off");
                }
                match tokio::time::timeout(
                    ctx.output_drain_timeout,
                    status.write(&outcome, status_format),
                )
                .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => debug!(%err, "writing the exit status failed"),
                    Err(_) => warn!("timed out writing the exit status"),
                }
            };
            tokio::select! {
                () = deliver => {}
                () = transport.peer_gone() => debug!("client went away before the exit status"),
                () = ctx.shutdown.cancelled() => {}
            }
            finish(&ctx, transport, outputs, inputs).await;
        } else {
            finish(&ctx, self.transport, self.outputs, self.inputs).await;
        }
    }
}

async fn finish(
    ctx: &SessionContext,
    transport: Transport,
    mut outputs: JoinSet<()>,
    mut inputs: JoinSet<()>,
) {
    outputs.shutdown().await;
    inputs.shutdown().await;
    transport.close(&ctx.shutdown).await;
}

/// Client stream → backend pipe. Once the backend stops reading, the rest is discarded so
/// the stream stays open (and unreset) until the session closes. When the client has
/// closed its side, this side is closed too.
async fn copy_input(mut source: Stream, mut pipe: DuplexStream) {
    match tokio::io::copy(&mut source, &mut pipe).await {
        Ok(_) => {
            if let Err(err) = pipe.shutdown().await {
                debug!(%err, "closing the backend's stdin failed");
            }
        }
        Err(err) => {
            debug!(%err, "stdin forwarding stopped");
            drop(pipe);
            if tokio::io::copy(&mut source, &mut tokio::io::sink())
                .await
                .is_err()
            {
                return;
            }
        }
    }
    close_after_peer(source).await;
}

/// Half-closes a client-to-server stream whose client side has ended, so that dropping it
/// does not reset it.
async fn close_after_peer<S: AsyncWrite + Unpin>(mut stream: S) {
    if let Err(err) = stream.shutdown().await {
        debug!(%err, "closing an input stream failed");
    }
}

/// Backend pipe → SPDY output stream, then FIN.
async fn copy_output(mut pipe: DuplexStream, mut stream: Stream) {
    match tokio::io::copy(&mut pipe, &mut stream).await {
        Ok(_) => {
            if let Err(err) = stream.shutdown().await {
                debug!(%err, "closing an output stream failed");
            }
        }
        Err(err) => debug!(%err, "output forwarding stopped"),
    }
}

/// Backend pipe → WebSocket output channel.
async fn send_output(pipe: DuplexStream, sender: ChannelSender) {
    if let Err(err) = pump_to_channel(pipe, sender, false).await {
        debug!(%err, "output forwarding stopped");
    }
}

/// Resize stream → terminal sizes for the backend (dropped when `sizes` is `None` or the
/// backend is not keeping up).
async fn forward_resizes<S>(mut source: S, sizes: Option<mpsc::Sender<TerminalSize>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut decoder = ResizeDecoder::default();
    let mut buf = [0u8; 1024];
    loop {
        let read = match source.read(&mut buf).await {
            Ok(0) => {
                close_after_peer(source).await;
                return;
            }
            Ok(read) => read,
            Err(err) => {
                debug!(%err, "resize stream ended");
                return;
            }
        };
        match decoder.push(&buf[..read]) {
            Ok(new_sizes) => {
                for size in new_sizes {
                    debug!(?size, "terminal resized");
                    if let Some(sender) = &sizes {
                        if let Err(mpsc::error::TrySendError::Full(_)) = sender.try_send(size) {
                            debug!(?size, "backend is not reading resize events; dropping one");
                        }
                    }
                }
            }
            Err(err) => {
                warn!(%err, "ignoring the rest of an invalid resize stream");
                // Keep reading so the stream does not back up the connection.
                if tokio::io::copy(&mut source, &mut tokio::io::sink())
                    .await
                    .is_ok()
                {
                    close_after_peer(source).await;
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> CommandRequest {
        CommandRequest {
            target: CommandTarget::Attach {
                container_id: "c".into(),
            },
            stdin,
            stdout,
            stderr,
            tty,
        }
    }

    #[test]
    fn expected_streams_follow_the_request_and_version() {
        assert_eq!(
            request(true, true, false, true).expected_streams(SpdyCommandVersion::V4),
            [
                StreamType::Error,
                StreamType::Stdin,
                StreamType::Stdout,
                StreamType::Resize
            ]
        );
        assert_eq!(
            request(false, true, true, false).expected_streams(SpdyCommandVersion::V4),
            [StreamType::Error, StreamType::Stdout, StreamType::Stderr]
        );
        // v2 has no resize stream even with a tty.
        assert_eq!(
            request(false, true, false, true).expected_streams(SpdyCommandVersion::V2),
            [StreamType::Error, StreamType::Stdout]
        );
    }
}
