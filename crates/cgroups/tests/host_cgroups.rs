//! Root-only tests against the host's real cgroup filesystem. Every test works under a
//! uniquely named top-level cgroup, moves only a `sleep` it spawned, and removes everything.
#![allow(clippy::unwrap_used)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use corral_cgroups::{
    pid_cgroup_paths, CgroupDriver, CgroupError, CgroupLayout, CgroupVersion, PodCgroup, Resources,
};

/// `None` (after saying why) when the test cannot run here.
fn host_layout() -> Option<CgroupLayout> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root to create cgroups under /sys/fs/cgroup");
        return None;
    }
    Some(CgroupLayout::detect().unwrap())
}

fn random_hex() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// A `sleep` we spawned; killed and reaped when dropped.
struct Sleeper(Child);

impl Sleeper {
    fn spawn() -> Self {
        Self(Command::new("sleep").arg("300").spawn().unwrap())
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).unwrap()
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes the pod cgroup if a test fails before doing so itself.
struct RemoveOnDrop(PodCgroup);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Ok(pause) = self.0.child("pause") {
            let _ = self.0.remove_leaf(&pause.relative_path);
        }
        let _ = self.0.remove();
    }
}

/// Every directory a test may have left: the pod's created dirs and everything below them.
fn assert_all_gone(pod: &PodCgroup, extra: &[PathBuf]) {
    for dir in pod.created_dirs().iter().chain(extra) {
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
}

/// The controller name `pid_cgroup_paths` reports for a hierarchy.
fn proc_controller(version: CgroupVersion, controllers: &[String]) -> String {
    match version {
        CgroupVersion::V1 => controllers[0].clone(),
        CgroupVersion::V2 => String::new(),
    }
}

fn assert_process_in(layout: &CgroupLayout, pid: i32, relative: &Path) {
    let expected = Path::new("/").join(relative);
    let paths = pid_cgroup_paths(pid).unwrap();
    for hierarchy in layout.hierarchies() {
        let controller = proc_controller(hierarchy.version(), hierarchy.controllers());
        let (_, actual) = paths
            .iter()
            .find(|(c, _)| *c == controller)
            .unwrap_or_else(|| panic!("no {controller:?} entry in {paths:?}"));
        assert_eq!(actual, &expected, "hierarchy {controller:?}");
    }
}

fn read_pod_file(pod: &PodCgroup, controller: &str, file: &str) -> String {
    let hierarchy = pod.layout().hierarchy_for(controller).unwrap();
    let path = hierarchy.dir(pod.relative_path()).join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

#[test]
fn cgroupfs_pod_lifecycle_on_the_host() {
    let Some(layout) = host_layout() else { return };
    let top = format!("corral-test-{}", random_hex());
    let parent = format!("/{top}/pod{}", random_hex());
    let pod = PodCgroup::create(&layout, CgroupDriver::Cgroupfs, &parent).unwrap();
    let cleanup = RemoveOnDrop(pod.clone());
    assert_eq!(pod.created_dirs().len(), 2 * layout.hierarchies().len());
    assert!(pod.created_dirs().iter().all(|d| d.is_dir()));

    let mut sleeper = Sleeper::spawn();
    let pause = pod.child("pause").unwrap();
    assert_eq!(pause.oci_cgroups_path, format!("{parent}/pause"));
    pod.add_process(&pause.relative_path, sleeper.pid())
        .unwrap();
    assert_process_in(&layout, sleeper.pid(), &pause.relative_path);
    assert_eq!(
        pod.processes(&pause.relative_path).unwrap(),
        [sleeper.pid()]
    );

    pod.apply(&Resources {
        cpu_shares: Some(512),
        memory_limit_bytes: Some(64 << 20),
        pids_limit: Some(64),
        ..Resources::default()
    })
    .unwrap();
    match layout.hierarchy_for("memory").unwrap().version() {
        CgroupVersion::V1 => {
            assert_eq!(
                read_pod_file(&pod, "memory", "memory.limit_in_bytes"),
                "67108864"
            );
            assert_eq!(read_pod_file(&pod, "cpu", "cpu.shares"), "512");
        }
        CgroupVersion::V2 => {
            assert_eq!(read_pod_file(&pod, "memory", "memory.max"), "67108864");
            assert_eq!(read_pod_file(&pod, "cpu", "cpu.weight"), "20");
        }
    }
    assert_eq!(read_pod_file(&pod, "pids", "pids.max"), "64");

    sleeper.stop();
    pod.remove_leaf(&pause.relative_path).unwrap();
    pod.remove().unwrap();
    let leaves: Vec<PathBuf> = layout
        .hierarchies()
        .iter()
        .map(|h| h.dir(&pause.relative_path))
        .collect();
    assert_all_gone(&pod, &leaves);
    for hierarchy in layout.hierarchies() {
        assert!(!hierarchy.mount_point().join(&top).exists());
    }
    drop(cleanup);
}

#[test]
fn systemd_named_pod_lifecycle_on_the_host() {
    let Some(layout) = host_layout() else { return };
    let top = format!("corraltest{}", random_hex());
    let slice = format!("{top}-pod{}.slice", random_hex());
    let pod = PodCgroup::create(&layout, CgroupDriver::Systemd, &slice).unwrap();
    let _cleanup = RemoveOnDrop(pod.clone());
    assert!(pod
        .relative_path()
        .starts_with(format!("{top}.slice/{}", slice)));

    let mut sleeper = Sleeper::spawn();
    let pause = pod.child("pause").unwrap();
    assert_eq!(pause.oci_cgroups_path, format!("{slice}:corral:pause"));
    assert!(pause.relative_path.ends_with("corral-pause.scope"));
    pod.add_process(&pause.relative_path, sleeper.pid())
        .unwrap();
    assert_process_in(&layout, sleeper.pid(), &pause.relative_path);

    sleeper.stop();
    pod.remove_leaf(&pause.relative_path).unwrap();
    pod.remove().unwrap();
    for hierarchy in layout.hierarchies() {
        assert!(!hierarchy
            .mount_point()
            .join(format!("{top}.slice"))
            .exists());
    }
    assert_all_gone(&pod, &[]);
}

#[test]
fn removing_a_leaf_with_a_live_process_reports_it_then_succeeds() {
    let Some(layout) = host_layout() else { return };
    let parent = format!("/corral-test-{}/pod{}", random_hex(), random_hex());
    let pod = PodCgroup::create(&layout, CgroupDriver::Cgroupfs, &parent).unwrap();
    let _cleanup = RemoveOnDrop(pod.clone());
    let mut sleeper = Sleeper::spawn();
    let pause = pod.child("pause").unwrap();
    pod.add_process(&pause.relative_path, sleeper.pid())
        .unwrap();

    match pod.remove_leaf(&pause.relative_path) {
        Err(CgroupError::Busy { path, procs, .. }) => {
            assert!(path.ends_with(&pause.relative_path), "{}", path.display());
            assert_eq!(procs, [sleeper.pid()]);
        }
        other => panic!("expected a busy error, got {other:?}"),
    }
    // The pod cgroup holding a live leaf is kept, not an error.
    assert!(pod.remove().unwrap().is_empty());
    sleeper.stop();
    pod.remove_leaf(&pause.relative_path).unwrap();
    pod.remove().unwrap();
    assert_all_gone(&pod, &[]);
}

#[test]
fn v1_memory_and_swap_limits_can_be_raised_and_lowered() {
    let Some(layout) = host_layout() else { return };
    let swap_accounting = layout.hierarchy_for("memory").is_some_and(|h| {
        h.version() == CgroupVersion::V1
            && h.mount_point().join("memory.memsw.limit_in_bytes").exists()
    });
    if !swap_accounting {
        eprintln!("skipping: needs a v1 memory hierarchy with swap accounting");
        return;
    }
    let parent = format!("/corral-test-{}/pod{}", random_hex(), random_hex());
    let pod = PodCgroup::create(&layout, CgroupDriver::Cgroupfs, &parent).unwrap();
    let _cleanup = RemoveOnDrop(pod.clone());
    let mib = |n: i64| n << 20;
    for (limit, with_swap) in [(64, 128), (256, 512), (32, 48)] {
        pod.apply(&Resources {
            memory_limit_bytes: Some(mib(limit)),
            memory_swap_limit_bytes: Some(mib(with_swap)),
            ..Resources::default()
        })
        .unwrap();
        assert_eq!(
            read_pod_file(&pod, "memory", "memory.limit_in_bytes"),
            mib(limit).to_string()
        );
        assert_eq!(
            read_pod_file(&pod, "memory", "memory.memsw.limit_in_bytes"),
            mib(with_swap).to_string()
        );
    }
    pod.remove().unwrap();
    assert_all_gone(&pod, &[]);
}
