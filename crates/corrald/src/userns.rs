//! Pod user namespaces (`NamespaceOption.userns_options`).
//!
//! Mode NODE is the default: the pod runs in the host's user namespace. Mode POD gives the pod
//! a user namespace of its own with the one uid and one gid range kubelet picked: the pause
//! creates it before the pod's other namespaces (so it owns them), corrald pins it at
//! `<state>/userns/<id>`, and every container joins it through the pin. Root in the container
//! is then the mapped host id, and the files it needs are shown to it through idmapped mounts
//! (runc 1.1 cannot make them itself, so corral makes them and hands runc their paths), all
//! under the container's `idmap/` directory: `idmap/store`, an idmapped copy of the image
//! store through which the overlay takes the image layers, and `idmap/<n>`, an idmapped copy
//! of the source of every bind mount (volumes, the pod's hosts, hostname, resolv.conf and
//! /dev/shm) that runc binds instead of the original. Modes CONTAINER and TARGET are refused.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use corral_sandbox::{IdMapping, UsernsMappings};
use cri_proto::v1::{NamespaceMode, PodSandboxConfig};
use oci_spec::runtime::{LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceType, Spec};

use crate::config::Config;
use crate::error::{CriError, CriResult};

/// The request field every refusal names.
const FIELD: &str = "config.linux.security_context.namespace_options.userns_options";

/// The oldest runc that joins a user namespace and binds mount sources it opened outside it.
const MIN_RUNC: (u32, u32) = (1, 1);

/// The directory of a container's idmapped copies of its bind-mount sources.
pub(crate) const STAGING_DIR: &str = "idmap";

/// The pod's user namespace mappings when it asks for one of its own (mode POD); `None` for
/// NODE or no userns_options. Refuses what corral cannot do, naming the field.
pub(crate) fn pod_userns(
    config: &PodSandboxConfig,
    network: NamespaceMode,
    pid: NamespaceMode,
    ipc: NamespaceMode,
) -> CriResult<Option<UsernsMappings>> {
    let invalid = |msg: String| Err(CriError::InvalidArgument(msg));
    let Some(options) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|o| o.userns_options.as_ref())
    else {
        return Ok(None);
    };
    match NamespaceMode::try_from(options.mode) {
        Ok(NamespaceMode::Node) => {
            if !options.uids.is_empty() || !options.gids.is_empty() {
                return invalid(format!(
                    "{FIELD}.uids, gids: mappings apply to mode POD only; drop them for NODE"
                ));
            }
            Ok(None)
        }
        Ok(NamespaceMode::Pod) => {
            for (name, mode) in [("network", network), ("pid", pid), ("ipc", ipc)] {
                if mode == NamespaceMode::Node {
                    return invalid(format!(
                        "{FIELD}: a pod with its own user namespace cannot use the host's {name} \
                         namespace (namespace_options.{name} is NODE); use POD or drop \
                         userns_options"
                    ));
                }
            }
            Ok(Some(UsernsMappings {
                uid: one_mapping("uids", &options.uids)?,
                gid: one_mapping("gids", &options.gids)?,
            }))
        }
        Ok(mode @ (NamespaceMode::Container | NamespaceMode::Target)) => invalid(format!(
            "{FIELD}.mode: {} is not supported: the containers of a pod share its user \
             namespace; use POD or NODE",
            mode.as_str_name()
        )),
        Err(_) => invalid(format!(
            "{FIELD}.mode: unknown namespace mode {}; use POD or NODE",
            options.mode
        )),
    }
}

/// The one mapping of `uids` or `gids`, which must map container id 0.
fn one_mapping(name: &str, list: &[cri_proto::v1::IdMapping]) -> CriResult<IdMapping> {
    let invalid = |msg: String| Err(CriError::InvalidArgument(msg));
    let [m] = list else {
        return invalid(format!(
            "{FIELD}.{name}: exactly one mapping is supported, got {}",
            list.len()
        ));
    };
    if m.length == 0 {
        return invalid(format!("{FIELD}.{name}[0].length: must be at least 1"));
    }
    if m.container_id != 0 {
        return invalid(format!(
            "{FIELD}.{name}[0]: container id 0 (root) must be mapped, but the mapping starts at \
             container id {}; start it at 0",
            m.container_id
        ));
    }
    if m.host_id.checked_add(m.length - 1).is_none() {
        return invalid(format!(
            "{FIELD}.{name}[0]: host_id {} + length {} passes the largest id 4294967295",
            m.host_id, m.length
        ));
    }
    Ok(IdMapping {
        container_id: m.container_id,
        host_id: m.host_id,
        length: m.length,
    })
}

/// For every configured runtime handler: `Ok` when it can run pods with user namespaces on this
/// host, else why not. Runs each runtime's `--version` once.
pub(crate) fn handler_support(config: &Config) -> HashMap<String, Result<(), String>> {
    let host = corral_sandbox::userns::host_support();
    config
        .runtimes
        .iter()
        .map(|(name, handler)| {
            let support = host.clone().and_then(|()| runtime_support(&handler.path));
            if let Err(reason) = &support {
                tracing::info!(handler = %name, %reason, "no user namespaces for this handler");
            }
            (name.clone(), support)
        })
        .collect()
}

/// Whether the OCI runtime at `path` can join a pod's user namespace the way corral asks.
fn runtime_support(path: &Path) -> Result<(), String> {
    let output = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| format!("run {} --version: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    match runc_version(&text) {
        Some(version) if version >= MIN_RUNC => Ok(()),
        Some((major, minor)) => Err(format!(
            "runc {major}.{minor} is too old; {}.{} or newer is needed",
            MIN_RUNC.0, MIN_RUNC.1
        )),
        None => Err(format!(
            "{} is not runc (corral runs user-namespaced pods with runc 1.1 or newer)",
            path.display()
        )),
    }
}

/// `(major, minor)` from `runc --version` output (`runc version 1.1.5+ds1`).
fn runc_version(text: &str) -> Option<(u32, u32)> {
    let version = text.lines().next()?.strip_prefix("runc version ")?;
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Refuses a container path that the runtime, once inside the pod's user namespace, cannot
/// reach: every directory above it must be searchable by others (mode `o+x`, as `/run` is),
/// since host root is nobody there.
pub(crate) fn check_searchable(path: &Path) -> CriResult<()> {
    for dir in path.ancestors().skip(1) {
        let mode = std::fs::metadata(dir)
            .map_err(|e| CriError::internal(&format!("stat {}", dir.display()), e))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(CriError::FailedPrecondition(format!(
                "{} (mode {:o}) must be searchable by others (chmod o+x) for containers of pods \
                 with user namespaces to reach their root filesystem at {}",
                dir.display(),
                mode & 0o7777,
                path.display()
            )));
        }
    }
    Ok(())
}

/// Makes the container join the pod's user namespace at `pin`, with its mappings (runc 1.1
/// needs them even to join a namespace: it maps root's host ids from them).
pub(crate) fn join_pod_userns(spec: &mut Spec, pin: &Path, maps: &UsernsMappings) -> CriResult<()> {
    let oci = |m: &IdMapping| {
        LinuxIdMappingBuilder::default()
            .container_id(m.container_id)
            .host_id(m.host_id)
            .size(m.length)
            .build()
            .map_err(|e| CriError::internal("OCI id mapping", e))
    };
    let uid_mappings = vec![oci(&maps.uid)?];
    let gid_mappings = vec![oci(&maps.gid)?];
    let Some(linux) = spec.linux_mut() else {
        return Err(CriError::Internal(
            "OCI spec has no linux section to add the user namespace to".into(),
        ));
    };
    let mut userns = LinuxNamespace::default();
    userns.set_typ(LinuxNamespaceType::User);
    userns.set_path(Some(pin.to_path_buf()));
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.insert(0, userns);
    linux.set_namespaces(Some(namespaces));
    linux.set_uid_mappings(Some(uid_mappings));
    linux.set_gid_mappings(Some(gid_mappings));
    Ok(())
}

/// Replaces the source of every bind mount of `spec` by an idmapped copy under `staging`
/// (`<container dir>/idmap/<n>`), made with the user namespace at `pin`. What was mounted is
/// found again by [`unmount_staged`] from the directory, so a crash half-way leaks nothing.
pub(crate) fn stage_idmapped_mounts(spec: &mut Spec, staging: &Path, pin: &Path) -> CriResult<()> {
    let Some(mut mounts) = spec.mounts().clone() else {
        return Ok(());
    };
    std::fs::create_dir_all(staging)
        .map_err(|e| CriError::internal(&format!("create {}", staging.display()), e))?;
    for (n, mount) in mounts.iter_mut().enumerate() {
        let options = mount.options().clone().unwrap_or_default();
        let is_bind = mount.typ().as_deref() == Some("bind")
            || options.iter().any(|o| o == "bind" || o == "rbind");
        let Some(source) = mount.source().clone().filter(|_| is_bind) else {
            continue;
        };
        let target = staging.join(n.to_string());
        let made = if source.is_dir() {
            std::fs::create_dir(&target)
        } else {
            std::fs::File::create(&target).map(drop)
        };
        made.map_err(|e| CriError::internal(&format!("create {}", target.display()), e))?;
        let recursive = options.iter().any(|o| o == "rbind");
        // Read-only is set on the copy: runc 1.1 would remount its bind read-only, which the
        // kernel refuses inside a user namespace when the source has nosuid, nodev or noexec
        // (flags locked there that runc's remount drops). A bind of a read-only mount is
        // read-only, and locked so in the container's mount namespace.
        let read_only = options.iter().any(|o| o == "ro");
        corral_sandbox::idmap::mount_idmapped(&source, &target, pin, recursive, read_only)
            .map_err(crate::error::during(format!(
                "CreateContainer: idmap the mount at {}",
                mount.destination().display()
            )))?;
        mount.set_source(Some(target));
        if read_only {
            mount.set_options(Some(options.into_iter().filter(|o| o != "ro").collect()));
        }
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// Unmounts every idmapped copy under a container's `idmap/` directory; succeeds when there is
/// none. The directory must not be deleted before this succeeded: it would reach into volumes.
pub(crate) fn unmount_staged(staging: &Path) -> CriResult<()> {
    let entries = match std::fs::read_dir(staging) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(CriError::internal(
                &format!("list {}", staging.display()),
                e,
            ))
        }
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| CriError::internal(&format!("list {}", staging.display()), e))?;
        paths.push(entry.path());
    }
    for path in paths {
        corral_sandbox::idmap::unmount(&path)
            .map_err(|e| CriError::internal("unmount an idmapped mount", e))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cri_proto::v1::{
        IdMapping as CriIdMapping, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
        NamespaceOption, UserNamespace,
    };

    fn config(userns: UserNamespace) -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        userns_options: Some(userns),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn mapping(container_id: u32, host_id: u32, length: u32) -> CriIdMapping {
        CriIdMapping {
            container_id,
            host_id,
            length,
        }
    }

    fn pod(uids: Vec<CriIdMapping>, gids: Vec<CriIdMapping>) -> UserNamespace {
        UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids,
            gids,
        }
    }

    fn check(userns: UserNamespace) -> CriResult<Option<UsernsMappings>> {
        let pod_mode = NamespaceMode::Pod;
        pod_userns(&config(userns), pod_mode, pod_mode, pod_mode)
    }

    fn refusal(userns: UserNamespace) -> String {
        match check(userns) {
            Err(CriError::InvalidArgument(msg)) => msg,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn pod_mode_takes_one_mapping_each() {
        let maps = check(pod(
            vec![mapping(0, 1000, 100_000)],
            vec![mapping(0, 2000, 65536)],
        ))
        .unwrap()
        .unwrap();
        assert_eq!(maps.uid.host_id, 1000);
        assert_eq!(maps.uid.length, 100_000);
        assert_eq!(maps.gid.host_id, 2000);
    }

    #[test]
    fn node_mode_and_no_options_mean_the_hosts_namespace() {
        let node = UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..Default::default()
        };
        assert_eq!(check(node).unwrap(), None);
        let pod_mode = NamespaceMode::Pod;
        assert_eq!(
            pod_userns(&PodSandboxConfig::default(), pod_mode, pod_mode, pod_mode).unwrap(),
            None
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let two = vec![mapping(0, 1000, 100_000), mapping(0, 2000, 100_000)];
        let msg = refusal(pod(two.clone(), two));
        assert!(
            msg.contains("userns_options.uids") && msg.contains("got 2"),
            "{msg}"
        );
        let msg = refusal(pod(vec![mapping(0, 1, 1)], vec![]));
        assert!(msg.contains("userns_options.gids"), "{msg}");
        let msg = refusal(pod(
            vec![mapping(1, 1000, 100_000)],
            vec![mapping(1, 1000, 100_000)],
        ));
        assert!(
            msg.contains("uids[0]") && msg.contains("container id 0"),
            "{msg}"
        );
        let msg = refusal(pod(vec![mapping(0, 1000, 0)], vec![mapping(0, 1000, 1)]));
        assert!(msg.contains("uids[0].length"), "{msg}");
        let msg = refusal(pod(
            vec![mapping(0, u32::MAX, 2)],
            vec![mapping(0, 1000, 1)],
        ));
        assert!(msg.contains("4294967295"), "{msg}");
        for mode in [NamespaceMode::Container, NamespaceMode::Target] {
            let msg = refusal(UserNamespace {
                mode: mode as i32,
                ..Default::default()
            });
            assert!(
                msg.contains("userns_options.mode") && msg.contains(mode.as_str_name()),
                "{msg}"
            );
        }
        let msg = refusal(UserNamespace {
            mode: NamespaceMode::Node as i32,
            uids: vec![mapping(0, 1000, 1)],
            gids: vec![],
        });
        assert!(msg.contains("POD only"), "{msg}");
    }

    #[test]
    fn a_user_namespace_needs_the_pods_own_other_namespaces() {
        let ok = pod(vec![mapping(0, 1000, 10)], vec![mapping(0, 1000, 10)]);
        let (p, n) = (NamespaceMode::Pod, NamespaceMode::Node);
        for (network, pid, ipc, name) in [(n, p, p, "network"), (p, n, p, "pid"), (p, p, n, "ipc")]
        {
            match pod_userns(&config(ok.clone()), network, pid, ipc) {
                Err(CriError::InvalidArgument(msg)) => {
                    assert!(
                        msg.contains(&format!("namespace_options.{name} is NODE")),
                        "{msg}"
                    )
                }
                other => panic!("expected InvalidArgument, got {other:?}"),
            }
        }
    }

    #[test]
    fn runc_versions_are_read() {
        assert_eq!(
            runc_version("runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\n"),
            Some((1, 1))
        );
        assert_eq!(runc_version("runc version 1.2.0-rc.1\n"), Some((1, 2)));
        assert_eq!(runc_version("crun version 1.8.1\ncommit: x\n"), None);
        assert_eq!(runc_version(""), None);
    }

    #[test]
    fn the_spec_joins_the_pinned_namespace_with_its_mappings() {
        let mut spec = Spec::default();
        let map = IdMapping {
            container_id: 0,
            host_id: 1000,
            length: 65536,
        };
        spec.set_linux(Some(Default::default()));
        join_pod_userns(
            &mut spec,
            Path::new("/run/corral/userns/x"),
            &UsernsMappings { uid: map, gid: map },
        )
        .unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let first = &linux.namespaces().as_ref().unwrap()[0];
        assert_eq!(first.typ(), LinuxNamespaceType::User);
        assert_eq!(
            first.path().as_deref(),
            Some(Path::new("/run/corral/userns/x"))
        );
        let uid = &linux.uid_mappings().as_ref().unwrap()[0];
        assert_eq!(
            (uid.container_id(), uid.host_id(), uid.size()),
            (0, 1000, 65536)
        );
        assert_eq!(linux.gid_mappings().as_ref().unwrap().len(), 1);
    }

    #[test]
    fn unsearchable_directories_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("a").join("rootfs");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        match check_searchable(&inner) {
            Err(CriError::FailedPrecondition(msg)) => {
                assert!(msg.contains(&dir.path().display().to_string()), "{msg}")
            }
            other => panic!("expected FailedPrecondition, got {other:?}"),
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        // /tmp and / are searchable on any sane host.
        check_searchable(&inner).unwrap();
    }
}
