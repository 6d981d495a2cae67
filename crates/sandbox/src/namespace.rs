//! Namespace files under `/proc/PID/ns` and their identities.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{io_error, Result};

/// The namespace file of a process, e.g. `/proc/42/ns/net` for `ns_file_of(42, "net")`.
pub fn ns_file_of(pid: i32, ns: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/{ns}"))
}

/// The inode number of a namespace file (a `/proc/PID/ns/*` link or a bind mount of one), which
/// identifies the namespace: two files with the same inode name the same namespace.
pub fn ns_inode_of_path(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|metadata| metadata.ino())
        .map_err(io_error("stat namespace file", path))
}

/// The inode number of namespace `ns` (`net`, `ipc`, `uts`, `pid`, ...) of process `pid`.
pub fn ns_inode(pid: i32, ns: &str) -> Result<u64> {
    ns_inode_of_path(&ns_file_of(pid, ns))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn our_own_namespaces_have_inodes() {
        let pid = i32::try_from(std::process::id()).unwrap();
        assert_eq!(
            ns_file_of(pid, "net"),
            PathBuf::from(format!("/proc/{pid}/ns/net"))
        );
        let by_pid = ns_inode(pid, "net").unwrap();
        let by_path = ns_inode_of_path(Path::new("/proc/self/ns/net")).unwrap();
        assert_eq!(by_pid, by_path);
        assert_ne!(ns_inode(pid, "net").unwrap(), ns_inode(pid, "ipc").unwrap());
    }

    #[test]
    fn a_missing_namespace_file_is_an_error() {
        assert!(ns_inode_of_path(Path::new("/proc/self/ns/nonexistent")).is_err());
    }
}
