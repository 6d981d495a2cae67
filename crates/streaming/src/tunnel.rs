//! SPDY over WebSocket: the tunnel client-go (kubectl >= 1.30, critest's
//! `--websocket-portforward`) opens for port-forward. The WebSocket subprotocol is the SPDY
//! one with a prefix (`SPDY/3.1+portforward.k8s.io`); after the handshake the connection is
//! a plain byte stream carried in binary messages, with message boundaries meaning nothing,
//! and the usual SPDY port-forward session runs over it.
//!
//! tokio-tungstenite gives a stream of messages, not bytes, so [`WsByteStream`] adapts it to
//! `AsyncRead` + `AsyncWrite` here: it is small and nothing well kept does exactly this.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// A WebSocket seen as a byte stream: reads return the payloads of binary messages in order,
/// each write is sent as one binary message.
pub(crate) struct WsByteStream<S> {
    socket: WebSocketStream<S>,
    /// What is left of the last message read.
    pending: Bytes,
    /// Whether the peer closed the WebSocket (reads then return end of file).
    closed: bool,
}

impl<S> WsByteStream<S> {
    pub(crate) fn new(socket: WebSocketStream<S>) -> Self {
        WsByteStream {
            socket,
            pending: Bytes::new(),
            closed: false,
        }
    }
}

fn to_io(err: WsError) -> io::Error {
    match err {
        WsError::Io(err) => err,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "the WebSocket is closed")
        }
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsByteStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() && !this.closed {
            match Pin::new(&mut this.socket).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) | Poll::Ready(Some(Ok(Message::Close(_)))) => {
                    this.closed = true;
                }
                Poll::Ready(Some(Ok(Message::Binary(data)))) => this.pending = data,
                Poll::Ready(Some(Ok(Message::Text(_)))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a SPDY tunnel carries binary WebSocket messages only",
                    )));
                }
                // Pings are answered by tungstenite itself.
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(to_io(err))),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsByteStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut socket = Pin::new(&mut this.socket);
        match socket.as_mut().poll_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(err)) => return Poll::Ready(Err(to_io(err))),
            Poll::Ready(Ok(())) => {}
        }
        socket
            .as_mut()
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(to_io)?;
        // Start sending now; a writer that never flushes still gets its data through.
        if let Poll::Ready(Err(err)) = socket.poll_flush(cx) {
            return Poll::Ready(Err(to_io(err)));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket)
            .poll_flush(cx)
            .map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.get_mut().socket).poll_close(cx) {
            Poll::Ready(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                Poll::Ready(Ok(()))
            }
            other => other.map_err(to_io),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    async fn pair() -> (
        WsByteStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        (WsByteStream::new(server), client)
    }

    #[tokio::test]
    async fn bytes_cross_message_boundaries_both_ways() {
        let (mut tunnel, mut peer) = pair().await;
        peer.send(Message::Binary(Bytes::from_static(b"hel")))
            .await
            .unwrap();
        peer.send(Message::Ping(Bytes::from_static(b"p")))
            .await
            .unwrap();
        peer.send(Message::Binary(Bytes::from_static(b"lo world")))
            .await
            .unwrap();
        let mut got = [0u8; 11];
        tunnel.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");

        tunnel.write_all(b"back").await.unwrap();
        tunnel.flush().await.unwrap();
        loop {
            match peer.next().await.unwrap().unwrap() {
                Message::Binary(data) => {
                    assert_eq!(&data[..], b"back");
                    break;
                }
                Message::Pong(data) => assert_eq!(&data[..], b"p"),
                other => panic!("unexpected {other:?}"),
            }
        }

        peer.close(None).await.unwrap();
        let mut rest = Vec::new();
        tunnel.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn text_messages_are_refused() {
        let (mut tunnel, mut peer) = pair().await;
        peer.send(Message::text("nope")).await.unwrap();
        let err = tunnel.read_u8().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
