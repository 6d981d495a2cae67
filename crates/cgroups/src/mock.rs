//! A mock cgroupfs in a temp dir for unit tests: a mount table, the mount points, and the
//! root files the code reads. Interface files in cgroups appear as plain files when written.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::layout::CgroupLayout;

/// The test VM's cgroup mounts: v1 controllers each on its own mount, plus cgroup2 at
/// `/sys/fs/cgroup/unified` (whose `cgroup.controllers` is just `hugetlb`).
pub(crate) const HYBRID_MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime - ext4 /dev/vda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

/// A systemd-style v1 host: co-mounted controllers, mount flags, and the memory hierarchy
/// bind-mounted a second time (same device) elsewhere.
pub(crate) const V1_MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:28 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpuset,clone_children
31 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
32 25 0:30 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
33 25 0:31 / /sys/fs/cgroup/hugetlb rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,hugetlb
34 25 0:32 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,net_cls,net_prio
35 22 0:29 / /var/lib/memory-cgroup rw,relatime - cgroup cgroup rw,memory
";

/// A pure v2 host.
pub(crate) const V2_MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
26 22 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

/// A temp dir holding a mount table and the cgroup mount points it names.
pub(crate) struct MockCgroupFs {
    root: TempDir,
}

impl MockCgroupFs {
    /// The test VM's hybrid layout, with swap accounting.
    pub(crate) fn hybrid() -> Self {
        Self::new(HYBRID_MOUNTINFO, "hugetlb\n", true)
    }

    /// A v1 layout with co-mounted controllers, with swap accounting.
    pub(crate) fn v1() -> Self {
        Self::new(V1_MOUNTINFO, "", true)
    }

    /// A pure v2 layout.
    pub(crate) fn v2() -> Self {
        Self::new(
            V2_MOUNTINFO,
            "cpuset cpu io memory hugetlb pids rdma misc\n",
            false,
        )
    }

    /// Builds the mock: every cgroup mount point as a directory, `cgroup.controllers` for
    /// v2, the root cpuset values, and `memory.memsw.limit_in_bytes` when `memsw`.
    pub(crate) fn new(mountinfo: &str, v2_controllers: &str, memsw: bool) -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("mountinfo"), mountinfo).unwrap();
        for line in mountinfo.lines() {
            let (mount, fs) = line.split_once(" - ").unwrap();
            let mount_point = mount.split(' ').nth(4).unwrap();
            let mut fs = fs.split(' ');
            let fs_type = fs.next().unwrap();
            let options = fs.nth(1).unwrap();
            if fs_type != "cgroup" && fs_type != "cgroup2" {
                continue;
            }
            let dir = root.path().join(mount_point.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cgroup.procs"), "1\n").unwrap();
            if fs_type == "cgroup2" {
                std::fs::write(dir.join("cgroup.controllers"), v2_controllers).unwrap();
                std::fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
            } else if options.split(',').any(|o| o == "cpuset") {
                std::fs::write(dir.join("cpuset.cpus"), "0-3\n").unwrap();
                std::fs::write(dir.join("cpuset.mems"), "0\n").unwrap();
            } else if options.split(',').any(|o| o == "memory") && memsw {
                std::fs::write(
                    dir.join("memory.memsw.limit_in_bytes"),
                    "9223372036854771712\n",
                )
                .unwrap();
            }
        }
        Self { root }
    }

    /// The injected filesystem root.
    pub(crate) fn root(&self) -> &Path {
        self.root.path()
    }

    /// The mock mount table.
    pub(crate) fn mountinfo(&self) -> PathBuf {
        self.root.path().join("mountinfo")
    }

    /// The layout detected from the mock.
    pub(crate) fn layout(&self) -> CgroupLayout {
        CgroupLayout::detect_in(&self.mountinfo(), self.root()).unwrap()
    }

    /// `<root>/sys/fs/cgroup/<mount>/<relative>`.
    pub(crate) fn dir(&self, mount: &str, relative: &str) -> PathBuf {
        self.root
            .path()
            .join("sys/fs/cgroup")
            .join(mount)
            .join(relative)
    }

    /// Deletes the plain files in every cgroup below the mount points, as the kernel would
    /// on rmdir (a real cgroup directory can be removed with its interface files in it).
    pub(crate) fn strip_interface_files(&self) {
        for hierarchy in self.layout().hierarchies() {
            for entry in std::fs::read_dir(hierarchy.mount_point()).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    strip_files(&path);
                }
            }
        }
    }
}

fn strip_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            strip_files(&path);
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

/// Reads a file of the mock, trimmed.
pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}
