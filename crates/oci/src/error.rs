//! The crate's error type.

use std::path::PathBuf;

use corral_error_kind::ErrorKind;

/// Why a CRI container request could not be turned into an OCI spec.
///
/// Every message names the field, mount or file at fault and, where the caller can do
/// something about it, how to fix it. [`SpecError::is_invalid_argument`] tells the request's
/// faults (gRPC `InvalidArgument`) from the host's (`Internal`).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A field of the request holds a value corral cannot use.
    #[error("{}: {reason}", shown(field))]
    InvalidField {
        /// The field, as the CRI names it (`linux.security_context.run_as_username`).
        field: String,
        /// What is wrong with it and how to fix it.
        reason: String,
    },

    /// A CRI mount was refused.
    #[error(
        "mount of {} at {} refused: {reason}",
        shown(host_path),
        shown(container_path)
    )]
    MountRefused {
        /// The mount's `container_path`.
        container_path: String,
        /// The mount's `host_path`.
        host_path: String,
        /// Why, what the source's propagation is, and how to fix it.
        reason: String,
    },

    /// Neither the request nor the image says what to run.
    #[error(
        "no command to run: the container config has no command or args and the image has no \
         Entrypoint or Cmd; set command in the container config"
    )]
    NoCommand,

    /// A capability name is not one the kernel knows.
    #[error(
        "{field}: unknown capability {name:?}; use a kernel capability name such as NET_ADMIN \
         or CAP_NET_ADMIN, or ALL"
    )]
    UnknownCapability {
        /// `add_capabilities`, `drop_capabilities` or `add_ambient_capabilities`.
        field: &'static str,
        /// The name as given.
        name: String,
    },

    /// A seccomp profile file could not be used.
    #[error("seccomp profile {path}: {reason}")]
    SeccompProfile {
        /// The profile file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },

    /// A file operation on the host failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`create volume directory`).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },

    /// The mount table could not be read.
    #[error("read mount table {path}: {source}")]
    Mountinfo {
        /// The mountinfo file.
        path: PathBuf,
        /// The error.
        #[source]
        source: procfs::ProcError,
    },

    /// No mount in the mount table contains a path (not even `/`).
    #[error("no mount in {mountinfo} contains {path}")]
    NoContainingMount {
        /// The path looked for.
        path: PathBuf,
        /// The mountinfo file.
        mountinfo: PathBuf,
    },
}

impl SpecError {
    /// Whose fault the error is: a field, mount, command, capability or seccomp profile the
    /// request names is the caller's (`InvalidArgument`); a full disk while creating a volume
    /// directory is `ResourceExhausted`; the rest is the host's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SpecError::InvalidField { .. }
            | SpecError::MountRefused { .. }
            | SpecError::NoCommand
            | SpecError::UnknownCapability { .. }
            | SpecError::SeccompProfile { .. } => ErrorKind::InvalidArgument,
            SpecError::Io { source, .. } => ErrorKind::of_io(source),
            SpecError::Mountinfo { .. } | SpecError::NoContainingMount { .. } => {
                ErrorKind::Internal
            }
        }
    }

    /// Whether the request is at fault (gRPC `InvalidArgument`) rather than the host.
    pub fn is_invalid_argument(&self) -> bool {
        self.kind() == ErrorKind::InvalidArgument
    }

    /// A [`SpecError::InvalidField`].
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
        SpecError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A value as messages echo it: whole up to 256 bytes, else cut with an ellipsis and its
/// length, so that a 1 MB path in a request makes a short error.
fn shown(value: &str) -> std::borrow::Cow<'_, str> {
    const LIMIT: usize = 256;
    if value.len() <= LIMIT {
        return value.into();
    }
    let cut = (0..=LIMIT)
        .rev()
        .find(|&i| value.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}… ({} bytes in all)", &value[..cut], value.len()).into()
}

/// A closure turning an `io::Error` into [`SpecError::Io`] for `op` on `path`.
pub(crate) fn io_error(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> SpecError {
    let path = path.into();
    move |source| SpecError::Io { op, path, source }
}
