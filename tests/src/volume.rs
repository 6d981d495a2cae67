//! Volume sources with a chosen mount propagation, for the propagation and explain tests.
//!
//! This host's `/` is private, so a test makes its own shared (or slave, or private) tmpfs under
//! a temp dir; everything mounted below it is unmounted when it is dropped, passed or not.

use std::path::{Path, PathBuf};

use cri_proto::v1::{ContainerConfig, MountPropagation};
use nix::mount::MsFlags;

use crate::cri::{self, Rt};
use crate::{mounts_containing, unmount_under};

/// Mounts a fresh tmpfs on `dir` (created when missing).
pub fn mount_tmpfs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=4m"),
    )
    .unwrap_or_else(|e| panic!("mount tmpfs on {}: {e}", dir.display()));
}

/// Mounts a fresh tmpfs on `dir` (created when missing), holding `marker` with `content`.
pub fn mount_tmpfs_with_marker(dir: &Path, content: &str) {
    mount_tmpfs(dir);
    std::fs::write(dir.join("marker"), content).unwrap();
}

/// Changes the propagation of the mount at `dir` (`mount --make-…`).
pub fn set_propagation(dir: &Path, flags: MsFlags) {
    nix::mount::mount(None::<&str>, dir, None::<&str>, flags, None::<&str>)
        .unwrap_or_else(|e| panic!("set the propagation of {}: {e}", dir.display()));
}

/// Whether `path` is a mount point in the test's (the host's) mount namespace.
pub fn is_host_mount_point(path: &Path) -> bool {
    mounts_containing(&path.to_string_lossy())
        .iter()
        .any(|p| Path::new(p) == path)
}

/// Mounts a new tmpfs at `dir` inside container `id`, holding `marker` with `content` and a
/// newline: the container side of [`TmpfsVolume::host_mount`].
pub async fn mount_inside(rt: &mut Rt, id: &str, dir: &str, content: &str) {
    let script =
        format!("mkdir -p {dir} && mount -t tmpfs none {dir} && echo {content} > {dir}/marker");
    cri::exec_ok(rt, id, &["sh", "-c", &script]).await;
}

/// A tmpfs on a temp dir serving as a volume source, made rshared (`mount --make-rshared`),
/// private, or a slave of another. Every mount under it — the test's own and those a container
/// propagated to the host — is lazily unmounted, deepest first, when it is dropped.
pub struct TmpfsVolume {
    dir: tempfile::TempDir,
}

impl TmpfsVolume {
    /// A tmpfs volume with the propagation `flags`.
    pub fn new(flags: MsFlags) -> TmpfsVolume {
        let volume = TmpfsVolume {
            dir: tempfile::Builder::new()
                .prefix("corral-e2e-vol-")
                .tempdir()
                .unwrap(),
        };
        mount_tmpfs(volume.path());
        set_propagation(volume.path(), flags);
        volume
    }

    /// An rshared volume.
    pub fn shared() -> TmpfsVolume {
        Self::new(MsFlags::MS_SHARED | MsFlags::MS_REC)
    }

    /// A private volume.
    pub fn private() -> TmpfsVolume {
        Self::new(MsFlags::MS_PRIVATE)
    }

    /// A bind mount of `master` made a slave of it (`mount --bind` + `--make-slave`).
    pub fn slave_of(master: &TmpfsVolume) -> TmpfsVolume {
        let dir = tempfile::Builder::new()
            .prefix("corral-e2e-vol-slave-")
            .tempdir()
            .unwrap();
        nix::mount::mount(
            Some(master.path()),
            dir.path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        set_propagation(dir.path(), MsFlags::MS_SLAVE);
        TmpfsVolume { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path_str(&self) -> String {
        self.path().to_string_lossy().into_owned()
    }

    /// A `sleep` container named `name` (privileged when `privileged`) with this volume at
    /// `/vol` under `propagation`.
    pub fn container(
        &self,
        image: &str,
        name: &str,
        propagation: MountPropagation,
        privileged: bool,
    ) -> ContainerConfig {
        let mut config = cri::container_config(name, image, &["sleep", "1000"]);
        if privileged {
            config = cri::privileged(config);
        }
        config.mounts = vec![cri::mount(self.path(), "/vol", propagation)];
        config
    }

    /// Mounts a new tmpfs at `<volume>/<name>` on the host, holding `marker` with `content`.
    pub fn host_mount(&self, name: &str, content: &str) -> PathBuf {
        let dir = self.path().join(name);
        mount_tmpfs_with_marker(&dir, content);
        dir
    }
}

impl Drop for TmpfsVolume {
    fn drop(&mut self) {
        let dir = self.path_str();
        for _ in 0..10 {
            if mounts_containing(&dir).is_empty() {
                break;
            }
            unmount_under(self.path());
        }
    }
}
