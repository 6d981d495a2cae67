//! Root tests of network namespace pins (build the pause first: `cargo build -p corral-pause`).

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};

use corral_sandbox::mounts::is_mount_point;
use corral_sandbox::{ns_inode_of_path, NetnsPin, PauseSpec, SandboxError};
use nix::sched::CloneFlags;
use support::{read_in_namespace, setup, RunningPause};

/// Unpins when dropped, so a failing test leaves no mount behind.
struct PinGuard(PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Err(error) = NetnsPin::unpin(&self.0) {
            eprintln!("cannot unpin {}: {error}", self.0.display());
        }
    }
}

#[test]
fn a_pin_outlives_the_pause_and_unpin_removes_it() {
    let Some(binary) = setup("a_pin_outlives_the_pause_and_unpin_removes_it") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pin_path = dir.path().join("netns").join("pod-a");
    let pause = RunningPause::spawn(
        &binary,
        &PauseSpec {
            new_net: true,
            sysctls: vec![("net.ipv4.ip_unprivileged_port_start".into(), "81".into())],
            ..PauseSpec::default()
        },
    );
    let pin = NetnsPin::pin(pause.pid, &pin_path).unwrap();
    let _guard = PinGuard(pin_path.clone());
    assert_eq!(pin.path(), pin_path);
    let namespace = pause.ns_inode("net").unwrap();
    assert_eq!(pin.inode().unwrap(), namespace);
    assert_eq!(ns_inode_of_path(&pin_path).unwrap(), namespace);

    drop(pause);
    assert!(is_mount_point(&pin_path).unwrap());
    assert_eq!(pin.inode().unwrap(), namespace);
    let port_start = read_in_namespace(
        &pin_path,
        CloneFlags::CLONE_NEWNET,
        "/proc/sys/net/ipv4/ip_unprivileged_port_start",
    );
    assert_eq!(
        port_start, "81",
        "the pinned namespace is the pod's, still configured"
    );

    NetnsPin::unpin(&pin_path).unwrap();
    assert!(!pin_path.exists());
    assert!(!is_mount_point(&pin_path).unwrap());
    NetnsPin::unpin(&pin_path).unwrap();
    NetnsPin::unpin(Path::new("/nonexistent/corral/netns/x")).unwrap();
}

#[test]
fn pinning_onto_an_existing_path_is_refused() {
    let Some(binary) = setup("pinning_onto_an_existing_path_is_refused") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pin_path = dir.path().join("pod-b");
    let pause = RunningPause::spawn(
        &binary,
        &PauseSpec {
            new_net: true,
            ..PauseSpec::default()
        },
    );
    let _pin = NetnsPin::pin(pause.pid, &pin_path).unwrap();
    let _guard = PinGuard(pin_path.clone());
    let error = NetnsPin::pin(pause.pid, &pin_path).unwrap_err();
    assert!(
        matches!(error, SandboxError::PinPathExists { .. }),
        "{error}"
    );
    assert_eq!(
        NetnsPin::at(&pin_path).inode().unwrap(),
        pause.ns_inode("net").unwrap(),
        "the first pin is untouched"
    );
}

#[test]
fn unpin_removes_a_file_that_was_never_mounted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale");
    std::fs::write(&path, "").unwrap();
    if nix::unistd::geteuid().is_root() {
        NetnsPin::unpin(&path).unwrap();
        assert!(!path.exists());
    } else {
        eprintln!("skipping unpin_removes_a_file_that_was_never_mounted: umount2 needs root");
    }
}
