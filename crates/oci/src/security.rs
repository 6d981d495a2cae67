//! Masked and read-only paths, and the AppArmor profile.

use cri_proto::v1::{security_profile::ProfileType, LinuxContainerSecurityContext};

use crate::error::SpecError;

/// Paths hidden from unprivileged containers when the config lists none (containerd's).
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only in unprivileged containers when the config lists none (containerd's).
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The masked and read-only paths: none for privileged containers, the config's when it lists
/// any (kubelet always does for the default proc mount), else the defaults.
pub(crate) fn masked_and_readonly_paths(
    security: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
) -> (Vec<String>, Vec<String>) {
    if privileged {
        return (Vec::new(), Vec::new());
    }
    let pick = |given: Option<&Vec<String>>, defaults: &[&str]| match given {
        Some(list) if !list.is_empty() => list.clone(),
        _ => defaults.iter().map(|p| p.to_string()).collect(),
    };
    (
        pick(security.map(|s| &s.masked_paths), &DEFAULT_MASKED_PATHS),
        pick(security.map(|s| &s.readonly_paths), &DEFAULT_READONLY_PATHS),
    )
}

/// The AppArmor profile of the process, from `apparmor` or the deprecated `apparmor_profile`
/// (`runtime/default`, `unconfined`, `localhost/<name>`).
///
/// corral loads no profile of its own, so `RuntimeDefault` sets none (the runtime's default
/// applies); `Unconfined` asks for `unconfined`; `Localhost` names a profile already loaded
/// on the node. Without AppArmor on the host nothing is set, and asking for a Localhost
/// profile is an error.
#[allow(deprecated)] // apparmor_profile is read only when apparmor is unset
pub(crate) fn apparmor_profile(
    security: Option<&LinuxContainerSecurityContext>,
    apparmor_enabled: bool,
) -> Result<Option<String>, SpecError> {
    let Some(security) = security else {
        return Ok(None);
    };
    let (requested, field) = match &security.apparmor {
        Some(profile) => {
            const FIELD: &str = "linux.security_context.apparmor";
            let requested = match ProfileType::try_from(profile.profile_type) {
                Ok(ProfileType::RuntimeDefault) => None,
                Ok(ProfileType::Unconfined) => Some("unconfined".to_owned()),
                Ok(ProfileType::Localhost) if !profile.localhost_ref.is_empty() => {
                    Some(profile.localhost_ref.clone())
                }
                Ok(ProfileType::Localhost) => {
                    return Err(SpecError::invalid(
                        FIELD,
                        "a Localhost profile needs localhost_ref (the loaded profile's name)",
                    ))
                }
                Err(_) => {
                    return Err(SpecError::invalid(
                        FIELD,
                        format!(
                            "unknown profile type {}; use RuntimeDefault, Unconfined or Localhost",
                            profile.profile_type
                        ),
                    ))
                }
            };
            (requested, FIELD)
        }
        None => {
            const FIELD: &str = "linux.security_context.apparmor_profile";
            let requested = match security.apparmor_profile.as_str() {
                "" | "runtime/default" => None,
                "unconfined" => Some("unconfined".to_owned()),
                other => match other.strip_prefix("localhost/") {
                    Some(name) if !name.is_empty() => Some(name.to_owned()),
                    _ => {
                        return Err(SpecError::invalid(
                            FIELD,
                            format!(
                                "unknown profile {other:?}; use runtime/default, unconfined or \
                                 localhost/<name>"
                            ),
                        ))
                    }
                },
            };
            (requested, FIELD)
        }
    };
    match requested {
        Some(name) if !apparmor_enabled && name != "unconfined" => Err(SpecError::invalid(
            field,
            format!(
                "AppArmor profile {name:?} asked for, but AppArmor is not enabled on this node"
            ),
        )),
        Some(_) if !apparmor_enabled => Ok(None),
        other => Ok(other),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, deprecated)]
mod tests {
    use super::*;
    use cri_proto::v1::SecurityProfile;

    #[test]
    fn defaults_apply_when_the_config_lists_nothing() {
        let (masked, readonly) = masked_and_readonly_paths(None, false);
        assert!(masked.contains(&"/proc/kcore".to_owned()));
        assert_eq!(masked.len(), DEFAULT_MASKED_PATHS.len());
        assert!(readonly.contains(&"/proc/sys".to_owned()));
    }

    #[test]
    fn the_configs_lists_replace_the_defaults() {
        let sc = LinuxContainerSecurityContext {
            masked_paths: vec!["/proc/x".to_owned()],
            readonly_paths: vec!["/proc/y".to_owned()],
            ..Default::default()
        };
        let (masked, readonly) = masked_and_readonly_paths(Some(&sc), false);
        assert_eq!(masked, ["/proc/x"]);
        assert_eq!(readonly, ["/proc/y"]);
    }

    #[test]
    fn privileged_containers_have_none() {
        let sc = LinuxContainerSecurityContext {
            masked_paths: vec!["/proc/x".to_owned()],
            ..Default::default()
        };
        let (masked, readonly) = masked_and_readonly_paths(Some(&sc), true);
        assert!(masked.is_empty() && readonly.is_empty());
    }

    fn with_profile(kind: ProfileType, name: &str) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            apparmor: Some(SecurityProfile {
                profile_type: kind as i32,
                localhost_ref: name.to_owned(),
            }),
            ..Default::default()
        }
    }

    fn deprecated(path: &str) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            apparmor_profile: path.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn apparmor_profiles_when_enabled() {
        let pick = |sc: LinuxContainerSecurityContext| apparmor_profile(Some(&sc), true).unwrap();
        assert_eq!(pick(with_profile(ProfileType::RuntimeDefault, "")), None);
        assert_eq!(
            pick(with_profile(ProfileType::Unconfined, "")).as_deref(),
            Some("unconfined")
        );
        assert_eq!(
            pick(with_profile(ProfileType::Localhost, "k8s-nginx")).as_deref(),
            Some("k8s-nginx")
        );
        assert_eq!(pick(deprecated("runtime/default")), None);
        assert_eq!(
            pick(deprecated("localhost/k8s-nginx")).as_deref(),
            Some("k8s-nginx")
        );
        assert_eq!(
            pick(deprecated("unconfined")).as_deref(),
            Some("unconfined")
        );
        assert!(apparmor_profile(Some(&deprecated("bogus")), true).is_err());
        assert!(apparmor_profile(Some(&with_profile(ProfileType::Localhost, "")), true).is_err());
    }

    #[test]
    fn without_apparmor_only_localhost_profiles_are_refused() {
        let sc = with_profile(ProfileType::Localhost, "k8s-nginx");
        let err = apparmor_profile(Some(&sc), false).unwrap_err();
        assert!(err.is_invalid_argument());
        assert!(err.to_string().contains("not enabled"), "{err}");
        let sc = with_profile(ProfileType::Unconfined, "");
        assert_eq!(apparmor_profile(Some(&sc), false).unwrap(), None);
        let sc = with_profile(ProfileType::RuntimeDefault, "");
        assert_eq!(apparmor_profile(Some(&sc), false).unwrap(), None);
    }
}
