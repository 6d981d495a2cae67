//! RunPodSandbox's checks: pure functions of the daemon's rules ([`PodRules`]) and the request,
//! so that every refusal is table-tested without a host.

use std::path::Path;

use corral_sandbox::files::DnsSettings;
use corral_sandbox::sysctl::{self, PrivateNamespaces};
use cri_proto::v1::{NamespaceMode, PodSandboxConfig};

use super::paths::cgroup_parent_for;
use super::record::{namespace_modes, NamespaceModes};
use super::PodEnv;
use crate::error::{CriError, CriResult};

/// What RunPodSandbox's checks need of the daemon: its configuration and what it probed at
/// start, as plain data, so that [`validate`] runs without a host.
pub(super) struct PodRules<'a> {
    /// The configured runtime handlers.
    pub runtimes: &'a std::collections::BTreeMap<String, crate::config::RuntimeHandler>,
    /// Per handler: `Ok` when it can run pods with user namespaces, else why not.
    pub userns_support: &'a std::collections::HashMap<String, Result<(), String>>,
    /// How pod cgroups are named.
    pub cgroup_driver: corral_cgroups::CgroupDriver,
    /// The host's cgroup hierarchies, which decide what limits can be expressed.
    pub cgroup_layout: &'a corral_cgroups::CgroupLayout,
}

impl<'a> PodRules<'a> {
    /// The rules of a running daemon.
    pub fn of(env: &'a PodEnv) -> Self {
        PodRules {
            runtimes: &env.config.runtimes,
            userns_support: &env.userns_support,
            cgroup_driver: env.cgroup_driver,
            cgroup_layout: &env.cgroup_layout,
        }
    }
}

/// Every check of a RunPodSandbox request for the pod `id`, a pure function of the daemon's
/// rules and the request: the request alone ([`check_config`]), then the runtime handler, user
/// namespace support, the cgroup parent and the pod's limits against this daemon's
/// configuration and cgroup layout. Every refusal names the field.
pub(super) fn validate(
    rules: &PodRules<'_>,
    config: &PodSandboxConfig,
    runtime_handler: &str,
    id: &str,
) -> CriResult<Checked> {
    let checked = check_config(config)?;
    if !runtime_handler.is_empty() && !rules.runtimes.contains_key(runtime_handler) {
        let known: Vec<&str> = rules.runtimes.keys().map(String::as_str).collect();
        return Err(CriError::InvalidArgument(format!(
            "runtime_handler: unknown handler {}; configured handlers: {}",
            crate::error::shown(runtime_handler),
            known.join(", ")
        )));
    }
    if checked.userns.is_some() {
        let handler = if runtime_handler.is_empty() {
            crate::config::DEFAULT_HANDLER
        } else {
            runtime_handler
        };
        if let Some(Err(reason)) = rules.userns_support.get(handler) {
            return Err(CriError::FailedPrecondition(format!(
                "config.linux.security_context.namespace_options.userns_options: runtime \
                 handler {handler:?} cannot run pods with user namespaces here: {reason}"
            )));
        }
    }
    rules
        .cgroup_driver
        .pod_relative_path(&cgroup_parent_for(rules.cgroup_driver, config, id))
        .map_err(|e| {
            CriError::InvalidArgument(format!(
                "config.linux.cgroup_parent: {}",
                crate::error::brief(e)
            ))
        })?;
    if let Some(limits) = pod_resources(config) {
        limits.check(rules.cgroup_layout).map_err(|e| {
            CriError::InvalidArgument(format!(
                "config.linux.resources (with config.linux.overhead): {}",
                crate::error::brief(e)
            ))
        })?;
    }
    Ok(checked)
}

/// What [`check_config`] found valid and worked out.
pub(super) struct Checked {
    pub hostname: String,
    pub sysctls: Vec<(String, String)>,
    pub network: NamespaceMode,
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
    pub userns: Option<corral_sandbox::UsernsMappings>,
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
    let NamespaceModes { network, pid, ipc } = namespace_modes(config);
    if network == NamespaceMode::Pod {
        check_cni_args(meta)?;
    }
    check_dns(config)?;
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

/// Refuses metadata that CNI cannot carry in `CNI_ARGS` (`K8S_POD_NAME=...;...`), which
/// would otherwise fail the pod's network set-up.
fn check_cni_args(meta: &cri_proto::v1::PodSandboxMetadata) -> CriResult<()> {
    for (field, value) in [
        ("name", &meta.name),
        ("namespace", &meta.namespace),
        ("uid", &meta.uid),
    ] {
        if value.contains([';', '\0']) {
            return Err(CriError::InvalidArgument(format!(
                "config.metadata.{field}: {} contains ';' or a NUL byte, which CNI_ARGS cannot \
                 carry to the pod's network plugins",
                crate::error::shown(value)
            )));
        }
    }
    Ok(())
}

/// Refuses DNS entries that cannot be written into the pod's `resolv.conf`.
fn check_dns(config: &PodSandboxConfig) -> CriResult<()> {
    let Some(dns) = config.dns_config.as_ref() else {
        return Ok(());
    };
    dns_settings(dns).check().map_err(|e| {
        CriError::InvalidArgument(format!(
            "config.dns_config: {}; give each server, search domain and option as one word",
            crate::error::brief(e)
        ))
    })
}

/// The CRI DNS config as the pod's files take it.
fn dns_settings(dns: &cri_proto::v1::DnsConfig) -> DnsSettings {
    DnsSettings {
        servers: dns.servers.clone(),
        searches: dns.searches.clone(),
        options: dns.options.clone(),
    }
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

/// Pod-level limits: `resources`, plus `overhead` added on top, when kubelet gives them.
pub(super) fn pod_resources(config: &PodSandboxConfig) -> Option<corral_cgroups::Resources> {
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

fn valid_hostname(name: &str) -> bool {
    name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
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

    /// The rules of a daemon with handlers `runc` and `old` (which cannot run user
    /// namespaces), the cgroupfs driver and one cgroup v2 hierarchy with every controller.
    struct TestRules {
        runtimes: std::collections::BTreeMap<String, crate::config::RuntimeHandler>,
        userns_support: std::collections::HashMap<String, Result<(), String>>,
        layout: corral_cgroups::CgroupLayout,
    }

    impl TestRules {
        fn new() -> Option<Self> {
            let handler = |path: &str| crate::config::RuntimeHandler {
                path: path.into(),
                root: None,
            };
            let all = ["cpu", "cpuset", "hugetlb", "io", "memory", "pids"];
            let layout = corral_cgroups::CgroupLayout::from_hierarchies(vec![
                corral_cgroups::Hierarchy::new(
                    corral_cgroups::CgroupVersion::V2,
                    "/sys/fs/cgroup".into(),
                    all.iter().map(|c| c.to_string()).collect(),
                ),
            ])?;
            Some(TestRules {
                runtimes: [("runc", handler("runc")), ("old", handler("runc"))]
                    .into_iter()
                    .map(|(name, h)| (name.to_owned(), h))
                    .collect(),
                userns_support: [
                    ("runc".to_owned(), Ok(())),
                    ("old".to_owned(), Err("the kernel is too old".to_owned())),
                ]
                .into_iter()
                .collect(),
                layout,
            })
        }

        fn rules(&self) -> PodRules<'_> {
            PodRules {
                runtimes: &self.runtimes,
                userns_support: &self.userns_support,
                cgroup_driver: corral_cgroups::CgroupDriver::Cgroupfs,
                cgroup_layout: &self.layout,
            }
        }
    }

    fn linux(config: &mut PodSandboxConfig) -> &mut cri_proto::v1::LinuxPodSandboxConfig {
        config.linux.get_or_insert_with(Default::default)
    }

    fn security(config: &mut PodSandboxConfig) -> &mut cri_proto::v1::LinuxSandboxSecurityContext {
        linux(config)
            .security_context
            .get_or_insert_with(Default::default)
    }

    fn namespaces(config: &mut PodSandboxConfig) -> &mut cri_proto::v1::NamespaceOption {
        security(config)
            .namespace_options
            .get_or_insert_with(Default::default)
    }

    fn resources(config: &mut PodSandboxConfig) -> &mut cri_proto::v1::LinuxContainerResources {
        linux(config).resources.get_or_insert_with(Default::default)
    }

    fn own_userns(config: &mut PodSandboxConfig) {
        let mapping = |host_id| cri_proto::v1::IdMapping {
            host_id,
            container_id: 0,
            length: 65536,
        };
        namespaces(config).userns_options = Some(cri_proto::v1::UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: vec![mapping(100_000)],
            gids: vec![mapping(100_000)],
        });
    }

    fn meta(config: &mut PodSandboxConfig) -> &mut cri_proto::v1::PodSandboxMetadata {
        config.metadata.get_or_insert_with(Default::default)
    }

    fn dns(config: &mut PodSandboxConfig) -> &mut cri_proto::v1::DnsConfig {
        config.dns_config.get_or_insert_with(Default::default)
    }

    type Mutation = fn(&mut PodSandboxConfig, &mut String);

    /// Every refusal of RunPodSandbox's checks: what is wrong, the code, and the field the
    /// message must name.
    const REFUSALS: &[(&str, Mutation, tonic::Code, &str)] = {
        use tonic::Code::{FailedPrecondition, InvalidArgument};
        &[
            (
                "no metadata",
                |c, _| c.metadata = None,
                InvalidArgument,
                "config.metadata",
            ),
            (
                "empty name",
                |c, _| meta(c).name.clear(),
                InvalidArgument,
                "config.metadata.name",
            ),
            (
                "empty namespace",
                |c, _| meta(c).namespace.clear(),
                InvalidArgument,
                "config.metadata.namespace",
            ),
            (
                "unknown network mode",
                |c, _| namespaces(c).network = 7,
                InvalidArgument,
                "namespace_options.network",
            ),
            (
                "CONTAINER network",
                |c, _| namespaces(c).network = NamespaceMode::Container as i32,
                InvalidArgument,
                "config.linux.security_context.namespace_options",
            ),
            (
                "TARGET pid",
                |c, _| namespaces(c).pid = NamespaceMode::Target as i32,
                InvalidArgument,
                "namespace_options.pid",
            ),
            (
                "bad hostname",
                |c, _| c.hostname = "a b".into(),
                InvalidArgument,
                "config.hostname",
            ),
            (
                "global sysctl",
                |c, _| {
                    linux(c).sysctls.insert("kernel.panic".into(), "1".into());
                },
                InvalidArgument,
                "config.linux.sysctls",
            ),
            (
                "group without user",
                |c, _| {
                    security(c).run_as_group = Some(cri_proto::v1::Int64Value { value: 1 });
                },
                InvalidArgument,
                "run_as_group",
            ),
            (
                "port 0",
                |c, _| c.port_mappings.push(Default::default()),
                InvalidArgument,
                "config.port_mappings[0]",
            ),
            (
                "relative log directory",
                |c, _| c.log_directory = "logs".into(),
                InvalidArgument,
                "config.log_directory",
            ),
            (
                "userns with host network",
                |c, _| {
                    own_userns(c);
                    namespaces(c).network = NamespaceMode::Node as i32;
                },
                InvalidArgument,
                "userns_options",
            ),
            (
                "unknown handler",
                |_, h| *h = "kata".into(),
                InvalidArgument,
                "runtime_handler",
            ),
            (
                "userns on a handler without it",
                |c, h| {
                    own_userns(c);
                    *h = "old".into();
                },
                FailedPrecondition,
                "userns_options",
            ),
            (
                "bad cgroup parent",
                |c, _| linux(c).cgroup_parent = "relative/x".into(),
                InvalidArgument,
                "config.linux.cgroup_parent",
            ),
            // Refused only when writing the pod cgroup before, as Internal.
            (
                "swap below memory",
                |c, _| {
                    resources(c).memory_limit_in_bytes = 512 << 20;
                    resources(c).memory_swap_limit_in_bytes = 256 << 20;
                },
                InvalidArgument,
                "config.linux.resources",
            ),
            (
                "bad hugepage size",
                |c, _| {
                    resources(c)
                        .hugepage_limits
                        .push(cri_proto::v1::HugepageLimit {
                            page_size: "../2MB".into(),
                            limit: 1,
                        });
                },
                InvalidArgument,
                "config.linux.resources",
            ),
            (
                "bad unified key",
                |c, _| {
                    resources(c)
                        .unified
                        .insert("memoryhigh".into(), "1G".into());
                },
                InvalidArgument,
                "config.linux.resources",
            ),
            // Refused only when writing resolv.conf before, as Internal.
            (
                "DNS server with a space",
                |c, _| dns(c).servers.push("10.0.0.1 x".into()),
                InvalidArgument,
                "config.dns_config",
            ),
            (
                "empty DNS search",
                |c, _| dns(c).searches.push(String::new()),
                InvalidArgument,
                "config.dns_config",
            ),
            // Refused only by CNI ADD before, as Internal.
            (
                "pod name CNI cannot carry",
                |c, _| {
                    c.hostname = "web".into();
                    meta(c).name = "web;x".into();
                },
                InvalidArgument,
                "config.metadata.name",
            ),
            (
                "pod namespace with NUL",
                |c, _| {
                    meta(c).namespace = "a\0b".into();
                },
                InvalidArgument,
                "config.metadata.namespace",
            ),
        ]
    };

    #[test]
    fn every_refusal_has_its_code_and_names_the_field() {
        let Some(rules) = TestRules::new() else {
            panic!("a one-hierarchy layout is valid");
        };
        let mut failures = Vec::new();
        for (what, mutate, code, field) in REFUSALS {
            let mut config = pod("web");
            let mut handler = String::new();
            mutate(&mut config, &mut handler);
            failures.extend(crate::testing::refusal_mismatch(
                what,
                validate(&rules.rules(), &config, &handler, "0123456789abcdef"),
                *code,
                field,
            ));
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn a_plain_pod_and_its_variants_pass() {
        let Some(rules) = TestRules::new() else {
            panic!("a one-hierarchy layout is valid");
        };
        let mut config = pod("web");
        own_userns(&mut config);
        resources(&mut config).memory_limit_in_bytes = 256 << 20;
        resources(&mut config).memory_swap_limit_in_bytes = 512 << 20;
        dns(&mut config).servers.push("10.96.0.10".into());
        dns(&mut config).options.push("ndots:5".into());
        linux(&mut config).cgroup_parent = "/kubepods/pod1".into();
        for handler in ["", "runc"] {
            let checked = validate(&rules.rules(), &config, handler, "0123456789abcdef");
            assert!(checked.is_ok(), "{handler:?}: {:?}", checked.err());
        }
        let mut host = pod("web");
        namespaces(&mut host).network = NamespaceMode::Node as i32;
        meta(&mut host).name = "web;x".into();
        assert!(validate(&rules.rules(), &host, "", "0123456789abcdef").is_ok());
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
