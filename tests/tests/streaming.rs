//! Exec, Attach and PortForward end to end: the URL comes from corrald's CRI call, the stream
//! is served by its streaming server, and corral-streaming's client speaks to it over SPDY/3.1
//! and over WebSocket, into real containers (runc, busybox from a loopback registry).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::io::{Read, Write};
use std::time::Duration;

use corral_e2e::cri::{self, Rt};
use corral_e2e::*;
use corral_streaming::client::{self, PortForwardStream, PortForwarder, Protocol};
use corral_streaming::{BoxWriter, StreamIo, StreamingError, TerminalSize};
use cri_proto::v1::*;
use tokio::io::{duplex, AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Code;

const PROTOCOLS: [Protocol; 2] = [Protocol::Spdy, Protocol::WebSocket];
const POD: i32 = NamespaceMode::Pod as i32;
const CONTAINER: i32 = NamespaceMode::Container as i32;

use corral_e2e::cri::{container_env as env, ContainerEnv as Env};

/// A pod whose log directory is in the daemon's temp directory.
async fn pod(env: &mut Env, name: &str) -> (String, PodSandboxConfig) {
    env.pod_with(name, (POD, CONTAINER, POD), |_| {}).await
}

/// A pod with one long-running container; returns the pod and the container.
async fn pod_with_sleeper(env: &mut Env, name: &str) -> (String, String) {
    let (pod_id, pod) = pod(env, name).await;
    let config = cri::container_config("sleeper", &env.image, &["sleep", "100000"]);
    let id = cri::run(&mut env.rt, &pod_id, &pod, config).await;
    (pod_id, id)
}

/// Deadline guard only: no test asserts on timing.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within a minute"))
}

/// Which streams an Exec or Attach request asks for.
#[derive(Clone, Copy, Default)]
struct Streams {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

const OUT_ERR: Streams = Streams {
    stdin: false,
    stdout: true,
    stderr: true,
    tty: false,
};

async fn exec_url(rt: &mut Rt, id: &str, cmd: &[&str], streams: Streams) -> String {
    try_exec_url(rt, id, cmd, streams).await.expect("Exec")
}

async fn try_exec_url(
    rt: &mut Rt,
    id: &str,
    cmd: &[&str],
    streams: Streams,
) -> Result<String, tonic::Status> {
    let url = rt
        .exec(ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: streams.tty,
            stdin: streams.stdin,
            stdout: streams.stdout,
            stderr: streams.stderr,
        })
        .await?
        .into_inner()
        .url;
    assert!(url.starts_with("http://127.0.0.1:"), "absolute URL: {url}");
    Ok(url)
}

async fn try_attach_url(rt: &mut Rt, id: &str, streams: Streams) -> Result<String, tonic::Status> {
    rt.attach(AttachRequest {
        container_id: id.into(),
        stdin: streams.stdin,
        tty: streams.tty,
        stdout: streams.stdout,
        stderr: streams.stderr,
    })
    .await
    .map(|r| r.into_inner().url)
}

async fn port_forward_url(rt: &mut Rt, pod_id: &str, ports: &[u16]) -> String {
    rt.port_forward(PortForwardRequest {
        pod_sandbox_id: pod_id.into(),
        port: ports.iter().map(|p| i32::from(*p)).collect(),
    })
    .await
    .expect("PortForward")
    .into_inner()
    .url
}

/// A writer for the client's output and a task collecting everything written to it.
fn capture() -> (Option<BoxWriter>, JoinHandle<Vec<u8>>) {
    let (writer, mut reader) = duplex(64 * 1024);
    let collected = tokio::spawn(async move {
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.unwrap();
        all
    });
    (Some(Box::new(writer)), collected)
}

/// How an exec ended, and what it wrote.
#[derive(Debug)]
struct Outcome {
    exit_code: i32,
    stdout: String,
    stderr: String,
}

/// Runs an exec URL to the end: `stdin` sent (then closed), stdout and stderr collected.
async fn run_exec(url: &str, protocol: Protocol, stdin: Option<Vec<u8>>) -> Outcome {
    let (stdout, out) = capture();
    let (stderr, err) = capture();
    let io = StreamIo {
        stdin: stdin.map(|data| Box::new(std::io::Cursor::new(data)) as _),
        stdout,
        stderr,
        resize: None,
    };
    let exit_code = within("exec", client::exec(url, protocol, false, io))
        .await
        .unwrap_or_else(|e| panic!("exec over {protocol:?}: {e}"));
    Outcome {
        exit_code,
        stdout: String::from_utf8(within("stdout", out).await.unwrap()).unwrap(),
        stderr: String::from_utf8(within("stderr", err).await.unwrap()).unwrap(),
    }
}

/// Reads from `reader` into `seen` until `seen` contains `needle`; panics with what came
/// instead if it does not come (deadline guard only).
async fn read_until(reader: &mut (impl AsyncRead + Unpin), seen: &mut String, needle: &str) {
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            let n = reader.read(&mut buf).await.unwrap();
            if n == 0 {
                return false;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        true
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "{needle:?} never came; got {seen:?}"
    );
}

/// Bytes that are not all alike (a cheap deterministic generator).
fn payload(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            b'a' + (x % 26) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reports_output_and_exit_codes() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (_, id) = pod_with_sleeper(&mut env, "exec").await;
    for protocol in PROTOCOLS {
        let url = exec_url(&mut env.rt, &id, &["echo", "hi"], OUT_ERR).await;
        let out = run_exec(&url, protocol, None).await;
        assert_eq!(
            (out.exit_code, out.stdout.as_str()),
            (0, "hi\n"),
            "{protocol:?}"
        );

        let url = exec_url(&mut env.rt, &id, &["sh", "-c", "exit 3"], OUT_ERR).await;
        let out = run_exec(&url, protocol, None).await;
        assert_eq!(out.exit_code, 3, "{protocol:?}: {out:?}");

        let script = "echo to-out; echo to-err >&2; exit 42";
        let url = exec_url(&mut env.rt, &id, &["sh", "-c", script], OUT_ERR).await;
        let out = run_exec(&url, protocol, None).await;
        assert_eq!(
            (out.exit_code, out.stdout.as_str(), out.stderr.as_str()),
            (42, "to-out\n", "to-err\n"),
            "{protocol:?}"
        );

        // A command that does not exist: the runtime's failure reaches the client.
        let url = exec_url(&mut env.rt, &id, &["/no/such/binary"], OUT_ERR).await;
        let (stdout, _out) = capture();
        let (stderr, _err) = capture();
        let io = StreamIo {
            stdout,
            stderr,
            ..StreamIo::default()
        };
        let result = within("exec", client::exec(&url, protocol, false, io)).await;
        assert!(
            matches!(&result, Err(StreamingError::RemoteCommand { message })
                if message.contains("/no/such/binary")),
            "{protocol:?}: {result:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_stdin_echoes_what_is_sent() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (_, id) = pod_with_sleeper(&mut env, "stdin").await;
    let streams = Streams {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    for (seed, protocol) in PROTOCOLS.into_iter().enumerate() {
        let mut input = payload(300 * 1024, seed as u32 + 1);
        input.push(b'\n');
        let url = exec_url(&mut env.rt, &id, &["cat"], streams).await;
        let out = run_exec(&url, protocol, Some(input.clone())).await;
        assert_eq!(out.exit_code, 0, "{protocol:?}: stderr {:?}", out.stderr);
        assert_eq!(out.stdout.len(), input.len(), "{protocol:?}");
        assert!(
            out.stdout.as_bytes() == input,
            "{protocol:?}: cat changed the data"
        );

        // stdin closed at once: the command sees end-of-file.
        let url = exec_url(&mut env.rt, &id, &["wc", "-c"], streams).await;
        let out = run_exec(&url, protocol, Some(Vec::new())).await;
        assert_eq!((out.exit_code, out.stdout.trim()), (0, "0"), "{protocol:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_a_tty_follows_resizes() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (_, id) = pod_with_sleeper(&mut env, "tty").await;
    let streams = Streams {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    for protocol in PROTOCOLS {
        let url = exec_url(&mut env.rt, &id, &["sh"], streams).await;
        let (stdin, mut keyboard) = duplex(4096);
        let (stdout, mut screen) = duplex(64 * 1024);
        let (resize, sizes) = mpsc::channel(4);
        let io = StreamIo {
            stdin: Some(Box::new(stdin)),
            stdout: Some(Box::new(stdout)),
            stderr: None,
            resize: Some(sizes),
        };
        let session = tokio::spawn(async move { client::exec(&url, protocol, true, io).await });
        let mut seen = String::new();
        for (width, height) in [(123u16, 45u16), (77, 21)] {
            resize.send(TerminalSize { width, height }).await.unwrap();
            // The size and the typed command travel on different streams: ask until the new
            // size shows.
            let expected = format!("{height} {width}");
            within("the new size to show", async {
                while !seen.contains(&expected) {
                    keyboard.write_all(b"stty size\n").await.unwrap();
                    let mut buf = [0u8; 4096];
                    if let Ok(n) =
                        tokio::time::timeout(Duration::from_millis(300), screen.read(&mut buf))
                            .await
                    {
                        let n = n.unwrap();
                        assert!(n > 0, "{protocol:?}: the terminal closed; got {seen:?}");
                        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            })
            .await;
        }
        keyboard.write_all(b"exit 7\n").await.unwrap();
        let code = within("the shell to exit", session).await.unwrap();
        assert_eq!(code.unwrap(), 7, "{protocol:?}: {seen:?}");
        // A terminal turns \n into \r\n: proof that the output came through a pty.
        assert!(seen.contains("\r\n"), "{seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_a_tty_starts_at_the_clients_size() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (_, id) = pod_with_sleeper(&mut env, "ttysize").await;
    let streams = Streams {
        stdin: false,
        stdout: true,
        stderr: false,
        tty: true,
    };
    for protocol in PROTOCOLS {
        // As kubectl does: the local terminal's size goes out as soon as the streams are up,
        // and a command that asks at once already sees it.
        let url = exec_url(&mut env.rt, &id, &["stty", "size"], streams).await;
        let (stdout, out) = capture();
        let (resize, sizes) = mpsc::channel(4);
        resize
            .send(TerminalSize {
                width: 132,
                height: 43,
            })
            .await
            .unwrap();
        let io = StreamIo {
            stdout,
            resize: Some(sizes),
            ..StreamIo::default()
        };
        let code = within("stty", client::exec(&url, protocol, true, io)).await;
        let shown = String::from_utf8(within("output", out).await.unwrap()).unwrap();
        assert_eq!(
            (code.unwrap(), shown.as_str()),
            (0, "43 132\r\n"),
            "{protocol:?}"
        );
    }
}

/// An attach session in a task: a keyboard to type into, a screen to read.
struct Attached {
    keyboard: tokio::io::DuplexStream,
    screen: tokio::io::DuplexStream,
    seen: String,
    session: JoinHandle<Result<(), StreamingError>>,
}

async fn attach(rt: &mut Rt, id: &str, protocol: Protocol) -> Attached {
    let streams = Streams {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let url = try_attach_url(rt, id, streams).await.expect("Attach");
    let (stdin, keyboard) = duplex(4096);
    let (stdout, screen) = duplex(64 * 1024);
    let (stderr, _) = capture();
    let io = StreamIo {
        stdin: Some(Box::new(stdin)),
        stdout: Some(Box::new(stdout)),
        stderr,
        resize: None,
    };
    Attached {
        keyboard,
        screen,
        seen: String::new(),
        session: tokio::spawn(async move { client::attach(&url, protocol, false, io).await }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_forwards_stdin_and_fans_out_output() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = pod(&mut env, "attach").await;
    let mut config = cri::container_config(
        "echoer",
        &env.image,
        &[
            "sh",
            "-c",
            "while read l; do echo got:$l; done; echo stdin-closed",
        ],
    );
    config.stdin = true;
    let id = cri::run(&mut env.rt, &pod_id, &pod, config).await;

    // One client per protocol, attached at the same time; each types, both see the answers.
    let mut spdy = attach(&mut env.rt, &id, Protocol::Spdy).await;
    let mut websocket = attach(&mut env.rt, &id, Protocol::WebSocket).await;
    for (line, typist) in [("one-over-spdy", 0), ("two-over-websocket", 1)] {
        // The second client may not be attached yet when the first types: repeat until seen.
        let answer = format!("got:{line}\n");
        within("the answer to reach both clients", async {
            loop {
                let client = if typist == 0 {
                    &mut spdy
                } else {
                    &mut websocket
                };
                client
                    .keyboard
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .unwrap();
                let mut all_saw = true;
                for client in [&mut spdy, &mut websocket] {
                    let mut buf = [0u8; 4096];
                    while !client.seen.contains(&answer) {
                        match tokio::time::timeout(
                            Duration::from_millis(300),
                            client.screen.read(&mut buf),
                        )
                        .await
                        {
                            Ok(n) => {
                                let n = n.unwrap();
                                assert!(n > 0, "attach output ended; got {:?}", client.seen);
                                client.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                            }
                            Err(_) => {
                                all_saw = false;
                                break;
                            }
                        }
                    }
                }
                if all_saw {
                    break;
                }
            }
        })
        .await;
    }

    // The attached output also went to the container's log.
    let (status, _) = cri::status(&mut env.rt, &id).await;
    let log = std::path::PathBuf::from(&status.log_path);
    for line in ["got:one-over-spdy", "got:two-over-websocket"] {
        let expected = ("stdout".to_string(), "F".to_string(), line.to_string());
        assert!(
            wait_for(Duration::from_secs(10), || cri::log_lines(&log)
                .contains(&expected)),
            "{line} not in the log: {:?}",
            cri::log_lines(&log)
        );
    }

    // One client goes away; the other keeps working.
    spdy.session.abort();
    let _ = spdy.session.await;
    websocket
        .keyboard
        .write_all(b"after-detach\n")
        .await
        .unwrap();
    read_until(
        &mut websocket.screen,
        &mut websocket.seen,
        "got:after-detach\n",
    )
    .await;

    // A client that goes away while the container is quiet leaves nothing behind in corrald
    // (no connection to the shim, no thread waiting on it).
    let daemon_pid = env.daemon.pid();
    let open_fds = move || open_fds(daemon_pid);
    // The aborted session's descriptors close on corrald's side a moment later: count once
    // they have, or the third session's may only replace them.
    let before = settled(open_fds).await;
    let mut third = attach(&mut env.rt, &id, Protocol::Spdy).await;
    third.keyboard.write_all(b"third\n").await.unwrap();
    read_until(&mut third.screen, &mut third.seen, "got:third\n").await;
    assert!(open_fds() > before, "the attach session holds descriptors");
    third.session.abort();
    let _ = third.session.await;
    assert!(
        wait_for(Duration::from_secs(20), || open_fds() <= before),
        "corrald still holds {} descriptors, {before} before the attach",
        open_fds()
    );

    // The container exits: the remaining session ends.
    cri::stop(&mut env.rt, &id, 0).await;
    let ended = within("the attach session to end", websocket.session)
        .await
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
}

/// Starts a busybox `nc` echo server on `port` in the pod (a `cat` per connection, several
/// at once) and waits until it listens; returns the container.
async fn echo_server(env: &mut Env, pod_id: &str, pod: &PodSandboxConfig, port: u16) -> String {
    let port = port.to_string();
    let config =
        cri::container_config("echo", &env.image, &["nc", "-ll", "-p", &port, "-e", "cat"]);
    let id = cri::run(&mut env.rt, pod_id, pod, config).await;
    let listening = format!(":{port} ");
    within("the echo server to listen", async {
        while !cri::exec(&mut env.rt, &id, &["netstat", "-ltn"])
            .await
            .1
            .contains(&listening)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_servers_in_the_pod() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = pod(&mut env, "portfwd").await;
    // An echo server (a `cat` per connection, several at once) and a web server.
    let echo = cri::container_config(
        "echo",
        &env.image,
        &["nc", "-ll", "-p", "8080", "-e", "cat"],
    );
    let echo_id = cri::run(&mut env.rt, &pod_id, &pod, echo).await;
    let web = cri::container_config(
        "web",
        &env.image,
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo hello-from-httpd > /www/index.html && exec httpd -f -p 8081 -h /www",
        ],
    );
    cri::run(&mut env.rt, &pod_id, &pod, web).await;
    within("the servers to listen", async {
        loop {
            let (_, listening, _) = cri::exec(&mut env.rt, &echo_id, &["netstat", "-ltn"]).await;
            if listening.contains(":8080 ") && listening.contains(":8081 ") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    for protocol in PROTOCOLS {
        // Two connections to the echo server at once, each getting its own bytes back. (A
        // WebSocket session fixes its ports, one connection each, when connecting.)
        let echo = forwarder(&mut env.rt, &pod_id, protocol, &[8080, 8080]).await;
        let mut first = within("open", echo.open(8080)).await.unwrap();
        let mut second = within("open", echo.open(8080)).await.unwrap();
        let big = payload(200 * 1024, 7);
        within("two connections at once", async {
            round_trip(&mut first, b"first connection\n").await;
            round_trip(&mut second, b"second connection\n").await;
            let ((), ()) = tokio::join!(
                round_trip(&mut first, &big),
                round_trip(&mut second, b"again\n")
            );
        })
        .await;
        drop((first, second));
        within("close", echo.close()).await;

        // The web server answers and closes: the whole response, then no error. (Over
        // WebSocket the end of a port's data shows when the session ends, once every port's
        // connection is done: one port per session here.)
        let web = forwarder(&mut env.rt, &pod_id, protocol, &[8081]).await;
        let mut page = within("open", web.open(8081)).await.unwrap();
        page.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        within("the response", page.read_to_end(&mut response))
            .await
            .unwrap();
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with("HTTP/1.") && response.contains(" 200 OK\r\n"),
            "{protocol:?}: {response}"
        );
        assert!(
            response.ends_with("hello-from-httpd\n"),
            "{protocol:?}: {response}"
        );
        within("finish", page.finish()).await.unwrap();
        within("close", web.close()).await;

        // Nothing listens on port 9: the error stream says so.
        let nothing = forwarder(&mut env.rt, &pod_id, protocol, &[9]).await;
        let mut refused = within("open", nothing.open(9)).await.unwrap();
        let mut rest = Vec::new();
        let _ = within(
            "end of the refused connection",
            refused.read_to_end(&mut rest),
        )
        .await;
        let error = within("finish", refused.finish()).await;
        assert!(
            matches!(&error, Err(StreamingError::PortForward { port: 9, .. })),
            "{protocol:?}: {error:?}"
        );
        within("close", nothing.close()).await;
    }
}

/// A port-forward session to the pod (`ports` matter for WebSocket only).
async fn forwarder(rt: &mut Rt, pod_id: &str, protocol: Protocol, ports: &[u16]) -> PortForwarder {
    let url = port_forward_url(rt, pod_id, ports).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    within("connect", PortForwarder::connect(&url, protocol, ports))
        .await
        .unwrap()
}

async fn round_trip(stream: &mut PortForwardStream, message: &[u8]) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut echoed = vec![0u8; message.len()];
    let (written, read) = tokio::join!(writer.write_all(message), reader.read_exact(&mut echoed));
    written.unwrap();
    read.unwrap();
    assert!(echoed == message, "the echo differs from what was sent");
}

/// A raw HTTP request for `url`'s path; returns the status line.
fn http_status(url: &str, method: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut tcp = std::net::TcpStream::connect(host).unwrap();
    write!(
        tcp,
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    response.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_single_use() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (_, id) = pod_with_sleeper(&mut env, "tokens").await;
    for protocol in PROTOCOLS {
        let url = exec_url(&mut env.rt, &id, &["true"], OUT_ERR).await;
        assert_eq!(run_exec(&url, protocol, None).await.exit_code, 0);
        // Used once: gone, for a plain request and for the client's upgrade alike.
        let status = tokio::task::spawn_blocking({
            let url = url.clone();
            move || http_status(&url, "POST")
        })
        .await
        .unwrap();
        assert!(status.starts_with("HTTP/1.1 404"), "{status}");
        let (stdout, _) = capture();
        let again = client::exec(
            &url,
            protocol,
            false,
            StreamIo {
                stdout,
                ..StreamIo::default()
            },
        )
        .await;
        assert!(
            matches!(
                again,
                Err(StreamingError::UpgradeRefused { status: 404, .. })
            ),
            "{protocol:?}: {again:?}"
        );
    }
    // A token that was never handed out.
    let url = exec_url(&mut env.rt, &id, &["true"], OUT_ERR).await;
    let (base, _) = url.rsplit_once('/').unwrap();
    let forged = format!("{base}/AAAAAAAAAAAAAAAA");
    let status = tokio::task::spawn_blocking(move || http_status(&forged, "GET"))
        .await
        .unwrap();
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_validated() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = pod(&mut env, "validate").await;
    let running = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config("running", &env.image, &["sleep", "100000"]),
    )
    .await;
    let exited = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config("done", &env.image, &["true"]),
    )
    .await;
    cri::wait_exited(&mut env.rt, &exited, Duration::from_secs(20)).await;
    let created = cri::create(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config("created", &env.image, &["true"]),
    )
    .await;

    for id in [&exited, &created] {
        let err = try_exec_url(&mut env.rt, id, &["true"], OUT_ERR)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        let err = try_attach_url(&mut env.rt, id, OUT_ERR).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    }
    let err = try_exec_url(&mut env.rt, "no-such-container", &["true"], OUT_ERR)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    let tty_and_stderr = Streams {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: true,
    };
    let err = try_exec_url(&mut env.rt, &running, &["true"], tty_and_stderr)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = try_attach_url(&mut env.rt, &running, tty_and_stderr)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = try_exec_url(&mut env.rt, &running, &["true"], Streams::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = try_exec_url(&mut env.rt, &running, &[], OUT_ERR)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let err = env
        .rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod_id.clone(),
            port: vec![0],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    env.rt
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .expect("StopPodSandbox");
    let err = env
        .rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod_id.clone(),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

/// How many descriptors a process has open.
/// `count` once it has given the same value three times in a row, 100 ms apart (at most 5 s).
async fn settled(count: impl Fn() -> usize) -> usize {
    let mut last = (count(), 0);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = count();
        last = if now == last.0 {
            (now, last.1 + 1)
        } else {
            (now, 0)
        };
        if last.1 == 2 {
            break;
        }
    }
    last.0
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Whether a process whose command line is exactly `args` runs in the container (seen by `ps`
/// inside it).
async fn runs_in(rt: &mut Rt, id: &str, args: &str) -> bool {
    let ps = cri::exec_ok(rt, id, &["ps", "-o", "pid,stat,args"]).await;
    ps.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_pid, stat) = (fields.next(), fields.next().unwrap_or_default());
        !stat.starts_with('Z') && fields.collect::<Vec<_>>().join(" ") == args
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sessions_end_with_their_client_or_container() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (_, id) = pod_with_sleeper(&mut env, "teardown").await;
    for (n, protocol) in PROTOCOLS.into_iter().enumerate() {
        for tty in [false, true] {
            let seconds = format!("{}", 1000 + n * 2 + usize::from(tty));
            let streams = Streams {
                stdin: true,
                stdout: true,
                stderr: !tty,
                tty,
            };
            let before = open_fds(env.daemon.pid());
            let url = exec_url(&mut env.rt, &id, &["sleep", &seconds], streams).await;
            // A stdin that never ends.
            let (stdin, keyboard) = duplex(64);
            let (stdout, _) = capture();
            let (stderr, _) = if tty {
                (None, tokio::spawn(async { Vec::new() }))
            } else {
                capture()
            };
            let io = StreamIo {
                stdin: Some(Box::new(stdin)),
                stdout,
                stderr,
                resize: None,
            };
            let session = tokio::spawn(async move {
                let _keyboard = keyboard;
                client::exec(&url, protocol, tty, io).await
            });
            let command = format!("sleep {seconds}");
            within("the command to start", async {
                while !runs_in(&mut env.rt, &id, &command).await {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await;
            session.abort();
            let _ = session.await;
            within("the command to go away", async {
                while runs_in(&mut env.rt, &id, &command).await {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await;
            // Nothing of the session is left in corrald (pipes or terminal, pidfd, socket).
            let pid = env.daemon.pid();
            assert!(
                wait_for(Duration::from_secs(20), || open_fds(pid) <= before),
                "{protocol:?}, tty {tty}: corrald holds {} descriptors, {before} before the exec",
                open_fds(pid)
            );
        }
    }
    // The container itself is untouched.
    assert!(runs_in(&mut env.rt, &id, "sleep 100000").await);

    // The container stops: the sessions of commands running in it end too.
    let sessions = sleeping_sessions(&mut env.rt, &id, "2000").await;
    cri::stop(&mut env.rt, &id, 0).await;
    for session in sessions {
        let ended = within("the exec session to end", session).await.unwrap();
        // Killed with the container (SIGKILL: 137), or the session reports its failure.
        assert!(
            matches!(ended, Ok(137) | Err(StreamingError::RemoteCommand { .. })),
            "{ended:?}"
        );
    }
}

/// An exec session of `sleep <seconds>` over each protocol, started in container `id` and
/// running (both commands show in `ps`).
async fn sleeping_sessions(
    rt: &mut Rt,
    id: &str,
    seconds: &str,
) -> Vec<JoinHandle<Result<i32, StreamingError>>> {
    let mut sessions = Vec::new();
    for protocol in PROTOCOLS {
        let url = exec_url(rt, id, &["sleep", seconds], OUT_ERR).await;
        let (stdout, _) = capture();
        let (stderr, _) = capture();
        let io = StreamIo {
            stdout,
            stderr,
            ..StreamIo::default()
        };
        sessions.push(tokio::spawn(async move {
            client::exec(&url, protocol, false, io).await
        }));
    }
    let command = format!("sleep {seconds}");
    within("the commands to start", async {
        loop {
            let ps = cri::exec_ok(rt, id, &["ps", "-o", "args"]).await;
            if ps.matches(&command).count() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    sessions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_loopback_is_up() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (_, id) = pod_with_sleeper(&mut env, "loopback").await;
    let link = cri::exec_ok(&mut env.rt, &id, &["ip", "-o", "link", "show", "lo"]).await;
    let flags = link.split(['<', '>']).nth(1).unwrap_or_default();
    assert!(
        flags.split(',').any(|flag| flag == "UP"),
        "lo is down: {link}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrald_stopping_ends_its_sessions() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (_, id) = pod_with_sleeper(&mut env, "shutdown").await;
    let sessions = sleeping_sessions(&mut env.rt, &id, "3000").await;
    let (pid, _) = cri::pids(&mut env.rt, &id).await;
    tokio::task::block_in_place(|| env.daemon.stop());
    for session in sessions {
        let ended = within("the exec session to end", session).await.unwrap();
        assert!(
            ended.is_err() || ended.as_ref().is_ok_and(|code| *code != 0),
            "{ended:?}"
        );
    }
    // The commands are gone; the container keeps running without corrald.
    assert!(process_alive(pid));
    tokio::task::block_in_place(|| env.daemon.start_again());
    env.rt = env.daemon.runtime().await;
    let ps = cri::exec_ok(&mut env.rt, &id, &["ps", "-o", "args"]).await;
    assert!(!ps.contains("sleep 3000"), "{ps}");
}

/// `corralctl --socket SOCKET ARGS...`, its stdio piped.
fn corralctl(daemon: &Daemon, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(built_binary("corralctl"));
    command
        .arg("--socket")
        .arg(daemon.socket())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// Runs corralctl with `input` on its stdin; its output once it has exited.
fn corralctl_with_input(daemon: &Daemon, args: &[&str], input: Vec<u8>) -> std::process::Output {
    let mut child = corralctl(daemon, args)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run corralctl");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap().expect("corralctl read its stdin");
    output
}

fn describe(output: &std::process::Output) -> String {
    format!(
        "{}, stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corralctl_exec_and_attach() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = pod(&mut env, "ctlexec").await;
    let id = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config("sleeper", &env.image, &["sleep", "100000"]),
    )
    .await;
    let daemon = &env.daemon;
    tokio::task::block_in_place(|| {
        // Streaming exec with piped stdin, over both transports.
        for (seed, transport) in [(11, "spdy"), (12, "websocket")] {
            let mut input = payload(200 * 1024, seed);
            input.push(b'\n');
            let args = ["exec", "-i", "--transport", transport, &id[..12], "cat"];
            let output = corralctl_with_input(daemon, &args, input.clone());
            assert!(
                output.status.success(),
                "{transport}: {}",
                describe(&output)
            );
            assert!(output.stdout == input, "{transport}: cat changed the data");
        }

        // Exit codes: through ExecSync, and through the streaming API.
        let output = corralctl(daemon, &["exec", &id, "sh", "-c", "exit 5"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
        let args = [
            "exec",
            "-i",
            &id,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 6",
        ];
        let output = corralctl_with_input(daemon, &args, Vec::new());
        assert_eq!(output.status.code(), Some(6), "{}", describe(&output));
        assert_eq!(String::from_utf8_lossy(&output.stdout), "out\n");
        assert_eq!(String::from_utf8_lossy(&output.stderr), "err\n");

        // -t: the command runs on a terminal (stdin here is not one: no raw mode).
        let output = corralctl(daemon, &["exec", "-t", &id, "tty"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", describe(&output));
        let tty = String::from_utf8_lossy(&output.stdout);
        assert!(tty.starts_with("/dev/pts/"), "{tty:?}");
    });

    // attach -i: what is sent is echoed; the container's stdin closes with ours (stdin_once),
    // it exits, and attach returns.
    for (n, transport) in ["spdy", "websocket"].into_iter().enumerate() {
        let mut config = cri::container_config(
            &format!("echoer-{transport}"),
            &env.image,
            &["sh", "-c", "while read l; do echo got:$l; done; echo bye"],
        );
        config.stdin = true;
        config.stdin_once = true;
        let echoer = cri::run(&mut env.rt, &pod_id, &pod, config).await;
        let daemon = &env.daemon;
        let output = tokio::task::block_in_place(|| {
            let args = ["attach", "-i", "--transport", transport, &echoer];
            corralctl_with_input(daemon, &args, format!("hello\nworld-{n}\n").into_bytes())
        });
        assert!(
            output.status.success(),
            "{transport}: {}",
            describe(&output)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("got:hello\ngot:world-{n}\nbye\n"),
            "{transport}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corralctl_port_forward() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = pod(&mut env, "ctlpf").await;
    echo_server(&mut env, &pod_id, &pod, 8080).await;
    let daemon = &env.daemon;
    tokio::task::block_in_place(|| {
        for transport in ["spdy", "websocket"] {
            let args = [
                "port-forward",
                "--transport",
                transport,
                &pod_id[..12],
                ":8080",
            ];
            let mut child = corralctl(daemon, &args).spawn().expect("run corralctl");
            let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut first = String::new();
            std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
            // "Forwarding from 127.0.0.1:PORT -> 8080"
            let local = first
                .strip_prefix("Forwarding from ")
                .and_then(|rest| rest.strip_suffix(" -> 8080\n"))
                .unwrap_or_else(|| panic!("{transport}: {first:?}"))
                .to_string();

            // Two connections at once, each echoed on its own.
            let mut one = std::net::TcpStream::connect(&local).unwrap();
            let mut two = std::net::TcpStream::connect(&local).unwrap();
            for stream in [&one, &two] {
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
            }
            one.write_all(b"one\n").unwrap();
            two.write_all(b"two\n").unwrap();
            let mut echoed = [0u8; 4];
            two.read_exact(&mut echoed).unwrap();
            assert_eq!(&echoed, b"two\n", "{transport}");
            one.read_exact(&mut echoed).unwrap();
            assert_eq!(&echoed, b"one\n", "{transport}");
            let big = payload(100 * 1024, 3);
            let mut reader = one.try_clone().unwrap();
            let sender = std::thread::spawn({
                let big = big.clone();
                move || one.write_all(&big)
            });
            let mut back = vec![0u8; big.len()];
            reader.read_exact(&mut back).unwrap();
            sender.join().unwrap().unwrap();
            assert!(back == big, "{transport}: the echo differs");
            drop((reader, two));

            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "{transport}: port-forward ended with {status}"
            );
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corralctl_logs_follow_across_rotation() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = pod(&mut env, "ctllogs").await;
    let script = "echo first; until [ -e /tmp/go ]; do sleep 0.1; done; echo second; \
                  until [ -e /tmp/stop ]; do sleep 0.1; done; echo third >&2";
    let id = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config("logger", &env.image, &["sh", "-c", script]),
    )
    .await;
    let (status, _) = cri::status(&mut env.rt, &id).await;
    let log = std::path::PathBuf::from(&status.log_path);
    let mut child = corralctl(&env.daemon, &["logs", "-f", &id])
        .spawn()
        .expect("run corralctl");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::task::block_in_place(|| std::io::BufRead::read_line(&mut stdout, &mut line)).unwrap();
    assert_eq!(line, "first\n");

    // Rotated as kubelet does it: renamed, then the runtime reopens the path.
    std::fs::rename(&log, log.with_extension("log.1")).unwrap();
    env.rt
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .expect("ReopenContainerLog");
    cri::exec_ok(&mut env.rt, &id, &["touch", "/tmp/go"]).await;
    line.clear();
    tokio::task::block_in_place(|| std::io::BufRead::read_line(&mut stdout, &mut line)).unwrap();
    assert_eq!(line, "second\n");

    // The container exits: logs -f prints the rest and ends.
    cri::exec_ok(&mut env.rt, &id, &["touch", "/tmp/stop"]).await;
    let output = tokio::task::block_in_place(|| child.wait_with_output()).unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(String::from_utf8_lossy(&output.stderr), "third\n");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corralctl_exec_it_on_a_terminal() {
    require_root!();
    let script = std::path::Path::new("/usr/bin/script");
    if !script.exists() {
        eprintln!("skipped: util-linux `script` (a terminal to run corralctl on) is not installed");
        return;
    }
    let Some(mut env) = env().await else { return };
    let (_, id) = pod_with_sleeper(&mut env, "ctltty").await;
    // On a terminal of 100x30 (script's pty): what is typed goes to the remote shell, whose
    // terminal has the local size; the exit code comes back; the local terminal is in cooked
    // mode again afterwards.
    let shell = format!(
        "stty cols 100 rows 30; {ctl} --socket {socket} exec -it {id} sh; code=$?; \
         stty -a | grep -q ' icanon' && echo cooked-again; exit $code",
        ctl = built_binary("corralctl").display(),
        socket = env.daemon.socket().display(),
    );
    let output = tokio::task::block_in_place(|| {
        let mut child = std::process::Command::new(script)
            .args(["--quiet", "--return", "--command", &shell, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run script");
        // Typed ahead: the terminal keeps the line until the remote shell reads it. stdin
        // stays open until the end, as a keyboard would.
        let mut keyboard = child.stdin.take().unwrap();
        keyboard.write_all(b"stty size; exit 3\n").unwrap();
        let output = child.wait_with_output().unwrap();
        drop(keyboard);
        output
    });
    let screen = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(3),
        "{screen:?}, {}",
        describe(&output)
    );
    assert!(screen.contains("\r\n30 100\r\n"), "{screen:?}");
    assert!(screen.ends_with("cooked-again\r\n"), "{screen:?}");
}
