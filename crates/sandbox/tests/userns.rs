//! Root tests of the pod user namespace: the pause creating and holding it, its pin, and
//! idmapped mounts made with it (build the pause first: `cargo build -p corral-pause`).

#![allow(clippy::unwrap_used)]

mod support;

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use corral_sandbox::mounts::is_mount_point;
use corral_sandbox::{idmap, ns_inode_of_path, userns, IdMapping, PauseSpec, UsernsMappings};
use nix::mount::{umount2, MntFlags};
use support::{read_trimmed, setup, status_field, RunningPause};

const HOST_ID: u32 = 200_000;

fn mappings() -> UsernsMappings {
    let map = IdMapping {
        container_id: 0,
        host_id: HOST_ID,
        length: 65536,
    };
    UsernsMappings { uid: map, gid: map }
}

/// Unpins (or unmounts) when dropped, so a failing test leaves no mount behind.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in self.0.iter().rev() {
            let _ = umount2(path, MntFlags::MNT_DETACH);
            let _ = userns::unpin(path);
        }
    }
}

/// The inode of the user namespace that owns namespace file `ns_file`.
fn owning_userns_inode(ns_file: &Path) -> u64 {
    let ns = File::open(ns_file).unwrap();
    // SAFETY: NS_GET_USERNS takes no argument and returns a new descriptor or -1.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), libc::NS_GET_USERNS) };
    assert!(fd >= 0, "NS_GET_USERNS on {}", ns_file.display());
    // SAFETY: the ioctl returned a new descriptor that nothing else owns.
    let owner = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    owner.metadata().unwrap().ino()
}

fn holds_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    let effective = status_field(i32::try_from(std::process::id()).unwrap(), "CapEff").unwrap();
    u64::from_str_radix(&effective, 16).unwrap() & (1 << CAP_SYS_RESOURCE) != 0
}

#[test]
fn the_pause_holds_a_user_namespace_that_owns_the_pods_other_namespaces() {
    let Some(binary) =
        setup("the_pause_holds_a_user_namespace_that_owns_the_pods_other_namespaces")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("userns").join("pod");
    let pause = RunningPause::spawn(
        &binary,
        &PauseSpec {
            new_net: true,
            new_ipc: true,
            new_uts: true,
            new_pid: true,
            hostname: Some("userns-pod".into()),
            sysctls: vec![("net.ipv4.ip_unprivileged_port_start".into(), "81".into())],
            userns: Some(mappings()),
            ..PauseSpec::default()
        },
    );
    let maps = read_trimmed(&format!("/proc/{}/uid_map", pause.pid));
    let fields: Vec<&str> = maps.split_whitespace().collect();
    assert_eq!(fields, ["0", "200000", "65536"], "uid_map {maps:?}");
    let maps = read_trimmed(&format!("/proc/{}/gid_map", pause.pid));
    assert_eq!(maps.split_whitespace().collect::<Vec<_>>(), fields);

    // The pause runs as the unprivileged 65535 of its namespace: host id 200000 + 65535.
    let uid = status_field(pause.pid, "Uid").unwrap();
    assert!(
        uid.split_whitespace().all(|id| id == "265535"),
        "Uid: {uid}"
    );
    // Lowered before the user namespace existed, where it still could be (with
    // CAP_SYS_RESOURCE; without it the pause keeps ours, the lowest it may have).
    let expected = if holds_cap_sys_resource() {
        "-998".to_owned()
    } else {
        read_trimmed("/proc/self/oom_score_adj")
    };
    assert_eq!(
        read_trimmed(&format!("/proc/{}/oom_score_adj", pause.pid)),
        expected
    );

    let userns = pause.ns_inode("user").unwrap();
    assert_ne!(
        userns,
        ns_inode_of_path(Path::new("/proc/self/ns/user")).unwrap()
    );
    for ns in ["net", "ipc", "uts", "pid"] {
        assert_eq!(
            owning_userns_inode(&pause.ns_path(ns)),
            userns,
            "the pod's {ns} namespace is owned by its user namespace"
        );
    }

    userns::pin(pause.pid, &pin).unwrap();
    let _cleanup = Cleanup(vec![pin.clone()]);
    drop(pause);
    assert_eq!(
        ns_inode_of_path(&pin).unwrap(),
        userns,
        "the pin outlives the pause"
    );
    userns::unpin(&pin).unwrap();
    assert!(!pin.exists());
    userns::unpin(&pin).unwrap();
}

#[test]
fn idmapped_mounts_show_files_as_the_pods_ids_and_go_without_a_trace() {
    let Some(binary) = setup("idmapped_mounts_show_files_as_the_pods_ids_and_go_without_a_trace")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("userns");
    let pause = RunningPause::spawn(
        &binary,
        &PauseSpec {
            userns: Some(mappings()),
            ..PauseSpec::default()
        },
    );
    userns::pin(pause.pid, &pin).unwrap();
    let mut cleanup = Cleanup(vec![pin.clone()]);
    drop(pause);

    // A directory of the host's filesystem, and a file, through idmapped copies.
    let source = dir.path().join("volume");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("data"), "x").unwrap();
    let target = dir.path().join("staged");
    std::fs::create_dir(&target).unwrap();
    idmap::mount_idmapped(&source, &target, &pin, true, false).unwrap();
    cleanup.0.push(target.clone());
    let file_target = dir.path().join("staged-file");
    std::fs::write(&file_target, "").unwrap();
    idmap::mount_idmapped(&source.join("data"), &file_target, &pin, false, true).unwrap();
    cleanup.0.push(file_target.clone());

    let uid_of = |path: &Path| std::fs::metadata(path).unwrap().uid();
    assert_eq!(uid_of(&source.join("data")), 0);
    assert_eq!(uid_of(&target.join("data")), HOST_ID);
    assert_eq!(std::fs::metadata(&target).unwrap().gid(), HOST_ID);
    assert_eq!(uid_of(&file_target), HOST_ID);
    assert_eq!(std::fs::read_to_string(&file_target).unwrap(), "x");
    let write = std::fs::OpenOptions::new().append(true).open(&file_target);
    assert_eq!(
        write.unwrap_err().raw_os_error(),
        Some(libc::EROFS),
        "the read-only copy refuses writes"
    );

    idmap::unmount(&target).unwrap();
    idmap::unmount(&file_target).unwrap();
    assert!(!is_mount_point(&target).unwrap());
    assert!(!is_mount_point(&file_target).unwrap());
    assert_eq!(uid_of(&file_target), 0);
    idmap::unmount(&target).unwrap();
}

#[test]
fn a_mapping_the_kernel_refuses_is_reported() {
    let Some(binary) = setup("a_mapping_the_kernel_refuses_is_reported") else {
        return;
    };
    // Host id 4294967295 is no id: the kernel refuses the map line.
    let bad = IdMapping {
        container_id: 0,
        host_id: u32::MAX,
        length: 1,
    };
    let error = corral_sandbox::spawn_pause(
        &binary,
        &PauseSpec {
            new_net: true,
            userns: Some(UsernsMappings {
                uid: bad,
                gid: mappings().gid,
            }),
            ..PauseSpec::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("uid_map"), "{error}");
}
