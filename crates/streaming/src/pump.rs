//! Bridges between a [`Backend`](crate::Backend)'s blocking ends (pipes, a pty master, a unix
//! socket) and the session's async streams.
//!
//! A blocking end is read or written on a thread of its own and handed over through a channel,
//! so no tokio worker ever waits on it. These live here, beside [`StreamIo`](crate::StreamIo),
//! rather than in a backend: any backend serving a process's stdio needs the same copies.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{BoxReader, BoxWriter, TerminalSize};

/// How much one read takes at the most.
const CHUNK: usize = 32 * 1024;

/// The terminal size of an exec whose client sent none.
pub const DEFAULT_SIZE: TerminalSize = TerminalSize {
    width: 80,
    height: 24,
};

/// How long an exec with a terminal waits for the client's first size before starting the
/// command. Clients (kubectl, crictl, corralctl) send it right after opening their streams,
/// so this is about one round trip; a client that sends none starts this much later.
const FIRST_SIZE_WAIT: Duration = Duration::from_millis(200);

/// The size to start an exec's terminal with: the client's latest, so that the command does
/// not see the default first (`stty size`, a full-screen program's first frame).
pub async fn initial_size(sizes: &mut mpsc::Receiver<TerminalSize>) -> TerminalSize {
    let mut size = match tokio::time::timeout(FIRST_SIZE_WAIT, sizes.recv()).await {
        Ok(Some(size)) => size,
        Ok(None) | Err(_) => return DEFAULT_SIZE,
    };
    while let Ok(newer) = sizes.try_recv() {
        size = newer;
    }
    size
}

/// Copies a blocking reader (pipe, pty master, socket) into an async writer until EOF, then
/// shuts the writer down. The task ends when the copy does.
pub fn pump_out(mut from: impl Read + Send + 'static, mut to: BoxWriter) -> JoinHandle<()> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.read(&mut buf) {
                // EIO is how a pty master says the terminal's other side closed.
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if to.write_all(&chunk).await.is_err() {
                break;
            }
            let _ = to.flush().await;
        }
        let _ = to.shutdown().await;
    })
}

/// Copies an async reader into a blocking writer `to` (which says whether it took the bytes);
/// calls `at_eof` once the reader ended and everything was written.
pub fn pump_in(
    mut from: BoxReader,
    mut to: impl FnMut(&[u8]) -> bool + Send + 'static,
    at_eof: impl FnOnce() + Send + 'static,
) {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for chunk in rx {
            if !to(&chunk) {
                return;
            }
        }
        at_eof();
    });
}

/// The blocking ends of a process's stdio: a terminal's master, or pipes.
#[derive(Debug, Default)]
pub struct ProcessStdio {
    /// The terminal's master: read the output, write the input. When set, the pipes are unused.
    pub terminal: Option<File>,
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
}

/// A session's streams, for [`pump_process_io`].
pub struct SessionStreams {
    pub stdin: Option<BoxReader>,
    pub stdout: Option<BoxWriter>,
    pub stderr: Option<BoxWriter>,
}

/// Connects a process's terminal or pipes to the session's streams; returns the output pumps,
/// to be drained once the process has exited. The process's stdin is closed at the client's
/// EOF (a terminal stays open: its master is also its output).
pub fn pump_process_io(
    process: ProcessStdio,
    session: SessionStreams,
) -> io::Result<Vec<JoinHandle<()>>> {
    let mut outputs = Vec::new();
    if let Some(master) = process.terminal {
        let mut input = master.try_clone()?;
        if let Some(out) = session.stdout {
            outputs.push(pump_out(master, out));
        }
        if let Some(stdin) = session.stdin {
            pump_in(stdin, move |b| input.write_all(b).is_ok(), || {});
        }
        return Ok(outputs);
    }
    if let (Some(file), Some(out)) = (process.stdout, session.stdout) {
        outputs.push(pump_out(file, out));
    }
    if let (Some(file), Some(err)) = (process.stderr, session.stderr) {
        outputs.push(pump_out(file, err));
    }
    if let (Some(file), Some(stdin)) = (process.stdin, session.stdin) {
        let file = Arc::new(Mutex::new(Some(file)));
        let closer = file.clone();
        pump_in(
            stdin,
            move |b| {
                let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                f.as_mut().is_some_and(|f| f.write_all(b).is_ok())
            },
            move || {
                closer.lock().unwrap_or_else(|p| p.into_inner()).take();
            },
        );
    }
    Ok(outputs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    /// A stand-in for a pipe, as two files: (read end, write end). A socket pair: closing one
    /// end is end-of-file at the other, as with a pipe.
    fn pipe() -> (File, File) {
        let (read, write) = UnixStream::pair().unwrap();
        (
            File::from(OwnedFd::from(read)),
            File::from(OwnedFd::from(write)),
        )
    }

    async fn read_all(mut from: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
        let mut all = Vec::new();
        from.read_to_end(&mut all).await.unwrap();
        all
    }

    #[tokio::test]
    async fn pump_out_copies_until_eof_and_shuts_the_writer_down() {
        let (read, mut write) = pipe();
        let (to, from) = tokio::io::duplex(1024);
        let pump = pump_out(read, Box::new(to));
        write.write_all(b"hello ").unwrap();
        write.write_all(b"world").unwrap();
        drop(write);
        // The reader ends only because the pump shut its writer down.
        assert_eq!(read_all(from).await, b"hello world");
        pump.await.unwrap();
    }

    #[tokio::test]
    async fn pump_in_writes_everything_then_calls_at_eof() {
        let (mut client, reader) = tokio::io::duplex(1024);
        let written = Arc::new(Mutex::new(Vec::new()));
        let (eof_tx, eof_rx) = tokio::sync::oneshot::channel();
        let sink = written.clone();
        pump_in(
            Box::new(reader),
            move |b| {
                sink.lock().unwrap().extend_from_slice(b);
                true
            },
            move || {
                let _ = eof_tx.send(());
            },
        );
        client.write_all(b"typed").await.unwrap();
        drop(client);
        eof_rx.await.unwrap();
        assert_eq!(*written.lock().unwrap(), b"typed");
    }

    #[tokio::test]
    async fn pump_in_stops_without_eof_when_the_writer_refuses() {
        let (mut client, reader) = tokio::io::duplex(1024);
        let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
        pump_in(
            Box::new(reader),
            |_| false,
            move || {
                let _ = eof_tx.send(());
            },
        );
        client.write_all(b"lost").await.unwrap();
        drop(client);
        // at_eof was dropped unrun: its sender is gone without sending.
        assert!(eof_rx.await.is_err());
    }

    #[tokio::test]
    async fn pipes_are_pumped_each_way_and_stdin_closed_at_eof() {
        let (stdin_read, stdin_write) = pipe();
        let (stdout_read, mut stdout_write) = pipe();
        let (stderr_read, mut stderr_write) = pipe();
        let (mut client_in, session_in) = tokio::io::duplex(1024);
        let (session_out, client_out) = tokio::io::duplex(1024);
        let (session_err, client_err) = tokio::io::duplex(1024);
        let outputs = pump_process_io(
            ProcessStdio {
                terminal: None,
                stdin: Some(stdin_write),
                stdout: Some(stdout_read),
                stderr: Some(stderr_read),
            },
            SessionStreams {
                stdin: Some(Box::new(session_in)),
                stdout: Some(Box::new(session_out)),
                stderr: Some(Box::new(session_err)),
            },
        )
        .unwrap();
        assert_eq!(outputs.len(), 2);

        client_in.write_all(b"input").await.unwrap();
        drop(client_in);
        // The process's stdin reaches EOF only because the pump closed it.
        let stdin = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            let mut stdin_read = stdin_read;
            stdin_read.read_to_end(&mut all).unwrap();
            all
        });
        assert_eq!(stdin.await.unwrap(), b"input");

        stdout_write.write_all(b"out").unwrap();
        stderr_write.write_all(b"err").unwrap();
        drop((stdout_write, stderr_write));
        assert_eq!(read_all(client_out).await, b"out");
        assert_eq!(read_all(client_err).await, b"err");
        for output in outputs {
            output.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_terminal_carries_input_and_output_on_one_fd() {
        // A socket pair stands in for the pty: the master's side and the process's side.
        let (master, process) = UnixStream::pair().unwrap();
        let (mut client_in, session_in) = tokio::io::duplex(1024);
        let (session_out, client_out) = tokio::io::duplex(1024);
        let outputs = pump_process_io(
            ProcessStdio {
                terminal: Some(File::from(OwnedFd::from(master))),
                ..ProcessStdio::default()
            },
            SessionStreams {
                stdin: Some(Box::new(session_in)),
                stdout: Some(Box::new(session_out)),
                stderr: None,
            },
        )
        .unwrap();
        assert_eq!(outputs.len(), 1);

        client_in.write_all(b"ls\n").await.unwrap();
        let mut process_side = process.try_clone().unwrap();
        let typed = tokio::task::spawn_blocking(move || {
            let mut line = [0u8; 3];
            process_side.read_exact(&mut line).unwrap();
            line
        });
        assert_eq!(&typed.await.unwrap(), b"ls\n");

        let mut process = process;
        process.write_all(b"file\n").unwrap();
        process.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_all(client_out).await, b"file\n");
    }

    #[tokio::test]
    async fn the_latest_queued_size_starts_the_terminal() {
        let (tx, mut rx) = mpsc::channel(4);
        for width in [100, 120, 132] {
            tx.send(TerminalSize { width, height: 40 }).await.unwrap();
        }
        let size = initial_size(&mut rx).await;
        assert_eq!((size.width, size.height), (132, 40));
    }

    #[tokio::test]
    async fn no_size_from_the_client_means_the_default() {
        let (tx, mut rx) = mpsc::channel::<TerminalSize>(1);
        drop(tx);
        let size = initial_size(&mut rx).await;
        assert_eq!(
            (size.width, size.height),
            (DEFAULT_SIZE.width, DEFAULT_SIZE.height)
        );
    }
}
