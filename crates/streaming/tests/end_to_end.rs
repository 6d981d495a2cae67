//! The streaming server and client talking to each other over loopback, for SPDY and
//! WebSocket, with a fake backend: exec runs real local processes, attach echoes, and
//! port-forward connects to local echo servers.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral_streaming::client::{self, PortForwarder, Protocol};
use corral_streaming::{
    Backend, BackendError, BoxFuture, BoxWriter, ServerConfig, StreamIo, StreamingError,
    StreamingServer, TerminalSize,
};
use cri_proto::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use common::{connect_local, io_error, run_process, within};

/// Polls `condition` until it holds (deadline guard only).
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Counts backend futures alive; a future that is dropped (finished or cancelled) leaves.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn enter(count: &Arc<AtomicUsize>) -> Live {
        count.fetch_add(1, Ordering::SeqCst);
        Live(count.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct FakeBackend {
    live: Arc<AtomicUsize>,
}

impl FakeBackend {
    fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

impl Backend for FakeBackend {
    fn exec(
        &self,
        _container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        io: StreamIo,
    ) -> BoxFuture<'static, Result<i32, BackendError>> {
        let live = Live::enter(&self.live);
        Box::pin(async move {
            let _live = live;
            if tty {
                report_terminal_size(io).await
            } else {
                run_process(cmd, io).await
            }
        })
    }

    fn attach(
        &self,
        _container_id: &str,
        _tty: bool,
        io: StreamIo,
    ) -> BoxFuture<'static, Result<(), BackendError>> {
        let live = Live::enter(&self.live);
        Box::pin(async move {
            let _live = live;
            let (Some(mut stdin), Some(mut stdout)) = (io.stdin, io.stdout) else {
                return Err(BackendError::Other("attach needs stdin and stdout".into()));
            };
            tokio::io::copy(&mut stdin, &mut stdout)
                .await
                .map_err(io_error("echoing"))?;
            stdout
                .shutdown()
                .await
                .map_err(io_error("closing stdout"))?;
            Ok(())
        })
    }

    fn port_forward(
        &self,
        _pod_sandbox_id: &str,
        port: u16,
    ) -> BoxFuture<'static, Result<TcpStream, BackendError>> {
        Box::pin(connect_local(port))
    }
}

/// "exec" with a tty: prints the first terminal size the client sends.
async fn report_terminal_size(io: StreamIo) -> Result<i32, BackendError> {
    let mut sizes = io
        .resize
        .ok_or_else(|| BackendError::Other("no resize events".into()))?;
    let mut stdout = io
        .stdout
        .ok_or_else(|| BackendError::Other("no stdout".into()))?;
    let size = sizes
        .recv()
        .await
        .ok_or_else(|| BackendError::Other("resize stream ended".into()))?;
    let line = format!("{}x{}\n", size.width, size.height);
    stdout
        .write_all(line.as_bytes())
        .await
        .map_err(io_error("writing"))?;
    stdout.shutdown().await.map_err(io_error("closing"))?;
    Ok(0)
}

struct Harness {
    server: StreamingServer,
    backend: Arc<FakeBackend>,
}

async fn start_with(config: impl FnOnce(&mut ServerConfig)) -> Harness {
    let backend = Arc::new(FakeBackend::default());
    let mut settings = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config(&mut settings);
    let server = StreamingServer::start_with_config(settings, backend.clone())
        .await
        .unwrap();
    Harness { server, backend }
}

async fn start() -> Harness {
    start_with(|_| {}).await
}

fn exec_request(cmd: &[&str], stdin: bool, stdout: bool, stderr: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: "container".into(),
        cmd: cmd.iter().map(|arg| arg.to_string()).collect(),
        tty,
        stdin,
        stdout,
        stderr,
    }
}

/// A writer for the client and what was written to it, complete once the writer is dropped.
fn capture() -> (Option<BoxWriter>, JoinHandle<Vec<u8>>) {
    let (writer, mut reader) = duplex(1 << 20);
    let collected = tokio::spawn(async move {
        let mut data = Vec::new();
        reader.read_to_end(&mut data).await.unwrap();
        data
    });
    (Some(Box::new(writer)), collected)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

async fn exec_echo(protocol: Protocol) {
    let h = start().await;
    let cmd = ["sh", "-c", "echo out; echo err >&2"];
    let url = h
        .server
        .exec_url(&exec_request(&cmd, false, true, true, false))
        .unwrap();
    assert!(url.starts_with(&format!("{}/exec/", h.server.base_url())));
    let (stdout, out) = capture();
    let (stderr, err) = capture();
    let io = StreamIo {
        stdout,
        stderr,
        ..StreamIo::default()
    };
    let code = within("exec", client::exec(&url, protocol, false, io))
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(text(out.await.unwrap()), "out\n");
    assert_eq!(text(err.await.unwrap()), "err\n");
    within("shutdown", h.server.shutdown()).await;
}

async fn exec_exit_code(protocol: Protocol) {
    let h = start().await;
    let url = h
        .server
        .exec_url(&exec_request(
            &["sh", "-c", "exit 3"],
            false,
            true,
            false,
            false,
        ))
        .unwrap();
    let (stdout, out) = capture();
    let io = StreamIo {
        stdout,
        ..StreamIo::default()
    };
    let code = within("exec", client::exec(&url, protocol, false, io))
        .await
        .unwrap();
    assert_eq!(code, 3);
    assert!(out.await.unwrap().is_empty());
}

async fn exec_failure_is_reported(protocol: Protocol) {
    let h = start().await;
    let url = h
        .server
        .exec_url(&exec_request(
            &["/nonexistent/program"],
            false,
            true,
            false,
            false,
        ))
        .unwrap();
    let (stdout, _out) = capture();
    let io = StreamIo {
        stdout,
        ..StreamIo::default()
    };
    let result = within("exec", client::exec(&url, protocol, false, io)).await;
    match result {
        Err(StreamingError::RemoteCommand { message }) => {
            assert!(message.contains("error executing command"), "{message}");
        }
        other => panic!("unexpected result {other:?}"),
    }
}

async fn exec_stdin_cat(protocol: Protocol) {
    let h = start().await;
    let url = h
        .server
        .exec_url(&exec_request(&["cat"], true, true, false, false))
        .unwrap();
    let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (stdout, out) = capture();
    let io = StreamIo {
        stdin: Some(Box::new(std::io::Cursor::new(input.clone()))),
        stdout,
        ..StreamIo::default()
    };
    let code = within("exec cat", client::exec(&url, protocol, false, io))
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(out.await.unwrap(), input);
}

async fn exec_tty_resize(protocol: Protocol) {
    let h = start().await;
    let url = h
        .server
        .exec_url(&exec_request(&["sh"], false, true, false, true))
        .unwrap();
    let (sizes, resize) = mpsc::channel(4);
    sizes
        .send(TerminalSize {
            width: 100,
            height: 40,
        })
        .await
        .unwrap();
    let (stdout, out) = capture();
    let io = StreamIo {
        stdout,
        resize: Some(resize),
        ..StreamIo::default()
    };
    let code = within("exec tty", client::exec(&url, protocol, true, io))
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(text(out.await.unwrap()), "100x40\n");
    drop(sizes);
}

async fn attach_echo(protocol: Protocol) {
    let h = start().await;
    let url = h
        .server
        .attach_url(&AttachRequest {
            container_id: "container".into(),
            stdin: true,
            stdout: true,
            ..AttachRequest::default()
        })
        .unwrap();
    assert!(url.contains("/attach/"));
    let (stdout, out) = capture();
    let io = StreamIo {
        stdin: Some(Box::new(&b"ping\npong\n"[..])),
        stdout,
        ..StreamIo::default()
    };
    within("attach", client::attach(&url, protocol, false, io))
        .await
        .unwrap();
    assert_eq!(text(out.await.unwrap()), "ping\npong\n");
}

/// A TCP echo server on loopback; aborted with the returned handle.
async fn echo_server() -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut reader, mut writer) = conn.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    (port, task)
}

fn port_forward_request(ports: &[u16]) -> PortForwardRequest {
    PortForwardRequest {
        pod_sandbox_id: "pod".into(),
        port: ports.iter().map(|port| i32::from(*port)).collect(),
    }
}

/// Writes `message`, reads the echo back.
async fn round_trip(stream: &mut client::PortForwardStream, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut echoed = vec![0u8; message.len()];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, message);
}

/// Ends a forwarded connection the way the protocol allows and checks it reported no error.
async fn end_connection(protocol: Protocol, mut stream: client::PortForwardStream) {
    if protocol == Protocol::Spdy {
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
    stream.finish().await.unwrap();
}

async fn port_forward_both_ways(protocol: Protocol) {
    let h = start().await;
    let (port, echo) = echo_server().await;
    let url = h
        .server
        .port_forward_url(&port_forward_request(&[port]))
        .unwrap();
    let forwarder = within("connect", PortForwarder::connect(&url, protocol, &[port]))
        .await
        .unwrap();
    let mut stream = within("open", forwarder.open(port)).await.unwrap();
    assert_eq!(stream.port(), port);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    within("round trips", async {
        round_trip(&mut stream, b"hello through the pod").await;
        round_trip(&mut stream, &big).await;
    })
    .await;
    within("end", end_connection(protocol, stream)).await;
    within("close", forwarder.close()).await;
    within("shutdown", h.server.shutdown()).await;
    echo.abort();
}

async fn port_forward_two_connections(protocol: Protocol) {
    let h = start().await;
    let (first_port, first_echo) = echo_server().await;
    let (second_port, second_echo) = echo_server().await;
    // Over SPDY two connections share a port; over WebSocket each port carries one.
    let ports = match protocol {
        Protocol::Spdy => [first_port, first_port],
        Protocol::WebSocket => [first_port, second_port],
    };
    let url = h
        .server
        .port_forward_url(&port_forward_request(&ports))
        .unwrap();
    let forwarder = within("connect", PortForwarder::connect(&url, protocol, &ports))
        .await
        .unwrap();
    let mut one = within("open one", forwarder.open(ports[0])).await.unwrap();
    let mut two = within("open two", forwarder.open(ports[1])).await.unwrap();
    within("interleaved round trips", async {
        one.write_all(b"first").await.unwrap();
        two.write_all(b"second").await.unwrap();
        let mut echoed = [0u8; 6];
        two.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"second");
        let mut echoed = [0u8; 5];
        one.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"first");
        round_trip(&mut one, b"again, one").await;
        round_trip(&mut two, b"again, two").await;
    })
    .await;
    within("end one", end_connection(protocol, one)).await;
    within("end two", end_connection(protocol, two)).await;
    if protocol == Protocol::WebSocket {
        assert!(matches!(
            forwarder.open(ports[0]).await,
            Err(StreamingError::PortForward { .. })
        ));
    }
    within("close", forwarder.close()).await;
    first_echo.abort();
    second_echo.abort();
}

async fn port_forward_error_is_reported(protocol: Protocol) {
    let h = start().await;
    // A port nobody listens on.
    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = h
        .server
        .port_forward_url(&port_forward_request(&[closed_port]))
        .unwrap();
    let forwarder = PortForwarder::connect(&url, protocol, &[closed_port])
        .await
        .unwrap();
    let mut stream = forwarder.open(closed_port).await.unwrap();
    let mut rest = Vec::new();
    within("read to end", stream.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty());
    match within("finish", stream.finish()).await {
        Err(StreamingError::PortForward { port, message }) => {
            assert_eq!(port, closed_port);
            assert!(message.contains("error forwarding port"), "{message}");
        }
        other => panic!("unexpected result {other:?}"),
    }
}

async fn reused_token_is_refused(protocol: Protocol) {
    let h = start().await;
    let url = h
        .server
        .exec_url(&exec_request(&["true"], false, true, false, false))
        .unwrap();
    let (stdout, _) = capture();
    let first = StreamIo {
        stdout,
        ..StreamIo::default()
    };
    assert_eq!(
        within("first exec", client::exec(&url, protocol, false, first))
            .await
            .unwrap(),
        0
    );
    let (stdout, _) = capture();
    let second = StreamIo {
        stdout,
        ..StreamIo::default()
    };
    let result = within("second exec", client::exec(&url, protocol, false, second)).await;
    assert_refused_404(&result);
}

/// Streams with only stdout, captured and dropped.
fn stdout_only() -> StreamIo {
    let (stdout, _) = capture();
    StreamIo {
        stdout,
        ..StreamIo::default()
    }
}

/// The upgrade was refused with 404 (an unknown, spent, expired or misused token).
fn assert_refused_404<T: std::fmt::Debug>(result: &Result<T, StreamingError>) {
    assert!(
        matches!(
            result,
            Err(StreamingError::UpgradeRefused { status: 404, .. })
        ),
        "{result:?}"
    );
}

async fn unknown_token_is_refused(protocol: Protocol) {
    let h = start().await;
    let url = format!("{}/exec/no-such-token", h.server.base_url());
    let io = stdout_only();
    let result = client::exec(&url, protocol, false, io).await;
    assert_refused_404(&result);
    // A token is only good for the endpoint it was made for (and is spent by trying).
    let url = h
        .server
        .port_forward_url(&port_forward_request(&[80]))
        .unwrap();
    let attach_url = url.replace("/portforward/", "/attach/");
    let io = stdout_only();
    let result = client::attach(&attach_url, protocol, false, io).await;
    assert_refused_404(&result);
    let result = PortForwarder::connect(&url, protocol, &[80]).await;
    assert_refused_404(&result);
}

async fn expired_token_is_refused(protocol: Protocol) {
    let h = start_with(|config| config.token_ttl = Duration::from_millis(50)).await;
    let url = h
        .server
        .exec_url(&exec_request(&["true"], false, true, false, false))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let io = stdout_only();
    let result = client::exec(&url, protocol, false, io).await;
    assert_refused_404(&result);
}

/// Starts `sleep 1000` through the client in a task; returns once the backend runs it.
async fn start_long_exec(
    h: &Harness,
    protocol: Protocol,
) -> JoinHandle<Result<i32, StreamingError>> {
    let url = h
        .server
        .exec_url(&exec_request(&["sleep", "1000"], true, true, false, false))
        .unwrap();
    // A stdin that never ends.
    let (stdin, stdin_writer) = duplex(64);
    let (stdout, _) = capture();
    let io = StreamIo {
        stdin: Some(Box::new(stdin)),
        stdout,
        ..StreamIo::default()
    };
    let client = tokio::spawn(async move {
        let _keep_stdin_open = stdin_writer;
        client::exec(&url, protocol, false, io).await
    });
    let backend = h.backend.clone();
    eventually("the backend to run the command", || backend.live() == 1).await;
    client
}

async fn shutdown_ends_streams(protocol: Protocol) {
    let h = start().await;
    let client = start_long_exec(&h, protocol).await;
    within("shutdown", h.server.shutdown()).await;
    // Every backend future was dropped (its process killed) before shutdown returned.
    assert_eq!(h.backend.live(), 0);
    // The client sees its session end instead of hanging.
    let result = within("client", client).await.unwrap();
    assert!(result.is_err(), "{result:?}");
    // Nothing listens any more.
    assert!(TcpStream::connect(h.server.local_addr()).await.is_err());
}

async fn client_disconnect_stops_the_command(protocol: Protocol) {
    let h = start().await;
    let client = start_long_exec(&h, protocol).await;
    client.abort();
    let backend = h.backend.clone();
    eventually("the backend future to be dropped", || backend.live() == 0).await;
    within("shutdown", h.server.shutdown()).await;
}

macro_rules! for_both_protocols {
    ($($name:ident),* $(,)?) => {
        mod spdy {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(corral_streaming::client::Protocol::Spdy).await;
                }
            )*
        }
        mod websocket {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(corral_streaming::client::Protocol::WebSocket).await;
                }
            )*
        }
    };
}

for_both_protocols!(
    exec_echo,
    exec_exit_code,
    exec_failure_is_reported,
    exec_stdin_cat,
    exec_tty_resize,
    attach_echo,
    port_forward_both_ways,
    port_forward_two_connections,
    port_forward_error_is_reported,
    reused_token_is_refused,
    unknown_token_is_refused,
    expired_token_is_refused,
    shutdown_ends_streams,
    client_disconnect_stops_the_command,
);
