//! The crate's error type.

use std::path::PathBuf;

use corral_error_kind::ErrorKind;

/// Why a pod or a mount could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// A mount table could not be read or a path looked up in it.
    #[error(transparent)]
    Mounts(#[from] corral_oci::SpecError),

    /// A file of `/proc` could not be read.
    #[error("read {path}: {source}")]
    Proc {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },

    /// A field of a request holds a value that cannot be used.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

impl ExplainError {
    /// Whose fault the error is: an invalid field is the caller's, a mount lookup's is its
    /// own, an unreadable `/proc` file the host's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ExplainError::Invalid { .. } => ErrorKind::InvalidArgument,
            ExplainError::Mounts(e) => e.kind(),
            ExplainError::Proc { source, .. } => ErrorKind::of_io(source),
        }
    }

    /// Whether the caller's request is at fault (gRPC `InvalidArgument`) rather than the host.
    pub fn is_invalid_argument(&self) -> bool {
        self.kind() == ErrorKind::InvalidArgument
    }
}
