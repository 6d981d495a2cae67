//! The explanation as data: what `corralctl explain --json` prints. Field names are a stable
//! interface (scripts read them); add fields, never rename or remove one.

use corral_oci::peers::{LiveMount, MountVerdict};
use serde::{Deserialize, Serialize};

/// Everything `corralctl explain POD` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The pod's identity and state.
    pub pod: PodFacts,
    /// Each distinct namespace of the pause and the containers.
    pub namespaces: Vec<NamespaceFacts>,
    /// Who is PID 1 for the pod's processes.
    pub process_namespace: ProcessNamespace,
    /// The host namespaces the pod uses (`net`, `pid`, `ipc`).
    pub host_namespaces: Vec<String>,
    /// The pod's sysctls: as configured, and as read inside the pod's namespaces.
    pub sysctls: Vec<SysctlFacts>,
    /// The pod's hostname, hosts and resolv.conf files and where each container mounts them.
    pub pod_files: Vec<PodFile>,
    /// The pod's cgroups with their limits and usage.
    pub cgroups: CgroupFacts,
    /// The containers shown (all, or the one asked for).
    pub containers: Vec<ContainerFacts>,
}

/// The pod's identity and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodFacts {
    /// The sandbox id.
    pub id: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `SANDBOX_READY` or `SANDBOX_NOTREADY`.
    pub state: String,
    /// The pod's IPs.
    pub ips: Vec<String>,
    /// The runtime handler.
    pub runtime_handler: String,
    /// The pause process's pid on the host, when it runs.
    pub pause_pid: Option<i32>,
}

/// One namespace and who is in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceFacts {
    /// `net`, `ipc`, `uts`, `pid`, `mnt`, `user` or `cgroup`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The namespace's inode (`ls -l /proc/PID/ns`).
    pub inode: u64,
    /// `host` (the host's own), `pod` (held by the pause) or `container`.
    pub owner: String,
    /// A process that keeps it alive.
    pub holder_pid: i32,
    /// Where it is bind-mounted to outlive its processes, if anywhere.
    pub pinned_at: Option<String>,
    /// `pause` and the names of the containers in it.
    pub members: Vec<String>,
}

/// Who is PID 1 for the pod's processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessNamespace {
    /// `POD` (shareProcessNamespace), `CONTAINER` or `NODE` (hostPID).
    pub mode: String,
    /// Who is PID 1, in words.
    pub pid1: String,
}

/// One of the pod's sysctls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlFacts {
    /// `net.ipv4.ip_unprivileged_port_start`.
    pub name: String,
    /// The value the pod config asks for.
    pub requested: String,
    /// The value read in the pause's network, IPC and UTS namespaces (`None`: unreadable,
    /// or the pause is not running).
    pub live: Option<String>,
}

/// A file the pod provides to its containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodFile {
    /// `/etc/hostname`, `/etc/hosts` or `/etc/resolv.conf`.
    pub container_path: String,
    /// The pod's file on the host.
    pub host_path: String,
    /// The containers that have it mounted there.
    pub mounted_in: Vec<String>,
}

/// The pod's cgroups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupFacts {
    /// `cgroupfs` or `systemd`.
    pub driver: String,
    /// `v1`, `v2` or `hybrid`.
    pub version: String,
    /// The pod cgroup, relative to the hierarchies' roots.
    pub pod: String,
    /// The pod cgroup, then the pause's and each container's.
    pub tree: Vec<CgroupNode>,
}

/// One cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupNode {
    /// Relative to the hierarchies' roots.
    pub path: String,
    /// `pod`, `pause` or the container's name.
    pub name: String,
    /// Its limits (`null`: unlimited or not set).
    pub limits: CgroupLimits,
    /// What it uses now.
    pub usage: CgroupUsage,
}

/// A cgroup's limits; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLimits {
    /// v1 `memory.limit_in_bytes`, v2 `memory.max`.
    pub memory_bytes: Option<u64>,
    /// v1 `cpu.cfs_quota_us`, v2 `cpu.max`'s first field.
    pub cpu_quota_us: Option<u64>,
    /// v1 `cpu.cfs_period_us`, v2 `cpu.max`'s second field.
    pub cpu_period_us: Option<u64>,
    /// v1 `cpu.shares` or v2 `cpu.weight`.
    pub cpu_shares_or_weight: Option<u64>,
    /// `pids.max`.
    pub pids_max: Option<u64>,
}

/// A cgroup's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupUsage {
    /// v1 `memory.usage_in_bytes`, v2 `memory.current`.
    pub memory_bytes: Option<u64>,
    /// `pids.current`.
    pub pids: Option<u64>,
}

/// One container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerFacts {
    /// `metadata.name`.
    pub name: String,
    /// The container id.
    pub id: String,
    /// Its init's pid on the host, while it runs.
    pub pid: Option<i32>,
    /// `CONTAINER_CREATED`, `CONTAINER_RUNNING`, ...
    pub state: String,
    /// Whether it is privileged.
    pub privileged: bool,
    /// Its root filesystem.
    pub rootfs: Rootfs,
    /// Its security settings in effect, from `/proc/PID/status`.
    pub security: Option<Security>,
    /// `/proc/PID/oom_score_adj`.
    pub oom_score_adj: Option<i32>,
    /// Its CRI volumes.
    pub mounts: Vec<MountFacts>,
}

/// A container's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rootfs {
    /// `overlay`, or what is mounted there.
    #[serde(rename = "type")]
    pub kind: String,
    /// The number of lower (image) layers.
    pub layers: usize,
    /// The writable layer.
    pub upperdir: Option<String>,
    /// The image as named.
    pub image: String,
}

/// Security settings in effect for a container's init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    /// Effective capabilities (`CAP_CHOWN`, ...).
    pub capabilities: Vec<String>,
    /// How many capabilities the bounding set holds.
    pub bounding_set_size: usize,
    /// `disabled`, `strict` or `filter`.
    pub seccomp: String,
    /// How many seccomp filters are installed.
    pub seccomp_filters: u32,
    /// Whether no_new_privs is set.
    pub no_new_privs: bool,
    /// The AppArmor profile (`unconfined`, `cri-default (enforce)`), `None` without AppArmor.
    pub apparmor: Option<String>,
}

/// One CRI volume of a container, as it really is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountFacts {
    /// Where it is in the container.
    pub container_path: String,
    /// The source on the host, as requested.
    pub host_path: String,
    /// `PRIVATE`, `HOST_TO_CONTAINER` or `BIDIRECTIONAL`.
    pub requested: String,
    /// Mounted read-only.
    pub readonly: bool,
    /// Read-only recursively.
    pub recursive_read_only: bool,
    /// What the mount tables say.
    #[serde(flatten)]
    pub live: LiveMount,
    /// Whether mounts this container makes below `container_path` reach its siblings.
    pub siblings: Vec<SiblingView>,
}

/// Whether a sibling container's mount of the same files receives this container's mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiblingView {
    /// The sibling's name.
    pub container: String,
    /// Its mount point of the same files.
    pub container_path: String,
    /// Whether a mount made here below the mount point appears there.
    pub receives: bool,
}

/// `corralctl explain-mount`: what CreateContainer would do with a mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPreflight {
    /// The source as given.
    pub host_path: String,
    /// `PRIVATE`, `HOST_TO_CONTAINER` or `BIDIRECTIONAL`.
    pub propagation: String,
    /// Whether the container would be privileged.
    pub privileged: bool,
    /// The verdict.
    #[serde(flatten)]
    pub verdict: MountVerdict,
}
