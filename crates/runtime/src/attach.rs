//! The shim's attach socket (`<state_dir>/attach.sock`): the frame codec both sides use, and a
//! blocking client.
//!
//! Protocol: the client connects and sends one JSON line naming the streams it wants,
//! `{"stdin":true,"stdout":true,"stderr":false}`. Then frames flow both ways, each
//! `[kind: u8][length: u32 big-endian][payload]`:
//!
//! | kind | direction | payload |
//! | --- | --- | --- |
//! | 0 stdin | client → shim | bytes for the container's stdin |
//! | 1 stdout | shim → client | the container's output (all of it with a terminal) |
//! | 2 stderr | shim → client | the container's stderr |
//! | 3 resize | client → shim | `{"width":W,"height":H}` (terminal size in cells) |
//! | 4 stdin close | client → shim | empty: the client's stdin ended |
//! | 5 exit | shim → client | the exit code, `i32` big-endian; then the shim closes |
//!
//! Every client gets all output from the moment it attaches (while the shim keeps logging it). A
//! client's stdin close (or its detaching) closes the container's stdin when the container was
//! created with `stdin_once`.

use std::io::{self, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::state_dir::ATTACH_SOCKET;
use crate::unix_socket;

/// The largest payload a frame may carry; bigger data is sent as several frames.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// The length of a frame's header: kind and payload length.
pub const HEADER_LEN: usize = 5;

/// The longest handshake line the shim accepts.
pub const MAX_HANDSHAKE: usize = 4096;

/// Which of the container's streams an attach client wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachStreams {
    /// The client sends stdin.
    #[serde(default)]
    pub stdin: bool,
    /// The client receives stdout (and, with a terminal, all output).
    #[serde(default)]
    pub stdout: bool,
    /// The client receives stderr.
    #[serde(default)]
    pub stderr: bool,
}

impl AttachStreams {
    /// The handshake line, newline included.
    pub fn to_line(&self) -> String {
        format!(
            "{{\"stdin\":{},\"stdout\":{},\"stderr\":{}}}\n",
            self.stdin, self.stdout, self.stderr
        )
    }

    /// Parses a handshake line.
    pub fn parse(line: &[u8]) -> std::result::Result<AttachStreams, String> {
        serde_json::from_slice(line).map_err(|e| format!("invalid attach handshake: {e}"))
    }
}

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// One frame of the attach protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes for the container's stdin.
    Stdin(Vec<u8>),
    /// Container output on stdout (or the terminal).
    Stdout(Vec<u8>),
    /// Container output on stderr.
    Stderr(Vec<u8>),
    /// The client's terminal changed size.
    Resize(TerminalSize),
    /// The client's stdin ended.
    StdinClose,
    /// The container exited with this code; the last frame the shim sends.
    Exit(i32),
}

/// The kind bytes of [`Frame`]s.
pub mod kind {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const RESIZE: u8 = 3;
    pub const STDIN_CLOSE: u8 = 4;
    pub const EXIT: u8 = 5;
}

/// Bytes that are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid attach frame: {0}")]
pub struct FrameError(pub String);

impl From<FrameError> for io::Error {
    fn from(error: FrameError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }
}

impl Frame {
    /// The frame's kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Stdin(_) => kind::STDIN,
            Frame::Stdout(_) => kind::STDOUT,
            Frame::Stderr(_) => kind::STDERR,
            Frame::Resize(_) => kind::RESIZE,
            Frame::StdinClose => kind::STDIN_CLOSE,
            Frame::Exit(_) => kind::EXIT,
        }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let resize_json;
        let exit_code;
        let payload: &[u8] = match self {
            Frame::Stdin(data) | Frame::Stdout(data) | Frame::Stderr(data) => data,
            Frame::Resize(size) => {
                resize_json = format!("{{\"width\":{},\"height\":{}}}", size.width, size.height);
                resize_json.as_bytes()
            }
            Frame::StdinClose => &[],
            Frame::Exit(code) => {
                exit_code = code.to_be_bytes();
                &exit_code
            }
        };
        Self::encode_raw(self.kind(), payload, out);
    }

    /// Appends a frame of `kind` with `payload` to `out` (the payload should be at most
    /// [`MAX_PAYLOAD`] bytes).
    pub fn encode_raw(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        out.push(kind);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// The encoded frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Builds a frame from its kind and payload.
    pub fn decode(kind: u8, payload: Vec<u8>) -> std::result::Result<Frame, FrameError> {
        match kind {
            kind::STDIN => Ok(Frame::Stdin(payload)),
            kind::STDOUT => Ok(Frame::Stdout(payload)),
            kind::STDERR => Ok(Frame::Stderr(payload)),
            kind::RESIZE => serde_json::from_slice(&payload)
                .map(Frame::Resize)
                .map_err(|e| FrameError(format!("resize payload: {e}"))),
            kind::STDIN_CLOSE => Ok(Frame::StdinClose),
            kind::EXIT => <[u8; 4]>::try_from(payload.as_slice())
                .map(|bytes| Frame::Exit(i32::from_be_bytes(bytes)))
                .map_err(|_| FrameError(format!("exit payload of {} bytes", payload.len()))),
            other => Err(FrameError(format!("unknown kind {other}"))),
        }
    }

    /// Reads one frame; `None` at end of stream between frames.
    pub fn read_from(reader: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut header = [0u8; HEADER_LEN];
        let mut filled = 0;
        while filled < HEADER_LEN {
            match reader.read(&mut header[filled..]) {
                Ok(0) if filled == 0 => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let len = payload_len(&header)?;
        let mut payload = vec![0u8; len];
        reader.read_exact(&mut payload)?;
        Ok(Some(Frame::decode(header[0], payload)?))
    }

    /// Writes the frame.
    pub fn write_to(&self, writer: &mut impl Write) -> io::Result<()> {
        writer.write_all(&self.encode())
    }
}

/// The payload length in a header, checked against [`MAX_PAYLOAD`].
fn payload_len(header: &[u8; HEADER_LEN]) -> std::result::Result<usize, FrameError> {
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameError(format!(
            "payload of {len} bytes (at most {MAX_PAYLOAD})"
        )));
    }
    Ok(len)
}

/// Decodes frames from bytes as they arrive (for non-blocking readers).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
}

impl FrameDecoder {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> std::result::Result<Option<Frame>, FrameError> {
        let Some(header) = self.buffer.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = payload_len(header)?;
        if self.buffer.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let kind = header[0];
        let payload = self.buffer[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buffer.drain(..HEADER_LEN + len);
        Frame::decode(kind, payload).map(Some)
    }

    /// How many bytes wait for the rest of their frame.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

/// A connection to a shim's attach socket.
#[derive(Debug)]
pub struct AttachClient {
    stream: UnixStream,
    state_dir: PathBuf,
}

/// Everything an attach session received up to the container's exit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachTranscript {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The exit code, if the shim sent it before closing.
    pub exit_code: Option<i32>,
}

impl AttachClient {
    /// Connects to the shim of `state_dir` and asks for `streams`.
    pub fn connect(state_dir: &Path, streams: AttachStreams) -> Result<AttachClient> {
        let error = |message: String| RuntimeError::Attach {
            state_dir: state_dir.to_owned(),
            message,
        };
        let mut stream = unix_socket::connect(&state_dir.join(ATTACH_SOCKET))
            .map_err(|e| error(format!("connect to {ATTACH_SOCKET}: {e}")))?;
        stream
            .write_all(streams.to_line().as_bytes())
            .map_err(|e| error(format!("send handshake: {e}")))?;
        Ok(AttachClient {
            stream,
            state_dir: state_dir.to_owned(),
        })
    }

    /// Splits the connection into a reader (output frames) and a writer (stdin, resize), which
    /// may be used from two threads.
    pub fn split(self) -> Result<(AttachReader, AttachWriter)> {
        let writer = self.stream.try_clone().map_err(|e| RuntimeError::Attach {
            state_dir: self.state_dir.clone(),
            message: format!("clone the socket: {e}"),
        })?;
        Ok((
            AttachReader {
                reader: BufReader::new(self.stream),
                state_dir: self.state_dir.clone(),
            },
            AttachWriter {
                stream: writer,
                state_dir: self.state_dir,
            },
        ))
    }
}

/// The receiving half of an attach connection.
#[derive(Debug)]
pub struct AttachReader {
    reader: BufReader<UnixStream>,
    state_dir: PathBuf,
}

impl AttachReader {
    /// The next frame from the shim (stdout, stderr or exit); `None` once the shim closed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        Frame::read_from(&mut self.reader).map_err(|e| RuntimeError::Attach {
            state_dir: self.state_dir.clone(),
            message: format!("read frame: {e}"),
        })
    }

    /// Reads everything up to the exit frame (or until the shim closes).
    pub fn read_to_exit(&mut self) -> Result<AttachTranscript> {
        let mut transcript = AttachTranscript::default();
        while let Some(frame) = self.next_frame()? {
            match frame {
                Frame::Stdout(data) => transcript.stdout.extend_from_slice(&data),
                Frame::Stderr(data) => transcript.stderr.extend_from_slice(&data),
                Frame::Exit(code) => {
                    transcript.exit_code = Some(code);
                    break;
                }
                other => {
                    return Err(RuntimeError::Attach {
                        state_dir: self.state_dir.clone(),
                        message: format!("unexpected frame kind {} from the shim", other.kind()),
                    })
                }
            }
        }
        Ok(transcript)
    }

    /// The underlying socket (e.g. to set a read timeout).
    pub fn socket(&self) -> &UnixStream {
        self.reader.get_ref()
    }
}

/// The sending half of an attach connection.
#[derive(Debug)]
pub struct AttachWriter {
    stream: UnixStream,
    state_dir: PathBuf,
}

impl AttachWriter {
    /// Sends bytes for the container's stdin (in frames of at most [`MAX_PAYLOAD`]).
    pub fn send_stdin(&mut self, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(MAX_PAYLOAD) {
            self.send(&Frame::Stdin(chunk.to_vec()))?;
        }
        Ok(())
    }

    /// Tells the shim the terminal's new size.
    pub fn resize(&mut self, width: u16, height: u16) -> Result<()> {
        self.send(&Frame::Resize(TerminalSize { width, height }))
    }

    /// Tells the shim that the client's stdin ended.
    pub fn close_stdin(&mut self) -> Result<()> {
        self.send(&Frame::StdinClose)
    }

    /// Sends one frame.
    pub fn send(&mut self, frame: &Frame) -> Result<()> {
        frame
            .write_to(&mut self.stream)
            .map_err(|e| RuntimeError::Attach {
                state_dir: self.state_dir.clone(),
                message: format!("send frame: {e}"),
            })
    }

    /// Detaches: closes the sending direction (the shim sees the client go once the reader is
    /// dropped too).
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::BufRead;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Stdin(b"hello\n".to_vec()),
            Frame::Stdout(vec![0, 1, 2, 255]),
            Frame::Stderr(Vec::new()),
            Frame::Resize(TerminalSize {
                width: 80,
                height: 24,
            }),
            Frame::StdinClose,
            Frame::Exit(-2),
        ]
    }

    #[test]
    fn frames_have_the_documented_layout() {
        assert_eq!(
            Frame::Stdout(b"ab".to_vec()).encode(),
            [1, 0, 0, 0, 2, b'a', b'b']
        );
        assert_eq!(Frame::Exit(3).encode(), [5, 0, 0, 0, 4, 0, 0, 0, 3]);
        assert_eq!(Frame::StdinClose.encode(), [4, 0, 0, 0, 0]);
        let resize = Frame::Resize(TerminalSize {
            width: 100,
            height: 40,
        })
        .encode();
        assert_eq!(resize[0], 3);
        assert_eq!(&resize[5..], br#"{"width":100,"height":40}"#);
    }

    #[test]
    fn frames_round_trip_through_a_stream() {
        let mut bytes = Vec::new();
        for frame in all_frames() {
            frame.write_to(&mut bytes).unwrap();
        }
        let mut reader = bytes.as_slice();
        let mut decoded = Vec::new();
        while let Some(frame) = Frame::read_from(&mut reader).unwrap() {
            decoded.push(frame);
        }
        assert_eq!(decoded, all_frames());
    }

    #[test]
    fn the_decoder_waits_for_whole_frames() {
        let mut bytes = Vec::new();
        for frame in all_frames() {
            frame.encode_into(&mut bytes);
        }
        let mut decoder = FrameDecoder::default();
        let mut decoded = Vec::new();
        for byte in bytes {
            decoder.push(&[byte]);
            while let Some(frame) = decoder.next_frame().unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, all_frames());
        assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn bad_frames_are_refused() {
        let mut decoder = FrameDecoder::default();
        decoder.push(&[9, 0, 0, 0, 0]);
        assert!(decoder.next_frame().is_err());
        let mut decoder = FrameDecoder::default();
        decoder.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(decoder.next_frame().is_err(), "oversized payload");
        assert!(Frame::decode(kind::EXIT, vec![1, 2]).is_err());
        assert!(Frame::decode(kind::RESIZE, b"{}".to_vec()).is_err());
        let truncated = [1u8, 0, 0, 0, 9, b'x'];
        assert!(Frame::read_from(&mut truncated.as_slice()).is_err());
        let half_header = [1u8, 0];
        assert!(Frame::read_from(&mut half_header.as_slice()).is_err());
    }

    #[test]
    fn the_handshake_is_one_json_line() {
        let streams = AttachStreams {
            stdin: true,
            stdout: true,
            stderr: false,
        };
        let line = streams.to_line();
        assert_eq!(line, "{\"stdin\":true,\"stdout\":true,\"stderr\":false}\n");
        assert_eq!(AttachStreams::parse(line.trim().as_bytes()), Ok(streams));
        assert_eq!(
            AttachStreams::parse(b"{\"stdout\":true}"),
            Ok(AttachStreams {
                stdout: true,
                ..AttachStreams::default()
            })
        );
        assert!(AttachStreams::parse(b"stdout").is_err());
    }

    #[test]
    fn the_client_talks_the_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let listener = unix_socket::bind(&dir.path().join(ATTACH_SOCKET)).unwrap();
        let shim = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let streams = AttachStreams::parse(line.trim().as_bytes()).unwrap();
            assert!(streams.stdin && streams.stdout && streams.stderr);
            let mut writer = stream;
            while let Some(frame) = Frame::read_from(&mut reader).unwrap() {
                match frame {
                    Frame::Stdin(data) => Frame::Stdout(data).write_to(&mut writer).unwrap(),
                    Frame::Resize(size) => {
                        Frame::Stderr(format!("{}x{}", size.width, size.height).into_bytes())
                            .write_to(&mut writer)
                            .unwrap()
                    }
                    Frame::StdinClose => {
                        Frame::Exit(7).write_to(&mut writer).unwrap();
                        break;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        let client = AttachClient::connect(
            dir.path(),
            AttachStreams {
                stdin: true,
                stdout: true,
                stderr: true,
            },
        )
        .unwrap();
        let (mut reader, mut writer) = client.split().unwrap();
        writer.send_stdin(b"ping").unwrap();
        writer.resize(80, 24).unwrap();
        writer.close_stdin().unwrap();
        let transcript = reader.read_to_exit().unwrap();
        assert_eq!(
            transcript,
            AttachTranscript {
                stdout: b"ping".to_vec(),
                stderr: b"80x24".to_vec(),
                exit_code: Some(7),
            }
        );
        shim.join().unwrap();
    }
}
