//! Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus,
//! ListPodSandbox and StreamPodSandboxes.
//!
//! A sandbox is a `corral-pause` process holding the pod's namespaces, a pinned network
//! namespace wired up by CNI, a pod cgroup, a `/dev/shm` tmpfs and a directory of generated
//! files. Its record in the metadata store is the source of truth; everything else is derived
//! from the sandbox id (paths) or recorded in it (pids, cgroups, IPs), so that a restarted
//! corrald finds and tears down what an earlier one made.

pub(crate) mod host;
mod network;
mod owned_cgroups;
mod paths;
mod record;
mod run;
mod teardown;
#[cfg(test)]
mod tests;
mod validate;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use corral_store::{Store, SANDBOXES, SETTINGS};
use cri_proto::v1::{
    ContainerEventType, PodSandbox, PodSandboxFilter, PodSandboxStatusResponse,
    RunPodSandboxRequest,
};

use crate::config::Config;
use crate::error::{CriError, CriResult};
use crate::ids::lock;
pub use record::{NamespaceModes, SandboxRecord, SandboxState};

/// The key under which the pod CIDR from UpdateRuntimeConfig is kept.
const POD_CIDR_KEY: &str = "pod_cidr";

/// systemd's manager over D-Bus for the systemd driver where systemd runs; `None` (cgroupfs
/// writes) otherwise. Says at start which way pod cgroups are made.
fn systemd_units(
    driver: corral_cgroups::CgroupDriver,
) -> anyhow::Result<Option<Arc<dyn corral_cgroups::systemd::UnitManager>>> {
    use corral_cgroups::systemd::{systemd_available, SystemdBus};
    match driver {
        corral_cgroups::CgroupDriver::Cgroupfs => {
            tracing::info!("cgroup driver cgroupfs: pod cgroups are made through cgroupfs");
            Ok(None)
        }
        corral_cgroups::CgroupDriver::Systemd if systemd_available() => {
            let bus = SystemdBus::connect()?;
            tracing::info!(
                "cgroup driver systemd: pod slices and scopes are systemd units (D-Bus)"
            );
            Ok(Some(Arc::new(bus)))
        }
        corral_cgroups::CgroupDriver::Systemd => {
            tracing::info!(
                "cgroup driver systemd without a running systemd: slices and scopes are named \
                 the systemd way but made through cgroupfs"
            );
            Ok(None)
        }
    }
}

/// Everything the sandbox lifecycle needs, shared with blocking tasks.
pub(crate) struct PodEnv {
    pub config: Config,
    pub store: Arc<Store>,
    /// The pause launcher and the pod's namespace and shm mounts.
    pub pauses: Arc<dyn host::Pauses>,
    /// The pod network (netns pins, CNI).
    pub network: Arc<dyn host::PodNetwork>,
    /// Pod cgroups.
    pub cgroups: Arc<dyn host::PodCgroups>,
    pub cgroup_layout: corral_cgroups::CgroupLayout,
    pub cgroup_driver: corral_cgroups::CgroupDriver,
    /// Per runtime handler: `Ok` when it can run pods with user namespaces, else why not.
    pub userns_support: HashMap<String, Result<(), String>>,
    /// Where sandbox changes are reported (GetContainerEvents).
    pub events: crate::events::EventSink,
    /// systemd's manager, when the systemd driver is configured and systemd runs: pod slices
    /// and pause scopes are then its units.
    pub systemd: Option<Arc<dyn corral_cgroups::systemd::UnitManager>>,
    /// The CNI conf dir's network config, re-read only when the directory changes.
    pub cni_config: corral_cni::ConfigWatch,
}

/// Owns the pod sandboxes of this daemon.
pub struct PodManager {
    env: Arc<PodEnv>,
    /// Pod name key (`name_namespace_uid_attempt`) → sandbox id, for AlreadyExists checks.
    names: Mutex<HashMap<String, String>>,
    /// One lock per sandbox id, so that operations on one pod never interleave.
    locks: crate::ids::IdLocks,
    /// The pods whose pause the event publisher watches and knows alive.
    live: Arc<crate::live::LiveSet>,
    /// Each record's ListPodSandbox item, encoded, with its pause dead and alive.
    views: crate::view_cache::ViewCache<SandboxRecord, [Bytes; 2]>,
}

impl PodManager {
    /// Loads the recorded sandboxes, reconciles them with what is alive, and serves them.
    pub async fn start(
        config: Config,
        store: Arc<Store>,
        events: crate::events::EventSink,
    ) -> anyhow::Result<PodManager> {
        let pause_binary = corral_sandbox::pause::find_binary("corral-pause").ok_or_else(|| {
            anyhow::anyhow!(
                "corral-pause not found next to corrald nor on PATH; install it beside corrald"
            )
        })?;
        let network = host::CniNetwork {
            cni: corral_cni::Cni::new(config.cni_bin_dir.clone(), config.state.join("cni")),
            conf_dir: config.cni_conf_dir.clone(),
        };
        let cgroup_layout = corral_cgroups::CgroupLayout::detect()?;
        let cgroup_driver = match config.cgroup_driver {
            crate::config::CgroupDriverName::Cgroupfs => corral_cgroups::CgroupDriver::Cgroupfs,
            crate::config::CgroupDriverName::Systemd => corral_cgroups::CgroupDriver::Systemd,
        };
        let userns_support = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || crate::userns::handler_support(&config)).await?
        };
        let systemd = systemd_units(cgroup_driver)?;
        let env = PodEnv {
            cni_config: corral_cni::ConfigWatch::new(&config.cni_conf_dir),
            userns_support,
            config,
            store,
            pauses: Arc::new(host::HostPauses {
                binary: pause_binary,
            }),
            network: Arc::new(network),
            cgroups: Arc::new(host::HostCgroups {
                layout: cgroup_layout.clone(),
                driver: cgroup_driver,
                systemd: systemd.clone(),
            }),
            cgroup_layout,
            cgroup_driver,
            events,
            systemd,
        };
        PodManager::with_env(env).await
    }

    /// Serves the sandboxes of `env` (reconciled first); the unit tests give it fakes.
    pub(crate) async fn with_env(env: PodEnv) -> anyhow::Result<PodManager> {
        let manager = PodManager {
            env: Arc::new(env),
            names: Mutex::new(HashMap::new()),
            locks: crate::ids::IdLocks::default(),
            live: Arc::default(),
            views: Default::default(),
        };
        manager.reconcile().await?;
        Ok(manager)
    }

    /// At start-up: finishes or undoes what a crashed daemon left half-done, marks pods whose
    /// pause process died as not ready, and rebuilds the name index.
    async fn reconcile(&self) -> anyhow::Result<()> {
        let env = self.env.clone();
        let names = tokio::task::spawn_blocking(move || teardown::reconcile(&env)).await??;
        *lock(&self.names) = names;
        Ok(())
    }

    /// RunPodSandbox.
    pub async fn run(&self, request: RunPodSandboxRequest) -> CriResult<String> {
        let config = request.config.ok_or_else(|| {
            CriError::InvalidArgument("config: missing pod sandbox config".into())
        })?;
        let plan = run::SandboxPlan::new(&self.env, config, request.runtime_handler)?;
        let id = plan.id.clone();
        {
            let mut names = lock(&self.names);
            if let Some(existing) = names.get(&plan.name_key) {
                return Err(CriError::AlreadyExists(format!(
                    "pod sandbox {} already exists as {existing}; stop and remove it, or use a new attempt number",
                    plan.name_key
                )));
            }
            names.insert(plan.name_key.clone(), id.clone());
        }
        let guard = self.lock_id(&id);
        let _held = guard.lock().await;
        let env = self.env.clone();
        let name_key = plan.name_key.clone();
        // The steps' spans belong to the RunPodSandbox call's span.
        let span = tracing::Span::current();
        let result = tokio::task::spawn_blocking(move || span.in_scope(|| plan.execute(&env)))
            .await
            .map_err(|e| CriError::internal("RunPodSandbox task", e))
            .and_then(|r| r);
        match &result {
            Ok(()) => {
                for kind in [
                    ContainerEventType::ContainerCreatedEvent,
                    ContainerEventType::ContainerStartedEvent,
                ] {
                    self.env.events.sandbox(&id, kind, None);
                }
            }
            Err(_) => {
                lock(&self.names).remove(&name_key);
                self.forget_lock(&id);
            }
        }
        result.map(|()| id)
    }

    /// StopPodSandbox: idempotent; an unknown id succeeds (nothing to stop), as CRI asks.
    pub async fn stop(&self, id: &str) -> CriResult<()> {
        let id = id.to_owned();
        let id = match self
            .blocking("StopPodSandbox", move |env| resolve_in(env, &id))
            .await
        {
            Ok(id) => id,
            Err(CriError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let guard = self.lock_id(&id);
        let _held = guard.lock().await;
        let env = self.env.clone();
        let task_id = id.clone();
        tokio::task::spawn_blocking(move || teardown::stop(&env, &task_id))
            .await
            .map_err(|e| CriError::internal("StopPodSandbox task", e))??;
        self.env
            .events
            .sandbox(&id, ContainerEventType::ContainerStoppedEvent, None);
        Ok(())
    }

    /// RemovePodSandbox: stops the pod if needed and frees everything; an unknown id succeeds.
    pub async fn remove(&self, id: &str) -> CriResult<()> {
        let id = id.to_owned();
        let Ok(id) = self
            .blocking("RemovePodSandbox", move |env| resolve_in(env, &id))
            .await
        else {
            return Ok(());
        };
        let guard = self.lock_id(&id);
        let held = guard.lock().await;
        let task_id = id.clone();
        let (last_status, removed) = self
            .blocking("RemovePodSandbox", move |env| {
                // The event of a removed sandbox carries its last status: there is none to
                // read after.
                let last_status = record_in(env, &task_id).ok().and_then(|record| {
                    view::status_response(env, &record, record.pause_alive(), false).status
                });
                Ok((last_status, teardown::remove(env, &task_id)?))
            })
            .await?;
        if removed.is_some() {
            let stopped = last_status.clone().map(|mut status| {
                status.state = cri_proto::v1::PodSandboxState::SandboxNotready as i32;
                status
            });
            self.env.events.sandbox(
                &id,
                ContainerEventType::ContainerStoppedEvent,
                stopped.clone(),
            );
            self.env
                .events
                .sandbox(&id, ContainerEventType::ContainerDeletedEvent, stopped);
        }
        if let Some(name_key) = removed {
            let mut names = lock(&self.names);
            if names.get(&name_key) == Some(&id) {
                names.remove(&name_key);
            }
        }
        drop(held);
        self.forget_lock(&id);
        Ok(())
    }

    /// PodSandboxStatus.
    pub async fn status(&self, id: &str, verbose: bool) -> CriResult<PodSandboxStatusResponse> {
        let id = id.to_owned();
        self.blocking("PodSandboxStatus", move |env| {
            let record = record_in(env, &resolve_in(env, &id)?)?;
            let alive = record.pause_alive();
            Ok(view::status_response(env, &record, alive, verbose))
        })
        .await
    }

    /// ListPodSandbox: the items encoded, most of them taken from the views of the store's
    /// snapshot (see [`crate::view_cache`]).
    pub async fn list_encoded(&self, filter: Option<&PodSandboxFilter>) -> CriResult<Vec<Bytes>> {
        self.listed(filter, |record, alive, views| match views {
            Some(views) => views[usize::from(alive)].clone(),
            None => crate::view_cache::encode(&view::pod_sandbox(record, alive)),
        })
    }

    /// StreamPodSandboxes and the metrics: the items decoded.
    pub async fn list(&self, filter: Option<&PodSandboxFilter>) -> CriResult<Vec<PodSandbox>> {
        self.listed(filter, |record, alive, _| view::pod_sandbox(record, alive))
    }

    /// `shown` of each made sandbox the filter passes, given whether it is ready with its
    /// pause running and its encoded views, from one read of the store. Readiness is known
    /// from the pause's watch when it is verified (see [`crate::live`], asked once for all),
    /// else read from `/proc`; a sandbox not recorded ready is not looked at (its state says
    /// enough).
    fn listed<T>(
        &self,
        filter: Option<&PodSandboxFilter>,
        shown: impl Fn(&SandboxRecord, bool, Option<&[Bytes; 2]>) -> T,
    ) -> CriResult<Vec<T>> {
        let records = self.env.store.list_shared::<SandboxRecord>(SANDBOXES)?;
        let views = self.views.views(&records, encoded_views);
        let verified = self.live.verified_among(records.iter().map(|(_, r)| {
            r.pause
                .filter(|_| r.state == SandboxState::Ready)
                .map(|p| (r.id.as_str(), p.pid))
        }));
        let mut out = Vec::new();
        for (index, ((_, record), verified)) in records.iter().zip(verified).enumerate() {
            if record.state == SandboxState::Creating {
                continue;
            }
            let alive = record.state == SandboxState::Ready && (verified || record.pause_alive());
            if view::matches(record, alive, filter) {
                out.push(shown(record, alive, views.get(index)));
            }
        }
        Ok(out)
    }

    /// The pods the event publisher knows alive (it verifies and forgets them).
    pub fn live(&self) -> Arc<crate::live::LiveSet> {
        self.live.clone()
    }

    /// The records of the sandboxes the filter passes, from one read of the store (the stats
    /// of every pod need the records, not their CRI views).
    pub fn records(&self, filter: Option<&PodSandboxFilter>) -> CriResult<Vec<SandboxRecord>> {
        self.listed(filter, |record, _, _| record.clone())
    }

    /// UpdatePodSandboxResources: new pod-level limits (resources plus overhead) on the pod
    /// cgroup, as kubelet sends them for an in-place pod resize.
    pub async fn update_resources(
        &self,
        id: &str,
        resources: Option<cri_proto::v1::LinuxContainerResources>,
        overhead: Option<cri_proto::v1::LinuxContainerResources>,
    ) -> CriResult<()> {
        let id = id.to_owned();
        let record = self
            .blocking("UpdatePodSandboxResources", move |env| {
                record_in(env, &resolve_in(env, &id)?)
            })
            .await?;
        let Some(cgroup) = record.pod_cgroup.clone() else {
            return Err(CriError::FailedPrecondition(format!(
                "pod sandbox {} has no cgroup",
                record.id
            )));
        };
        let Some(limits) = validate::pod_limits(resources.as_ref(), overhead.as_ref()) else {
            return Err(CriError::InvalidArgument(
                "resources, overhead: give at least one of them".into(),
            ));
        };
        limits.check(&self.env.cgroup_layout).map_err(|e| {
            CriError::InvalidArgument(format!(
                "resources (with overhead): {}",
                crate::error::brief(e)
            ))
        })?;
        let cgroups = self.env.cgroups.clone();
        tokio::task::spawn_blocking(move || cgroups.apply(&cgroup, &limits))
            .await
            .map_err(|e| CriError::internal("UpdatePodSandboxResources task", e))?
            .map_err(crate::error::during(
                "UpdatePodSandboxResources: apply resources to the pod cgroup",
            ))
    }

    /// UpdateRuntimeConfig: the pod CIDR is kept and handed to CNI plugins as `ipRanges`.
    pub async fn set_pod_cidr(&self, cidr: &str) -> CriResult<()> {
        if cidr.is_empty() {
            return Ok(());
        }
        if !view::looks_like_cidr(cidr) {
            return Err(CriError::InvalidArgument(format!(
                "runtime_config.network_config.pod_cidr: {cidr:?} is not a CIDR such as 10.88.0.0/16"
            )));
        }
        let cidr = cidr.to_string();
        // A redb commit (an fsync): not on a tokio worker.
        self.blocking("UpdateRuntimeConfig", move |env| {
            Ok(env.store.put(SETTINGS, POD_CIDR_KEY, &cidr)?)
        })
        .await
    }

    /// Whether runtime handler `name` can run pods with their own user namespace.
    pub fn supports_user_namespaces(&self, name: &str) -> bool {
        self.env
            .userns_support
            .get(name)
            .is_some_and(|support| support.is_ok())
    }

    /// Whether the pod network can be set up: `Ok` or the reason it cannot.
    pub fn network_ready(&self) -> Result<(), String> {
        network::network_ready_in(&self.env)
    }

    /// The full id of a sandbox given its id or a unique prefix of it.
    fn resolve(&self, id: &str) -> CriResult<String> {
        resolve_in(&self.env, id)
    }

    /// [`PodManager::sandbox`] on the blocking pool, for async callers.
    pub async fn sandbox_async(&self, id: &str) -> CriResult<SandboxRecord> {
        let id = id.to_owned();
        self.blocking("pod sandbox read", move |env| {
            record_in(env, &resolve_in(env, &id)?)
        })
        .await
    }

    /// The records of the sandboxes `ids` that still exist, in one store read on the blocking
    /// pool (not one read per id).
    pub async fn sandboxes_async(&self, ids: Vec<String>) -> CriResult<Vec<SandboxRecord>> {
        self.blocking("pod sandbox read", move |env| {
            let wanted: std::collections::HashSet<String> = ids.into_iter().collect();
            Ok(env
                .store
                .list::<SandboxRecord>(SANDBOXES)?
                .into_iter()
                .filter(|(id, _)| wanted.contains(id))
                .map(|(_, record)| record)
                .collect())
        })
        .await
    }

    /// Whether the pause of `sandbox` runs (a `/proc` read), on the blocking pool.
    pub async fn pause_alive_async(&self, sandbox: &SandboxRecord) -> bool {
        let sandbox = sandbox.clone();
        tokio::task::spawn_blocking(move || sandbox.pause_alive())
            .await
            .unwrap_or(false)
    }

    /// Runs `f` on the blocking pool: store reads and commits, `/proc` reads, teardown.
    async fn blocking<T: Send + 'static>(
        &self,
        rpc: &'static str,
        f: impl FnOnce(&PodEnv) -> CriResult<T> + Send + 'static,
    ) -> CriResult<T> {
        let env = self.env.clone();
        tokio::task::spawn_blocking(move || f(&env))
            .await
            .map_err(|e| CriError::internal(&format!("{rpc} task"), e))?
    }

    /// A sandbox's record, by id or unique prefix.
    pub fn sandbox(&self, id: &str) -> CriResult<SandboxRecord> {
        let id = self.resolve(id)?;
        self.record(&id)
    }

    fn record(&self, id: &str) -> CriResult<SandboxRecord> {
        record_in(&self.env, id)
    }

    fn lock_id(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.get(id)
    }

    fn forget_lock(&self, id: &str) {
        self.locks.forget(id);
    }
}

/// A record's ListPodSandbox item, encoded, with its pause dead (`[0]`) and alive (`[1]`): the
/// view depends on the pause only through its state, and only for a ready sandbox.
fn encoded_views(record: &SandboxRecord) -> [Bytes; 2] {
    let dead = crate::view_cache::encode(&view::pod_sandbox(record, false));
    let alive = if record.state == SandboxState::Ready {
        crate::view_cache::encode(&view::pod_sandbox(record, true))
    } else {
        dead.clone()
    };
    [dead, alive]
}

/// The full id of a sandbox given its id or a unique prefix of it (a store read).
fn resolve_in(env: &PodEnv, id: &str) -> CriResult<String> {
    crate::ids::resolve::<SandboxRecord>(&env.store, SANDBOXES, id, "pod sandbox", "pod_sandbox_id")
}

/// A sandbox's record by full id (a store read).
fn record_in(env: &PodEnv, id: &str) -> CriResult<SandboxRecord> {
    env.store
        .get(SANDBOXES, id)?
        .ok_or_else(|| CriError::NotFound(format!("pod sandbox {id} not found")))
}
