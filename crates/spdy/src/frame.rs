//! SPDY/3 frames and their exact byte layout (SPDY Protocol Draft 3, section 2.2 and 2.6;
//! SPDY/3.1 adds session-level WINDOW_UPDATE on stream 0).
//!
//! Every frame starts with 8 bytes. Control frames: `1 | version(15) | type(16)`, then
//! `flags(8) | length(24)`. Data frames: `0 | stream-id(31)`, then `flags(8) | length(24)`.
//! The length counts the bytes after the 8-byte header. Integers are big-endian.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::compression::{HeaderCompressor, HeaderDecompressor};
use crate::error::SpdyError;
use crate::headers::Headers;

/// A 31-bit stream identifier: odd for streams the client opens, even for the server's.
pub type StreamId = u32;

/// The protocol version carried by every control frame.
pub const SPDY_VERSION: u16 = 3;
/// Size of the common frame header.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest payload the 24-bit length field can describe.
pub const MAX_FRAME_PAYLOAD: usize = 0x00ff_ffff;
/// Largest valid stream id (31 bits).
pub const MAX_STREAM_ID: StreamId = 0x7fff_ffff;
/// Largest WINDOW_UPDATE delta (31 bits).
pub const MAX_WINDOW_DELTA: u32 = 0x7fff_ffff;

/// FLAG_FIN: the sender half-closes the stream with this frame (DATA, SYN_STREAM, SYN_REPLY,
/// HEADERS).
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL (SYN_STREAM): the recipient starts half-closed.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// FLAG_SETTINGS_CLEAR_SETTINGS (SETTINGS): clear previously persisted settings.
pub const FLAG_SETTINGS_CLEAR_SETTINGS: u8 = 0x01;

const MASK_31: u32 = 0x7fff_ffff;

/// Control frame type codes.
mod frame_type {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes (section 2.6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RstStatus {
    /// 1: generic protocol error.
    ProtocolError,
    /// 2: frame for a stream that is not active.
    InvalidStream,
    /// 3: stream refused before any processing.
    RefusedStream,
    /// 4: SPDY version not supported.
    UnsupportedVersion,
    /// 5: the stream is no longer needed.
    Cancel,
    /// 6: implementation failure.
    InternalError,
    /// 7: the peer violated flow control.
    FlowControlError,
    /// 8: SYN_REPLY for a stream already open.
    StreamInUse,
    /// 9: data or SYN_REPLY for a half-closed stream.
    StreamAlreadyClosed,
    /// 10: client certificate not valid.
    InvalidCredentials,
    /// 11: frame too large for the recipient.
    FrameTooLarge,
    /// Any other non-zero code.
    Unknown(u32),
}

impl RstStatus {
    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            RstStatus::ProtocolError => 1,
            RstStatus::InvalidStream => 2,
            RstStatus::RefusedStream => 3,
            RstStatus::UnsupportedVersion => 4,
            RstStatus::Cancel => 5,
            RstStatus::InternalError => 6,
            RstStatus::FlowControlError => 7,
            RstStatus::StreamInUse => 8,
            RstStatus::StreamAlreadyClosed => 9,
            RstStatus::InvalidCredentials => 10,
            RstStatus::FrameTooLarge => 11,
            RstStatus::Unknown(code) => code,
        }
    }

    /// The status for a wire code; `None` for 0, which is not a valid status.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => return None,
            1 => RstStatus::ProtocolError,
            2 => RstStatus::InvalidStream,
            3 => RstStatus::RefusedStream,
            4 => RstStatus::UnsupportedVersion,
            5 => RstStatus::Cancel,
            6 => RstStatus::InternalError,
            7 => RstStatus::FlowControlError,
            8 => RstStatus::StreamInUse,
            9 => RstStatus::StreamAlreadyClosed,
            10 => RstStatus::InvalidCredentials,
            11 => RstStatus::FrameTooLarge,
            other => RstStatus::Unknown(other),
        })
    }
}

impl fmt::Display for RstStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            RstStatus::ProtocolError => "PROTOCOL_ERROR",
            RstStatus::InvalidStream => "INVALID_STREAM",
            RstStatus::RefusedStream => "REFUSED_STREAM",
            RstStatus::UnsupportedVersion => "UNSUPPORTED_VERSION",
            RstStatus::Cancel => "CANCEL",
            RstStatus::InternalError => "INTERNAL_ERROR",
            RstStatus::FlowControlError => "FLOW_CONTROL_ERROR",
            RstStatus::StreamInUse => "STREAM_IN_USE",
            RstStatus::StreamAlreadyClosed => "STREAM_ALREADY_CLOSED",
            RstStatus::InvalidCredentials => "INVALID_CREDENTIALS",
            RstStatus::FrameTooLarge => "FRAME_TOO_LARGE",
            RstStatus::Unknown(code) => return write!(f, "status {code}"),
        };
        f.write_str(name)
    }
}

/// GOAWAY status codes (section 2.6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GoAwayStatus {
    /// 0: normal teardown.
    Ok,
    /// 1: protocol error.
    ProtocolError,
    /// 2: implementation failure.
    InternalError,
    /// Any other code.
    Unknown(u32),
}

impl GoAwayStatus {
    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            GoAwayStatus::Ok => 0,
            GoAwayStatus::ProtocolError => 1,
            GoAwayStatus::InternalError => 2,
            GoAwayStatus::Unknown(code) => code,
        }
    }

    /// The status for a wire code.
    pub fn from_code(code: u32) -> Self {
        match code {
            0 => GoAwayStatus::Ok,
            1 => GoAwayStatus::ProtocolError,
            2 => GoAwayStatus::InternalError,
            other => GoAwayStatus::Unknown(other),
        }
    }
}

impl fmt::Display for GoAwayStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GoAwayStatus::Ok => f.write_str("OK"),
            GoAwayStatus::ProtocolError => f.write_str("PROTOCOL_ERROR"),
            GoAwayStatus::InternalError => f.write_str("INTERNAL_ERROR"),
            GoAwayStatus::Unknown(code) => write!(f, "status {code}"),
        }
    }
}

/// One SETTINGS entry: `flags(8) | id(24)`, then a 32-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// FLAG_SETTINGS_PERSIST_VALUE (0x1) / FLAG_SETTINGS_PERSISTED (0x2).
    pub flags: u8,
    /// Setting id (24 bits).
    pub id: u32,
    /// Setting value.
    pub value: u32,
}

impl Setting {
    /// SETTINGS_UPLOAD_BANDWIDTH.
    pub const UPLOAD_BANDWIDTH: u32 = 1;
    /// SETTINGS_DOWNLOAD_BANDWIDTH.
    pub const DOWNLOAD_BANDWIDTH: u32 = 2;
    /// SETTINGS_ROUND_TRIP_TIME.
    pub const ROUND_TRIP_TIME: u32 = 3;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u32 = 4;
    /// SETTINGS_CURRENT_CWND.
    pub const CURRENT_CWND: u32 = 5;
    /// SETTINGS_DOWNLOAD_RETRANS_RATE.
    pub const DOWNLOAD_RETRANS_RATE: u32 = 6;
    /// SETTINGS_INITIAL_WINDOW_SIZE: the sender's receive window for new streams.
    pub const INITIAL_WINDOW_SIZE: u32 = 7;
    /// SETTINGS_CLIENT_CERTIFICATE_VECTOR_SIZE.
    pub const CLIENT_CERTIFICATE_VECTOR_SIZE: u32 = 8;
}

/// A decoded SPDY/3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// DATA: payload bytes for a stream.
    Data {
        /// The stream.
        stream_id: StreamId,
        /// FLAG_FIN.
        fin: bool,
        /// The payload.
        data: Bytes,
    },
    /// SYN_STREAM: opens a stream.
    SynStream {
        /// The new stream.
        stream_id: StreamId,
        /// Stream this one is associated to (0 for none).
        associated_stream_id: StreamId,
        /// Priority 0 (highest) to 7.
        priority: u8,
        /// CREDENTIAL slot (0 for none).
        slot: u8,
        /// FLAG_FIN.
        fin: bool,
        /// FLAG_UNIDIRECTIONAL.
        unidirectional: bool,
        /// The stream's headers.
        headers: Headers,
    },
    /// SYN_REPLY: accepts a stream.
    SynReply {
        /// The stream.
        stream_id: StreamId,
        /// FLAG_FIN.
        fin: bool,
        /// Reply headers.
        headers: Headers,
    },
    /// RST_STREAM: aborts a stream.
    RstStream {
        /// The stream.
        stream_id: StreamId,
        /// Why.
        status: RstStatus,
    },
    /// SETTINGS: connection parameters.
    Settings {
        /// FLAG_SETTINGS_CLEAR_SETTINGS.
        clear_persisted: bool,
        /// The entries, in wire order.
        entries: Vec<Setting>,
    },
    /// PING: echoed by the recipient.
    Ping {
        /// Ping id: odd from the client, even from the server.
        id: u32,
    },
    /// GOAWAY: no new streams on this session.
    GoAway {
        /// Last stream id the sender accepted.
        last_good_stream_id: StreamId,
        /// Why.
        status: GoAwayStatus,
    },
    /// HEADERS: more headers for a stream.
    Headers {
        /// The stream.
        stream_id: StreamId,
        /// FLAG_FIN.
        fin: bool,
        /// The headers.
        headers: Headers,
    },
    /// WINDOW_UPDATE: more send window for a stream, or for the session when the id is 0.
    WindowUpdate {
        /// The stream, or 0 for the whole session.
        stream_id: StreamId,
        /// Bytes added to the window (1 ..= 2^31 - 1).
        delta: u32,
    },
    /// A control frame type this crate does not interpret (e.g. CREDENTIAL); receivers ignore
    /// it.
    Unknown {
        /// Control frame type.
        frame_type: u16,
        /// Flags byte.
        flags: u8,
        /// Raw payload.
        payload: Bytes,
    },
}

impl Frame {
    /// The frame type's name as the spec spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Data { .. } => "DATA",
            Frame::SynStream { .. } => "SYN_STREAM",
            Frame::SynReply { .. } => "SYN_REPLY",
            Frame::RstStream { .. } => "RST_STREAM",
            Frame::Settings { .. } => "SETTINGS",
            Frame::Ping { .. } => "PING",
            Frame::GoAway { .. } => "GOAWAY",
            Frame::Headers { .. } => "HEADERS",
            Frame::WindowUpdate { .. } => "WINDOW_UPDATE",
            Frame::Unknown { .. } => "unknown control",
        }
    }
}

/// Writes frames for one direction of a connection; owns that direction's compression context.
pub struct FrameEncoder {
    compressor: HeaderCompressor,
}

impl FrameEncoder {
    /// A fresh encoder with a new compression context.
    pub fn new() -> Result<Self, SpdyError> {
        Ok(Self {
            compressor: HeaderCompressor::new()?,
        })
    }

    /// Appends the encoding of `frame` to `dst`.
    ///
    /// Frames with header blocks advance the compression context, so they must be written to
    /// the transport in the order they are encoded.
    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), SpdyError> {
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => put_data(dst, *stream_id, *fin, data)?,
            Frame::SynStream {
                stream_id,
                associated_stream_id,
                priority,
                slot,
                fin,
                unidirectional,
                headers,
            } => {
                let block = self.compressor.compress(headers)?;
                let mut flags = fin_flag(*fin);
                if *unidirectional {
                    flags |= FLAG_UNIDIRECTIONAL;
                }
                let len = payload_len("SYN_STREAM", 10 + block.len())?;
                put_control_header(dst, frame_type::SYN_STREAM, flags, len);
                dst.put_u32(stream_id & MASK_31);
                dst.put_u32(associated_stream_id & MASK_31);
                dst.put_u8((priority & 0x07) << 5);
                dst.put_u8(*slot);
                dst.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => self.put_header_block_frame(
                dst,
                ("SYN_REPLY", frame_type::SYN_REPLY),
                *stream_id,
                *fin,
                headers,
            )?,
            Frame::RstStream { stream_id, status } => {
                put_control_header(dst, frame_type::RST_STREAM, 0, 8);
                dst.put_u32(stream_id & MASK_31);
                dst.put_u32(status.code());
            }
            Frame::Settings {
                clear_persisted,
                entries,
            } => put_settings(dst, *clear_persisted, entries)?,
            Frame::Ping { id } => {
                put_control_header(dst, frame_type::PING, 0, 4);
                dst.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                put_control_header(dst, frame_type::GOAWAY, 0, 8);
                dst.put_u32(last_good_stream_id & MASK_31);
                dst.put_u32(status.code());
            }
            Frame::Headers {
                stream_id,
                fin,
                headers,
            } => self.put_header_block_frame(
                dst,
                ("HEADERS", frame_type::HEADERS),
                *stream_id,
                *fin,
                headers,
            )?,
            Frame::WindowUpdate { stream_id, delta } => {
                put_window_update(dst, *stream_id, *delta)?;
            }
            Frame::Unknown {
                frame_type,
                flags,
                payload,
            } => {
                let len = payload_len("unknown control", payload.len())?;
                put_control_header(dst, *frame_type, *flags, len);
                dst.put_slice(payload);
            }
        }
        Ok(())
    }

    /// A SYN_REPLY or HEADERS frame (`kind`: its name and type): stream id, then the
    /// compressed header block.
    fn put_header_block_frame(
        &mut self,
        dst: &mut BytesMut,
        kind: (&'static str, u16),
        stream_id: u32,
        fin: bool,
        headers: &Headers,
    ) -> Result<(), SpdyError> {
        let block = self.compressor.compress(headers)?;
        let len = payload_len(kind.0, 4 + block.len())?;
        put_control_header(dst, kind.1, fin_flag(fin), len);
        dst.put_u32(stream_id & MASK_31);
        dst.put_slice(&block);
        Ok(())
    }
}

/// A DATA frame.
fn put_data(dst: &mut BytesMut, stream_id: u32, fin: bool, data: &[u8]) -> Result<(), SpdyError> {
    let len = payload_len("DATA", data.len())?;
    dst.reserve(FRAME_HEADER_LEN + data.len());
    dst.put_u32(stream_id & MASK_31);
    dst.put_u32(flags_and_len(fin_flag(fin), len));
    dst.put_slice(data);
    Ok(())
}

/// A WINDOW_UPDATE frame; the delta must be 1..=2^31-1.
fn put_window_update(dst: &mut BytesMut, stream_id: u32, delta: u32) -> Result<(), SpdyError> {
    if delta == 0 || delta > MAX_WINDOW_DELTA {
        return Err(SpdyError::malformed(
            "WINDOW_UPDATE",
            format!("delta {delta} outside 1..=2^31-1"),
        ));
    }
    put_control_header(dst, frame_type::WINDOW_UPDATE, 0, 8);
    dst.put_u32(stream_id & MASK_31);
    dst.put_u32(delta);
    Ok(())
}

/// A SETTINGS frame; ids must fit 24 bits.
fn put_settings(
    dst: &mut BytesMut,
    clear_persisted: bool,
    entries: &[Setting],
) -> Result<(), SpdyError> {
    let len = payload_len("SETTINGS", 4 + 8 * entries.len())?;
    let flags = if clear_persisted {
        FLAG_SETTINGS_CLEAR_SETTINGS
    } else {
        0
    };
    if let Some(bad) = entries.iter().find(|entry| entry.id > 0x00ff_ffff) {
        return Err(SpdyError::malformed(
            "SETTINGS",
            format!("setting id {} does not fit 24 bits", bad.id),
        ));
    }
    put_control_header(dst, frame_type::SETTINGS, flags, len);
    dst.put_u32(u32::try_from(entries.len()).unwrap_or(u32::MAX));
    for entry in entries {
        dst.put_u32(u32::from(entry.flags) << 24 | entry.id);
        dst.put_u32(entry.value);
    }
    Ok(())
}

/// Reads frames for one direction of a connection; owns that direction's decompression
/// context.
#[derive(Default)]
pub struct FrameDecoder {
    decompressor: HeaderDecompressor,
}

impl FrameDecoder {
    /// A fresh decoder with a new decompression context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one complete frame off the front of `src`.
    ///
    /// Returns `Ok(None)` when `src` does not yet hold a whole frame. A malformed frame is an
    /// error; the frame's bytes are consumed either way. After an error in a header block the
    /// compression context may be out of step, so the connection must end.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if src.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let len = usize::from(src[5]) << 16 | usize::from(src[6]) << 8 | usize::from(src[7]);
        if src.len() < FRAME_HEADER_LEN + len {
            src.reserve(FRAME_HEADER_LEN + len - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(FRAME_HEADER_LEN + len).freeze();
        let first = frame.get_u32();
        let flags = frame.get_u8();
        frame.advance(3);
        let payload = frame;
        if first & 0x8000_0000 == 0 {
            return decode_data(first & MASK_31, flags, payload).map(Some);
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        let frame_type = (first & 0xffff) as u16;
        if version != SPDY_VERSION {
            return Err(SpdyError::UnsupportedVersion { version });
        }
        self.decode_control(frame_type, flags, payload).map(Some)
    }

    fn decode_control(
        &mut self,
        frame_type: u16,
        flags: u8,
        mut payload: Bytes,
    ) -> Result<Frame, SpdyError> {
        match frame_type {
            frame_type::SYN_STREAM => {
                check_flags("SYN_STREAM", flags, FLAG_FIN | FLAG_UNIDIRECTIONAL)?;
                check_min_len("SYN_STREAM", &payload, 10)?;
                let stream_id = nonzero_stream("SYN_STREAM", payload.get_u32() & MASK_31)?;
                let associated_stream_id = payload.get_u32() & MASK_31;
                let priority = payload.get_u8() >> 5;
                let slot = payload.get_u8();
                let headers = self.decompressor.decompress(&payload)?;
                Ok(Frame::SynStream {
                    stream_id,
                    associated_stream_id,
                    priority,
                    slot,
                    fin: flags & FLAG_FIN != 0,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers,
                })
            }
            frame_type::SYN_REPLY | frame_type::HEADERS => {
                self.decode_header_block_frame(frame_type, flags, payload)
            }
            frame_type::RST_STREAM => {
                check_flags("RST_STREAM", flags, 0)?;
                check_exact_len("RST_STREAM", &payload, 8)?;
                let stream_id = nonzero_stream("RST_STREAM", payload.get_u32() & MASK_31)?;
                let status = RstStatus::from_code(payload.get_u32())
                    .ok_or_else(|| SpdyError::malformed("RST_STREAM", "status code 0"))?;
                Ok(Frame::RstStream { stream_id, status })
            }
            frame_type::SETTINGS => decode_settings(flags, payload),
            frame_type::PING => {
                check_flags("PING", flags, 0)?;
                check_exact_len("PING", &payload, 4)?;
                Ok(Frame::Ping {
                    id: payload.get_u32(),
                })
            }
            frame_type::GOAWAY => {
                check_flags("GOAWAY", flags, 0)?;
                check_exact_len("GOAWAY", &payload, 8)?;
                Ok(Frame::GoAway {
                    last_good_stream_id: payload.get_u32() & MASK_31,
                    status: GoAwayStatus::from_code(payload.get_u32()),
                })
            }
            frame_type::WINDOW_UPDATE => {
                check_flags("WINDOW_UPDATE", flags, 0)?;
                check_exact_len("WINDOW_UPDATE", &payload, 8)?;
                let stream_id = payload.get_u32() & MASK_31;
                let delta = payload.get_u32() & MASK_31;
                if delta == 0 {
                    return Err(SpdyError::malformed("WINDOW_UPDATE", "delta 0"));
                }
                Ok(Frame::WindowUpdate { stream_id, delta })
            }
            other => Ok(Frame::Unknown {
                frame_type: other,
                flags,
                payload,
            }),
        }
    }

    /// A SYN_REPLY or HEADERS frame: stream id, then the compressed header block.
    fn decode_header_block_frame(
        &mut self,
        frame_type: u16,
        flags: u8,
        mut payload: Bytes,
    ) -> Result<Frame, SpdyError> {
        let name = if frame_type == frame_type::SYN_REPLY {
            "SYN_REPLY"
        } else {
            "HEADERS"
        };
        check_flags(name, flags, FLAG_FIN)?;
        check_min_len(name, &payload, 4)?;
        let stream_id = nonzero_stream(name, payload.get_u32() & MASK_31)?;
        let headers = self.decompressor.decompress(&payload)?;
        let fin = flags & FLAG_FIN != 0;
        Ok(if frame_type == frame_type::SYN_REPLY {
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            }
        } else {
            Frame::Headers {
                stream_id,
                fin,
                headers,
            }
        })
    }
}

/// A SETTINGS frame: the entry count must match the payload.
fn decode_settings(flags: u8, mut payload: Bytes) -> Result<Frame, SpdyError> {
    check_flags("SETTINGS", flags, FLAG_SETTINGS_CLEAR_SETTINGS)?;
    check_min_len("SETTINGS", &payload, 4)?;
    let count = payload.get_u32() as usize;
    if count.checked_mul(8) != Some(payload.len()) {
        return Err(SpdyError::malformed(
            "SETTINGS",
            format!("{count} entries announced, {} bytes follow", payload.len()),
        ));
    }
    let entries = (0..count)
        .map(|_| {
            let flags_and_id = payload.get_u32();
            Setting {
                flags: (flags_and_id >> 24) as u8,
                id: flags_and_id & 0x00ff_ffff,
                value: payload.get_u32(),
            }
        })
        .collect();
    Ok(Frame::Settings {
        clear_persisted: flags & FLAG_SETTINGS_CLEAR_SETTINGS != 0,
        entries,
    })
}

fn decode_data(stream_id: StreamId, flags: u8, data: Bytes) -> Result<Frame, SpdyError> {
    check_flags("DATA", flags, FLAG_FIN)?;
    let stream_id = nonzero_stream("DATA", stream_id)?;
    Ok(Frame::Data {
        stream_id,
        fin: flags & FLAG_FIN != 0,
        data,
    })
}

fn fin_flag(fin: bool) -> u8 {
    if fin {
        FLAG_FIN
    } else {
        0
    }
}

fn payload_len(frame: &'static str, len: usize) -> Result<u32, SpdyError> {
    if len > MAX_FRAME_PAYLOAD {
        return Err(SpdyError::FrameTooLarge { frame, len });
    }
    u32::try_from(len).map_err(|_| SpdyError::FrameTooLarge { frame, len })
}

fn flags_and_len(flags: u8, len: u32) -> u32 {
    u32::from(flags) << 24 | (len & 0x00ff_ffff)
}

fn put_control_header(dst: &mut BytesMut, frame_type: u16, flags: u8, len: u32) {
    dst.reserve(FRAME_HEADER_LEN + len as usize);
    dst.put_u16(0x8000 | SPDY_VERSION);
    dst.put_u16(frame_type);
    dst.put_u32(flags_and_len(flags, len));
}

fn check_flags(frame: &'static str, flags: u8, allowed: u8) -> Result<(), SpdyError> {
    if flags & !allowed != 0 {
        return Err(SpdyError::malformed(
            frame,
            format!("undefined flags {:#04x}", flags & !allowed),
        ));
    }
    Ok(())
}

fn check_min_len(frame: &'static str, payload: &Bytes, min: usize) -> Result<(), SpdyError> {
    if payload.len() < min {
        return Err(SpdyError::malformed(
            frame,
            format!("length {} shorter than {min}", payload.len()),
        ));
    }
    Ok(())
}

fn check_exact_len(frame: &'static str, payload: &Bytes, len: usize) -> Result<(), SpdyError> {
    if payload.len() != len {
        return Err(SpdyError::malformed(
            frame,
            format!("length {} instead of {len}", payload.len()),
        ));
    }
    Ok(())
}

fn nonzero_stream(frame: &'static str, stream_id: StreamId) -> Result<StreamId, SpdyError> {
    if stream_id == 0 {
        return Err(SpdyError::malformed(frame, "stream id 0"));
    }
    Ok(stream_id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn encode(frame: &Frame) -> Vec<u8> {
        let mut encoder = FrameEncoder::new().unwrap();
        let mut dst = BytesMut::new();
        encoder.encode(frame, &mut dst).unwrap();
        dst.to_vec()
    }

    fn decode_all(bytes: &[u8]) -> Vec<Frame> {
        let mut decoder = FrameDecoder::new();
        let mut src = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = decoder.decode(&mut src).unwrap() {
            frames.push(frame);
        }
        assert!(src.is_empty(), "left over: {src:?}");
        frames
    }

    /// A plain SYN_STREAM of stream 1 with `pairs` as headers.
    fn syn_stream_1(pairs: &[(&str, &str)]) -> Frame {
        Frame::SynStream {
            stream_id: 1,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: headers(pairs),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().copied().collect()
    }

    #[test]
    fn fixed_frames_have_exact_bytes() {
        let cases: Vec<(Frame, Vec<u8>)> = vec![
            (
                Frame::Data {
                    stream_id: 1,
                    fin: true,
                    data: Bytes::from_static(b"abc"),
                },
                vec![0, 0, 0, 1, 0x01, 0, 0, 3, b'a', b'b', b'c'],
            ),
            (
                Frame::RstStream {
                    stream_id: 5,
                    status: RstStatus::Cancel,
                },
                vec![0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0, 5],
            ),
            (
                Frame::Settings {
                    clear_persisted: false,
                    entries: vec![Setting {
                        flags: 0,
                        id: Setting::INITIAL_WINDOW_SIZE,
                        value: 65536,
                    }],
                },
                vec![
                    0x80, 3, 0, 4, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 7, 0, 1, 0, 0,
                ],
            ),
            (
                Frame::Ping { id: 0x0102_0304 },
                vec![0x80, 3, 0, 6, 0, 0, 0, 4, 1, 2, 3, 4],
            ),
            (
                Frame::GoAway {
                    last_good_stream_id: 7,
                    status: GoAwayStatus::ProtocolError,
                },
                vec![0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 1],
            ),
            (
                Frame::WindowUpdate {
                    stream_id: 0,
                    delta: 0x7fff_ffff,
                },
                vec![
                    0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff,
                ],
            ),
        ];
        for (frame, bytes) in cases {
            assert_eq!(encode(&frame), bytes, "{}", frame.name());
            assert_eq!(decode_all(&bytes), vec![frame]);
        }
    }

    #[test]
    fn syn_stream_layout_and_header_block() {
        let frame = Frame::SynStream {
            stream_id: 3,
            associated_stream_id: 1,
            priority: 5,
            slot: 2,
            fin: false,
            unidirectional: true,
            headers: headers(&[("streamtype", "stdin")]),
        };
        let bytes = encode(&frame);
        assert_eq!(bytes[..5], [0x80, 3, 0, 1, FLAG_UNIDIRECTIONAL]);
        let len = usize::from(bytes[5]) << 16 | usize::from(bytes[6]) << 8 | usize::from(bytes[7]);
        assert_eq!(len, bytes.len() - 8);
        assert_eq!(bytes[8..18], [0, 0, 0, 3, 0, 0, 0, 1, 5 << 5, 2]);
        let block = HeaderDecompressor::new()
            .decompress_block(&bytes[18..])
            .unwrap();
        assert_eq!(
            block,
            b"\x00\x00\x00\x01\x00\x00\x00\x0astreamtype\x00\x00\x00\x05stdin"
        );
        assert_eq!(decode_all(&bytes), vec![frame]);
    }

    #[test]
    fn every_frame_type_round_trips_in_one_stream() {
        let frames = vec![
            syn_stream_1(&[("streamtype", "error")]),
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: Headers::new(),
            },
            Frame::Headers {
                stream_id: 1,
                fin: true,
                headers: headers(&[("x-trailer", "done"), ("x-trailer", "twice")]),
            },
            Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::from(vec![7u8; 70_000]),
            },
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream_id: 3,
                status: RstStatus::Unknown(99),
            },
            Frame::Settings {
                clear_persisted: true,
                entries: vec![
                    Setting {
                        flags: 1,
                        id: Setting::MAX_CONCURRENT_STREAMS,
                        value: 100,
                    },
                    Setting {
                        flags: 2,
                        id: Setting::INITIAL_WINDOW_SIZE,
                        value: 1 << 20,
                    },
                ],
            },
            Frame::Ping { id: 2 },
            Frame::GoAway {
                last_good_stream_id: 1,
                status: GoAwayStatus::Ok,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 4096,
            },
            Frame::Unknown {
                frame_type: 10,
                flags: 0,
                payload: Bytes::from_static(b"credential"),
            },
            Frame::SynStream {
                stream_id: 5,
                associated_stream_id: 0,
                priority: 7,
                slot: 0,
                fin: true,
                unidirectional: false,
                headers: headers(&[("streamtype", "stdout"), ("port", "80")]),
            },
        ];
        let mut encoder = FrameEncoder::new().unwrap();
        let mut wire = BytesMut::new();
        for frame in &frames {
            encoder.encode(frame, &mut wire).unwrap();
        }
        assert_eq!(decode_all(&wire), frames);
    }

    #[test]
    fn partial_input_waits_for_more() {
        let bytes = encode(&Frame::Ping { id: 9 });
        let mut decoder = FrameDecoder::new();
        let mut src = BytesMut::new();
        for (i, byte) in bytes.iter().enumerate() {
            assert_eq!(decoder.decode(&mut src).unwrap(), None, "at {i}");
            src.put_u8(*byte);
        }
        assert_eq!(
            decoder.decode(&mut src).unwrap(),
            Some(Frame::Ping { id: 9 })
        );
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        let cases: Vec<Vec<u8>> = vec![
            // control frame with version 2
            vec![0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1],
            // PING with 3-byte payload
            vec![0x80, 3, 0, 6, 0, 0, 0, 3, 0, 0, 1],
            // PING with flags
            vec![0x80, 3, 0, 6, 1, 0, 0, 4, 0, 0, 0, 1],
            // RST_STREAM with status 0
            vec![0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0],
            // RST_STREAM on stream 0
            vec![0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 5],
            // WINDOW_UPDATE with delta 0
            vec![0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0],
            // GOAWAY of length 4
            vec![0x80, 3, 0, 7, 0, 0, 0, 4, 0, 0, 0, 1],
            // SETTINGS announcing 2 entries with one present
            vec![
                0x80, 3, 0, 4, 0, 0, 0, 12, 0, 0, 0, 2, 0, 0, 0, 7, 0, 1, 0, 0,
            ],
            // SYN_STREAM too short
            vec![0x80, 3, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1],
            // SYN_STREAM with a garbage header block
            vec![
                0x80, 3, 0, 1, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xde, 0xad,
            ],
            // DATA on stream 0
            vec![0, 0, 0, 0, 0, 0, 0, 1, 9],
            // DATA with an undefined flag
            vec![0, 0, 0, 1, 0x04, 0, 0, 0],
        ];
        for case in cases {
            let mut src = BytesMut::from(&case[..]);
            assert!(
                FrameDecoder::new().decode(&mut src).is_err(),
                "accepted {case:02x?}"
            );
            assert!(src.is_empty(), "frame bytes not consumed: {case:02x?}");
        }
    }

    #[test]
    fn oversized_frames_are_not_encoded() {
        let mut encoder = FrameEncoder::new().unwrap();
        let mut dst = BytesMut::new();
        let data = Frame::Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from(vec![0u8; MAX_FRAME_PAYLOAD + 1]),
        };
        assert!(matches!(
            encoder.encode(&data, &mut dst),
            Err(SpdyError::FrameTooLarge { .. })
        ));
        let update = Frame::WindowUpdate {
            stream_id: 1,
            delta: 0,
        };
        assert!(encoder.encode(&update, &mut dst).is_err());
    }

    /// xorshift64*: deterministic pseudo-random bytes without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn byte(&mut self) -> u8 {
            (self.next() >> 56) as u8
        }
    }

    /// Feeds random bytes, and valid frames with random corruption, to the decoder: it must
    /// return frames or errors, never panic or loop.
    #[test]
    fn random_input_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut valid = BytesMut::new();
        let mut encoder = FrameEncoder::new().unwrap();
        for frame in [
            syn_stream_1(&[("streamtype", "stdin"), ("port", "1")]),
            Frame::Settings {
                clear_persisted: false,
                entries: vec![Setting {
                    flags: 0,
                    id: 7,
                    value: 1,
                }],
            },
            Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::from_static(b"0123456789"),
            },
        ] {
            encoder.encode(&frame, &mut valid).unwrap();
        }
        let mut outcomes = [0usize; 3];
        for round in 0..20_000 {
            let input: Vec<u8> = if round % 2 == 0 {
                let len = (rng.next() % 64) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
                if round % 4 == 0 && bytes.len() >= 8 {
                    // Plausible control header so the payload parsers are reached.
                    bytes[0] = 0x80;
                    bytes[1] = 3;
                    bytes[2] = 0;
                    bytes[3] %= 12;
                    bytes[5] = 0;
                    bytes[6] = 0;
                    bytes[7] = (len - 8) as u8;
                }
                bytes
            } else {
                let mut bytes = valid.to_vec();
                for _ in 0..1 + rng.next() % 4 {
                    let at = (rng.next() as usize) % bytes.len();
                    bytes[at] ^= 1 << (rng.next() % 8);
                }
                bytes
            };
            let mut decoder = FrameDecoder::new();
            let mut src = BytesMut::from(&input[..]);
            loop {
                let before = src.len();
                match decoder.decode(&mut src) {
                    Ok(Some(_)) => {
                        outcomes[0] += 1;
                        assert!(src.len() < before);
                    }
                    Ok(None) => {
                        outcomes[1] += 1;
                        break;
                    }
                    Err(_) => {
                        outcomes[2] += 1;
                        break;
                    }
                }
            }
        }
        assert!(outcomes.iter().all(|&count| count > 0), "{outcomes:?}");
    }
}
