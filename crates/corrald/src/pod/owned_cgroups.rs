//! Which cgroup directories corral created, across all pods.
//!
//! A pod cgroup (`.../pod<uid>`) is shared by every sandbox attempt of one pod, and its parents
//! by many pods, so the pod that created a directory is often not the last one to leave it. The
//! daemon therefore keeps one set of the directories it created; when a sandbox goes, every
//! directory of that set on its cgroup path that nothing uses any more is removed. Directories
//! kubelet (or anyone else) created are never in the set and never removed. With the systemd
//! driver under systemd, the pod slices corral started are kept the same way, by unit name.
//!
//! The directories a pod cgroup will add are put in the set *before* they are made
//! ([`intend`]), so that a daemon killed between making them and recording the pod's cgroup
//! still knows them at start-up ([`release_unrecorded`]). A pod slice systemd will start is
//! put in its set the same way, when it does not exist yet; at start-up, slices of the set no
//! sandbox record names, and corral-named slices (`corral-pod<id>.slice`) of no known
//! sandbox, are stopped once empty ([`sweep_slices`]).

use std::collections::BTreeSet;
use std::path::PathBuf;

use corral_cgroups::PodCgroup;
use corral_store::{WriteTx, SETTINGS};

use super::PodEnv;
use crate::error::{CriError, CriResult};

const KEY: &str = "created_cgroup_dirs";
/// The systemd pod slices corral started (systemd driver), by unit name.
const SLICES_KEY: &str = "started_systemd_slices";

/// Records the directories `cgroup`'s creation made, in the write transaction `tx` (committed
/// with whatever else it holds, such as the sandbox's record).
pub(super) fn remember_in(
    tx: &WriteTx<'_>,
    cgroup: &PodCgroup,
) -> Result<(), corral_store::StoreError> {
    if let Some(slice) = cgroup.systemd_slice().filter(|s| s.started) {
        let mut owned: BTreeSet<String> = tx.get(SETTINGS, SLICES_KEY)?.unwrap_or_default();
        owned.insert(slice.name.clone());
        tx.put(SETTINGS, SLICES_KEY, &owned)?;
    }
    if cgroup.created_dirs().is_empty() {
        return Ok(());
    }
    let mut owned: BTreeSet<PathBuf> = tx.get(SETTINGS, KEY)?.unwrap_or_default();
    owned.extend(cgroup.created_dirs().iter().cloned());
    tx.put(SETTINGS, KEY, &owned)
}

/// Write-ahead: records the directories of the pod cgroup `cgroup_parent` that do not exist yet
/// (cgroupfs writes only; systemd makes its own), before [`PodCgroup::create`] makes them.
pub(super) fn intend(env: &PodEnv, cgroup_parent: &str) -> CriResult<()> {
    if env.systemd.is_some() {
        return intend_slice(env, cgroup_parent);
    }
    let Ok(relative) = env.cgroup_driver.pod_relative_path(cgroup_parent) else {
        return Ok(());
    };
    let mut missing = Vec::new();
    for hierarchy in env.cgroup_layout.hierarchies() {
        let mut dir = hierarchy.mount_point().to_path_buf();
        for component in relative.components() {
            dir.push(component);
            if !dir.exists() {
                missing.push(dir.clone());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    env.store.write(|tx| {
        let mut owned: BTreeSet<PathBuf> = tx.get(SETTINGS, KEY)?.unwrap_or_default();
        owned.extend(missing.iter().cloned());
        tx.put(SETTINGS, KEY, &owned)
    })?;
    Ok(())
}

/// Write-ahead for the systemd driver: records the pod slice `cgroup_parent` as corral's
/// before it is started, when it does not exist yet (an existing one, the kubelet's, is never
/// corral's). A slice someone else starts in between is then taken for corral's too: it is
/// only ever stopped once empty.
fn intend_slice(env: &PodEnv, cgroup_parent: &str) -> CriResult<()> {
    let missing = PodCgroup::is_missing(
        &env.cgroup_layout,
        corral_cgroups::CgroupDriver::Systemd,
        cgroup_parent,
    );
    // A bad name is refused, with its reason, by the start that follows.
    if !matches!(missing, Ok(true)) {
        return Ok(());
    }
    env.store.write(|tx| {
        let mut owned: BTreeSet<String> = tx.get(SETTINGS, SLICES_KEY)?.unwrap_or_default();
        owned.insert(cgroup_parent.to_owned());
        tx.put(SETTINGS, SLICES_KEY, &owned)
    })?;
    Ok(())
}

/// The cgroups of a sandbox whose record never got its pod cgroup (a crash between making it
/// and recording it): the pause's leaf `<pod cgroup>/<id>`, whose path the id gives, then the
/// directories [`intend`] recorded on the pod cgroup's path, when nothing uses them.
pub(super) fn release_unrecorded(env: &PodEnv, cgroup_parent: &str, id: &str) -> CriResult<()> {
    if let Some(units) = env.systemd.as_deref() {
        // The pause's scope (systemd stops it when the pause dies, but maybe not yet), then
        // the slice, when [`intend`] recorded it as corral's.
        let Ok(slice) = PodCgroup::systemd_handle(&env.cgroup_layout, cgroup_parent) else {
            return Ok(());
        };
        let leaf = slice
            .child(id)
            .map_err(|e| CriError::internal("pause scope name", e))?;
        slice
            .remove_leaf_with(&leaf.relative_path, Some(units))
            .map_err(|e| CriError::internal("stop pause scope", e))?;
        return release_slice(env, &slice);
    }
    let (Ok(pod), Ok(leaf)) = (
        env.cgroup_driver.pod_relative_path(cgroup_parent),
        env.cgroup_driver.child_path(cgroup_parent, id),
    ) else {
        return Ok(());
    };
    let hierarchies = env.cgroup_layout.hierarchies();
    let leaves: Vec<PathBuf> = hierarchies
        .iter()
        .map(|h| h.dir(&leaf.relative_path))
        .collect();
    // The pause was just killed: its leaf empties a moment after it exits.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let gone = corral_cgroups::remove_unused_dirs(leaves.clone())
            .map_err(|e| CriError::internal("remove pause cgroup", e))?;
        if gone.len() == leaves.len() || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pod_dirs: Vec<PathBuf> = hierarchies.iter().map(|h| h.dir(&pod)).collect();
    release_dirs(env, &pod_dirs, &[])
}

/// Removes the directories corral created on `cgroup`'s path that are no longer used, and
/// forgets them.
pub(super) fn release(env: &PodEnv, cgroup: &PodCgroup) -> CriResult<()> {
    release_slice(env, cgroup)?;
    release_dirs(env, &cgroup.dirs(), cgroup.created_dirs())
}

/// Removes the directories of the set on the path of `pod_dirs` (and `created`) that nothing
/// uses, and forgets them.
fn release_dirs(env: &PodEnv, pod_dirs: &[PathBuf], created: &[PathBuf]) -> CriResult<()> {
    let owned: BTreeSet<PathBuf> = env.store.get(SETTINGS, KEY)?.unwrap_or_default();
    let mut candidates: BTreeSet<PathBuf> = owned
        .into_iter()
        .filter(|dir| pod_dirs.iter().any(|pod_dir| pod_dir.starts_with(dir)))
        .collect();
    // Records made before this set existed still know what they created.
    candidates.extend(created.iter().cloned());
    let gone = corral_cgroups::remove_unused_dirs(candidates.into_iter().collect())
        .map_err(|e| CriError::internal("remove pod cgroup", e))?;
    if gone.is_empty() {
        return Ok(());
    }
    env.store.write(|tx| {
        let mut owned: BTreeSet<PathBuf> = tx.get(SETTINGS, KEY)?.unwrap_or_default();
        for dir in &gone {
            owned.remove(dir);
        }
        tx.put(SETTINGS, KEY, &owned)
    })?;
    Ok(())
}

/// Stops the pod's systemd slice when corral started it (for this or an earlier sandbox of
/// the pod) and nothing is in it any more, and forgets it.
fn release_slice(env: &PodEnv, cgroup: &PodCgroup) -> CriResult<()> {
    let Some(slice) = cgroup.systemd_slice() else {
        return Ok(());
    };
    let owned: BTreeSet<String> = env.store.get(SETTINGS, SLICES_KEY)?.unwrap_or_default();
    if !owned.contains(&slice.name) {
        return Ok(());
    }
    stop_slice(env, cgroup)
}

/// Stops the pod's systemd slice once nothing is in it any more, and forgets it.
fn stop_slice(env: &PodEnv, cgroup: &PodCgroup) -> CriResult<()> {
    let (Some(slice), Some(units)) = (cgroup.systemd_slice(), env.systemd.as_deref()) else {
        return Ok(());
    };
    let stopped = cgroup
        .stop_slice_if_unused(units)
        .map_err(|e| CriError::internal("stop pod slice", e))?;
    if stopped {
        env.store.write(|tx| {
            let mut owned: BTreeSet<String> = tx.get(SETTINGS, SLICES_KEY)?.unwrap_or_default();
            owned.remove(&slice.name);
            tx.put(SETTINGS, SLICES_KEY, &owned)
        })?;
    }
    Ok(())
}

/// The prefix of the pod slices corral names after a sandbox with no cgroup parent
/// (`corral-pod<id>.slice`, see `paths.rs`), nested by systemd in `corral.slice`.
const OWN_SLICE_PREFIX: &str = "corral-pod";
const OWN_SLICES_PARENT: &str = "corral.slice";

/// Start-up, systemd driver under systemd: stops, once empty, the pod slices corral started
/// that no sandbox record names any more (recorded before they were started, by a daemon
/// killed before the record named them), and the slices named after a sandbox
/// (`corral-pod<id>.slice`) that has no record. Best effort: failures are logged.
pub(super) fn sweep_slices(env: &PodEnv) {
    if env.systemd.is_none() {
        return;
    }
    let records = match env
        .store
        .list::<super::record::SandboxRecord>(corral_store::SANDBOXES)
    {
        Ok(records) => records,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list sandboxes to sweep pod slices");
            return;
        }
    };
    let in_use: BTreeSet<String> = records
        .iter()
        .map(|(id, record)| match record.pod_cgroup.as_ref() {
            Some(cgroup) => cgroup.cgroup_parent().to_owned(),
            None => super::paths::cgroup_parent(env, &record.config, id),
        })
        .collect();
    let owned: BTreeSet<String> = env
        .store
        .get(SETTINGS, SLICES_KEY)
        .ok()
        .flatten()
        .unwrap_or_default();
    let named =
        corral_cgroups::child_slices(&env.cgroup_layout, OWN_SLICES_PARENT, OWN_SLICE_PREFIX)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot list corral's pod slices");
                Vec::new()
            })
            .into_iter()
            .filter(|slice| {
                let short = slice
                    .trim_start_matches(OWN_SLICE_PREFIX)
                    .trim_end_matches(".slice");
                !records.iter().any(|(id, _)| id.starts_with(short))
            });
    let orphans: BTreeSet<String> = owned.into_iter().chain(named).collect();
    for slice in orphans.difference(&in_use) {
        tracing::info!(slice, "stopping a pod slice no sandbox names");
        let stopped = PodCgroup::systemd_handle(&env.cgroup_layout, slice)
            .map_err(|e| CriError::internal("pod slice name", e))
            .and_then(|handle| stop_slice(env, &handle));
        if let Err(e) = stopped {
            tracing::warn!(slice, error = %e, "stopping an orphaned pod slice");
        }
    }
}
