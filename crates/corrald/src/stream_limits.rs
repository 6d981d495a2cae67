//! Limits on exec and attach sessions: at most `max_streams_per_container` at once per
//! container, and a session with no input or output for `stream_idle_timeout` is closed (its
//! exec'd process killed), so that forgotten or malicious clients cannot pile up processes,
//! threads and descriptors in corrald.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use corral_streaming::{BackendError, BoxReader, BoxWriter, StreamIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::ids::lock;

/// The session limits and the count of open sessions per container.
pub struct StreamLimits {
    max_sessions: usize,
    idle_timeout: Duration,
    open: Mutex<HashMap<String, usize>>,
}

impl StreamLimits {
    /// Limits of `max_sessions` per container (0: none) and `idle_timeout` (zero: none).
    pub fn new(max_sessions: usize, idle_timeout: Duration) -> Arc<StreamLimits> {
        Arc::new(StreamLimits {
            max_sessions,
            idle_timeout,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Admits a session of container `id`, or refuses it when the container has the most
    /// sessions allowed; the session's streams are watched for activity.
    pub fn admit(self: &Arc<Self>, id: &str, io: StreamIo) -> Result<Session, BackendError> {
        {
            let mut open = lock(&self.open);
            let count = open.entry(id.to_string()).or_default();
            if self.max_sessions > 0 && *count >= self.max_sessions {
                return Err(BackendError::Other(format!(
                    "container {id} has {count} exec/attach sessions open, the most allowed \
                     (max_streams_per_container); close one first"
                )));
            }
            *count += 1;
        }
        let activity = Activity(Arc::new(Mutex::new(Instant::now())));
        let io = StreamIo {
            stdin: io
                .stdin
                .map(|r| Box::new(Touching::new(r, &activity)) as BoxReader),
            stdout: io
                .stdout
                .map(|w| Box::new(Touching::new(w, &activity)) as BoxWriter),
            stderr: io
                .stderr
                .map(|w| Box::new(Touching::new(w, &activity)) as BoxWriter),
            resize: io.resize,
        };
        Ok(Session {
            limits: self.clone(),
            id: id.to_string(),
            activity,
            io: Some(io),
        })
    }

    /// Open sessions of a container.
    #[cfg(test)]
    fn open(&self, id: &str) -> usize {
        lock(&self.open).get(id).copied().unwrap_or(0)
    }
}

/// An admitted session: counted until dropped.
pub struct Session {
    limits: Arc<StreamLimits>,
    id: String,
    activity: Activity,
    io: Option<StreamIo>,
}

impl Session {
    /// The session's streams, watched for activity (once).
    pub fn io(&mut self) -> StreamIo {
        self.io.take().unwrap_or_default()
    }

    /// Runs the session to its end, or ends it with an error once its streams were idle for
    /// the idle timeout (dropping `session` kills what it runs).
    pub async fn run<T>(
        self,
        session: impl std::future::Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let timeout = self.limits.idle_timeout;
        if timeout.is_zero() {
            return session.await;
        }
        tokio::select! {
            result = session => result,
            () = self.activity.idle_for(timeout) => Err(BackendError::Other(format!(
                "no input or output for {}s (stream_idle_timeout); session closed",
                timeout.as_secs()
            ))),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut open = lock(&self.limits.open);
        if let Some(count) = open.get_mut(&self.id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.id);
            }
        }
    }
}

/// When a session's streams last moved bytes.
#[derive(Clone)]
struct Activity(Arc<Mutex<Instant>>);

impl Activity {
    fn touch(&self) {
        *lock(&self.0) = Instant::now();
    }

    /// Resolves once nothing moved for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let deadline = *lock(&self.0) + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that records activity whenever bytes pass.
struct Touching<T> {
    inner: T,
    activity: Activity,
}

impl<T> Touching<T> {
    fn new(inner: T, activity: &Activity) -> Self {
        Touching {
            inner,
            activity: activity.clone(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Touching<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Touching<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn no_io() -> StreamIo {
        StreamIo {
            stdin: None,
            stdout: None,
            stderr: None,
            resize: None,
        }
    }

    #[tokio::test]
    async fn sessions_beyond_the_cap_are_refused_until_one_ends() {
        let limits = StreamLimits::new(2, Duration::ZERO);
        let first = limits.admit("c1", no_io());
        let second = limits.admit("c1", no_io());
        assert!(first.is_ok() && second.is_ok());
        let third = limits.admit("c1", no_io());
        assert!(
            matches!(third, Err(BackendError::Other(ref m)) if m.contains("max_streams_per_container"))
        );
        assert!(
            limits.admit("c2", no_io()).is_ok(),
            "the cap is per container"
        );
        drop(first);
        assert_eq!(limits.open("c1"), 1);
        assert!(limits.admit("c1", no_io()).is_ok());
        drop(second);
        assert_eq!(limits.open("c1"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_session_is_closed_and_an_active_one_is_not() {
        let limits = StreamLimits::new(0, Duration::from_secs(60));
        let session = limits.admit("c1", no_io()).unwrap();
        let got = session
            .run(std::future::pending::<Result<(), BackendError>>())
            .await;
        assert!(
            matches!(got, Err(BackendError::Other(ref m)) if m.contains("stream_idle_timeout"))
        );

        let (mut client, server) = tokio::io::duplex(64);
        let mut session = limits
            .admit(
                "c1",
                StreamIo {
                    stdin: Some(Box::new(server)),
                    ..no_io()
                },
            )
            .unwrap();
        let mut stdin = session.io().stdin.unwrap();
        let work = async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 1];
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(30)).await;
                client.write_all(b"x").await.unwrap();
                stdin.read_exact(&mut buf).await.unwrap();
            }
            Ok::<_, BackendError>(5)
        };
        assert!(
            matches!(session.run(work).await, Ok(5)),
            "typing keeps it open"
        );
    }
}
