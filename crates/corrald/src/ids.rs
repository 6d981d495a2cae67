//! What pods and containers share about ids: resolving a unique prefix to a full id, and one
//! lock per id so that operations on one object never interleave.

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

/// Locks a std mutex, recovering the data if a panicking thread poisoned it (the maps it
/// guards stay consistent: every update is a single insert or remove).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
