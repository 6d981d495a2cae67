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
            CriError::DeadlineExceeded(_) => Code::DeadlineExceeded,
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
