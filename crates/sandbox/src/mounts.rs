//! Questions about the mount table of this process (`/proc/self/mountinfo`).

use std::path::Path;

use crate::error::{io_error, Result, SandboxError};

/// Whether something is mounted at `path` (after resolving symlinks); false when `path` does not
/// exist.
pub fn is_mount_point(path: &Path) -> Result<bool> {
    match statx_mount_root(path) {
        Ok(Some(answer)) => return Ok(answer),
        Ok(None) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_error("statx", path)(e)),
    }
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

/// Whether `path` (symlinks followed) is the root of a mount, as `statx` tells it
/// (`STATX_ATTR_MOUNT_ROOT`, Linux 5.8 and later); `None` when the kernel does not say, and
/// mountinfo must be read instead. One syscall, where reading mountinfo makes the kernel print
/// every mount of the namespace: thousands of lines on a busy node, hundreds of ms under load.
fn statx_mount_root(path: &Path) -> std::io::Result<Option<bool>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: a NUL-terminated path and a statx buffer the call fills in.
    let rc = unsafe { libc::statx(libc::AT_FDCWD, path.as_ptr(), 0, 0, stx.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statx succeeded, so the buffer is filled (and it was zeroed before).
    let stx = unsafe { stx.assume_init() };
    let bit = u64::try_from(libc::STATX_ATTR_MOUNT_ROOT).unwrap_or(0);
    Ok((stx.stx_attributes_mask & bit != 0).then_some(stx.stx_attributes & bit != 0))
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
