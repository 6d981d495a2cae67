//! Which cgroup directories corral created, across all pods.
//!
//! A pod cgroup (`.../pod<uid>`) is shared by every sandbox attempt of one pod, and its parents
//! by many pods, so the pod that created a directory is often not the last one to leave it. The
//! daemon therefore keeps one set of the directories it created; when a sandbox goes, every
//! directory of that set on its cgroup path that nothing uses any more is removed. Directories
//! kubelet (or anyone else) created are never in the set and never removed.

use std::collections::BTreeSet;
use std::path::PathBuf;

use corral_cgroups::PodCgroup;
use corral_store::SETTINGS;

use super::PodEnv;
use crate::error::{CriError, CriResult};

const KEY: &str = "created_cgroup_dirs";

/// Records the directories `cgroup`'s creation made.
pub(super) fn remember(env: &PodEnv, cgroup: &PodCgroup) -> CriResult<()> {
    if cgroup.created_dirs().is_empty() {
        return Ok(());
    }
    env.store.write(|tx| {
        let mut owned: BTreeSet<PathBuf> = tx.get(SETTINGS, KEY)?.unwrap_or_default();
        owned.extend(cgroup.created_dirs().iter().cloned());
        tx.put(SETTINGS, KEY, &owned)
    })?;
    Ok(())
}

/// Removes the directories corral created on `cgroup`'s path that are no longer used, and
/// forgets them.
pub(super) fn release(env: &PodEnv, cgroup: &PodCgroup) -> CriResult<()> {
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
