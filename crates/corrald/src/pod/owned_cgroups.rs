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
//! still knows them at start-up ([`release_unrecorded`]).

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
        return Ok(());
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

/// The cgroups of a sandbox whose record never got its pod cgroup (a crash between making it
/// and recording it): the pause's leaf `<pod cgroup>/<id>`, whose path the id gives, then the
/// directories [`intend`] recorded on the pod cgroup's path, when nothing uses them.
pub(super) fn release_unrecorded(env: &PodEnv, cgroup_parent: &str, id: &str) -> CriResult<()> {
    if env.systemd.is_some() {
        return Ok(());
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
    let (Some(slice), Some(units)) = (cgroup.systemd_slice(), env.systemd.as_deref()) else {
        return Ok(());
    };
    let owned: BTreeSet<String> = env.store.get(SETTINGS, SLICES_KEY)?.unwrap_or_default();
    if !owned.contains(&slice.name) {
        return Ok(());
    }
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
