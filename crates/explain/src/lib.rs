//! `corralctl explain`: what a pod really is, read from the live system.
//!
//! corrald says which processes, files and cgroups belong to a pod ([`PodInput`]); everything
//! shown is then read from the kernel: the pause's and each container's `/proc/PID/ns/*`
//! (which namespaces they share and who holds them), `/proc/PID/mountinfo` of the host and of
//! each container (the peer groups that decide whether a later mount propagates, through
//! [`corral_oci::peers`], the same code CreateContainer's mount check runs), `/proc/PID/status`
//! (capabilities, seccomp, no_new_privs), the AppArmor label, `oom_score_adj` and the cgroup
//! files. [`explain_mount`] answers, before a pod exists, what CreateContainer would do with a
//! mount. [`render`] lays an explanation out as a tree for a 100-column terminal; the
//! [`report`] types are the stable `--json` schema.

mod cgroup;
mod error;
mod gather;
pub mod process;
pub mod render;
pub mod report;

pub use error::ExplainError;
pub use gather::{
    explain_mount, explain_pod, parse_propagation, ContainerInput, PodCgroupInput, PodInput,
};
