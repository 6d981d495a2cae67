//! StopPodSandbox, RemovePodSandbox, the undo of a failed RunPodSandbox, and the start-up
//! reconciliation. Every step tolerates its resource being gone already, so each operation is
//! idempotent and survives a daemon restart at any point.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use corral_store::SANDBOXES;

use super::record::{PauseRef, SandboxRecord, SandboxState};
use super::run::{netns_pin_path, sandbox_dir, userns_pin_path};
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
    if let Some(cgroup) = record.pod_cgroup.as_ref() {
        let leaf = cgroup
            .child(&record.id)
            .map_err(|e| CriError::internal("pause cgroup path", e))?;
        cgroup
            .remove_leaf_with(&leaf.relative_path, env.systemd.as_deref())
            .map_err(|e| CriError::internal("remove pause cgroup", e))?;
        super::owned_cgroups::release(env, cgroup)?;
    }
    record.pod_cgroup = None;
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
    let network = record.cni_network.clone().map(|network| {
        let pin = record
            .netns_path
            .clone()
            .unwrap_or_else(|| netns_pin_path(env, &record.id));
        let rt = runtime_conf(env, record, &pin);
        (network, rt)
    });
    let pause = record.pause;
    let (stopped, deleted) = std::thread::scope(|scope| {
        let deleting = network.as_ref().map(|(network, rt)| {
            let thread = std::thread::Builder::new()
                .name("cni-del".into())
                .spawn_scoped(scope, move || cni_del(env, network, rt));
            (thread, network, rt)
        });
        let stopped = pause.map(stop_pause);
        let deleted = deleting.map(|(thread, network, rt)| {
            let outcome = match thread {
                Ok(thread) => thread.join().map_err(|_| {
                    CriError::Internal("tear down pod network: the CNI DEL thread panicked".into())
                })?,
                // No thread to spare: DEL here, after the pause.
                Err(_) => cni_del(env, network, rt),
            };
            outcome.map_err(|e| CriError::internal("tear down pod network (CNI DEL)", e))
        });
        (stopped, deleted)
    });
    if let Some(stopped) = stopped {
        errors.note(stopped);
    }
    if let Some(deleted) = deleted {
        if deleted.is_ok() {
            record.cni_network = None;
        }
        errors.note(deleted);
    }
    if let Some(shm) = record.shm_path.clone() {
        match corral_sandbox::shm::unmount(&shm) {
            Ok(()) => record.shm_path = None,
            Err(e) => errors.note(Err(CriError::internal("unmount /dev/shm", e))),
        }
    }
    if let Some(pin) = record.netns_path.clone() {
        match corral_sandbox::netns::NetnsPin::unpin(&pin) {
            Ok(()) => record.netns_path = None,
            Err(e) => errors.note(Err(CriError::internal("unpin network namespace", e))),
        }
    }
    // A crash between pinning and recording leaves a pin the record does not name.
    let userns_pin = record
        .userns_path
        .clone()
        .unwrap_or_else(|| userns_pin_path(env, &record.id));
    match corral_sandbox::userns::unpin(&userns_pin) {
        Ok(()) => record.userns_path = None,
        Err(e) => errors.note(Err(CriError::internal("unpin user namespace", e))),
    }
    errors.into_result()
}

/// Stops the pause process and reaps it if it is corrald's child.
fn stop_pause(pause: PauseRef) -> CriResult<()> {
    let stopped = pause
        .process()
        .stop(PAUSE_GRACE)
        .map_err(|e| CriError::internal("stop pause process", e));
    if let Err(e) = corral_sandbox::reap_if_child(pause.pid) {
        tracing::debug!(pid = pause.pid, error = %e, "reaping pause process");
    }
    stopped
}

/// CNI DEL with the network config the pod was attached with (cached at ADD), so that a changed
/// or removed config in the conf dir still tears down what was made.
fn cni_del(env: &PodEnv, network: &str, rt: &corral_cni::RuntimeConf) -> corral_cni::Result<()> {
    // The cache is written without an fsync: after a power loss it may be torn, and DEL then
    // runs from the network config as if nothing were cached.
    let cached = env
        .cni
        .cached_attachment(network, &rt.container_id, &rt.if_name)
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "ignoring an unreadable CNI result cache");
            None
        });
    let net = match cached {
        Some(attachment) => attachment.network,
        None => match corral_cni::CniConfig::load(&env.config.cni_conf_dir)? {
            Some(net) if net.name() == network => net,
            // Nothing cached and no such network: ADD never completed a plugin.
            _ => return Ok(()),
        },
    };
    env.cni.del(&net, rt)
}

/// The CNI runtime arguments for a sandbox: its ids as CNI_ARGS, port mappings and the pod
/// CIDR as capability arguments.
pub(super) fn runtime_conf(
    env: &PodEnv,
    record: &SandboxRecord,
    netns: &Path,
) -> corral_cni::RuntimeConf {
    let meta = record.config.metadata.clone().unwrap_or_default();
    let mut caps = serde_json::Map::new();
    let ports: Vec<serde_json::Value> = record
        .config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| {
            let protocol = cri_proto::v1::Protocol::try_from(p.protocol)
                .unwrap_or(cri_proto::v1::Protocol::Tcp)
                .as_str_name()
                .to_ascii_lowercase();
            serde_json::json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": protocol,
                "hostIP": p.host_ip,
            })
        })
        .collect();
    caps.insert("portMappings".into(), ports.into());
    if let Ok(Some(cidr)) = env
        .store
        .get::<String>(corral_store::SETTINGS, super::POD_CIDR_KEY)
    {
        caps.insert("ipRanges".into(), serde_json::json!([[{ "subnet": cidr }]]));
    }
    corral_cni::RuntimeConf {
        container_id: record.id.clone(),
        netns_path: netns.to_path_buf(),
        if_name: "eth0".into(),
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), meta.namespace),
            ("K8S_POD_NAME".into(), meta.name),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), record.id.clone()),
            ("K8S_POD_UID".into(), meta.uid),
        ],
        capability_args: caps,
    }
}

/// Start-up: undoes sandboxes a crashed daemon left half-made, marks those whose pause process
/// died as not ready, and returns the name index of the rest.
pub(super) fn reconcile(env: &PodEnv) -> anyhow::Result<HashMap<String, String>> {
    let mut names = HashMap::new();
    for (id, mut record) in env.store.list::<SandboxRecord>(SANDBOXES)? {
        match record.state {
            SandboxState::Creating => {
                tracing::warn!(pod_id = %id, "undoing a sandbox left half-made by an earlier corrald");
                if let Err(e) = destroy(env, &mut record) {
                    tracing::error!(pod_id = %id, error = %e, "could not undo half-made sandbox");
                    env.store.put(SANDBOXES, &id, &record)?;
                    names.insert(record.name_key(), id);
                    continue;
                }
                env.store.delete(SANDBOXES, &id)?;
            }
            SandboxState::Ready if !record.pause_alive() => {
                tracing::warn!(pod_id = %id, "pause process is gone; sandbox is not ready");
                record.state = SandboxState::NotReady;
                env.store.put(SANDBOXES, &id, &record)?;
                env.events.sandbox(
                    &id,
                    cri_proto::v1::ContainerEventType::ContainerStoppedEvent,
                    None,
                );
                names.insert(record.name_key(), id);
            }
            _ => {
                names.insert(record.name_key(), id);
            }
        }
    }
    Ok(names)
}
