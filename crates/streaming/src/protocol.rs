//! Facts of the Kubernetes streaming protocols shared by server and client: subprotocol
//! names and their negotiation, stream and channel names, the `Status` JSON on the error
//! stream, and the resize stream's JSON objects.

use serde::{Deserialize, Serialize};

use crate::backend::TerminalSize;
use crate::websocket::Framing;

/// HTTP header carrying the SPDY subprotocols (one per value, client's preference first).
pub(crate) const STREAM_PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// HTTP header listing the server's subprotocols when negotiation fails.
pub(crate) const ACCEPTED_PROTOCOLS_HEADER: &str = "x-accepted-stream-protocol-versions";
/// `Upgrade` token of SPDY.
pub(crate) const SPDY_UPGRADE: &str = "SPDY/3.1";

/// SPDY stream header naming the stream's role.
pub(crate) const STREAM_TYPE_HEADER: &str = "streamType";
/// SPDY port-forward stream header: the remote port.
pub(crate) const PORT_HEADER: &str = "port";
/// SPDY port-forward stream header: pairs a data stream with its error stream.
pub(crate) const REQUEST_ID_HEADER: &str = "requestID";

/// Remote-command stream (and WebSocket channel) roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum StreamType {
    Stdin,
    Stdout,
    Stderr,
    Error,
    Resize,
}

impl StreamType {
    pub(crate) fn name(self) -> &'static str {
        match self {
            StreamType::Stdin => "stdin",
            StreamType::Stdout => "stdout",
            StreamType::Stderr => "stderr",
            StreamType::Error => "error",
            StreamType::Resize => "resize",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<StreamType> {
        [
            StreamType::Stdin,
            StreamType::Stdout,
            StreamType::Stderr,
            StreamType::Error,
            StreamType::Resize,
        ]
        .into_iter()
        .find(|kind| kind.name() == name)
    }

    /// The WebSocket channel number.
    pub(crate) fn channel(self) -> u8 {
        match self {
            StreamType::Stdin => 0,
            StreamType::Stdout => 1,
            StreamType::Stderr => 2,
            StreamType::Error => 3,
            StreamType::Resize => 4,
        }
    }
}

/// Port-forward SPDY stream roles.
pub(crate) const PORT_FORWARD_DATA: &str = "data";
pub(crate) const PORT_FORWARD_ERROR: &str = "error";

/// How the error stream reports how a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusFormat {
    /// v1–v3: nothing on success, the failure message as text otherwise.
    Text,
    /// v4 and later: a `metav1.Status` object as JSON, always.
    Json,
}

/// The remote-command subprotocols over SPDY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SpdyCommandVersion {
    V1,
    V2,
    V3,
    V4,
}

impl SpdyCommandVersion {
    /// All versions, the client's preference first.
    pub(crate) const ALL: [SpdyCommandVersion; 4] = [
        SpdyCommandVersion::V4,
        SpdyCommandVersion::V3,
        SpdyCommandVersion::V2,
        SpdyCommandVersion::V1,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            SpdyCommandVersion::V1 => "channel.k8s.io",
            SpdyCommandVersion::V2 => "v2.channel.k8s.io",
            SpdyCommandVersion::V3 => "v3.channel.k8s.io",
            SpdyCommandVersion::V4 => "v4.channel.k8s.io",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<SpdyCommandVersion> {
        Self::ALL.into_iter().find(|version| version.name() == name)
    }

    /// Whether the client opens a resize stream when it has a tty (v3 and later).
    pub(crate) fn supports_resize(self) -> bool {
        self >= SpdyCommandVersion::V3
    }

    pub(crate) fn status_format(self) -> StatusFormat {
        if self >= SpdyCommandVersion::V4 {
            StatusFormat::Json
        } else {
            StatusFormat::Text
        }
    }
}

/// The port-forward subprotocol over SPDY.
pub(crate) const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// A WebSocket subprotocol: its name and what it implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WsProtocol {
    /// The `Sec-WebSocket-Protocol` token; empty when the client offered none.
    pub(crate) name: &'static str,
    /// How channel data is framed.
    pub(crate) framing: Framing,
    /// How the error channel reports the end of a command.
    pub(crate) status: StatusFormat,
    /// Whether channel 255 carries "this channel is closed" signals (v5).
    pub(crate) close_signal: bool,
}

const fn ws(
    name: &'static str,
    framing: Framing,
    status: StatusFormat,
    close_signal: bool,
) -> WsProtocol {
    WsProtocol {
        name,
        framing,
        status,
        close_signal,
    }
}

/// Remote-command subprotocols over WebSocket, the client's preference first.
pub(crate) const WS_COMMAND_PROTOCOLS: [WsProtocol; 5] = [
    ws(
        "v5.channel.k8s.io",
        Framing::Binary,
        StatusFormat::Json,
        true,
    ),
    ws(
        "v4.channel.k8s.io",
        Framing::Binary,
        StatusFormat::Json,
        false,
    ),
    ws(
        "v4.base64.channel.k8s.io",
        Framing::Base64,
        StatusFormat::Json,
        false,
    ),
    ws("channel.k8s.io", Framing::Binary, StatusFormat::Text, false),
    ws(
        "base64.channel.k8s.io",
        Framing::Base64,
        StatusFormat::Text,
        false,
    ),
];

/// What a remote-command WebSocket speaks when the client offers no subprotocol.
pub(crate) const WS_COMMAND_DEFAULT: WsProtocol =
    ws("", Framing::Binary, StatusFormat::Text, false);

/// Port-forward subprotocols over WebSocket (two channels per port).
pub(crate) const WS_PORT_FORWARD_PROTOCOLS: [WsProtocol; 3] = [
    ws(
        "v4.channel.k8s.io",
        Framing::Binary,
        StatusFormat::Text,
        false,
    ),
    ws(
        "v4.base64.channel.k8s.io",
        Framing::Base64,
        StatusFormat::Text,
        false,
    ),
    ws(
        PORT_FORWARD_PROTOCOL,
        Framing::Binary,
        StatusFormat::Text,
        false,
    ),
];

/// Port-forward's SPDY protocol tunnelled through a WebSocket (client-go's tunnelling
/// dialer, kubectl >= 1.30): the framing fields do not apply, the WebSocket is a byte stream.
pub(crate) const WS_PORT_FORWARD_TUNNEL: WsProtocol = ws(
    "SPDY/3.1+portforward.k8s.io",
    Framing::Binary,
    StatusFormat::Text,
    false,
);

/// What a port-forward WebSocket speaks when the client offers no subprotocol.
pub(crate) const WS_PORT_FORWARD_DEFAULT: WsProtocol =
    ws("", Framing::Binary, StatusFormat::Text, false);

/// The comma-separated tokens of all values of a header, trimmed, empty ones dropped.
pub(crate) fn header_tokens<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .into_iter()
        .filter_map(|value| std::str::from_utf8(value).ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The first protocol the client offered that the server supports (the client's order
/// decides, as in `httpstream.Handshake`).
pub(crate) fn negotiate<'a>(offered: &[String], supported: &[&'a str]) -> Option<&'a str> {
    offered
        .iter()
        .find_map(|offer| supported.iter().find(|name| **name == offer).copied())
}

/// The WebSocket subprotocol to speak: `default` when the client offered none, `None` when
/// it offered only unsupported ones.
pub(crate) fn negotiate_ws(
    offered: &[String],
    supported: &[WsProtocol],
    default: WsProtocol,
) -> Option<WsProtocol> {
    if offered.is_empty() {
        return Some(default);
    }
    offered
        .iter()
        .find_map(|offer| supported.iter().find(|p| p.name == offer).copied())
}

/// How a remote command ended, as carried on the error stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CommandOutcome {
    /// Exit code 0 (or an attach that ended normally).
    Success,
    /// The command exited with this non-zero code.
    ExitCode(i32),
    /// The command could not be run or the stream failed; the message says why.
    Failed(String),
}

const STATUS_SUCCESS: &str = "Success";
const STATUS_FAILURE: &str = "Failure";
const REASON_NON_ZERO_EXIT_CODE: &str = "NonZeroExitCode";
const REASON_INTERNAL_ERROR: &str = "InternalError";
const CAUSE_EXIT_CODE: &str = "ExitCode";

/// `metav1.Status`, with the fields the streaming protocols use, in the upstream order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Status {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    details: Option<StatusDetails>,
    #[serde(default, skip_serializing_if = "is_zero")]
    code: i32,
}

/// `metav1.ListMeta`; always empty here but always present (`"metadata":{}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ListMeta {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StatusDetails {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    causes: Vec<StatusCause>,
}

/// `metav1.StatusCause`; its `Type` field is serialized as `reason`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StatusCause {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    message: String,
}

fn is_zero(code: &i32) -> bool {
    *code == 0
}

impl CommandOutcome {
    /// The outcome of an exec that exited with `code`.
    pub(crate) fn from_exit_code(code: i32) -> Self {
        if code == 0 {
            CommandOutcome::Success
        } else {
            CommandOutcome::ExitCode(code)
        }
    }

    /// The `Status` object kubelet sends for this outcome.
    pub(crate) fn to_status(&self) -> Status {
        match self {
            CommandOutcome::Success => Status {
                status: STATUS_SUCCESS.into(),
                ..Status::default()
            },
            CommandOutcome::ExitCode(code) => Status {
                status: STATUS_FAILURE.into(),
                message: format!("command terminated with non-zero exit code: exit status {code}"),
                reason: REASON_NON_ZERO_EXIT_CODE.into(),
                details: Some(StatusDetails {
                    causes: vec![StatusCause {
                        reason: CAUSE_EXIT_CODE.into(),
                        message: code.to_string(),
                    }],
                }),
                ..Status::default()
            },
            CommandOutcome::Failed(message) => Status {
                status: STATUS_FAILURE.into(),
                message: format!("Internal error occurred: {message}"),
                reason: REASON_INTERNAL_ERROR.into(),
                details: Some(StatusDetails {
                    causes: vec![StatusCause {
                        reason: String::new(),
                        message: message.clone(),
                    }],
                }),
                code: 500,
                metadata: ListMeta {},
            },
        }
    }

    /// What to write on the error stream; `None` when nothing is written (text, success).
    pub(crate) fn encode(&self, format: StatusFormat) -> Option<Vec<u8>> {
        let status = self.to_status();
        match format {
            // Serializing this struct cannot fail: string keys, no maps, no floats.
            StatusFormat::Json => serde_json::to_vec(&status).ok(),
            StatusFormat::Text if *self == CommandOutcome::Success => None,
            StatusFormat::Text => Some(status.message.into_bytes()),
        }
    }

    /// Reads what the server wrote on the error stream (all of it, up to end-of-stream).
    ///
    /// With JSON a status always comes: none means the session was cut short (kubectl would
    /// call that success; a command whose end is unknown is not).
    pub(crate) fn decode(message: &[u8], format: StatusFormat) -> CommandOutcome {
        match (format, message.is_empty()) {
            (StatusFormat::Text, true) => return CommandOutcome::Success,
            (StatusFormat::Text, false) => {
                return CommandOutcome::Failed(String::from_utf8_lossy(message).into_owned())
            }
            (StatusFormat::Json, true) => {
                return CommandOutcome::Failed(
                    "the connection ended without the command's exit status".to_owned(),
                )
            }
            (StatusFormat::Json, false) => {}
        }
        let status: Status = match serde_json::from_slice(message) {
            Ok(status) => status,
            Err(err) => {
                return CommandOutcome::Failed(format!(
                    "error stream protocol error: {err} in {:?}",
                    String::from_utf8_lossy(message)
                ))
            }
        };
        match status.status.as_str() {
            STATUS_SUCCESS => CommandOutcome::Success,
            STATUS_FAILURE if status.reason == REASON_NON_ZERO_EXIT_CODE => status
                .details
                .iter()
                .flat_map(|details| &details.causes)
                .find(|cause| cause.reason == CAUSE_EXIT_CODE)
                .and_then(|cause| cause.message.parse::<i32>().ok())
                .map(CommandOutcome::ExitCode)
                .unwrap_or(CommandOutcome::Failed(status.message)),
            STATUS_FAILURE => CommandOutcome::Failed(status.message),
            other => CommandOutcome::Failed(format!(
                "error stream protocol error: unknown status {other:?}"
            )),
        }
    }
}

/// Largest incomplete resize object buffered before the stream is declared broken.
const MAX_RESIZE_BUFFER: usize = 4096;

/// Why the resize stream cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResizeError {
    #[error("invalid terminal size JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("terminal size object longer than {MAX_RESIZE_BUFFER} bytes")]
    TooLong,
}

/// Splits the resize stream (concatenated JSON objects, whitespace or newlines between
/// them, arriving in arbitrary pieces) into terminal sizes.
#[derive(Debug, Default)]
pub(crate) struct ResizeDecoder {
    pending: Vec<u8>,
}

impl ResizeDecoder {
    /// Adds bytes and returns the sizes they complete.
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<Vec<TerminalSize>, ResizeError> {
        self.pending.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut objects =
            serde_json::Deserializer::from_slice(&self.pending).into_iter::<TerminalSize>();
        let mut consumed = 0;
        loop {
            match objects.next() {
                Some(Ok(size)) => {
                    sizes.push(size);
                    consumed = objects.byte_offset();
                }
                Some(Err(err)) if err.is_eof() => break,
                Some(Err(err)) => return Err(err.into()),
                None => {
                    consumed = objects.byte_offset();
                    break;
                }
            }
        }
        self.pending.drain(..consumed);
        if self.pending.len() > MAX_RESIZE_BUFFER {
            return Err(ResizeError::TooLong);
        }
        Ok(sizes)
    }
}

/// One resize message: the JSON object and a newline (as Go's `json.Encoder` writes it).
pub(crate) fn encode_resize(size: TerminalSize) -> Vec<u8> {
    // Two integer fields: serialization cannot fail.
    let mut line = serde_json::to_vec(&size).unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn spdy_negotiation_follows_the_client_order() {
        let supported: Vec<&str> = SpdyCommandVersion::ALL.iter().map(|v| v.name()).collect();
        let offered = strings(&[
            "v9.channel.k8s.io",
            "v3.channel.k8s.io",
            "v4.channel.k8s.io",
        ]);
        assert_eq!(negotiate(&offered, &supported), Some("v3.channel.k8s.io"));
        assert_eq!(negotiate(&strings(&["SPDY/2"]), &supported), None);
        assert_eq!(negotiate(&[], &supported), None);
    }

    #[test]
    fn header_tokens_split_commas_and_values() {
        let values: [&[u8]; 2] = [b"v5.channel.k8s.io, v4.channel.k8s.io", b" channel.k8s.io,"];
        assert_eq!(
            header_tokens(values),
            strings(&["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"])
        );
    }

    #[test]
    fn websocket_negotiation_defaults_only_without_offers() {
        let chosen = negotiate_ws(
            &strings(&["v4.channel.k8s.io", "v5.channel.k8s.io"]),
            &WS_COMMAND_PROTOCOLS,
            WS_COMMAND_DEFAULT,
        )
        .unwrap();
        assert_eq!(chosen.name, "v4.channel.k8s.io");
        assert!(!chosen.close_signal);
        assert_eq!(
            negotiate_ws(&[], &WS_COMMAND_PROTOCOLS, WS_COMMAND_DEFAULT),
            Some(WS_COMMAND_DEFAULT)
        );
        assert_eq!(
            negotiate_ws(
                &strings(&["v5.channel.k8s.io"]),
                &WS_PORT_FORWARD_PROTOCOLS,
                WS_PORT_FORWARD_DEFAULT
            ),
            None
        );
        let base64 = negotiate_ws(
            &strings(&["base64.channel.k8s.io"]),
            &WS_COMMAND_PROTOCOLS,
            WS_COMMAND_DEFAULT,
        )
        .unwrap();
        assert_eq!(base64.framing, Framing::Base64);
        assert_eq!(base64.status, StatusFormat::Text);
    }

    #[test]
    fn status_json_matches_kubelet() {
        let success = CommandOutcome::Success.encode(StatusFormat::Json).unwrap();
        assert_eq!(
            String::from_utf8(success).unwrap(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        let failure = CommandOutcome::ExitCode(3)
            .encode(StatusFormat::Json)
            .unwrap();
        assert_eq!(
            String::from_utf8(failure).unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        let internal = CommandOutcome::Failed("boom".into())
            .encode(StatusFormat::Json)
            .unwrap();
        assert_eq!(
            String::from_utf8(internal).unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: boom","reason":"InternalError","details":{"causes":[{"message":"boom"}]},"code":500}"#
        );
    }

    #[test]
    fn status_round_trips_and_decodes_upstream_text() {
        for outcome in [
            CommandOutcome::Success,
            CommandOutcome::ExitCode(3),
            CommandOutcome::ExitCode(-1),
        ] {
            let bytes = outcome.encode(StatusFormat::Json).unwrap();
            assert_eq!(CommandOutcome::decode(&bytes, StatusFormat::Json), outcome);
        }
        // As an upstream kubelet (containerd behind it) writes it.
        let upstream = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 7], exit code 7","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#;
        assert_eq!(
            CommandOutcome::decode(upstream, StatusFormat::Json),
            CommandOutcome::ExitCode(7)
        );
        assert!(matches!(
            CommandOutcome::decode(b"not json", StatusFormat::Json),
            CommandOutcome::Failed(_)
        ));
        assert!(matches!(
            CommandOutcome::decode(b"", StatusFormat::Json),
            CommandOutcome::Failed(_)
        ));
        assert_eq!(
            CommandOutcome::decode(b"", StatusFormat::Text),
            CommandOutcome::Success
        );
    }

    #[test]
    fn text_status_is_silent_on_success() {
        assert_eq!(CommandOutcome::Success.encode(StatusFormat::Text), None);
        let text = CommandOutcome::ExitCode(2)
            .encode(StatusFormat::Text)
            .unwrap();
        assert_eq!(
            CommandOutcome::decode(&text, StatusFormat::Text),
            CommandOutcome::Failed(
                "command terminated with non-zero exit code: exit status 2".into()
            )
        );
    }

    #[test]
    fn resize_objects_split_anywhere() {
        let mut decoder = ResizeDecoder::default();
        let stream = b"{\"Width\":80,\"Height\":24}\n{\"Width\":100, \"Height\":40}{\"width\":1,\"height\":2}";
        let mut sizes = Vec::new();
        for chunk in stream.chunks(7) {
            sizes.extend(decoder.push(chunk).unwrap());
        }
        assert_eq!(
            sizes,
            [
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 40
                },
                TerminalSize {
                    width: 1,
                    height: 2
                },
            ]
        );
        assert!(decoder.push(b"\"text\"").is_err());
        let mut decoder = ResizeDecoder::default();
        assert!(matches!(
            decoder.push(&[b' '; MAX_RESIZE_BUFFER + 1]),
            Ok(sizes) if sizes.is_empty()
        ));
        assert!(matches!(
            decoder.push(&vec![b'{'; MAX_RESIZE_BUFFER + 1]),
            Err(ResizeError::TooLong) | Err(ResizeError::Json(_))
        ));
    }

    #[test]
    fn resize_encoding_is_a_json_line() {
        let line = encode_resize(TerminalSize {
            width: 120,
            height: 30,
        });
        assert_eq!(line, b"{\"Width\":120,\"Height\":30}\n");
    }

    #[test]
    fn stream_types_have_kubernetes_names_and_channels() {
        for kind in [
            StreamType::Stdin,
            StreamType::Stdout,
            StreamType::Stderr,
            StreamType::Error,
            StreamType::Resize,
        ] {
            assert_eq!(StreamType::from_name(kind.name()), Some(kind));
        }
        assert_eq!(StreamType::Resize.channel(), 4);
        assert_eq!(StreamType::from_name("data"), None);
    }
}
