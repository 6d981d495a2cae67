//! Port-forward as a client: one session per URL, one [`PortForwardStream`] per forwarded
//! connection.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use corral_spdy::{Connection, Headers};
use futures::FutureExt;
use tokio::io::{
    duplex, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf,
};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;

use super::{upgrade_spdy, upgrade_websocket, Protocol, Target};
use crate::error::StreamingError;
use crate::protocol::{
    PORT_FORWARD_DATA, PORT_FORWARD_ERROR, PORT_FORWARD_PROTOCOL, PORT_HEADER, REQUEST_ID_HEADER,
    STREAM_TYPE_HEADER, WS_PORT_FORWARD_PROTOCOLS,
};
use crate::websocket::{pump_to_channel, ChannelMux, ChannelSender};

/// How long the server may take to accept a connection's streams.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes buffered between the session and the caller, per direction.
const PIPE_CAPACITY: usize = 64 * 1024;

/// A port-forward session to one pod.
///
/// Over SPDY, any number of connections to any ports can be opened, concurrently, each with
/// its own request id. Over WebSocket the ports are fixed when connecting and each carries
/// exactly one connection (the channel protocol has one channel pair per port); open a new
/// session (a new URL) for the next one.
///
/// Dropping the forwarder ends the session and every stream opened from it.
pub struct PortForwarder {
    url: String,
    session: Session,
}

enum Session {
    Spdy {
        conn: Connection,
        next_request_id: AtomicU64,
    },
    WebSocket {
        mux: ChannelMux,
        ports: Mutex<Vec<(u16, Option<WsPort>)>>,
    },
}

/// The channels of one port of a WebSocket session, before the port is opened.
struct WsPort {
    data_in: DuplexStream,
    error_in: DuplexStream,
    data_out: ChannelSender,
    peer_gone: CancellationToken,
}

impl std::fmt::Debug for PortForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let protocol = match self.session {
            Session::Spdy { .. } => Protocol::Spdy,
            Session::WebSocket { .. } => Protocol::WebSocket,
        };
        f.debug_struct("PortForwarder")
            .field("url", &self.url)
            .field("protocol", &protocol)
            .finish()
    }
}

impl PortForwarder {
    /// Upgrades a port-forward URL. `ports` are the remote ports to use over WebSocket (sent
    /// as `?port=` parameters); SPDY names the port per connection and ignores them.
    pub async fn connect(
        url: &str,
        protocol: Protocol,
        ports: &[u16],
    ) -> Result<PortForwarder, StreamingError> {
        let target = Target::parse(url)?;
        let session = match protocol {
            Protocol::Spdy => connect_spdy(&target).await?,
            Protocol::WebSocket => connect_websocket(&target, ports).await?,
        };
        Ok(PortForwarder {
            url: url.to_owned(),
            session,
        })
    }

    /// Opens a connection to `port` in the pod.
    pub async fn open(&self, port: u16) -> Result<PortForwardStream, StreamingError> {
        match &self.session {
            Session::Spdy {
                conn,
                next_request_id,
            } => {
                let request_id = next_request_id.fetch_add(1, Ordering::Relaxed);
                open_spdy(conn, port, request_id).await
            }
            Session::WebSocket { ports, .. } => {
                let channels = {
                    let mut ports = ports.lock().unwrap_or_else(PoisonError::into_inner);
                    ports
                        .iter_mut()
                        .filter(|(candidate, _)| *candidate == port)
                        .find_map(|(_, channels)| channels.take())
                };
                match channels {
                    Some(channels) => Ok(open_websocket(port, channels)),
                    None => Err(StreamingError::PortForward {
                        port,
                        message: "not a port of this WebSocket session, or already opened \
                                  (one connection per port and session)"
                            .to_owned(),
                    }),
                }
            }
        }
    }

    /// Forwards `local` to `port` until both sides are done; returns the server's error for
    /// the connection, if it reported one.
    pub async fn forward(&self, mut local: TcpStream, port: u16) -> Result<(), StreamingError> {
        let mut remote = self.open(port).await?;
        if let Err(err) = tokio::io::copy_bidirectional(&mut local, &mut remote).await {
            debug!(%err, port, "port-forward copy ended with an error");
        }
        remote.finish().await
    }

    /// Ends the session: closes its connection and waits (bounded) for it to go down.
    pub async fn close(self) {
        match self.session {
            Session::Spdy { conn, .. } => conn.close().await,
            Session::WebSocket { mux, .. } => mux.close(&CancellationToken::new()).await,
        }
    }
}

async fn connect_spdy(target: &Target) -> Result<Session, StreamingError> {
    let (upgraded, chosen) = upgrade_spdy(target, &[PORT_FORWARD_PROTOCOL]).await?;
    if chosen != PORT_FORWARD_PROTOCOL {
        return Err(StreamingError::Handshake {
            url: target.url().to_owned(),
            reason: format!("server chose protocol {chosen:?}"),
        });
    }
    Ok(Session::Spdy {
        conn: Connection::client(upgraded),
        next_request_id: AtomicU64::new(0),
    })
}

async fn connect_websocket(target: &Target, ports: &[u16]) -> Result<Session, StreamingError> {
    if ports.is_empty() || ports.len() > 127 {
        return Err(StreamingError::InvalidUrl {
            url: target.url().to_owned(),
            reason: "a WebSocket port-forward needs 1 to 127 ports".to_owned(),
        });
    }
    let query = ports
        .iter()
        .map(|port| format!("{PORT_HEADER}={port}"))
        .collect::<Vec<_>>()
        .join("&");
    let target = target.with_query(&query);
    let (socket, protocol) = upgrade_websocket(&target, &WS_PORT_FORWARD_PROTOCOLS[..1]).await?;
    debug!(
        protocol = protocol.name,
        ?ports,
        "WebSocket port-forward upgraded"
    );
    let mut inbound = Vec::new();
    let mut pipes = Vec::new();
    for (channel, _) in (0u8..).step_by(2).zip(ports) {
        let (data_in, data_mux_end) = duplex(PIPE_CAPACITY);
        let (error_in, error_mux_end) = duplex(PIPE_CAPACITY);
        inbound.push((channel, data_mux_end));
        inbound.push((channel + 1, error_mux_end));
        pipes.push((channel, data_in, error_in));
    }
    let mux = ChannelMux::start(socket, protocol.framing, false, inbound);
    let ports = ports
        .iter()
        .zip(pipes)
        .map(|(port, (channel, data_in, error_in))| {
            let channels = WsPort {
                data_in,
                error_in,
                data_out: mux.sender(channel),
                peer_gone: mux.peer_gone_token(),
            };
            (*port, Some(channels))
        })
        .collect();
    Ok(Session::WebSocket {
        mux,
        ports: Mutex::new(ports),
    })
}

async fn open_spdy(
    conn: &Connection,
    port: u16,
    request_id: u64,
) -> Result<PortForwardStream, StreamingError> {
    let headers = |role: &str| -> Headers {
        [
            (STREAM_TYPE_HEADER, role.to_owned()),
            (PORT_HEADER, port.to_string()),
            (REQUEST_ID_HEADER, request_id.to_string()),
        ]
        .into_iter()
        .collect()
    };
    // kubectl's order: the error stream (which the client never writes), then the data.
    let mut error = conn
        .open_stream(headers(PORT_FORWARD_ERROR), true)
        .map_err(StreamingError::spdy("opening a port-forward error stream"))?;
    let mut data = conn
        .open_stream(headers(PORT_FORWARD_DATA), false)
        .map_err(StreamingError::spdy("opening a port-forward data stream"))?;
    let replies = async {
        error.wait_reply().await?;
        data.wait_reply().await
    };
    tokio::time::timeout(REPLY_TIMEOUT, replies)
        .await
        .map_err(|_| StreamingError::Timeout {
            what: "waiting for the server to accept a port-forward connection",
        })?
        .map_err(StreamingError::spdy(
            "waiting for the port-forward stream replies",
        ))?;
    let (user_end, mut pump_end) = duplex(PIPE_CAPACITY);
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        if let Err(err) = tokio::io::copy_bidirectional(&mut pump_end, &mut data).await {
            debug!(%err, port, "port-forward data stream ended with an error");
        }
    });
    let report = AbortOnDropHandle::new(tokio::spawn(async move {
        let mut message = Vec::new();
        match error.read_to_end(&mut message).await {
            Ok(_) => String::from_utf8_lossy(&message).into_owned(),
            Err(err) => format!("reading the error stream: {err}"),
        }
    }));
    Ok(PortForwardStream {
        io: user_end,
        port,
        errors: ErrorReport::Spdy(report),
        _tasks: tasks,
    })
}

fn open_websocket(port: u16, channels: WsPort) -> PortForwardStream {
    let WsPort {
        mut data_in,
        mut error_in,
        data_out,
        peer_gone,
    } = channels;
    let (user_end, pump_end) = duplex(PIPE_CAPACITY);
    let (mut from_user, mut to_user) = tokio::io::split(pump_end);
    let message = Arc::new(Mutex::new(String::new()));
    let error_seen = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let seen = error_seen.clone();
    tasks.spawn(async move {
        let copy = async {
            skip_port_prefix(&mut data_in).await?;
            tokio::io::copy(&mut data_in, &mut to_user).await
        };
        tokio::select! {
            result = copy => {
                if let Err(err) = result {
                    debug!(%err, port, "port-forward data channel ended with an error");
                }
            }
            () = seen.cancelled() => {}
        }
        // End the caller's reads (the split half alone does not close the pipe).
        let _ = to_user.shutdown().await;
    });
    tasks.spawn(async move {
        if let Err(err) = pump_to_channel(&mut from_user, data_out, false).await {
            debug!(%err, port, "sending port-forward data stopped");
        }
    });
    let collected = message.clone();
    let reader = AbortOnDropHandle::new(tokio::spawn(async move {
        if skip_port_prefix(&mut error_in).await.is_err() {
            return;
        }
        let mut buf = [0u8; 4096];
        while let Ok(read) = error_in.read(&mut buf).await {
            if read == 0 {
                break;
            }
            collected
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_str(&String::from_utf8_lossy(&buf[..read]));
            error_seen.cancel();
        }
    }));
    PortForwardStream {
        io: user_end,
        port,
        errors: ErrorReport::WebSocket {
            message,
            reader,
            peer_gone,
        },
        _tasks: tasks,
    }
}

/// Reads the 2-byte port number each WebSocket port-forward channel starts with.
async fn skip_port_prefix(channel: &mut DuplexStream) -> io::Result<()> {
    let mut prefix = [0u8; 2];
    channel.read_exact(&mut prefix).await?;
    Ok(())
}

/// Where a connection's error report comes from.
enum ErrorReport {
    /// The error stream, read to its end.
    Spdy(AbortOnDropHandle<String>),
    /// The error channel, collected as it arrives; complete once the socket has closed.
    WebSocket {
        message: Arc<Mutex<String>>,
        reader: AbortOnDropHandle<()>,
        peer_gone: CancellationToken,
    },
}

/// One forwarded connection: read what the pod sends, write what it should receive,
/// `shutdown` to half-close (SPDY; WebSocket cannot say so), then [`finish`](Self::finish).
pub struct PortForwardStream {
    io: DuplexStream,
    port: u16,
    errors: ErrorReport,
    _tasks: JoinSet<()>,
}

impl std::fmt::Debug for PortForwardStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortForwardStream")
            .field("port", &self.port)
            .finish()
    }
}

impl PortForwardStream {
    /// The remote port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Ends the connection and returns the server's error for it, if any. Call it after
    /// reading to end-of-file: finishing earlier aborts the connection.
    pub async fn finish(self) -> Result<(), StreamingError> {
        let PortForwardStream {
            io,
            port,
            errors,
            _tasks,
        } = self;
        drop(io);
        let message = match errors {
            ErrorReport::Spdy(report) => report
                .await
                .unwrap_or_else(|err| format!("reading the error stream: {err}")),
            ErrorReport::WebSocket {
                message,
                reader,
                peer_gone,
            } => {
                if peer_gone.is_cancelled() {
                    // The socket is closed: the reader drains what arrived and ends.
                    let _ = reader.await;
                } else {
                    // Whatever is already there (a completed reader or not).
                    let _ = reader.now_or_never();
                }
                let text = message
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                text
            }
        };
        if message.is_empty() {
            Ok(())
        } else {
            Err(StreamingError::PortForward { port, message })
        }
    }
}

impl AsyncRead for PortForwardStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PortForwardStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
