//! The errors CRI handlers return, and their one conversion into a gRPC status.

use tonic::{Code, Status};

/// What went wrong serving a CRI call; each variant maps to one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The request itself is wrong: a missing or malformed field.
    #[error("{0}")]
    InvalidArgument(String),
    /// The object the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The object the request would create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the runtime or the object is not in a state to serve it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The operation did not finish in the time the caller gave.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The node ran out of a resource (disk space) the request needs; retry once there is room.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The runtime failed doing what was asked.
    #[error("{0}")]
    Internal(String),
}

impl CriError {
    /// An internal error with the step that failed as its context.
    pub fn internal(step: &str, err: impl std::fmt::Display) -> Self {
        CriError::Internal(format!("{step}: {err}"))
    }
}

/// The most bytes of one request value an error message echoes (see [`shown`]).
pub const ECHO_LIMIT: usize = 256;

/// The most bytes of message a status carries. The message travels in the `grpc-message`
/// header (percent-encoded, so up to three times longer), and clients drop a stream whose
/// headers pass their limit (8-16 KiB) instead of reporting the status.
pub const MESSAGE_LIMIT: usize = 2048;

/// A request value as error messages echo it: quoted, and when longer than [`ECHO_LIMIT`]
/// bytes, cut with an ellipsis and its total length, so that a 1 MB hostname yields a small
/// InvalidArgument instead of a status too big to deliver.
pub fn shown(value: &str) -> String {
    if value.len() <= ECHO_LIMIT {
        return format!("{value:?}");
    }
    format!(
        "{:?}… ({} bytes in all)",
        &value[..floor_char_boundary(value, ECHO_LIMIT)],
        value.len()
    )
}

/// A library error as a refusal quotes it: cut to 1 KiB (library errors echo the values they
/// were given, which may be megabytes long).
pub fn brief(err: impl std::fmt::Display) -> String {
    let text = err.to_string();
    if text.len() <= 1024 {
        return text;
    }
    let cut = floor_char_boundary(&text, 1024);
    format!("{}… ({} bytes in all)", &text[..cut], text.len())
}

/// Cuts a message to [`MESSAGE_LIMIT`] bytes: the net under every message, including library
/// errors that echo what they were given.
fn capped(message: String) -> String {
    if message.len() <= MESSAGE_LIMIT {
        return message;
    }
    let cut = floor_char_boundary(&message, MESSAGE_LIMIT);
    format!("{}… ({} bytes in all)", &message[..cut], message.len())
}

/// The largest index `<= at` that starts a character of `s`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    (0..=at.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

impl From<CriError> for Status {
    fn from(err: CriError) -> Status {
        let code = match &err {
            CriError::InvalidArgument(_) => Code::InvalidArgument,
            CriError::NotFound(_) => Code::NotFound,
            CriError::AlreadyExists(_) => Code::AlreadyExists,
            CriError::FailedPrecondition(_) => Code::FailedPrecondition,
            CriError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            CriError::ResourceExhausted(_) => Code::ResourceExhausted,
            CriError::Internal(_) => Code::Internal,
        };
        Status::new(code, capped(err.to_string()))
    }
}

impl From<corral_store::StoreError> for CriError {
    fn from(err: corral_store::StoreError) -> Self {
        if err.is_out_of_space() {
            return CriError::ResourceExhausted(format!(
                "metadata store: {err}; free space under the root directory"
            ));
        }
        CriError::internal("metadata store", err)
    }
}

/// Keeps the first error of a sequence of steps that must all be tried (teardown), logging
/// every one.
#[derive(Debug, Default)]
pub struct FirstError(Option<CriError>);

impl FirstError {
    /// Records the outcome of one step.
    pub fn note(&mut self, result: CriResult<()>) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "teardown step failed");
            self.0.get_or_insert(e);
        }
    }

    /// Whether every step so far succeeded.
    pub fn is_ok(&self) -> bool {
        self.0.is_none()
    }

    /// `Ok` when every step succeeded, else the first error.
    pub fn into_result(self) -> CriResult<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// The result type of CRI handlers.
pub type CriResult<T> = Result<T, CriError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_shown_whole_and_quoted() {
        assert_eq!(shown("web-1"), "\"web-1\"");
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let value = "é".repeat(300_000);
        let s = shown(&value);
        assert!(s.len() < ECHO_LIMIT + 64, "{} bytes", s.len());
        assert!(s.ends_with("… (600000 bytes in all)"), "{s}");
    }

    #[test]
    fn a_huge_message_becomes_a_small_status_of_the_same_code() {
        let status = Status::from(CriError::InvalidArgument(format!(
            "config.hostname: {} is not valid",
            "a".repeat(1 << 20)
        )));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().len() < MESSAGE_LIMIT + 64);
        assert!(status.message().starts_with("config.hostname: "));
        assert!(status.message().ends_with("bytes in all)"));
    }
}
