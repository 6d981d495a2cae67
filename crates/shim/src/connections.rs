//! The shim's side of its sockets: attach clients and control requests, all non-blocking.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use corral_runtime::attach::{AttachStreams, Frame, FrameDecoder, MAX_HANDSHAKE};
use corral_runtime::control::{answer_line, ControlRequest, MAX_LINE};

use crate::cri_log::Stream;

/// The most output that may wait for a slow attach client before it is disconnected.
pub const MAX_CLIENT_BACKLOG: usize = 8 << 20;

/// What an attach client asked for, as the supervisor acts on it.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEvent {
    Stdin(Vec<u8>),
    Resize { width: u16, height: u16 },
    StdinClose,
}

/// One attached client.
#[derive(Debug)]
pub struct AttachConnection {
    stream: UnixStream,
    /// The streams it asked for, once its handshake line has arrived.
    streams: Option<AttachStreams>,
    handshake: Vec<u8>,
    decoder: FrameDecoder,
    outgoing: Vec<u8>,
    /// The client will send nothing more (end of file or a protocol error).
    pub read_closed: bool,
    /// The connection is finished and is to be dropped.
    pub closed: bool,
    /// Its detaching has been applied to the container's stdin (stdin_once).
    pub stdin_released: bool,
}

impl AttachConnection {
    pub fn new(stream: UnixStream) -> io::Result<AttachConnection> {
        stream.set_nonblocking(true)?;
        Ok(AttachConnection {
            stream,
            streams: None,
            handshake: Vec::new(),
            decoder: FrameDecoder::default(),
            outgoing: Vec::new(),
            read_closed: false,
            closed: false,
            stdin_released: false,
        })
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Whether it attached with stdin.
    pub fn wants_stdin(&self) -> bool {
        self.streams.is_some_and(|streams| streams.stdin)
    }

    /// Whether output waits to be sent.
    pub fn has_outgoing(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Reads what the client sent and returns its requests. Sets `read_closed` at end of file and
    /// `closed` on a protocol error.
    pub fn read_events(&mut self) -> Vec<ClientEvent> {
        let mut events = Vec::new();
        let mut buffer = [0u8; 65536];
        loop {
            let n = match self.stream.read(&mut buffer) {
                Ok(0) => {
                    self.read_closed = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.read_closed = true;
                    self.closed = true;
                    break;
                }
            };
            if let Err(message) = self.take_input(&buffer[..n], &mut events) {
                crate::diag::diag!("attach client dropped: {message}");
                self.read_closed = true;
                self.closed = true;
                break;
            }
            if n < buffer.len() {
                break;
            }
        }
        events
    }

    fn take_input(
        &mut self,
        mut input: &[u8],
        events: &mut Vec<ClientEvent>,
    ) -> Result<(), String> {
        if self.streams.is_none() {
            match input.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.handshake.extend_from_slice(&input[..end]);
                    self.streams = Some(AttachStreams::parse(&self.handshake)?);
                    self.handshake = Vec::new();
                    input = &input[end + 1..];
                }
                None => {
                    self.handshake.extend_from_slice(input);
                    if self.handshake.len() > MAX_HANDSHAKE {
                        return Err("handshake line too long".into());
                    }
                    return Ok(());
                }
            }
        }
        self.decoder.push(input);
        while let Some(frame) = self.decoder.next_frame().map_err(|e| e.to_string())? {
            match frame {
                Frame::Stdin(data) => events.push(ClientEvent::Stdin(data)),
                Frame::Resize(size) => events.push(ClientEvent::Resize {
                    width: size.width,
                    height: size.height,
                }),
                Frame::StdinClose => events.push(ClientEvent::StdinClose),
                other => return Err(format!("client sent frame kind {}", other.kind())),
            }
        }
        Ok(())
    }

    /// Queues container output if the client asked for that stream; a client whose backlog grows
    /// past [`MAX_CLIENT_BACKLOG`] is disconnected.
    pub fn queue_output(&mut self, stream: Stream, data: &[u8]) {
        let Some(streams) = self.streams else { return };
        let (wanted, kind) = match stream {
            Stream::Stdout => (streams.stdout, corral_runtime::attach::kind::STDOUT),
            Stream::Stderr => (streams.stderr, corral_runtime::attach::kind::STDERR),
        };
        if !wanted || self.closed {
            return;
        }
        Frame::encode_raw(kind, data, &mut self.outgoing);
        if self.outgoing.len() > MAX_CLIENT_BACKLOG {
            crate::diag::diag!(
                "attach client too slow ({} bytes waiting); dropped",
                self.outgoing.len()
            );
            self.closed = true;
        }
    }

    /// Queues the exit frame (sent to every client, whatever it asked for).
    pub fn queue_exit(&mut self, exit_code: i32) {
        Frame::Exit(exit_code).encode_into(&mut self.outgoing);
    }

    /// Sends what it can of the backlog; a write error closes the connection.
    pub fn flush(&mut self) {
        while !self.outgoing.is_empty() {
            match self.stream.write(&self.outgoing) {
                Ok(n) => {
                    self.outgoing.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.outgoing.clear();
                    self.closed = true;
                    return;
                }
            }
        }
    }
}

/// One control request in progress.
#[derive(Debug)]
pub struct ControlConnection {
    stream: UnixStream,
    input: Vec<u8>,
    /// The request was answered (or the client went away): drop it.
    pub closed: bool,
}

impl ControlConnection {
    pub fn new(stream: UnixStream) -> io::Result<ControlConnection> {
        stream.set_nonblocking(true)?;
        Ok(ControlConnection {
            stream,
            input: Vec::new(),
            closed: false,
        })
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Reads the request; returns it once its whole line is there. A malformed request is
    /// answered here and the connection closed.
    pub fn read_request(&mut self) -> Option<ControlRequest> {
        let mut buffer = [0u8; 1024];
        loop {
            match self.stream.read(&mut buffer) {
                Ok(0) => {
                    self.closed = true;
                    return None;
                }
                Ok(n) => self.input.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    return None;
                }
            }
        }
        let end = match self.input.iter().position(|&b| b == b'\n') {
            Some(end) => end,
            None if self.input.len() > MAX_LINE => {
                self.answer(&Err("request line too long".into()));
                return None;
            }
            None => return None,
        };
        let line = String::from_utf8_lossy(&self.input[..end]).into_owned();
        match ControlRequest::parse(&line) {
            Some(request) => Some(request),
            None => {
                self.answer(&Err(format!("unknown request {line:?}")));
                None
            }
        }
    }

    /// Sends the answer and closes the connection.
    pub fn answer(&mut self, outcome: &Result<(), String>) {
        let line = answer_line(outcome);
        // The answer is one short line: it fits in the socket buffer, so a blocking write with a
        // time limit only waits when the client misbehaves.
        let _ = self.stream.set_nonblocking(false);
        let _ = self
            .stream
            .set_write_timeout(Some(std::time::Duration::from_secs(1)));
        let _ = self.stream.write_all(line.as_bytes());
        self.closed = true;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use corral_runtime::attach::TerminalSize;

    fn pair() -> (AttachConnection, UnixStream) {
        let (shim_side, client_side) = UnixStream::pair().unwrap();
        (AttachConnection::new(shim_side).unwrap(), client_side)
    }

    #[test]
    fn the_handshake_and_frames_become_events() {
        let (mut connection, mut client) = pair();
        let mut bytes = b"{\"stdin\":true,\"stdout\":true,\"stderr\":false}\n".to_vec();
        Frame::Stdin(b"hi".to_vec()).encode_into(&mut bytes);
        Frame::Resize(TerminalSize {
            width: 10,
            height: 5,
        })
        .encode_into(&mut bytes);
        Frame::StdinClose.encode_into(&mut bytes);
        // Split mid-handshake and mid-frame.
        client.write_all(&bytes[..10]).unwrap();
        assert_eq!(connection.read_events(), []);
        assert!(!connection.wants_stdin());
        client.write_all(&bytes[10..50]).unwrap();
        client.write_all(&bytes[50..]).unwrap();
        assert_eq!(
            connection.read_events(),
            [
                ClientEvent::Stdin(b"hi".to_vec()),
                ClientEvent::Resize {
                    width: 10,
                    height: 5
                },
                ClientEvent::StdinClose
            ]
        );
        assert!(connection.wants_stdin());
        drop(client);
        // Another test's child, between its fork and exec, may hold the client's end for a
        // moment: the end of the stream is waited for, not assumed at once.
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&connection.stream),
            nix::poll::PollFlags::POLLIN,
        )];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)).unwrap();
        assert_eq!(connection.read_events(), []);
        assert!(connection.read_closed);
    }

    #[test]
    fn output_goes_only_to_the_streams_asked_for() {
        let (mut connection, mut client) = pair();
        connection.queue_output(Stream::Stdout, b"before handshake");
        assert!(!connection.has_outgoing());
        client
            .write_all(b"{\"stdout\":false,\"stderr\":true}\n")
            .unwrap();
        connection.read_events();
        connection.queue_output(Stream::Stdout, b"out");
        connection.queue_output(Stream::Stderr, b"err");
        connection.queue_exit(3);
        connection.flush();
        assert!(!connection.has_outgoing());
        drop(connection);
        let mut received = Vec::new();
        client.read_to_end(&mut received).unwrap();
        let mut reader = received.as_slice();
        assert_eq!(
            Frame::read_from(&mut reader).unwrap(),
            Some(Frame::Stderr(b"err".to_vec()))
        );
        assert_eq!(Frame::read_from(&mut reader).unwrap(), Some(Frame::Exit(3)));
        assert_eq!(Frame::read_from(&mut reader).unwrap(), None);
    }

    #[test]
    fn garbage_closes_the_connection() {
        let (mut connection, mut client) = pair();
        client.write_all(b"{\"stdout\":true}\n").unwrap();
        client.write_all(&[9, 0, 0, 0, 0]).unwrap();
        connection.read_events();
        assert!(connection.closed);
        let (mut connection, mut client) = pair();
        client.write_all(b"not json\n").unwrap();
        connection.read_events();
        assert!(connection.closed);
    }

    #[test]
    fn control_requests_are_read_and_answered() {
        let (shim_side, mut client) = UnixStream::pair().unwrap();
        let mut connection = ControlConnection::new(shim_side).unwrap();
        client.write_all(b"reopen-").unwrap();
        assert_eq!(connection.read_request(), None);
        assert!(!connection.closed);
        client.write_all(b"log\n").unwrap();
        assert_eq!(connection.read_request(), Some(ControlRequest::ReopenLog));
        connection.answer(&Ok(()));
        assert!(connection.closed);
        drop(connection);
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "ok\n");

        let (shim_side, mut client) = UnixStream::pair().unwrap();
        let mut connection = ControlConnection::new(shim_side).unwrap();
        client.write_all(b"dance\n").unwrap();
        assert_eq!(connection.read_request(), None);
        assert!(connection.closed);
        drop(connection);
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("error: unknown request"), "{answer}");
    }
}
