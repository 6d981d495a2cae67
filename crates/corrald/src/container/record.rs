//! The persistent record of one container.

use std::path::PathBuf;

use cri_proto::v1::{ContainerConfig, LinuxContainerResources};
use serde::{Deserialize, Serialize};

/// Where a container is in its life, as corrald last recorded it. Whether a running container
/// has exited since is read from its shim's exit file when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// CreateContainer is under way (or was, when a crashed daemon left it so).
    Creating,
    /// Created by the OCI runtime, not started.
    Created,
    /// Started.
    Running,
    /// Its init exited; exit code and time recorded.
    Exited,
}

/// The shim of a container, identified by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimRef {
    /// Host pid of corral-shim.
    pub pid: i32,
    /// Its start time (field 22 of `/proc/PID/stat`).
    pub start_time: u64,
    /// Host pid of the container's init.
    pub container_pid: i32,
}

impl ShimRef {
    /// The shim as corral-process names it.
    pub fn identity(&self) -> corral_process::ProcessIdentity {
        corral_process::ProcessIdentity {
            pid: self.pid,
            start_time: self.start_time,
        }
    }
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code, or 128 + signal.
    pub exit_code: i32,
    /// Nanoseconds since the epoch.
    pub finished_at: i64,
    /// The kernel's OOM killer ended it.
    pub oom_killed: bool,
}

/// Everything corrald must remember about a container across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Container id (64 hex digits).
    pub id: String,
    /// The sandbox it runs in.
    pub pod_sandbox_id: String,
    /// The config kubelet gave.
    pub config: ContainerConfig,
    /// The image as the request named it.
    pub image_name: String,
    /// The image id (config digest) it was created from.
    pub image_id: String,
    /// The OCI runtime handler.
    pub runtime_handler: String,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// Start time, 0 until started.
    #[serde(default)]
    pub started_at: i64,
    /// Where the container is in its life.
    pub state: ContainerState,
    /// The shim, once launched.
    #[serde(default)]
    pub shim: Option<ShimRef>,
    /// How it ended, once it has.
    #[serde(default)]
    pub exit: Option<ExitRecord>,
    /// The absolute CRI log path.
    pub log_path: PathBuf,
    /// The OCI `cgroupsPath` given to the runtime.
    #[serde(default)]
    pub cgroups_path: String,
    /// The container's cgroup relative to each hierarchy's root.
    #[serde(default)]
    pub cgroup_relative: PathBuf,
    /// Whether the overlay rootfs is mounted.
    #[serde(default)]
    pub rootfs_mounted: bool,
    /// Mount sources corrald created because they were missing (removed with the container).
    #[serde(default)]
    pub created_sources: Vec<PathBuf>,
    /// The resources now applied (as created or last updated).
    #[serde(default)]
    pub resources: Option<LinuxContainerResources>,
    /// The user the process runs as.
    #[serde(default)]
    pub user: ProcessUser,
    /// The signal StopContainer sends first (image StopSignal or the config's).
    #[serde(default)]
    pub stop_signal: String,
    /// Restored from a checkpoint archive: the runtime restored the process at create and
    /// paused it; StartContainer resumes it.
    #[serde(default)]
    pub restored: bool,
}

impl ContainerRecord {
    /// `name_attempt` within its pod: what must be unique among the pod's containers.
    pub fn name_key(&self) -> String {
        name_key(&self.pod_sandbox_id, &self.config)
    }
}

/// The uniqueness key of a container config within a pod.
pub fn name_key(pod_sandbox_id: &str, config: &ContainerConfig) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!("{}_{}_{}", pod_sandbox_id, m.name, m.attempt)
}

/// The user a container's process runs as, as its OCI spec gives it. Kept in the record as
/// the array `[uid, gid, [gids...]]` that earlier versions wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(u32, u32, Vec<u32>)", into = "(u32, u32, Vec<u32>)")]
pub struct ProcessUser {
    pub uid: u32,
    pub gid: u32,
    /// Every supplementary group, the primary one included where the spec lists it.
    pub additional_gids: Vec<u32>,
}

impl From<(u32, u32, Vec<u32>)> for ProcessUser {
    fn from((uid, gid, additional_gids): (u32, u32, Vec<u32>)) -> Self {
        ProcessUser {
            uid,
            gid,
            additional_gids,
        }
    }
}

impl From<ProcessUser> for (u32, u32, Vec<u32>) {
    fn from(user: ProcessUser) -> Self {
        (user.uid, user.gid, user.additional_gids)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_user_keeps_its_on_disk_form() {
        let user = ProcessUser {
            uid: 1000,
            gid: 100,
            additional_gids: vec![100, 5],
        };
        let json = serde_json::to_string(&user).unwrap();
        assert_eq!(json, "[1000,100,[100,5]]");
        assert_eq!(serde_json::from_str::<ProcessUser>(&json).unwrap(), user);
    }
}
