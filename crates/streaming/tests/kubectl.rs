//! Interoperability with the real Kubernetes client: `kubectl exec`, `attach` and
//! `port-forward` (Go's spdystream and gorilla/websocket) against the streaming server,
//! behind a fake API server that proxies the upgrade requests the way kubelet does.
//! Skipped when `kubectl` is not installed.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use corral_streaming::{Backend, BackendError, BoxFuture, StreamIo, StreamingServer};
use cri_proto::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::task::JoinHandle;

use common::{connect_local, run_process, within};

fn kubectl_available() -> bool {
    let found = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        eprintln!("skipping: kubectl is not installed");
    }
    found
}

/// exec runs local processes, attach echoes stdin, port-forward dials loopback.
struct LocalBackend;

impl Backend for LocalBackend {
    fn exec(
        &self,
        _container_id: &str,
        cmd: Vec<String>,
        _tty: bool,
        io: StreamIo,
    ) -> BoxFuture<'static, Result<i32, BackendError>> {
        Box::pin(run_process(cmd, io))
    }

    fn attach(
        &self,
        _container_id: &str,
        _tty: bool,
        io: StreamIo,
    ) -> BoxFuture<'static, Result<(), BackendError>> {
        Box::pin(async move {
            if let (Some(mut stdin), Some(mut stdout)) = (io.stdin, io.stdout) {
                let _ = tokio::io::copy(&mut stdin, &mut stdout).await;
                let _ = stdout.shutdown().await;
            }
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

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), percent_decode(value)))
        .collect()
}

fn flag(params: &[(String, String)], name: &str) -> bool {
    params
        .iter()
        .any(|(key, value)| key == name && (value == "true" || value == "1"))
}

/// Just enough of an API server for kubectl: discovery, one running pod `p1` with container
/// `c`, and its exec/attach/portforward subresources proxied to the streaming server.
/// The `Upgrade` header of each streaming request the fake API server relayed, in order.
type Upgrades = Arc<Mutex<Vec<String>>>;

async fn fake_api_server(
    streaming: Arc<StreamingServer>,
    upgrades: Upgrades,
) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve_api_request(conn, streaming.clone(), upgrades.clone()));
        }
    });
    (address, task)
}

async fn serve_api_request(
    mut conn: TcpStream,
    streaming: Arc<StreamingServer>,
    upgrades: Upgrades,
) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read_u8().await {
            Ok(byte) => head.push(byte),
            Err(_) => return,
        }
    }
    let head = String::from_utf8(head).unwrap();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params = query_params(query);
    let headers: Vec<&str> = lines.filter(|line| !line.is_empty()).collect();

    let streaming_url = match path {
        "/api/v1/namespaces/default/pods/p1/exec" => Some(
            streaming
                .exec_url(&ExecRequest {
                    container_id: "c".into(),
                    cmd: params
                        .iter()
                        .filter(|(key, _)| key == "command")
                        .map(|(_, value)| value.clone())
                        .collect(),
                    tty: flag(&params, "tty"),
                    stdin: flag(&params, "stdin"),
                    stdout: flag(&params, "stdout"),
                    stderr: flag(&params, "stderr"),
                })
                .unwrap(),
        ),
        "/api/v1/namespaces/default/pods/p1/attach" => Some(
            streaming
                .attach_url(&AttachRequest {
                    container_id: "c".into(),
                    stdin: flag(&params, "stdin"),
                    tty: flag(&params, "tty"),
                    stdout: flag(&params, "stdout"),
                    stderr: flag(&params, "stderr"),
                })
                .unwrap(),
        ),
        "/api/v1/namespaces/default/pods/p1/portforward" => Some(
            streaming
                .port_forward_url(&PortForwardRequest {
                    pod_sandbox_id: "p1".into(),
                    port: Vec::new(),
                })
                .unwrap(),
        ),
        _ => None,
    };
    if let Some(url) = streaming_url {
        let upgrade = headers
            .iter()
            .find_map(|h| {
                h.split_once(':')
                    .filter(|(name, _)| name.eq_ignore_ascii_case("upgrade"))
            })
            .map(|(_, value)| value.trim().to_owned())
            .unwrap_or_default();
        upgrades.lock().unwrap().push(upgrade);
        // Relay the upgrade request and then the raw connection, as kubelet's proxy does.
        let new_path = url.strip_prefix(streaming.base_url()).unwrap();
        let mut upstream = TcpStream::connect(streaming.local_addr()).await.unwrap();
        let mut request = format!("{method} {new_path} HTTP/1.1\r\n");
        for header in &headers {
            if !header.to_ascii_lowercase().starts_with("host:") {
                request.push_str(header);
                request.push_str("\r\n");
            }
        }
        request.push_str(&format!("Host: {}\r\n\r\n", streaming.local_addr()));
        upstream.write_all(request.as_bytes()).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
        return;
    }
    let body = match path {
        "/version" => r#"{"major":"1","minor":"32","gitVersion":"v1.32.0"}"#.to_owned(),
        "/api" => r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1"}]}"#.to_owned(),
        "/apis" => r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#.to_owned(),
        "/api/v1" => r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[
            {"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list"]},
            {"name":"pods/exec","singularName":"","namespaced":true,"kind":"PodExecOptions","verbs":["create","get"]},
            {"name":"pods/attach","singularName":"","namespaced":true,"kind":"PodAttachOptions","verbs":["create","get"]},
            {"name":"pods/portforward","singularName":"","namespaced":true,"kind":"PodPortForwardOptions","verbs":["create","get"]}]}"#
            .to_owned(),
        "/api/v1/namespaces/default/pods/p1" => r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p1","namespace":"default"},"spec":{"containers":[{"name":"c","image":"busybox","stdin":true}]},"status":{"phase":"Running"}}"#.to_owned(),
        _ => {
            let _ = conn
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
            return;
        }
    };
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(response.as_bytes()).await;
}

struct Cluster {
    api: String,
    /// kubectl's discovery cache, kept out of $HOME.
    cache: tempfile::TempDir,
    streaming: Arc<StreamingServer>,
    api_task: JoinHandle<()>,
    upgrades: Upgrades,
}

async fn cluster() -> Cluster {
    // RUST_LOG=corral_streaming=debug,corral_spdy=debug shows both sides' view.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let streaming = Arc::new(
        StreamingServer::start("127.0.0.1:0".parse().unwrap(), Arc::new(LocalBackend))
            .await
            .unwrap(),
    );
    let upgrades = Upgrades::default();
    let (api, api_task) = fake_api_server(streaming.clone(), upgrades.clone()).await;
    Cluster {
        api,
        cache: tempfile::tempdir().unwrap(),
        streaming,
        api_task,
        upgrades,
    }
}

impl Cluster {
    fn kubectl(&self, websockets: bool, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        let flag = if websockets { "true" } else { "false" };
        command
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", flag)
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", flag)
            .env("KUBECONFIG", "/dev/null")
            .args(["-s", &self.api])
            .arg(format!("--cache-dir={}", self.cache.path().display()))
            .args(args)
            .kill_on_drop(true);
        command
    }

    async fn stop(self) {
        self.api_task.abort();
        within("shutdown", self.streaming.shutdown()).await;
    }
}

async fn run(mut command: Command, stdin: &[u8]) -> std::process::Output {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    // kubectl may exit (having failed) before reading it all; its output tells.
    let _ = input.write_all(stdin).await;
    drop(input);
    within("kubectl", child.wait_with_output()).await.unwrap()
}

async fn exec_and_attach(websockets: bool) {
    let cluster = cluster().await;
    let output = run(
        cluster.kubectl(
            websockets,
            &[
                "exec",
                "p1",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
        ),
        b"",
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&output.stdout), "out\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("err\n"), "{stderr}");
    assert_eq!(output.status.code(), Some(3), "{stderr}");

    let input: Vec<u8> = (0..100_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let output = run(
        cluster.kubectl(websockets, &["exec", "-i", "p1", "--", "cat"]),
        &input,
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout == input, "cat did not echo stdin intact");

    let output = run(
        cluster.kubectl(websockets, &["attach", "-i", "p1", "-c", "c"]),
        b"hello attach\n",
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello attach\n");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_and_attach_over_spdy() {
    if kubectl_available() {
        exec_and_attach(false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_and_attach_over_websocket() {
    if kubectl_available() {
        exec_and_attach(true).await;
    }
}

async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_spdy() {
    if kubectl_available() {
        port_forward(false).await;
    }
}

/// kubectl >= 1.30 tunnels port-forward's SPDY session through a WebSocket
/// (`SPDY/3.1+portforward.k8s.io`) and falls back to plain SPDY when the server refuses it:
/// only WebSocket upgrades may reach the server here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_the_websocket_tunnel() {
    if kubectl_available() {
        port_forward(true).await;
    }
}

async fn port_forward(websockets: bool) {
    let cluster = cluster().await;
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote = echo.local_addr().unwrap().port();
    let echo_task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = echo.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut reader, mut writer) = conn.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    let local = free_port().await;
    let mut kubectl = cluster
        .kubectl(
            websockets,
            &[
                "port-forward",
                "pod/p1",
                &format!("{local}:{remote}"),
                "--address",
                "127.0.0.1",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(kubectl.stdout.take().unwrap()).lines();
    let ready = within("kubectl port-forward to listen", lines.next_line())
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(ready.starts_with("Forwarding from"), "{ready}");
    let exchange = |message: &'static [u8]| async move {
        let mut conn = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
        conn.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        conn.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, message);
    };
    within("two connections at once", async {
        tokio::join!(
            exchange(b"first connection"),
            exchange(b"second connection")
        );
    })
    .await;
    within("a later connection", exchange(b"third")).await;
    let upgrades = cluster.upgrades.lock().unwrap().clone();
    let expected = if websockets { "websocket" } else { "SPDY/3.1" };
    assert!(
        !upgrades.is_empty()
            && upgrades
                .iter()
                .all(|upgrade| upgrade.eq_ignore_ascii_case(expected)),
        "upgrades {upgrades:?}, expected only {expected}"
    );
    kubectl.kill().await.unwrap();
    echo_task.abort();
    cluster.stop().await;
}
