//! Questions about the mount table of this process (`/proc/self/mountinfo`).

use std::path::Path;

use crate::error::{io_error, Result, SandboxError};

/// Whether something is mounted at `path` (after resolving symlinks); false when `path` does not
/// exist.
pub fn is_mount_point(path: &Path) -> Result<bool> {
    let resolved = match std::fs::canonicalize(path) {
        Ok(resolved) => resolved,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_error("resolve", path)(e)),
    };
    let mountinfo = procfs::process::Process::myself()
        .and_then(|me| me.mountinfo())
        .map_err(|source| SandboxError::Proc {
            what: "/proc/self/mountinfo".to_owned(),
            source,
        })?;
    // mountinfo escapes a few bytes of mount points as octal (`\040` for a space) and procfs keeps
    // them escaped, so compare in that form.
    let escaped = escape_mount_point(&resolved.to_string_lossy());
    Ok(mountinfo
        .iter()
        .any(|mount| mount.mount_point.as_os_str() == escaped.as_str()))
}

/// Escapes a path the way the kernel writes mount points into mountinfo.
fn escape_mount_point(path: &str) -> String {
    let mut escaped = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => escaped.push_str("\\040"),
            '\t' => escaped.push_str("\\011"),
            '\n' => escaped.push_str("\\012"),
            '\\' => escaped.push_str("\\134"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn proc_is_a_mount_point_and_its_subdirectories_are_not() {
        assert!(is_mount_point(Path::new("/proc")).unwrap());
        assert!(!is_mount_point(Path::new("/proc/self/fd")).unwrap());
        assert!(!is_mount_point(Path::new("/nonexistent/corral")).unwrap());
    }

    #[test]
    fn mount_points_are_escaped_like_the_kernel_does() {
        assert_eq!(escape_mount_point("/a b\\c\td"), "/a\\040b\\134c\\011d");
    }
}
