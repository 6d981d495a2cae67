//! What the sandbox lifecycle asks of the host, behind three small traits so that the
//! RunPodSandbox / StopPodSandbox / RemovePodSandbox logic (plan, record, undo) runs in unit
//! tests without root: the pause process and the mounts that hold a pod's namespaces
//! ([`Pauses`]), the pod network ([`PodNetwork`]) and the pod cgroup ([`PodCgroups`]).
//!
//! Each method is one host operation and returns its library's own error, so the handlers map
//! errors exactly as they did when they called the libraries directly. The real
//! implementations here are thin; the fakes are in `crate::testing`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use corral_cgroups::{CgroupDriver, CgroupLayout, PodCgroup, Resources};
use corral_cni::{NetworkConfigList, RuntimeConf};
use corral_sandbox::pause::{PauseProcess, PauseSpec};

pub(crate) use super::record::PauseRef;
use crate::error::CriResult;

/// The pause process, and the mounts that keep a pod's user namespace and `/dev/shm`.
pub(crate) trait Pauses: Send + Sync {
    /// Starts a pause with `spec`, marked as the sandbox directory `dir`'s.
    fn spawn(&self, spec: &PauseSpec, dir: &Path) -> corral_sandbox::Result<PauseProcess>;
    /// Stops the recorded pause (SIGTERM, then SIGKILL) and reaps it.
    fn stop(&self, pause: PauseRef) -> CriResult<()>;
    /// Stops the pauses marked as `dir`'s that no record names (a `Creating` sandbox's).
    fn stop_marked(&self, dir: &Path) -> CriResult<()>;
    /// Pins the user namespace of `pid` at `pin`.
    fn pin_userns(&self, pid: i32, pin: &Path) -> corral_sandbox::Result<()>;
    /// Removes a user namespace pin; a missing one is fine.
    fn unpin_userns(&self, pin: &Path) -> corral_sandbox::Result<()>;
    /// Mounts the pod's `/dev/shm` tmpfs at `path`.
    fn mount_shm(&self, path: &Path) -> corral_sandbox::Result<()>;
    /// Unmounts it; a path that is not a mount point is fine.
    fn unmount_shm(&self, path: &Path) -> corral_sandbox::Result<()>;
}

/// The pod network: the pinned network namespace and the CNI plugins.
pub(crate) trait PodNetwork: Send + Sync {
    /// Pins the network namespace of `pid` at `pin`.
    fn pin_netns(&self, pid: i32, pin: &Path) -> corral_sandbox::Result<()>;
    /// Removes a network namespace pin; a missing one is fine.
    fn unpin_netns(&self, pin: &Path) -> corral_sandbox::Result<()>;
    /// CNI ADD of the whole list (rolled back by the library on failure); the pod's IPs.
    fn add(&self, net: &NetworkConfigList, rt: &RuntimeConf) -> corral_cni::Result<Vec<IpAddr>>;
    /// CNI DEL of `network`, with the config cached at ADD, else `recorded`, else the conf
    /// dir's when it still has that name.
    fn del(
        &self,
        network: &str,
        recorded: Option<&serde_json::Value>,
        rt: &RuntimeConf,
    ) -> corral_cni::Result<()>;
    /// Waits for CNI plugins a killed daemon left running on the pin to finish.
    fn settle(&self, pin: &Path);
}

/// The pod cgroup and the pause's leaf in it.
pub(crate) trait PodCgroups: Send + Sync {
    /// Creates the pod cgroup named by the CRI `cgroup_parent`.
    fn create(&self, parent: &str) -> corral_cgroups::Result<PodCgroup>;
    /// Applies pod-level limits.
    fn apply(&self, cgroup: &PodCgroup, resources: &Resources) -> corral_cgroups::Result<()>;
    /// Moves `pid` into the leaf `leaf` of the pod cgroup.
    fn add_process(&self, cgroup: &PodCgroup, leaf: &Path, pid: i32) -> corral_cgroups::Result<()>;
    /// Removes the leaf `leaf` of the pod cgroup.
    fn remove_leaf(&self, cgroup: &PodCgroup, leaf: &Path) -> corral_cgroups::Result<()>;
}

/// The host's pause launcher and mounts.
pub(crate) struct HostPauses {
    /// The `corral-pause` binary.
    pub binary: PathBuf,
}

impl Pauses for HostPauses {
    fn spawn(&self, spec: &PauseSpec, dir: &Path) -> corral_sandbox::Result<PauseProcess> {
        corral_sandbox::pause::spawn_pause_owned(&self.binary, spec, dir)
    }

    fn stop(&self, pause: PauseRef) -> CriResult<()> {
        super::teardown::stop_pause(pause.process())
    }

    fn stop_marked(&self, dir: &Path) -> CriResult<()> {
        super::teardown::stop_marked_pauses(dir)
    }

    fn pin_userns(&self, pid: i32, pin: &Path) -> corral_sandbox::Result<()> {
        corral_sandbox::userns::pin(pid, pin)
    }

    fn unpin_userns(&self, pin: &Path) -> corral_sandbox::Result<()> {
        corral_sandbox::userns::unpin(pin)
    }

    fn mount_shm(&self, path: &Path) -> corral_sandbox::Result<()> {
        corral_sandbox::shm::mount_shm(path, corral_sandbox::shm::DEFAULT_SHM_SIZE_BYTES)
    }

    fn unmount_shm(&self, path: &Path) -> corral_sandbox::Result<()> {
        corral_sandbox::shm::unmount(path)
    }
}

/// The host's CNI plugins.
pub(crate) struct CniNetwork {
    pub cni: corral_cni::Cni,
    /// The CNI conf dir, read for DEL when nothing was cached or recorded.
    pub conf_dir: PathBuf,
}

impl PodNetwork for CniNetwork {
    fn pin_netns(&self, pid: i32, pin: &Path) -> corral_sandbox::Result<()> {
        corral_sandbox::netns::NetnsPin::pin(pid, pin).map(|_| ())
    }

    fn unpin_netns(&self, pin: &Path) -> corral_sandbox::Result<()> {
        corral_sandbox::netns::NetnsPin::unpin(pin)
    }

    fn add(&self, net: &NetworkConfigList, rt: &RuntimeConf) -> corral_cni::Result<Vec<IpAddr>> {
        self.cni.add(net, rt).map(|result| result.ips())
    }

    fn del(
        &self,
        network: &str,
        recorded: Option<&serde_json::Value>,
        rt: &RuntimeConf,
    ) -> corral_cni::Result<()> {
        super::network::cni_del(&self.cni, &self.conf_dir, network, recorded, rt)
    }

    fn settle(&self, pin: &Path) {
        super::network::settle_cni(pin)
    }
}

/// The host's cgroupfs, or systemd's units where systemd manages the pod slices.
pub(crate) struct HostCgroups {
    pub layout: CgroupLayout,
    pub driver: CgroupDriver,
    pub systemd: Option<Arc<dyn corral_cgroups::systemd::UnitManager>>,
}

impl PodCgroups for HostCgroups {
    fn create(&self, parent: &str) -> corral_cgroups::Result<PodCgroup> {
        match self.systemd.as_deref() {
            Some(units) => PodCgroup::create_with_systemd(&self.layout, parent, units),
            None => PodCgroup::create(&self.layout, self.driver, parent),
        }
    }

    fn apply(&self, cgroup: &PodCgroup, resources: &Resources) -> corral_cgroups::Result<()> {
        cgroup.apply_with(resources, self.systemd.as_deref())
    }

    fn add_process(&self, cgroup: &PodCgroup, leaf: &Path, pid: i32) -> corral_cgroups::Result<()> {
        cgroup.add_process_with(leaf, pid, self.systemd.as_deref())
    }

    fn remove_leaf(&self, cgroup: &PodCgroup, leaf: &Path) -> corral_cgroups::Result<()> {
        cgroup.remove_leaf_with(leaf, self.systemd.as_deref())
    }
}
