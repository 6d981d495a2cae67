//! Which cgroup hierarchies the host has and where they are mounted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use procfs::process::{MountInfo, MountInfos};
use procfs::FromRead;
use serde::{Deserialize, Serialize};

use crate::error::{CgroupError, Result};
use crate::fs;

/// Where the running process's mount table is.
pub const SELF_MOUNTINFO: &str = "/proc/self/mountinfo";

/// Mount options of a v1 cgroup mount that are flags, not controllers.
const V1_MOUNT_FLAGS: &[&str] = &[
    "rw",
    "ro",
    "all",
    "none",
    "noprefix",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
    "favordynmods",
];

/// The version of one cgroup hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// A legacy hierarchy (`cgroup` filesystem), one or more controllers per mount.
    V1,
    /// The unified hierarchy (`cgroup2` filesystem).
    V2,
}

/// How the host arranges its cgroup hierarchies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only v1 hierarchies.
    V1,
    /// Only the unified hierarchy, usually at `/sys/fs/cgroup`.
    V2,
    /// v1 hierarchies plus a unified one (usually `/sys/fs/cgroup/unified`) holding whatever
    /// controllers no v1 hierarchy took.
    Hybrid,
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    version: CgroupVersion,
    mount_point: PathBuf,
    controllers: Vec<String>,
}

impl Hierarchy {
    /// Builds a hierarchy description by hand (tests, or callers with their own detection).
    pub fn new(version: CgroupVersion, mount_point: PathBuf, controllers: Vec<String>) -> Self {
        Self {
            version,
            mount_point,
            controllers,
        }
    }

    /// v1 or v2.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Where the hierarchy is mounted (after applying the injected filesystem root).
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// The controllers of this hierarchy, sorted: for v1 the mount's controllers (a named
    /// hierarchy shows as `name=systemd`), for v2 the content of the root's `cgroup.controllers`.
    pub fn controllers(&self) -> &[String] {
        &self.controllers
    }

    /// Whether `controller` is attached to this hierarchy.
    pub fn has_controller(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// The directory of the cgroup at `relative` (relative to the hierarchy's root; a leading
    /// `/` is ignored, so `/kubepods/pod1` and `kubepods/pod1` name the same cgroup).
    pub fn dir(&self, relative: &Path) -> PathBuf {
        self.mount_point
            .join(relative.strip_prefix("/").unwrap_or(relative))
    }
}

/// The host's cgroup hierarchies, as found in a mount table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLayout {
    mode: CgroupMode,
    hierarchies: Vec<Hierarchy>,
}

impl CgroupLayout {
    /// Detects the layout from [`SELF_MOUNTINFO`] on the real root filesystem.
    pub fn detect() -> Result<Self> {
        Self::detect_in(Path::new(SELF_MOUNTINFO), Path::new("/"))
    }

    /// Detects the layout from the mount table at `mountinfo`, with every mount point taken
    /// relative to `fs_root` (`/` on a real host, a temp dir holding a mock cgroupfs in tests:
    /// a mount at `/sys/fs/cgroup/memory` is then looked for at `<fs_root>/sys/fs/cgroup/memory`).
    pub fn detect_in(mountinfo: &Path, fs_root: &Path) -> Result<Self> {
        let mounts = MountInfos::from_file(mountinfo).map_err(|source| CgroupError::ProcFile {
            path: mountinfo.to_path_buf(),
            source,
        })?;

        // A hierarchy may be mounted more than once (bind mounts); keep one mount per
        // superblock, preferring one that shows the hierarchy's root.
        let mut by_device: Vec<&MountInfo> = Vec::new();
        let mut index_of: HashMap<&str, usize> = HashMap::new();
        for mount in mounts.iter() {
            if mount.fs_type != "cgroup" && mount.fs_type != "cgroup2" {
                continue;
            }
            match index_of.get(mount.majmin.as_str()) {
                Some(&i) => {
                    if by_device[i].root != "/" && mount.root == "/" {
                        by_device[i] = mount;
                    }
                }
                None => {
                    index_of.insert(&mount.majmin, by_device.len());
                    by_device.push(mount);
                }
            }
        }

        let mut hierarchies = Vec::with_capacity(by_device.len());
        for mount in by_device {
            let relative_mount = mount
                .mount_point
                .strip_prefix("/")
                .unwrap_or(&mount.mount_point);
            let mount_point = fs_root.join(relative_mount);
            let hierarchy = if mount.fs_type == "cgroup2" {
                let controllers_file = mount_point.join("cgroup.controllers");
                let mut controllers: Vec<String> = fs::read_optional(&controllers_file)?
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                controllers.sort();
                Hierarchy::new(CgroupVersion::V2, mount_point, controllers)
            } else {
                Hierarchy::new(CgroupVersion::V1, mount_point, v1_controllers(mount))
            };
            hierarchies.push(hierarchy);
        }
        Self::from_hierarchies(hierarchies).ok_or_else(|| CgroupError::NoCgroupMounts {
            path: mountinfo.to_path_buf(),
        })
    }

    /// Builds a layout from hierarchies found some other way; `None` when the list is empty.
    pub fn from_hierarchies(hierarchies: Vec<Hierarchy>) -> Option<Self> {
        let has_v1 = hierarchies.iter().any(|h| h.version == CgroupVersion::V1);
        let has_v2 = hierarchies.iter().any(|h| h.version == CgroupVersion::V2);
        let mode = match (has_v1, has_v2) {
            (true, true) => CgroupMode::Hybrid,
            (true, false) => CgroupMode::V1,
            (false, true) => CgroupMode::V2,
            (false, false) => return None,
        };
        Some(Self { mode, hierarchies })
    }

    /// Pure v1, pure v2 or hybrid.
    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    /// Every hierarchy, in mount-table order.
    pub fn hierarchies(&self) -> &[Hierarchy] {
        &self.hierarchies
    }

    /// The unified (v2) hierarchy, if the host mounts one.
    pub fn unified(&self) -> Option<&Hierarchy> {
        self.unified_index().map(|i| &self.hierarchies[i])
    }

    /// The `cgroup.procs` file of the cgroup a process is in, given its cgroups as
    /// [`crate::pid_cgroup_paths`] reads them: in the unified hierarchy if there is one, else in
    /// the first v1 hierarchy whose controller names it. `None` when none matches.
    pub fn procs_file_of(&self, cgroups: &[(String, PathBuf)]) -> Option<PathBuf> {
        let in_unified = self.unified().and_then(|h| {
            let (_, path) = cgroups
                .iter()
                .find(|(controller, _)| controller.is_empty())?;
            Some(h.dir(path))
        });
        let in_v1 = || {
            self.hierarchies
                .iter()
                .filter(|h| h.version == CgroupVersion::V1)
                .find_map(|h| {
                    let (_, path) = cgroups.iter().find(|(controller, _)| {
                        !controller.is_empty() && h.has_controller(controller)
                    })?;
                    Some(h.dir(path))
                })
        };
        in_unified
            .or_else(in_v1)
            .map(|dir| dir.join("cgroup.procs"))
    }

    /// Index into [`CgroupLayout::hierarchies`] of the unified hierarchy.
    pub(crate) fn unified_index(&self) -> Option<usize> {
        self.hierarchies
            .iter()
            .position(|h| h.version == CgroupVersion::V2)
    }

    /// The hierarchy that has `controller` (`"memory"`, `"hugetlb"`, `"name=systemd"`): a v1
    /// hierarchy if one has it, else the unified one if its `cgroup.controllers` lists it.
    pub fn hierarchy_for(&self, controller: &str) -> Option<&Hierarchy> {
        self.hierarchy_index_for(controller)
            .map(|i| &self.hierarchies[i])
    }

    /// Index into [`CgroupLayout::hierarchies`] of the hierarchy that has `controller`.
    pub(crate) fn hierarchy_index_for(&self, controller: &str) -> Option<usize> {
        let with_controller = |version| {
            self.hierarchies
                .iter()
                .position(|h| h.version == version && h.has_controller(controller))
        };
        with_controller(CgroupVersion::V1).or_else(|| with_controller(CgroupVersion::V2))
    }

    /// The processes in the cgroup at `relative` (relative to each hierarchy's root), merged
    /// over every hierarchy, sorted. A hierarchy where the cgroup does not exist adds nothing.
    pub fn processes(&self, relative: &Path) -> Result<Vec<i32>> {
        let relative = fs::relative_cgroup_path(relative)?;
        let mut pids = Vec::new();
        for hierarchy in &self.hierarchies {
            pids.extend(fs::read_procs(&hierarchy.dir(&relative))?);
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }
}

/// The controllers (and `name=` of a named hierarchy) of a v1 mount, sorted.
fn v1_controllers(mount: &MountInfo) -> Vec<String> {
    let mut controllers: Vec<String> = mount
        .super_options
        .iter()
        .filter_map(|(key, value)| match (key.as_str(), value) {
            ("name", Some(name)) => Some(format!("name={name}")),
            (_, Some(_)) => None,
            (flag, None) if V1_MOUNT_FLAGS.contains(&flag) => None,
            (controller, None) => Some(controller.to_owned()),
        })
        .collect();
    controllers.sort();
    controllers
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::mock::{self, MockCgroupFs};

    fn names(layout: &CgroupLayout) -> Vec<(CgroupVersion, String, Vec<String>)> {
        layout
            .hierarchies()
            .iter()
            .map(|h| {
                let mount = h.mount_point().file_name().unwrap();
                (
                    h.version(),
                    mount.to_string_lossy().into_owned(),
                    h.controllers().to_vec(),
                )
            })
            .collect()
    }

    #[test]
    fn hybrid_layout_of_the_test_vm() {
        let mock = MockCgroupFs::hybrid();
        let layout = mock.layout();
        assert_eq!(layout.mode(), CgroupMode::Hybrid);
        let v1 = |mount: &str, controller: &str| {
            (
                CgroupVersion::V1,
                mount.to_owned(),
                vec![controller.to_owned()],
            )
        };
        assert_eq!(
            names(&layout),
            vec![
                v1("cpu", "cpu"),
                v1("cpuacct", "cpuacct"),
                v1("cpuset", "cpuset"),
                v1("memory", "memory"),
                v1("devices", "devices"),
                v1("freezer", "freezer"),
                v1("blkio", "blkio"),
                v1("pids", "pids"),
                v1("systemd", "name=systemd"),
                (
                    CgroupVersion::V2,
                    "unified".to_owned(),
                    vec!["hugetlb".to_owned()]
                ),
            ]
        );
        assert_eq!(
            layout.hierarchy_for("hugetlb").unwrap().mount_point(),
            mock.dir("unified", "")
        );
        assert_eq!(
            layout.hierarchy_for("memory").unwrap().mount_point(),
            mock.dir("memory", "")
        );
        assert_eq!(
            layout.unified().unwrap().mount_point(),
            mock.dir("unified", "")
        );
        assert!(layout.hierarchy_for("io").is_none());
    }

    #[test]
    fn a_process_cgroup_procs_file_is_in_the_unified_hierarchy_else_a_v1_one() {
        let cgroups = |lines: &[(&str, &str)]| -> Vec<(String, PathBuf)> {
            lines
                .iter()
                .map(|(c, p)| (c.to_string(), PathBuf::from(p)))
                .collect()
        };
        let hybrid = MockCgroupFs::hybrid();
        let seen = cgroups(&[("memory", "/a"), ("", "/system.slice/corrald.service")]);
        assert_eq!(
            hybrid.layout().procs_file_of(&seen),
            Some(hybrid.dir("unified", "system.slice/corrald.service/cgroup.procs"))
        );
        let v1 = MockCgroupFs::v1();
        let seen = cgroups(&[("name=systemd", "/x"), ("pids", "/y")]);
        let file = v1.layout().procs_file_of(&seen).unwrap();
        assert!(
            file.ends_with("x/cgroup.procs") || file.ends_with("y/cgroup.procs"),
            "{file:?}"
        );
        assert_eq!(v1.layout().procs_file_of(&[]), None);
    }

    #[test]
    fn v1_layout_with_co_mounted_controllers_and_a_bind_mount() {
        let mock = MockCgroupFs::v1();
        let layout = mock.layout();
        assert_eq!(layout.mode(), CgroupMode::V1);
        assert!(layout.unified().is_none());
        let strings = |s: &[&str]| s.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(&layout),
            vec![
                (
                    CgroupVersion::V1,
                    "systemd".to_owned(),
                    strings(&["name=systemd"])
                ),
                (
                    CgroupVersion::V1,
                    "cpu,cpuacct".to_owned(),
                    strings(&["cpu", "cpuacct"])
                ),
                (CgroupVersion::V1, "cpuset".to_owned(), strings(&["cpuset"])),
                (CgroupVersion::V1, "memory".to_owned(), strings(&["memory"])),
                (CgroupVersion::V1, "pids".to_owned(), strings(&["pids"])),
                (
                    CgroupVersion::V1,
                    "hugetlb".to_owned(),
                    strings(&["hugetlb"])
                ),
                (
                    CgroupVersion::V1,
                    "net_cls,net_prio".to_owned(),
                    strings(&["net_cls", "net_prio"])
                ),
            ]
        );
        assert_eq!(
            layout.hierarchy_for("cpu").unwrap(),
            layout.hierarchy_for("cpuacct").unwrap()
        );
    }

    #[test]
    fn pure_v2_layout() {
        let mock = MockCgroupFs::v2();
        let layout = mock.layout();
        assert_eq!(layout.mode(), CgroupMode::V2);
        assert_eq!(layout.hierarchies().len(), 1);
        let unified = layout.unified().unwrap();
        assert_eq!(unified.mount_point(), mock.dir("", ""));
        assert_eq!(
            unified.controllers(),
            ["cpu", "cpuset", "hugetlb", "io", "memory", "misc", "pids", "rdma"]
        );
        assert_eq!(layout.hierarchy_for("memory"), Some(unified));
    }

    #[test]
    fn a_mount_table_without_cgroups_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mountinfo = dir.path().join("mountinfo");
        std::fs::write(
            &mountinfo,
            "22 1 0:21 / / rw,relatime - ext4 /dev/vda1 rw\n",
        )
        .unwrap();
        let error = CgroupLayout::detect_in(&mountinfo, dir.path()).unwrap_err();
        assert!(
            matches!(error, CgroupError::NoCgroupMounts { .. }),
            "{error}"
        );
    }

    #[test]
    fn a_missing_mount_table_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = CgroupLayout::detect_in(&dir.path().join("nope"), dir.path()).unwrap_err();
        assert!(error.to_string().contains("nope"), "{error}");
    }

    #[test]
    fn processes_are_merged_over_hierarchies() {
        let mock = MockCgroupFs::hybrid();
        let layout = mock.layout();
        for (mount, procs) in [("memory", "12\n7\n"), ("pids", "7\n"), ("unified", "30\n")] {
            let dir = mock.dir(mount, "pod/leaf");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cgroup.procs"), procs).unwrap();
        }
        assert_eq!(
            layout.processes(Path::new("/pod/leaf")).unwrap(),
            vec![7, 12, 30]
        );
        assert_eq!(
            layout.processes(Path::new("pod/none")).unwrap(),
            Vec::<i32>::new()
        );
        assert!(layout.processes(Path::new("pod/../../etc")).is_err());
        std::fs::write(mock.dir("memory", "pod/leaf/cgroup.procs"), "x\n").unwrap();
        let error = layout.processes(Path::new("pod/leaf")).unwrap_err();
        assert!(error.to_string().contains("\"x\" is not a pid"), "{error}");
        assert_eq!(mock::read(&mock.dir("pids", "pod/leaf/cgroup.procs")), "7");
    }

    #[test]
    fn layout_survives_serde() {
        let layout = MockCgroupFs::hybrid().layout();
        let json = serde_json::to_string(&layout).unwrap();
        assert_eq!(serde_json::from_str::<CgroupLayout>(&json).unwrap(), layout);
    }
}
