//! Device nodes: the CRI config's `devices` (looked up on the host) and, for privileged
//! containers, every device of the host's `/dev`.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use cri_proto::v1::Device as CriDevice;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{io_error, SpecError};

/// Directories of the host's `/dev` that are not copied into privileged containers: they are
/// mounted separately (`pts`, `shm`, `mqueue`) or are not devices.
const SKIPPED_DEV_ENTRIES: &[&str] = &[
    "pts",
    "shm",
    "mqueue",
    "fd",
    ".udev",
    ".lxc",
    ".lxd-mounts",
    "console",
    "ptmx",
];

/// The device nodes and cgroup rules of a container's CRI `devices`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ContainerDevices {
    pub nodes: Vec<LinuxDevice>,
    pub rules: Vec<LinuxDeviceCgroup>,
}

/// Looks up each CRI device on the host (following symlinks). A directory (under `/dev`: any
/// other would walk arbitrary host trees) adds every device below it at the same relative path
/// under `container_path`. `container_path` defaults to
/// `host_path`; `permissions` (a subset of `rwm`) to `rwm`.
pub(crate) fn cri_devices(devices: &[CriDevice]) -> Result<ContainerDevices, SpecError> {
    let mut out = ContainerDevices::default();
    for device in devices {
        let field = format!("devices[{}]", device.host_path);
        if !Path::new(&device.host_path).is_absolute() {
            return Err(SpecError::invalid(
                field,
                "host_path must be an absolute path on the node",
            ));
        }
        let container_path = if device.container_path.is_empty() {
            device.host_path.clone()
        } else {
            device.container_path.clone()
        };
        if !Path::new(&container_path).is_absolute() {
            return Err(SpecError::invalid(
                field,
                format!("container_path {container_path:?} must be absolute"),
            ));
        }
        let permissions = if device.permissions.is_empty() {
            "rwm".to_owned()
        } else {
            device.permissions.clone()
        };
        if !permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(SpecError::invalid(
                field,
                format!("permissions {permissions:?} must be made of r, w and m"),
            ));
        }

        let host = Path::new(&device.host_path);
        let metadata = std::fs::metadata(host).map_err(|e| {
            SpecError::invalid(
                field.clone(),
                format!(
                    "cannot use {}: {e}; check the device exists on the node",
                    host.display()
                ),
            )
        })?;
        let found = if metadata.is_dir() {
            if !host
                .canonicalize()
                .is_ok_and(|real| real.starts_with("/dev"))
            {
                return Err(SpecError::invalid(
                    field,
                    format!(
                        "{} is a directory outside /dev; name a device node, or a directory of \
                         devices under /dev",
                        host.display()
                    ),
                ));
            }
            devices_under(host, Path::new(&container_path))?
        } else {
            let node = device_node(&metadata, Path::new(&container_path)).ok_or_else(|| {
                SpecError::invalid(
                    field.clone(),
                    format!("{} is not a character or block device", host.display()),
                )
            })?;
            vec![node]
        };
        for node in found {
            let mut rule = LinuxDeviceCgroup::from(&node);
            rule.set_access(Some(permissions.clone()));
            out.rules.push(rule);
            out.nodes.push(node);
        }
    }
    Ok(out)
}

/// Every character and block device under `dev` (normally the host's `/dev`), at the same
/// path in the container, skipping what is mounted separately. Symlinks are not followed.
pub(crate) fn host_devices(dev: &Path) -> Result<Vec<LinuxDevice>, SpecError> {
    let mut found = Vec::new();
    collect_devices(dev, Path::new("/dev"), true, &mut found)?;
    Ok(found)
}

/// The devices under the host directory `host`, placed under `container`.
fn devices_under(host: &Path, container: &Path) -> Result<Vec<LinuxDevice>, SpecError> {
    let mut found = Vec::new();
    collect_devices(host, container, false, &mut found)?;
    Ok(found)
}

fn collect_devices(
    host: &Path,
    container: &Path,
    skip_special: bool,
    found: &mut Vec<LinuxDevice>,
) -> Result<(), SpecError> {
    let entries = std::fs::read_dir(host).map_err(io_error("list devices in", host))?;
    for entry in entries {
        let entry = entry.map_err(io_error("list devices in", host))?;
        let name = entry.file_name();
        if skip_special && SKIPPED_DEV_ENTRIES.iter().any(|s| name == *s) {
            continue;
        }
        let path = entry.path();
        let metadata = match std::fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            // Devices come and go; one that vanished is simply not there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("stat device", path)(e)),
        };
        let in_container = container.join(&name);
        if metadata.is_dir() {
            collect_devices(&path, &in_container, false, found)?;
        } else if let Some(node) = device_node(&metadata, &in_container) {
            found.push(node);
        }
    }
    Ok(())
}

/// The OCI device for a host device node, or `None` when it is not a device.
fn device_node(metadata: &std::fs::Metadata, container_path: &Path) -> Option<LinuxDevice> {
    let file_type = metadata.file_type();
    let kind = if file_type.is_char_device() {
        LinuxDeviceType::C
    } else if file_type.is_block_device() {
        LinuxDeviceType::B
    } else {
        return None;
    };
    let rdev = metadata.rdev();
    let mut node = LinuxDevice::default();
    node.set_path(PathBuf::from(container_path));
    node.set_typ(kind);
    node.set_major(i64::try_from(nix::sys::stat::major(rdev)).ok()?);
    node.set_minor(i64::try_from(nix::sys::stat::minor(rdev)).ok()?);
    node.set_file_mode(Some(metadata.mode() & 0o7777));
    node.set_uid(Some(metadata.uid()));
    node.set_gid(Some(metadata.gid()));
    Some(node)
}

/// The device cgroup rules of a container: deny everything, then allow the listed devices
/// (the runtime adds its own defaults: null, zero, tty, ...); privileged: allow everything.
pub(crate) fn device_rules(
    privileged: bool,
    allowed: Vec<LinuxDeviceCgroup>,
) -> Vec<LinuxDeviceCgroup> {
    let mut all = LinuxDeviceCgroup::default();
    all.set_allow(privileged);
    all.set_access(Some("rwm".to_owned()));
    let mut rules = vec![all];
    if !privileged {
        rules.extend(allowed);
    }
    rules
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn device(host: &str, container: &str, permissions: &str) -> CriDevice {
        CriDevice {
            host_path: host.to_owned(),
            container_path: container.to_owned(),
            permissions: permissions.to_owned(),
        }
    }

    #[test]
    fn a_host_device_becomes_a_node_and_a_rule() {
        let devices = cri_devices(&[device("/dev/null", "/dev/mynull", "rw")]).unwrap();
        let node = &devices.nodes[0];
        assert_eq!(node.path(), Path::new("/dev/mynull"));
        assert_eq!(node.typ(), LinuxDeviceType::C);
        assert_eq!((node.major(), node.minor()), (1, 3));
        let rule = &devices.rules[0];
        assert!(rule.allow());
        assert_eq!(rule.typ(), Some(LinuxDeviceType::C));
        assert_eq!((rule.major(), rule.minor()), (Some(1), Some(3)));
        assert_eq!(rule.access().as_deref(), Some("rw"));
    }

    #[test]
    fn container_path_and_permissions_have_defaults() {
        let devices = cri_devices(&[device("/dev/zero", "", "")]).unwrap();
        assert_eq!(devices.nodes[0].path(), Path::new("/dev/zero"));
        assert_eq!(devices.rules[0].access().as_deref(), Some("rwm"));
    }

    #[test]
    fn bad_devices_are_invalid_arguments_naming_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "").unwrap();
        let file = file.to_string_lossy().into_owned();
        for bad in [
            device("/dev/nonexistent-corral", "", ""),
            device(&file, "/dev/x", ""),
            device("relative", "/dev/x", ""),
            device("/dev/null", "relative", ""),
            device("/dev/null", "", "rwx"),
        ] {
            let err = cri_devices(std::slice::from_ref(&bad)).unwrap_err();
            assert!(err.is_invalid_argument(), "{err}");
            assert!(err.to_string().contains(&bad.host_path), "{err}");
        }
    }

    #[test]
    fn a_directory_adds_the_devices_below_it() {
        let dir = tempfile::tempdir().unwrap();
        // Symlinks are not followed inside a directory; only real nodes count. Without root
        // no node can be made, so the host's /dev stands in.
        let devices = cri_devices(&[device("/dev", "/hostdev", "r")]).unwrap();
        assert!(devices
            .nodes
            .iter()
            .any(|n| n.path() == Path::new("/hostdev/null")));
        let _ = dir;
    }

    #[test]
    fn a_directory_outside_dev_is_refused_without_walking_it() {
        // `/` would walk the whole host (and fail somewhere in /proc as a host error).
        let dir = tempfile::tempdir().unwrap();
        for host in ["/", "/proc", &dir.path().to_string_lossy()] {
            let err = cri_devices(&[device(host, "/x", "")]).unwrap_err();
            assert!(err.is_invalid_argument(), "{host}: {err}");
            assert!(err.to_string().contains("under /dev"), "{err}");
        }
    }

    #[test]
    fn host_devices_skip_what_is_mounted_separately() {
        let devices = host_devices(Path::new("/dev")).unwrap();
        let paths: Vec<&Path> = devices.iter().map(|d| d.path().as_path()).collect();
        assert!(paths.contains(&Path::new("/dev/null")));
        assert!(paths.contains(&Path::new("/dev/zero")));
        assert!(!paths.iter().any(|p| p.starts_with("/dev/pts")));
        assert!(!paths.contains(&Path::new("/dev/ptmx")));
        assert!(!paths.contains(&Path::new("/dev/console")));
    }

    #[test]
    fn device_rules_deny_all_unless_privileged() {
        let allowed = cri_devices(&[device("/dev/null", "", "")]).unwrap().rules;
        let rules = device_rules(false, allowed);
        assert!(!rules[0].allow());
        assert_eq!(rules[0].typ(), None);
        assert_eq!(rules.len(), 2);
        let rules = device_rules(true, Vec::new());
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allow());
        assert_eq!(rules[0].access().as_deref(), Some("rwm"));
    }
}
