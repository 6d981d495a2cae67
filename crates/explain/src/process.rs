//! Facts about one process from `/proc/PID`: its namespaces, capabilities, seccomp, AppArmor
//! profile and OOM score adjustment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::report::Security;
use crate::ExplainError;

/// The namespace types, as `/proc/PID/ns` names them.
pub const NAMESPACE_TYPES: [&str; 7] = ["net", "ipc", "uts", "pid", "mnt", "user", "cgroup"];

/// Capability names by number (the kernel's order).
const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// `/proc/<pid>/<name>`.
pub fn proc_file(pid: i32, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{name}"))
}

fn read(path: &Path) -> Result<String, ExplainError> {
    std::fs::read_to_string(path).map_err(|source| ExplainError::Proc {
        path: path.to_path_buf(),
        source,
    })
}

/// The inode of namespace `kind` of process `pid` (`/proc/PID/ns/KIND`), `None` when the
/// process is gone or the kernel has no such namespace.
pub fn namespace_inode(pid: i32, kind: &str) -> Option<u64> {
    let link = std::fs::read_link(proc_file(pid, &format!("ns/{kind}"))).ok()?;
    parse_namespace_link(&link.to_string_lossy())
}

/// `net:[4026531840]` → 4026531840.
fn parse_namespace_link(link: &str) -> Option<u64> {
    link.split_once(":[")?.1.strip_suffix(']')?.parse().ok()
}

/// The inode of a file (a namespace pinned by a bind mount has the namespace's).
pub fn file_inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// The security settings of process `pid`.
pub fn security(pid: i32) -> Result<Security, ExplainError> {
    let status = read(&proc_file(pid, "status"))?;
    let mut security = security_from_status(&status);
    security.apparmor = apparmor_label(pid);
    Ok(security)
}

/// Capabilities, seccomp and no_new_privs from `/proc/PID/status` text.
fn security_from_status(status: &str) -> Security {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let mask = |name: &str| {
        field(name)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0)
    };
    let number = |name: &str| field(name).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    Security {
        capabilities: capability_names(mask("CapEff")),
        bounding_set_size: mask("CapBnd").count_ones() as usize,
        seccomp: match number("Seccomp") {
            0 => "disabled",
            1 => "strict",
            _ => "filter",
        }
        .to_owned(),
        seccomp_filters: number("Seccomp_filters"),
        no_new_privs: number("NoNewPrivs") == 1,
        apparmor: None,
    }
}

/// The names of the capabilities set in `mask`, `CAP_<n>` for numbers this list does not know.
fn capability_names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| {
            CAPABILITIES
                .get(bit)
                .map_or_else(|| format!("CAP_{bit}"), |name| (*name).to_owned())
        })
        .collect()
}

/// The AppArmor label of `pid`, `None` when AppArmor is not enabled.
fn apparmor_label(pid: i32) -> Option<String> {
    let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim() == "Y");
    if !enabled {
        return None;
    }
    ["attr/apparmor/current", "attr/current"]
        .iter()
        .find_map(|name| std::fs::read_to_string(proc_file(pid, name)).ok())
        .map(|label| label.trim_end_matches(['\n', '\0']).to_owned())
}

/// The values of `sysctls` (dotted names) as process `pid` sees them: read on a short-lived
/// thread that joins its network, IPC and UTS namespaces, which is where the namespaced
/// sysctls live (`/proc/sys` shows the reader's namespaces, not the file owner's). The caller's
/// threads never change namespace. A value that cannot be read is left out.
pub fn sysctls_of(pid: i32, names: &[String]) -> HashMap<String, String> {
    let names = names.to_vec();
    let reader = std::thread::spawn(move || {
        for kind in ["net", "ipc", "uts"] {
            let Ok(ns) = std::fs::File::open(proc_file(pid, &format!("ns/{kind}"))) else {
                return HashMap::new();
            };
            if nix::sched::setns(ns, nix::sched::CloneFlags::empty()).is_err() {
                return HashMap::new();
            }
        }
        names
            .into_iter()
            .filter_map(|name| {
                if name.contains("..") || name.contains('\0') {
                    return None;
                }
                let file = Path::new("/proc/sys").join(name.replace('.', "/"));
                let value = std::fs::read_to_string(file).ok()?;
                let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
                Some((name, value))
            })
            .collect()
    });
    reader.join().unwrap_or_default()
}

/// `/proc/PID/oom_score_adj`.
pub fn oom_score_adj(pid: i32) -> Option<i32> {
    std::fs::read_to_string(proc_file(pid, "oom_score_adj"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn namespace_links_give_their_inode() {
        assert_eq!(parse_namespace_link("net:[4026531840]"), Some(4026531840));
        assert_eq!(parse_namespace_link("garbage"), None);
        let own = namespace_inode(std::process::id() as i32, "mnt").unwrap();
        assert!(own > 0);
    }

    #[test]
    fn status_gives_capabilities_seccomp_and_no_new_privs() {
        let status = "Name:\tsleep\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n\
                      NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n";
        let s = security_from_status(status);
        assert_eq!(s.seccomp, "filter");
        assert_eq!(s.seccomp_filters, 1);
        assert!(s.no_new_privs);
        assert_eq!(s.bounding_set_size, 14);
        assert_eq!(s.capabilities.len(), 14);
        assert!(s.capabilities.contains(&"CAP_CHOWN".to_owned()));
        assert!(s.capabilities.contains(&"CAP_NET_BIND_SERVICE".to_owned()));
        assert!(!s.capabilities.contains(&"CAP_SYS_ADMIN".to_owned()));
    }

    #[test]
    fn sysctls_are_read_in_the_processs_namespaces() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: joining a namespace needs root");
            return;
        }
        let me = std::process::id() as i32;
        let names = vec![
            "kernel.ostype".to_owned(),
            "net.no.such".to_owned(),
            "../etc".to_owned(),
        ];
        let values = sysctls_of(me, &names);
        assert_eq!(
            values.get("kernel.ostype").map(String::as_str),
            Some("Linux")
        );
        assert_eq!(values.len(), 1, "{values:?}");
    }

    #[test]
    fn unknown_capability_bits_are_numbered() {
        assert_eq!(capability_names(1 << 45), vec!["CAP_45"]);
        assert_eq!(
            security_from_status("Seccomp:\t0\n").seccomp,
            "disabled".to_owned()
        );
    }
}
