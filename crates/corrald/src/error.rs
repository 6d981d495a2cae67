//! The errors CRI handlers return, and their one conversion into a gRPC status.
//!
//! Library errors become a [`CriError`] through `From`, which asks the error its
//! [`ErrorKind`] (whose fault it is) and keeps it: a request's mistake found deep in a library
//! (an invalid cgroup limit, a DNS entry that cannot be written) reaches the client as the
//! caller's code, not as Internal. Handlers add the step that failed with [`during`], which
//! prefixes the message and keeps the code.

use corral_error_kind::ErrorKind;
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
    /// A registry refused the credentials, or wanted some and got none.
    #[error("{0}")]
    Unauthenticated(String),
    /// A registry accepted the credentials but refused access.
    #[error("{0}")]
    PermissionDenied(String),
    /// Content did not match its digest or size.
    #[error("{0}")]
    DataLoss(String),
    /// Something the runtime depends on (a registry, a CNI plugin, a peer) is unreachable or
    /// timed out; trying again later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The runtime failed doing what was asked.
    #[error("{0}")]
    Internal(String),
}

impl CriError {
    /// An internal error with the step that failed as its context.
    pub fn internal(step: &str, err: impl std::fmt::Display) -> Self {
        CriError::Internal(format!("{step}: {err}"))
    }

    /// The error for a library error of `kind` whose message is `message`.
    pub fn of_kind(kind: ErrorKind, message: String) -> Self {
        match kind {
            ErrorKind::InvalidArgument => CriError::InvalidArgument(message),
            ErrorKind::NotFound => CriError::NotFound(message),
            ErrorKind::AlreadyExists => CriError::AlreadyExists(message),
            ErrorKind::FailedPrecondition => CriError::FailedPrecondition(message),
            ErrorKind::ResourceExhausted => CriError::ResourceExhausted(message),
            ErrorKind::Unauthenticated => CriError::Unauthenticated(message),
            ErrorKind::PermissionDenied => CriError::PermissionDenied(message),
            ErrorKind::DataLoss => CriError::DataLoss(message),
            ErrorKind::Unavailable => CriError::Unavailable(message),
            ErrorKind::Internal => CriError::Internal(message),
        }
    }

    /// The same error with `context` (the step that failed) before its message.
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        let prefix = |m: String| format!("{context}: {m}");
        match self {
            CriError::InvalidArgument(m) => CriError::InvalidArgument(prefix(m)),
            CriError::NotFound(m) => CriError::NotFound(prefix(m)),
            CriError::AlreadyExists(m) => CriError::AlreadyExists(prefix(m)),
            CriError::FailedPrecondition(m) => CriError::FailedPrecondition(prefix(m)),
            CriError::DeadlineExceeded(m) => CriError::DeadlineExceeded(prefix(m)),
            CriError::ResourceExhausted(m) => CriError::ResourceExhausted(prefix(m)),
            CriError::Unauthenticated(m) => CriError::Unauthenticated(prefix(m)),
            CriError::PermissionDenied(m) => CriError::PermissionDenied(prefix(m)),
            CriError::DataLoss(m) => CriError::DataLoss(prefix(m)),
            CriError::Unavailable(m) => CriError::Unavailable(prefix(m)),
            CriError::Internal(m) => CriError::Internal(prefix(m)),
        }
    }
}

/// Turns an error into a [`CriError`] that names `step` first and keeps the error's kind:
/// `.map_err(during("RunPodSandbox: apply pod resources"))`.
pub fn during<E: Into<CriError>>(step: impl std::fmt::Display) -> impl FnOnce(E) -> CriError {
    move |err| err.into().context(step)
}

/// `From` each library error, through its `kind()`; the message is cut by [`brief`], as
/// library errors echo the values they were given.
macro_rules! from_library_errors {
    ($($error:ty),* $(,)?) => {$(
        impl From<$error> for CriError {
            fn from(err: $error) -> Self {
                CriError::of_kind(err.kind(), brief(&err))
            }
        }
    )*};
}

from_library_errors!(
    corral_cgroups::CgroupError,
    corral_cni::CniError,
    corral_explain::ExplainError,
    corral_image::ImageError,
    corral_oci::SpecError,
    corral_runtime::RuntimeError,
    corral_sandbox::SandboxError,
    corral_streaming::StreamingError,
);

/// A failed system call of the host: `ResourceExhausted` on a full disk, else Internal.
impl From<nix::errno::Errno> for CriError {
    fn from(err: nix::errno::Errno) -> Self {
        CriError::from(std::io::Error::from(err))
    }
}

/// A host I/O failure: `ResourceExhausted` on a full disk, else Internal.
impl From<std::io::Error> for CriError {
    fn from(err: std::io::Error) -> Self {
        CriError::of_kind(ErrorKind::of_io(&err), brief(&err))
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
            CriError::Unauthenticated(_) => Code::Unauthenticated,
            CriError::PermissionDenied(_) => Code::PermissionDenied,
            CriError::DataLoss(_) => Code::DataLoss,
            CriError::Unavailable(_) => Code::Unavailable,
            CriError::Internal(_) => Code::Internal,
        };
        Status::new(code, capped(err.to_string()))
    }
}

impl From<corral_store::StoreError> for CriError {
    fn from(err: corral_store::StoreError) -> Self {
        match err.kind() {
            ErrorKind::ResourceExhausted => CriError::ResourceExhausted(format!(
                "metadata store: {err}; free space under the root directory"
            )),
            kind => CriError::of_kind(kind, format!("metadata store: {err}")),
        }
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

    /// The code a library error reaches the client with, after a handler named its step.
    fn code_of(err: impl Into<CriError>) -> Code {
        Status::from(during("RunPodSandbox: some step")(err)).code()
    }

    #[test]
    fn library_errors_keep_their_kind_through_the_step_that_failed() {
        let limits = corral_cgroups::CgroupError::InvalidResources {
            reason: "memory_swap_limit_bytes (1) must be -1 or at least memory_limit_bytes (2)"
                .into(),
        };
        let status = Status::from(during("RunPodSandbox: apply pod resources")(limits));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("RunPodSandbox: apply pod resources: invalid cgroup resources: "),
            "{}",
            status.message()
        );
        let dns = corral_sandbox::SandboxError::InvalidValue {
            field: "DNS server",
            value: "1.1.1.1 x".into(),
            reason: "contains whitespace or control characters",
        };
        assert_eq!(code_of(dns), Code::InvalidArgument);
        let pending = corral_streaming::StreamingError::TooManyPendingRequests { limit: 1000 };
        assert_eq!(code_of(pending), Code::ResourceExhausted);
        let timeout = corral_cni::CniError::Timeout {
            network: "net".into(),
            plugin_type: "bridge".into(),
            command: "ADD",
            seconds: 10.0,
        };
        assert_eq!(code_of(timeout), Code::Unavailable);
        assert_eq!(
            code_of(std::io::Error::from_raw_os_error(28)),
            Code::ResourceExhausted
        );
        assert_eq!(
            code_of(std::io::Error::from_raw_os_error(13)),
            Code::Internal
        );
        assert_eq!(code_of(nix::errno::Errno::ENOSPC), Code::ResourceExhausted);
    }

    #[test]
    fn every_kind_has_its_own_code() {
        use corral_error_kind::ErrorKind::{self, NotFound};
        let kinds = ErrorKind::ALL;
        let codes: std::collections::HashSet<_> = kinds
            .iter()
            .map(|kind| Status::from(CriError::of_kind(*kind, "m".into())).code())
            .collect();
        assert_eq!(codes.len(), kinds.len());
        let status = Status::from(CriError::of_kind(NotFound, "m".into()).context("step"));
        assert_eq!(
            (status.code(), status.message()),
            (Code::NotFound, "step: m")
        );
    }
}
