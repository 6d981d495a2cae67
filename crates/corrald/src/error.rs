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

impl From<CriError> for Status {
    fn from(err: CriError) -> Status {
        let code = match &err {
            CriError::InvalidArgument(_) => Code::InvalidArgument,
            CriError::NotFound(_) => Code::NotFound,
            CriError::AlreadyExists(_) => Code::AlreadyExists,
            CriError::FailedPrecondition(_) => Code::FailedPrecondition,
            CriError::Internal(_) => Code::Internal,
        };
        Status::new(code, err.to_string())
    }
}

impl From<corral_store::StoreError> for CriError {
    fn from(err: corral_store::StoreError) -> Self {
        CriError::internal("metadata store", err)
    }
}

/// The result type of CRI handlers.
pub type CriResult<T> = Result<T, CriError>;
