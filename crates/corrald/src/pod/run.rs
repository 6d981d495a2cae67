//! RunPodSandbox: validate the request, then build the sandbox step by step, recording each
//! resource as it is made so that a failure at any step tears down exactly what exists.

use std::path::{Path, PathBuf};

use corral_sandbox::files::{DnsSettings, PodFiles};
use corral_sandbox::pause::PauseSpec;
use corral_sandbox::sysctl::{self, PrivateNamespaces};
use corral_store::SANDBOXES;
use cri_proto::v1::{NamespaceMode, PodSandboxConfig};

use super::record::{name_key, namespace_modes, PauseRef, SandboxRecord, SandboxState};
use super::{teardown, PodEnv};
use crate::error::{CriError, CriResult};

/// `oom_score_adj` of pause processes: kubelet's value for critical node components.
const PAUSE_OOM_SCORE_ADJ: i32 = -998;

/// A validated RunPodSandbox request, ready to execute.
pub(super) struct Plan {
    pub id: String,
    pub name_key: String,
    config: PodSandboxConfig,
    runtime_handler: String,
    hostname: String,
    sysctls: Vec<(String, String)>,
    network: NamespaceMode,
    pid: NamespaceMode,
    ipc: NamespaceMode,
    /// The pod's own user namespace (userns_options mode POD).
    userns: Option<corral_sandbox::UsernsMappings>,
    /// The CNI network the pod joins (loaded once, at validation), when it has its own netns.
    network_config: Option<corral_cni::NetworkConfigList>,
}

impl Plan {
    /// Checks the request; every refusal names the field and what to do.
    pub fn new(env: &PodEnv, config: PodSandboxConfig, runtime_handler: String) -> CriResult<Plan> {
        let invalid = |msg: String| Err(CriError::InvalidArgument(msg));
        let Checked {
            hostname,
            sysctls,
            network,
            pid,
            ipc,
            userns,
        } = check_config(&config)?;
        if !runtime_handler.is_empty() && !env.config.runtimes.contains_key(&runtime_handler) {
            let known: Vec<&str> = env.config.runtimes.keys().map(String::as_str).collect();
            return invalid(format!(
                "runtime_handler: unknown handler {}; configured handlers: {}",
                crate::error::shown(&runtime_handler),
                known.join(", ")
            ));
        }
        if userns.is_some() {
            let handler = if runtime_handler.is_empty() {
                crate::config::DEFAULT_HANDLER
            } else {
                &runtime_handler
            };
            if let Some(Err(reason)) = env.userns_support.get(handler) {
                return Err(CriError::FailedPrecondition(format!(
                    "config.linux.security_context.namespace_options.userns_options: runtime \
                     handler {handler:?} cannot run pods with user namespaces here: {reason}"
                )));
            }
        }
        let id = new_id()?;
        env.cgroup_driver
            .pod_relative_path(&cgroup_parent(env, &config, &id))
            .map_err(|e| {
                CriError::InvalidArgument(format!(
                    "config.linux.cgroup_parent: {}",
                    crate::error::brief(e)
                ))
            })?;
        let network_config = match network {
            NamespaceMode::Pod => Some(super::network_config(env).map_err(|reason| {
                CriError::FailedPrecondition(format!("pod network is not ready: {reason}"))
            })?),
            _ => None,
        };
        Ok(Plan {
            id,
            network_config,
            name_key: name_key(&config),
            config,
            runtime_handler,
            hostname,
            sysctls,
            network,
            pid,
            ipc,
            userns,
        })
    }

    /// Builds the sandbox. On failure, everything made so far is undone and the error names
    /// the step that failed.
    pub fn execute(self, env: &PodEnv) -> CriResult<()> {
        let mut record = SandboxRecord {
            id: self.id.clone(),
            config: self.config.clone(),
            runtime_handler: self.runtime_handler.clone(),
            created_at: now_nanos(),
            state: SandboxState::Creating,
            pause: None,
            netns_path: None,
            cni_network: None,
            ips: Vec::new(),
            pod_cgroup: None,
            shm_path: None,
            userns_path: None,
        };
        env.store.put(SANDBOXES, &record.id, &record)?;
        match self.build(env, &mut record) {
            Ok(()) => {
                record.state = SandboxState::Ready;
                env.store.put(SANDBOXES, &record.id, &record)?;
                tracing::info!(pod_id = %record.id, pod = %self.name_key, ips = ?record.ips, "pod sandbox ready");
                Ok(())
            }
            Err(err) => {
                tracing::warn!(pod_id = %record.id, error = %err, "RunPodSandbox failed; undoing");
                if let Err(undo) = teardown::destroy(env, &mut record) {
                    tracing::error!(pod_id = %record.id, error = %undo, "undoing a failed RunPodSandbox");
                }
                if let Err(e) = env.store.delete(SANDBOXES, &record.id) {
                    tracing::error!(pod_id = %record.id, error = %e, "deleting the record of a failed sandbox");
                }
                Err(err)
            }
        }
    }

    fn build(&self, env: &PodEnv, record: &mut SandboxRecord) -> CriResult<()> {
        let step = |name: &'static str| {
            move |e: String| CriError::Internal(format!("RunPodSandbox: {name}: {e}"))
        };
        let dir = sandbox_dir(env, &self.id);
        let dns = self.config.dns_config.as_ref().map(|d| DnsSettings {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        });
        let files_hostname = self
            .files_hostname()
            .map_err(|e| step("read the node's hostname")(e.to_string()))?;
        PodFiles::write(&dir, &files_hostname, dns.as_ref(), &[])
            .map_err(|e| step("write pod files")(e.to_string()))?;

        let parent = cgroup_parent(env, &self.config, &self.id);
        let cgroup = match env.systemd.as_deref() {
            Some(units) => {
                corral_cgroups::PodCgroup::create_with_systemd(&env.cgroup_layout, &parent, units)
            }
            None => {
                corral_cgroups::PodCgroup::create(&env.cgroup_layout, env.cgroup_driver, &parent)
            }
        }
        .map_err(|e| step("create pod cgroup")(e.to_string()))?;
        record.pod_cgroup = Some(cgroup.clone());
        super::owned_cgroups::remember(env, &cgroup)?;
        if let Some(resources) = pod_resources(&self.config) {
            cgroup
                .apply_with(&resources, env.systemd.as_deref())
                .map_err(|e| step("apply pod resources")(e.to_string()))?;
        }

        let spec = PauseSpec {
            new_net: self.network == NamespaceMode::Pod,
            new_ipc: self.ipc == NamespaceMode::Pod,
            new_uts: self.network == NamespaceMode::Pod,
            new_pid: self.pid == NamespaceMode::Pod,
            hostname: (self.network == NamespaceMode::Pod).then(|| self.hostname.clone()),
            sysctls: self.sysctls.clone(),
            oom_score_adj: PAUSE_OOM_SCORE_ADJ,
            userns: self.userns,
        };
        let pause = corral_sandbox::pause::spawn_pause(&env.pause_binary, &spec)
            .map_err(|e| step("start pause process")(e.to_string()))?;
        record.pause = Some(PauseRef {
            pid: pause.pid,
            start_time: pause.start_time,
        });
        cgroup
            .child(&self.id)
            .and_then(|leaf| {
                cgroup.add_process_with(&leaf.relative_path, pause.pid, env.systemd.as_deref())
            })
            .map_err(|e| step("move pause process into the pod cgroup")(e.to_string()))?;

        if self.userns.is_some() {
            let pin = userns_pin_path(env, &self.id);
            corral_sandbox::userns::pin(pause.pid, &pin)
                .map_err(|e| step("pin user namespace")(e.to_string()))?;
            record.userns_path = Some(pin);
        }

        if self.ipc == NamespaceMode::Pod {
            let shm = dir.join("shm");
            corral_sandbox::shm::mount_shm(&shm, corral_sandbox::shm::DEFAULT_SHM_SIZE_BYTES)
                .map_err(|e| step("mount /dev/shm")(e.to_string()))?;
            record.shm_path = Some(shm);
        }

        if self.network == NamespaceMode::Pod {
            let pin = netns_pin_path(env, &self.id);
            corral_sandbox::netns::NetnsPin::pin(pause.pid, &pin)
                .map_err(|e| step("pin network namespace")(e.to_string()))?;
            record.netns_path = Some(pin.clone());
            let net = self.network_config.as_ref().ok_or_else(|| {
                CriError::Internal("RunPodSandbox: pod network config not loaded".into())
            })?;
            record.cni_network = Some(net.name().to_string());
            // Recorded before ADD so that a crash during ADD still leads to a DEL.
            env.store.put(SANDBOXES, &record.id, record)?;
            let rt = super::teardown::runtime_conf(env, record, &pin);
            let result = env.cni.add(net, &rt).map_err(|e| {
                // A failed ADD has already been rolled back (DEL of the whole list).
                record.cni_network = None;
                step("set up pod network (CNI ADD)")(e.to_string())
            })?;
            record.ips = result.ips().iter().map(|ip| ip.to_string()).collect();
        }
        PodFiles::write(&dir, &files_hostname, dns.as_ref(), &record.ips)
            .map_err(|e| step("write pod files")(e.to_string()))?;
        Ok(())
    }

    /// The name for the pod's `hostname` and `hosts` files: the pod's, or the node's for a
    /// hostNetwork pod that gives none (kubelet sends none; the pod shares the node's UTS name).
    fn files_hostname(&self) -> nix::Result<String> {
        if !self.hostname.is_empty() {
            return Ok(self.hostname.clone());
        }
        nix::unistd::gethostname().map(|name| name.to_string_lossy().into_owned())
    }
}

/// What [`check_config`] found valid and worked out.
struct Checked {
    hostname: String,
    sysctls: Vec<(String, String)>,
    network: NamespaceMode,
    pid: NamespaceMode,
    ipc: NamespaceMode,
    userns: Option<corral_sandbox::UsernsMappings>,
}

/// The checks of a RunPodSandbox request that need nothing but the request itself; every
/// refusal is InvalidArgument naming the field.
fn check_config(config: &PodSandboxConfig) -> CriResult<Checked> {
    let invalid = |msg: String| Err(CriError::InvalidArgument(msg));
    let Some(meta) = config.metadata.as_ref() else {
        return invalid("config.metadata: missing; give name, namespace, uid and attempt".into());
    };
    if meta.name.is_empty() {
        return invalid("config.metadata.name: must not be empty".into());
    }
    if meta.namespace.is_empty() {
        return invalid("config.metadata.namespace: must not be empty".into());
    }
    check_namespace_modes(config)?;
    let (network, pid, ipc) = namespace_modes(config);
    if network == NamespaceMode::Container || ipc == NamespaceMode::Container {
        return invalid(
            "config.linux.security_context.namespace_options: network and ipc must be POD or NODE"
                .into(),
        );
    }
    if pid == NamespaceMode::Target {
        return invalid(
                "config.linux.security_context.namespace_options.pid: TARGET applies to containers, not pods"
                    .into(),
            );
    }
    let userns = crate::userns::pod_userns(config, network, pid, ipc)?;
    let hostname = if config.hostname.is_empty() {
        if network == NamespaceMode::Node {
            String::new()
        } else {
            meta.name.chars().take(63).collect()
        }
    } else {
        config.hostname.clone()
    };
    if !hostname.is_empty() && !valid_hostname(&hostname) {
        return invalid(format!(
                "config.hostname: {} is not a valid hostname (letters, digits, '-' and '.', at most 64 characters)",
                crate::error::shown(&hostname)
            ));
    }
    let sysctls = check_sysctls(config, network, ipc)?;
    let security = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    if security.is_some_and(|s| s.run_as_group.is_some() && s.run_as_user.is_none()) {
        return invalid(
            "config.linux.security_context.run_as_group: a group needs a user; set run_as_user too"
                .into(),
        );
    }
    for (i, pm) in config.port_mappings.iter().enumerate() {
        if !(1..=65535).contains(&pm.container_port) || !(0..=65535).contains(&pm.host_port) {
            return invalid(format!(
                    "config.port_mappings[{i}]: container_port must be 1-65535 and host_port 0-65535 (got {} and {})",
                    pm.container_port, pm.host_port
                ));
        }
    }
    if !config.log_directory.is_empty() && !Path::new(&config.log_directory).is_absolute() {
        return invalid(format!(
            "config.log_directory: {} is not an absolute path; give the pod's log \
                 directory as an absolute path (kubelet uses /var/log/pods/...)",
            crate::error::shown(&config.log_directory)
        ));
    }
    Ok(Checked {
        hostname,
        sysctls,
        network,
        pid,
        ipc,
        userns,
    })
}

/// Refuses namespace modes that are not CRI `NamespaceMode` values (instead of taking them
/// for POD).
fn check_namespace_modes(config: &PodSandboxConfig) -> CriResult<()> {
    let Some(opts) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
    else {
        return Ok(());
    };
    for (field, value) in [
        ("network", opts.network),
        ("pid", opts.pid),
        ("ipc", opts.ipc),
    ] {
        if NamespaceMode::try_from(value).is_err() {
            return Err(CriError::InvalidArgument(format!(
                "config.linux.security_context.namespace_options.{field}: unknown namespace \
                 mode {value}; use POD (0), CONTAINER (1), NODE (2) or TARGET (3)"
            )));
        }
    }
    Ok(())
}

/// Sysctls of the pod, refused when they are not namespaced or would change the host's
/// namespaces.
fn check_sysctls(
    config: &PodSandboxConfig,
    network: NamespaceMode,
    ipc: NamespaceMode,
) -> CriResult<Vec<(String, String)>> {
    let Some(linux) = config.linux.as_ref() else {
        return Ok(Vec::new());
    };
    let private = PrivateNamespaces {
        net: network == NamespaceMode::Pod,
        ipc: ipc == NamespaceMode::Pod,
        uts: network == NamespaceMode::Pod,
    };
    sysctl::pod_sysctls(linux.sysctls.iter(), private).map_err(|e| {
        CriError::InvalidArgument(format!("config.linux.sysctls: {}", crate::error::brief(e)))
    })
}

/// The cgroup parent kubelet asked for, or, when none is given (as by crictl without one), a
/// pod cgroup of corral's own: `/corral/pod<id>` (cgroupfs) or `corral-pod<id>.slice` (systemd).
pub(super) fn cgroup_parent(env: &PodEnv, config: &PodSandboxConfig, id: &str) -> String {
    let given = config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    if !given.is_empty() {
        // kubelet's systemd form `/kubepods.slice/<slice>` becomes the slice's name; a bad path
        // is kept as given for `pod_relative_path` to refuse with the reason.
        return env.cgroup_driver.unit_parent(&given).unwrap_or(given);
    }
    let short = &id[..id.len().min(12)];
    match env.cgroup_driver {
        corral_cgroups::CgroupDriver::Cgroupfs => format!("/corral/pod{short}"),
        corral_cgroups::CgroupDriver::Systemd => format!("corral-pod{short}.slice"),
    }
}

/// Pod-level limits: `resources`, plus `overhead` added on top, when kubelet gives them.
fn pod_resources(config: &PodSandboxConfig) -> Option<corral_cgroups::Resources> {
    let linux = config.linux.as_ref()?;
    pod_limits(linux.resources.as_ref(), linux.overhead.as_ref())
}

/// The pod cgroup's limits from `resources` and `overhead`; `None` when neither is given.
pub(super) fn pod_limits(
    resources: Option<&cri_proto::v1::LinuxContainerResources>,
    overhead: Option<&cri_proto::v1::LinuxContainerResources>,
) -> Option<corral_cgroups::Resources> {
    if resources.is_none() && overhead.is_none() {
        return None;
    }
    let mut res = resources
        .map(crate::resources::from_cri)
        .unwrap_or_default();
    if let Some(overhead) = overhead {
        crate::resources::add_overhead(&mut res, overhead);
    }
    Some(res)
}

/// `<state>/sandboxes/<id>`: hostname, hosts, resolv.conf and the shm mount point.
pub(super) fn sandbox_dir(env: &PodEnv, id: &str) -> PathBuf {
    env.config.state.join("sandboxes").join(id)
}

/// `<state>/netns/<id>`: the bind mount that keeps the pod's network namespace alive.
pub(super) fn netns_pin_path(env: &PodEnv, id: &str) -> PathBuf {
    env.config.state.join("netns").join(id)
}

/// `<state>/userns/<id>`: the bind mount that keeps the pod's user namespace alive.
pub(super) fn userns_pin_path(env: &PodEnv, id: &str) -> PathBuf {
    env.config.state.join("userns").join(id)
}

fn valid_hostname(name: &str) -> bool {
    name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

pub(crate) fn new_id() -> CriResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| CriError::internal("generate id", e))?;
    Ok(hex::encode(bytes))
}

pub(crate) fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(valid_hostname("web-0"));
        assert!(valid_hostname("a.b.c"));
        assert!(!valid_hostname("-x"));
        assert!(!valid_hostname("a..b"));
        assert!(!valid_hostname("has space"));
        assert!(!valid_hostname(&"x".repeat(65)));
    }

    fn pod(name: &str) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(cri_proto::v1::PodSandboxMetadata {
                name: name.into(),
                namespace: "default".into(),
                uid: "uid".into(),
                attempt: 0,
            }),
            ..Default::default()
        }
    }

    fn refusal(config: &PodSandboxConfig) -> String {
        match check_config(config) {
            Err(CriError::InvalidArgument(m)) => m,
            Err(other) => panic!("expected InvalidArgument, got {other:?}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn an_unknown_namespace_mode_is_refused_naming_the_field() {
        let mut config = pod("web");
        config.linux = Some(cri_proto::v1::LinuxPodSandboxConfig {
            security_context: Some(cri_proto::v1::LinuxSandboxSecurityContext {
                namespace_options: Some(cri_proto::v1::NamespaceOption {
                    pid: 99,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let m = refusal(&config);
        assert!(
            m.contains("namespace_options.pid") && m.contains("99"),
            "{m}"
        );
    }

    #[test]
    fn a_relative_log_directory_is_refused() {
        let mut config = pod("web");
        config.log_directory = "var/log/pods/x".into();
        assert!(refusal(&config).starts_with("config.log_directory:"));
        config.log_directory = "/var/log/pods/x".into();
        assert!(check_config(&config).is_ok());
    }

    #[test]
    fn a_huge_hostname_is_refused_with_a_short_message() {
        let mut config = pod("web");
        config.hostname = "h".repeat(1 << 20);
        let m = refusal(&config);
        assert!(m.starts_with("config.hostname:"), "{}", &m[..40]);
        assert!(m.len() < 1024, "{} bytes", m.len());
    }

    mod hostile {
        use cri_proto::v1::{
            LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceOption, PortMapping,
        };
        use proptest::prelude::*;

        use super::*;

        fn hostile_string() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(String::new()),
                Just("..".to_owned()),
                Just("../../etc".to_owned()),
                Just("/var/log/pods/p".to_owned()),
                Just("a\0b".to_owned()),
                Just("net/ipv4/ip_forward".to_owned()),
                Just("kernel.shm_rmid_forced".to_owned()),
                Just("net.ipv4.ip_forward".to_owned()),
                Just("x".repeat(1 << 20)),
                "[a-z0-9./-]{1,20}",
                any::<String>(),
            ]
        }

        fn mostly<T: Clone + std::fmt::Debug + 'static>(
            benign: T,
            hostile: impl Strategy<Value = T> + 'static,
        ) -> BoxedStrategy<T> {
            prop_oneof![4 => Just(benign), 1 => hostile].boxed()
        }

        prop_compose! {
            fn hostile_pod()(
                name in mostly("web".to_owned(), hostile_string()),
                namespace in mostly("default".to_owned(), hostile_string()),
                hostname in mostly(String::new(), hostile_string()),
                log_directory in mostly(String::new(), hostile_string()),
                modes in mostly((0, 0, 0), (any::<i32>(), 0..5i32, 0..5i32)),
                sysctls in mostly(
                    vec![],
                    prop::collection::vec((hostile_string(), hostile_string()), 0..3),
                ),
                ports in mostly(vec![], prop::collection::vec((any::<i32>(), any::<i32>()), 0..3)),
                group_only in mostly(false, Just(true)),
            ) -> PodSandboxConfig {
                let mut config = pod(&name);
                if let Some(meta) = config.metadata.as_mut() {
                    meta.namespace = namespace;
                }
                config.hostname = hostname;
                config.log_directory = log_directory;
                config.port_mappings = ports
                    .into_iter()
                    .map(|(container_port, host_port)| PortMapping {
                        container_port,
                        host_port,
                        ..Default::default()
                    })
                    .collect();
                config.linux = Some(LinuxPodSandboxConfig {
                    sysctls: sysctls.into_iter().collect(),
                    security_context: Some(LinuxSandboxSecurityContext {
                        namespace_options: Some(NamespaceOption {
                            network: modes.0,
                            pid: modes.1,
                            ipc: modes.2,
                            ..Default::default()
                        }),
                        run_as_group: group_only.then_some(cri_proto::v1::Int64Value { value: 1 }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                config
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever a RunPodSandbox request holds, the checks answer without panicking;
            /// a refusal is a short InvalidArgument naming a field of the config.
            #[test]
            fn hostile_pod_configs_are_refused_naming_the_field(config in hostile_pod()) {
                match check_config(&config) {
                    Ok(checked) => {
                        prop_assert!(checked.hostname.len() <= 64);
                        prop_assert!(
                            config.log_directory.is_empty()
                                || config.log_directory.starts_with('/')
                        );
                    }
                    Err(CriError::InvalidArgument(m)) => {
                        prop_assert!(m.starts_with("config."), "{}", &m[..m.len().min(200)]);
                        prop_assert!(m.len() <= 2048, "{} bytes", m.len());
                    }
                    Err(other) => prop_assert!(false, "not InvalidArgument: {other:?}"),
                }
            }
        }
    }
}
