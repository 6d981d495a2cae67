//! State shared by a connection's handle, its streams and its reader and writer tasks, and the
//! handling of every received frame. All of it sits behind one mutex that is never held
//! across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use bytes::Bytes;
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::AbortHandle;
use tracing::{debug, trace};

use crate::connection::{Config, Role};
use crate::error::{CloseReason, SpdyError};
use crate::frame::{
    Frame, GoAwayStatus, RstStatus, Setting, StreamId, MAX_STREAM_ID, MAX_WINDOW_DELTA,
};
use crate::headers::Headers;

mod receive;

/// Window every stream and the session start with until SETTINGS / WINDOW_UPDATE say otherwise.
pub(crate) const DEFAULT_WINDOW: i64 = 64 * 1024;
/// Largest DATA payload this side sends in one frame.
pub(crate) const MAX_DATA_FRAME_LEN: usize = 16 * 1024;
/// DATA bytes that may wait in the outbound queue before writers are held back.
pub(crate) const MAX_QUEUED_DATA: usize = 256 * 1024;

/// The state behind a [`Connection`](crate::Connection) and its [`Stream`](crate::Stream)s.
pub(crate) struct Shared {
    pub(crate) role: Role,
    pub(crate) config: Config,
    state: Mutex<ConnState>,
    /// Wakes the writer task: frames were queued or the phase changed.
    pub(crate) writer_wake: Notify,
    /// Wakes the reader task while it waits for a stream buffer to drain.
    pub(crate) reader_space: Notify,
    /// Tells the writer task that closing began, so a blocked write gets a deadline.
    pub(crate) close_started: Notify,
    /// Number of reader/writer tasks still running.
    pub(crate) tasks: watch::Sender<usize>,
    task_handles: Mutex<TaskHandles>,
}

/// Abort handles of the connection's tasks, so that closing can stop them.
#[derive(Default)]
pub(crate) struct TaskHandles {
    pub(crate) reader: Option<AbortHandle>,
    pub(crate) writer: Option<AbortHandle>,
}

/// What the writer task does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriterPhase {
    /// Write frames as they are queued.
    Run,
    /// Write what is queued, shut the transport down, stop.
    Flush,
    /// Stop without writing more.
    Stop,
}

pub(crate) struct ConnState {
    pub(crate) streams: HashMap<StreamId, StreamState>,
    pub(crate) outbound: OutboundQueue,
    next_stream_id: StreamId,
    last_peer_stream_id: StreamId,
    next_ping_id: u32,
    pings: HashMap<u32, oneshot::Sender<()>>,
    /// Session-level send window (SPDY/3.1).
    pub(crate) send_window: i64,
    /// Session-level bytes received since the last session WINDOW_UPDATE.
    recv_unacked: u32,
    peer_initial_window: i64,
    /// Whether writers wait for the peer's windows.
    pub(crate) enforce_send_windows: bool,
    /// The peer sent SETTINGS with an initial window, or a WINDOW_UPDATE.
    peer_windows_confirmed: bool,
    /// PING sent to find out whether a silent peer does flow control at all.
    window_probe: Option<u32>,
    pending_accept: VecDeque<StreamId>,
    accept_wakers: WakerList,
    goaway_sent: bool,
    peer_goaway: Option<(StreamId, GoAwayStatus)>,
    /// Set once the connection no longer carries new frames; streams report it.
    pub(crate) closed: Option<CloseReason>,
    pub(crate) writer_phase: WriterPhase,
    /// Stream the reader task waits on (its buffer is over `max_stream_buffer`).
    reader_blocked_on: Option<StreamId>,
}

/// Whether a SYN_REPLY has been exchanged for a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplyState {
    /// Opened here; the peer's SYN_REPLY has not arrived.
    Awaiting,
    /// Opened here; the peer replied with these headers.
    Received(Headers),
    /// Opened by the peer; no SYN_REPLY sent yet.
    NotSent,
    /// Opened by the peer; SYN_REPLY sent (or not needed: unidirectional).
    Sent,
}

/// A RST_STREAM seen on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResetInfo {
    pub(crate) status: RstStatus,
    pub(crate) by_peer: bool,
}

pub(crate) struct StreamState {
    /// Headers of the SYN_STREAM, until [`Connection::accept`](crate::Connection::accept)
    /// hands the stream out.
    syn_headers: Option<Headers>,
    pub(crate) recv_buf: VecDeque<Bytes>,
    pub(crate) recv_buffered: usize,
    /// Credit the peer has left on this stream, as this side counts it.
    recv_window: i64,
    /// Bytes the application consumed that are not yet returned by WINDOW_UPDATE.
    pub(crate) recv_unacked: u32,
    /// The peer half-closed (FIN received).
    pub(crate) recv_closed: bool,
    pub(crate) read_waker: Option<Waker>,
    pub(crate) send_window: i64,
    /// This side half-closed (FIN queued), or may not send at all.
    pub(crate) send_closed: bool,
    /// Frames of this stream queued but not yet written to the transport.
    pub(crate) unwritten: usize,
    pub(crate) write_waker: Option<Waker>,
    pub(crate) reply: ReplyState,
    pub(crate) reply_wakers: WakerList,
    pub(crate) extra_headers: Headers,
    pub(crate) reset: Option<ResetInfo>,
}

impl StreamState {
    fn new(locally_opened: bool, send_window: i64, recv_window: i64) -> Self {
        StreamState {
            syn_headers: None,
            recv_buf: VecDeque::new(),
            recv_buffered: 0,
            recv_window,
            recv_unacked: 0,
            recv_closed: false,
            read_waker: None,
            send_window,
            send_closed: false,
            unwritten: 0,
            write_waker: None,
            reply: if locally_opened {
                ReplyState::Awaiting
            } else {
                ReplyState::NotSent
            },
            reply_wakers: WakerList::default(),
            extra_headers: Headers::new(),
            reset: None,
        }
    }

    pub(crate) fn wake_all(&mut self) {
        if let Some(waker) = self.read_waker.take() {
            waker.wake();
        }
        self.wake_writer();
        self.reply_wakers.wake_all();
    }

    pub(crate) fn wake_writer(&mut self) {
        if let Some(waker) = self.write_waker.take() {
            waker.wake();
        }
    }

    fn fully_closed(&self) -> bool {
        self.send_closed && self.recv_closed
    }
}

/// Wakers of tasks waiting on the same event.
#[derive(Default)]
pub(crate) struct WakerList(Vec<Waker>);

impl WakerList {
    pub(crate) fn register(&mut self, waker: &Waker) {
        if !self.0.iter().any(|known| known.will_wake(waker)) {
            self.0.push(waker.clone());
        }
    }

    pub(crate) fn wake_all(&mut self) {
        for waker in self.0.drain(..) {
            waker.wake();
        }
    }
}

/// A frame waiting for the writer task.
pub(crate) struct QueuedFrame {
    pub(crate) frame: Frame,
    /// Stream whose `unwritten` count includes this frame.
    pub(crate) counted_for: Option<StreamId>,
}

/// Frames waiting for the writer task, in write order.
#[derive(Default)]
pub(crate) struct OutboundQueue {
    frames: VecDeque<QueuedFrame>,
    /// DATA payload bytes in `frames`.
    pub(crate) data_bytes: usize,
}

impl OutboundQueue {
    /// Queues a frame behind everything already queued.
    pub(crate) fn push(&mut self, frame: Frame) {
        self.push_counted(frame, None);
    }

    /// Queues a frame of `stream` and counts it as unwritten for that stream.
    pub(crate) fn push_for(&mut self, frame: Frame, stream_id: StreamId, stream: &mut StreamState) {
        stream.unwritten += 1;
        self.push_counted(frame, Some(stream_id));
    }

    fn push_counted(&mut self, frame: Frame, counted_for: Option<StreamId>) {
        if let Frame::Data { data, .. } = &frame {
            self.data_bytes += data.len();
        }
        self.frames.push_back(QueuedFrame { frame, counted_for });
    }

    /// Queues a frame ahead of everything (PING replies, WINDOW_UPDATE).
    fn push_urgent(&mut self, frame: Frame) {
        self.frames.push_front(QueuedFrame {
            frame,
            counted_for: None,
        });
    }

    pub(crate) fn take_all(&mut self) -> Vec<QueuedFrame> {
        self.data_bytes = 0;
        self.frames.drain(..).collect()
    }
}

/// What the reader task does after handing a frame to [`Shared::on_frame`].
pub(crate) enum FrameOutcome {
    Continue,
    /// The stream's receive buffer is over the limit: wait until the application drains it.
    WaitForSpace(StreamId),
    /// A session error: send GOAWAY(PROTOCOL_ERROR) and end the connection.
    Fatal(String),
}

impl Shared {
    pub(crate) fn new(role: Role, config: Config) -> Arc<Self> {
        let (first_stream_id, first_ping_id) = match role {
            Role::Client => (1, 1),
            Role::Server => (2, 2),
        };
        let mut outbound = OutboundQueue::default();
        outbound.push(Frame::Settings {
            clear_persisted: false,
            entries: vec![Setting {
                flags: 0,
                id: Setting::INITIAL_WINDOW_SIZE,
                value: config.initial_window_size,
            }],
        });
        let extra_session_window = i64::from(config.connection_window_size) - DEFAULT_WINDOW;
        if let Ok(delta @ 1..) = u32::try_from(extra_session_window) {
            outbound.push(Frame::WindowUpdate {
                stream_id: 0,
                delta,
            });
        }
        let state = ConnState {
            streams: HashMap::new(),
            outbound,
            next_stream_id: first_stream_id,
            last_peer_stream_id: 0,
            next_ping_id: first_ping_id,
            pings: HashMap::new(),
            send_window: DEFAULT_WINDOW,
            recv_unacked: 0,
            peer_initial_window: DEFAULT_WINDOW,
            enforce_send_windows: true,
            peer_windows_confirmed: false,
            window_probe: None,
            pending_accept: VecDeque::new(),
            accept_wakers: WakerList::default(),
            goaway_sent: false,
            peer_goaway: None,
            closed: None,
            writer_phase: WriterPhase::Run,
            reader_blocked_on: None,
        };
        Arc::new(Shared {
            role,
            config,
            state: Mutex::new(state),
            writer_wake: Notify::new(),
            reader_space: Notify::new(),
            close_started: Notify::new(),
            tasks: watch::Sender::new(0),
            task_handles: Mutex::new(TaskHandles::default()),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the reader and writer tasks so that closing can stop them.
    pub(crate) fn set_task_handles(&self, handles: TaskHandles) {
        *self
            .task_handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = handles;
    }

    fn abort_tasks(&self, include_writer: bool) {
        let handles = self
            .task_handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(reader) = &handles.reader {
            reader.abort();
        }
        if include_writer {
            if let Some(writer) = &handles.writer {
                writer.abort();
            }
        }
    }

    /// Takes every queued frame for the writer task, and says what to do after writing them.
    pub(crate) fn take_outbound(&self) -> (Vec<QueuedFrame>, WriterPhase) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let had_data = st.outbound.data_bytes > 0;
        let frames = st.outbound.take_all();
        if had_data {
            // Writers held back by the queue limit may continue.
            for stream in st.streams.values_mut() {
                stream.wake_writer();
            }
        }
        (frames, st.writer_phase)
    }

    /// Marks frames as written to the transport, for `poll_flush`.
    pub(crate) fn frames_written(&self, counted_for: impl Iterator<Item = StreamId>) {
        let mut st = self.lock();
        for stream_id in counted_for {
            if let Some(stream) = st.streams.get_mut(&stream_id) {
                stream.unwritten = stream.unwritten.saturating_sub(1);
                if stream.unwritten == 0 {
                    stream.wake_writer();
                }
            }
        }
    }

    fn is_peer_stream_id(&self, stream_id: StreamId) -> bool {
        match self.role {
            Role::Client => stream_id & 1 == 0,
            Role::Server => stream_id & 1 == 1,
        }
    }

    fn is_own_ping_id(&self, id: u32) -> bool {
        match self.role {
            Role::Client => id & 1 == 1,
            Role::Server => id & 1 == 0,
        }
    }

    /// Whether `stream_id` was opened on this connection at some point.
    fn was_opened(&self, st: &ConnState, stream_id: StreamId) -> bool {
        if self.is_peer_stream_id(stream_id) {
            stream_id <= st.last_peer_stream_id
        } else {
            stream_id < st.next_stream_id
        }
    }

    /// Allocates the next stream id of this side and sends SYN_STREAM.
    pub(crate) fn open_stream(&self, headers: &Headers, fin: bool) -> Result<StreamId, SpdyError> {
        headers.validate()?;
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(reason) = &st.closed {
            return Err(SpdyError::ConnectionClosed(reason.clone()));
        }
        if st.goaway_sent || st.peer_goaway.is_some() {
            return Err(SpdyError::GoingAway);
        }
        let stream_id = st.next_stream_id;
        if stream_id > MAX_STREAM_ID {
            return Err(SpdyError::StreamIdsExhausted);
        }
        st.next_stream_id += 2;
        let mut stream = StreamState::new(
            true,
            st.peer_initial_window,
            i64::from(self.config.initial_window_size),
        );
        stream.send_closed = fin;
        st.outbound.push_for(
            Frame::SynStream {
                stream_id,
                associated_stream_id: 0,
                priority: 0,
                slot: 0,
                fin,
                unidirectional: false,
                headers: headers.clone(),
            },
            stream_id,
            &mut stream,
        );
        st.streams.insert(stream_id, stream);
        drop(guard);
        self.writer_wake.notify_one();
        debug!(stream_id, fin, "opened stream");
        Ok(stream_id)
    }

    /// Hands out the next stream the peer opened: `Ready(None)` once no more can come.
    pub(crate) fn poll_accept(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<(StreamId, Headers)>> {
        let mut guard = self.lock();
        let st = &mut *guard;
        while let Some(stream_id) = st.pending_accept.pop_front() {
            if let Some(stream) = st.streams.get_mut(&stream_id) {
                let headers = stream.syn_headers.take().unwrap_or_default();
                return std::task::Poll::Ready(Some((stream_id, headers)));
            }
        }
        if st.closed.is_some() || st.peer_goaway.is_some() {
            return std::task::Poll::Ready(None);
        }
        st.accept_wakers.register(cx.waker());
        std::task::Poll::Pending
    }

    /// Sends a PING and returns the receiver completed by its echo.
    pub(crate) fn send_ping(&self) -> Result<oneshot::Receiver<()>, SpdyError> {
        let (sender, receiver) = oneshot::channel();
        let mut st = self.lock();
        if let Some(reason) = &st.closed {
            return Err(SpdyError::ConnectionClosed(reason.clone()));
        }
        let id = st.next_ping_id;
        // Adding 2 keeps the parity, also across the u32 wrap.
        st.next_ping_id = id.wrapping_add(2);
        st.pings.insert(id, sender);
        st.outbound.push_urgent(Frame::Ping { id });
        drop(st);
        self.writer_wake.notify_one();
        Ok(receiver)
    }

    /// Forgets a stream whose handle was dropped; resets it if it is still open.
    pub(crate) fn release_stream(&self, stream_id: StreamId) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(stream) = st.streams.remove(&stream_id) else {
            return;
        };
        let mut notify_writer = false;
        if st.closed.is_none() && stream.reset.is_none() && !stream.fully_closed() {
            debug!(stream_id, "stream dropped while open: RST_STREAM(CANCEL)");
            st.outbound.push(Frame::RstStream {
                stream_id,
                status: RstStatus::Cancel,
            });
            notify_writer = true;
        }
        let unblock_reader = st.reader_blocked_on == Some(stream_id);
        drop(guard);
        if notify_writer {
            self.writer_wake.notify_one();
        }
        if unblock_reader {
            self.reader_space.notify_one();
        }
    }

    /// Records that the application read `len` bytes of `stream_id`, and queues a
    /// WINDOW_UPDATE once half the stream window is free again. Called with the lock held.
    pub(crate) fn consumed(&self, st: &mut ConnState, stream_id: StreamId, len: usize) {
        let threshold = (self.config.initial_window_size / 2).max(1);
        let cap = self.config.max_stream_buffer;
        let open = st.closed.is_none();
        let Some(stream) = st.streams.get_mut(&stream_id) else {
            return;
        };
        let before = stream.recv_buffered;
        stream.recv_buffered -= len.min(stream.recv_buffered);
        if before > cap && stream.recv_buffered <= cap && st.reader_blocked_on == Some(stream_id) {
            self.reader_space.notify_one();
        }
        if !open || stream.recv_closed || stream.reset.is_some() {
            return;
        }
        stream.recv_unacked = stream
            .recv_unacked
            .saturating_add(u32::try_from(len).unwrap_or(u32::MAX));
        if stream.recv_unacked >= threshold {
            let delta = stream.recv_unacked.min(MAX_WINDOW_DELTA);
            stream.recv_unacked -= delta;
            stream.recv_window += i64::from(delta);
            trace!(stream_id, delta, "returning stream window");
            st.outbound
                .push_urgent(Frame::WindowUpdate { stream_id, delta });
            self.writer_wake.notify_one();
        }
    }

    /// Waits until the reader may queue more data on `stream_id`.
    pub(crate) async fn wait_for_space(&self, stream_id: StreamId) {
        loop {
            let notified = self.reader_space.notified();
            {
                let mut st = self.lock();
                let drained = match st.streams.get(&stream_id) {
                    None => true,
                    Some(stream) => {
                        stream.recv_buffered <= self.config.max_stream_buffer
                            || stream.reset.is_some()
                    }
                };
                if drained || st.closed.is_some() {
                    st.reader_blocked_on = None;
                    return;
                }
                st.reader_blocked_on = Some(stream_id);
            }
            trace!(stream_id, "receive buffer full; pausing the reader");
            notified.await;
        }
    }

    /// Ends the session from this side: resets open streams, sends GOAWAY, lets the writer
    /// flush and shut the transport down, and stops the reader.
    pub(crate) fn begin_close(&self, status: GoAwayStatus, reason: CloseReason) {
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.closed.is_some() {
            return;
        }
        debug!(%reason, "closing SPDY connection");
        st.closed = Some(reason);
        let mut ids: Vec<StreamId> = st.streams.keys().copied().collect();
        ids.sort_unstable();
        for stream_id in ids {
            if let Some(stream) = st.streams.get_mut(&stream_id) {
                if stream.reset.is_none() && !stream.fully_closed() {
                    stream.reset = Some(ResetInfo {
                        status: RstStatus::Cancel,
                        by_peer: false,
                    });
                    st.outbound.push(Frame::RstStream {
                        stream_id,
                        status: RstStatus::Cancel,
                    });
                }
                stream.wake_all();
            }
        }
        if !st.goaway_sent {
            st.goaway_sent = true;
            st.outbound.push(Frame::GoAway {
                last_good_stream_id: st.last_peer_stream_id,
                status,
            });
        }
        st.writer_phase = WriterPhase::Flush;
        for stream_id in st.pending_accept.drain(..) {
            // Never handed out: nothing will read or drop them.
            st.streams.remove(&stream_id);
        }
        st.accept_wakers.wake_all();
        st.pings.clear();
        drop(guard);
        self.abort_tasks(false);
        self.writer_wake.notify_one();
        self.close_started.notify_one();
        self.reader_space.notify_one();
    }

    /// Ends the session at once: the transport failed or the peer went away.
    pub(crate) fn terminate(&self, reason: CloseReason) {
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.closed.is_none() {
            debug!(%reason, "SPDY connection ended");
            st.closed = Some(reason);
        }
        st.writer_phase = WriterPhase::Stop;
        for stream in st.streams.values_mut() {
            stream.wake_all();
        }
        for stream_id in st.pending_accept.drain(..) {
            // Never handed out: nothing will read or drop them.
            st.streams.remove(&stream_id);
        }
        st.accept_wakers.wake_all();
        st.pings.clear();
        drop(guard);
        self.abort_tasks(true);
        self.writer_wake.notify_one();
        self.reader_space.notify_one();
    }

    /// The reason to report when the reader reached end-of-file.
    pub(crate) fn eof_reason(&self) -> CloseReason {
        match self.lock().peer_goaway {
            Some((last_good_stream_id, status)) => CloseReason::PeerGoAway {
                last_good_stream_id,
                status,
            },
            None => CloseReason::PeerEof,
        }
    }
}
