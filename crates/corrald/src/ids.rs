//! What pods and containers share about ids: new ids, resolving a unique prefix to a full id,
//! one lock per id so that operations on one object never interleave, and the time stamps
//! records and events carry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use corral_store::{Store, Table};
use serde::de::DeserializeOwned;

use crate::error::{shown, CriError, CriResult};

/// The full id of the `kind` (`pod sandbox`, `container`) named by `id` or a unique prefix of
/// it; `field` is the request field, for the error messages.
pub fn resolve<T: DeserializeOwned>(
    store: &Store,
    table: Table,
    id: &str,
    kind: &str,
    field: &str,
) -> CriResult<String> {
    if id.is_empty() {
        return Err(CriError::InvalidArgument(format!(
            "{field}: must not be empty"
        )));
    }
    if store.get::<T>(table, id)?.is_some() {
        return Ok(id.to_string());
    }
    let matches: Vec<String> = store
        .list::<T>(table)?
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(id))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(CriError::NotFound(format!(
            "{kind} {} not found",
            shown(id)
        ))),
        _ => Err(CriError::InvalidArgument(format!(
            "{field}: prefix {} matches {} of them; give more of the id",
            shown(id),
            matches.len()
        ))),
    }
}

/// One async lock per id.
#[derive(Default)]
pub struct IdLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl IdLocks {
    /// The lock of `id` (created on first use).
    pub fn get(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.0).entry(id.to_string()).or_default().clone()
    }

    /// Drops the lock of an id that is gone.
    pub fn forget(&self, id: &str) {
        lock(&self.0).remove(id);
    }
}

/// One reader-writer lock per pod sandbox id, ordering container RPCs against their pod's
/// StopPodSandbox and RemovePodSandbox: container RPCs hold it shared (they run side by side),
/// Stop/RemovePodSandbox exclusive (no container RPC of the pod runs meanwhile).
///
/// Lock order: a pod lock before any container lock (`IdLocks` of the container manager) and
/// before the pod manager's own per-sandbox lock; nothing takes a pod lock while holding one of
/// those, so there is no cycle.
#[derive(Default)]
pub struct PodLocks(Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>);

impl PodLocks {
    /// The pod's lock, shared.
    pub async fn shared(&self, pod_id: &str) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.get(pod_id).read_owned().await
    }

    /// The pod's lock, exclusive.
    pub async fn exclusive(&self, pod_id: &str) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.get(pod_id).write_owned().await
    }

    /// Drops the lock of a pod that is gone.
    pub fn forget(&self, pod_id: &str) {
        lock(&self.0).remove(pod_id);
    }

    fn get(&self, pod_id: &str) -> Arc<tokio::sync::RwLock<()>> {
        lock(&self.0).entry(pod_id.to_string()).or_default().clone()
    }
}

/// Locks a std mutex, recovering the data if a panicking thread poisoned it (the maps it
/// guards stay consistent: every update is a single insert or remove).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A new pod sandbox or container id: 32 random bytes in hex, as kubelet expects.
pub fn new_id() -> CriResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| CriError::internal("generate id", e))?;
    Ok(hex::encode(bytes))
}

/// Now, in nanoseconds since the Unix epoch (the CRI's time stamps).
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
