//! Start-up: containers a crashed daemon left half-made are undone, and container directories
//! with no record at all are removed the same way.

use std::collections::HashMap;

use corral_store::CONTAINERS;

use super::record::{ContainerRecord, ContainerState, ProcessUser};
use super::remove::destroy;
use super::ContainerEnv;

/// Start-up: undoes containers a crashed daemon left half-made and returns the name index.
pub(super) fn reconcile(env: &ContainerEnv) -> anyhow::Result<HashMap<String, String>> {
    let (half_made, whole): (Vec<_>, Vec<_>) = env
        .store
        .list::<ContainerRecord>(CONTAINERS)?
        .into_iter()
        .partition(|(_, record)| record.state == ContainerState::Creating);
    let mut names: HashMap<String, String> = whole
        .into_iter()
        .map(|(id, record)| (record.name_key(), id))
        .collect();
    let undone = crate::crash::undo_side_by_side(half_made, |id, record| {
        tracing::warn!(container_id = %id, "undoing a container left half-made by an earlier corrald");
        destroy(env, record)
    });
    for (id, record, result) in undone {
        match result {
            Ok(()) => {
                env.store.delete(CONTAINERS, &id)?;
            }
            Err(e) => {
                tracing::error!(container_id = %id, error = %e, "could not undo half-made container");
                env.store.put(CONTAINERS, &id, &record)?;
                names.insert(record.name_key(), id);
            }
        }
    }
    sweep_orphans(env, &names.values().cloned().collect());
    Ok(names)
}

/// Start-up: removes container directories (and what is in them: shim, runtime state, rootfs
/// mount, idmapped views) under ids that have no record, as a `Creating` container's.
fn sweep_orphans(env: &ContainerEnv, known: &std::collections::HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(env.config.state.join("containers")) else {
        return;
    };
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if known.contains(&id) {
            continue;
        }
        tracing::info!(container_id = %id, "removing a container no record names");
        let mut record = orphan_record(env, &id);
        if let Err(e) = destroy(env, &mut record) {
            tracing::warn!(container_id = %id, error = %e, "removing an orphaned container");
        }
    }
}

/// A `Creating` record naming nothing but the id, so that [`destroy`] looks for everything.
fn orphan_record(env: &ContainerEnv, id: &str) -> ContainerRecord {
    ContainerRecord {
        id: id.to_owned(),
        pod_sandbox_id: String::new(),
        config: Default::default(),
        image_name: String::new(),
        image_id: String::new(),
        runtime_handler: String::new(),
        created_at: 0,
        started_at: 0,
        state: ContainerState::Creating,
        shim: None,
        exit: None,
        log_path: env.container_dir(id).join("container.log"),
        cgroups_path: String::new(),
        cgroup_relative: std::path::PathBuf::new(),
        rootfs_mounted: true,
        created_sources: Vec::new(),
        resources: None,
        user: ProcessUser::default(),
        stop_signal: String::new(),
        restored: false,
    }
}
