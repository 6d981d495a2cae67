//! Clearing what a runtime under test may leave behind — pods, processes, cgroups — and
//! checking afterwards that nothing is left running, mounted or in a cgroup.

use std::path::PathBuf;
use std::time::Duration;

use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use cri_proto::v1::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tonic::transport::Channel;

use crate::processes;

/// Prints a cleanup step on stderr: a leftover is worth seeing.
pub fn note_cleanup(message: &str) {
    eprintln!("cleanup: {message}");
}

/// Stops and removes the pods on `channel` that carry all of `labels` (every pod when
/// empty), ignoring errors.
pub async fn remove_pods_labelled(channel: Channel, labels: &[(&str, &str)]) {
    let mut rt = RuntimeServiceClient::new(channel);
    let filter = PodSandboxFilter {
        label_selector: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let request = ListPodSandboxRequest {
        filter: Some(filter),
    };
    let Ok(pods) = rt.list_pod_sandbox(request).await else {
        return;
    };
    for pod in pods.into_inner().items {
        let _ = rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await;
        let _ = rt
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.id,
            })
            .await;
    }
}

/// Stops and removes every pod of the runtime on `channel`, ignoring errors.
pub async fn remove_all_pods(channel: Channel) {
    remove_pods_labelled(channel, &[]).await;
}

/// The live processes below this bench whose command line or working directory names `dir`
/// (containerd's shims: `-address DIR/containerd.sock`, cwd in their bundle).
pub fn processes_naming(dir: &str) -> Vec<processes::Process> {
    processes::ours()
        .into_iter()
        .filter(|p| {
            let cwd = std::fs::read_link(format!("/proc/{}/cwd", p.pid)).unwrap_or_default();
            !p.is_zombie() && (p.command_line().contains(dir) || cwd.starts_with(dir))
        })
        .collect()
}

/// SIGKILLs the [`processes_naming`] `dir`; returns their pids.
pub fn kill_processes_naming(dir: &str) -> Vec<i32> {
    processes_naming(dir)
        .into_iter()
        .map(|p| {
            note_cleanup(&format!(
                "killing leftover {} ({})",
                p.pid,
                p.command_line()
            ));
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            p.pid
        })
        .collect()
}

/// SIGKILLs every process in a cgroup whose path contains `cgroup_root` (container processes
/// whose shim is gone); returns their pids.
pub fn kill_cgroup_members(cgroup_root: &str) -> Vec<i32> {
    let mut killed = Vec::new();
    for dir in corral_e2e::cgroup_dirs_containing(cgroup_root) {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if !killed.contains(&pid) {
                note_cleanup(&format!("killing leftover {pid} in {}", dir.display()));
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                killed.push(pid);
            }
        }
    }
    killed
}

/// Removes the cgroup directories whose path contains `cgroup_root`, deepest first, retrying
/// briefly while their last processes exit.
pub fn remove_cgroups(cgroup_root: &str) {
    corral_e2e::wait_for(Duration::from_secs(5), || {
        corral_e2e::remove_cgroup_dirs(cgroup_root);
        corral_e2e::cgroup_dirs_containing(cgroup_root).is_empty()
    });
}

/// What one runtime under test could have left behind.
pub struct Traces {
    /// The runtime's temp dir (mounts under it, processes naming it).
    pub dir: Option<PathBuf>,
    /// The name every cgroup of its pods has in its path.
    pub cgroup_root: String,
    /// Its CNI bridge.
    pub bridge: Option<String>,
}

/// What is still there of `traces`: one line per leftover.
pub fn leftovers(traces: &Traces) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(dir) = &traces.dir {
        let dir = dir.to_string_lossy();
        for mount in corral_e2e::mounts_containing(&dir) {
            found.push(format!("mount {mount}"));
        }
        for p in processes::all() {
            if p.command_line().contains(dir.as_ref()) {
                found.push(format!("process {} {}", p.pid, p.command_line()));
            }
        }
    }
    for cgroup in corral_e2e::cgroup_dirs_containing(&traces.cgroup_root) {
        found.push(format!("cgroup {}", cgroup.display()));
    }
    if let Some(bridge) = &traces.bridge {
        if std::path::Path::new("/sys/class/net").join(bridge).exists() {
            found.push(format!("bridge {bridge}"));
        }
    }
    found
}

/// The closing line of a run: "clean", or every leftover of `traces` and every unreaped
/// child of this bench.
pub fn report(traces: &[Traces]) -> String {
    let mut left: Vec<String> = traces.iter().flat_map(leftovers).collect();
    left.extend(unreaped_children());
    if left.is_empty() {
        "clean: no process, mount, cgroup or bridge of the runs is left".into()
    } else {
        format!("LEFT BEHIND:\n  {}", left.join("\n  "))
    }
}

/// Exited children of this bench nobody has reaped yet: once the bench exits they would pass
/// to PID 1, which on some machines never reaps them.
pub fn unreaped_children() -> Vec<String> {
    let me = std::process::id() as i32;
    processes::all()
        .into_iter()
        .filter(|p| p.ppid == me && p.is_zombie())
        .map(|p| format!("unreaped zombie {} ({})", p.pid, p.name))
        .collect()
}
