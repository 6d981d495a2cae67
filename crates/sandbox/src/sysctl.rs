//! Which pod sysctls may be set, and in which namespace each one lives.
//!
//! Keys are accepted in both forms sysctl(8) and Kubernetes know: dotted (`net.ipv4.ip_forward`,
//! where a `/` inside a part stands for a literal dot, as in `net.ipv4.conf.eth0/1.rp_filter`) and
//! slashed (`net/ipv4/conf/eth0.1/rp_filter`). They are normalised to the dotted form, which is what
//! `corral-pause --sysctl` expects.

use std::fmt;

use crate::error::{Result, SandboxError};

/// The namespace whose copy of a sysctl a pod changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SysctlNamespace {
    /// `net.*`
    Net,
    /// `kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`
    Ipc,
    /// `kernel.hostname`, `kernel.domainname`
    Uts,
}

impl fmt::Display for SysctlNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SysctlNamespace::Net => "network",
            SysctlNamespace::Ipc => "IPC",
            SysctlNamespace::Uts => "UTS",
        })
    }
}

/// Which namespaces a pod has of its own (`true`) rather than sharing them with the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrivateNamespaces {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
}

impl PrivateNamespaces {
    /// Whether the pod has its own copy of `namespace`.
    pub fn has(&self, namespace: SysctlNamespace) -> bool {
        match namespace {
            SysctlNamespace::Net => self.net,
            SysctlNamespace::Ipc => self.ipc,
            SysctlNamespace::Uts => self.uts,
        }
    }
}

/// `net.*` sysctls that are global, not per network namespace (Linux 6.x): in a new network
/// namespace they do not exist, and on the host network they would change the whole node.
/// Entries ending in `_` or `.` are prefixes.
const GLOBAL_NET_SYSCTLS: &[&str] = &[
    "net.core.bpf_jit_",
    "net.core.busy_poll",
    "net.core.busy_read",
    "net.core.default_qdisc",
    "net.core.dev_weight",
    "net.core.devconf_inherit_init_net",
    "net.core.fb_tunnels_only_for_init_net",
    "net.core.flow_limit_",
    "net.core.gro_normal_batch",
    "net.core.high_order_alloc_disable",
    "net.core.max_skb_frags",
    "net.core.mem_pcpu_rsv",
    "net.core.message_",
    "net.core.netdev_",
    "net.core.rps_sock_flow_entries",
    "net.core.skb_defer_max",
    "net.core.warnings",
    "net.ipv4.cipso_",
    "net.ipv4.fib_sync_mem",
    "net.ipv4.inet_peer_",
    "net.ipv4.ipfrag_secret_interval",
    "net.ipv4.route.error_",
    "net.ipv4.route.gc_",
    "net.ipv4.route.max_size",
    "net.ipv4.route.redirect_",
    "net.ipv4.tcp_available_ulp",
    "net.ipv4.tcp_low_latency",
    "net.ipv4.tcp_max_orphans",
    "net.ipv4.tcp_mem",
    "net.ipv4.udp_mem",
    "net.ipv6.calipso_",
    "net.ipv6.ip6frag_secret_interval",
    "net.ipv6.mld_max_msf",
    "net.ipv6.mld_qrv",
    "net.netfilter.nf_log_all_netns",
    "net.nf_conntrack_max",
];

fn invalid_key(key: &str, reason: &'static str) -> SandboxError {
    SandboxError::InvalidSysctlKey {
        key: key.to_owned(),
        reason,
    }
}

/// Checks a key and returns it in dotted form (`net/ipv4/ip_forward` → `net.ipv4.ip_forward`).
pub fn normalize_key(key: &str) -> Result<String> {
    if key.is_empty() {
        return Err(invalid_key(key, "empty key"));
    }
    let slashed = key.find(['.', '/']).map(|i| &key[i..i + 1]) == Some("/");
    // The path under /proc/sys, which is what must not escape.
    let path = if slashed {
        key.to_owned()
    } else {
        swap_dots_and_slashes(key)
    };
    for part in path.split('/') {
        if part.is_empty() {
            return Err(invalid_key(key, "empty part"));
        }
        if part == "." || part == ".." {
            return Err(invalid_key(key, "'.' or '..' part"));
        }
        if part.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid_key(key, "whitespace or control character"));
        }
    }
    Ok(swap_dots_and_slashes(&path))
}

fn swap_dots_and_slashes(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect()
}

/// The namespace a sysctl belongs to; an error for malformed keys and for global sysctls, which
/// cannot be set per pod.
pub fn classify(key: &str) -> Result<SysctlNamespace> {
    let dotted = normalize_key(key)?;
    let not_namespaced = || SandboxError::SysctlNotNamespaced {
        key: dotted.clone(),
    };
    if dotted.starts_with("net.") {
        let is_global = GLOBAL_NET_SYSCTLS.iter().any(|global| {
            if global.ends_with(['_', '.']) {
                dotted.starts_with(global)
            } else {
                dotted == *global
            }
        });
        return if is_global {
            Err(not_namespaced())
        } else {
            Ok(SysctlNamespace::Net)
        };
    }
    if dotted.starts_with("kernel.shm")
        || dotted.starts_with("kernel.msg")
        || dotted == "kernel.sem"
        || dotted.starts_with("fs.mqueue.")
    {
        return Ok(SysctlNamespace::Ipc);
    }
    if dotted == "kernel.hostname" || dotted == "kernel.domainname" {
        return Ok(SysctlNamespace::Uts);
    }
    Err(not_namespaced())
}

/// Classifies a sysctl and refuses it when the pod shares its namespace with the host (a pod on the
/// host network must not change the host's `net.*` sysctls). Returns the namespace it needs.
pub fn require_private(key: &str, private: PrivateNamespaces) -> Result<SysctlNamespace> {
    let namespace = classify(key)?;
    if private.has(namespace) {
        Ok(namespace)
    } else {
        Err(SandboxError::SysctlNeedsPrivateNamespace {
            key: normalize_key(key)?,
            namespace,
        })
    }
}

/// Checks all of a pod's sysctls (see [`require_private`]) and returns them normalised, sorted by
/// key, ready for [`crate::PauseSpec::sysctls`].
pub fn pod_sysctls<I, K, V>(sysctls: I, private: PrivateNamespaces) -> Result<Vec<(String, String)>>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut checked = Vec::new();
    for (key, value) in sysctls {
        let (key, value) = (key.as_ref(), value.as_ref());
        require_private(key, private)?;
        let key = normalize_key(key)?;
        if value.contains(['\n', '\0']) {
            return Err(SandboxError::InvalidSysctlValue {
                key,
                reason: "newline or NUL in value",
            });
        }
        checked.push((key, value.to_owned()));
    }
    checked.sort();
    Ok(checked)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const ALL_PRIVATE: PrivateNamespaces = PrivateNamespaces {
        net: true,
        ipc: true,
        uts: true,
    };

    #[test]
    fn keys_are_normalised_to_the_dotted_form() {
        assert_eq!(
            normalize_key("net.ipv4.ip_forward").unwrap(),
            "net.ipv4.ip_forward"
        );
        assert_eq!(
            normalize_key("net/ipv4/ip_forward").unwrap(),
            "net.ipv4.ip_forward"
        );
        assert_eq!(
            normalize_key("net/ipv4/conf/eth0.1/rp_filter").unwrap(),
            "net.ipv4.conf.eth0/1.rp_filter"
        );
        assert_eq!(
            normalize_key("net.ipv4.conf.eth0/1.rp_filter").unwrap(),
            "net.ipv4.conf.eth0/1.rp_filter"
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        for key in [
            "",
            "net..ipv4",
            ".net",
            "net.",
            "net/../kernel/panic",
            "net/./ipv4",
            "net.//.x",
            "net.ipv4.a b",
            "net.ipv4.a\n",
        ] {
            assert!(
                matches!(
                    normalize_key(key),
                    Err(SandboxError::InvalidSysctlKey { .. })
                ),
                "{key:?} accepted"
            );
        }
    }

    #[test]
    fn namespaced_sysctls_are_classified() {
        for (key, namespace) in [
            ("net.ipv4.ip_unprivileged_port_start", SysctlNamespace::Net),
            ("net.ipv4.ip_local_port_range", SysctlNamespace::Net),
            ("net/core/somaxconn", SysctlNamespace::Net),
            ("net.core.rmem_max", SysctlNamespace::Net),
            ("net.ipv4.route.min_pmtu", SysctlNamespace::Net),
            ("kernel.shmmax", SysctlNamespace::Ipc),
            ("kernel.shm_rmid_forced", SysctlNamespace::Ipc),
            ("kernel.msgmnb", SysctlNamespace::Ipc),
            ("kernel.sem", SysctlNamespace::Ipc),
            ("fs.mqueue.msg_max", SysctlNamespace::Ipc),
            ("kernel.hostname", SysctlNamespace::Uts),
            ("kernel.domainname", SysctlNamespace::Uts),
        ] {
            assert_eq!(classify(key).unwrap(), namespace, "{key}");
        }
    }

    #[test]
    fn global_sysctls_are_refused() {
        for key in [
            "kernel.panic",
            "vm.swappiness",
            "fs.file-max",
            "kernel.semx",
            "net.core.netdev_max_backlog",
            "net.core.bpf_jit_enable",
            "net.ipv4.tcp_mem",
            "net.ipv4.route.gc_timeout",
            "net.nf_conntrack_max",
        ] {
            assert!(
                matches!(classify(key), Err(SandboxError::SysctlNotNamespaced { .. })),
                "{key} accepted"
            );
        }
    }

    #[test]
    fn host_namespaces_refuse_their_sysctls() {
        let host_network = PrivateNamespaces {
            net: false,
            ..ALL_PRIVATE
        };
        let error = require_private("net/ipv4/ip_forward", host_network).unwrap_err();
        assert!(matches!(
            &error,
            SandboxError::SysctlNeedsPrivateNamespace { key, namespace: SysctlNamespace::Net }
                if key == "net.ipv4.ip_forward"
        ));
        assert!(error.to_string().contains("network namespace"));
        assert_eq!(
            require_private("kernel.shmmax", host_network).unwrap(),
            SysctlNamespace::Ipc
        );
        let host_ipc = PrivateNamespaces {
            ipc: false,
            ..ALL_PRIVATE
        };
        assert!(require_private("fs.mqueue.queues_max", host_ipc).is_err());
    }

    #[test]
    fn pod_sysctls_come_back_sorted_and_normalised() {
        let sysctls = HashMap::from([
            ("net/ipv4/ip_forward".to_owned(), "1".to_owned()),
            ("kernel.shmmax".to_owned(), "100000".to_owned()),
        ]);
        assert_eq!(
            pod_sysctls(&sysctls, ALL_PRIVATE).unwrap(),
            vec![
                ("kernel.shmmax".to_owned(), "100000".to_owned()),
                ("net.ipv4.ip_forward".to_owned(), "1".to_owned()),
            ]
        );
        assert!(pod_sysctls([("net.ipv4.ip_forward", "1\n0")], ALL_PRIVATE).is_err());
        assert!(pod_sysctls([("vm.swappiness", "1")], ALL_PRIVATE).is_err());
        assert!(
            pod_sysctls(Vec::<(String, String)>::new(), PrivateNamespaces::default())
                .unwrap()
                .is_empty()
        );
    }
}
