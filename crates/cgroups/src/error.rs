//! The crate's error type.

use std::path::PathBuf;

use corral_error_kind::ErrorKind;

/// Result alias for this crate.
pub type Result<T, E = CgroupError> = std::result::Result<T, E>;

/// Everything that can go wrong while managing pod cgroups.
///
/// Every variant names what was being done and on which path or value, so the
/// message reads well on its own in a log line.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A filesystem operation on a cgroup directory or file failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("create dir", "write", "remove dir", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A `/proc` file (mountinfo, `/proc/PID/cgroup`) could not be read or parsed.
    #[error("read {}: {source}", path.display())]
    ProcFile {
        /// The file.
        path: PathBuf,
        /// The parse or read error.
        #[source]
        source: procfs::ProcError,
    },

    /// The mount table has no cgroup or cgroup2 mount.
    #[error("no cgroup filesystem is mounted (looked in {})", path.display())]
    NoCgroupMounts {
        /// The mountinfo file that was searched.
        path: PathBuf,
    },

    /// A kernel file held something this crate cannot understand.
    #[error("parse {}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },

    /// The CRI `cgroup_parent` cannot be used with the configured driver.
    #[error("invalid cgroup parent {parent:?}: {reason}")]
    InvalidParent {
        /// The value as received.
        parent: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// A leaf or child cgroup name cannot be used.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The name or path as received.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The requested limits cannot be expressed on this host's cgroup layout.
    #[error("invalid cgroup resources: {reason}")]
    InvalidResources {
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// A cgroup directory of this pod could not be removed because it is still in use.
    #[error(
        "remove dir {}: still in use after {attempts} attempts (cgroup.procs: {procs:?}, child cgroups: {children:?})",
        path.display()
    )]
    Busy {
        /// The directory that could not be removed.
        path: PathBuf,
        /// How many times removal was tried.
        attempts: u32,
        /// Processes still in the cgroup when giving up.
        procs: Vec<i32>,
        /// Child cgroup directories still present when giving up.
        children: Vec<String>,
    },

    /// A call to systemd's D-Bus API failed (systemd cgroup driver).
    #[error("systemd: {op} {unit}: {reason}")]
    Systemd {
        /// The manager call or step ("StartTransientUnit", "stop", ...).
        op: &'static str,
        /// The unit (or the bus socket when connecting).
        unit: String,
        /// What systemd or the bus answered.
        reason: String,
    },
}

impl CgroupError {
    /// Whose fault the error is. An invalid parent, name or limit is the caller's
    /// (`InvalidArgument`), and so is a limit the kernel refuses to take (EINVAL or ERANGE on a
    /// write of an interface file: a cpuset of CPUs the node lacks, an out-of-range value); a
    /// full disk is `ResourceExhausted`; the rest is the host's.
    pub fn kind(&self) -> ErrorKind {
        /// EINVAL and ERANGE on Linux.
        const EINVAL: i32 = 22;
        const ERANGE: i32 = 34;
        match self {
            CgroupError::InvalidParent { .. }
            | CgroupError::InvalidName { .. }
            | CgroupError::InvalidResources { .. } => ErrorKind::InvalidArgument,
            CgroupError::Io { op, source, .. }
                if op.starts_with("write")
                    && matches!(source.raw_os_error(), Some(EINVAL | ERANGE)) =>
            {
                ErrorKind::InvalidArgument
            }
            CgroupError::Io { source, .. } => ErrorKind::of_io(source),
            CgroupError::ProcFile { .. }
            | CgroupError::NoCgroupMounts { .. }
            | CgroupError::Parse { .. }
            | CgroupError::Busy { .. }
            | CgroupError::Systemd { .. } => ErrorKind::Internal,
        }
    }

    /// Builds an [`CgroupError::Io`] for `op` on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_requests_and_refused_limits_are_the_callers() {
        let resources = CgroupError::InvalidResources {
            reason: "swap below memory".into(),
        };
        assert_eq!(resources.kind(), ErrorKind::InvalidArgument);
        let refused = CgroupError::io(
            "write",
            "/sys/fs/cgroup/p/cpuset.cpus",
            std::io::Error::from_raw_os_error(22),
        );
        assert_eq!(refused.kind(), ErrorKind::InvalidArgument);
        let full = CgroupError::io("create dir", "/x", std::io::Error::from_raw_os_error(28));
        assert_eq!(full.kind(), ErrorKind::ResourceExhausted);
        let denied = CgroupError::io("write", "/x", std::io::Error::from_raw_os_error(13));
        assert_eq!(denied.kind(), ErrorKind::Internal);
    }
}
