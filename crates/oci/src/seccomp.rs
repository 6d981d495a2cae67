//! Seccomp: the built-in `RuntimeDefault` profile, `Localhost` profile files, and the choice
//! between them from a container's security context.
//!
//! # The default profile
//!
//! corral's `RuntimeDefault` is a deny list: every system call is allowed except those that
//! reach kernel state containers do not own (modules, kexec, the clock, keyrings, swap,
//! accounting), create namespaces or mounts, or widen the kernel's attack surface (bpf,
//! perf_event_open, userfaultfd, io_uring). Those fail with `EPERM` (`clone3` with `ENOSYS`, so
//! that libc falls back to `clone`, whose namespace flags are checked argument by argument).
//! Groups of them are gated by the capability that legitimately needs them, as in Docker's
//! profile: a container holding `CAP_SYS_ADMIN` may mount, one holding `CAP_SYS_TIME` may set
//! the clock, and so on. A deny list keeps new, harmless system calls working without a
//! profile update; the capabilities left in the default set are what actually protects the
//! host, and the profile removes the paths around them.

use std::path::{Path, PathBuf};

use cri_proto::v1::{security_profile::ProfileType, LinuxContainerSecurityContext};
use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg,
    LinuxSeccompArgBuilder, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;

use crate::capabilities::{parse_capability, DEFAULT_CAPABILITIES};
use crate::error::SpecError;

/// A group of denied system calls, allowed when the container holds any of `unless`.
struct DeniedGroup {
    unless: &'static [Capability],
    errno: i32,
    syscalls: &'static [&'static str],
}

/// The namespace flags of `clone(2)`: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET.
const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];

/// The default profile's deny list.
const DENIED: &[DeniedGroup] = &[
    DeniedGroup {
        // Obsolete, or kernel-global state no container owns.
        unless: &[],
        errno: libc::EPERM,
        syscalls: &[
            "_sysctl",
            "add_key",
            "keyctl",
            "request_key",
            "nfsservctl",
            "uselib",
            "ustat",
            "sysfs",
            "vm86",
            "vm86old",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
        ],
    },
    DeniedGroup {
        unless: &[Capability::SysAdmin],
        errno: libc::EPERM,
        syscalls: &[
            "mount",
            "umount",
            "umount2",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "pivot_root",
            "unshare",
            "setns",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
            "fanotify_init",
            "swapon",
            "swapoff",
        ],
    },
    DeniedGroup {
        unless: &[Capability::SysAdmin],
        errno: libc::ENOSYS,
        syscalls: &["clone3"],
    },
    DeniedGroup {
        unless: &[Capability::SysAdmin, Capability::Bpf],
        errno: libc::EPERM,
        syscalls: &["bpf"],
    },
    DeniedGroup {
        unless: &[Capability::SysAdmin, Capability::Perfmon],
        errno: libc::EPERM,
        syscalls: &["perf_event_open"],
    },
    DeniedGroup {
        unless: &[Capability::SysAdmin, Capability::Syslog],
        errno: libc::EPERM,
        syscalls: &["syslog"],
    },
    DeniedGroup {
        unless: &[Capability::SysBoot],
        errno: libc::EPERM,
        syscalls: &["reboot", "kexec_load", "kexec_file_load"],
    },
    DeniedGroup {
        unless: &[Capability::SysModule],
        errno: libc::EPERM,
        syscalls: &[
            "init_module",
            "finit_module",
            "delete_module",
            "create_module",
            "query_module",
            "get_kernel_syms",
        ],
    },
    DeniedGroup {
        unless: &[Capability::SysPacct],
        errno: libc::EPERM,
        syscalls: &["acct"],
    },
    DeniedGroup {
        unless: &[Capability::SysPtrace],
        errno: libc::EPERM,
        syscalls: &[
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "process_madvise",
            "kcmp",
            "pidfd_getfd",
            "userfaultfd",
        ],
    },
    DeniedGroup {
        unless: &[Capability::SysRawio],
        errno: libc::EPERM,
        syscalls: &["iopl", "ioperm"],
    },
    DeniedGroup {
        unless: &[Capability::SysTime],
        errno: libc::EPERM,
        syscalls: &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "clock_adjtime",
            "clock_adjtime64",
        ],
    },
    DeniedGroup {
        unless: &[Capability::SysTtyConfig],
        errno: libc::EPERM,
        syscalls: &["vhangup"],
    },
    DeniedGroup {
        unless: &[Capability::SysNice],
        errno: libc::EPERM,
        syscalls: &[
            "get_mempolicy",
            "set_mempolicy",
            "mbind",
            "move_pages",
            "migrate_pages",
        ],
    },
    DeniedGroup {
        unless: &[Capability::DacReadSearch],
        errno: libc::EPERM,
        syscalls: &["open_by_handle_at", "name_to_handle_at"],
    },
];

/// The built-in `RuntimeDefault` profile for a container with the default capability set (see
/// the module documentation for the approach).
pub fn default_seccomp_profile() -> LinuxSeccomp {
    runtime_default_profile(&DEFAULT_CAPABILITIES.into_iter().collect())
}

/// The built-in `RuntimeDefault` profile for a container holding `held`: the deny list without
/// the groups a held capability allows.
pub fn runtime_default_profile(held: &Capabilities) -> LinuxSeccomp {
    let mut syscalls = Vec::new();
    for group in DENIED {
        if group.unless.iter().any(|cap| held.contains(cap)) {
            continue;
        }
        syscalls.push(errno_rule(
            group.syscalls.iter().map(|s| s.to_string()).collect(),
            group.errno,
            None,
        ));
    }
    if !held.contains(&Capability::SysAdmin) {
        // One rule per flag: rules are ORed, the arguments of one rule ANDed.
        for flag in CLONE_NAMESPACE_FLAGS {
            // The builder has a default for every field, so building cannot fail.
            let arg = LinuxSeccompArgBuilder::default()
                .index(0usize)
                .value(flag)
                .value_two(flag)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build();
            match arg {
                Ok(arg) => syscalls.push(errno_rule(
                    vec!["clone".to_owned()],
                    libc::EPERM,
                    Some(vec![arg]),
                )),
                Err(e) => tracing::error!(error = %e, "seccomp clone rule not built"),
            }
        }
    }
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActAllow);
    profile.set_architectures(Some(native_architectures()));
    profile.set_syscalls(Some(syscalls));
    profile
}

fn errno_rule(names: Vec<String>, errno: i32, args: Option<Vec<LinuxSeccompArg>>) -> LinuxSyscall {
    let mut rule = LinuxSyscall::default();
    rule.set_names(names);
    rule.set_action(LinuxSeccompAction::ScmpActErrno);
    rule.set_errno_ret(u32::try_from(errno).ok());
    rule.set_args(args);
    rule
}

/// The architectures a process on this host can make system calls in.
fn native_architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

/// Docker's name for this host's architecture, as profiles' `includes.arches` use it.
fn docker_arch_name() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        std::env::consts::ARCH
    }
}

/// What a container's security context asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SeccompChoice {
    Unconfined,
    RuntimeDefault,
    Localhost(PathBuf),
}

/// Reads the seccomp choice from `seccomp` or, when that is unset, the deprecated
/// `seccomp_profile_path` (`""`/`unconfined`, `runtime/default`/`docker/default`,
/// `localhost/<absolute path>`). Nothing set means unconfined, as kubelet intends.
#[allow(deprecated)] // seccomp_profile_path is read only when seccomp is unset
pub(crate) fn seccomp_choice(
    security: Option<&LinuxContainerSecurityContext>,
) -> Result<SeccompChoice, SpecError> {
    let Some(security) = security else {
        return Ok(SeccompChoice::Unconfined);
    };
    if let Some(profile) = &security.seccomp {
        return match ProfileType::try_from(profile.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(SeccompChoice::RuntimeDefault),
            Ok(ProfileType::Unconfined) => Ok(SeccompChoice::Unconfined),
            Ok(ProfileType::Localhost) => localhost_path(
                &profile.localhost_ref,
                "linux.security_context.seccomp.localhost_ref",
            ),
            Err(_) => Err(SpecError::invalid(
                "linux.security_context.seccomp.profile_type",
                format!(
                    "unknown profile type {}; use RuntimeDefault, Unconfined or Localhost",
                    profile.profile_type
                ),
            )),
        };
    }
    const FIELD: &str = "linux.security_context.seccomp_profile_path";
    match security.seccomp_profile_path.as_str() {
        "" | "unconfined" => Ok(SeccompChoice::Unconfined),
        "runtime/default" | "docker/default" => Ok(SeccompChoice::RuntimeDefault),
        other => match other.strip_prefix("localhost/") {
            Some(path) => localhost_path(path, FIELD),
            None => Err(SpecError::invalid(
                FIELD,
                format!(
                    "unknown profile {other:?}; use runtime/default, unconfined or \
                     localhost/<absolute path>"
                ),
            )),
        },
    }
}

fn localhost_path(path: &str, field: &str) -> Result<SeccompChoice, SpecError> {
    if !Path::new(path).is_absolute() {
        return Err(SpecError::invalid(
            field,
            format!("a Localhost profile must be an absolute path, got {path:?}"),
        ));
    }
    Ok(SeccompChoice::Localhost(PathBuf::from(path)))
}

/// The seccomp filter of a container: none for privileged containers (as containerd) or
/// Unconfined, the built-in profile for RuntimeDefault, the file's for Localhost (which must
/// lie under `localhost_root` when that is set).
pub(crate) fn container_seccomp(
    security: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
    held: &Capabilities,
    localhost_root: Option<&Path>,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if privileged {
        return Ok(None);
    }
    match seccomp_choice(security)? {
        SeccompChoice::Unconfined => Ok(None),
        SeccompChoice::RuntimeDefault => Ok(Some(runtime_default_profile(held))),
        SeccompChoice::Localhost(path) => {
            if let Some(root) = localhost_root {
                check_under_root(&path, root)?;
            }
            load_profile(&path, held).map(Some)
        }
    }
}

fn check_under_root(path: &Path, root: &Path) -> Result<(), SpecError> {
    let refuse = |reason: String| SpecError::SeccompProfile {
        path: path.to_path_buf(),
        reason,
    };
    let resolved =
        std::fs::canonicalize(path).map_err(|e| refuse(format!("cannot be resolved: {e}")))?;
    let root_resolved = std::fs::canonicalize(root).map_err(|e| {
        refuse(format!(
            "the Localhost profile root {} cannot be resolved: {e}",
            root.display()
        ))
    })?;
    if !resolved.starts_with(&root_resolved) {
        return Err(refuse(format!(
            "Localhost profiles must lie under {}; put the profile there",
            root.display()
        )));
    }
    Ok(())
}

/// A profile file in Docker's format, a superset of the OCI one (which also parses as it).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileFile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<Arch>,
    #[serde(default)]
    arch_map: Vec<ArchMapEntry>,
    #[serde(default)]
    flags: Vec<LinuxSeccompFilterFlag>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Vec<ProfileSyscall>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMapEntry {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Vec<Arch>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileSyscall {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Vec<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: RuleFilter,
    #[serde(default)]
    excludes: RuleFilter,
}

/// Docker's conditions on a rule: capabilities held, host architecture, kernel version.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RuleFilter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// Loads a `Localhost` profile: OCI `linux.seccomp` JSON or Docker's profile format, whose
/// rule conditions (`includes`/`excludes` on capabilities, architecture and kernel version)
/// are evaluated for a container holding `held`.
pub fn load_profile(path: &Path, held: &Capabilities) -> Result<LinuxSeccomp, SpecError> {
    let refuse = |reason: String| SpecError::SeccompProfile {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        refuse(format!(
            "cannot be read ({e}); put the profile on the node or choose another"
        ))
    })?;
    let file: ProfileFile = serde_json::from_str(&text)
        .map_err(|e| refuse(format!("is not a seccomp profile: {e}")))?;
    let kernel = host_kernel_version();

    let architectures = if !file.architectures.is_empty() {
        Some(file.architectures)
    } else {
        let native = native_architectures();
        file.arch_map
            .into_iter()
            .find(|entry| native.first() == Some(&entry.architecture))
            .map(|entry| {
                let mut arches = vec![entry.architecture];
                arches.extend(entry.sub_architectures);
                arches
            })
    };

    let mut syscalls = Vec::new();
    for rule in file.syscalls {
        if !rule_applies(&rule.includes, &rule.excludes, held, kernel) {
            continue;
        }
        let mut names = rule.names;
        names.extend(rule.name);
        if names.is_empty() {
            return Err(refuse("a syscall rule names no system call".to_owned()));
        }
        let mut syscall = LinuxSyscall::default();
        syscall.set_names(names);
        syscall.set_action(rule.action);
        syscall.set_errno_ret(rule.errno_ret);
        syscall.set_args(rule.args);
        syscalls.push(syscall);
    }

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(file.default_action);
    profile.set_default_errno_ret(file.default_errno_ret);
    profile.set_architectures(architectures);
    profile.set_flags((!file.flags.is_empty()).then_some(file.flags));
    profile.set_listener_path(file.listener_path);
    profile.set_listener_metadata(file.listener_metadata);
    profile.set_syscalls(Some(syscalls));
    Ok(profile)
}

/// Whether a Docker rule applies: every `includes` condition holds and no `excludes` one does.
fn rule_applies(
    includes: &RuleFilter,
    excludes: &RuleFilter,
    held: &Capabilities,
    kernel: Option<(u32, u32)>,
) -> bool {
    let holds = |name: &String| parse_capability(name).is_some_and(|cap| held.contains(&cap));
    let arch = docker_arch_name();
    if !includes.caps.iter().all(holds) {
        return false;
    }
    if !includes.arches.is_empty() && !includes.arches.iter().any(|a| a == arch) {
        return false;
    }
    if let Some(min) = includes
        .min_kernel
        .as_deref()
        .and_then(parse_kernel_version)
    {
        if kernel.is_some_and(|running| running < min) {
            return false;
        }
    }
    if excludes.caps.iter().any(holds) || excludes.arches.iter().any(|a| a == arch) {
        return false;
    }
    if let Some(min) = excludes
        .min_kernel
        .as_deref()
        .and_then(parse_kernel_version)
    {
        if kernel.is_some_and(|running| running >= min) {
            return false;
        }
    }
    true
}

/// `major.minor` of a kernel release string (`6.1.0-18-amd64` → (6, 1)).
fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

fn host_kernel_version() -> Option<(u32, u32)> {
    let uts = nix::sys::utsname::uname().ok()?;
    parse_kernel_version(&uts.release().to_string_lossy())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, deprecated)]
mod tests {
    use super::*;
    use cri_proto::v1::SecurityProfile;

    fn denied_names(profile: &LinuxSeccomp) -> Vec<String> {
        profile
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|rule| rule.args().is_none())
            .flat_map(|rule| rule.names().clone())
            .collect()
    }

    fn clone_rules(profile: &LinuxSeccomp) -> usize {
        profile
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|rule| rule.names() == &vec!["clone".to_owned()])
            .count()
    }

    #[test]
    fn the_default_profile_allows_by_default_and_denies_the_dangerous() {
        let profile = default_seccomp_profile();
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActAllow);
        let denied = denied_names(&profile);
        for name in [
            "kexec_load",
            "init_module",
            "bpf",
            "mount",
            "unshare",
            "setns",
            "keyctl",
            "ptrace",
            "clock_settime",
            "reboot",
            "clone3",
        ] {
            assert!(denied.contains(&name.to_owned()), "{name} is not denied");
        }
        for name in ["read", "write", "clone", "execve", "chroot", "sethostname"] {
            assert!(!denied.contains(&name.to_owned()), "{name} is denied");
        }
        assert_eq!(clone_rules(&profile), CLONE_NAMESPACE_FLAGS.len());
        let rules = profile.syscalls().as_ref().unwrap();
        let mount_rule = rules
            .iter()
            .find(|r| r.names().contains(&"mount".to_owned()))
            .unwrap();
        assert_eq!(mount_rule.action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(mount_rule.errno_ret(), Some(1));
        let clone3 = rules
            .iter()
            .find(|r| r.names().contains(&"clone3".to_owned()))
            .unwrap();
        assert_eq!(clone3.errno_ret(), u32::try_from(libc::ENOSYS).ok());
    }

    #[test]
    fn capabilities_lift_their_groups() {
        let mut held: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
        held.insert(Capability::SysAdmin);
        held.insert(Capability::SysTime);
        let profile = runtime_default_profile(&held);
        let denied = denied_names(&profile);
        for name in [
            "mount",
            "unshare",
            "bpf",
            "clock_settime",
            "clone3",
            "syslog",
        ] {
            assert!(!denied.contains(&name.to_owned()), "{name} still denied");
        }
        assert!(denied.contains(&"init_module".to_owned()));
        assert_eq!(clone_rules(&profile), 0);
    }

    #[test]
    fn the_default_profile_serialises_as_runc_expects() {
        let json = serde_json::to_value(default_seccomp_profile()).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ALLOW");
        let clone = json["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["names"][0] == "clone")
            .unwrap();
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone["args"][0]["index"], 0);
        assert!(clone["args"][0]["valueTwo"].is_u64());
        assert_eq!(clone["errnoRet"], 1);
    }

    fn security(seccomp: Option<SecurityProfile>, path: &str) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            seccomp,
            seccomp_profile_path: path.to_owned(),
            ..Default::default()
        }
    }

    fn profile(kind: ProfileType, reference: &str) -> Option<SecurityProfile> {
        Some(SecurityProfile {
            profile_type: kind as i32,
            localhost_ref: reference.to_owned(),
        })
    }

    #[test]
    fn the_choice_comes_from_seccomp_then_the_deprecated_path() {
        let choose = |sc: LinuxContainerSecurityContext| seccomp_choice(Some(&sc)).unwrap();
        assert_eq!(seccomp_choice(None).unwrap(), SeccompChoice::Unconfined);
        assert_eq!(choose(security(None, "")), SeccompChoice::Unconfined);
        assert_eq!(
            choose(security(
                profile(ProfileType::RuntimeDefault, ""),
                "unconfined"
            )),
            SeccompChoice::RuntimeDefault
        );
        assert_eq!(
            choose(security(
                profile(ProfileType::Unconfined, ""),
                "runtime/default"
            )),
            SeccompChoice::Unconfined
        );
        assert_eq!(
            choose(security(profile(ProfileType::Localhost, "/p.json"), "")),
            SeccompChoice::Localhost(PathBuf::from("/p.json"))
        );
        assert_eq!(
            choose(security(None, "runtime/default")),
            SeccompChoice::RuntimeDefault
        );
        assert_eq!(
            choose(security(None, "docker/default")),
            SeccompChoice::RuntimeDefault
        );
        assert_eq!(
            choose(security(None, "unconfined")),
            SeccompChoice::Unconfined
        );
        assert_eq!(
            choose(security(None, "localhost//var/lib/kubelet/seccomp/a.json")),
            SeccompChoice::Localhost(PathBuf::from("/var/lib/kubelet/seccomp/a.json"))
        );
    }

    #[test]
    fn bad_choices_are_invalid_arguments() {
        for sc in [
            security(None, "localhost/relative.json"),
            security(None, "something/else"),
            security(profile(ProfileType::Localhost, "relative.json"), ""),
            security(
                Some(SecurityProfile {
                    profile_type: 9,
                    localhost_ref: String::new(),
                }),
                "",
            ),
        ] {
            let err = seccomp_choice(Some(&sc)).unwrap_err();
            assert!(err.is_invalid_argument());
            assert!(err.to_string().contains("seccomp"), "{err}");
        }
    }

    #[test]
    fn privileged_containers_are_unconfined() {
        let sc = security(profile(ProfileType::RuntimeDefault, ""), "");
        let held = DEFAULT_CAPABILITIES.into_iter().collect();
        assert_eq!(
            container_seccomp(Some(&sc), true, &held, None).unwrap(),
            None
        );
        assert!(container_seccomp(Some(&sc), false, &held, None)
            .unwrap()
            .is_some());
    }

    const DOCKER_STYLE: &str = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
        ],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "basics"},
            {"name": "exit", "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["future_call"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
            {"names": ["only_mips"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["mips64"]}}
        ]
    }"#;

    fn names_of(profile: &LinuxSeccomp) -> Vec<String> {
        profile
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .flat_map(|r| r.names().clone())
            .collect()
    }

    #[test]
    fn docker_profiles_are_evaluated_for_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.json");
        std::fs::write(&path, DOCKER_STYLE).unwrap();

        let default_caps: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
        let loaded = load_profile(&path, &default_caps).unwrap();
        assert_eq!(loaded.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(loaded.default_errno_ret(), Some(1));
        let names = names_of(&loaded);
        assert_eq!(names, ["read", "write", "exit", "ptrace", "personality"]);
        let arches = loaded.architectures().as_ref().unwrap();
        assert_eq!(arches.first(), native_architectures().first());
        let personality = &loaded.syscalls().as_ref().unwrap()[3];
        assert_eq!(personality.args().as_ref().unwrap()[0].value(), 8);

        let mut admin = default_caps.clone();
        admin.insert(Capability::SysAdmin);
        let names = names_of(&load_profile(&path, &admin).unwrap());
        assert!(names.contains(&"mount".to_owned()));
        assert!(!names.contains(&"ptrace".to_owned()));
    }

    #[test]
    fn oci_profiles_load_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oci.json");
        let written = default_seccomp_profile();
        std::fs::write(&path, serde_json::to_string(&written).unwrap()).unwrap();
        let loaded = load_profile(&path, &Capabilities::new()).unwrap();
        assert_eq!(loaded, written);
    }

    #[test]
    fn bad_profile_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = load_profile(&missing, &Capabilities::new()).unwrap_err();
        assert!(err.is_invalid_argument());
        assert!(err.to_string().contains("missing.json"), "{err}");

        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, r#"{"syscalls": []}"#).unwrap();
        let err = load_profile(&garbage, &Capabilities::new()).unwrap_err();
        assert!(err.to_string().contains("not a seccomp profile"), "{err}");
    }

    #[test]
    fn localhost_profiles_must_lie_under_the_root_when_one_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("seccomp");
        std::fs::create_dir(&root).unwrap();
        let inside = root.join("ok.json");
        let outside = dir.path().join("elsewhere.json");
        for path in [&inside, &outside] {
            std::fs::write(path, r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#).unwrap();
        }
        let held = Capabilities::new();
        let sc =
            |path: &Path| security(profile(ProfileType::Localhost, &path.to_string_lossy()), "");
        assert!(
            container_seccomp(Some(&sc(&inside)), false, &held, Some(&root))
                .unwrap()
                .is_some()
        );
        let err = container_seccomp(Some(&sc(&outside)), false, &held, Some(&root)).unwrap_err();
        assert!(err.is_invalid_argument());
        assert!(err.to_string().contains("must lie under"), "{err}");
        // Without a root, any absolute path goes.
        assert!(container_seccomp(Some(&sc(&outside)), false, &held, None)
            .unwrap()
            .is_some());
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_version("5"), Some((5, 0)));
        assert_eq!(parse_kernel_version("x"), None);
    }
}
