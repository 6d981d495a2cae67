//! Linux capabilities of a container's process: the default set containerd and Docker give,
//! changed by the CRI's add/drop lists (with `ALL`), or every capability when privileged.

use cri_proto::v1::Capability as CriCapabilities;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use crate::error::SpecError;

/// The capabilities a container gets unless its config adds or drops some (containerd's and
/// Docker's default set).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability corral knows (what `ALL` and privileged containers get, as far as the
/// runtime itself holds them), in the kernel's order: a capability's index is its number.
pub const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// The capabilities whose bits are set in a kernel capability mask (`CapEff:` of
/// `/proc/<pid>/status`).
pub(crate) fn capabilities_in_mask(mask: u64) -> Capabilities {
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, cap)| *cap)
        .collect()
}

/// The effective capabilities of the process whose `/proc` directory is `proc` (normally
/// `/proc/self`): a container cannot get more than the runtime holds. `None` when unreadable.
pub(crate) fn runtime_capabilities(proc: &std::path::Path) -> Option<Capabilities> {
    let status = std::fs::read_to_string(proc.join("status")).ok()?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16)
        .ok()
        .map(capabilities_in_mask)
}

/// The capability sets of a container's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CapabilitySets {
    /// Bounding, permitted and effective.
    pub held: Capabilities,
    /// Ambient (and inheritable, which ambient capabilities need).
    pub ambient: Capabilities,
}

impl CapabilitySets {
    /// The OCI form. The inheritable set holds only the ambient capabilities, as containerd
    /// does since CVE-2022-24769.
    pub fn to_oci(&self) -> LinuxCapabilities {
        let mut caps = LinuxCapabilities::default();
        caps.set_bounding(Some(self.held.clone()));
        caps.set_permitted(Some(self.held.clone()));
        caps.set_effective(Some(self.held.clone()));
        caps.set_inheritable(Some(self.ambient.clone()));
        caps.set_ambient(Some(self.ambient.clone()));
        caps
    }
}

/// The capabilities from a container config's `capabilities`, or all of them when
/// `privileged`.
///
/// As containerd: `ALL` in the add list starts from every capability, `ALL` in the drop list
/// from none (drop wins), then the named additions and then the named drops apply. Ambient
/// capabilities are held too. Names may carry a `CAP_` prefix and any case; unknown names are
/// an error. The result is limited to `available` (the runtime's own capabilities, which is
/// all a runtime can pass on; containerd does the same for privileged containers).
pub(crate) fn capability_sets(
    config: Option<&CriCapabilities>,
    privileged: bool,
    available: Option<&Capabilities>,
) -> Result<CapabilitySets, SpecError> {
    let empty = CriCapabilities::default();
    let config = config.unwrap_or(&empty);
    let add = parse_list(&config.add_capabilities, "add_capabilities")?;
    let drop = parse_list(&config.drop_capabilities, "drop_capabilities")?;
    let ambient_list = parse_list(&config.add_ambient_capabilities, "add_ambient_capabilities")?;
    if ambient_list.contains(&None) {
        return Err(SpecError::invalid(
            "linux.security_context.capabilities.add_ambient_capabilities",
            "ALL cannot be ambient; name the capabilities",
        ));
    }
    let ambient: Capabilities = ambient_list.into_iter().flatten().collect();

    let mut held: Capabilities = if privileged || add.contains(&None) {
        ALL_CAPABILITIES.into_iter().collect()
    } else {
        DEFAULT_CAPABILITIES.into_iter().collect()
    };
    if !privileged {
        if drop.contains(&None) {
            held.clear();
        }
        held.extend(add.iter().flatten());
        for cap in drop.iter().flatten() {
            held.remove(cap);
        }
    }
    held.extend(ambient.iter().copied());
    let mut ambient = ambient;
    if let Some(available) = available {
        for cap in add.iter().flatten().chain(ambient.iter()) {
            if !available.contains(cap) {
                tracing::warn!(capability = %cap, "capability asked for but not held by the runtime; left out");
            }
        }
        held.retain(|cap| available.contains(cap));
        ambient.retain(|cap| available.contains(cap));
    }
    Ok(CapabilitySets { held, ambient })
}

/// Parses a list of names; `None` stands for `ALL`.
fn parse_list(names: &[String], field: &'static str) -> Result<Vec<Option<Capability>>, SpecError> {
    names
        .iter()
        .map(|name| {
            if name.trim().eq_ignore_ascii_case("ALL") {
                return Ok(None);
            }
            parse_capability(name)
                .map(Some)
                .ok_or_else(|| SpecError::UnknownCapability {
                    field,
                    name: name.clone(),
                })
        })
        .collect()
}

/// Parses one capability name as the CRI lists carry it (`NET_ADMIN`, `CAP_NET_ADMIN`).
pub(crate) fn parse_capability(name: &str) -> Option<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    upper
        .strip_prefix("CAP_")
        .unwrap_or(&upper)
        .parse::<Capability>()
        .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn caps(add: &[&str], drop: &[&str]) -> CriCapabilities {
        CriCapabilities {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            add_ambient_capabilities: Vec::new(),
        }
    }

    fn set(list: &[Capability]) -> Capabilities {
        list.iter().copied().collect()
    }

    #[test]
    fn the_default_set_is_dockers() {
        let sets = capability_sets(None, false, None).unwrap();
        assert_eq!(sets.held, set(&DEFAULT_CAPABILITIES));
        assert_eq!(sets.held.len(), 14);
        assert!(sets.ambient.is_empty());
    }

    #[test]
    fn names_are_accepted_with_or_without_prefix_and_in_any_case() {
        let sets = capability_sets(
            Some(&caps(
                &["NET_ADMIN", "CAP_SYS_TIME", "sys_nice"],
                &["cap_chown", "KILL"],
            )),
            false,
            None,
        )
        .unwrap();
        assert!(sets.held.contains(&Capability::NetAdmin));
        assert!(sets.held.contains(&Capability::SysTime));
        assert!(sets.held.contains(&Capability::SysNice));
        assert!(!sets.held.contains(&Capability::Chown));
        assert!(!sets.held.contains(&Capability::Kill));
        assert_eq!(sets.held.len(), 14 + 3 - 2);
    }

    #[test]
    fn add_all_then_drop_some() {
        let sets = capability_sets(Some(&caps(&["ALL"], &["CHOWN"])), false, None).unwrap();
        assert_eq!(sets.held.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!sets.held.contains(&Capability::Chown));
    }

    #[test]
    fn drop_all_then_add_some() {
        let sets = capability_sets(Some(&caps(&["NET_RAW"], &["ALL"])), false, None).unwrap();
        assert_eq!(sets.held, set(&[Capability::NetRaw]));
        // Drop ALL wins over add ALL.
        let sets = capability_sets(Some(&caps(&["all"], &["all"])), false, None).unwrap();
        assert!(sets.held.is_empty());
    }

    #[test]
    fn drops_win_over_adds_of_the_same_name() {
        let sets =
            capability_sets(Some(&caps(&["NET_ADMIN"], &["NET_ADMIN"])), false, None).unwrap();
        assert!(!sets.held.contains(&Capability::NetAdmin));
    }

    #[test]
    fn unknown_names_are_refused_with_the_field() {
        let err = capability_sets(Some(&caps(&["NET_WIZARD"], &[])), false, None).unwrap_err();
        assert!(err.is_invalid_argument());
        let text = err.to_string();
        assert!(text.contains("add_capabilities"), "{text}");
        assert!(text.contains("NET_WIZARD"), "{text}");
        let err = capability_sets(Some(&caps(&[], &["CAP_"])), false, None).unwrap_err();
        assert!(err.to_string().contains("drop_capabilities"), "{err}");
        let mut ambient_all = caps(&[], &[]);
        ambient_all.add_ambient_capabilities = vec!["ALL".to_owned()];
        assert!(capability_sets(Some(&ambient_all), false, None)
            .unwrap_err()
            .is_invalid_argument());
    }

    #[test]
    fn privileged_gets_everything_regardless_of_drops() {
        let sets = capability_sets(Some(&caps(&[], &["ALL"])), true, None).unwrap();
        assert_eq!(sets.held, set(&ALL_CAPABILITIES));
    }

    #[test]
    fn ambient_capabilities_are_held_and_inheritable() {
        let mut config = caps(&[], &["ALL"]);
        config.add_ambient_capabilities = vec!["NET_BIND_SERVICE".to_owned()];
        let sets = capability_sets(Some(&config), false, None).unwrap();
        assert_eq!(sets.held, set(&[Capability::NetBindService]));
        let oci = sets.to_oci();
        assert_eq!(
            oci.inheritable().as_ref().unwrap(),
            &set(&[Capability::NetBindService])
        );
        assert_eq!(
            oci.ambient().as_ref().unwrap(),
            &set(&[Capability::NetBindService])
        );
        assert_eq!(
            oci.bounding().as_ref().unwrap(),
            &set(&[Capability::NetBindService])
        );
    }

    #[test]
    fn the_oci_form_has_no_inheritable_capabilities_by_default() {
        let oci = capability_sets(None, false, None).unwrap().to_oci();
        assert!(oci.inheritable().as_ref().unwrap().is_empty());
        assert_eq!(oci.effective().as_ref().unwrap().len(), 14);
        assert_eq!(oci.permitted().as_ref().unwrap().len(), 14);
    }

    #[test]
    fn nothing_beyond_the_runtimes_own_capabilities_is_given() {
        let available: Capabilities = capabilities_in_mask(0x1ff_feff_ffff);
        assert!(!available.contains(&Capability::SysResource));
        assert_eq!(available.len(), 40);
        let sets = capability_sets(None, true, Some(&available)).unwrap();
        assert_eq!(sets.held, available);
        let sets = capability_sets(
            Some(&caps(&["SYS_RESOURCE", "NET_ADMIN"], &[])),
            false,
            Some(&available),
        )
        .unwrap();
        assert!(!sets.held.contains(&Capability::SysResource));
        assert!(sets.held.contains(&Capability::NetAdmin));
    }

    #[test]
    fn capability_bits_follow_the_kernel_numbering() {
        assert_eq!(capabilities_in_mask(1), set(&[Capability::Chown]));
        assert_eq!(capabilities_in_mask(1 << 21), set(&[Capability::SysAdmin]));
        assert_eq!(
            capabilities_in_mask(1 << 40),
            set(&[Capability::CheckpointRestore])
        );
        assert_eq!(capabilities_in_mask(u64::MAX).len(), ALL_CAPABILITIES.len());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("status"), "CapEff:\t0000000000200001\n").unwrap();
        assert_eq!(
            runtime_capabilities(dir.path()).unwrap(),
            set(&[Capability::Chown, Capability::SysAdmin])
        );
        assert_eq!(runtime_capabilities(&dir.path().join("missing")), None);
    }

    #[test]
    fn single_names_parse() {
        assert_eq!(
            parse_capability("CAP_SYS_ADMIN"),
            Some(Capability::SysAdmin)
        );
        assert_eq!(parse_capability("bogus"), None);
    }
}
