//! Pod cgroups for corral: detect the host's cgroup layout (v1, v2 or hybrid), name a pod's
//! cgroup with the cgroupfs or systemd driver, create it in every hierarchy, write pod-level
//! limits, move the pause process into a leaf, and remove exactly what was created.
//!
//! Why not cgroups-rs: the design suggested it, but it does not fit this job cleanly. Its
//! hierarchy detection reads the fixed paths `/proc/self/mountinfo` and `/sys/fs/cgroup`
//! (no injectable root, so no tests against a mock cgroupfs), treats a hybrid host as plain
//! v1 and never sees the controllers of the unified hierarchy (on the test VM `hugetlb` lives
//! only there), and creating a cgroup neither reports which directories it made nor lets a
//! caller remove only those. What a runtime needs here is mostly `mkdir`, `write` and
//! `rmdir` on known files, so this crate has its own small cgroupfs layer (`fs`), with the
//! mount table parsed by `procfs`. All calls are blocking; async callers use
//! `spawn_blocking`.
//!
//! The systemd driver names cgroups the systemd way (nested `.slice` directories,
//! `<prefix>-<name>.scope` leaves). Where systemd runs, the `*_with_systemd` / `*_with`
//! methods of [`PodCgroup`] have systemd create, limit and remove the pod slice and the pause
//! scope over D-Bus ([`systemd`]); without systemd the same names are made through cgroupfs.

pub mod dir;
mod driver;
mod enforce;
mod error;
mod fs;
mod layout;
mod pod;
mod proc;
mod resources;
pub mod stats;
pub mod systemd;
pub mod usage;

#[cfg(test)]
mod mock;

pub use driver::{expand_slice, CgroupDriver, ChildCgroupPath, SYSTEMD_SCOPE_PREFIX};
pub use enforce::{child_limits, ChildLimits};
pub use error::{CgroupError, Result};
pub use layout::{CgroupLayout, CgroupMode, CgroupVersion, Hierarchy, SELF_MOUNTINFO};
pub use pod::{child_slices, remove_unused_dirs, PodCgroup, SystemdSlice};
pub use proc::{pid_cgroup_paths, proc_cgroup_file};
pub use resources::{shares_to_weight, Resources};
