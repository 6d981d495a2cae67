//! Whose fault an error is.
//!
//! Every corral library error enum has a `kind(&self) -> ErrorKind` method saying whether the
//! caller got something wrong (an invalid value, a missing object, a state that does not allow
//! the call, a full disk) or the host failed. corrald turns library errors into its `CriError`
//! through that method alone, so a request's mistake reaches the client with the caller's gRPC
//! code instead of `Internal`.
//!
//! Why a crate of its own: the libraries share nothing else (corral-cgroups, -sandbox,
//! -runtime, -cni and -oci do not depend on the store or on tonic), and a gRPC dependency in
//! every library for one enum would tie them to the transport. This crate has no dependencies,
//! so any library can take it without pulling anything in; the mapping to `tonic::Code` lives in
//! corrald's `error.rs`, the one place that knows about gRPC.

use std::error::Error;
use std::io;

/// The classes of failure an RPC status code distinguishes. The first group is the caller's
/// fault (retrying the same request will fail the same way); the last two are the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request holds a value that cannot be used (a malformed field, an unknown name).
    InvalidArgument,
    /// The object the request names does not exist.
    NotFound,
    /// The object the request would create exists already.
    AlreadyExists,
    /// The request is well-formed but the object or the node is not in a state to serve it
    /// (an image with no manifest for this platform, a filesystem without idmapped mounts).
    FailedPrecondition,
    /// The node ran out of something the request needs (disk space, a limit on pending
    /// requests); retrying once there is room may work.
    ResourceExhausted,
    /// A registry did not accept the credentials, or wanted some and got none.
    Unauthenticated,
    /// A registry accepted the credentials but refused access.
    PermissionDenied,
    /// Content did not match its digest or size: corrupted or tampered with.
    DataLoss,
    /// Something the host depends on (a registry, a plugin, a peer) is unreachable or timed
    /// out; trying again later may work.
    Unavailable,
    /// The host failed doing what was asked: a file system, a system call, a helper binary.
    Internal,
}

impl ErrorKind {
    /// Every kind, callers' first.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::FailedPrecondition,
        ErrorKind::ResourceExhausted,
        ErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied,
        ErrorKind::DataLoss,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
    ];

    /// Whether the caller, not the host, is at fault: every kind but `Unavailable` and
    /// `Internal`.
    pub fn is_callers(self) -> bool {
        !matches!(self, ErrorKind::Unavailable | ErrorKind::Internal)
    }

    /// The kind of a host I/O failure: `ResourceExhausted` when the disk (or a quota) is full,
    /// else `Internal`.
    pub fn of_io(err: &io::Error) -> ErrorKind {
        if is_out_of_space(err) {
            ErrorKind::ResourceExhausted
        } else {
            ErrorKind::Internal
        }
    }
}

/// ENOSPC on Linux.
const ENOSPC: i32 = 28;
/// EDQUOT on Linux (two constants do not warrant a libc dependency).
const EDQUOT: i32 = 122;

/// Whether an error, or one it wraps, is ENOSPC or EDQUOT. Error types that keep the I/O error
/// only in their message (as some of redb's do) are recognised by the OS error text.
pub fn is_out_of_space(err: &(dyn Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if matches!(io.raw_os_error(), Some(ENOSPC | EDQUOT)) {
                return true;
            }
        }
        let text = e.to_string();
        if text.contains("(os error 28)") || text.contains("(os error 122)") {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_resource_exhausted_and_other_io_internal() {
        let full = io::Error::from_raw_os_error(ENOSPC);
        assert_eq!(ErrorKind::of_io(&full), ErrorKind::ResourceExhausted);
        let quota = io::Error::from_raw_os_error(EDQUOT);
        assert_eq!(ErrorKind::of_io(&quota), ErrorKind::ResourceExhausted);
        let denied = io::Error::from_raw_os_error(13);
        assert_eq!(ErrorKind::of_io(&denied), ErrorKind::Internal);
    }

    #[test]
    fn out_of_space_is_found_through_wrappers_and_text() {
        let wrapped = io::Error::other(io::Error::from_raw_os_error(ENOSPC));
        assert!(is_out_of_space(&wrapped));
        let text = io::Error::other("write failed: No space left on device (os error 28)");
        assert!(is_out_of_space(&text));
        assert!(!is_out_of_space(&io::Error::other("broken pipe")));
    }

    #[test]
    fn only_unavailable_and_internal_are_the_hosts() {
        assert!(ErrorKind::InvalidArgument.is_callers());
        assert!(ErrorKind::ResourceExhausted.is_callers());
        assert!(!ErrorKind::Unavailable.is_callers());
        assert!(!ErrorKind::Internal.is_callers());
    }
}
