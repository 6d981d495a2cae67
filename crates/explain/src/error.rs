//! The crate's error type.

use std::path::PathBuf;

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
    /// Whether the caller's request is at fault (gRPC `InvalidArgument`) rather than the host.
    pub fn is_invalid_argument(&self) -> bool {
        match self {
            ExplainError::Invalid { .. } => true,
            ExplainError::Mounts(e) => e.is_invalid_argument(),
            ExplainError::Proc { .. } => false,
        }
    }
}
