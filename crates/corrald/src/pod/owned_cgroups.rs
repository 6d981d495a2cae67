//! Which cgroup directories corral created, across all pods.
//!
//! A pod cgroup (`.../pod<uid>`) is shared by every sandbox attempt of one pod, and its parents
//! by many pods, so the pod that created a directory is often not the last one to leave it. The
//! daemon therefore keeps one set of the directories it created; when a sandbox goes, every
//! directory of that set on its cgroup path that nothing uses any more is removed. Directories
//! kubelet (or anyone else) created are never in the set and never removed. With the systemd
//! driver under systemd, the pod slices corral started are kept the same way, by unit name.

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

/// Removes the directories corral created on `cgroup`'s path that are no longer used, and
/// forgets them.
pub(super) fn release(env: &PodEnv, cgroup: &PodCgroup) -> CriResult<()> {
    release_slice(env, cgroup)?;
    let owned: BTreeSet<PathBuf> = env.store.get(SETTINGS, KEY)?.unwrap_or_default();
    let pod_dirs = cgroup.dirs();
    let mut candidates: BTreeSet<PathBuf> = owned
        .into_iter()
        .filter(|dir| pod_dirs.iter().any(|pod_dir| pod_dir.starts_with(dir)))
        .collect();
    // Records made before this set existed still know what they created.
    candidates.extend(cgroup.created_dirs().iter().cloned());
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
