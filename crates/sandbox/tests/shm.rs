//! Root tests of the pod's /dev/shm tmpfs.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use corral_sandbox::mounts::is_mount_point;
use corral_sandbox::shm::{mount_shm, unmount, DEFAULT_SHM_SIZE_BYTES};

/// Unmounts when dropped, so a failing test leaves no mount behind.
struct ShmGuard(PathBuf);

impl Drop for ShmGuard {
    fn drop(&mut self) {
        if let Err(error) = unmount(&self.0) {
            eprintln!("cannot unmount {}: {error}", self.0.display());
        }
    }
}

fn mounts_at(path: &Path) -> Vec<String> {
    let path = path.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|line| line.split(' ').nth(4) == Some(path))
        .map(str::to_owned)
        .collect()
}

#[test]
fn shm_is_a_restricted_tmpfs_of_the_given_size() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping shm_is_a_restricted_tmpfs_of_the_given_size: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let shm = dir
        .path()
        .canonicalize()
        .unwrap()
        .join("sandbox")
        .join("shm");
    mount_shm(&shm, DEFAULT_SHM_SIZE_BYTES).unwrap();
    let _guard = ShmGuard(shm.clone());
    assert!(is_mount_point(&shm).unwrap());

    let mounts = mounts_at(&shm);
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    let fields: Vec<&str> = mounts[0].split(' ').collect();
    let options: Vec<&str> = fields[5].split(',').collect();
    for option in ["nosuid", "nodev", "noexec"] {
        assert!(options.contains(&option), "{option} missing: {}", mounts[0]);
    }
    let after_separator = &fields[fields.iter().position(|f| *f == "-").unwrap() + 1..];
    assert_eq!(after_separator[0], "tmpfs");
    assert!(after_separator[2].contains("size=65536k"), "{}", mounts[0]);
    let mode = std::fs::metadata(&shm).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o1777);

    mount_shm(&shm, DEFAULT_SHM_SIZE_BYTES).unwrap();
    assert_eq!(mounts_at(&shm).len(), 1, "a second mount is not stacked");

    unmount(&shm).unwrap();
    assert!(!is_mount_point(&shm).unwrap());
    unmount(&shm).unwrap();
    unmount(&dir.path().join("never-created")).unwrap();
}

#[test]
fn a_zero_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(mount_shm(&dir.path().join("shm"), 0).is_err());
}
