//! Start, stop, remove, update, exec, log reopening of containers, the undo of a failed create,
//! and the start-up reconciliation. Blocking code: runs on `spawn_blocking` threads.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use corral_store::CONTAINERS;
use cri_proto::v1::{ContainerEventType, ExecSyncResponse, LinuxContainerResources};

use super::record::{ContainerRecord, ContainerState, ExitRecord};
use super::ContainerEnv;
use crate::error::{CriError, CriResult, FirstError};

/// How long a container gets after SIGKILL before StopContainer reports failure.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long the shim gets to finish (drain logs, write its exit file) after the container died.
const SHIM_EXIT_WAIT: Duration = Duration::from_secs(5);

fn load(env: &ContainerEnv, id: &str) -> CriResult<ContainerRecord> {
    env.store
        .get(CONTAINERS, id)?
        .ok_or_else(|| CriError::NotFound(format!("container {id} not found")))
}

fn save(env: &ContainerEnv, record: &ContainerRecord) -> CriResult<()> {
    env.store.put(CONTAINERS, &record.id, record)?;
    Ok(())
}

/// Brings a record up to date with its shim: an exit recorded since is taken over; a shim that
/// died without recording one leaves the container exited with code 255.
pub(super) fn refresh(env: &ContainerEnv, record: ContainerRecord) -> CriResult<ContainerRecord> {
    Ok(refresh_shared(env, &record)?.unwrap_or(record))
}

/// [`refresh`] of a shared record: the updated record when the container has just been found
/// exited, `None` when `record` is still right (most lists copy nothing).
pub(super) fn refresh_shared(
    env: &ContainerEnv,
    record: &ContainerRecord,
) -> CriResult<Option<ContainerRecord>> {
    if !matches!(
        record.state,
        ContainerState::Created | ContainerState::Running
    ) {
        return Ok(None);
    }
    let dir = env.container_dir(&record.id);
    let exit = corral_runtime::read_exit(&dir)
        .map_err(|e| CriError::internal("read container exit status", e))?;
    let exit = match exit {
        Some(info) => Some(exit_record(&info)),
        None if !corral_runtime::shim_alive(&dir) => {
            // Read again: the shim may have written the file just before exiting.
            Some(match corral_runtime::read_exit(&dir).ok().flatten() {
                Some(info) => exit_record(&info),
                None => ExitRecord {
                    exit_code: 255,
                    finished_at: crate::pod::now_nanos(),
                    oom_killed: false,
                },
            })
        }
        None => None,
    };
    let Some(exit) = exit else {
        return Ok(None);
    };
    let mut record = record.clone();
    record.exit = Some(exit);
    record.state = ContainerState::Exited;
    save(env, &record)?;
    env.events.container(
        &record.id,
        &record.pod_sandbox_id,
        ContainerEventType::ContainerStoppedEvent,
    );
    Ok(Some(record))
}

/// What corrald keeps of a shim's exit file.
fn exit_record(info: &corral_runtime::ExitInfo) -> ExitRecord {
    ExitRecord {
        exit_code: info.exit_code,
        finished_at: info.finished_at_ns,
        oom_killed: info.oom_killed,
    }
}

/// The record of `id`, refreshed.
pub(super) fn refreshed(env: &ContainerEnv, id: &str) -> CriResult<ContainerRecord> {
    refresh(env, load(env, id)?)
}

/// StartContainer.
pub(super) fn start(env: &ContainerEnv, id: &str) -> CriResult<()> {
    let mut record = refreshed(env, id)?;
    match record.state {
        ContainerState::Created => {}
        ContainerState::Running => return Ok(()),
        other => {
            return Err(CriError::FailedPrecondition(format!(
                "container {id} is {other:?}, only a created container can be started"
            )))
        }
    }
    // Taken before the runtime starts the process: a container that exits at once has its
    // exit (and finished_at) recorded by the shim before `start` returns here.
    let started_at = crate::pod::now_nanos();
    env.runtime(&record.runtime_handler)?
        .start(id)
        .map_err(|e| CriError::internal("StartContainer: OCI runtime start", e))?;
    record.state = ContainerState::Running;
    record.started_at = started_at;
    save(env, &record)?;
    env.events.container(
        id,
        &record.pod_sandbox_id,
        ContainerEventType::ContainerStartedEvent,
    );
    Ok(())
}

/// StopContainer.
pub(super) fn stop(env: &ContainerEnv, id: &str, timeout_secs: i64) -> CriResult<()> {
    let record = refreshed(env, id)?;
    if !matches!(
        record.state,
        ContainerState::Created | ContainerState::Running
    ) {
        return Ok(());
    }
    let runtime = env.runtime(&record.runtime_handler)?;
    let dir = env.container_dir(id);
    if timeout_secs > 0 {
        let signal = parse_signal(&record.stop_signal).unwrap_or(libc::SIGTERM);
        runtime
            .kill(id, signal, false)
            .map_err(|e| CriError::internal("StopContainer: send stop signal", e))?;
        let grace = Duration::from_secs(u64::try_from(timeout_secs).unwrap_or(0));
        if wait_exited(&dir, grace) {
            refreshed(env, id)?;
            return Ok(());
        }
        tracing::info!(container_id = %id, ?grace, "container did not stop in time; sending SIGKILL");
    }
    runtime
        .kill(id, libc::SIGKILL, true)
        .map_err(|e| CriError::internal("StopContainer: SIGKILL", e))?;
    if !wait_exited(&dir, KILL_WAIT) {
        return Err(CriError::Internal(format!(
            "StopContainer: container {id} still running {KILL_WAIT:?} after SIGKILL"
        )));
    }
    refreshed(env, id)?;
    Ok(())
}

/// Waits until the shim has recorded the exit or is gone.
fn wait_exited(dir: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if corral_runtime::read_exit(dir).ok().flatten().is_some()
            || !corral_runtime::shim_alive(dir)
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// RemoveContainer: returns the name key when there was a container.
pub(super) fn remove(env: &ContainerEnv, id: &str) -> CriResult<Option<String>> {
    let Some(mut record) = env.store.get::<ContainerRecord>(CONTAINERS, id)? else {
        return Ok(None);
    };
    let key = record.name_key();
    if let Err(e) = destroy(env, &mut record) {
        save(env, &record)?;
        return Err(e);
    }
    env.store.delete(CONTAINERS, id)?;
    if matches!(
        record.state,
        ContainerState::Created | ContainerState::Running
    ) {
        // Killed by the removal: it stopped, then went.
        env.events.container(
            id,
            &record.pod_sandbox_id,
            ContainerEventType::ContainerStoppedEvent,
        );
    }
    env.events.container(
        id,
        &record.pod_sandbox_id,
        ContainerEventType::ContainerDeletedEvent,
    );
    Ok(Some(key))
}

/// Frees everything a container holds: process, runtime state, shim, rootfs, mount sources it
/// created, cgroup, directory. Every step is tried; the first error is returned.
pub(super) fn destroy(env: &ContainerEnv, record: &mut ContainerRecord) -> CriResult<()> {
    let mut errors = FirstError::default();
    let dir = env.container_dir(&record.id);
    if let Some(shim) = record.shim {
        match env.runtime(&record.runtime_handler) {
            Ok(runtime) => {
                if corral_runtime::shim_alive(&dir) {
                    errors.note(
                        runtime
                            .kill(&record.id, libc::SIGKILL, true)
                            .map_err(|e| CriError::internal("kill container", e)),
                    );
                    if !wait_exited(&dir, KILL_WAIT) {
                        errors.note(Err(CriError::Internal(format!(
                            "container {} still running after SIGKILL",
                            record.id
                        ))));
                    }
                }
                errors.note(
                    runtime
                        .delete(&record.id, true)
                        .map_err(|e| CriError::internal("OCI runtime delete", e)),
                );
            }
            Err(e) => errors.note(Err(e)),
        }
        let deadline = Instant::now() + SHIM_EXIT_WAIT;
        while corral_runtime::shim_alive(&dir) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Err(e) = corral_sandbox::reap_if_child(shim.pid) {
            tracing::debug!(pid = shim.pid, error = %e, "reaping shim");
        }
    }
    if record.rootfs_mounted {
        match env.images.unmount_rootfs(&dir.join("rootfs")) {
            Ok(()) => record.rootfs_mounted = false,
            Err(e) => errors.note(Err(CriError::internal("unmount container rootfs", e))),
        }
    }
    // Idmapped copies of the mount sources (pods with a user namespace).
    errors.note(crate::userns::unmount_staged(
        &dir.join(crate::userns::STAGING_DIR),
    ));
    errors.note(
        env.images
            .remove_rootfs(&record.id)
            .map_err(|e| CriError::internal("remove container rootfs layers", e)),
    );
    // Sources made for missing host paths go again, if still empty.
    for source in record.created_sources.drain(..).rev() {
        let _ = std::fs::remove_dir(&source);
    }
    if !record.cgroup_relative.as_os_str().is_empty() {
        let dirs: Vec<_> = env
            .cgroup_layout
            .hierarchies()
            .iter()
            .map(|h| h.dir(&record.cgroup_relative))
            .collect();
        errors.note(
            corral_cgroups::remove_unused_dirs(dirs)
                .map(|_| ())
                .map_err(|e| CriError::internal("remove container cgroup", e)),
        );
    }
    if errors.is_ok() {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.note(Err(CriError::internal(
                &format!("remove container directory {}", dir.display()),
                e,
            ))),
        }
    }
    errors.into_result()
}

/// UpdateContainerResources.
pub(super) fn update(
    env: &ContainerEnv,
    id: &str,
    resources: &LinuxContainerResources,
) -> CriResult<()> {
    let mut record = refreshed(env, id)?;
    if !matches!(
        record.state,
        ContainerState::Created | ContainerState::Running
    ) {
        return Err(CriError::FailedPrecondition(format!(
            "container {id} is not running; resources can only be updated on a created or running container"
        )));
    }
    let mut oci = corral_oci::linux_resources(resources)
        .map_err(|e| CriError::InvalidArgument(format!("linux: {e}")))?;
    if let Some(pod_cgroup) = record.cgroup_relative.parent() {
        let host = corral_cgroups::child_limits(&env.cgroup_layout, pod_cgroup);
        corral_oci::drop_unenforceable(&mut oci, &host)
            .map_err(|e| CriError::InvalidArgument(format!("linux: {e}")))?;
    }
    env.runtime(&record.runtime_handler)?
        .update(id, &oci)
        .map_err(|e| CriError::internal("UpdateContainerResources: OCI runtime update", e))?;
    record.resources = Some(resources.clone());
    save(env, &record)
}

/// ReopenContainerLog.
pub(super) fn reopen_log(env: &ContainerEnv, id: &str) -> CriResult<()> {
    let record = refreshed(env, id)?;
    if record.state != ContainerState::Running {
        return Err(CriError::FailedPrecondition(format!(
            "container {id} is not running; there is no log to reopen"
        )));
    }
    corral_runtime::reopen_log(&env.container_dir(id), Duration::from_secs(5))
        .map_err(|e| CriError::internal("ReopenContainerLog", e))
}

/// ExecSync: the command run in the container with the container's own process settings.
pub(super) fn exec_sync(
    env: &ContainerEnv,
    id: &str,
    cmd: Vec<String>,
    timeout_secs: i64,
) -> CriResult<ExecSyncResponse> {
    if cmd.is_empty() {
        return Err(CriError::InvalidArgument("cmd: must not be empty".into()));
    }
    let record = refreshed(env, id)?;
    if record.state != ContainerState::Running {
        return Err(CriError::FailedPrecondition(format!(
            "container {id} is not running; exec needs a running container"
        )));
    }
    let process = exec_process(env, id, cmd, false)?;
    let timeout = (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs.unsigned_abs()));
    let out = env
        .runtime(&record.runtime_handler)?
        .exec_sync(id, &process, timeout)
        .map_err(|e| CriError::internal("ExecSync", e))?;
    if out.timed_out {
        return Err(CriError::DeadlineExceeded(format!(
            "command {:?} timed out after {timeout_secs}s",
            process.args().clone().unwrap_or_default()
        )));
    }
    Ok(ExecSyncResponse {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code: out.exit_code,
    })
}

/// The process of an exec: the container's own (user, env, cwd, capabilities) with `cmd`.
pub(crate) fn exec_process(
    env: &ContainerEnv,
    id: &str,
    cmd: Vec<String>,
    tty: bool,
) -> CriResult<oci_spec::runtime::Process> {
    let path = env.container_dir(id).join("config.json");
    let spec = oci_spec::runtime::Spec::load(&path)
        .map_err(|e| CriError::internal(&format!("read {}", path.display()), e))?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(cmd));
    process.set_terminal(Some(tty));
    Ok(process)
}

/// `SIGTERM`, `TERM`, `15` → the signal number.
pub(crate) fn parse_signal(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return Some(n);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&full)
        .ok()
        .map(|s| s as i32)
}

/// Start-up: undoes containers a crashed daemon left half-made and returns the name index.
pub(super) fn reconcile(env: &ContainerEnv) -> anyhow::Result<HashMap<String, String>> {
    let mut names = HashMap::new();
    for (id, mut record) in env.store.list::<ContainerRecord>(CONTAINERS)? {
        if record.state == ContainerState::Creating {
            tracing::warn!(container_id = %id, "undoing a container left half-made by an earlier corrald");
            match destroy(env, &mut record) {
                Ok(()) => {
                    env.store.delete(CONTAINERS, &id)?;
                    continue;
                }
                Err(e) => {
                    tracing::error!(container_id = %id, error = %e, "could not undo half-made container");
                    env.store.put(CONTAINERS, &id, &record)?;
                }
            }
        }
        names.insert(record.name_key(), id);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("sigquit"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("NOPE"), None);
    }
}
