//! gRPC clients that dial a unix socket send odd HTTP/2 `:authority` values: the socket path
//! (kubelet 1.20's grpc-go, grpcio), `localhost`, an empty one or none. corrald serves them all.
//! These tests speak raw HTTP/2 frames over the socket, HPACK-encoded with a dynamic table as
//! real clients do, so nothing in between normalises the header.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use corral_e2e::*;
use prost::Message;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One raw HTTP/2 connection to corrald.
struct RawClient {
    sock: UnixStream,
    encoder: loona_hpack::Encoder<'static>,
    decoder: loona_hpack::Decoder<'static>,
    next_stream: u32,
}

/// What came back on one stream.
#[derive(Debug, Default)]
struct Answer {
    headers: Vec<(String, String)>,
    data: Vec<u8>,
    reset: Option<u32>,
    goaway: Option<u32>,
}

impl Answer {
    fn grpc_status(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == "grpc-status")
            .map(|(_, v)| v.as_str())
    }
}

impl RawClient {
    fn connect(path: &std::path::Path) -> RawClient {
        let mut sock = UnixStream::connect(path).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        sock.write_all(PREFACE).unwrap();
        write_frame(&mut sock, 0x4, 0, 0, &[]); // SETTINGS
        RawClient {
            sock,
            encoder: loona_hpack::Encoder::new(),
            decoder: loona_hpack::Decoder::new(),
            next_stream: 1,
        }
    }

    /// Sends one gRPC call with `authority` (None: no `:authority` field) and reads the answer.
    fn call(&mut self, authority: Option<&[u8]>, path: &str, message: &[u8]) -> Answer {
        let stream = self.next_stream;
        self.next_stream += 2;
        let mut headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
        ];
        if let Some(authority) = authority {
            headers.push((b":authority", authority));
        }
        headers.push((b"content-type", b"application/grpc"));
        headers.push((b"te", b"trailers"));
        let block = self.encoder.encode(headers);
        write_frame(&mut self.sock, 0x1, 0x4, stream, &block); // HEADERS, END_HEADERS
        let mut body = vec![0];
        body.extend((message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
        write_frame(&mut self.sock, 0x0, 0x1, stream, &body); // DATA, END_STREAM

        let mut answer = Answer::default();
        loop {
            let (frame_type, flags, id, payload) = read_frame(&mut self.sock);
            match frame_type {
                0x4 if flags & 0x1 == 0 => write_frame(&mut self.sock, 0x4, 0x1, 0, &[]),
                0x6 if flags & 0x1 == 0 => write_frame(&mut self.sock, 0x6, 0x1, 0, &payload),
                0x7 => {
                    answer.goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                    return answer;
                }
                0x3 if id == stream => {
                    answer.reset = Some(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                    return answer;
                }
                0x1 => {
                    for (n, v) in self.decoder.decode(&payload).expect("response headers") {
                        answer.headers.push((
                            String::from_utf8_lossy(&n).into_owned(),
                            String::from_utf8_lossy(&v).into_owned(),
                        ));
                    }
                    if id == stream && flags & 0x1 != 0 {
                        return answer;
                    }
                }
                0x0 if id == stream => {
                    answer.data.extend_from_slice(&payload);
                    if flags & 0x1 != 0 {
                        return answer;
                    }
                }
                _ => {}
            }
        }
    }
}

fn write_frame(sock: &mut UnixStream, frame_type: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = (payload.len() as u32).to_be_bytes();
    let mut frame = len[1..].to_vec();
    frame.push(frame_type);
    frame.push(flags);
    frame.extend(stream.to_be_bytes());
    frame.extend_from_slice(payload);
    sock.write_all(&frame).unwrap();
}

fn read_frame(sock: &mut UnixStream) -> (u8, u8, u32, Vec<u8>) {
    let mut header = [0u8; 9];
    sock.read_exact(&mut header)
        .expect("frame header from corrald");
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let stream = u32::from_be_bytes(header[5..9].try_into().unwrap()) & 0x7fff_ffff;
    let mut payload = vec![0; len];
    sock.read_exact(&mut payload)
        .expect("frame payload from corrald");
    (header[3], header[4], stream, payload)
}

/// The messages of a gRPC response body.
fn messages(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        out.push(&rest[5..5 + len]);
        rest = &rest[5 + len..];
    }
    out
}

#[tokio::test]
async fn any_authority_is_served_for_unary_and_streaming_calls_of_both_apis() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    let socket = daemon.socket();
    let socket_path = socket.to_str().unwrap().as_bytes().to_vec();
    let version = cri_proto::v1::VersionRequest {
        version: "0.1.0".into(),
    }
    .encode_to_vec();
    let stream_pods = cri_proto::v1::StreamPodSandboxesRequest::default().encode_to_vec();
    let authorities: [Option<&[u8]>; 4] = [Some(&socket_path), Some(b"localhost"), Some(b""), None];
    for authority in authorities {
        let shown = authority.map(String::from_utf8_lossy);
        // Blocking socket I/O: off the async runtime's threads.
        let socket = socket.clone();
        let (version, stream_pods) = (version.clone(), stream_pods.clone());
        let authority = authority.map(<[u8]>::to_vec);
        let answers = tokio::task::spawn_blocking(move || {
            let authority = authority.as_deref();
            // One connection, several calls: later header blocks refer to the client's HPACK
            // dynamic table.
            let mut client = RawClient::connect(&socket);
            [
                ("/runtime.v1.RuntimeService/Version", &version),
                ("/runtime.v1alpha2.RuntimeService/Version", &version),
                ("/runtime.v1.RuntimeService/Version", &version),
                (
                    "/runtime.v1.RuntimeService/StreamPodSandboxes",
                    &stream_pods,
                ),
                ("/runtime.v1.ImageService/StreamImages", &stream_pods),
                // An RPC only v1 has, asked for under v1alpha2: routed to no handler.
                (
                    "/runtime.v1alpha2.RuntimeService/GetContainerEvents",
                    &stream_pods,
                ),
            ]
            .map(|(path, message)| (path, client.call(authority, path, message)))
        })
        .await
        .unwrap();
        for (path, answer) in &answers {
            assert_eq!(
                answer.reset, None,
                "{path} with :authority {shown:?}: {answer:?}"
            );
            assert_eq!(
                answer.goaway, None,
                "{path} with :authority {shown:?}: {answer:?}"
            );
        }
        for (path, answer) in &answers[..5] {
            assert_eq!(
                answer.grpc_status(),
                Some("0"),
                "{path} with :authority {shown:?}: {answer:?}"
            );
        }
        for (i, api) in [(0, "v1"), (1, "v1alpha2"), (2, "v1")] {
            let body = messages(&answers[i].1.data);
            let reply = cri_proto::v1::VersionResponse::decode(body[0]).unwrap();
            assert_eq!(
                (
                    reply.runtime_name.as_str(),
                    reply.runtime_api_version.as_str()
                ),
                ("corral", api)
            );
        }
        // Not served, but answered as gRPC: Unimplemented, not a protocol error.
        assert_eq!(answers[5].1.grpc_status(), Some("12"), "{:?}", answers[5]);
    }
}

#[tokio::test]
async fn a_client_that_does_not_speak_http2_is_refused_with_a_warning() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    let socket = daemon.socket();
    let got = tokio::task::spawn_blocking(move || {
        let mut sock = UnixStream::connect(&socket).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let _ = sock.read_to_end(&mut got);
        got
    })
    .await
    .unwrap();
    assert!(
        !got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        wait_for(Duration::from_secs(10), || daemon
            .log()
            .contains("not an HTTP/2 client")),
        "no warning in the log:\n{}",
        daemon.log()
    );
    let line = daemon
        .log()
        .lines()
        .find(|l| l.contains("not an HTTP/2 client"))
        .unwrap()
        .to_string();
    assert!(line.contains("WARN"), "{line}");
}

#[tokio::test]
async fn a_malformed_request_is_reset_and_logged_as_a_warning() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    let socket = daemon.socket();
    // An empty :path is malformed (RFC 9113 §8.3.1): h2 resets the stream.
    let answer = tokio::task::spawn_blocking(move || {
        RawClient::connect(&socket).call(Some(b"localhost"), "", &[])
    })
    .await
    .unwrap();
    assert_eq!(answer.reset, Some(1), "{answer:?}"); // PROTOCOL_ERROR
    let warned = |log: &str| {
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("RST_STREAM") && l.contains("PROTOCOL_ERROR"))
    };
    assert!(
        wait_for(Duration::from_secs(10), || warned(&daemon.log())),
        "no warning in the log:\n{}",
        daemon.log()
    );
}
