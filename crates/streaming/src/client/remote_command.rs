//! `exec` and `attach` as a client: open the streams the request asked for, copy local I/O
//! both ways, and read how the command ended from the error stream.

use std::time::Duration;

use corral_spdy::{Connection, Headers, Stream};
use tokio::io::{duplex, AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{upgrade_spdy, upgrade_websocket, Protocol, Target};
use crate::backend::{BoxReader, BoxWriter, StreamIo, TerminalSize};
use crate::error::StreamingError;
use crate::protocol::{
    encode_resize, CommandOutcome, SpdyCommandVersion, StreamType, STREAM_TYPE_HEADER,
    WS_COMMAND_PROTOCOLS,
};
use crate::websocket::{pump_to_channel, ChannelMux, ChannelSender};

/// How long the server may take to accept the streams (kubectl's limit too).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes buffered between the WebSocket and local output.
const PIPE_CAPACITY: usize = 64 * 1024;

/// Runs the command behind an exec URL with the local `io` and returns its exit code.
///
/// `io` and `tty` must match the CRI `ExecRequest` the URL was made for: a stream is opened
/// for each present field (stdin, stdout, stderr) and, with `tty`, for resize events. Local
/// stdin reaching end-of-file closes the command's stdin (over WebSocket only with
/// `v5.channel.k8s.io`, which the client prefers).
pub async fn exec(
    url: &str,
    protocol: Protocol,
    tty: bool,
    io: StreamIo,
) -> Result<i32, StreamingError> {
    match run(url, protocol, tty, io).await? {
        CommandOutcome::Success => Ok(0),
        CommandOutcome::ExitCode(code) => Ok(code),
        CommandOutcome::Failed(message) => Err(StreamingError::RemoteCommand { message }),
    }
}

/// Attaches the local `io` to the container behind an attach URL until the server ends the
/// session (the container exited or its streams closed). `io` and `tty` as for [`exec`].
pub async fn attach(
    url: &str,
    protocol: Protocol,
    tty: bool,
    io: StreamIo,
) -> Result<(), StreamingError> {
    match run(url, protocol, tty, io).await? {
        CommandOutcome::Success => Ok(()),
        CommandOutcome::ExitCode(code) => Err(StreamingError::RemoteCommand {
            message: format!("exit code {code}"),
        }),
        CommandOutcome::Failed(message) => Err(StreamingError::RemoteCommand { message }),
    }
}

async fn run(
    url: &str,
    protocol: Protocol,
    tty: bool,
    io: StreamIo,
) -> Result<CommandOutcome, StreamingError> {
    let target = Target::parse(url)?;
    match protocol {
        Protocol::Spdy => run_spdy(&target, tty, io).await,
        Protocol::WebSocket => run_websocket(&target, tty, io).await,
    }
}

async fn run_spdy(
    target: &Target,
    tty: bool,
    io: StreamIo,
) -> Result<CommandOutcome, StreamingError> {
    let offered = SpdyCommandVersion::ALL.map(SpdyCommandVersion::name);
    let (upgraded, chosen) = upgrade_spdy(target, &offered).await?;
    // A server that does not negotiate speaks the original protocol.
    let version = if chosen.is_empty() {
        Some(SpdyCommandVersion::V1)
    } else {
        SpdyCommandVersion::from_name(&chosen)
    }
    .ok_or_else(|| StreamingError::Handshake {
        url: target.url().to_owned(),
        reason: format!("server chose unknown protocol {chosen:?}"),
    })?;
    debug!(protocol = version.name(), "SPDY connection upgraded");
    let conn = Connection::client(upgraded);
    let result = spdy_session(&conn, version, tty, io).await;
    conn.close().await;
    result
}

fn open(conn: &Connection, kind: StreamType, fin: bool) -> Result<Stream, StreamingError> {
    let headers: Headers = [(STREAM_TYPE_HEADER, kind.name())].into_iter().collect();
    conn.open_stream(headers, fin)
        .map_err(StreamingError::spdy("opening a stream"))
}

async fn spdy_session(
    conn: &Connection,
    version: SpdyCommandVersion,
    tty: bool,
    io: StreamIo,
) -> Result<CommandOutcome, StreamingError> {
    let StreamIo {
        stdin: local_stdin,
        stdout: local_stdout,
        stderr: local_stderr,
        resize: local_resize,
    } = io;
    // Streams the client only reads are half-closed from the start.
    let mut error = open(conn, StreamType::Error, true)?;
    let stdin = local_stdin
        .is_some()
        .then(|| open(conn, StreamType::Stdin, false))
        .transpose()?;
    let stdout = local_stdout
        .is_some()
        .then(|| open(conn, StreamType::Stdout, true))
        .transpose()?;
    let stderr = local_stderr
        .is_some()
        .then(|| open(conn, StreamType::Stderr, true))
        .transpose()?;
    let resize = (tty && version.supports_resize())
        .then(|| open(conn, StreamType::Resize, false))
        .transpose()?;
    let replies = async {
        for stream in [
            Some(&error),
            stdin.as_ref(),
            stdout.as_ref(),
            stderr.as_ref(),
            resize.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            stream
                .wait_reply()
                .await
                .map_err(StreamingError::spdy("waiting for the stream replies"))?;
        }
        Ok::<(), StreamingError>(())
    };
    tokio::time::timeout(REPLY_TIMEOUT, replies)
        .await
        .map_err(|_| StreamingError::Timeout {
            what: "waiting for the server to accept the streams",
        })??;

    let mut inputs = JoinSet::new();
    if let (Some(source), Some(stream)) = (local_stdin, stdin) {
        inputs.spawn(send_stdin(source, stream));
    }
    // A resize stream nobody feeds stays open (dropping it would reset it).
    let mut idle_resize = None;
    match (local_resize, resize) {
        (Some(sizes), Some(stream)) => {
            inputs.spawn(send_resizes_spdy(sizes, stream));
        }
        (None, Some(stream)) => idle_resize = Some(stream),
        _ => {}
    }
    let (_, _, status) = tokio::join!(
        receive_output(stdout, local_stdout, "stdout"),
        receive_output(stderr, local_stderr, "stderr"),
        async {
            let mut status = Vec::new();
            error.read_to_end(&mut status).await.map(|_| status)
        }
    );
    inputs.shutdown().await;
    drop(idle_resize);
    let status = status.map_err(|err| StreamingError::io("reading the error stream", err))?;
    Ok(CommandOutcome::decode(&status, version.status_format()))
}

/// Local stdin → stdin stream, then FIN.
async fn send_stdin(mut source: BoxReader, mut stream: Stream) {
    let result = async {
        tokio::io::copy(&mut source, &mut stream).await?;
        stream.shutdown().await
    }
    .await;
    if let Err(err) = result {
        debug!(%err, "sending stdin stopped");
    }
}

async fn send_resizes_spdy(mut sizes: mpsc::Receiver<TerminalSize>, mut stream: Stream) {
    while let Some(size) = sizes.recv().await {
        if let Err(err) = stream.write_all(&encode_resize(size)).await {
            debug!(%err, "sending a terminal size failed");
            return;
        }
    }
    // No more sizes: say so, and let the stream close with the session.
    if let Err(err) = stream.shutdown().await {
        debug!(%err, "closing the resize stream failed");
    }
}

/// Remote output → local writer, until the server ends the output.
async fn receive_output<R>(remote: Option<R>, local: Option<BoxWriter>, name: &'static str)
where
    R: AsyncRead + Unpin,
{
    let (Some(mut remote), Some(mut local)) = (remote, local) else {
        return;
    };
    let result = async {
        tokio::io::copy(&mut remote, &mut local).await?;
        local.flush().await
    }
    .await;
    if let Err(err) = result {
        debug!(%err, stream = name, "receiving output stopped");
    }
}

async fn run_websocket(
    target: &Target,
    tty: bool,
    io: StreamIo,
) -> Result<CommandOutcome, StreamingError> {
    // v5 (stdin can be closed), then v4.
    let (socket, protocol) = upgrade_websocket(target, &WS_COMMAND_PROTOCOLS[..2]).await?;
    debug!(protocol = protocol.name, "WebSocket connection upgraded");
    let StreamIo {
        stdin: local_stdin,
        stdout: local_stdout,
        stderr: local_stderr,
        resize: local_resize,
    } = io;
    let mut inbound = Vec::new();
    let mut output_pipe = |kind: StreamType, wanted: bool| {
        wanted.then(|| {
            let (reader, mux_end) = duplex(PIPE_CAPACITY);
            inbound.push((kind.channel(), mux_end));
            reader
        })
    };
    let stdout = output_pipe(StreamType::Stdout, local_stdout.is_some());
    let stderr = output_pipe(StreamType::Stderr, local_stderr.is_some());
    let error = output_pipe(StreamType::Error, true);
    let mux = ChannelMux::start(socket, protocol.framing, protocol.close_signal, inbound);

    let mut inputs = JoinSet::new();
    if let Some(source) = local_stdin {
        let sender = mux.sender(StreamType::Stdin.channel());
        inputs.spawn(async move {
            if let Err(err) = pump_to_channel(source, sender, true).await {
                debug!(%err, "sending stdin stopped");
            }
        });
    }
    if let (true, Some(sizes)) = (tty, local_resize) {
        inputs.spawn(send_resizes_websocket(
            sizes,
            mux.sender(StreamType::Resize.channel()),
        ));
    }
    let (_, _, status) = tokio::join!(
        receive_output(stdout, local_stdout, "stdout"),
        receive_output(stderr, local_stderr, "stderr"),
        async {
            let mut status = Vec::new();
            if let Some(mut error) = error {
                error.read_to_end(&mut status).await?;
            }
            Ok::<_, std::io::Error>(status)
        }
    );
    inputs.shutdown().await;
    mux.close(&CancellationToken::new()).await;
    let status = status.map_err(|err| StreamingError::io("reading the error channel", err))?;
    Ok(CommandOutcome::decode(&status, protocol.status))
}

async fn send_resizes_websocket(mut sizes: mpsc::Receiver<TerminalSize>, sender: ChannelSender) {
    while let Some(size) = sizes.recv().await {
        if let Err(err) = sender.send(encode_resize(size).into()).await {
            debug!(%err, "sending a terminal size failed");
            return;
        }
    }
}
