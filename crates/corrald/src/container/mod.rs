//! Containers: CreateContainer, StartContainer, StopContainer, RemoveContainer,
//! ContainerStatus, ListContainers, StreamContainers, UpdateContainerResources,
//! ReopenContainerLog and ExecSync.
//!
//! A container is an OCI bundle under `<state>/containers/<id>/` (config.json, the overlay
//! rootfs mount point, the shim's state files), run by the sandbox's OCI runtime handler
//! through one `corral-shim`. The record in the metadata store is the source of truth; whether
//! a running container has exited is read from its shim's exit file when asked, so nothing is
//! lost while corrald is down.

mod create;
mod exec;
pub(crate) mod host;
mod reconcile;
mod record;
mod refresh;
mod remove;
mod start;
mod stop;
#[cfg(test)]
mod tests;
mod update;
mod validate;
mod view;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use corral_runtime::OciRuntime;
use corral_store::{Store, CONTAINERS};
use cri_proto::v1::{
    Container, ContainerFilter, ContainerStatusResponse, CreateContainerRequest, ExecSyncResponse,
    LinuxContainerResources,
};

use crate::config::{CgroupDriverName, Config};
use crate::error::{CriError, CriResult};
use crate::ids::lock;
use crate::live::LiveSet;
use crate::pod::SandboxRecord;
use crate::view_cache::ViewCache;
pub(crate) use exec::exec_process;
pub use record::{ContainerRecord, ContainerState};
pub(crate) use refresh::refreshed;

/// Everything the container lifecycle needs, shared with blocking tasks.
pub(crate) struct ContainerEnv {
    pub config: Config,
    pub store: Arc<Store>,
    pub images: corral_image::ImageStore,
    /// The rootfs mount, the shim and the OCI runtime's commands.
    pub host: Arc<dyn host::ContainerHost>,
    pub shim_binary: PathBuf,
    pub cgroup_layout: corral_cgroups::CgroupLayout,
    /// Whether runtimes are told to use systemd for cgroups (systemd driver and systemd runs).
    pub systemd_cgroup: bool,
    /// Whether the host has AppArmor enabled.
    pub apparmor: bool,
    /// What the runtime handlers support here (recursive read-only mounts).
    pub features: crate::features::Features,
    /// Where container changes are reported (GetContainerEvents).
    pub events: crate::events::EventSink,
}

impl ContainerEnv {
    /// The OCI runtime of a handler name (empty: the default).
    pub fn runtime(&self, handler: &str) -> CriResult<OciRuntime> {
        let name = if handler.is_empty() {
            crate::config::DEFAULT_HANDLER
        } else {
            handler
        };
        let h = self.config.runtimes.get(name).ok_or_else(|| {
            CriError::InvalidArgument(format!("runtime_handler: unknown handler {name:?}"))
        })?;
        Ok(OciRuntime {
            name: name.to_string(),
            binary: corral_runtime::on_path(&h.path).ok_or_else(|| {
                CriError::FailedPrecondition(format!(
                    "runtime handler {name}: {} not found (install it, or set [runtimes.{name}] path)",
                    h.path.display()
                ))
            })?,
            root: h
                .root
                .clone()
                .unwrap_or_else(|| self.config.state.join("runtimes").join(name)),
            systemd_cgroup: self.systemd_cgroup,
        })
    }

    /// `<state>/containers/<id>`: bundle and shim state.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.config.layout().containers_dir().join(id)
    }
}

/// Owns the containers of this daemon.
pub struct ContainerManager {
    env: Arc<ContainerEnv>,
    /// `pod_name_attempt` → container id, for AlreadyExists checks.
    names: Mutex<HashMap<String, String>>,
    /// One lock per container id.
    locks: crate::ids::IdLocks,
    /// One lock per pod: container RPCs hold their pod's shared, Stop/RemovePodSandbox
    /// exclusive (see [`crate::ids::PodLocks`] for the lock order).
    pod_locks: crate::ids::PodLocks,
    /// The containers whose exit and shim the event publisher watches and knows alive.
    live: Arc<LiveSet>,
    /// Each record's ListContainers item, encoded.
    views: Arc<ViewCache<ContainerRecord, Bytes>>,
}

impl ContainerManager {
    /// Loads the recorded containers and undoes half-made ones.
    pub async fn start(
        config: Config,
        store: Arc<Store>,
        images: corral_image::ImageStore,
        events: crate::events::EventSink,
    ) -> anyhow::Result<ContainerManager> {
        let shim_binary = corral_sandbox::find_binary("corral-shim").ok_or_else(|| {
            anyhow::anyhow!(
                "corral-shim not found next to corrald nor on PATH; install it beside corrald"
            )
        })?;
        let systemd_cgroup = config.cgroup_driver == CgroupDriverName::Systemd
            && corral_cgroups::systemd::systemd_available();
        let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .map(|s| s.trim() == "Y")
            .unwrap_or(false);
        let features = crate::features::Features::probe(
            config
                .runtimes
                .iter()
                .map(|(name, h)| (name.as_str(), corral_runtime::on_path(&h.path))),
        );
        let env = ContainerEnv {
            features,
            cgroup_layout: corral_cgroups::CgroupLayout::detect()?,
            config,
            store,
            images,
            host: Arc::new(host::HostContainers),
            shim_binary,
            systemd_cgroup,
            apparmor,
            events,
        };
        ContainerManager::with_env(env).await
    }

    /// Serves the containers of `env` (half-made ones undone first); the unit tests give it a
    /// fake host.
    pub(crate) async fn with_env(env: ContainerEnv) -> anyhow::Result<ContainerManager> {
        let env = Arc::new(env);
        let manager = ContainerManager {
            env: env.clone(),
            names: Mutex::new(HashMap::new()),
            locks: crate::ids::IdLocks::default(),
            pod_locks: crate::ids::PodLocks::default(),
            live: Arc::default(),
            views: Arc::default(),
        };
        let names = tokio::task::spawn_blocking(move || reconcile::reconcile(&env)).await??;
        *lock(&manager.names) = names;
        Ok(manager)
    }

    /// CreateContainer in `sandbox` (already looked up and checked to be ready).
    pub async fn create(
        &self,
        request: CreateContainerRequest,
        sandbox: SandboxRecord,
    ) -> CriResult<String> {
        let config = request
            .config
            .ok_or_else(|| CriError::InvalidArgument("config: missing container config".into()))?;
        // Held to the end: the pod cannot be stopped or removed while its container is made.
        // The record is read again under it, as a Stop may have finished since the lookup.
        let _pod = self.pod_locks.shared(&sandbox.id).await;
        let sandbox = self
            .env
            .store
            .get::<SandboxRecord>(corral_store::SANDBOXES, &sandbox.id)?
            .ok_or_else(|| CriError::NotFound(format!("pod sandbox {} not found", sandbox.id)))?;
        let plan = create::ContainerPlan::new(&self.env, config, sandbox)?;
        let id = plan.id.clone();
        let key = plan.name_key.clone();
        let pod_sandbox_id = plan.pod_sandbox_id.clone();
        {
            let mut names = lock(&self.names);
            if let Some(existing) = names.get(&key) {
                return Err(CriError::AlreadyExists(format!(
                    "container {} already exists in pod {} as {existing}; remove it or use a new attempt number",
                    plan.name, plan.pod_sandbox_id
                )));
            }
            names.insert(key.clone(), id.clone());
        }
        let guard = self.lock_id(&id);
        let _held = guard.lock().await;
        let env = self.env.clone();
        let result = tokio::task::spawn_blocking(move || plan.execute(&env))
            .await
            .map_err(|e| CriError::internal("CreateContainer task", e))
            .and_then(|r| r);
        match &result {
            // Still under the lock: the container's later events come after this one.
            Ok(()) => self.env.events.container(
                &id,
                &pod_sandbox_id,
                cri_proto::v1::ContainerEventType::ContainerCreatedEvent,
            ),
            Err(_) => {
                lock(&self.names).remove(&key);
                self.forget_lock(&id);
            }
        }
        result.map(|()| id)
    }

    /// StartContainer.
    pub async fn start_container(&self, id: &str) -> CriResult<()> {
        self.blocking(id, start::start).await
    }

    /// StopContainer: the stop signal, then SIGKILL after `timeout_secs`; idempotent, and an
    /// unknown id succeeds (nothing to stop), as CRI asks.
    pub async fn stop(&self, id: &str, timeout_secs: i64) -> CriResult<()> {
        let id = match self.resolve_async(id).await {
            Ok(id) => id,
            Err(CriError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.blocking(&id, move |env, id| stop::stop(env, id, timeout_secs))
            .await
    }

    /// StopContainer for a caller holding the pod's lock exclusively.
    async fn stop_in_locked_pod(&self, id: &str, timeout_secs: i64) -> CriResult<()> {
        self.blocking_in_locked_pod(id, move |env, id| stop::stop(env, id, timeout_secs))
            .await
    }

    /// RemoveContainer: kills it if running and frees everything; an unknown id succeeds.
    pub async fn remove(&self, id: &str) -> CriResult<()> {
        let Ok(id) = self.resolve_async(id).await else {
            return Ok(());
        };
        let _pod = self.pod_lock_of(&id).await?;
        self.remove_in_locked_pod(&id).await
    }

    /// RemoveContainer for a caller holding the pod's lock.
    async fn remove_in_locked_pod(&self, id: &str) -> CriResult<()> {
        let id = id.to_string();
        let removed = self.blocking_in_locked_pod(&id, remove::remove).await?;
        if let Some(key) = removed {
            let mut names = lock(&self.names);
            if names.get(&key) == Some(&id) {
                names.remove(&key);
            }
        }
        self.forget_lock(&id);
        Ok(())
    }

    /// ContainerStatus.
    pub async fn status(&self, id: &str, verbose: bool) -> CriResult<ContainerStatusResponse> {
        // The status reads the bundle's config.json and /proc: on the blocking thread too.
        self.blocking(id, move |env, id| {
            let record = refresh::refreshed(env, id)?;
            Ok(view::status_response(env, &record, verbose))
        })
        .await
    }

    /// ListContainers: the items encoded, those of unchanged records taken from the views of
    /// the store's snapshot (see [`crate::view_cache`]).
    pub async fn list_encoded(&self, filter: Option<ContainerFilter>) -> CriResult<Vec<Bytes>> {
        self.listed(filter, encoded_item, "ListContainers task")
            .await
    }

    /// StreamContainers and the metrics: the items decoded.
    pub async fn list(&self, filter: Option<ContainerFilter>) -> CriResult<Vec<Container>> {
        self.listed(
            filter,
            |record, _| view::container(record),
            "ListContainers task",
        )
        .await
    }

    /// The records of the containers the filter passes, checked against their shims like
    /// [`Self::list`], from one read of the store (the stats of every container need the
    /// records, not their CRI views).
    pub async fn records(
        &self,
        filter: Option<ContainerFilter>,
    ) -> CriResult<Vec<ContainerRecord>> {
        self.listed(filter, |record, _| record.clone(), "container records task")
            .await
    }

    /// `shown` of each made container the filter passes, with its encoded view when the
    /// record is as the store has it, from one read of the store, each checked against its
    /// shim unless the live set vouches for it (asked once for all).
    async fn listed<T: Send + 'static>(
        &self,
        filter: Option<ContainerFilter>,
        shown: fn(&ContainerRecord, Option<&Bytes>) -> T,
        task: &'static str,
    ) -> CriResult<Vec<T>> {
        let (env, live, cache) = (self.env.clone(), self.live.clone(), self.views.clone());
        tokio::task::spawn_blocking(move || {
            let records = env.store.list_shared::<ContainerRecord>(CONTAINERS)?;
            let views = cache.views(&records, |record| {
                crate::view_cache::encode(&view::container(record))
            });
            let verified = live.verified_among(
                records
                    .iter()
                    .map(|(_, r)| r.shim.map(|shim| (r.id.as_str(), shim.pid))),
            );
            let mut out = Vec::new();
            for (index, ((_, record), verified)) in records.iter().zip(verified).enumerate() {
                if record.state == ContainerState::Creating {
                    continue;
                }
                // A verified container is as recorded, without reading its files.
                let updated = if verified {
                    None
                } else {
                    refresh::refresh_shared(&env, record)?
                };
                let (record, cached) = match &updated {
                    // Just found exited: its cached view is stale.
                    Some(fresh) => (fresh, None),
                    None => (record, views.get(index)),
                };
                if view::matches(record, filter.as_ref()) {
                    out.push(shown(record, cached));
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| CriError::internal(task, e))?
    }

    /// UpdateContainerResources.
    pub async fn update(&self, id: &str, resources: LinuxContainerResources) -> CriResult<()> {
        self.blocking(id, move |env, id| update::update(env, id, &resources))
            .await
    }

    /// ReopenContainerLog.
    pub async fn reopen_log(&self, id: &str) -> CriResult<()> {
        self.blocking(id, update::reopen_log).await
    }

    /// ExecSync.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_secs: i64,
    ) -> CriResult<ExecSyncResponse> {
        // Exec does not take the container's lock: several may run at once, and a long one
        // must not block StopContainer.
        let id = self.resolve_async(id).await?;
        let env = self.env.clone();
        tokio::task::spawn_blocking(move || exec::exec_sync(&env, &id, cmd, timeout_secs))
            .await
            .map_err(|e| CriError::internal("ExecSync task", e))?
    }

    /// The ids of a pod's containers.
    pub fn ids_in_pod(&self, pod_sandbox_id: &str) -> CriResult<Vec<String>> {
        Ok(self
            .env
            .store
            .list_shared::<ContainerRecord>(CONTAINERS)?
            .iter()
            .filter(|(_, r)| r.pod_sandbox_id == pod_sandbox_id)
            .map(|(id, _)| id.clone())
            .collect())
    }

    /// StopPodSandbox's first step: every container of the pod stopped (no grace: the pod is
    /// going away; kubelet stopped them gracefully before if it wanted to), all at once.
    pub async fn stop_pod(&self, pod_sandbox_id: &str) -> CriResult<()> {
        let ids = self.ids_in_pod(pod_sandbox_id)?;
        let stops = ids.iter().map(|id| self.stop_in_locked_pod(id, 0));
        futures::future::join_all(stops).await.into_iter().collect()
    }

    /// The pod's lock, exclusive: held by StopPodSandbox and RemovePodSandbox around
    /// [`Self::stop_pod`] / [`Self::remove_pod`] and the pod's own teardown.
    pub async fn lock_pod(&self, pod_sandbox_id: &str) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.pod_locks.exclusive(pod_sandbox_id).await
    }

    /// Drops the lock of a removed pod.
    pub fn forget_pod(&self, pod_sandbox_id: &str) {
        self.pod_locks.forget(pod_sandbox_id);
    }

    /// RemovePodSandbox's first step: every container of the pod removed.
    pub async fn remove_pod(&self, pod_sandbox_id: &str) -> CriResult<()> {
        for id in self.ids_in_pod(pod_sandbox_id)? {
            self.remove_in_locked_pod(&id).await?;
        }
        Ok(())
    }

    /// A container's record, refreshed from its shim's exit file.
    pub async fn record(&self, id: &str) -> CriResult<ContainerRecord> {
        self.blocking(id, refresh::refreshed).await
    }

    /// The ids of the containers that are created or running as last recorded.
    pub fn live_ids(&self) -> CriResult<Vec<String>> {
        Ok(self
            .env
            .store
            .list_shared::<ContainerRecord>(CONTAINERS)?
            .iter()
            .filter(|(_, r)| matches!(r.state, ContainerState::Created | ContainerState::Running))
            .map(|(id, _)| id.clone())
            .collect())
    }

    /// `<state>/containers/<id>`, where the shim records the exit.
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.env.container_dir(id)
    }

    /// The statuses of a pod's containers as they are now (for events).
    pub async fn statuses_in_pod(
        &self,
        pod_sandbox_id: &str,
    ) -> CriResult<Vec<cri_proto::v1::ContainerStatus>> {
        let env = self.env.clone();
        let pod_sandbox_id = pod_sandbox_id.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for (_, record) in env.store.list_shared::<ContainerRecord>(CONTAINERS)?.iter() {
                if record.pod_sandbox_id != pod_sandbox_id
                    || record.state == ContainerState::Creating
                {
                    continue;
                }
                let updated = refresh::refresh_shared(&env, record)?;
                let record = updated.as_ref().unwrap_or(record);
                out.extend(view::status_response(&env, record, false).status);
            }
            Ok(out)
        })
        .await
        .map_err(|e| CriError::internal("container statuses task", e))?
    }

    /// The containers the event publisher knows alive (it verifies and forgets them).
    pub fn live(&self) -> Arc<LiveSet> {
        self.live.clone()
    }

    /// The environment, for the streaming backend.
    pub(crate) fn env_handle(&self) -> Arc<ContainerEnv> {
        self.env.clone()
    }

    /// Runs `f` on a blocking thread holding the container's pod's lock (shared) and the
    /// container's lock.
    async fn blocking<T: Send + 'static>(
        &self,
        id: &str,
        f: impl FnOnce(&ContainerEnv, &str) -> CriResult<T> + Send + 'static,
    ) -> CriResult<T> {
        let id = self.resolve_async(id).await?;
        let _pod = self.pod_lock_of(&id).await?;
        self.blocking_in_locked_pod(&id, f).await
    }

    /// The shared lock of a container's pod (`None` when the container is gone: `f` then
    /// answers NotFound itself).
    async fn pod_lock_of(
        &self,
        id: &str,
    ) -> CriResult<Option<tokio::sync::OwnedRwLockReadGuard<()>>> {
        let id = id.to_owned();
        let record = self
            .read(move |env| Ok(env.store.get::<ContainerRecord>(CONTAINERS, &id)?))
            .await?;
        let Some(record) = record else {
            return Ok(None);
        };
        Ok(Some(self.pod_locks.shared(&record.pod_sandbox_id).await))
    }

    /// Runs a store read (or other short blocking work) on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ContainerEnv) -> CriResult<T> + Send + 'static,
    ) -> CriResult<T> {
        let env = self.env.clone();
        tokio::task::spawn_blocking(move || f(&env))
            .await
            .map_err(|e| CriError::internal("container store read task", e))?
    }

    /// [`ContainerManager::resolve`] on the blocking pool, for async callers.
    pub async fn resolve_async(&self, id: &str) -> CriResult<String> {
        let id = id.to_owned();
        self.read(move |env| resolve_in(env, &id)).await
    }

    /// Runs `f` on a blocking thread holding the container's lock; the caller holds its pod's
    /// and gives the full id.
    async fn blocking_in_locked_pod<T: Send + 'static>(
        &self,
        id: &str,
        f: impl FnOnce(&ContainerEnv, &str) -> CriResult<T> + Send + 'static,
    ) -> CriResult<T> {
        let id = id.to_owned();
        let guard = self.lock_id(&id);
        let _held = guard.lock().await;
        let env = self.env.clone();
        tokio::task::spawn_blocking(move || f(&env, &id))
            .await
            .map_err(|e| CriError::internal("container task", e))?
    }

    /// Runs `f` on a blocking thread holding the container's pod's lock and its own
    /// (CheckpointContainer).
    pub(crate) async fn with_container<T: Send + 'static>(
        &self,
        id: &str,
        f: impl FnOnce(&ContainerEnv, &str) -> CriResult<T> + Send + 'static,
    ) -> CriResult<T> {
        self.blocking(id, f).await
    }

    /// What the runtime handlers support here.
    pub fn features(&self) -> &crate::features::Features {
        &self.env.features
    }

    /// The full id of a container given its id or a unique prefix.
    pub fn resolve(&self, id: &str) -> CriResult<String> {
        resolve_in(&self.env, id)
    }

    fn lock_id(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.get(id)
    }

    fn forget_lock(&self, id: &str) {
        self.locks.forget(id);
    }
}

/// A record's ListContainers item: its cached encoding when there is one, else encoded now.
fn encoded_item(record: &ContainerRecord, cached: Option<&Bytes>) -> Bytes {
    cached
        .cloned()
        .unwrap_or_else(|| crate::view_cache::encode(&view::container(record)))
}

/// The full id of a container given its id or a unique prefix (a store read).
fn resolve_in(env: &ContainerEnv, id: &str) -> CriResult<String> {
    crate::ids::resolve::<ContainerRecord>(&env.store, CONTAINERS, id, "container", "container_id")
}
