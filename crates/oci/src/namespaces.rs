//! The namespaces of a container: the pod's network, IPC and UTS namespaces joined through the
//! pause process (or the host's for NODE), a mount namespace of its own, and the PID namespace
//! its mode asks for.

use std::path::PathBuf;

use cri_proto::v1::NamespaceMode;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use crate::error::SpecError;
use crate::SandboxContext;

/// `/proc/<pid>/ns/<kind>`.
fn ns_path(pid: i32, kind: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/{kind}"))
}

fn namespace(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path);
    ns
}

/// The namespaces of a container in `sandbox` whose PID namespace mode is `pid_mode`.
///
/// - network: the pinned netns (`netns_path`, else the pause's) unless the pod uses the host's;
/// - UTS: the pause's, unless the pod uses the host's network (then the host's, as kubelet
///   expects of host-network pods);
/// - IPC: the pause's unless NODE;
/// - PID: POD joins the pause's (the pod must have one), CONTAINER makes a new one, NODE uses the
///   host's, TARGET joins `/proc/<target_pid>/ns/pid`;
/// - mount: always a new one.
pub(crate) fn container_namespaces(
    sandbox: &SandboxContext,
    pid_mode: NamespaceMode,
    target_pid: Option<i32>,
    target_id: &str,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let pause = sandbox.pause_pid;
    let mut namespaces = Vec::with_capacity(5);
    if sandbox.network != NamespaceMode::Node {
        let path = sandbox
            .netns_path
            .clone()
            .unwrap_or_else(|| ns_path(pause, "net"));
        namespaces.push(namespace(LinuxNamespaceType::Network, Some(path)));
        namespaces.push(namespace(
            LinuxNamespaceType::Uts,
            Some(ns_path(pause, "uts")),
        ));
    }
    if sandbox.ipc != NamespaceMode::Node {
        namespaces.push(namespace(
            LinuxNamespaceType::Ipc,
            Some(ns_path(pause, "ipc")),
        ));
    }
    const PID_FIELD: &str = "linux.security_context.namespace_options.pid";
    match pid_mode {
        NamespaceMode::Pod => {
            if sandbox.pid != NamespaceMode::Pod {
                return Err(SpecError::invalid(
                    PID_FIELD,
                    format!(
                        "POD shares the pod's PID namespace, but the pod has none (its PID mode \
                         is {}); use CONTAINER",
                        sandbox.pid.as_str_name()
                    ),
                ));
            }
            namespaces.push(namespace(
                LinuxNamespaceType::Pid,
                Some(ns_path(pause, "pid")),
            ));
        }
        NamespaceMode::Container => namespaces.push(namespace(LinuxNamespaceType::Pid, None)),
        NamespaceMode::Node => {}
        NamespaceMode::Target => {
            let pid = target_pid.ok_or_else(|| {
                SpecError::invalid(
                    PID_FIELD,
                    format!(
                        "TARGET needs the running target container (target_id {target_id:?}); \
                         start it first"
                    ),
                )
            })?;
            namespaces.push(namespace(
                LinuxNamespaceType::Pid,
                Some(ns_path(pid, "pid")),
            ));
        }
    }
    namespaces.push(namespace(LinuxNamespaceType::Mount, None));
    Ok(namespaces)
}

/// A new cgroup namespace, rooted at the container's cgroup: on cgroup v2 hosts every
/// unprivileged container gets one, as containerd's and CRI-O's do, so that it sees its own
/// cgroup as `/` (`/proc/self/cgroup` reads `0::/`, `/sys/fs/cgroup` is its own cgroup) and
/// not the node's cgroup tree. On v1 and hybrid hosts, and for privileged containers, the
/// host's is kept (what runtimes do there; tools in privileged pods expect the host's paths).
pub(crate) fn cgroup_namespace() -> LinuxNamespace {
    namespace(LinuxNamespaceType::Cgroup, None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sandbox(network: NamespaceMode, pid: NamespaceMode, ipc: NamespaceMode) -> SandboxContext {
        SandboxContext {
            sandbox_id: "sb".to_owned(),
            pause_pid: 42,
            netns_path: (network == NamespaceMode::Pod)
                .then(|| PathBuf::from("/run/corral/netns/sb")),
            network,
            pid,
            ipc,
            hostname: "pod".to_owned(),
            sandbox_dir: PathBuf::from("/run/corral/sandboxes/sb"),
            shm_path: None,
            privileged: false,
            log_directory: String::new(),
        }
    }

    fn paths(namespaces: &[LinuxNamespace]) -> Vec<(LinuxNamespaceType, Option<String>)> {
        namespaces
            .iter()
            .map(|ns| {
                (
                    ns.typ(),
                    ns.path().as_ref().map(|p| p.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    fn some(path: &str) -> Option<String> {
        Some(path.to_owned())
    }

    #[test]
    fn a_pod_network_container_joins_the_pause_and_gets_its_own_pid_and_mount() {
        let sb = sandbox(
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Pod,
        );
        let ns = container_namespaces(&sb, NamespaceMode::Container, None, "").unwrap();
        assert_eq!(
            paths(&ns),
            [
                (LinuxNamespaceType::Network, some("/run/corral/netns/sb")),
                (LinuxNamespaceType::Uts, some("/proc/42/ns/uts")),
                (LinuxNamespaceType::Ipc, some("/proc/42/ns/ipc")),
                (LinuxNamespaceType::Pid, None),
                (LinuxNamespaceType::Mount, None),
            ]
        );
    }

    #[test]
    fn without_a_pin_the_pause_netns_is_joined() {
        let mut sb = sandbox(
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Pod,
        );
        sb.netns_path = None;
        let ns = container_namespaces(&sb, NamespaceMode::Container, None, "").unwrap();
        assert_eq!(
            paths(&ns)[0],
            (LinuxNamespaceType::Network, some("/proc/42/ns/net"))
        );
    }

    #[test]
    fn node_modes_use_the_hosts_namespaces() {
        let sb = sandbox(
            NamespaceMode::Node,
            NamespaceMode::Node,
            NamespaceMode::Node,
        );
        let ns = container_namespaces(&sb, NamespaceMode::Node, None, "").unwrap();
        assert_eq!(paths(&ns), [(LinuxNamespaceType::Mount, None)]);
    }

    #[test]
    fn pid_pod_joins_the_pause_pid_namespace() {
        let sb = sandbox(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod);
        let ns = container_namespaces(&sb, NamespaceMode::Pod, None, "").unwrap();
        assert!(paths(&ns).contains(&(LinuxNamespaceType::Pid, some("/proc/42/ns/pid"))));
    }

    #[test]
    fn pid_pod_in_a_pod_without_one_is_refused() {
        let sb = sandbox(
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Pod,
        );
        let err = container_namespaces(&sb, NamespaceMode::Pod, None, "").unwrap_err();
        assert!(err.is_invalid_argument());
        assert!(err.to_string().contains("namespace_options.pid"), "{err}");
    }

    #[test]
    fn pid_target_joins_the_target_container() {
        let sb = sandbox(
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Pod,
        );
        let ns = container_namespaces(&sb, NamespaceMode::Target, Some(777), "abc").unwrap();
        assert!(paths(&ns).contains(&(LinuxNamespaceType::Pid, some("/proc/777/ns/pid"))));
        let err = container_namespaces(&sb, NamespaceMode::Target, None, "abc").unwrap_err();
        assert!(err.to_string().contains("\"abc\""), "{err}");
    }
}
