//! Idmapped mounts: a copy of a mount whose files, seen through it, are owned by the ids a user
//! namespace maps them to — so a pod whose root is host uid 100000 sees the image's root-owned
//! files as its own, without a chown of anything on disk.
//!
//! runc 1.1 cannot make idmapped mounts, so corral makes them before handing paths to it:
//! `open_tree(OPEN_TREE_CLONE)` detaches a copy of the source mount, `mount_setattr(
//! MOUNT_ATTR_IDMAP)` gives the copy the pod user namespace's mappings (only a detached copy
//! may be idmapped), and `move_mount` attaches it. nix has no wrappers for these syscalls
//! (Linux 5.2 and 5.12), so they are called through `libc::syscall`.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

use crate::error::{io_error, Result, SandboxError};

/// Mounts an idmapped copy of the mount tree at `source` onto `target` (which must exist and be
/// of the same kind, file or directory). `recursive` copies the submounts too (a `rbind`);
/// every filesystem in the copy must support idmapped mounts. `read_only` makes the copy's top
/// mount read-only.
pub fn mount_idmapped(
    source: &Path,
    target: &Path,
    userns: &Path,
    recursive: bool,
    read_only: bool,
) -> Result<()> {
    let tree = idmapped_tree(source, userns, recursive)?;
    if read_only {
        let attr = libc::mount_attr {
            attr_set: libc::MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        set_attr(&tree, libc::AT_EMPTY_PATH, &attr).map_err(|source_errno| {
            SandboxError::Syscall {
                op: "make the idmapped copy read-only: mount_setattr",
                path: source.to_owned(),
                source: source_errno,
            }
        })?;
    }
    move_mount_to(&tree, target)
}

/// Unmounts an idmapped mount made by [`mount_idmapped`]; succeeds when nothing is mounted there
/// or the path is gone.
pub fn unmount(target: &Path) -> Result<()> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => Ok(()),
        Err(source) => Err(SandboxError::Syscall {
            op: "unmount idmapped mount",
            path: target.to_owned(),
            source,
        }),
    }
}

/// A detached, idmapped copy of the mount tree at `source`.
fn idmapped_tree(source: &Path, userns: &Path, recursive: bool) -> Result<OwnedFd> {
    let userns_file = File::open(userns).map_err(io_error("open user namespace", userns))?;
    let source_c = c_path(source)?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: open_tree reads the NUL-terminated path, which lives for the call; it returns a
    // new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source_c.as_ptr(),
            flags,
        )
    };
    let fd = Errno::result(fd).map_err(|source_errno| SandboxError::Syscall {
        op: "open_tree(OPEN_TREE_CLONE)",
        path: source.to_owned(),
        source: source_errno,
    })?;
    let fd = i32::try_from(fd).map_err(|_| SandboxError::Syscall {
        op: "open_tree(OPEN_TREE_CLONE)",
        path: source.to_owned(),
        source: Errno::EBADF,
    })?;
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd) };

    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: u64::try_from(userns_file.as_raw_fd()).unwrap_or_default(),
    };
    let mut at_flags = libc::AT_EMPTY_PATH;
    if recursive {
        at_flags |= libc::AT_RECURSIVE;
    }
    set_attr(&tree, at_flags, &attr).map_err(|errno| SandboxError::Idmap {
        path: source.to_owned(),
        source: errno,
    })?;
    Ok(tree)
}

/// `mount_setattr` on the detached mount `tree` itself (empty path).
fn set_attr(tree: &OwnedFd, at_flags: libc::c_int, attr: &libc::mount_attr) -> nix::Result<()> {
    // SAFETY: mount_setattr reads `attr` (of the size passed) and the empty path, both alive for
    // the call; `tree` is an open descriptor, and so is any userns fd `attr` names.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            at_flags,
            attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    Errno::result(result).map(drop)
}

/// Attaches the detached mount `tree` at `target`.
fn move_mount_to(tree: &OwnedFd, target: &Path) -> Result<()> {
    let target_c = c_path(target)?;
    // SAFETY: move_mount reads the two NUL-terminated paths, alive for the call; `tree` is an
    // open descriptor of a detached mount.
    let result = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    Errno::result(result)
        .map(drop)
        .map_err(|source| SandboxError::Syscall {
            op: "move_mount the idmapped mount to",
            path: target.to_owned(),
            source,
        })
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SandboxError::InvalidValue {
        field: "mount path",
        value: path.display().to_string(),
        reason: "contains a NUL byte",
    })
}
