//! Harness for hostile CRI container configs (`..`, absolute, symlinked and NUL-bearing paths,
//! 1 MB strings, huge repeated fields, out-of-range numbers, unknown enum values): they never
//! make [`build_spec`] panic, every refusal names the field, and an accepted spec carries no
//! value the OCI runtime would choke on.
//!
//! Built for the crate's tests and, with the `fuzzing` feature, for the cargo-fuzz targets in
//! `fuzz/`, which run [`container_config_bytes`] for as long as one likes; the tests run the
//! same checks over a bounded number of generated configs (and of random bytes).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use cri_proto::v1::ContainerConfig;
use prost::Message;

use crate::testutil::{mountinfo_file, rootfs_with, MountLine, GROUP, PASSWD};
use crate::{
    build_spec, BuiltSpec, ImageSettings, NamespaceMode, SandboxContext, SpecError, SpecInput,
};

/// A temp dir holding a fake image rootfs, pod directory and mount table, with a symlink
/// `escape` pointing out of it (to `/etc`).
pub struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    rootfs: PathBuf,
    mountinfo: PathBuf,
    sandbox: SandboxContext,
}

impl Default for Fixture {
    fn default() -> Fixture {
        Fixture::new()
    }
}

impl Fixture {
    /// A fresh fixture in a new temp dir.
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let rootfs = rootfs_with(&root, PASSWD, GROUP);
        let sandbox_dir = root.join("sandbox");
        std::fs::create_dir_all(sandbox_dir.join("shm")).unwrap();
        std::fs::create_dir_all(root.join("volumes")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("volumes/escape")).unwrap();
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("volumes/dangling")).unwrap();
        let mountinfo = mountinfo_file(&root, &[MountLine::new("/", "")]);
        let sandbox = SandboxContext {
            sandbox_id: "sandbox-1".to_owned(),
            pause_pid: 4242,
            netns_path: Some(PathBuf::from("/run/corral/netns/sandbox-1")),
            network: NamespaceMode::Pod,
            pid: NamespaceMode::Pod,
            ipc: NamespaceMode::Pod,
            hostname: "web-0".to_owned(),
            sandbox_dir,
            shm_path: None,
            privileged: false,
            log_directory: "/var/log/pods/ns_web-0_uid".to_owned(),
        };
        Fixture {
            dir,
            rootfs,
            mountinfo,
            sandbox,
        }
    }

    /// Where generated volume host paths live: created sources land in the temp dir.
    pub fn volumes(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap().join("volumes")
    }

    /// Builds the spec of `config` in this fixture.
    pub fn build(&self, config: &ContainerConfig) -> Result<BuiltSpec, SpecError> {
        let image = ImageSettings {
            cmd: vec!["/bin/sh".to_owned()],
            ..Default::default()
        };
        build_spec(&SpecInput {
            container_id: "c1",
            config,
            sandbox: &self.sandbox,
            image: &image,
            rootfs: &self.rootfs,
            cgroups_path: "/kubepods/podabc/c1".to_owned(),
            target_pid: None,
            mountinfo: &self.mountinfo,
            seccomp_localhost_root: Some(Path::new("/var/lib/kubelet/seccomp")),
            apparmor_enabled: false,
            cgroup_v2: false,
        })
    }
}

/// Checks one outcome: a refusal names what it refuses; an accepted spec holds no NUL byte
/// where the runtime would need a C string, no relative or `..` mount destination, and no
/// created directory outside the fixture's temp dir.
pub fn check_outcome(fx: &Fixture, config: &ContainerConfig, got: Result<BuiltSpec, SpecError>) {
    if let Err(err) = &got {
        // Callers keep the first KiB of a refusal: the field or mount must be named there.
        let text = err.to_string();
        let named = match err {
            SpecError::InvalidField { field, .. } => {
                text.starts_with(&field.chars().take(50).collect::<String>())
            }
            SpecError::MountRefused { .. } => text.len() < 1024,
            _ => true,
        };
        assert!(named, "{}", text.chars().take(300).collect::<String>());
    }
    match got {
        Err(SpecError::InvalidField { field, reason }) => {
            assert!(!field.is_empty() && !reason.is_empty());
        }
        Err(SpecError::MountRefused {
            container_path,
            reason,
            ..
        }) => {
            assert!(config
                .mounts
                .iter()
                .any(|m| m.container_path == container_path));
            assert!(!reason.is_empty());
        }
        Err(SpecError::UnknownCapability { field, .. }) => assert!(!field.is_empty()),
        Err(SpecError::NoCommand | SpecError::SeccompProfile { .. }) => {}
        Err(host @ (SpecError::Io { .. } | SpecError::Mountinfo { .. })) => {
            let text = host.to_string();
            panic!(
                "a request made the host fail: {}",
                text.chars().take(400).collect::<String>()
            )
        }
        Err(SpecError::NoContainingMount { .. }) => panic!("the fake mount table has /"),
        Ok(built) => {
            let process = built.spec.process().as_ref().unwrap();
            for arg in process.args().iter().flatten() {
                assert!(
                    !arg.contains('\0'),
                    "an argument with a NUL byte was accepted"
                );
            }
            for env in process.env().iter().flatten() {
                assert!(
                    !env.contains('\0'),
                    "an env entry with a NUL byte was accepted"
                );
            }
            let cwd = process.cwd();
            assert!(cwd.is_absolute() && !cwd.to_string_lossy().contains('\0'));
            for mount in built.spec.mounts().iter().flatten() {
                let dest = mount.destination();
                assert!(dest.is_absolute(), "relative destination {dest:?}");
                assert!(
                    !dest
                        .components()
                        .any(|c| c == std::path::Component::ParentDir),
                    "destination {dest:?} climbs"
                );
            }
            let root = fx.dir.path().canonicalize().unwrap();
            for created in &built.mounts_created {
                assert!(created.starts_with(&root), "created {created:?} outside");
            }
        }
    }
}

/// One fuzz input: `data` decoded as a protobuf `ContainerConfig` (undecodable input is
/// skipped), built into a spec in a fresh fixture and checked with [`check_outcome`].
pub fn container_config_bytes(data: &[u8]) {
    let Ok(config) = ContainerConfig::decode(data) else {
        return;
    };
    let fx = Fixture::new();
    let got = fx.build(&config);
    check_outcome(&fx, &config, got);
}

#[cfg(test)]
mod tests;
