//! The persistent record of one pod sandbox.

use std::path::PathBuf;

use cri_proto::v1::{NamespaceMode, PodSandboxConfig};
use serde::{Deserialize, Serialize};

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    /// RunPodSandbox is under way (or was, when a crashed daemon left it so).
    Creating,
    /// The pause process runs and the network is set up.
    Ready,
    /// Stopped, or the pause process died.
    NotReady,
}

/// The pause process of a sandbox, identified by pid and start time so that a reused pid is
/// never taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRef {
    /// Host pid.
    pub pid: i32,
    /// Start time in clock ticks since boot (field 22 of `/proc/PID/stat`).
    pub start_time: u64,
}

impl PauseRef {
    /// The sandbox crate's handle to the same process.
    pub fn process(&self) -> corral_sandbox::pause::PauseProcess {
        corral_sandbox::pause::PauseProcess {
            pid: self.pid,
            start_time: self.start_time,
        }
    }

    /// The same process as corral-process names it.
    pub fn identity(&self) -> corral_process::ProcessIdentity {
        corral_process::ProcessIdentity {
            pid: self.pid,
            start_time: self.start_time,
        }
    }
}

/// Everything corrald must remember about a sandbox across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// Sandbox id (64 hex digits).
    pub id: String,
    /// The config kubelet gave.
    pub config: PodSandboxConfig,
    /// The runtime handler (RuntimeClass) the pod asked for; empty means the default.
    pub runtime_handler: String,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// Where the sandbox is in its life.
    pub state: SandboxState,
    /// The pause process, once started.
    #[serde(default)]
    pub pause: Option<PauseRef>,
    /// The pinned network namespace, when the pod has its own.
    #[serde(default)]
    pub netns_path: Option<PathBuf>,
    /// The CNI network the pod is attached to.
    #[serde(default)]
    pub cni_network: Option<String>,
    /// That network's config list as ADD got it, recorded before ADD so that a DEL after a
    /// crash during ADD (nothing cached yet) still finds the plugins, whatever the conf dir
    /// says by then.
    #[serde(default)]
    pub cni_config: Option<serde_json::Value>,
    /// The pod's IPs, first the primary one.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The pod cgroup, with the directories the runtime created for it.
    #[serde(default)]
    pub pod_cgroup: Option<corral_cgroups::PodCgroup>,
    /// The `/dev/shm` tmpfs, when the pod has its own IPC namespace.
    #[serde(default)]
    pub shm_path: Option<PathBuf>,
    /// The pinned user namespace, when the pod has its own (userns_options mode POD).
    #[serde(default)]
    pub userns_path: Option<PathBuf>,
}

impl SandboxRecord {
    /// The pod's namespace modes as kubelet asked for them (network, pid, ipc).
    pub fn namespace_modes(&self) -> NamespaceModes {
        namespace_modes(&self.config)
    }

    /// `name_namespace_uid_attempt`: what must be unique among live sandboxes.
    pub fn name_key(&self) -> String {
        name_key(&self.config)
    }

    /// The pod's pinned user namespace and its mappings, when it has one.
    pub fn userns(&self) -> Option<(PathBuf, corral_sandbox::UsernsMappings)> {
        let NamespaceModes { network, pid, ipc } = self.namespace_modes();
        let maps = crate::userns::pod_userns(&self.config, network, pid, ipc).ok()??;
        Some((self.userns_path.clone()?, maps))
    }

    /// Whether the pause process is still the one this sandbox started.
    pub fn pause_alive(&self) -> bool {
        self.pause.is_some_and(|p| p.process().is_alive())
    }
}

/// A pod's network, pid and ipc namespace modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceModes {
    pub network: NamespaceMode,
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
}

/// The pod's namespace modes from a config; absent means POD.
pub fn namespace_modes(config: &PodSandboxConfig) -> NamespaceModes {
    let opts = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    let mode = |v: Option<i32>| {
        v.and_then(|v| NamespaceMode::try_from(v).ok())
            .unwrap_or(NamespaceMode::Pod)
    };
    NamespaceModes {
        network: mode(opts.map(|o| o.network)),
        pid: mode(opts.map(|o| o.pid)),
        ipc: mode(opts.map(|o| o.ipc)),
    }
}

/// `name_namespace_uid_attempt` of a config.
pub fn name_key(config: &PodSandboxConfig) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}
