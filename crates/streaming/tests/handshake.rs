//! The server's HTTP side checked with raw requests: the 101 responses carry the negotiated
//! subprotocol as kubelet's do, and refusals carry kubelet's status codes.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use corral_streaming::{Backend, BackendError, BoxFuture, ServerConfig, StreamIo, StreamingServer};
use cri_proto::v1::{ExecRequest, PortForwardRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Deadline guard only: no test asserts on timing.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish"))
}

/// A backend that is never reached by these tests' sessions.
struct Unreachable;

impl Backend for Unreachable {
    fn exec(
        &self,
        _: &str,
        _: Vec<String>,
        _: bool,
        _: StreamIo,
    ) -> BoxFuture<'static, Result<i32, BackendError>> {
        Box::pin(async { Err(BackendError::Other("not in this test".into())) })
    }

    fn attach(
        &self,
        _: &str,
        _: bool,
        _: StreamIo,
    ) -> BoxFuture<'static, Result<(), BackendError>> {
        Box::pin(async { Err(BackendError::Other("not in this test".into())) })
    }

    fn port_forward(&self, _: &str, _: u16) -> BoxFuture<'static, Result<TcpStream, BackendError>> {
        Box::pin(async { Err(BackendError::Other("not in this test".into())) })
    }
}

async fn server(config: impl FnOnce(&mut ServerConfig)) -> StreamingServer {
    let mut settings = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config(&mut settings);
    StreamingServer::start_with_config(settings, Arc::new(Unreachable))
        .await
        .unwrap()
}

fn exec_path(server: &StreamingServer) -> String {
    let url = server
        .exec_url(&ExecRequest {
            container_id: "c".into(),
            cmd: vec!["sh".into()],
            stdout: true,
            ..ExecRequest::default()
        })
        .unwrap();
    url.strip_prefix(server.base_url()).unwrap().to_owned()
}

fn port_forward_path(server: &StreamingServer) -> String {
    let url = server
        .port_forward_url(&PortForwardRequest {
            pod_sandbox_id: "pod".into(),
            port: vec![8080],
        })
        .unwrap();
    url.strip_prefix(server.base_url()).unwrap().to_owned()
}

/// A response head: status code and headers (names lower-cased), and the open connection.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    conn: TcpStream,
}

impl Head {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    fn one(&self, name: &str) -> Option<&str> {
        match self.all(name).as_slice() {
            [value] => Some(value),
            _ => None,
        }
    }
}

/// Sends `method path` with `headers`, reads the response head.
async fn request(server: &StreamingServer, method: &str, path: &str, headers: &[&str]) -> Head {
    let mut conn = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
        server.local_addr()
    );
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    conn.write_all(text.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    within("response head", async {
        while !head.ends_with(b"\r\n\r\n") {
            head.push(conn.read_u8().await.unwrap());
        }
    })
    .await;
    let head = String::from_utf8(head).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    Head {
        status,
        headers,
        conn,
    }
}

const SPDY: [&str; 2] = ["Connection: Upgrade", "Upgrade: SPDY/3.1"];

fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(extra).copied().collect()
}

/// A SPDY upgrade request (POST) to `path` with the `extra` headers.
async fn spdy_request(server: &StreamingServer, path: &str, extra: &[&str]) -> Head {
    request(server, "POST", path, &with(&SPDY, extra)).await
}

/// The upgrade succeeded with `version`.
fn assert_upgraded(head: &Head, version: &str) {
    assert_eq!(head.status, 101);
    assert_eq!(head.one("x-stream-protocol-version"), Some(version));
}

#[tokio::test]
async fn spdy_upgrade_names_the_negotiated_version() {
    let server = server(|_| {}).await;
    let head = spdy_request(
        &server,
        &exec_path(&server),
        &[
            "X-Stream-Protocol-Version: v4.channel.k8s.io",
            "X-Stream-Protocol-Version: v3.channel.k8s.io",
            "X-Stream-Protocol-Version: v2.channel.k8s.io",
            "X-Stream-Protocol-Version: channel.k8s.io",
        ],
    )
    .await;
    assert_upgraded(&head, "v4.channel.k8s.io");
    assert_eq!(head.one("upgrade"), Some("SPDY/3.1"));
    assert_eq!(head.one("connection"), Some("Upgrade"));

    // The client's order decides, as in httpstream.Handshake.
    let head = spdy_request(
        &server,
        &exec_path(&server),
        &["X-Stream-Protocol-Version: v2.channel.k8s.io, v4.channel.k8s.io"],
    )
    .await;
    assert_upgraded(&head, "v2.channel.k8s.io");

    let head = spdy_request(
        &server,
        &port_forward_path(&server),
        &["X-Stream-Protocol-Version: portforward.k8s.io"],
    )
    .await;
    assert_upgraded(&head, "portforward.k8s.io");
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn spdy_refusals_follow_kubelet() {
    let server = server(|_| {}).await;
    let head = spdy_request(
        &server,
        &exec_path(&server),
        &["X-Stream-Protocol-Version: v9.channel.k8s.io"],
    )
    .await;
    assert_eq!(head.status, 403);
    assert_eq!(
        head.all("x-accepted-stream-protocol-versions"),
        [
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
            "v2.channel.k8s.io",
            "channel.k8s.io"
        ]
    );
    let head = request(&server, "POST", &exec_path(&server), &SPDY).await;
    assert_eq!(head.status, 400, "no X-Stream-Protocol-Version");
    let head = request(
        &server,
        "POST",
        &exec_path(&server),
        &["X-Stream-Protocol-Version: v4.channel.k8s.io"],
    )
    .await;
    assert_eq!(head.status, 400, "no upgrade headers");
    let head = spdy_request(
        &server,
        &port_forward_path(&server),
        &["X-Stream-Protocol-Version: v4.channel.k8s.io"],
    )
    .await;
    assert_eq!(head.status, 403, "remote-command protocol on port-forward");
    assert_eq!(
        head.all("x-accepted-stream-protocol-versions"),
        ["portforward.k8s.io"]
    );
}

fn websocket(protocols: &str) -> Vec<String> {
    let mut headers = vec![
        "Connection: Upgrade".to_owned(),
        "Upgrade: websocket".to_owned(),
        "Sec-WebSocket-Version: 13".to_owned(),
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".to_owned(),
    ];
    if !protocols.is_empty() {
        headers.push(format!("Sec-WebSocket-Protocol: {protocols}"));
    }
    headers
}

async fn websocket_request(server: &StreamingServer, path: &str, protocols: &str) -> Head {
    let headers = websocket(protocols);
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    request(server, "GET", path, &headers).await
}

#[tokio::test]
async fn websocket_upgrade_names_the_negotiated_subprotocol() {
    let server = server(|_| {}).await;
    let head = websocket_request(
        &server,
        &exec_path(&server),
        "v5.channel.k8s.io, v4.channel.k8s.io",
    )
    .await;
    assert_eq!(head.status, 101);
    assert_eq!(
        head.one("sec-websocket-protocol"),
        Some("v5.channel.k8s.io")
    );
    assert_eq!(
        head.one("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(head.one("upgrade"), Some("websocket"));

    for protocol in [
        "v4.channel.k8s.io",
        "v4.base64.channel.k8s.io",
        "channel.k8s.io",
        "base64.channel.k8s.io",
    ] {
        let head = websocket_request(&server, &exec_path(&server), protocol).await;
        assert_eq!(head.status, 101, "{protocol}");
        assert_eq!(head.one("sec-websocket-protocol"), Some(protocol));
    }

    // No subprotocol offered: accepted, none named.
    let head = websocket_request(&server, &exec_path(&server), "").await;
    assert_eq!(head.status, 101);
    assert_eq!(head.one("sec-websocket-protocol"), None);

    let head = websocket_request(&server, &port_forward_path(&server), "v4.channel.k8s.io").await;
    assert_eq!(head.status, 101);
    assert_eq!(
        head.one("sec-websocket-protocol"),
        Some("v4.channel.k8s.io")
    );
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn websocket_refusals() {
    let server = server(|_| {}).await;
    let head = websocket_request(&server, &exec_path(&server), "v9.channel.k8s.io").await;
    assert_eq!(head.status, 403);
    let head = websocket_request(&server, &port_forward_path(&server), "v5.channel.k8s.io").await;
    assert_eq!(head.status, 403, "v5 is not a port-forward protocol");
    let head = request(
        &server,
        "GET",
        &exec_path(&server),
        &[
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 8",
        ],
    )
    .await;
    assert_eq!(head.status, 400);
    assert_eq!(head.one("sec-websocket-version"), Some("13"));
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let server = server(|_| {}).await;
    assert_eq!(request(&server, "GET", "/", &[]).await.status, 404);
    assert_eq!(request(&server, "GET", "/exec/", &[]).await.status, 404);
    assert_eq!(request(&server, "GET", "/logs/abc", &[]).await.status, 404);
    let path = exec_path(&server);
    assert_eq!(request(&server, "PUT", &path, &[]).await.status, 405);
    // A refused method does not spend the token.
    let head = request(
        &server,
        "POST",
        &path,
        &with(&SPDY, &["X-Stream-Protocol-Version: v4.channel.k8s.io"]),
    )
    .await;
    assert_eq!(head.status, 101);
}

#[tokio::test]
async fn server_gives_up_on_a_client_that_opens_no_streams() {
    let server = server(|config| config.stream_creation_timeout = Duration::from_millis(100)).await;
    let head = spdy_request(
        &server,
        &exec_path(&server),
        &["X-Stream-Protocol-Version: v4.channel.k8s.io"],
    )
    .await;
    assert_eq!(head.status, 101);
    // The server's SETTINGS and, after the timeout, GOAWAY; then it closes the connection.
    let mut conn = head.conn;
    let mut frames = Vec::new();
    within("the server to close", conn.read_to_end(&mut frames))
        .await
        .unwrap();
    assert!(!frames.is_empty());
    within("shutdown", server.shutdown()).await;
}
