//! Building the explanation from the live system: the caller (corrald) says which processes,
//! paths and cgroups belong to the pod; everything else is read from `/proc` and cgroupfs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use corral_cgroups::{CgroupLayout, CgroupMode};
use corral_oci::peers::{self, LiveMount, MountTable};
use corral_oci::propagation::resolve_host_path;
use cri_proto::v1::{Mount as CriMount, MountPropagation};
use procfs::process::MountInfos;
use procfs::FromRead;

use crate::process::{self, NAMESPACE_TYPES};
use crate::report::*;
use crate::{cgroup, ExplainError};

/// What the runtime knows of a pod: its identity and which processes, files and cgroups are
/// its own.
#[derive(Debug, Clone)]
pub struct PodInput {
    /// The pod's identity; `pause_pid` only while the pause runs.
    pub pod: PodFacts,
    /// The pinned network namespace, if any.
    pub netns_pin: Option<PathBuf>,
    /// The namespace modes (`POD`, `CONTAINER`, `NODE`) of network, pid and ipc.
    pub network_mode: String,
    /// See `network_mode`.
    pub pid_mode: String,
    /// See `network_mode`.
    pub ipc_mode: String,
    /// The pod's sysctls as configured.
    pub sysctls: BTreeMap<String, String>,
    /// The directory holding the pod's hostname, hosts and resolv.conf.
    pub sandbox_dir: PathBuf,
    /// The pod cgroup, when the pod has one.
    pub cgroup: Option<PodCgroupInput>,
    /// Every container of the pod.
    pub containers: Vec<ContainerInput>,
    /// Show only the container with this name or id (the others still count as siblings).
    pub only: Option<String>,
    /// The host's mount table, as CreateContainer reads it (`/proc/self/mountinfo`).
    pub host_mountinfo: PathBuf,
}

/// The pod cgroup.
#[derive(Debug, Clone)]
pub struct PodCgroupInput {
    /// `cgroupfs` or `systemd`.
    pub driver: String,
    /// The host's hierarchies.
    pub layout: CgroupLayout,
    /// The pod cgroup relative to the hierarchies' roots.
    pub relative: PathBuf,
}

/// What the runtime knows of a container.
#[derive(Debug, Clone)]
pub struct ContainerInput {
    /// `metadata.name`.
    pub name: String,
    /// The id.
    pub id: String,
    /// Its init's host pid while it runs.
    pub pid: Option<i32>,
    /// `CONTAINER_RUNNING`, ...
    pub state: String,
    /// Privileged or not.
    pub privileged: bool,
    /// The image as named.
    pub image: String,
    /// Where its root filesystem is mounted on the host.
    pub rootfs_dir: PathBuf,
    /// Its cgroup relative to the hierarchies' roots (empty: none).
    pub cgroup_relative: PathBuf,
    /// Its CRI volumes.
    pub mounts: Vec<CriMount>,
}

/// A container with its live mount table (while it runs).
struct Live<'a> {
    input: &'a ContainerInput,
    table: Option<MountTable>,
}

/// Explains a pod from the live system.
pub fn explain_pod(input: &PodInput) -> Result<Explanation, ExplainError> {
    if let Some(only) = &input.only {
        if !input
            .containers
            .iter()
            .any(|c| &c.name == only || c.id.starts_with(only.as_str()))
        {
            return Err(ExplainError::Invalid {
                field: "container",
                reason: format!(
                    "pod {} has no container named {only:?} (it has: {}); use one of those names",
                    input.pod.id,
                    input
                        .containers
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    let host = MountTable::read(&input.host_mountinfo)?;
    let live: Vec<Live<'_>> = input
        .containers
        .iter()
        .map(|c| Live {
            input: c,
            table: c
                .pid
                .and_then(|pid| MountTable::read(&process::proc_file(pid, "mountinfo")).ok()),
        })
        .collect();
    let shown = live.iter().filter(|c| match &input.only {
        Some(only) => &c.input.name == only || c.input.id.starts_with(only.as_str()),
        None => true,
    });
    let host_infos = MountInfos::from_file(&input.host_mountinfo).ok();
    let containers = shown
        .map(|c| container_facts(c, &live, &host, host_infos.as_ref()))
        .collect();
    Ok(Explanation {
        pod: input.pod.clone(),
        namespaces: namespaces(input),
        process_namespace: process_namespace(input),
        host_namespaces: [
            ("net", &input.network_mode),
            ("pid", &input.pid_mode),
            ("ipc", &input.ipc_mode),
        ]
        .iter()
        .filter(|(_, mode)| mode.as_str() == "NODE")
        .map(|(kind, _)| (*kind).to_owned())
        .collect(),
        sysctls: sysctls(input),
        pod_files: pod_files(input, &live),
        cgroups: cgroups(input),
        containers,
    })
}

/// The configured sysctls with their values inside the pod.
fn sysctls(input: &PodInput) -> Vec<SysctlFacts> {
    let names: Vec<String> = input.sysctls.keys().cloned().collect();
    let live = match input.pod.pause_pid {
        Some(pid) if !names.is_empty() => process::sysctls_of(pid, &names),
        _ => Default::default(),
    };
    input
        .sysctls
        .iter()
        .map(|(name, requested)| SysctlFacts {
            name: name.clone(),
            requested: requested.clone(),
            live: live.get(name).cloned(),
        })
        .collect()
}

/// Each distinct namespace of the pause and the running containers.
fn namespaces(input: &PodInput) -> Vec<NamespaceFacts> {
    let own = std::process::id() as i32;
    let mut members: Vec<(String, i32)> = Vec::new();
    if let Some(pid) = input.pod.pause_pid {
        members.push(("pause".to_owned(), pid));
    }
    for c in &input.containers {
        if let Some(pid) = c.pid {
            members.push((c.name.clone(), pid));
        }
    }
    let mut out = Vec::new();
    for kind in NAMESPACE_TYPES {
        let host = process::namespace_inode(own, kind);
        let mut found: Vec<NamespaceFacts> = Vec::new();
        for (name, pid) in &members {
            let Some(inode) = process::namespace_inode(*pid, kind) else {
                continue;
            };
            if let Some(known) = found.iter_mut().find(|n| n.inode == inode) {
                known.members.push(name.clone());
                continue;
            }
            let owner = if Some(inode) == host {
                "host"
            } else if name == "pause" {
                "pod"
            } else {
                "container"
            };
            let pinned_at = input
                .netns_pin
                .as_ref()
                .filter(|pin| kind == "net" && process::file_inode(pin) == Some(inode))
                .map(|pin| pin.display().to_string());
            found.push(NamespaceFacts {
                kind: kind.to_owned(),
                inode,
                owner: owner.to_owned(),
                holder_pid: *pid,
                pinned_at,
                members: vec![name.clone()],
            });
        }
        out.extend(found);
    }
    out
}

/// Who is PID 1.
fn process_namespace(input: &PodInput) -> ProcessNamespace {
    let pid1 = match input.pid_mode.as_str() {
        "POD" => match input.pod.pause_pid {
            Some(pid) => format!(
                "the pause (corral-pause, host pid {pid}) is PID 1 of the pod's shared PID \
                 namespace: containers see each other's processes and it reaps their zombies"
            ),
            None => "the pause is not running, and it was PID 1 of the pod".to_owned(),
        },
        "NODE" => "the host's init: the pod uses the host's PID namespace (hostPID)".to_owned(),
        _ => "each container's own first process is its PID 1; containers do not see each \
              other's processes"
            .to_owned(),
    };
    ProcessNamespace {
        mode: input.pid_mode.clone(),
        pid1,
    }
}

/// The pod's hostname, hosts and resolv.conf, and which containers mount them.
fn pod_files(input: &PodInput, live: &[Live<'_>]) -> Vec<PodFile> {
    let sandbox = input.sandbox_dir.file_name().map(PathBuf::from);
    ["hostname", "hosts", "resolv.conf"]
        .iter()
        .filter(|file| input.sandbox_dir.join(file).exists())
        .map(|file| {
            let container_path = PathBuf::from("/etc").join(file);
            let from_pod = sandbox.as_ref().map(|s| s.join(file));
            let mounted_in = live
                .iter()
                .filter(|c| {
                    c.table.as_ref().is_some_and(|t| {
                        t.entries().iter().any(|e| {
                            e.mount_point == container_path
                                && from_pod.as_ref().is_some_and(|p| e.root.ends_with(p))
                        })
                    })
                })
                .map(|c| c.input.name.clone())
                .collect();
            PodFile {
                container_path: container_path.display().to_string(),
                host_path: input.sandbox_dir.join(file).display().to_string(),
                mounted_in,
            }
        })
        .collect()
}

/// The pod cgroup, the pause's and each container's, with limits and usage.
fn cgroups(input: &PodInput) -> CgroupFacts {
    let Some(pod) = &input.cgroup else {
        return CgroupFacts {
            driver: String::new(),
            version: String::new(),
            pod: String::new(),
            tree: Vec::new(),
        };
    };
    let mut nodes: Vec<(String, PathBuf)> = vec![("pod".to_owned(), pod.relative.clone())];
    if let Some(pid) = input.pod.pause_pid {
        if let Some(path) = process_cgroup(pid, &pod.layout) {
            nodes.push(("pause".to_owned(), path));
        }
    }
    for c in &input.containers {
        if !c.cgroup_relative.as_os_str().is_empty() {
            nodes.push((c.name.clone(), c.cgroup_relative.clone()));
        }
    }
    let tree = nodes
        .into_iter()
        .map(|(name, path)| {
            let (limits, usage) = cgroup::read(&pod.layout, &path);
            CgroupNode {
                path: Path::new("/").join(&path).display().to_string(),
                name,
                limits,
                usage,
            }
        })
        .collect();
    CgroupFacts {
        driver: pod.driver.clone(),
        version: match pod.layout.mode() {
            CgroupMode::V1 => "v1",
            CgroupMode::V2 => "v2",
            CgroupMode::Hybrid => "hybrid",
        }
        .to_owned(),
        pod: Path::new("/").join(&pod.relative).display().to_string(),
        tree,
    }
}

/// The cgroup of `pid` in the memory hierarchy (else the unified one).
fn process_cgroup(pid: i32, layout: &CgroupLayout) -> Option<PathBuf> {
    let paths = corral_cgroups::pid_cgroup_paths(pid).ok()?;
    let unified = layout.hierarchy_for("memory").is_none();
    paths
        .into_iter()
        .find(|(controller, _)| {
            if unified {
                controller.is_empty()
            } else {
                controller == "memory"
            }
        })
        .map(|(_, path)| path)
}

fn container_facts(
    c: &Live<'_>,
    all: &[Live<'_>],
    host: &MountTable,
    host_infos: Option<&MountInfos>,
) -> ContainerFacts {
    let input = c.input;
    let mounts = input
        .mounts
        .iter()
        .map(|m| mount_facts(m, c, all, host))
        .collect();
    ContainerFacts {
        name: input.name.clone(),
        id: input.id.clone(),
        pid: input.pid,
        state: input.state.clone(),
        privileged: input.privileged,
        rootfs: rootfs(input, host_infos),
        security: input.pid.and_then(|pid| process::security(pid).ok()),
        oom_score_adj: input.pid.and_then(process::oom_score_adj),
        mounts,
    }
}

/// The overlay at the container's rootfs directory, from the host's mount table.
fn rootfs(input: &ContainerInput, host_infos: Option<&MountInfos>) -> Rootfs {
    let mount =
        host_infos.and_then(|infos| infos.iter().rfind(|m| m.mount_point == input.rootfs_dir));
    let option = |key: &str| {
        mount
            .and_then(|m| m.super_options.get(key).cloned().flatten())
            .filter(|v| !v.is_empty())
    };
    Rootfs {
        kind: mount.map_or_else(|| "not mounted".to_owned(), |m| m.fs_type.clone()),
        layers: option("lowerdir").map_or(0, |l| l.split(':').count()),
        upperdir: option("upperdir"),
        image: input.image.clone(),
    }
}

/// The CRI name of a propagation without its `PROPAGATION_` prefix.
fn requested_name(propagation: MountPropagation) -> String {
    propagation
        .as_str_name()
        .trim_start_matches("PROPAGATION_")
        .to_owned()
}

fn mount_facts(m: &CriMount, c: &Live<'_>, all: &[Live<'_>], host: &MountTable) -> MountFacts {
    let requested =
        MountPropagation::try_from(m.propagation).unwrap_or(MountPropagation::PropagationPrivate);
    let container_path = Path::new(&m.container_path);
    let source = resolve_host_path(Path::new(&m.host_path));
    let live = match (&source, &c.table) {
        (Ok(source), Some(table)) => {
            peers::analyse_live(container_path, source, requested, host, table)
                .unwrap_or_else(|e| unknown(e.to_string()))
        }
        (Ok(source), None) => {
            match peers::assess_mount(source, requested, c.input.privileged, host) {
                Ok(v) => LiveMount {
                    effective: "not running".to_owned(),
                    peer_groups: "none".to_owned(),
                    host_mount: v.host_mount,
                    host_mount_propagation: v.host_mount_propagation,
                    receives_host_mounts: v.receives_host_mounts,
                    reaches_host: v.reaches_host,
                    reason: format!("the container is not running; when it runs: {}", v.reason),
                    fix: v.fix,
                    sub_mounts: v.sub_mounts,
                    covered_by: None,
                },
                Err(e) => unknown(e.to_string()),
            }
        }
        (Err(e), _) => unknown(e.to_string()),
    };
    let siblings = match (&source, &c.table) {
        (Ok(source), Some(table)) => siblings(container_path, source, c, table, all, host),
        _ => Vec::new(),
    };
    MountFacts {
        container_path: m.container_path.clone(),
        host_path: m.host_path.clone(),
        requested: requested_name(requested),
        readonly: m.readonly,
        recursive_read_only: m.recursive_read_only,
        live,
        siblings,
    }
}

/// A mount that could not be looked at, with why.
fn unknown(reason: String) -> LiveMount {
    LiveMount {
        effective: "unknown".to_owned(),
        peer_groups: "none".to_owned(),
        host_mount: String::new(),
        host_mount_propagation: String::new(),
        receives_host_mounts: false,
        reaches_host: false,
        reason,
        fix: None,
        sub_mounts: Vec::new(),
        covered_by: None,
    }
}

/// For each other running container mounting the same files (the source, below or above it):
/// whether a mount this container makes below `container_path` appears there.
fn siblings(
    container_path: &Path,
    source: &Path,
    me: &Live<'_>,
    table: &MountTable,
    all: &[Live<'_>],
    host: &MountTable,
) -> Vec<SiblingView> {
    let Some(copy) = peers::copy_of(table, container_path, source, host) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for other in all.iter().filter(|o| o.input.id != me.input.id) {
        let Some(other_table) = &other.table else {
            continue;
        };
        for m in &other.input.mounts {
            let Ok(other_source) = resolve_host_path(Path::new(&m.host_path)) else {
                continue;
            };
            if !(other_source.starts_with(source) || source.starts_with(&other_source)) {
                continue;
            }
            let other_path = Path::new(&m.container_path);
            let receives = peers::copy_of(other_table, other_path, &other_source, host)
                .is_some_and(|theirs| peers::propagates(copy, theirs, &[host, table, other_table]));
            out.push(SiblingView {
                container: other.input.name.clone(),
                container_path: m.container_path.clone(),
                receives,
            });
        }
    }
    out
}

/// Parses a propagation as `corralctl explain-mount --propagation` takes it: the CRI name
/// with or without `PROPAGATION_`, or the Kubernetes one (`None`, `HostToContainer`,
/// `Bidirectional`), in any case.
pub fn parse_propagation(text: &str) -> Result<MountPropagation, ExplainError> {
    let upper = text.trim().to_ascii_uppercase().replace(['-', '_'], "");
    let upper = upper.strip_prefix("PROPAGATION").unwrap_or(&upper);
    match upper {
        "PRIVATE" | "NONE" => Ok(MountPropagation::PropagationPrivate),
        "HOSTTOCONTAINER" => Ok(MountPropagation::PropagationHostToContainer),
        "BIDIRECTIONAL" => Ok(MountPropagation::PropagationBidirectional),
        _ => Err(ExplainError::Invalid {
            field: "propagation",
            reason: format!(
                "unknown propagation {text:?}; use PRIVATE, HOST_TO_CONTAINER or BIDIRECTIONAL"
            ),
        }),
    }
}

/// What CreateContainer would do with a mount of `host_path` asking for `propagation`, on the
/// host whose mount table is `host_mountinfo` — through the same function CreateContainer's
/// check uses.
pub fn explain_mount(
    host_path: &str,
    propagation: &str,
    privileged: bool,
    host_mountinfo: &Path,
) -> Result<MountPreflight, ExplainError> {
    if !Path::new(host_path).is_absolute() {
        return Err(ExplainError::Invalid {
            field: "host_path",
            reason: format!("{host_path:?} must be an absolute path on the node"),
        });
    }
    let requested = parse_propagation(propagation)?;
    let source = resolve_host_path(Path::new(host_path))?;
    let host = MountTable::read(host_mountinfo)?;
    let verdict = peers::assess_mount(&source, requested, privileged, &host)?;
    Ok(MountPreflight {
        host_path: host_path.to_owned(),
        propagation: requested_name(requested),
        privileged,
        verdict,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A "pod" whose pause and only container are this test process, in the host's
    /// namespaces, with one volume of a temp dir.
    fn own_pod(dir: &Path) -> PodInput {
        let me = std::process::id() as i32;
        std::fs::write(dir.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        PodInput {
            pod: PodFacts {
                id: "p1".into(),
                name: "self".into(),
                namespace: "test".into(),
                uid: "u".into(),
                state: "SANDBOX_READY".into(),
                ips: vec![],
                runtime_handler: String::new(),
                pause_pid: Some(me),
            },
            netns_pin: None,
            network_mode: "NODE".into(),
            pid_mode: "POD".into(),
            ipc_mode: "POD".into(),
            sysctls: BTreeMap::new(),
            sandbox_dir: dir.to_path_buf(),
            cgroup: None,
            containers: vec![ContainerInput {
                name: "c".into(),
                id: "c1".into(),
                pid: Some(me),
                state: "CONTAINER_RUNNING".into(),
                privileged: false,
                image: "busybox".into(),
                rootfs_dir: dir.join("rootfs"),
                cgroup_relative: PathBuf::new(),
                mounts: vec![CriMount {
                    container_path: "/data".into(),
                    host_path: dir.display().to_string(),
                    ..Default::default()
                }],
            }],
            only: None,
            host_mountinfo: PathBuf::from("/proc/self/mountinfo"),
        }
    }

    #[test]
    fn the_live_facts_of_this_process_are_the_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let e = explain_pod(&own_pod(dir.path())).unwrap();
        assert_eq!(e.host_namespaces, vec!["net"]);
        assert!(
            e.process_namespace.pid1.contains("is PID 1"),
            "{:?}",
            e.process_namespace
        );
        let net = e.namespaces.iter().find(|n| n.kind == "net").unwrap();
        assert_eq!(net.owner, "host");
        assert_eq!(net.members, vec!["pause", "c"]);
        assert_eq!(e.pod_files.len(), 1);
        assert!(e.pod_files[0].mounted_in.is_empty());
        let c = &e.containers[0];
        assert!(c.security.is_some());
        assert!(c.oom_score_adj.is_some());
        assert_eq!(c.rootfs.kind, "not mounted");
        // The container's "copy" is found in the host's own table: not a mount at /data.
        assert_eq!(c.mounts[0].live.effective, "missing");
        assert_eq!(c.mounts[0].requested, "PRIVATE");
    }

    #[test]
    fn an_unknown_container_is_named_with_the_choices() {
        let dir = tempfile::tempdir().unwrap();
        let mut input = own_pod(dir.path());
        input.only = Some("nope".into());
        let err = explain_pod(&input).unwrap_err();
        assert!(err.is_invalid_argument());
        assert!(err.to_string().contains("it has: c"), "{err}");
        input.only = Some("c".into());
        assert_eq!(explain_pod(&input).unwrap().containers.len(), 1);
    }

    #[test]
    fn propagation_names_are_accepted_in_every_spelling() {
        for (text, want) in [
            ("PRIVATE", MountPropagation::PropagationPrivate),
            ("None", MountPropagation::PropagationPrivate),
            (
                "PROPAGATION_HOST_TO_CONTAINER",
                MountPropagation::PropagationHostToContainer,
            ),
            (
                "HostToContainer",
                MountPropagation::PropagationHostToContainer,
            ),
            (
                "host_to_container",
                MountPropagation::PropagationHostToContainer,
            ),
            ("Bidirectional", MountPropagation::PropagationBidirectional),
        ] {
            assert_eq!(parse_propagation(text).unwrap(), want, "{text}");
        }
        let err = parse_propagation("rshared").unwrap_err();
        assert!(err.is_invalid_argument());
        assert!(err.to_string().contains("HOST_TO_CONTAINER"), "{err}");
    }

    #[test]
    fn explain_mount_agrees_with_create_containers_check() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let private = root.join("private");
        std::fs::create_dir(&private).unwrap();
        let mountinfo = root.join("mountinfo");
        std::fs::write(
            &mountinfo,
            format!(
                "1 0 0:1 / / rw - ext4 a rw\n2 1 0:2 / {} rw - tmpfs b rw\n",
                private.display()
            ),
        )
        .unwrap();
        let host_path = private.join("logs").display().to_string();
        let answer = explain_mount(&host_path, "HOST_TO_CONTAINER", false, &mountinfo).unwrap();
        assert!(!answer.verdict.accepted);
        let mount = CriMount {
            container_path: "/logs".into(),
            host_path: host_path.clone(),
            propagation: MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        };
        let refused = corral_oci::propagation::check_mount(&mount, false, &mountinfo)
            .unwrap_err()
            .to_string();
        assert!(
            refused.ends_with(&answer.verdict.refusal().unwrap()),
            "{refused}"
        );
        let json = serde_json::to_value(&answer).unwrap();
        for key in [
            "accepted",
            "receives_host_mounts",
            "reaches_host",
            "host_mount",
            "host_mount_propagation",
            "reason",
            "fix",
        ] {
            assert!(json.get(key).is_some(), "{key} missing: {json}");
        }
        let err = explain_mount("relative", "PRIVATE", false, &mountinfo).unwrap_err();
        assert!(err.is_invalid_argument());
    }
}
