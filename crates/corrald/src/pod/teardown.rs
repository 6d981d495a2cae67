//! StopPodSandbox, RemovePodSandbox, the undo of a failed RunPodSandbox, and the start-up
//! reconciliation. Every step tolerates its resource being gone already, so each operation is
//! idempotent and survives a daemon restart at any point.
//!
//! A `Creating` record may not name everything its RunPodSandbox made (a crash between making a
//! resource and recording it), so its teardown also looks where the id says things would be:
//! the pause by its `CORRAL_OWNER` mark, the shm mount, the netns pin, the pause's cgroup leaf
//! and the pod cgroup directories recorded before they were made. At start-up, what lies in the
//! state directory under an id with no record at all is removed too.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use corral_store::SANDBOXES;

use super::network::runtime_conf;
use super::paths::{netns_pin_path, sandbox_dir, userns_pin_path};
use super::record::{SandboxRecord, SandboxState};
use super::PodEnv;
use crate::error::{CriError, CriResult, FirstError};

/// How long the pause process gets to exit on SIGTERM before SIGKILL.
const PAUSE_GRACE: Duration = Duration::from_secs(2);

/// StopPodSandbox: the pause process stopped, the network torn down, shm unmounted.
pub(super) fn stop(env: &PodEnv, id: &str) -> CriResult<()> {
    // Removed while this call waited for the pod's lock: nothing left to stop.
    let Some(mut record) = env.store.get::<SandboxRecord>(SANDBOXES, id)? else {
        return Ok(());
    };
    let result = release_runtime_resources(env, &mut record);
    if record.state != SandboxState::Creating {
        record.state = SandboxState::NotReady;
    }
    env.store.put(SANDBOXES, id, &record)?;
    result
}

/// RemovePodSandbox: stop, then delete the cgroups, files and record. Returns the pod's name key
/// when there was a sandbox to remove.
pub(super) fn remove(env: &PodEnv, id: &str) -> CriResult<Option<String>> {
    let Some(mut record) = env.store.get::<SandboxRecord>(SANDBOXES, id)? else {
        return Ok(None);
    };
    let name_key = record.name_key();
    if let Err(e) = destroy(env, &mut record) {
        // Keep what is left recorded, so that a retry finishes the job.
        env.store.put(SANDBOXES, id, &record)?;
        return Err(e);
    }
    env.store.delete(SANDBOXES, id)?;
    Ok(Some(name_key))
}

/// Frees everything a sandbox holds, in reverse order of creation. The record is updated as
/// resources go so that a retry does not repeat finished steps.
pub(super) fn destroy(env: &PodEnv, record: &mut SandboxRecord) -> CriResult<()> {
    let released = release_runtime_resources(env, record);
    crate::crash::point("remove_pod:released");
    if record.pod_cgroup.is_none() && record.state == SandboxState::Creating {
        let parent = super::paths::cgroup_parent(env, &record.config, &record.id);
        super::owned_cgroups::release_unrecorded(env, &parent, &record.id)?;
    }
    if let Some(cgroup) = record.pod_cgroup.as_ref() {
        let leaf = cgroup
            .child(&record.id)
            .map_err(|e| CriError::internal("pause cgroup path", e))?;
        env.cgroups
            .remove_leaf(cgroup, &leaf.relative_path)
            .map_err(|e| CriError::internal("remove pause cgroup", e))?;
        super::owned_cgroups::release(env, cgroup)?;
    }
    record.pod_cgroup = None;
    crate::crash::point("remove_pod:cgroups_removed");
    let dir = sandbox_dir(env, &record.id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(CriError::internal(
                &format!("remove sandbox directory {}", dir.display()),
                e,
            ))
        }
    }
    crate::crash::point("remove_pod:files_removed");
    released
}

/// Stops the pause process and releases network, shm, netns and userns pins. Every step is tried even
/// when an earlier one failed (the first error is returned); each clears its field in the
/// record once done, so a retry repeats only what failed.
///
/// The pause is stopped while the CNI DEL runs on a thread of its own: DEL needs only the
/// pinned network namespace, which outlives the pause, so neither waits for the other.
fn release_runtime_resources(env: &PodEnv, record: &mut SandboxRecord) -> CriResult<()> {
    let mut errors = FirstError::default();
    // What a `Creating` record does not name may still exist where the id says.
    let unrecorded = record.state == SandboxState::Creating;
    if record.pause.is_none() && unrecorded {
        errors.note(env.pauses.stop_marked(&sandbox_dir(env, &record.id)));
    }
    errors.note(stop_pause_beside_cni_del(env, record, unrecorded));
    errors.note(release_pins(env, record, unrecorded));
    errors.into_result()
}

/// Stops the recorded pause while the CNI DEL of the recorded network runs on a thread of its
/// own; both are tried, the network forgotten once deleted.
fn stop_pause_beside_cni_del(
    env: &PodEnv,
    record: &mut SandboxRecord,
    unrecorded: bool,
) -> CriResult<()> {
    let mut errors = FirstError::default();
    let network = record.cni_network.clone().map(|network| {
        let pin = record
            .netns_path
            .clone()
            .unwrap_or_else(|| netns_pin_path(env, &record.id));
        if unrecorded {
            env.network.settle(&pin);
        }
        let rt = runtime_conf(env, record, &pin);
        (network, rt)
    });
    let recorded_config = record.cni_config.clone();
    let pause = record.pause;
    let (stopped, deleted) = std::thread::scope(|scope| {
        let deleting = network.as_ref().map(|(network, rt)| {
            let config = recorded_config.as_ref();
            let thread = std::thread::Builder::new()
                .name("cni-del".into())
                .spawn_scoped(scope, move || env.network.del(network, config, rt));
            (thread, network, rt)
        });
        let stopped = pause.map(|pause| env.pauses.stop(pause));
        let deleted = deleting.map(|(thread, network, rt)| {
            let outcome = match thread {
                Ok(thread) => thread.join().map_err(|_| {
                    CriError::Internal("tear down pod network: the CNI DEL thread panicked".into())
                })?,
                // No thread to spare: DEL here, after the pause.
                Err(_) => env.network.del(network, recorded_config.as_ref(), rt),
            };
            outcome.map_err(|e| CriError::internal("tear down pod network (CNI DEL)", e))
        });
        (stopped, deleted)
    });
    if let Some(stopped) = stopped {
        errors.note(stopped);
    }
    crate::crash::point("stop_pod:pause_stopped");
    if let Some(deleted) = deleted {
        if deleted.is_ok() {
            record.cni_network = None;
            record.cni_config = None;
            crate::crash::point("stop_pod:network_removed");
        }
        errors.note(deleted);
    }
    errors.into_result()
}

/// Unmounts `/dev/shm` and removes the network and user namespace pins (recorded, or where the
/// id says when the record is unfinished); each is tried and forgotten once done.
fn release_pins(env: &PodEnv, record: &mut SandboxRecord, unrecorded: bool) -> CriResult<()> {
    let mut errors = FirstError::default();
    let shm = record
        .shm_path
        .clone()
        .or_else(|| unrecorded.then(|| sandbox_dir(env, &record.id).join("shm")));
    if let Some(shm) = shm {
        match env.pauses.unmount_shm(&shm) {
            Ok(()) => record.shm_path = None,
            Err(e) => errors.note(Err(CriError::internal("unmount /dev/shm", e))),
        }
    }
    let netns = record
        .netns_path
        .clone()
        .or_else(|| unrecorded.then(|| netns_pin_path(env, &record.id)));
    if let Some(pin) = netns {
        match env.network.unpin_netns(&pin) {
            Ok(()) => record.netns_path = None,
            Err(e) => errors.note(Err(CriError::internal("unpin network namespace", e))),
        }
    }
    // A crash between pinning and recording leaves a pin the record does not name.
    let userns_pin = record
        .userns_path
        .clone()
        .unwrap_or_else(|| userns_pin_path(env, &record.id));
    match env.pauses.unpin_userns(&userns_pin) {
        Ok(()) => record.userns_path = None,
        Err(e) => errors.note(Err(CriError::internal("unpin user namespace", e))),
    }
    errors.into_result()
}

/// Stops the pauses marked as `dir`'s. A launcher a killed daemon left may still fork its
/// pause after a look, so looks repeat until one finds nothing.
pub(super) fn stop_marked_pauses(dir: &Path) -> CriResult<()> {
    for _ in 0..5 {
        let found = corral_sandbox::find::owned_under(dir)
            .map_err(|e| CriError::internal("look for the pause process", e))?;
        if found.is_empty() {
            return Ok(());
        }
        stop_found(found)?;
    }
    Err(CriError::Internal(format!(
        "pause processes of {} keep appearing",
        dir.display()
    )))
}

fn stop_found(found: Vec<corral_sandbox::find::Found>) -> CriResult<()> {
    let mut errors = FirstError::default();
    for pause in found {
        tracing::info!(pid = pause.process.pid, owner = %pause.path.display(), "stopping a pause no record names");
        errors.note(stop_pause(pause.process));
    }
    errors.into_result()
}

/// Stops a pause process (SIGTERM, then SIGKILL after [`PAUSE_GRACE`]) and reaps it if it is
/// corrald's child.
pub(super) fn stop_pause(pause: corral_sandbox::pause::PauseProcess) -> CriResult<()> {
    let stopped = pause
        .stop(PAUSE_GRACE)
        .map_err(|e| CriError::internal("stop pause process", e));
    if let Err(e) = corral_sandbox::reap_if_child(pause.pid) {
        tracing::debug!(pid = pause.pid, error = %e, "reaping pause process");
    }
    stopped
}

/// Start-up: undoes sandboxes a crashed daemon left half-made, marks those whose pause process
/// died as not ready, and returns the name index of the rest.
pub(super) fn reconcile(env: &PodEnv) -> anyhow::Result<HashMap<String, String>> {
    let mut names = HashMap::new();
    let (half_made, whole): (Vec<_>, Vec<_>) = env
        .store
        .list::<SandboxRecord>(SANDBOXES)?
        .into_iter()
        .partition(|(_, record)| record.state == SandboxState::Creating);
    let undone = crate::crash::undo_side_by_side(half_made, |id, record| {
        tracing::warn!(pod_id = %id, "undoing a sandbox left half-made by an earlier corrald");
        destroy(env, record)
    });
    for (id, record, result) in undone {
        match result {
            Ok(()) => {
                env.store.delete(SANDBOXES, &id)?;
            }
            Err(e) => {
                tracing::error!(pod_id = %id, error = %e, "could not undo half-made sandbox");
                env.store.put(SANDBOXES, &id, &record)?;
                names.insert(record.name_key(), id);
            }
        }
    }
    for (id, mut record) in whole {
        if record.state == SandboxState::Ready && !record.pause_alive() {
            tracing::warn!(pod_id = %id, "pause process is gone; sandbox is not ready");
            record.state = SandboxState::NotReady;
            env.store.put(SANDBOXES, &id, &record)?;
            env.events.sandbox(
                &id,
                cri_proto::v1::ContainerEventType::ContainerStoppedEvent,
                None,
            );
        }
        names.insert(record.name_key(), id);
    }
    let known: HashSet<String> = names.values().cloned().collect();
    sweep_orphans(env, &known);
    super::owned_cgroups::sweep_slices(env);
    Ok(names)
}

/// Start-up: removes what lies in the state directory under a sandbox id that has no record
/// (left by a daemon that lost the record, or by a version of corrald before write-ahead
/// records): netns and userns pins, sandbox directories with their shm mount, marked pauses.
/// Best effort: each failure is logged and the rest goes on.
fn sweep_orphans(env: &PodEnv, known: &HashSet<String>) {
    let orphans = |dir: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| !known.contains(e.file_name().to_string_lossy().as_ref()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    let state = &env.config.state;
    let sandboxes = state.join("sandboxes");
    let marked = corral_sandbox::find::owned_under(&sandboxes).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot look for pause processes");
        Vec::new()
    });
    let orphaned_pauses = marked
        .into_iter()
        .filter(|pause| {
            let id = pause
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            id.is_some_and(|id| !known.contains(&id))
        })
        .collect();
    if let Err(e) = stop_found(orphaned_pauses) {
        tracing::warn!(error = %e, "stopping orphaned pauses");
    }
    for pin in orphans(&state.join("netns")) {
        tracing::info!(pin = %pin.display(), "unpinning the netns of a sandbox no record names");
        if let Err(e) = corral_sandbox::netns::NetnsPin::unpin(&pin) {
            tracing::warn!(pin = %pin.display(), error = %e, "unpinning an orphaned netns");
        }
    }
    for pin in orphans(&state.join("userns")) {
        tracing::info!(pin = %pin.display(), "unpinning the userns of a sandbox no record names");
        if let Err(e) = corral_sandbox::userns::unpin(&pin) {
            tracing::warn!(pin = %pin.display(), error = %e, "unpinning an orphaned userns");
        }
    }
    for dir in orphans(&sandboxes) {
        tracing::info!(dir = %dir.display(), "removing the directory of a sandbox no record names");
        let removed = corral_sandbox::shm::unmount(&dir.join("shm"))
            .map_err(|e| e.to_string())
            .and_then(|()| std::fs::remove_dir_all(&dir).map_err(|e| e.to_string()));
        if let Err(e) = removed {
            tracing::warn!(dir = %dir.display(), error = %e, "removing an orphaned sandbox directory");
        }
    }
}
