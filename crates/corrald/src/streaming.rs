//! The streaming backend: Exec, Attach and PortForward sessions of corral-streaming's server,
//! served from corrald's containers and pods.
//!
//! Processes and sockets are driven with blocking I/O on dedicated threads (pipes, the pty
//! master, the shim's attach socket), bridged to the server's async streams through channels
//! by the pumps of `corral_streaming::pump`.
//! Port-forward connections are opened inside the pod's network namespace by a short-lived
//! thread that enters it, connects and ends — never a tokio worker.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use corral_runtime::attach::{AttachClient, AttachStreams, Frame};
use corral_runtime::ExecIo;
use corral_streaming::pump::{
    initial_size, pump_in, pump_process_io, ProcessStdio, SessionStreams, DEFAULT_SIZE,
};
use corral_streaming::{
    Backend, BackendError, BoxFuture, BoxReader, BoxWriter, StreamIo, TerminalSize,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::container::{ContainerManager, ContainerState};
use crate::pod::PodManager;

/// How long output may keep coming after an exec'd process exited (a background child that
/// inherited its stdout can hold the pipe open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// corrald's side of the streaming server.
pub struct StreamingBackend {
    /// The daemon's state (set once the daemon is built).
    pub daemon: std::sync::OnceLock<std::sync::Weak<crate::Daemon>>,
    /// Sessions per container and the idle timeout.
    pub limits: Arc<crate::stream_limits::StreamLimits>,
}

impl StreamingBackend {
    /// Runs the session `start` makes for container `id` within the per-container limits: it
    /// is refused when the container has too many, and ended when its streams stay idle.
    fn limited<T: Send + 'static>(
        &self,
        id: &str,
        io: StreamIo,
        start: impl FnOnce(&Self, StreamIo) -> BoxFuture<'static, Result<T, BackendError>>,
    ) -> BoxFuture<'static, Result<T, BackendError>> {
        let mut session = match self.limits.admit(id, io) {
            Ok(session) => session,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let run = start(self, session.io());
        Box::pin(session.run(run))
    }

    fn daemon(&self) -> Result<Arc<crate::Daemon>, BackendError> {
        self.daemon
            .get()
            .and_then(|w| w.upgrade())
            .ok_or_else(|| BackendError::Other("corrald is shutting down".into()))
    }
}

fn io_err(op: &str) -> impl FnOnce(std::io::Error) -> BackendError + '_ {
    move |source| BackendError::Io {
        op: op.to_string(),
        source,
    }
}

/// Kills the exec'd process when the session goes away before it exited.
struct KillOnDrop {
    pidfd: Option<OwnedFd>,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(fd) = self.pidfd.take() {
            let _ =
                corral_process::pidfd::send_signal(fd.as_fd(), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Runs `cmd` in container `id` through its OCI runtime (blocking: a fork and exec).
fn spawn_exec(
    env: &crate::container::ContainerEnv,
    id: &str,
    runtime_handler: &str,
    cmd: Vec<String>,
    tty: bool,
    stdio: ExecIo,
) -> Result<corral_runtime::ExecChild, BackendError> {
    let other = |e: &dyn std::fmt::Display| BackendError::Other(e.to_string());
    let process = crate::container::exec_process(env, id, cmd, tty).map_err(|e| other(&e))?;
    env.runtime(runtime_handler)
        .map_err(|e| other(&e))?
        .exec_spawn(id, &process, stdio)
        .map_err(|e| other(&e))
}

/// Connects an exec'd process's terminal or pipes to the session's streams; returns the
/// output pumps, to be drained once the process has exited.
fn pump_exec_io(
    child: &mut corral_runtime::ExecChild,
    session: SessionStreams,
) -> Result<Vec<tokio::task::JoinHandle<()>>, BackendError> {
    let process = ProcessStdio {
        terminal: child.terminal.take(),
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
    };
    pump_process_io(process, session).map_err(io_err("clone terminal"))
}

/// Applies the client's terminal sizes to an exec's terminal until the client stops sending.
fn forward_resizes(mut resize: mpsc::Receiver<TerminalSize>, control: Option<OwnedFd>) {
    tokio::spawn(async move {
        while let Some(size) = resize.recv().await {
            if let Some(control) = control.as_ref() {
                let _ = corral_runtime::set_window_size(control.as_fd(), size.width, size.height);
            }
        }
    });
}

/// Closes an attach connection both ways when its session ends, however it ends (the client
/// went away and the future was dropped): the thread reading the shim's frames then sees
/// end-of-file and exits, instead of holding the connection until the container writes again.
struct CloseOnDrop(Option<std::os::unix::net::UnixStream>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(socket) = &self.0 {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The attach connection's writing half, shared by the stdin pump and the resizes.
type SharedAttachWriter = Arc<std::sync::Mutex<corral_runtime::attach::AttachWriter>>;

/// Copies the client's stdin to the shim; closes the container's stdin at the client's EOF.
fn pump_attach_stdin(stdin: BoxReader, writer: SharedAttachWriter) {
    let closer = writer.clone();
    pump_in(
        stdin,
        move |b| {
            writer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .send_stdin(b)
                .is_ok()
        },
        move || {
            let _ = closer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .close_stdin();
        },
    );
}

/// Sends the client's terminal sizes to the shim until the client stops sending.
fn forward_attach_resizes(mut resize: mpsc::Receiver<TerminalSize>, writer: SharedAttachWriter) {
    tokio::spawn(async move {
        while let Some(size) = resize.recv().await {
            let w = writer.clone();
            let _ = tokio::task::spawn_blocking(move || {
                w.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .resize(size.width, size.height)
            })
            .await;
        }
    });
}

/// Writes the shim's output frames to the client's streams until the exit frame (or the
/// connection's end); returns the streams for shutting down.
async fn forward_frames(
    mut frames: mpsc::Receiver<Frame>,
    mut stdout: Option<BoxWriter>,
    mut stderr: Option<BoxWriter>,
) -> (Option<BoxWriter>, Option<BoxWriter>) {
    while let Some(frame) = frames.recv().await {
        let (data, to) = match frame {
            Frame::Stdout(data) => (data, stdout.as_mut()),
            Frame::Stderr(data) => (data, stderr.as_mut()),
            Frame::Exit(_) => break,
            _ => continue,
        };
        if let Some(to) = to {
            let _ = to.write_all(&data).await;
            let _ = to.flush().await;
        }
    }
    (stdout, stderr)
}

async fn running_container(
    containers: &ContainerManager,
    id: &str,
) -> Result<crate::container::ContainerRecord, BackendError> {
    let record = containers
        .record(id)
        .await
        .map_err(|_| BackendError::NotFound {
            kind: "container",
            id: id.to_string(),
        })?;
    if record.state != ContainerState::Running {
        return Err(BackendError::NotRunning { id: id.to_string() });
    }
    Ok(record)
}

impl StreamingBackend {
    fn exec_session(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        io: StreamIo,
    ) -> BoxFuture<'static, Result<i32, BackendError>> {
        let daemon = self.daemon();
        let id = container_id.to_string();
        Box::pin(async move {
            let daemon = daemon?;
            let record = running_container(&daemon.containers, &id).await?;
            let env = daemon.containers.env_handle();
            let StreamIo {
                stdin,
                stdout,
                stderr,
                mut resize,
            } = io;
            let initial = match resize.as_mut() {
                Some(sizes) if tty => initial_size(sizes).await,
                _ => DEFAULT_SIZE,
            };
            let stdio = if tty {
                ExecIo::Terminal {
                    width: initial.width,
                    height: initial.height,
                }
            } else {
                ExecIo::Pipes {
                    stdin: stdin.is_some(),
                }
            };
            let (spawn_env, spawn_id) = (env.clone(), id.clone());
            let mut child = tokio::task::spawn_blocking(move || {
                spawn_exec(
                    &spawn_env,
                    &spawn_id,
                    &record.runtime_handler,
                    cmd,
                    tty,
                    stdio,
                )
            })
            .await
            .map_err(|e| BackendError::Other(format!("exec task: {e}")))??;
            let guard = KillOnDrop {
                pidfd: child.pidfd().try_clone_to_owned().ok(),
            };
            let session = SessionStreams {
                stdin,
                stdout,
                stderr,
            };
            let outputs = pump_exec_io(&mut child, session)?;
            if let Some(resize) = resize {
                forward_resizes(resize, child.resize_handle());
            }
            // Awaited on the reactor: no thread is held while the process runs; once its pidfd
            // is readable, reaping it does not block.
            corral_process::pidfd::wait_exited(child.pidfd())
                .await
                .map_err(io_err("wait for the exec'd process"))?;
            let code = child
                .wait()
                .map_err(|e| BackendError::Other(e.to_string()))?;
            drop(guard);
            for output in outputs {
                let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, output).await;
            }
            Ok(code)
        })
    }

    fn attach_session(
        &self,
        container_id: &str,
        _tty: bool,
        io: StreamIo,
    ) -> BoxFuture<'static, Result<(), BackendError>> {
        let daemon = self.daemon();
        let id = container_id.to_string();
        Box::pin(async move {
            let daemon = daemon?;
            running_container(&daemon.containers, &id).await?;
            let dir = daemon.containers.env_handle().container_dir(&id);
            let StreamIo {
                stdin,
                stdout,
                stderr,
                resize,
            } = io;
            let streams = AttachStreams {
                stdin: stdin.is_some(),
                stdout: stdout.is_some(),
                stderr: stderr.is_some(),
            };
            let (mut reader, writer) = tokio::task::spawn_blocking(move || {
                AttachClient::connect(&dir, streams).and_then(|c| c.split())
            })
            .await
            .map_err(|e| BackendError::Other(format!("attach task: {e}")))?
            .map_err(|e| BackendError::Other(format!("attach to the container's shim: {e}")))?;
            let _connection = CloseOnDrop(reader.socket().try_clone().ok());
            let writer = Arc::new(std::sync::Mutex::new(writer));
            let (out_tx, out_rx) = mpsc::channel::<Frame>(16);
            let read_thread = std::thread::spawn(move || {
                while let Ok(Some(frame)) = reader.next_frame() {
                    let exit = matches!(frame, Frame::Exit(_));
                    if out_tx.blocking_send(frame).is_err() || exit {
                        break;
                    }
                }
            });
            if let Some(stdin) = stdin {
                pump_attach_stdin(stdin, writer.clone());
            }
            if let Some(resize) = resize {
                forward_attach_resizes(resize, writer.clone());
            }
            let (stdout, stderr) = forward_frames(out_rx, stdout, stderr).await;
            writer.lock().unwrap_or_else(|p| p.into_inner()).shutdown();
            let _ = tokio::task::spawn_blocking(move || read_thread.join()).await;
            if let Some(mut out) = stdout {
                let _ = out.shutdown().await;
            }
            if let Some(mut err) = stderr {
                let _ = err.shutdown().await;
            }
            Ok(())
        })
    }

    fn port_forward_session(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> BoxFuture<'static, Result<tokio::net::TcpStream, BackendError>> {
        let daemon = self.daemon();
        let id = pod_sandbox_id.to_string();
        Box::pin(async move {
            let daemon = daemon?;
            // The store and /proc reads of pod_netns and the connect all block.
            let stream = tokio::task::spawn_blocking(move || {
                let netns = pod_netns(&daemon.pods, &id)?;
                corral_sandbox::netns::connect_localhost_in(netns.as_deref(), port)
                    .map_err(io_err("connect to the pod's port"))
            })
            .await
            .map_err(|_| BackendError::Other("port-forward connect task died".into()))??;
            stream
                .set_nonblocking(true)
                .map_err(io_err("set nonblocking"))?;
            tokio::net::TcpStream::from_std(stream).map_err(io_err("register connection"))
        })
    }
}

/// The pod's pinned network namespace, or `None` for a host-network pod.
fn pod_netns(pods: &PodManager, id: &str) -> Result<Option<PathBuf>, BackendError> {
    let sandbox = pods.sandbox(id).map_err(|_| BackendError::NotFound {
        kind: "pod sandbox",
        id: id.to_string(),
    })?;
    if !sandbox.pause_alive() {
        return Err(BackendError::Other(format!(
            "pod sandbox {id} is not ready"
        )));
    }
    Ok(sandbox.netns_path)
}

impl Backend for StreamingBackend {
    fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        io: StreamIo,
    ) -> BoxFuture<'static, Result<i32, BackendError>> {
        self.limited(container_id, io, |backend, io| {
            backend.exec_session(container_id, cmd, tty, io)
        })
    }

    fn attach(
        &self,
        container_id: &str,
        tty: bool,
        io: StreamIo,
    ) -> BoxFuture<'static, Result<(), BackendError>> {
        self.limited(container_id, io, |backend, io| {
            backend.attach_session(container_id, tty, io)
        })
    }

    fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> BoxFuture<'static, Result<tokio::net::TcpStream, BackendError>> {
        self.port_forward_session(pod_sandbox_id, port)
    }
}
