//! Applying received frames to the session state (SPDY/3 section 2.6, SPDY/3.1 session
//! flow control).

use bytes::Bytes;
use tracing::{debug, trace, warn};

use super::{ConnState, FrameOutcome, ReplyState, ResetInfo, Shared, StreamState};
use crate::connection::PeerFlowControl;
use crate::frame::{Frame, GoAwayStatus, RstStatus, Setting, StreamId, MAX_WINDOW_DELTA};
use crate::headers::Headers;

impl Shared {
    /// Applies one received frame.
    pub(crate) fn on_frame(&self, frame: Frame) -> FrameOutcome {
        trace!(frame = frame.name(), "received frame");
        let mut guard = self.lock();
        let st = &mut *guard;
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => return self.on_data(st, stream_id, fin, data),
            Frame::SynStream {
                stream_id,
                fin,
                unidirectional,
                headers,
                ..
            } => self.on_syn_stream(st, stream_id, fin, unidirectional, headers),
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => self.on_syn_reply(st, stream_id, fin, headers),
            Frame::RstStream { stream_id, status } => self.on_rst_stream(st, stream_id, status),
            Frame::Settings { entries, .. } => self.on_settings(st, &entries),
            Frame::Ping { id } => self.on_ping(st, id),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => self.on_goaway(st, last_good_stream_id, status),
            Frame::Headers {
                stream_id,
                fin,
                headers,
            } => self.on_headers(st, stream_id, fin, &headers),
            Frame::WindowUpdate { stream_id, delta } => {
                return self.on_window_update(st, stream_id, delta)
            }
            Frame::Unknown { frame_type, .. } => {
                debug!(frame_type, "ignoring unknown control frame");
            }
        }
        FrameOutcome::Continue
    }

    fn on_rst_stream(&self, st: &mut ConnState, stream_id: StreamId, status: RstStatus) {
        let Some(stream) = st.streams.get_mut(&stream_id) else {
            return;
        };
        debug!(stream_id, %status, "peer reset stream");
        if stream.reset.is_none() {
            stream.reset = Some(ResetInfo {
                status,
                by_peer: true,
            });
        }
        stream.wake_all();
        if st.reader_blocked_on == Some(stream_id) {
            self.reader_space.notify_one();
        }
    }

    fn on_ping(&self, st: &mut ConnState, id: u32) {
        if !self.is_own_ping_id(id) {
            // Echoed in order, behind SETTINGS: see `probe_peer_flow_control`.
            st.outbound.push(Frame::Ping { id });
            self.writer_wake.notify_one();
        } else if st.window_probe == Some(id) {
            self.on_window_probe_echo(st);
        } else if let Some(sender) = st.pings.remove(&id) {
            // The pinger may have given up; nothing to do then.
            let _ = sender.send(());
        }
        // An echo of a PING this side never sent is ignored (section 2.6.5).
    }

    fn on_headers(&self, st: &mut ConnState, stream_id: StreamId, fin: bool, headers: &Headers) {
        let Some(stream) = st.streams.get_mut(&stream_id) else {
            if !self.was_opened(st, stream_id) {
                self.reset_unknown(st, stream_id);
            }
            return;
        };
        for (name, values) in headers.iter() {
            for value in values {
                stream.extra_headers.append(name, value.clone());
            }
        }
        if fin {
            stream.recv_closed = true;
        }
        stream.wake_all();
    }

    fn reset_unknown(&self, st: &mut ConnState, stream_id: StreamId) {
        if st.goaway_sent {
            return;
        }
        debug!(
            stream_id,
            "frame for a stream never opened: RST_STREAM(INVALID_STREAM)"
        );
        st.outbound.push(Frame::RstStream {
            stream_id,
            status: RstStatus::InvalidStream,
        });
        self.writer_wake.notify_one();
    }

    /// Resets a stream from this side because the peer broke a rule.
    fn reset_stream(&self, st: &mut ConnState, stream_id: StreamId, status: RstStatus) {
        if let Some(stream) = st.streams.get_mut(&stream_id) {
            warn!(stream_id, %status, "resetting stream");
            stream.reset = Some(ResetInfo {
                status,
                by_peer: false,
            });
            stream.wake_all();
        }
        st.outbound.push(Frame::RstStream { stream_id, status });
        self.writer_wake.notify_one();
    }

    fn on_data(
        &self,
        st: &mut ConnState,
        stream_id: StreamId,
        fin: bool,
        data: Bytes,
    ) -> FrameOutcome {
        let len = data.len();
        // The session window comes back as soon as data arrives: per-stream windows bound
        // what is buffered, and one slow stream then cannot stall the others.
        st.recv_unacked = st
            .recv_unacked
            .saturating_add(u32::try_from(len).unwrap_or(u32::MAX));
        if st.recv_unacked >= (self.config.connection_window_size / 2).max(1) {
            let delta = st.recv_unacked.min(MAX_WINDOW_DELTA);
            st.recv_unacked -= delta;
            st.outbound.push_urgent(Frame::WindowUpdate {
                stream_id: 0,
                delta,
            });
            self.writer_wake.notify_one();
        }
        let enforce = self.config.peer_flow_control == PeerFlowControl::Enforce;
        let Some(stream) = st.streams.get_mut(&stream_id) else {
            if self.was_opened(st, stream_id) {
                trace!(stream_id, "ignoring DATA for a closed stream");
            } else {
                self.reset_unknown(st, stream_id);
            }
            return FrameOutcome::Continue;
        };
        if stream.reset.is_some() {
            return FrameOutcome::Continue;
        }
        if stream.recv_closed {
            self.reset_stream(st, stream_id, RstStatus::StreamAlreadyClosed);
            return FrameOutcome::Continue;
        }
        stream.recv_window -= i64::try_from(len).unwrap_or(i64::MAX);
        let overrun = stream.recv_window < 0;
        if overrun && enforce {
            self.reset_stream(st, stream_id, RstStatus::FlowControlError);
            return FrameOutcome::Continue;
        }
        if overrun {
            trace!(
                stream_id,
                window = stream.recv_window,
                "peer overran the stream window"
            );
        }
        if len > 0 {
            stream.recv_buffered += len;
            stream.recv_buf.push_back(data);
        }
        if fin {
            stream.recv_closed = true;
        }
        if let Some(waker) = stream.read_waker.take() {
            waker.wake();
        }
        let over_buffer_limit = stream.recv_buffered > self.config.max_stream_buffer;
        if overrun && !st.peer_windows_confirmed && st.enforce_send_windows {
            // A peer that ignores this side's windows does no flow control at all. Stop
            // waiting for its windows now: the reader may soon pause on a full buffer, and
            // must not hold up a writer waiting for a probe echo behind it.
            self.stop_enforcing_peer_windows(st);
        }
        if over_buffer_limit {
            FrameOutcome::WaitForSpace(stream_id)
        } else {
            FrameOutcome::Continue
        }
    }

    fn stop_enforcing_peer_windows(&self, st: &mut ConnState) {
        debug!("peer does not do flow control; no longer waiting for its windows");
        st.enforce_send_windows = false;
        for stream in st.streams.values_mut() {
            stream.wake_writer();
        }
    }

    fn on_syn_stream(
        &self,
        st: &mut ConnState,
        stream_id: StreamId,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    ) {
        if !self.is_peer_stream_id(stream_id) || stream_id <= st.last_peer_stream_id {
            warn!(stream_id, "SYN_STREAM with an invalid stream id");
            st.outbound.push(Frame::RstStream {
                stream_id,
                status: RstStatus::ProtocolError,
            });
            self.writer_wake.notify_one();
            return;
        }
        st.last_peer_stream_id = stream_id;
        if st.goaway_sent || st.closed.is_some() {
            st.outbound.push(Frame::RstStream {
                stream_id,
                status: RstStatus::RefusedStream,
            });
            self.writer_wake.notify_one();
            return;
        }
        debug!(stream_id, fin, unidirectional, "peer opened stream");
        let mut stream = StreamState::new(
            false,
            st.peer_initial_window,
            i64::from(self.config.initial_window_size),
        );
        stream.syn_headers = Some(headers);
        stream.recv_closed = fin;
        if unidirectional {
            stream.send_closed = true;
            stream.reply = ReplyState::Sent;
        }
        st.streams.insert(stream_id, stream);
        st.pending_accept.push_back(stream_id);
        st.accept_wakers.wake_all();
    }

    fn on_syn_reply(&self, st: &mut ConnState, stream_id: StreamId, fin: bool, headers: Headers) {
        let Some(stream) = st.streams.get_mut(&stream_id) else {
            if !self.was_opened(st, stream_id) {
                self.reset_unknown(st, stream_id);
            }
            return;
        };
        if stream.reply != ReplyState::Awaiting {
            if stream.reset.is_none() {
                self.reset_stream(st, stream_id, RstStatus::StreamInUse);
            }
            return;
        }
        stream.reply = ReplyState::Received(headers);
        if fin {
            stream.recv_closed = true;
        }
        stream.wake_all();
    }

    fn on_settings(&self, st: &mut ConnState, entries: &[Setting]) {
        // Only the first value of an id counts.
        let initial_window = entries
            .iter()
            .find(|entry| entry.id == Setting::INITIAL_WINDOW_SIZE);
        if let Some(entry) = initial_window {
            let new_window = i64::from(entry.value.min(MAX_WINDOW_DELTA));
            let change = new_window - st.peer_initial_window;
            debug!(window = new_window, "peer set its initial stream window");
            st.peer_initial_window = new_window;
            st.peer_windows_confirmed = true;
            st.enforce_send_windows = true;
            for stream in st.streams.values_mut() {
                stream.send_window += change;
                stream.wake_writer();
            }
        }
    }

    /// Called when a writer waits for window: in [`PeerFlowControl::Detect`] mode, if the
    /// peer never sent SETTINGS or WINDOW_UPDATE, sends a PING. The peer answers it after
    /// everything it sent before, so if the echo arrives and still no flow-control frame
    /// came, the peer does not do flow control (moby/spdystream) and its windows are ignored.
    pub(crate) fn probe_peer_flow_control(&self, st: &mut ConnState) {
        if self.config.peer_flow_control != PeerFlowControl::Detect
            || st.peer_windows_confirmed
            || st.window_probe.is_some()
            || st.closed.is_some()
        {
            return;
        }
        let id = st.next_ping_id;
        st.next_ping_id = id.wrapping_add(2);
        st.window_probe = Some(id);
        debug!(
            ping_id = id,
            "send window exhausted and the peer never sent WINDOW_UPDATE; probing"
        );
        st.outbound.push(Frame::Ping { id });
        self.writer_wake.notify_one();
    }

    fn on_window_probe_echo(&self, st: &mut ConnState) {
        st.window_probe = None;
        if !st.peer_windows_confirmed {
            self.stop_enforcing_peer_windows(st);
        }
    }

    fn on_goaway(&self, st: &mut ConnState, last_good_stream_id: StreamId, status: GoAwayStatus) {
        debug!(last_good_stream_id, %status, "peer sent GOAWAY");
        st.peer_goaway = Some((last_good_stream_id, status));
        for (&stream_id, stream) in st.streams.iter_mut() {
            let ours = !self.is_peer_stream_id(stream_id);
            if ours && stream_id > last_good_stream_id && stream.reset.is_none() {
                stream.reset = Some(ResetInfo {
                    status: RstStatus::RefusedStream,
                    by_peer: true,
                });
                stream.wake_all();
            }
        }
        st.accept_wakers.wake_all();
    }

    fn on_window_update(
        &self,
        st: &mut ConnState,
        stream_id: StreamId,
        delta: u32,
    ) -> FrameOutcome {
        st.peer_windows_confirmed = true;
        st.enforce_send_windows = true;
        let max = i64::from(MAX_WINDOW_DELTA);
        if stream_id == 0 {
            let window = st.send_window + i64::from(delta);
            if window > max {
                return FrameOutcome::Fatal(format!(
                    "session WINDOW_UPDATE grows the window to {window}"
                ));
            }
            st.send_window = window;
            for stream in st.streams.values_mut() {
                stream.wake_writer();
            }
            return FrameOutcome::Continue;
        }
        let Some(stream) = st.streams.get_mut(&stream_id) else {
            return FrameOutcome::Continue;
        };
        let window = stream.send_window + i64::from(delta);
        if window > max {
            if stream.reset.is_none() {
                self.reset_stream(st, stream_id, RstStatus::FlowControlError);
            }
            return FrameOutcome::Continue;
        }
        stream.send_window = window;
        stream.wake_writer();
        FrameOutcome::Continue
    }
}
