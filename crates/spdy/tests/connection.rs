//! Connection-level tests: client and server over `tokio::io::duplex`, and a raw peer that
//! speaks frames through the public codec to check what goes over the wire.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use corral_spdy::{
    CloseReason, Config, Connection, Frame, FrameDecoder, FrameEncoder, GoAwayStatus, Headers,
    PeerFlowControl, Role, RstStatus, Setting, SpdyError, Stream,
};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Deadlock guard only: no test asserts on timing.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish"))
}

fn enforcing() -> Config {
    Config {
        peer_flow_control: PeerFlowControl::Enforce,
        ..Config::default()
    }
}

fn pair(client: Config, server: Config) -> (Connection, Connection) {
    let (a, b) = duplex(64 * 1024);
    (
        Connection::with_config(a, Role::Client, client),
        Connection::with_config(b, Role::Server, server),
    )
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().copied().collect()
}

/// Deterministic, non-periodic test data.
fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

async fn read_all(stream: &mut Stream) -> Vec<u8> {
    let mut data = Vec::new();
    stream.read_to_end(&mut data).await.expect("read to end");
    data
}

/// Sends `outgoing`, half-closes, reads the peer's data to end-of-file.
async fn exchange(mut stream: Stream, outgoing: Vec<u8>) -> (Stream, Vec<u8>) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let write = async move {
        writer.write_all(&outgoing).await.expect("write");
        writer.shutdown().await.expect("shutdown");
        writer
    };
    let read = async move {
        let mut data = Vec::new();
        reader.read_to_end(&mut data).await.expect("read");
        (reader, data)
    };
    let (writer, (reader, data)) = tokio::join!(write, read);
    stream = reader.unsplit(writer);
    (stream, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_both_ways_with_flow_control() {
    // Enforce on both sides: a receiver resets any stream whose window is overrun, so intact
    // data means the senders waited for WINDOW_UPDATE (each stream carries > 64 KiB).
    let (client, server) = pair(enforcing(), enforcing());
    const LEN: usize = 300 * 1024;

    let server_side = async {
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let stream = server.accept().await.expect("accept");
            stream.reply(Headers::new(), false).expect("reply");
            tasks.push(tokio::spawn(async move {
                let seed: u32 = stream.headers().get("seed").unwrap().parse().unwrap();
                let (stream, received) = exchange(stream, pattern(seed + 100, LEN)).await;
                assert_eq!(received, pattern(seed, LEN), "stream {}", stream.id());
                stream.id()
            }));
        }
        // Streams opened by the server: even ids.
        for seed in [7u32, 8] {
            let mut stream = server
                .open_stream(headers(&[("seed", &seed.to_string())]), false)
                .expect("server open");
            assert_eq!(stream.id() % 2, 0);
            tasks.push(tokio::spawn(async move {
                stream.wait_reply().await.expect("reply");
                stream.write_all(&pattern(seed, LEN)).await.expect("write");
                stream.shutdown().await.expect("shutdown");
                assert_eq!(read_all(&mut stream).await, b"thanks");
                stream.id()
            }));
        }
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.expect("server task"));
        }
        ids
    };

    let client_side = async {
        let mut tasks = Vec::new();
        for seed in 1u32..=3 {
            let stream = client
                .open_stream(
                    headers(&[("streamtype", "data"), ("seed", &seed.to_string())]),
                    false,
                )
                .expect("open");
            assert_eq!(stream.id() % 2, 1);
            tasks.push(tokio::spawn(async move {
                stream.wait_reply().await.expect("reply");
                let (_stream, received) = exchange(stream, pattern(seed, LEN)).await;
                assert_eq!(received, pattern(seed + 100, LEN));
            }));
        }
        for _ in 0..2 {
            let mut stream = client.accept().await.expect("accept server stream");
            stream.reply(Headers::new(), false).expect("reply");
            tasks.push(tokio::spawn(async move {
                let seed: u32 = stream.headers().get("seed").unwrap().parse().unwrap();
                assert_eq!(read_all(&mut stream).await, pattern(seed, LEN));
                stream.write_all(b"thanks").await.expect("write");
                stream.shutdown().await.expect("shutdown");
            }));
        }
        for task in tasks {
            task.await.expect("client task");
        }
    };

    let (mut ids, ()) = within("exchange", async { tokio::join!(server_side, client_side) }).await;
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    client.close().await;
    assert_eq!(
        within("server end", server.closed()).await,
        CloseReason::PeerGoAway {
            last_good_stream_id: 4,
            status: GoAwayStatus::Ok
        }
    );
}

#[tokio::test]
async fn half_close_headers_and_replies() {
    let (client, server) = pair(Config::default(), Config::default());
    let mut stream = client
        .open_stream(headers(&[("streamtype", "error"), ("Port", "8080")]), false)
        .unwrap();
    let mut accepted = within("accept", server.accept()).await.unwrap();
    assert_eq!(accepted.headers().get("streamtype"), Some("error"));
    assert_eq!(accepted.headers().get("port"), Some("8080"));
    accepted
        .reply(headers(&[("x-reply", "yes")]), false)
        .unwrap();
    assert!(
        accepted.reply(Headers::new(), false).is_err(),
        "second reply"
    );
    assert_eq!(
        within("reply", stream.wait_reply())
            .await
            .unwrap()
            .get("x-reply"),
        Some("yes")
    );
    assert!(
        stream.reply(Headers::new(), false).is_err(),
        "reply on own stream"
    );

    stream.write_all(b"request").await.unwrap();
    stream.shutdown().await.unwrap();
    assert!(stream.write_all(b"more").await.is_err(), "write after FIN");
    assert_eq!(within("read", read_all(&mut accepted)).await, b"request");

    accepted
        .send_headers(headers(&[("x-status", "0")]), false)
        .unwrap();
    accepted.write_all(b"response").await.unwrap();
    accepted.shutdown().await.unwrap();
    assert_eq!(within("read", read_all(&mut stream)).await, b"response");
    assert_eq!(stream.extra_headers().get("x-status"), Some("0"));
}

#[tokio::test]
async fn writing_first_sends_an_implicit_reply() {
    let (client, server) = pair(Config::default(), Config::default());
    let mut stream = client
        .open_stream(headers(&[("streamtype", "stdout")]), false)
        .unwrap();
    let mut accepted = within("accept", server.accept()).await.unwrap();
    accepted.write_all(b"out").await.unwrap();
    accepted.shutdown().await.unwrap();
    assert!(within("reply", stream.wait_reply())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(read_all(&mut stream).await, b"out");

    // A stream opened half-closed, answered by a reply with FIN: both directions closed.
    let mut done = client
        .open_stream(headers(&[("streamtype", "resize")]), true)
        .unwrap();
    let accepted = within("accept", server.accept()).await.unwrap();
    accepted.reply(Headers::new(), true).unwrap();
    assert!(done.write_all(b"x").await.is_err());
    assert!(within("read", read_all(&mut done)).await.is_empty());
}

#[tokio::test]
async fn many_streams_share_the_header_compression_contexts() {
    let (client, server) = pair(Config::default(), Config::default());
    let opener = async {
        let mut streams = Vec::new();
        for i in 0..300 {
            let kind = ["stdin", "stdout", "stderr", "error", "resize"][i % 5];
            let mut h = headers(&[("streamtype", kind), ("requestid", &i.to_string())]);
            if i % 10 == 0 {
                h.append("x-long", "z".repeat(i + 1));
            }
            streams.push(client.open_stream(h, true).unwrap());
        }
        streams
    };
    let acceptor = async {
        for i in 0..300 {
            let stream = server.accept().await.unwrap();
            assert_eq!(
                stream.headers().get("requestid"),
                Some(i.to_string().as_str())
            );
            if i % 10 == 0 {
                assert_eq!(stream.headers().get("x-long").map(str::len), Some(i + 1));
            }
            stream
                .reply(headers(&[("requestid", &i.to_string())]), true)
                .unwrap();
            drop(stream);
        }
    };
    let (streams, ()) = within("streams", async { tokio::join!(opener, acceptor) }).await;
    for (i, stream) in streams.iter().enumerate() {
        let reply = within("reply", stream.wait_reply()).await.unwrap();
        assert_eq!(reply.get("requestid"), Some(i.to_string().as_str()));
    }
}

#[tokio::test]
async fn ping_both_ways() {
    let (client, server) = pair(Config::default(), Config::default());
    within("client ping", client.ping()).await.unwrap();
    within("server ping", server.ping()).await.unwrap();
    within("second client ping", client.ping()).await.unwrap();
}

#[tokio::test]
async fn reset_reaches_the_peer() {
    let (client, server) = pair(Config::default(), Config::default());
    let mut stream = client
        .open_stream(headers(&[("streamtype", "data")]), false)
        .unwrap();
    let mut accepted = within("accept", server.accept()).await.unwrap();
    accepted.reply(Headers::new(), false).unwrap();
    stream.write_all(b"partial").await.unwrap();
    stream.flush().await.unwrap();
    stream.reset(RstStatus::Cancel);
    assert!(stream.write_all(b"x").await.is_err());

    let mut buf = vec![0u8; 7];
    accepted.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, b"partial");
    let err = within("read after reset", accepted.read(&mut buf))
        .await
        .unwrap_err();
    let spdy = err.get_ref().and_then(|e| e.downcast_ref::<SpdyError>());
    assert!(
        matches!(
            spdy,
            Some(SpdyError::StreamReset {
                status: RstStatus::Cancel,
                by_peer: true,
                ..
            })
        ),
        "{err}"
    );
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);

    // The server resets a stream the client is waiting on.
    let waiting = client
        .open_stream(headers(&[("streamtype", "stdin")]), false)
        .unwrap();
    let refused = within("accept", server.accept()).await.unwrap();
    refused.reset(RstStatus::RefusedStream);
    let err = within("reply", waiting.wait_reply()).await.unwrap_err();
    assert!(
        matches!(
            err,
            SpdyError::StreamReset {
                status: RstStatus::RefusedStream,
                by_peer: true,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn dropped_stream_is_cancelled() {
    let (client, server) = pair(Config::default(), Config::default());
    let stream = client
        .open_stream(headers(&[("streamtype", "data")]), false)
        .unwrap();
    let mut accepted = within("accept", server.accept()).await.unwrap();
    drop(stream);
    let mut buf = [0u8; 1];
    let err = within("read", accepted.read(&mut buf)).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_one_side_ends_the_other() {
    let (client, server) = pair(Config::default(), Config::default());
    let mut stream = client
        .open_stream(headers(&[("streamtype", "stdout")]), false)
        .unwrap();
    let mut accepted = within("accept", server.accept()).await.unwrap();
    accepted.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    stream.read_exact(&mut buf).await.unwrap();

    // Keep a blocked reader and a blocked writer on the server side.
    let blocked_read = tokio::spawn(async move {
        let mut data = Vec::new();
        accepted.read_to_end(&mut data).await
    });
    drop(stream);
    drop(client);

    let reason = within("server end", server.closed()).await;
    assert_eq!(
        reason,
        CloseReason::PeerGoAway {
            last_good_stream_id: 0,
            status: GoAwayStatus::Ok
        }
    );
    assert!(server.is_terminated());
    assert!(within("blocked read", blocked_read).await.unwrap().is_err());
    assert!(within("accept", server.accept()).await.is_none());
    assert!(matches!(
        server.open_stream(Headers::new(), false),
        Err(SpdyError::ConnectionClosed(_))
    ));
    assert!(server.ping().await.is_err());
}

#[tokio::test]
async fn close_ends_own_tasks_and_refuses_new_streams() {
    let (client, server) = pair(Config::default(), Config::default());
    let open = client
        .open_stream(headers(&[("streamtype", "error")]), false)
        .unwrap();
    let _accepted = within("accept", server.accept()).await.unwrap();
    within("close", server.close()).await;
    assert!(server.is_terminated());
    assert_eq!(server.close_reason(), Some(CloseReason::Local));

    let reason = within("client end", client.closed()).await;
    assert!(matches!(
        reason,
        CloseReason::PeerGoAway {
            status: GoAwayStatus::Ok,
            ..
        }
    ));
    assert!(client.is_terminated());
    assert!(client.open_stream(Headers::new(), false).is_err());
    assert!(open.wait_reply().await.is_err());
}

#[tokio::test]
async fn transport_loss_fails_open_streams() {
    let (io, raw) = duplex(4096);
    let server = Connection::server(io);
    let mut peer = RawPeer::new(raw);
    peer.send(syn_stream(1, &[("streamtype", "stdin")], false))
        .await;
    peer.send(data(1, b"abc", false)).await;
    let mut stream = within("accept", server.accept()).await.unwrap();
    let mut buf = [0u8; 3];
    stream.read_exact(&mut buf).await.unwrap();
    drop(peer);
    assert_eq!(
        within("server end", server.closed()).await,
        CloseReason::PeerEof
    );
    let err = stream.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
    assert!(stream.write_all(b"x").await.is_err());
}

/// A peer that speaks raw frames.
struct RawPeer {
    io: DuplexStream,
    encoder: FrameEncoder,
    decoder: FrameDecoder,
    buf: BytesMut,
}

impl RawPeer {
    fn new(io: DuplexStream) -> Self {
        RawPeer {
            io,
            encoder: FrameEncoder::new().unwrap(),
            decoder: FrameDecoder::new(),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        self.encoder.encode(&frame, &mut out).unwrap();
        self.io.write_all(&out).await.unwrap();
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// The next frame, or `None` at end-of-file.
    async fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(frame);
            }
            let n = within("raw read", self.io.read_buf(&mut self.buf))
                .await
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Sends PING `id`; the next frame but SETTINGS and WINDOW_UPDATEs must be its echo.
    async fn ping_echoed(&mut self, id: u32) {
        self.send(Frame::Ping { id }).await;
        assert_eq!(self.recv_skipping_windows().await, Some(Frame::Ping { id }));
    }

    /// The next frame that is not SETTINGS or a WINDOW_UPDATE.
    async fn recv_skipping_windows(&mut self) -> Option<Frame> {
        loop {
            match self.recv().await? {
                Frame::Settings { .. } | Frame::WindowUpdate { .. } => {}
                frame => return Some(frame),
            }
        }
    }
}

fn syn_stream(stream_id: u32, pairs: &[(&str, &str)], fin: bool) -> Frame {
    Frame::SynStream {
        stream_id,
        associated_stream_id: 0,
        priority: 0,
        slot: 0,
        fin,
        unidirectional: false,
        headers: headers(pairs),
    }
}

fn data(stream_id: u32, bytes: &[u8], fin: bool) -> Frame {
    Frame::Data {
        stream_id,
        fin,
        data: Bytes::copy_from_slice(bytes),
    }
}

#[tokio::test]
async fn connection_starts_with_settings_and_session_window() {
    let (io, raw) = duplex(4096);
    let _client = Connection::client(io);
    let mut peer = RawPeer::new(raw);
    assert_eq!(
        peer.recv().await,
        Some(Frame::Settings {
            clear_persisted: false,
            entries: vec![Setting {
                flags: 0,
                id: Setting::INITIAL_WINDOW_SIZE,
                value: 64 * 1024
            }]
        })
    );
    assert_eq!(
        peer.recv().await,
        Some(Frame::WindowUpdate {
            stream_id: 0,
            delta: 1024 * 1024 - 64 * 1024
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_waits_for_stream_and_session_windows() {
    let (io, raw) = duplex(256 * 1024);
    let client = Connection::with_config(io, Role::Client, enforcing());
    let mut peer = RawPeer::new(raw);
    const LEN: usize = 200 * 1024;

    let mut stream = client
        .open_stream(headers(&[("streamtype", "stdin")]), false)
        .unwrap();
    let writer = tokio::spawn(async move {
        stream.write_all(&pattern(1, LEN)).await.unwrap();
        stream.shutdown().await.unwrap();
        stream
    });

    let Some(Frame::SynStream { stream_id: 1, .. }) = peer.recv_skipping_windows().await else {
        panic!("expected SYN_STREAM");
    };
    peer.send(Frame::SynReply {
        stream_id: 1,
        fin: false,
        headers: Headers::new(),
    })
    .await;
    let mut received = Vec::new();
    while received.len() < 64 * 1024 {
        match peer.recv_skipping_windows().await {
            Some(Frame::Data { data, .. }) => received.extend_from_slice(&data),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received.len(), 64 * 1024, "sent beyond the initial window");
    // The client is out of window: nothing but the PING echo may come now.
    peer.ping_echoed(2).await;

    // More stream window alone is not enough: the session window is exhausted too.
    peer.send(Frame::WindowUpdate {
        stream_id: 1,
        delta: 1 << 20,
    })
    .await;
    peer.ping_echoed(4).await;

    peer.send(Frame::WindowUpdate {
        stream_id: 0,
        delta: 1 << 20,
    })
    .await;
    loop {
        match peer.recv_skipping_windows().await {
            Some(Frame::Data { data, fin, .. }) => {
                received.extend_from_slice(&data);
                if fin {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received, pattern(1, LEN));
    within("writer", writer).await.unwrap();
}

#[tokio::test]
async fn window_updates_follow_consumption() {
    let (io, raw) = duplex(256 * 1024);
    let server = Connection::with_config(io, Role::Server, enforcing());
    let mut peer = RawPeer::new(raw);
    peer.send(syn_stream(1, &[("streamtype", "stdin")], false))
        .await;
    for chunk in pattern(3, 64 * 1024).chunks(16 * 1024) {
        peer.send(data(1, chunk, false)).await;
    }
    let mut stream = within("accept", server.accept()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    within("read", stream.read_exact(&mut buf)).await.unwrap();
    assert_eq!(buf, pattern(3, 64 * 1024));

    let mut returned = 0u32;
    while returned < 32 * 1024 {
        match peer.recv().await {
            Some(Frame::WindowUpdate {
                stream_id: 1,
                delta,
            }) => returned += delta,
            Some(Frame::WindowUpdate { stream_id: 0, .. } | Frame::Settings { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(returned <= 64 * 1024);

    // The peer may now send `returned` bytes; one more is a flow-control violation for an
    // enforcing receiver.
    peer.send(data(1, &vec![0u8; returned as usize + 1], false))
        .await;
    loop {
        match peer.recv().await {
            Some(Frame::RstStream {
                stream_id: 1,
                status,
            }) => {
                assert_eq!(status, RstStatus::FlowControlError);
                break;
            }
            Some(Frame::WindowUpdate { .. } | Frame::SynReply { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Reads the server's DATA on `stream_id` until FIN, echoing PINGs like moby/spdystream
/// (which sends neither SETTINGS nor WINDOW_UPDATE). Returns the data and the PINGs echoed.
async fn drain_like_spdystream(peer: &mut RawPeer, stream_id: u32) -> (Vec<u8>, usize) {
    let mut received = Vec::new();
    let mut pings = 0;
    loop {
        match peer.recv_skipping_windows().await {
            Some(Frame::Ping { id }) => {
                assert_eq!(id % 2, 0, "server pings are even");
                pings += 1;
                peer.send(Frame::Ping { id }).await;
            }
            Some(Frame::Data {
                stream_id: id,
                data,
                fin,
            }) if id == stream_id => {
                received.extend_from_slice(&data);
                if fin {
                    return (received, pings);
                }
            }
            Some(Frame::SynReply { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Accepts the peer's stdout stream (`stream_id`) and writes `len` bytes of pattern 6 to it
/// while the peer drains it as spdystream does; the writer task, what the peer received and
/// how many PINGs it was sent.
async fn serve_stdout_to(
    server: &Connection,
    peer: &mut RawPeer,
    stream_id: u32,
    len: usize,
) -> (tokio::task::JoinHandle<Stream>, Vec<u8>, usize) {
    let mut stdout = within("accept", server.accept()).await.unwrap();
    let outgoing = pattern(6, len);
    let writer = tokio::spawn(async move {
        stdout.write_all(&outgoing).await.unwrap();
        stdout.shutdown().await.unwrap();
        stdout
    });
    let (received, pings) = drain_like_spdystream(peer, stream_id).await;
    (writer, received, pings)
}

/// A server connection in detect mode and the raw peer on its other end.
fn server_and_raw_peer() -> (Connection, RawPeer) {
    let (io, raw) = duplex(256 * 1024);
    (Connection::server(io), RawPeer::new(raw))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_mode_probes_a_silent_peer_with_ping() {
    let (server, mut peer) = server_and_raw_peer();
    const LEN: usize = 300 * 1024;

    peer.send(syn_stream(1, &[("streamtype", "stdout")], false))
        .await;
    let (writer, received, pings) = serve_stdout_to(&server, &mut peer, 1, LEN).await;
    assert_eq!(received, pattern(6, LEN));
    assert_eq!(pings, 1, "one PING probe, then no more waiting for windows");
    within("writer", writer).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_mode_serves_a_peer_that_overruns_windows() {
    let (server, mut peer) = server_and_raw_peer();
    const LEN: usize = 300 * 1024;

    // The peer ignores the server's window: 300 KiB in big frames, then FIN.
    peer.send(syn_stream(1, &[("streamtype", "stdin")], false))
        .await;
    let incoming = pattern(5, LEN);
    for chunk in incoming.chunks(100 * 1024) {
        peer.send(data(1, chunk, false)).await;
    }
    peer.send(data(1, b"", true)).await;
    peer.send(syn_stream(3, &[("streamtype", "stdout")], false))
        .await;

    let mut stdin = within("accept", server.accept()).await.unwrap();
    stdin.reply(Headers::new(), false).unwrap();
    assert_eq!(within("read", read_all(&mut stdin)).await, incoming);

    // The overrun showed the peer does no flow control: no probe is needed.
    let (writer, received, pings) = serve_stdout_to(&server, &mut peer, 3, LEN).await;
    assert_eq!(received, pattern(6, LEN));
    assert_eq!(pings, 0);
    within("writer", writer).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_pauses_on_a_full_buffer_without_losing_data() {
    let config = Config {
        max_stream_buffer: 64 * 1024,
        ..Config::default()
    };
    let (io, raw) = duplex(16 * 1024);
    let server = Connection::with_config(io, Role::Server, config);
    let mut peer = RawPeer::new(raw);
    const LEN: usize = 1024 * 1024;

    let flood = tokio::spawn(async move {
        // Stream 1 is flooded and read late; stream 3 is flooded and dropped unread.
        peer.send(syn_stream(1, &[("streamtype", "stdin")], false))
            .await;
        peer.send(syn_stream(3, &[("streamtype", "data")], false))
            .await;
        for chunk in pattern(9, LEN).chunks(64 * 1024) {
            peer.send(data(3, chunk, false)).await;
            peer.send(data(1, chunk, false)).await;
        }
        peer.send(data(1, b"", true)).await;
        peer
    });
    let mut first = within("accept", server.accept()).await.unwrap();
    let second = within("accept", server.accept()).await.unwrap();
    drop(second);
    assert_eq!(within("read", read_all(&mut first)).await, pattern(9, LEN));
    let mut peer = within("flood", flood).await.unwrap();
    // Stream 3 was cancelled when dropped; the session still works.
    let mut saw_cancel = false;
    peer.send(Frame::Ping { id: 1 }).await;
    loop {
        match peer.recv_skipping_windows().await {
            Some(Frame::Ping { id: 1 }) => break,
            Some(Frame::RstStream {
                stream_id: 3,
                status,
            }) => {
                assert_eq!(status, RstStatus::Cancel);
                saw_cancel = true;
            }
            Some(Frame::RstStream { .. } | Frame::SynReply { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_cancel);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delivers_data_written_before_it() {
    let (client, server) = pair(Config::default(), Config::default());
    const LEN: usize = 200 * 1024;
    let mut stdout = client
        .open_stream(headers(&[("streamtype", "stdout")]), false)
        .unwrap();
    let mut accepted = within("accept", server.accept()).await.unwrap();
    let reader = tokio::spawn(async move { read_all(&mut stdout).await });
    accepted.write_all(&pattern(2, LEN)).await.unwrap();
    accepted.shutdown().await.unwrap();
    // The client never half-closes this stream: close resets it, after the data and FIN.
    within("close", server.close()).await;
    assert_eq!(within("reader", reader).await.unwrap(), pattern(2, LEN));
}

#[tokio::test]
async fn close_gives_up_on_a_peer_that_stopped_reading() {
    let config = Config {
        close_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let (io, raw) = duplex(1024);
    let server = Connection::with_config(io, Role::Server, config);
    let mut peer = RawPeer::new(raw);
    peer.send(syn_stream(1, &[("streamtype", "stdout")], false))
        .await;
    let mut stream = within("accept", server.accept()).await.unwrap();
    // Queue more than the transport takes; the peer never reads.
    let writer = tokio::spawn(async move {
        let _ = stream.write_all(&[7u8; 48 * 1024]).await;
    });
    tokio::task::yield_now().await;
    within("close", server.close()).await;
    assert!(server.is_terminated());
    within("writer", writer).await.unwrap();
    drop(peer);
}

#[tokio::test]
async fn unknown_control_frames_are_ignored() {
    let (io, raw) = duplex(4096);
    let _server = Connection::server(io);
    let mut peer = RawPeer::new(raw);
    peer.send(Frame::Unknown {
        frame_type: 10,
        flags: 0,
        payload: Bytes::from_static(b"CREDENTIAL"),
    })
    .await;
    peer.ping_echoed(7).await;
}

#[tokio::test]
async fn bad_frames_get_rst_or_goaway() {
    let (io, raw) = duplex(4096);
    let server = Connection::server(io);
    let mut peer = RawPeer::new(raw);

    // DATA for a stream never opened: stream error.
    peer.send(data(99, b"x", false)).await;
    assert_eq!(
        peer.recv_skipping_windows().await,
        Some(Frame::RstStream {
            stream_id: 99,
            status: RstStatus::InvalidStream
        })
    );
    // A SYN_STREAM with the server's parity: stream error.
    peer.send(syn_stream(2, &[], false)).await;
    assert_eq!(
        peer.recv_skipping_windows().await,
        Some(Frame::RstStream {
            stream_id: 2,
            status: RstStatus::ProtocolError
        })
    );
    // A control frame of SPDY/2: session error, GOAWAY, then end-of-file.
    peer.send_raw(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1])
        .await;
    assert_eq!(
        peer.recv_skipping_windows().await,
        Some(Frame::GoAway {
            last_good_stream_id: 0,
            status: GoAwayStatus::ProtocolError
        })
    );
    assert_eq!(peer.recv().await, None);
    assert!(matches!(
        within("server end", server.closed()).await,
        CloseReason::Failed(_)
    ));
}

#[tokio::test]
async fn peer_goaway_refuses_streams_above_last_good() {
    let (io, raw) = duplex(4096);
    let client = Connection::client(io);
    let mut peer = RawPeer::new(raw);
    let first = client.open_stream(headers(&[("n", "1")]), false).unwrap();
    let second = client.open_stream(headers(&[("n", "2")]), false).unwrap();
    for _ in 0..2 {
        assert!(matches!(
            peer.recv_skipping_windows().await,
            Some(Frame::SynStream { .. })
        ));
    }
    peer.send(Frame::SynReply {
        stream_id: 1,
        fin: false,
        headers: Headers::new(),
    })
    .await;
    peer.send(Frame::GoAway {
        last_good_stream_id: 1,
        status: GoAwayStatus::Ok,
    })
    .await;
    assert!(within("reply", first.wait_reply()).await.is_ok());
    assert!(matches!(
        within("refused", second.wait_reply()).await,
        Err(SpdyError::StreamReset {
            status: RstStatus::RefusedStream,
            ..
        })
    ));
    assert!(matches!(
        client.open_stream(Headers::new(), false),
        Err(SpdyError::GoingAway)
    ));
    assert!(within("accept", client.accept()).await.is_none());
}
