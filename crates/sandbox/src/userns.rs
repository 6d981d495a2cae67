//! A pod's user namespace: its id mappings, the pin that keeps it alive, and what the host
//! must offer for one.
//!
//! The pause launcher creates the namespace (see `corral-pause`); corrald pins it like the
//! network namespace, so containers join it through the pin even while the pause restarts or
//! after it died, and so idmapped mounts can be made with it.

use std::path::Path;

use crate::error::Result;
use crate::netns::{pin_namespace, unpin_namespace};

/// The first kernel that idmaps both overlayfs (5.19) and tmpfs (6.3) mounts: a pod's image
/// rootfs is an overlay and its `/dev/shm` a tmpfs.
pub const MIN_KERNEL_FOR_IDMAPPED_MOUNTS: (u32, u32) = (6, 3);

/// One id mapping: `length` ids from `container_id` inside the namespace are the ids from
/// `host_id` outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdMapping {
    /// `C:H:L`, the pause launcher's form.
    pub fn to_arg(&self) -> String {
        format!("{}:{}:{}", self.container_id, self.host_id, self.length)
    }

    /// The host id of `id` inside the namespace, when it is mapped.
    pub fn host_id_of(&self, id: u32) -> Option<u32> {
        let offset = id.checked_sub(self.container_id)?;
        (offset < self.length).then(|| self.host_id.checked_add(offset))?
    }
}

/// The uid and gid mappings of a pod's user namespace (one range each, as kubelet gives them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UsernsMappings {
    pub uid: IdMapping,
    pub gid: IdMapping,
}

/// Pins the user namespace of process `pid` at `pin_path` (a bind mount of
/// `/proc/PID/ns/user`). Fails if `pin_path` exists.
pub fn pin(pid: i32, pin_path: &Path) -> Result<()> {
    pin_namespace(pid, "user", pin_path)
}

/// Removes a user namespace pin; succeeds when it is already gone.
pub fn unpin(pin_path: &Path) -> Result<()> {
    unpin_namespace(pin_path)
}

/// Why this host cannot give pods user namespaces with idmapped files, or `Ok`: the kernel must
/// have user namespaces enabled and be recent enough for idmapped overlayfs and tmpfs mounts.
pub fn host_support() -> std::result::Result<(), String> {
    if !Path::new("/proc/self/ns/user").exists() {
        return Err("the kernel has no user namespaces (CONFIG_USER_NS)".to_owned());
    }
    match std::fs::read_to_string("/proc/sys/user/max_user_namespaces") {
        Ok(max) if max.trim() == "0" => {
            return Err("user.max_user_namespaces is 0; raise it with sysctl".to_owned())
        }
        Ok(_) => {}
        Err(e) => return Err(format!("read /proc/sys/user/max_user_namespaces: {e}")),
    }
    let release = nix::sys::utsname::uname()
        .map_err(|e| format!("uname: {e}"))?
        .release()
        .to_string_lossy()
        .into_owned();
    let version = kernel_version(&release)
        .ok_or_else(|| format!("cannot read the kernel version from {release:?}"))?;
    if version < MIN_KERNEL_FOR_IDMAPPED_MOUNTS {
        let (major, minor) = MIN_KERNEL_FOR_IDMAPPED_MOUNTS;
        return Err(format!(
            "kernel {release} cannot idmap overlayfs and tmpfs mounts; {major}.{minor} or newer \
             is needed"
        ));
    }
    Ok(())
}

/// `(major, minor)` of a kernel release such as `6.18.44-fc-v1300`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_ids_follow_the_mapping() {
        let map = IdMapping {
            container_id: 0,
            host_id: 1000,
            length: 10,
        };
        assert_eq!(map.host_id_of(0), Some(1000));
        assert_eq!(map.host_id_of(9), Some(1009));
        assert_eq!(map.host_id_of(10), None);
        let shifted = IdMapping {
            container_id: 5,
            ..map
        };
        assert_eq!(shifted.host_id_of(4), None);
        assert_eq!(shifted.host_id_of(5), Some(1000));
        assert_eq!(map.to_arg(), "0:1000:10");
    }

    #[test]
    fn kernel_versions_are_read_from_releases() {
        assert_eq!(kernel_version("6.18.44-fc-v1300"), Some((6, 18)));
        assert_eq!(kernel_version("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("6.1"), Some((6, 1)));
        assert_eq!(kernel_version("x"), None);
    }
}
