//! RemoveContainer and the undo of a failed CreateContainer: everything a container holds freed,
//! each step tried even when an earlier one failed.
//!
//! A `Creating` record may not name everything its CreateContainer made (a crash between making
//! a resource and recording it), so its teardown also looks where the id says things would be:
//! a shim launch still under way (its processes name the container directory in their
//! arguments) is let finish, then the runtime's container, the shim, the rootfs mount and the
//! container cgroup go whether recorded or not.

use std::path::Path;
use std::time::{Duration, Instant};

use corral_store::CONTAINERS;
use cri_proto::v1::ContainerEventType;

use super::record::{ContainerRecord, ContainerState};
use super::refresh::save;
use super::stop::{signal_container, KILL_WAIT};
use super::ContainerEnv;
use crate::error::{CriError, CriResult, FirstError};

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
    crate::crash::point("remove_container:destroyed");
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
    let unrecorded = record.state == ContainerState::Creating;
    if unrecorded && record.shim.is_none() {
        settle_launch(&dir);
    }
    let launched = record.shim.is_some()
        || (unrecorded && dir.join(corral_runtime::state_dir::SHIM_PID_FILE).exists());
    if launched {
        errors.note(kill_and_delete(env, record, &dir));
        env.host.wait_shim_gone(&dir, record.shim);
    }
    if unrecorded {
        errors.note(kill_naming(&dir));
    }
    crate::crash::point("remove_container:killed");
    if record.rootfs_mounted || unrecorded {
        match env.host.unmount_rootfs(&env.images, &dir.join("rootfs")) {
            Ok(()) => record.rootfs_mounted = false,
            Err(e) => errors.note(Err(CriError::internal("unmount container rootfs", e))),
        }
    }
    crate::crash::point("remove_container:rootfs_unmounted");
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
    if record.cgroup_relative.as_os_str().is_empty() && unrecorded {
        record.cgroup_relative = derived_cgroup(env, record).unwrap_or_default();
    }
    errors.note(remove_cgroup(env, record));
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

/// Kills a launched container (if its shim still runs) and deletes it from the OCI runtime.
/// Both are tried; the first error is returned.
fn kill_and_delete(env: &ContainerEnv, record: &ContainerRecord, dir: &Path) -> CriResult<()> {
    let runtime = env.runtime(&record.runtime_handler)?;
    let mut errors = FirstError::default();
    if env.host.shim_alive(dir) {
        errors.note(
            signal_container(env, &runtime, record, libc::SIGKILL, true)
                .map_err(|e| CriError::internal("kill container", e)),
        );
        if !env.host.wait_exited(dir, record.shim, KILL_WAIT) {
            errors.note(Err(CriError::Internal(format!(
                "container {} still running after SIGKILL",
                record.id
            ))));
        }
    }
    errors.note(
        env.host
            .delete(&runtime, &record.id)
            .map_err(|e| CriError::internal("OCI runtime delete", e)),
    );
    errors.into_result()
}

/// Removes the container's cgroup directories in every hierarchy, if it has any.
fn remove_cgroup(env: &ContainerEnv, record: &ContainerRecord) -> CriResult<()> {
    if record.cgroup_relative.as_os_str().is_empty() {
        return Ok(());
    }
    let dirs: Vec<_> = env
        .cgroup_layout
        .hierarchies()
        .iter()
        .map(|h| h.dir(&record.cgroup_relative))
        .collect();
    corral_cgroups::remove_unused_dirs(dirs)
        .map(|_| ())
        .map_err(|e| CriError::internal("remove container cgroup", e))
}

/// How long a shim launch a killed daemon left under way may take to finish.
const LAUNCH_SETTLE: Duration = Duration::from_secs(30);

/// Waits until a shim launch no record names has finished: the runtime created the container
/// (`container.pid` written) or every process naming the container directory is gone.
fn settle_launch(dir: &Path) {
    let deadline = Instant::now() + LAUNCH_SETTLE;
    loop {
        if dir
            .join(corral_runtime::state_dir::CONTAINER_PID_FILE)
            .exists()
        {
            return;
        }
        match corral_sandbox::find::naming(dir) {
            Ok(found) if found.is_empty() => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot look for the shim");
                return;
            }
        }
        if Instant::now() >= deadline {
            tracing::warn!(dir = %dir.display(), "a shim launch did not finish; killing it");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILLs what still names the container directory (a shim or runtime call no record
/// names).
fn kill_naming(dir: &Path) -> CriResult<()> {
    let found = corral_sandbox::find::naming(dir)
        .map_err(|e| CriError::internal("look for the shim", e))?;
    let mut errors = FirstError::default();
    for process in found {
        tracing::info!(pid = process.process.pid, dir = %dir.display(), "killing a process of a container no record names");
        errors.note(
            process
                .process
                .stop(Duration::ZERO)
                .map_err(|e| CriError::internal("kill shim", e)),
        );
        if let Err(e) = corral_sandbox::reap_if_child(process.process.pid) {
            tracing::debug!(pid = process.process.pid, error = %e, "reaping shim");
        }
    }
    errors.into_result()
}

/// The container's cgroup from its pod's: `<pod cgroup>/<id>` (what CreateContainer gives the
/// runtime), for a record that never got it.
fn derived_cgroup(env: &ContainerEnv, record: &ContainerRecord) -> Option<std::path::PathBuf> {
    let sandbox: crate::pod::SandboxRecord = env
        .store
        .get(corral_store::SANDBOXES, &record.pod_sandbox_id)
        .ok()??;
    let child = sandbox.pod_cgroup?.child(&record.id).ok()?;
    Some(child.relative_path)
}
