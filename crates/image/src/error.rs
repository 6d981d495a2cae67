//! The crate's one error type, and the coarse kind a caller maps to an RPC status.

use std::path::PathBuf;
use std::sync::Arc;

pub use corral_error_kind::ErrorKind;

/// Errors from the image store, the registry client and the layer unpacker.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference does not parse as an image name.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No image in the local store matches the reference.
    #[error("image {0:?} not found")]
    ImageNotFound(String),
    /// The registry has no manifest for the reference.
    #[error("{reference}: not found in registry {registry}")]
    ManifestNotFound {
        /// The image reference.
        reference: String,
        /// The registry host asked.
        registry: String,
    },
    /// The registry refused the credentials (or wanted credentials and had none).
    #[error("registry {registry}: authentication failed for {repository}: {detail}")]
    Unauthenticated {
        /// The registry host.
        registry: String,
        /// The repository being pulled.
        repository: String,
        /// What the registry said.
        detail: String,
    },
    /// The registry accepted the credentials but refused access.
    #[error("registry {registry}: access to {repository} denied: {detail}")]
    PermissionDenied {
        /// The registry host.
        registry: String,
        /// The repository being pulled.
        repository: String,
        /// What the registry said.
        detail: String,
    },
    /// The registry could not be reached.
    #[error("registry {registry}: {op}: {detail}")]
    Unreachable {
        /// The registry host.
        registry: String,
        /// What was being done.
        op: String,
        /// The transport error.
        detail: String,
    },
    /// The registry answered with an unexpected status or body.
    #[error("registry {registry}: {op}: {detail}")]
    Registry {
        /// The registry host.
        registry: String,
        /// What was being done.
        op: String,
        /// Status and message.
        detail: String,
    },
    /// Content did not hash to the digest it was fetched by.
    #[error("{what} {expected}: digest mismatch, content hashes to {actual}")]
    DigestMismatch {
        /// What the content is (manifest, config, layer, uncompressed layer).
        what: &'static str,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// Content was larger or smaller than its descriptor says.
    #[error("{what} {digest}: size mismatch, expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What the content is.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// The size its descriptor gives.
        expected: u64,
        /// The size seen (at least).
        actual: u64,
    },
    /// A digest string is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    /// A manifest, index or config is of a kind this runtime cannot use.
    #[error("{what} {digest}: unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// What the content is.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// The media type found.
        media_type: String,
    },
    /// A manifest, index or config does not parse or is inconsistent.
    #[error("{what} {digest}: {reason}")]
    InvalidContent {
        /// What the content is.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// What is wrong.
        reason: String,
    },
    /// An image index has no manifest for this host's platform.
    #[error("{reference}: no manifest for platform {platform} in image index {digest}")]
    NoMatchingPlatform {
        /// The image reference.
        reference: String,
        /// The platform looked for, e.g. `linux/amd64`.
        platform: String,
        /// The index digest.
        digest: String,
    },
    /// A layer entry would write outside the layer directory or through a symlink.
    #[error("layer {layer}: refusing entry {entry:?}: {reason}")]
    UnsafeLayerEntry {
        /// The layer's digest.
        layer: String,
        /// The entry's path in the archive.
        entry: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A layer decompresses to far more than its compressed size: a decompression bomb.
    #[error(
        "layer {layer}: decompresses to more than {limit} bytes from {compressed} compressed \
         (at most {ratio}x plus 64 MiB is unpacked); refusing it as a decompression bomb"
    )]
    DecompressionBomb {
        /// The layer's digest.
        layer: String,
        /// Compressed bytes read when the limit was passed.
        compressed: u64,
        /// The uncompressed bytes allowed for them.
        limit: u64,
        /// The ratio allowed.
        ratio: u64,
    },
    /// A layer archive is not a readable tar stream.
    #[error("layer {layer}: {op}: {source}")]
    LayerArchive {
        /// The layer's digest.
        layer: String,
        /// What was being done.
        op: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An image's layer directory is missing from the store.
    #[error("image {image}: layer {chain_id} is not in the store")]
    LayerMissing {
        /// The image id.
        image: String,
        /// The missing layer's ChainID.
        chain_id: String,
    },
    /// A local file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Mounting or unmounting an overlay failed.
    #[error("{op} {target}: {source}")]
    Mount {
        /// What was being done.
        op: &'static str,
        /// The mount point.
        target: PathBuf,
        /// The errno.
        source: nix::Error,
    },
    /// A container id is not usable as a directory name.
    #[error("invalid container id {0:?}")]
    InvalidContainerId(String),
    /// The registry configuration is unusable (bad endpoint URL, unreadable CA file).
    #[error("registry configuration: {0}")]
    Config(String),
    /// An image archive or layout to import is malformed.
    #[error("import {path}: {reason}")]
    Import {
        /// The archive or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The metadata database failed.
    #[error(transparent)]
    Store(#[from] corral_store::StoreError),
    /// A background task failed without an error of its own (it panicked or was cancelled).
    #[error("{0}")]
    Task(String),
    /// The error of a pull this request joined (the same image pulled by another request).
    #[error(transparent)]
    Joined(Arc<ImageError>),
}

impl ImageError {
    /// The class of this error, for mapping to an RPC status.
    pub fn kind(&self) -> ErrorKind {
        use ImageError::*;
        let out_of_space = match self {
            Io { source, .. } | LayerArchive { source, .. } => {
                corral_error_kind::is_out_of_space(source)
            }
            Store(e) => e.is_out_of_space(),
            _ => false,
        };
        if out_of_space {
            return ErrorKind::ResourceExhausted;
        }
        match self {
            InvalidReference { .. } | InvalidDigest(_) | InvalidContainerId(_) => {
                ErrorKind::InvalidArgument
            }
            ImageNotFound(_) | ManifestNotFound { .. } => ErrorKind::NotFound,
            Unauthenticated { .. } => ErrorKind::Unauthenticated,
            PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Unreachable { .. } | Registry { .. } => ErrorKind::Unavailable,
            DigestMismatch { .. } | SizeMismatch { .. } => ErrorKind::DataLoss,
            UnsupportedMediaType { .. }
            | InvalidContent { .. }
            | NoMatchingPlatform { .. }
            | UnsafeLayerEntry { .. }
            | DecompressionBomb { .. }
            | LayerArchive { .. }
            | LayerMissing { .. }
            | Import { .. } => ErrorKind::FailedPrecondition,
            Io { .. } | Mount { .. } | Config(_) | Store(_) | Task(_) => ErrorKind::Internal,
            Joined(inner) => inner.kind(),
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io { op, path, source }
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, ImageError>;
