//! Container root filesystems: an overlay whose lowerdirs are the image's layers (top first)
//! and whose upper and work directories live in `<root>/containers/<id>/`.
//!
//! Mounting records a lease on the layers, so removing the image keeps them until the
//! container's rootfs is removed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{ImageError, Result};
use crate::store::{lock, ImageStore, RootfsLease, IMAGE_ROOTFS};

/// Longest option string `mount(2)` takes (one page, with its NUL).
const MAX_MOUNT_DATA: usize = 4095;

/// A mounted container rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    /// Where the overlay is mounted.
    pub target: PathBuf,
    /// The image the rootfs was made from.
    pub image_id: String,
    /// The lower directories, top layer first.
    pub lowerdirs: Vec<PathBuf>,
    /// The container's writable layer.
    pub upperdir: PathBuf,
    /// Overlay's work directory.
    pub workdir: PathBuf,
}

fn check_container_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidContainerId(id.to_string()))
    }
}

impl ImageStore {
    /// The directory holding a container's upper and work directories.
    pub fn container_dir(&self, container_id: &str) -> Result<PathBuf> {
        check_container_id(container_id)?;
        Ok(self.inner.containers_dir.join(container_id))
    }

    /// The layers a container's rootfs uses, if it has one.
    pub fn rootfs_lease(&self, container_id: &str) -> Option<RootfsLease> {
        lock(&self.inner.state).leases.get(container_id).cloned()
    }

    /// Leases the layers of `image` for `container_id` (or reuses its existing lease) and
    /// creates its upper and work directories. Blocking; call from a blocking context.
    pub fn prepare_rootfs(&self, image: &str, container_id: &str) -> Result<RootfsLease> {
        let dir = self.container_dir(container_id)?;
        let lease = match self.rootfs_lease(container_id) {
            Some(lease) => lease,
            None => self.lease_rootfs_with(image, container_id, |_| Ok(()))?,
        };
        for sub in ["upper", "work"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(ImageError::io("create directory", &path))?;
        }
        if lease.chain_ids.is_empty() {
            let empty = dir.join("empty");
            fs::create_dir_all(&empty).map_err(ImageError::io("create directory", &empty))?;
        }
        Ok(lease)
    }

    /// Leases the layers of `image` to `container_id` — kept from garbage collection until
    /// [`Self::remove_rootfs`] — and commits what `with` writes in the same transaction, so a
    /// caller's record of the container and the lease land together or not at all, in one
    /// commit (an fsync) instead of two. A lease the container already holds is kept; `with`
    /// is written all the same. Blocking.
    pub fn lease_rootfs_with(
        &self,
        image: &str,
        container_id: &str,
        with: impl FnOnce(
            &corral_store::WriteTx<'_>,
        ) -> std::result::Result<(), corral_store::StoreError>,
    ) -> Result<RootfsLease> {
        check_container_id(container_id)?;
        let mut state = lock(&self.inner.state);
        if let Some(existing) = state.leases.get(container_id) {
            let existing = existing.clone();
            self.inner.db.write(with)?;
            return Ok(existing);
        }
        let id = crate::store::resolve_id(&state, image)
            .ok_or_else(|| ImageError::ImageNotFound(image.to_string()))?;
        let record = state
            .images
            .get(&id)
            .ok_or_else(|| ImageError::ImageNotFound(image.to_string()))?;
        if let Some(chain) = record
            .chain_ids
            .iter()
            .find(|chain| !state.layers.contains_key(*chain))
        {
            return Err(ImageError::LayerMissing {
                image: id.clone(),
                chain_id: chain.clone(),
            });
        }
        let lease = RootfsLease {
            container_id: container_id.to_string(),
            image_id: id.clone(),
            chain_ids: record.chain_ids.clone(),
        };
        self.inner.db.write(|tx| {
            tx.put(IMAGE_ROOTFS, container_id, &lease)?;
            with(tx)
        })?;
        state.leases.insert(container_id.to_string(), lease.clone());
        Ok(lease)
    }

    /// Mounts the overlay rootfs of `container_id`, made from `image`, at `target` (created if
    /// missing). Idempotent for the container: a second call reuses the lease and, if
    /// `target` is already a mount point, mounts nothing. Blocking.
    pub fn mount_rootfs(
        &self,
        image: &str,
        container_id: &str,
        target: &Path,
    ) -> Result<RootfsMount> {
        self.mount_overlay(image, container_id, target, None)
    }

    /// [`Self::mount_rootfs`] for a container whose root is `root_owner` (uid, gid) on the
    /// host: the image layers are taken through `store_view`, a path where the store's root
    /// directory is visible again as an idmapped copy that shows root's files as
    /// `root_owner`'s, and the root of the (new, empty) upper directory is given to
    /// `root_owner`. Files the container writes land in the upper directory as its ids on the
    /// host. (The upper cannot go through the idmapped view: overlayfs makes its work
    /// directories there as the mounter, host root, whom the view does not map.)
    pub fn mount_rootfs_through(
        &self,
        image: &str,
        container_id: &str,
        target: &Path,
        store_view: &Path,
        root_owner: (u32, u32),
    ) -> Result<RootfsMount> {
        let upper = self.container_dir(container_id)?.join("upper");
        self.prepare_rootfs(image, container_id)?;
        let (uid, gid) = root_owner;
        nix::unistd::chown(
            &upper,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|source| ImageError::Mount {
            op: "give the container's root the upper directory",
            target: upper.clone(),
            source,
        })?;
        self.mount_overlay(image, container_id, target, Some(store_view))
    }

    fn mount_overlay(
        &self,
        image: &str,
        container_id: &str,
        target: &Path,
        store_view: Option<&Path>,
    ) -> Result<RootfsMount> {
        let lease = self.prepare_rootfs(image, container_id)?;
        let dir = self.container_dir(container_id)?;
        let mut lowerdirs: Vec<PathBuf> = lease
            .chain_ids
            .iter()
            .rev()
            .map(|c| self.layer_dir(c))
            .collect();
        if lowerdirs.is_empty() {
            lowerdirs.push(dir.join("empty"));
        }
        let layer_seen = |path: PathBuf| match store_view {
            Some(view) => path
                .strip_prefix(self.root())
                .map(|relative| view.join(relative))
                .map_err(|_| ImageError::Mount {
                    op: "find the store's directory in its view for",
                    target: path.clone(),
                    source: nix::Error::EXDEV,
                }),
            None => Ok(path),
        };
        let rootfs = RootfsMount {
            target: target.to_path_buf(),
            image_id: lease.image_id.clone(),
            lowerdirs: lowerdirs
                .into_iter()
                .map(layer_seen)
                .collect::<Result<Vec<_>>>()?,
            upperdir: dir.join("upper"),
            workdir: dir.join("work"),
        };
        fs::create_dir_all(target).map_err(ImageError::io("create mount point", target))?;
        if is_mount_point(target)? {
            return Ok(rootfs);
        }
        let data = overlay_options(&rootfs)?;
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|source| ImageError::Mount {
            op: "mount overlay at",
            target: target.to_path_buf(),
            source,
        })?;
        tracing::debug!(container_id, target = %target.display(), "rootfs mounted");
        Ok(rootfs)
    }

    /// Unmounts a rootfs mounted by [`Self::mount_rootfs`]; nothing to do if it is not mounted.
    pub fn unmount_rootfs(&self, target: &Path) -> Result<()> {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => Ok(()),
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
            Err(nix::Error::EBUSY) => {
                umount2(target, MntFlags::MNT_DETACH).map_err(|source| ImageError::Mount {
                    op: "detach",
                    target: target.to_path_buf(),
                    source,
                })
            }
            Err(source) => Err(ImageError::Mount {
                op: "unmount",
                target: target.to_path_buf(),
                source,
            }),
        }
    }

    /// Deletes a container's upper and work directories and its lease, then frees layers no
    /// longer used. The rootfs must be unmounted first. Blocking.
    pub fn remove_rootfs(&self, container_id: &str) -> Result<()> {
        let dir = self.container_dir(container_id)?;
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(ImageError::io("remove container directory", &dir)(e))
            }
            _ => {}
        }
        let existed = {
            let mut state = lock(&self.inner.state);
            let existed = self.inner.db.delete(IMAGE_ROOTFS, container_id)?;
            state.leases.remove(container_id);
            existed
        };
        if existed {
            self.collect_garbage()?;
        }
        Ok(())
    }
}

/// The overlay mount options for `rootfs`, or an error if they exceed what mount(2) takes.
fn overlay_options(rootfs: &RootfsMount) -> Result<String> {
    let escape = |p: &Path| -> String {
        // Overlay splits on ':' and ',' unless escaped with a backslash.
        p.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace(':', "\\:")
            .replace(',', "\\,")
    };
    let lower: Vec<String> = rootfs.lowerdirs.iter().map(|p| escape(p)).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        escape(&rootfs.upperdir),
        escape(&rootfs.workdir)
    );
    if data.len() > MAX_MOUNT_DATA {
        return Err(ImageError::Mount {
            op: "mount overlay (too many layers for one mount) at",
            target: rootfs.target.clone(),
            source: nix::Error::E2BIG,
        });
    }
    Ok(data)
}

/// Whether `path` is the root of a mount (its device differs from its parent's, or it is
/// listed in the mount table as a mount point).
fn is_mount_point(path: &Path) -> Result<bool> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(ImageError::io("read", "/proc/self/mountinfo"))?;
    let canonical = fs::canonicalize(path).map_err(ImageError::io("resolve", path))?;
    let wanted = canonical.to_string_lossy();
    Ok(mountinfo.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == wanted)
    }))
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn container_ids_are_plain_names() {
        assert!(check_container_id("abc-123_x.y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b"] {
            assert!(check_container_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options_escape_and_order() {
        let r = RootfsMount {
            target: "/t".into(),
            image_id: String::new(),
            lowerdirs: vec!["/l/top".into(), "/l/a:b".into()],
            upperdir: "/c/upper".into(),
            workdir: "/c/work".into(),
        };
        assert_eq!(
            overlay_options(&r).unwrap(),
            "lowerdir=/l/top:/l/a\\:b,upperdir=/c/upper,workdir=/c/work"
        );
        let many = RootfsMount {
            lowerdirs: vec![PathBuf::from("/x".repeat(100)); 30],
            ..r
        };
        assert!(overlay_options(&many).is_err());
    }

    #[test]
    fn mountinfo_unescapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
