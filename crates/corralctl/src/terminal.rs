//! The local end of a remote command: stdin read without holding up the exit, the terminal
//! in raw mode while a remote terminal runs, and its window size followed.

use std::io::{IsTerminal, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result};
use corral_streaming::{BoxReader, TerminalSize};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// How much of stdin one read takes.
const STDIN_CHUNK: usize = 32 * 1024;

/// The local terminal switched to raw mode (no echo, no line editing, no signals from keys:
/// every key goes to the remote terminal); its settings are restored on drop.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts the terminal on stdin into raw mode; `None` when stdin is not a terminal.
    pub fn enter() -> Result<Option<RawMode>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = tcgetattr(stdin.as_fd()).context("reading the terminal's settings")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .context("switching the terminal to raw mode")?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing better to do if it fails: the terminal is gone or not ours any more.
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

nix::ioctl_read_bad!(read_window_size, nix::libc::TIOCGWINSZ, nix::libc::winsize);

/// The size of the local terminal (on stdout, else stdin), if there is one.
pub fn window_size() -> Option<TerminalSize> {
    let stdout = std::io::stdout();
    let stdin = std::io::stdin();
    let fd = if stdout.is_terminal() {
        stdout.as_fd().as_raw_fd()
    } else if stdin.is_terminal() {
        stdin.as_fd().as_raw_fd()
    } else {
        return None;
    };
    let mut size = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points to a live
    // local of that type; `fd` is open for the duration of the call (stdin/stdout are held).
    unsafe { read_window_size(fd, &mut size) }.ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then_some(TerminalSize {
        width: size.ws_col,
        height: size.ws_row,
    })
}

/// The local terminal's size now and after every change (SIGWINCH), for a remote terminal.
pub fn follow_window_size() -> Result<mpsc::Receiver<TerminalSize>> {
    let mut changes =
        signal(SignalKind::window_change()).context("listening for terminal size changes")?;
    let (sizes, receiver) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            if let Some(size) = window_size() {
                if sizes.send(size).await.is_err() {
                    return;
                }
            }
            if changes.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(receiver)
}

/// Local stdin as an async reader. A thread does the blocking reads: they cannot be
/// cancelled, and one waiting for a key must not keep the program from exiting when the
/// remote command has ended.
pub fn stdin_reader() -> BoxReader {
    let (chunks, receiver) = mpsc::channel(4);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || copy_to_channel(std::io::stdin().lock(), &chunks));
    if let Err(err) = spawned {
        // The remote command then sees its stdin end at once.
        eprintln!("warning: cannot read stdin: {err}");
    }
    Box::new(ChannelReader::new(receiver))
}

/// Sends what `source` yields, in chunks, until its end or an error, or until nobody listens.
fn copy_to_channel(mut source: impl Read, chunks: &mpsc::Sender<Vec<u8>>) {
    let mut buffer = vec![0u8; STDIN_CHUNK];
    loop {
        match source.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => {
                if chunks.blocking_send(buffer[..n].to_vec()).is_err() {
                    return;
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => {
                eprintln!("warning: reading stdin: {err}");
                return;
            }
        }
    }
}

/// Reads the chunks of a channel as one byte stream; end-of-file when the sender is gone.
struct ChannelReader {
    chunks: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    offset: usize,
}

impl ChannelReader {
    fn new(chunks: mpsc::Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            chunks,
            current: Vec::new(),
            offset: 0,
        }
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        while this.offset == this.current.len() {
            match this.chunks.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => {
                    this.current = chunk;
                    this.offset = 0;
                }
                // End of file: nothing put into `buf`.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let available = &this.current[this.offset..];
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        this.offset += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn channel_chunks_read_as_one_stream() {
        let (chunks, receiver) = mpsc::channel(4);
        let mut reader = ChannelReader::new(receiver);
        let writer = tokio::task::spawn_blocking(move || {
            copy_to_channel(&b"hello, "[..], &chunks);
            copy_to_channel(&b""[..], &chunks);
            copy_to_channel(std::io::Cursor::new(vec![b'x'; 100_000]), &chunks);
        });
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.expect("reads");
        writer.await.expect("writer ran");
        assert_eq!(&all[..7], b"hello, ");
        assert_eq!(all.len(), 7 + 100_000);
        assert!(all[7..].iter().all(|b| *b == b'x'));
    }

    #[tokio::test]
    async fn small_buffers_get_the_rest_later() {
        let (chunks, receiver) = mpsc::channel(4);
        chunks.send(b"abcdef".to_vec()).await.expect("open");
        drop(chunks);
        let mut reader = ChannelReader::new(receiver);
        let mut two = [0u8; 2];
        reader.read_exact(&mut two).await.expect("reads");
        assert_eq!(&two, b"ab");
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.expect("reads");
        assert_eq!(rest, b"cdef");
    }

    #[test]
    fn raw_mode_only_on_a_terminal_and_undone_on_drop() {
        use nix::sys::termios::LocalFlags;
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            assert!(RawMode::enter().expect("no error").is_none());
            return;
        }
        let echo = |stdin: &std::io::Stdin| {
            tcgetattr(stdin.as_fd())
                .expect("terminal settings")
                .local_flags
                .contains(LocalFlags::ECHO)
        };
        let before = echo(&stdin);
        let raw = RawMode::enter().expect("no error").expect("a terminal");
        assert!(!echo(&stdin));
        drop(raw);
        assert_eq!(echo(&stdin), before);
    }
}
