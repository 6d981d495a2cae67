//! What the streaming tests share: a deadline guard and a fake backend's local processes and
//! loopback connections.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use corral_streaming::{BackendError, BoxWriter, StreamIo};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

/// Deadline guard only: no test asserts on timing.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish"))
}

pub fn io_error(op: &str) -> impl FnOnce(std::io::Error) -> BackendError + '_ {
    move |source| BackendError::Io {
        op: op.to_owned(),
        source,
    }
}

/// Runs `cmd` as a local process with the client's streams.
pub async fn run_process(cmd: Vec<String>, io: StreamIo) -> Result<i32, BackendError> {
    let (program, args) = cmd
        .split_first()
        .ok_or_else(|| BackendError::Other("empty command".into()))?;
    let piped = |wanted: bool| {
        if wanted {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        }
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(piped(io.stdin.is_some()))
        .stdout(piped(io.stdout.is_some()))
        .stderr(piped(io.stderr.is_some()))
        .kill_on_drop(true)
        .spawn()
        .map_err(io_error("spawning"))?;
    let child_stdin = child.stdin.take();
    let stdin = async move {
        if let (Some(mut source), Some(mut sink)) = (io.stdin, child_stdin) {
            let _ = tokio::io::copy(&mut source, &mut sink).await;
        }
    };
    async fn forward(source: Option<impl AsyncRead + Unpin>, sink: Option<BoxWriter>) {
        if let (Some(mut source), Some(mut sink)) = (source, sink) {
            let _ = tokio::io::copy(&mut source, &mut sink).await;
            let _ = sink.shutdown().await;
        }
    }
    let stdout = forward(child.stdout.take(), io.stdout);
    let stderr = forward(child.stderr.take(), io.stderr);
    let output = async {
        tokio::join!(stdout, stderr);
    };
    // stdin may stay open after the process is gone: do not wait for it.
    tokio::pin!(stdin, output);
    tokio::select! {
        () = &mut output => {}
        () = &mut stdin => output.await,
    }
    let status = child.wait().await.map_err(io_error("waiting"))?;
    Ok(status.code().unwrap_or(128))
}

/// A backend's port-forward: a connection to `port` on loopback.
pub async fn connect_local(port: u16) -> Result<TcpStream, BackendError> {
    TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(io_error("connecting"))
}
