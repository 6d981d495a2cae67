//! How container records are shown through the CRI: ContainerStatus, ListContainers filters.

use cri_proto::v1::{
    Container, ContainerFilter, ContainerResources, ContainerStatus, ContainerStatusResponse,
    ContainerUser, ImageSpec, LinuxContainerUser,
};

use super::record::{ContainerRecord, ContainerState};
use super::ContainerEnv;

fn cri_state(record: &ContainerRecord) -> cri_proto::v1::ContainerState {
    use cri_proto::v1::ContainerState as S;
    match record.state {
        ContainerState::Created => S::ContainerCreated,
        ContainerState::Running => S::ContainerRunning,
        ContainerState::Exited => S::ContainerExited,
        ContainerState::Creating => S::ContainerUnknown,
    }
}

fn image_spec(record: &ContainerRecord) -> ImageSpec {
    record.config.image.clone().unwrap_or(ImageSpec {
        image: record.image_name.clone(),
        ..Default::default()
    })
}

/// The ListContainers item of a record.
pub(super) fn container(record: &ContainerRecord) -> Container {
    Container {
        id: record.id.clone(),
        pod_sandbox_id: record.pod_sandbox_id.clone(),
        metadata: record.config.metadata.clone(),
        image: Some(image_spec(record)),
        image_ref: record.image_id.clone(),
        state: cri_state(record) as i32,
        created_at: record.created_at,
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
        image_id: record.image_id.clone(),
    }
}

/// Whether a record passes a ListContainers filter.
pub(super) fn matches(record: &ContainerRecord, filter: Option<&ContainerFilter>) -> bool {
    let Some(f) = filter else {
        return true;
    };
    if !f.id.is_empty() && !record.id.starts_with(&f.id) {
        return false;
    }
    if !f.pod_sandbox_id.is_empty() && !record.pod_sandbox_id.starts_with(&f.pod_sandbox_id) {
        return false;
    }
    if let Some(state) = f.state.as_ref() {
        if cri_state(record) as i32 != state.state {
            return false;
        }
    }
    f.label_selector
        .iter()
        .all(|(k, v)| record.config.labels.get(k) == Some(v))
}

/// `Completed`, `OOMKilled` or `Error` for an exited container, with a message.
fn reason(record: &ContainerRecord) -> (String, String) {
    match &record.exit {
        Some(exit) if exit.oom_killed => (
            "OOMKilled".into(),
            "the container exceeded its memory limit and was killed by the kernel".into(),
        ),
        Some(exit) if exit.exit_code == 0 => ("Completed".into(), String::new()),
        Some(exit) => (
            "Error".into(),
            format!("exited with code {}", exit.exit_code),
        ),
        None => (String::new(), String::new()),
    }
}

/// The ContainerStatus response; `verbose` adds `info` with the pid and the OCI spec.
pub(super) fn status_response(
    env: &ContainerEnv,
    record: &ContainerRecord,
    verbose: bool,
) -> ContainerStatusResponse {
    let (reason, message) = reason(record);
    let status = ContainerStatus {
        id: record.id.clone(),
        metadata: record.config.metadata.clone(),
        state: cri_state(record) as i32,
        created_at: record.created_at,
        started_at: record.started_at,
        finished_at: record.exit.as_ref().map(|e| e.finished_at).unwrap_or(0),
        exit_code: record.exit.as_ref().map(|e| e.exit_code).unwrap_or(0),
        image: Some(image_spec(record)),
        image_ref: record.image_id.clone(),
        reason,
        message,
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
        mounts: record.config.mounts.clone(),
        log_path: record.log_path.to_string_lossy().into_owned(),
        resources: record.resources.clone().map(|linux| ContainerResources {
            linux: Some(linux),
            windows: None,
        }),
        image_id: record.image_id.clone(),
        user: Some(ContainerUser {
            linux: Some(running_user(record).unwrap_or_else(|| recorded_user(record))),
        }),
        stop_signal: record.config.stop_signal,
    };
    let mut info = std::collections::HashMap::new();
    if verbose {
        let dir = env.container_dir(&record.id);
        let spec: serde_json::Value = std::fs::read(dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        let value = serde_json::json!({
            "sandboxID": record.pod_sandbox_id,
            "pid": record.shim.map(|s| s.container_pid).unwrap_or(0),
            "shimPid": record.shim.map(|s| s.pid).unwrap_or(0),
            "runtimeHandler": record.runtime_handler,
            "bundle": dir,
            "cgroupsPath": record.cgroups_path,
            "stopSignal": record.stop_signal,
            "runtimeSpec": spec,
        });
        info.insert("info".to_string(), value.to_string());
    }
    ContainerStatusResponse {
        status: Some(status),
        info,
    }
}

/// The user the container was created to run as (uid, gid, all its groups).
fn recorded_user(record: &ContainerRecord) -> LinuxContainerUser {
    let user = &record.user;
    LinuxContainerUser {
        uid: i64::from(user.uid),
        gid: i64::from(user.gid),
        supplemental_groups: user.additional_gids.iter().map(|g| i64::from(*g)).collect(),
    }
}

/// The identity of the container's running init process, as the kernel has it in
/// `/proc/PID/status`: what runc really applied, which is what CRI asks for. `None` when the
/// container is not running or the pid is no longer its init (its parent is not the shim).
fn running_user(record: &ContainerRecord) -> Option<LinuxContainerUser> {
    let shim = record.shim.as_ref()?;
    if record.state != ContainerState::Running || shim.container_pid <= 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", shim.container_pid)).ok()?;
    let ids = parse_proc_status(&status)?;
    (ids.ppid == shim.pid).then_some(ids.user)
}

/// What `/proc/PID/status` says about a process's identity.
#[derive(Debug, PartialEq)]
struct ProcIds {
    ppid: i32,
    user: LinuxContainerUser,
}

/// Parses `PPid:`, the effective ids of `Uid:` and `Gid:` (real, effective, saved, fs) and
/// `Groups:` of `/proc/PID/status`.
fn parse_proc_status(text: &str) -> Option<ProcIds> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::split_whitespace)
    };
    let effective = |name: &str| field(name)?.nth(1)?.parse::<i64>().ok();
    let groups = field("Groups:")?
        .map(str::parse::<i64>)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some(ProcIds {
        ppid: field("PPid:")?.next()?.parse().ok()?,
        user: LinuxContainerUser {
            uid: effective("Uid:")?,
            gid: effective("Gid:")?,
            supplemental_groups: groups,
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_gives_the_effective_ids_and_groups() {
        let text = "Name:\tsh\nPPid:\t42\nUid:\t0\t1000\t1000\t1000\nGid:\t5\t1000\t1000\t1000\nFDSize:\t64\nGroups:\t1000 1234 50000 \n";
        let ids = parse_proc_status(text).unwrap();
        assert_eq!(ids.ppid, 42);
        assert_eq!((ids.user.uid, ids.user.gid), (1000, 1000));
        assert_eq!(ids.user.supplemental_groups, [1000, 1234, 50000]);
        let no_groups = "PPid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n";
        assert!(parse_proc_status(no_groups)
            .unwrap()
            .user
            .supplemental_groups
            .is_empty());
        assert!(parse_proc_status("Name:\tx\n").is_none());
    }
}
