//! How sandbox records are shown through the CRI: PodSandboxStatus, ListPodSandbox filters.

use cri_proto::v1::{
    LinuxPodSandboxStatus, Namespace, NamespaceOption, PodIp, PodSandbox, PodSandboxFilter,
    PodSandboxNetworkStatus, PodSandboxState, PodSandboxStatus, PodSandboxStatusResponse,
};

use super::record::{SandboxRecord, SandboxState};
use super::PodEnv;

fn cri_state(record: &SandboxRecord, alive: bool) -> PodSandboxState {
    if record.state == SandboxState::Ready && alive {
        PodSandboxState::SandboxReady
    } else {
        PodSandboxState::SandboxNotready
    }
}

/// The ListPodSandbox item of a record whose pause is `alive` or not.
pub(super) fn pod_sandbox(record: &SandboxRecord, alive: bool) -> PodSandbox {
    PodSandbox {
        id: record.id.clone(),
        metadata: record.config.metadata.clone(),
        state: cri_state(record, alive) as i32,
        created_at: record.created_at,
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
        runtime_handler: record.runtime_handler.clone(),
    }
}

/// Whether a record, whose pause is `alive` or not, passes a ListPodSandbox filter: id prefix,
/// state, every selector label.
pub(super) fn matches(
    record: &SandboxRecord,
    alive: bool,
    filter: Option<&PodSandboxFilter>,
) -> bool {
    let Some(f) = filter else {
        return true;
    };
    if !f.id.is_empty() && !record.id.starts_with(&f.id) {
        return false;
    }
    if let Some(state) = f.state.as_ref() {
        if cri_state(record, alive) as i32 != state.state {
            return false;
        }
    }
    f.label_selector
        .iter()
        .all(|(k, v)| record.config.labels.get(k) == Some(v))
}

/// The PodSandboxStatus response; `verbose` adds `info` as crictl shows it for other runtimes.
pub(super) fn status_response(
    env: &PodEnv,
    record: &SandboxRecord,
    alive: bool,
    verbose: bool,
) -> PodSandboxStatusResponse {
    let super::NamespaceModes { network, pid, ipc } = record.namespace_modes();
    let mut ips = record.ips.iter();
    let status = PodSandboxStatus {
        id: record.id.clone(),
        metadata: record.config.metadata.clone(),
        state: cri_state(record, alive) as i32,
        created_at: record.created_at,
        network: Some(PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| PodIp { ip: ip.clone() }).collect(),
        }),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(NamespaceOption {
                    network: network as i32,
                    pid: pid as i32,
                    ipc: ipc as i32,
                    userns_options: record
                        .config
                        .linux
                        .as_ref()
                        .and_then(|l| l.security_context.as_ref())
                        .and_then(|s| s.namespace_options.as_ref())
                        .and_then(|o| o.userns_options.clone()),
                    ..Default::default()
                }),
            }),
        }),
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
        runtime_handler: record.runtime_handler.clone(),
    };
    let mut info = std::collections::HashMap::new();
    if verbose {
        info.insert(
            "info".to_string(),
            verbose_info(env, record, alive).to_string(),
        );
    }
    PodSandboxStatusResponse {
        status: Some(status),
        info,
        containers_statuses: Vec::new(),
        timestamp: crate::ids::now_nanos(),
    }
}

fn verbose_info(env: &PodEnv, record: &SandboxRecord, alive: bool) -> serde_json::Value {
    let pid = record.pause.map(|p| p.pid).unwrap_or(0);
    let cgroup = record
        .pod_cgroup
        .as_ref()
        .and_then(|c| c.child(&record.id).ok())
        .map(|leaf| leaf.cgroupfs_path());
    let namespaces: serde_json::Map<String, serde_json::Value> = if alive {
        ["net", "ipc", "uts", "pid"]
            .iter()
            .map(|ns| {
                let path = format!("/proc/{pid}/ns/{ns}");
                let link = std::fs::read_link(&path)
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (ns.to_string(), serde_json::Value::String(link))
            })
            .collect()
    } else {
        serde_json::Map::new()
    };
    serde_json::json!({
        "pid": pid,
        "processStatus": if alive { "running" } else { "stopped" },
        "netNamespaceClosed": record.netns_path.is_none(),
        "netnsPath": record.netns_path,
        "cgroupPath": cgroup,
        "cgroupParent": record.pod_cgroup.as_ref().map(|c| c.cgroup_parent().to_string()),
        "namespaces": namespaces,
        "runtimeHandler": record.runtime_handler,
        "cniNetwork": record.cni_network,
        "sandboxDir": super::paths::sandbox_dir(env, &record.id),
        "config": record.config,
    })
}

/// A loose check that a string is an IPv4 or IPv6 CIDR.
pub(super) fn looks_like_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => len <= 32,
        Ok(std::net::IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert!(looks_like_cidr("10.88.0.0/16"));
        assert!(looks_like_cidr("fd00::/64"));
        assert!(!looks_like_cidr("10.88.0.0"));
        assert!(!looks_like_cidr("10.88.0.0/33"));
        assert!(!looks_like_cidr("x/8"));
    }
}
