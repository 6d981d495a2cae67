//! Port-forward sessions. Over SPDY the client opens a data and an error stream per
//! connection, paired by their `requestID` header; over WebSocket each requested port has a
//! data channel (2·i) and an error channel (2·i+1), each starting with the port number.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use corral_spdy::{Connection, Headers, RstStatus, Stream};
use tokio::io::{duplex, AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info_span, warn, Instrument};

use super::remote_command::PIPE_CAPACITY;
use super::SessionContext;
use crate::protocol::{
    WsProtocol, PORT_FORWARD_DATA, PORT_FORWARD_ERROR, PORT_HEADER, REQUEST_ID_HEADER,
    STREAM_TYPE_HEADER,
};
use crate::websocket::{pump_to_channel, ChannelMux, ChannelSender};

/// The two roles of port-forward SPDY streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PairRole {
    Data,
    Error,
}

/// The first stream of a request id, waiting for its partner.
struct HalfPair {
    stream: Stream,
    role: PairRole,
    port: u16,
    deadline: Instant,
}

/// Why a stream's headers cannot be used.
fn parse_stream(stream: &Stream) -> Result<(PairRole, u16, String), String> {
    let headers = stream.headers();
    let port = headers
        .get(PORT_HEADER)
        .ok_or_else(|| format!("{PORT_HEADER:?} header is required"))?;
    let port = match port.parse::<u16>() {
        Ok(port) if port > 0 => port,
        _ => return Err(format!("unable to parse {port:?} as a port")),
    };
    let role = match headers.get(STREAM_TYPE_HEADER) {
        Some(PORT_FORWARD_DATA) => PairRole::Data,
        Some(PORT_FORWARD_ERROR) => PairRole::Error,
        Some(other) => return Err(format!("invalid stream type {other:?}")),
        None => return Err(format!("{STREAM_TYPE_HEADER:?} header is required")),
    };
    // Clients too old to send a request id: kubelet pairs an error stream with the data
    // stream opened right after it (the next odd id).
    let request_id = match headers.get(REQUEST_ID_HEADER) {
        Some(id) => id.to_owned(),
        None => match role {
            PairRole::Error => stream.id().to_string(),
            PairRole::Data => stream.id().saturating_sub(2).to_string(),
        },
    };
    Ok((role, port, request_id))
}

/// Serves a port-forward over an upgraded SPDY/3.1 connection until the client closes it.
pub(crate) async fn serve_spdy<T>(io: T, sandbox_id: String, ctx: Arc<SessionContext>)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let conn = Connection::server(io);
    let mut pending: HashMap<String, HalfPair> = HashMap::new();
    let mut forwards = JoinSet::new();
    loop {
        let next_deadline = pending.values().map(|half| half.deadline).min();
        let stream = tokio::select! {
            stream = conn.accept() => match stream {
                Some(stream) => stream,
                None => break,
            },
            () = ctx.shutdown.cancelled() => break,
            Some(_) = forwards.join_next(), if !forwards.is_empty() => continue,
            () = sleep_until(next_deadline), if next_deadline.is_some() => {
                expire_pairs(&mut pending, &mut forwards);
                continue;
            }
        };
        let (role, port, request_id) = match parse_stream(&stream) {
            Ok(parsed) => parsed,
            Err(reason) => {
                warn!(%reason, "refusing a port-forward stream");
                stream.reset(RstStatus::RefusedStream);
                continue;
            }
        };
        if let Err(err) = stream.reply(Headers::new(), false) {
            debug!(%err, "replying to a port-forward stream failed");
            break;
        }
        let Some(first) = pending.remove(&request_id) else {
            pending.insert(
                request_id,
                HalfPair {
                    stream,
                    role,
                    port,
                    deadline: Instant::now() + ctx.stream_creation_timeout,
                },
            );
            continue;
        };
        let (data, error, port) = match (first.role, role) {
            (PairRole::Data, PairRole::Error) => (first.stream, stream, first.port),
            (PairRole::Error, PairRole::Data) => (stream, first.stream, port),
            _ => {
                warn!(%request_id, "second port-forward stream of the same type; refusing it");
                stream.reset(RstStatus::RefusedStream);
                pending.insert(request_id, first);
                continue;
            }
        };
        let span = info_span!("forward", port, %request_id);
        forwards.spawn(
            forward_spdy(ctx.clone(), sandbox_id.clone(), port, data, error).instrument(span),
        );
    }
    forwards.shutdown().await;
    drop(pending);
    conn.close().await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Gives up on half pairs whose partner did not come in time (kubelet's message on the
/// error stream, if that is the one that came).
fn expire_pairs(pending: &mut HashMap<String, HalfPair>, forwards: &mut JoinSet<()>) {
    let now = Instant::now();
    let expired: Vec<String> = pending
        .iter()
        .filter(|(_, half)| half.deadline <= now)
        .map(|(id, _)| id.clone())
        .collect();
    for request_id in expired {
        let Some(half) = pending.remove(&request_id) else {
            continue;
        };
        warn!(%request_id, "timed out waiting for the other port-forward stream");
        if half.role == PairRole::Error {
            let mut stream = half.stream;
            forwards.spawn(async move {
                let message = format!("request {request_id}: timed out waiting for streams");
                // The client may be gone already; nothing else to tell it then.
                let _ = stream.write_all(message.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    }
}

/// One forwarded connection: pod port ↔ data stream; failures reported on the error stream.
async fn forward_spdy(
    ctx: Arc<SessionContext>,
    sandbox_id: String,
    port: u16,
    mut data: Stream,
    mut error: Stream,
) {
    let result = match ctx.backend.port_forward(&sandbox_id, port).await {
        Ok(mut target) => tokio::io::copy_bidirectional(&mut data, &mut target)
            .await
            .map(|(sent, received)| debug!(sent, received, "port-forward connection done"))
            .map_err(|err| err.to_string()),
        Err(err) => Err(err.to_string()),
    };
    if let Err(reason) = result {
        let message = format!("error forwarding port {port} to pod {sandbox_id}, uid : {reason}");
        debug!(%message, "port-forward connection failed");
        // Best effort: the client may have reset the streams already.
        let _ = error.write_all(message.as_bytes()).await;
    }
    let _ = error.shutdown().await;
    let _ = data.shutdown().await;
}

/// Serves a port-forward over an upgraded WebSocket: one connection per port in `ports`.
pub(crate) async fn serve_websocket<S>(
    socket: WebSocketStream<S>,
    protocol: WsProtocol,
    sandbox_id: String,
    ports: Vec<u16>,
    ctx: Arc<SessionContext>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut inbound = Vec::new();
    let mut data_sources = Vec::new();
    for (index, _) in ports.iter().enumerate() {
        let Some(channel) = data_channel(index) else {
            warn!(ports = ports.len(), "too many ports for one WebSocket");
            return;
        };
        let (source, mux_end) = duplex(PIPE_CAPACITY);
        inbound.push((channel, mux_end));
        data_sources.push((channel, source));
    }
    let mux = ChannelMux::start(socket, protocol.framing, false, inbound);
    let mut forwards = JoinSet::new();
    for (port, (channel, source)) in ports.iter().copied().zip(data_sources) {
        let data = mux.sender(channel);
        let error = mux.sender(channel + 1);
        // Each channel starts with its port, little-endian.
        let prefix = Bytes::copy_from_slice(&port.to_le_bytes());
        if data.send(prefix.clone()).await.is_err() || error.send(prefix).await.is_err() {
            break;
        }
        let span = info_span!("forward", port);
        forwards.spawn(
            forward_websocket(ctx.clone(), sandbox_id.clone(), port, source, data, error)
                .instrument(span),
        );
    }
    tokio::select! {
        () = async { while forwards.join_next().await.is_some() {} } => {
            debug!("all forwarded ports closed");
        }
        () = mux.peer_gone() => debug!("client closed the port-forward WebSocket"),
        () = ctx.shutdown.cancelled() => {}
    }
    forwards.shutdown().await;
    mux.close(&ctx.shutdown).await;
}

/// The data channel of the `index`-th port, if it fits in a channel byte (with its error
/// channel after it).
fn data_channel(index: usize) -> Option<u8> {
    u8::try_from(index.checked_mul(2)?.checked_add(1)?)
        .ok()
        .map(|error| error - 1)
}

/// One WebSocket-forwarded port. Ends when the pod side closes: the channel protocol has no
/// way for the client to half-close.
async fn forward_websocket(
    ctx: Arc<SessionContext>,
    sandbox_id: String,
    port: u16,
    mut source: DuplexStream,
    data: ChannelSender,
    error: ChannelSender,
) {
    let result = match ctx.backend.port_forward(&sandbox_id, port).await {
        Ok(target) => {
            let (from_pod, mut to_pod) = target.into_split();
            let upstream = async {
                tokio::io::copy(&mut source, &mut to_pod).await?;
                to_pod.shutdown().await?;
                // The client cannot say more; wait for the pod side to finish.
                std::future::pending::<std::io::Result<()>>().await
            };
            tokio::select! {
                result = upstream => result,
                result = pump_to_channel(from_pod, data, false) => result,
            }
            .map_err(|err| err.to_string())
        }
        Err(err) => Err(err.to_string()),
    };
    if let Err(reason) = result {
        let message = format!("error forwarding port {port} to pod {sandbox_id}, uid : {reason}");
        debug!(%message, "port-forward connection failed");
        // Best effort: the socket may be closing already.
        let _ = error.send(Bytes::from(message)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_numbers_fit_a_byte() {
        assert_eq!(data_channel(0), Some(0));
        assert_eq!(data_channel(3), Some(6));
        assert_eq!(data_channel(127), Some(254));
        assert_eq!(data_channel(128), None);
    }
}
