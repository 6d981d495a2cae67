//! The pod's `/dev/shm`: a tmpfs in the sandbox directory, shared by the pod's containers.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{io_error, syscall_error, Result, SandboxError};
use crate::mounts::is_mount_point;

/// The size of a pod's `/dev/shm` unless configured otherwise (Docker's and containerd's default).
pub const DEFAULT_SHM_SIZE_BYTES: u64 = 64 * 1024 * 1024;

/// Mounts a tmpfs of `size_bytes` at `path` (created if missing) with `nosuid,nodev,noexec` and mode
/// 1777. Does nothing if something is already mounted there.
pub fn mount_shm(path: &Path, size_bytes: u64) -> Result<()> {
    if size_bytes == 0 {
        // tmpfs reads size=0 as "unlimited".
        return Err(SandboxError::InvalidValue {
            field: "shm size",
            value: "0".to_owned(),
            reason: "must be more than 0 bytes",
        });
    }
    std::fs::create_dir_all(path).map_err(io_error("create shm directory", path))?;
    if is_mount_point(path)? {
        tracing::debug!(path = %path.display(), "shm already mounted");
        return Ok(());
    }
    let options = format!("mode=1777,size={size_bytes}");
    mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    )
    .map_err(syscall_error("mount shm tmpfs on", path))
}

/// Unmounts the tmpfs at `path` (lazily, so containers still holding it do not make this fail).
/// Succeeds when nothing is mounted there or `path` does not exist; leaves the directory.
pub fn unmount(path: &Path) -> Result<()> {
    if !is_mount_point(path)? {
        return Ok(());
    }
    umount2(path, MntFlags::MNT_DETACH).map_err(syscall_error("unmount shm", path))
}
