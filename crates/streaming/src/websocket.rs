//! The Kubernetes channel protocols over WebSocket: each message carries one channel's data,
//! prefixed by the channel number (a byte, or an ASCII digit before base64 text). A
//! [`ChannelMux`] runs one WebSocket and connects its channels to byte pipes.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace};

/// RFC 6455's key suffix for `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The only WebSocket version there is.
pub(crate) const WEBSOCKET_VERSION: &str = "13";
/// v5's control channel: a message `[255, n]` says channel `n` will carry no more data.
const CLOSE_SIGNAL_CHANNEL: u8 = 255;
/// Bytes read from a local source per message.
const CHUNK: usize = 32 * 1024;
/// Messages queued towards the writer task.
const OUTGOING_QUEUE: usize = 64;
/// Time allowed for the closing handshake before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Time still allowed for it once the server is shutting down.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub(crate) fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(ACCEPT_GUID);
    STANDARD.encode(sha1.finalize())
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
pub(crate) fn new_key() -> Result<String, getrandom::Error> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce)?;
    Ok(STANDARD.encode(nonce))
}

/// How channel data travels in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Binary messages: the channel byte, then the data.
    Binary,
    /// Text messages: the channel as the character `'0' + n`, then the data in base64.
    Base64,
}

/// What a received message means.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    Data(u8, Bytes),
    ChannelClosed(u8),
    Ignored,
}

impl Framing {
    fn encode(self, channel: u8, data: &[u8]) -> Message {
        match self {
            Framing::Binary => {
                let mut payload = BytesMut::with_capacity(data.len() + 1);
                payload.extend_from_slice(&[channel]);
                payload.extend_from_slice(data);
                Message::Binary(payload.freeze())
            }
            Framing::Base64 => {
                let digit = char::from(b'0'.saturating_add(channel));
                let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
                text.push(digit);
                STANDARD.encode_string(data, &mut text);
                Message::text(text)
            }
        }
    }

    fn decode(self, message: Message, close_signal: bool) -> Incoming {
        match (self, message) {
            (Framing::Binary, Message::Binary(payload)) => {
                let Some((&channel, data)) = payload.split_first() else {
                    return Incoming::Ignored;
                };
                if channel == CLOSE_SIGNAL_CHANNEL && close_signal {
                    return match data {
                        [closed] => Incoming::ChannelClosed(*closed),
                        _ => Incoming::Ignored,
                    };
                }
                Incoming::Data(channel, payload.slice(1..))
            }
            (Framing::Base64, Message::Text(text)) => {
                let Some((&digit, data)) = text.as_bytes().split_first() else {
                    return Incoming::Ignored;
                };
                let Some(channel) = digit.checked_sub(b'0') else {
                    return Incoming::Ignored;
                };
                match STANDARD.decode(data) {
                    Ok(data) => Incoming::Data(channel, data.into()),
                    Err(err) => {
                        debug!(%err, channel, "dropping a message with invalid base64");
                        Incoming::Ignored
                    }
                }
            }
            _ => Incoming::Ignored,
        }
    }
}

/// A request to the writer task.
#[derive(Debug)]
enum Outgoing {
    Data(u8, Bytes),
    CloseChannel(u8),
    Close,
}

/// One WebSocket carrying numbered channels.
///
/// Received data of each routed channel is written into its pipe (dropped for others); a
/// [`ChannelSender`] sends on a channel. Dropping the mux aborts its tasks and the socket.
pub(crate) struct ChannelMux {
    outgoing: mpsc::Sender<Outgoing>,
    peer_gone: CancellationToken,
    tasks: JoinSet<()>,
}

impl ChannelMux {
    /// Runs `socket`, delivering each `inbound` channel's data into its pipe. With
    /// `close_signal` (v5), [`ChannelSender::close`] is sent on the wire and a received
    /// close signal ends that channel's pipe.
    pub(crate) fn start<S>(
        socket: WebSocketStream<S>,
        framing: Framing,
        close_signal: bool,
        inbound: Vec<(u8, DuplexStream)>,
    ) -> ChannelMux
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sink, stream) = socket.split();
        let (outgoing, queue) = mpsc::channel(OUTGOING_QUEUE);
        let peer_gone = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(run_writer(sink, queue, framing, close_signal));
        tasks.spawn(run_reader(
            stream,
            framing,
            close_signal,
            inbound.into_iter().collect(),
            peer_gone.clone(),
        ));
        ChannelMux {
            outgoing,
            peer_gone,
            tasks,
        }
    }

    /// A sender for `channel`.
    pub(crate) fn sender(&self, channel: u8) -> ChannelSender {
        ChannelSender {
            channel,
            outgoing: self.outgoing.clone(),
        }
    }

    /// Resolves once the peer has closed the socket (or it failed).
    pub(crate) async fn peer_gone(&self) {
        self.peer_gone.cancelled().await;
    }

    /// Cancelled once the peer has closed the socket (or it failed).
    pub(crate) fn peer_gone_token(&self) -> CancellationToken {
        self.peer_gone.clone()
    }

    /// Sends what is queued, then a close frame; waits for the peer to answer it (up to
    /// [`CLOSE_GRACE`], or [`SHUTDOWN_GRACE`] once `shutdown` is cancelled), then drops the
    /// socket and waits for the mux's tasks to end.
    pub(crate) async fn close(mut self, shutdown: &CancellationToken) {
        let closing = async {
            // The writer is gone already if the socket failed; nothing left to close then.
            let _ = self.outgoing.send(Outgoing::Close).await;
            while self.tasks.join_next().await.is_some() {}
        };
        let cut_short = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            closed = tokio::time::timeout(CLOSE_GRACE, closing) => {
                if closed.is_err() {
                    debug!("WebSocket closing handshake did not complete");
                }
            }
            () = cut_short => debug!("WebSocket close cut short by shutdown"),
        }
        self.tasks.shutdown().await;
    }
}

/// Sends on one channel of a [`ChannelMux`].
#[derive(Debug, Clone)]
pub(crate) struct ChannelSender {
    channel: u8,
    outgoing: mpsc::Sender<Outgoing>,
}

impl ChannelSender {
    /// Queues one message of `data` (an empty one is sent too: kubelet's "connected" hint).
    pub(crate) async fn send(&self, data: Bytes) -> io::Result<()> {
        self.outgoing
            .send(Outgoing::Data(self.channel, data))
            .await
            .map_err(|_| closed_error())
    }

    /// Signals the end of this channel's data, where the protocol can say so (v5).
    pub(crate) async fn close(&self) -> io::Result<()> {
        self.outgoing
            .send(Outgoing::CloseChannel(self.channel))
            .await
            .map_err(|_| closed_error())
    }
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket connection closed")
}

/// Sends everything `source` yields on the channel, then (with `signal_end`) the channel's
/// close signal.
pub(crate) async fn pump_to_channel<R>(
    mut source: R,
    sender: ChannelSender,
    signal_end: bool,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        buf.reserve(CHUNK);
        if source.read_buf(&mut buf).await? == 0 {
            break;
        }
        sender.send(buf.split().freeze()).await?;
    }
    if signal_end {
        sender.close().await?;
    }
    Ok(())
}

async fn run_writer<W>(
    mut sink: W,
    mut queue: mpsc::Receiver<Outgoing>,
    framing: Framing,
    close_signal: bool,
) where
    W: futures::Sink<Message> + Unpin,
    W::Error: std::fmt::Display,
{
    while let Some(item) = queue.recv().await {
        let message = match item {
            Outgoing::Data(channel, data) => framing.encode(channel, &data),
            Outgoing::CloseChannel(channel) if close_signal => {
                Message::Binary(Bytes::copy_from_slice(&[CLOSE_SIGNAL_CHANNEL, channel]))
            }
            Outgoing::CloseChannel(_) => continue,
            Outgoing::Close => break,
        };
        if let Err(err) = sink.send(message).await {
            debug!(%err, "WebSocket write failed");
            return;
        }
    }
    let close = Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }));
    if let Err(err) = sink.send(close).await {
        trace!(%err, "sending the WebSocket close frame failed");
    }
}

async fn run_reader<R, E>(
    mut stream: R,
    framing: Framing,
    close_signal: bool,
    mut inbound: HashMap<u8, DuplexStream>,
    peer_gone: CancellationToken,
) where
    R: futures::Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Display,
{
    while let Some(message) = stream.next().await {
        let message = match message {
            Ok(message) => message,
            Err(err) => {
                debug!(%err, "WebSocket read failed");
                break;
            }
        };
        if let Message::Close(frame) = &message {
            debug!(?frame, "WebSocket closed by the peer");
            break;
        }
        match framing.decode(message, close_signal) {
            Incoming::Data(channel, data) if !data.is_empty() => {
                let Some(pipe) = inbound.get_mut(&channel) else {
                    trace!(channel, "dropping data of an unused channel");
                    continue;
                };
                if pipe.write_all(&data).await.is_err() {
                    trace!(
                        channel,
                        "channel reader is gone; dropping its data from now on"
                    );
                    inbound.remove(&channel);
                }
            }
            Incoming::ChannelClosed(channel) => {
                debug!(channel, "peer closed a channel");
                inbound.remove(&channel);
            }
            Incoming::Data(..) | Incoming::Ignored => {}
        }
    }
    peer_gone.cancel();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(new_key().unwrap().len(), 24);
    }

    #[test]
    fn binary_framing_round_trips() {
        let message = Framing::Binary.encode(1, b"hello");
        assert_eq!(message, Message::Binary(Bytes::from_static(b"\x01hello")));
        assert_eq!(
            Framing::Binary.decode(message, false),
            Incoming::Data(1, Bytes::from_static(b"hello"))
        );
        assert_eq!(
            Framing::Binary.decode(Message::Binary(Bytes::new()), false),
            Incoming::Ignored
        );
    }

    #[test]
    fn close_signal_only_with_v5() {
        let signal = Message::Binary(Bytes::from_static(&[255, 0]));
        assert_eq!(
            Framing::Binary.decode(signal.clone(), true),
            Incoming::ChannelClosed(0)
        );
        assert_eq!(
            Framing::Binary.decode(signal, false),
            Incoming::Data(255, Bytes::from_static(&[0]))
        );
    }

    #[test]
    fn base64_framing_round_trips() {
        let message = Framing::Base64.encode(2, b"data\n");
        assert_eq!(message, Message::text("2ZGF0YQo="));
        assert_eq!(
            Framing::Base64.decode(message, false),
            Incoming::Data(2, Bytes::from_static(b"data\n"))
        );
        assert_eq!(
            Framing::Base64.decode(Message::text("1!!"), false),
            Incoming::Ignored
        );
        assert_eq!(
            Framing::Base64.decode(Message::Binary(Bytes::from_static(b"\x01x")), false),
            Incoming::Ignored
        );
    }
}
