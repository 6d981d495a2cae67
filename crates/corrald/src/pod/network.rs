//! The pod network: the CNI config pods join (and whether there is one), the netns pin and
//! network record made before ADD, the CNI runtime arguments of a pod, and DEL with the config
//! the pod was attached with. RunPodSandbox runs the ADD ([`super::run`]) and teardown the DEL
//! ([`super::teardown`]), each on a thread of its own beside the rest of their work.

use std::path::Path;
use std::time::Duration;

use super::paths::netns_pin_path;
use super::record::SandboxRecord;
use super::run::step;
use super::PodEnv;
use crate::error::{CriError, CriResult};
use crate::phases::Phases;

/// How long CNI plugins a killed daemon left running get to finish before DEL.
const CNI_SETTLE: Duration = Duration::from_secs(30);

/// The CNI network pods are attached to, or the reason pods cannot get a network.
pub(super) fn network_config(env: &PodEnv) -> Result<corral_cni::NetworkConfigList, String> {
    match env.cni_config.load() {
        Ok(Some(net)) => Ok(net),
        Ok(None) => Err(format!(
            "no network config found in {}: install a CNI config (e.g. packaging/10-corral-bridge.conflist)",
            env.config.cni_conf_dir.display()
        )),
        Err(e) => Err(format!("CNI config in {}: {e}", env.config.cni_conf_dir.display())),
    }
}

/// Whether a CNI network config is in place: `Ok` or the reason pods cannot get a network.
pub(super) fn network_ready_in(env: &PodEnv) -> Result<(), String> {
    network_config(env).map(|_| ())
}

/// Pins the pause's network namespace where the record (written before anything was made)
/// says it is; returns what the ADD needs.
pub(super) fn prepare<'a>(
    env: &PodEnv,
    network_config: Option<&'a corral_cni::NetworkConfigList>,
    record: &SandboxRecord,
    phases: &Phases,
    span: &tracing::Span,
    pause_pid: i32,
) -> CriResult<(&'a corral_cni::NetworkConfigList, corral_cni::RuntimeConf)> {
    let pin = netns_pin_path(env, &record.id);
    phases
        .step(span, "netns_pin", || env.network.pin_netns(pause_pid, &pin))
        .map_err(step("pin network namespace"))?;
    crate::crash::point("run_pod:netns_pinned");
    let net = network_config
        .ok_or_else(|| CriError::Internal("RunPodSandbox: pod network config not loaded".into()))?;
    Ok((net, runtime_conf(env, record, &pin)))
}

/// CNI DEL with the network config the pod was attached with (cached at ADD, else recorded
/// before ADD), so that a changed or removed config in the conf dir still tears down what was
/// made. DEL without a cached result still frees host-local's IP: it releases by container id.
pub(super) fn cni_del(
    cni: &corral_cni::Cni,
    conf_dir: &Path,
    network: &str,
    recorded: Option<&serde_json::Value>,
    rt: &corral_cni::RuntimeConf,
) -> corral_cni::Result<()> {
    // The cache is written without an fsync: after a power loss it may be torn, and DEL then
    // runs as if nothing were cached.
    let cached = cni
        .cached_attachment(network, &rt.container_id, &rt.if_name)
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "ignoring an unreadable CNI result cache");
            None
        });
    let recorded = recorded
        .and_then(|json| corral_cni::NetworkConfigList::from_json(json.clone()).ok())
        .filter(|net| net.name() == network);
    let net = match (cached, recorded) {
        (Some(attachment), _) => attachment.network,
        (None, Some(net)) => net,
        (None, None) => match corral_cni::CniConfig::load(conf_dir)? {
            Some(net) if net.name() == network => net,
            // Nothing cached and no such network: ADD never completed a plugin.
            _ => return Ok(()),
        },
    };
    cni.del(&net, rt)
}

/// The CNI runtime arguments for a sandbox (see [`corral_cni::pod::PodNetwork`]).
pub(super) fn runtime_conf(
    env: &PodEnv,
    record: &SandboxRecord,
    netns: &Path,
) -> corral_cni::RuntimeConf {
    let meta = record.config.metadata.clone().unwrap_or_default();
    let port_mappings = record
        .config
        .port_mappings
        .iter()
        .map(|p| corral_cni::pod::PortMapping {
            host_port: p.host_port,
            container_port: p.container_port,
            protocol: cri_proto::v1::Protocol::try_from(p.protocol)
                .unwrap_or(cri_proto::v1::Protocol::Tcp)
                .as_str_name()
                .to_ascii_lowercase(),
            host_ip: p.host_ip.clone(),
        })
        .collect();
    let pod_cidr = env
        .store
        .get::<String>(corral_store::SETTINGS, super::POD_CIDR_KEY)
        .ok()
        .flatten();
    corral_cni::pod::PodNetwork {
        sandbox_id: record.id.clone(),
        namespace: meta.namespace,
        name: meta.name,
        uid: meta.uid,
        port_mappings,
        pod_cidr,
    }
    .runtime_conf(netns)
}

/// Waits (up to [`CNI_SETTLE`]) for CNI plugins a killed daemon left running on the netns pin
/// `pin` to finish, so that the DEL that follows does not race an ADD still under way.
pub(super) fn settle_cni(pin: &Path) {
    let deadline = std::time::Instant::now() + CNI_SETTLE;
    while std::time::Instant::now() < deadline {
        match corral_sandbox::find::env_under("CNI_NETNS", pin) {
            Ok(found) if !found.is_empty() => std::thread::sleep(Duration::from_millis(50)),
            _ => return,
        }
    }
    tracing::warn!(pin = %pin.display(), "CNI plugins still run; deleting the network anyway");
}
