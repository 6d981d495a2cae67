//! Where a sandbox's things are: its directories and pins under the state directory, and its
//! pod cgroup's parent.

use std::path::PathBuf;

use cri_proto::v1::PodSandboxConfig;

use super::PodEnv;

/// The cgroup parent kubelet asked for, or, when none is given (as by crictl without one), a
/// pod cgroup of corral's own: `/corral/pod<id>` (cgroupfs) or `corral-pod<id>.slice` (systemd).
pub(super) fn cgroup_parent(env: &PodEnv, config: &PodSandboxConfig, id: &str) -> String {
    cgroup_parent_for(env.cgroup_driver, config, id)
}

/// [`cgroup_parent`] for the cgroup driver `driver`.
pub(super) fn cgroup_parent_for(
    driver: corral_cgroups::CgroupDriver,
    config: &PodSandboxConfig,
    id: &str,
) -> String {
    let given = config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    if !given.is_empty() {
        // kubelet's systemd form `/kubepods.slice/<slice>` becomes the slice's name; a bad path
        // is kept as given for `pod_relative_path` to refuse with the reason.
        return driver.unit_parent(&given).unwrap_or(given);
    }
    let short = id.get(..12).unwrap_or(id);
    match driver {
        corral_cgroups::CgroupDriver::Cgroupfs => format!("/corral/pod{short}"),
        corral_cgroups::CgroupDriver::Systemd => format!("corral-pod{short}.slice"),
    }
}

/// `<state>/sandboxes/<id>`: hostname, hosts, resolv.conf and the shm mount point.
pub(super) fn sandbox_dir(env: &PodEnv, id: &str) -> PathBuf {
    env.config.state.join("sandboxes").join(id)
}

/// `<state>/netns/<id>`: the bind mount that keeps the pod's network namespace alive.
pub(super) fn netns_pin_path(env: &PodEnv, id: &str) -> PathBuf {
    env.config.state.join("netns").join(id)
}

/// `<state>/userns/<id>`: the bind mount that keeps the pod's user namespace alive.
pub(super) fn userns_pin_path(env: &PodEnv, id: &str) -> PathBuf {
    env.config.state.join("userns").join(id)
}
