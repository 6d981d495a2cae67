//! CreateContainer: validate, then build the container step by step, recording each resource
//! as it is made so that a failure at any step undoes exactly what exists.

use std::path::PathBuf;

use corral_oci::{ImageSettings, SandboxContext, SpecInput};
use corral_runtime::ShimConfig;
use corral_store::CONTAINERS;
use cri_proto::v1::{ContainerConfig, NamespaceMode};

use super::lifecycle;
use super::record::{name_key, ContainerRecord, ContainerState, ShimRef};
use super::ContainerEnv;
use crate::error::{CriError, CriResult};
use crate::pod::{SandboxRecord, SandboxState};

/// A validated CreateContainer request.
pub(super) struct Plan {
    pub id: String,
    pub name: String,
    pub name_key: String,
    pub pod_sandbox_id: String,
    config: ContainerConfig,
    sandbox: SandboxRecord,
    image: corral_image::ImageRecord,
    image_name: String,
    log_path: PathBuf,
}

impl Plan {
    /// Checks the request against the sandbox and the image store.
    pub fn new(
        env: &ContainerEnv,
        config: ContainerConfig,
        sandbox: SandboxRecord,
    ) -> CriResult<Plan> {
        let invalid = |m: String| Err(CriError::InvalidArgument(m));
        let Some(meta) = config.metadata.as_ref() else {
            return invalid(
                "config.metadata: missing; give the container's name and attempt".into(),
            );
        };
        if meta.name.is_empty() {
            return invalid("config.metadata.name: must not be empty".into());
        }
        if sandbox.state != SandboxState::Ready || !sandbox.pause_alive() {
            return Err(CriError::FailedPrecondition(format!(
                "pod sandbox {} is not ready; run a new sandbox for the pod",
                sandbox.id
            )));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return invalid("config.image.image: must name an image".into());
        }
        let image = env.images.resolve(&image_name).ok_or_else(|| {
            CriError::NotFound(format!(
                "image {image_name:?} not found; pull it first (PullImage / corralctl pull)"
            ))
        })?;
        env.runtime(&sandbox.runtime_handler)?;
        if let Some(mount) = config.mounts.iter().find(|m| m.recursive_read_only) {
            if !env.features.recursive_read_only(&sandbox.runtime_handler) {
                return Err(CriError::FailedPrecondition(format!(
                    "mounts[{}].recursive_read_only: runtime handler {:?} cannot make recursive \
                     read-only mounts on this host (it needs an OCI runtime whose `features` \
                     lists rro, such as runc >= 1.1, and Linux >= 5.12); drop it or use readonly",
                    mount.container_path, sandbox.runtime_handler
                )));
            }
        }
        let id = crate::pod::new_id()?;
        let log_path = log_path(
            &sandbox.config.log_directory,
            &config.log_path,
            env.container_dir(&id).join("container.log"),
        )?;
        Ok(Plan {
            name: meta.name.clone(),
            name_key: name_key(&sandbox.id, &config),
            pod_sandbox_id: sandbox.id.clone(),
            id,
            config,
            sandbox,
            image,
            image_name,
            log_path,
        })
    }

    /// Creates the container; on failure everything made so far is undone.
    pub fn execute(self, env: &ContainerEnv) -> CriResult<()> {
        let mut record = ContainerRecord {
            id: self.id.clone(),
            pod_sandbox_id: self.sandbox.id.clone(),
            config: self.config.clone(),
            image_name: self.image_name.clone(),
            image_id: self.image.id.clone(),
            runtime_handler: self.sandbox.runtime_handler.clone(),
            created_at: crate::pod::now_nanos(),
            started_at: 0,
            state: ContainerState::Creating,
            shim: None,
            exit: None,
            log_path: self.log_path.clone(),
            cgroups_path: String::new(),
            cgroup_relative: PathBuf::new(),
            rootfs_mounted: false,
            created_sources: Vec::new(),
            resources: self.config.linux.as_ref().and_then(|l| l.resources.clone()),
            user: (0, 0, Vec::new()),
            stop_signal: String::new(),
        };
        env.store.put(CONTAINERS, &record.id, &record)?;
        match self.build(env, &mut record) {
            Ok(()) => {
                record.state = ContainerState::Created;
                env.store.put(CONTAINERS, &record.id, &record)?;
                tracing::info!(container_id = %record.id, pod_id = %record.pod_sandbox_id, name = %self.name, "container created");
                Ok(())
            }
            Err(err) => {
                tracing::warn!(container_id = %record.id, error = %err, "CreateContainer failed; undoing");
                if let Err(undo) = lifecycle::destroy(env, &mut record) {
                    tracing::error!(container_id = %record.id, error = %undo, "undoing a failed CreateContainer");
                }
                if let Err(e) = env.store.delete(CONTAINERS, &record.id) {
                    tracing::error!(container_id = %record.id, error = %e, "deleting the record of a failed container");
                }
                Err(err)
            }
        }
    }

    fn build(&self, env: &ContainerEnv, record: &mut ContainerRecord) -> CriResult<()> {
        let step = |name: &'static str| {
            move |e: String| CriError::Internal(format!("CreateContainer: {name}: {e}"))
        };
        let dir = env.container_dir(&self.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| step("create container directory")(e.to_string()))?;

        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs)
            .map_err(|e| step("create rootfs mount point")(e.to_string()))?;
        let userns = self.sandbox.userns();
        if userns.is_some() {
            crate::userns::check_searchable(&rootfs)?;
        }
        match &userns {
            // The image layers through a read-only idmapped view of the image store: the
            // image's files are then the pod's root's (see `userns.rs`).
            Some((pin, maps)) => {
                let view = dir.join(crate::userns::STAGING_DIR).join("store");
                std::fs::create_dir_all(&view)
                    .map_err(|e| step("create the image store view")(e.to_string()))?;
                corral_sandbox::idmap::mount_idmapped(env.images.root(), &view, pin, false, true)
                    .map_err(|e| step("idmap the image store")(e.to_string()))?;
                env.images
                    .mount_rootfs_through(
                        &self.image.id,
                        &self.id,
                        &rootfs,
                        &view,
                        (maps.uid.host_id, maps.gid.host_id),
                    )
                    .map_err(|e| step("mount image rootfs")(e.to_string()))?;
            }
            None => {
                env.images
                    .mount_rootfs(&self.image.id, &self.id, &rootfs)
                    .map_err(|e| step("mount image rootfs")(e.to_string()))?;
            }
        }
        record.rootfs_mounted = true;

        let pod_cgroup = self.sandbox.pod_cgroup.as_ref().ok_or_else(|| {
            CriError::FailedPrecondition(format!("pod sandbox {} has no cgroup", self.sandbox.id))
        })?;
        let child = pod_cgroup
            .child(&self.id)
            .map_err(|e| step("container cgroup path")(e.to_string()))?;
        record.cgroups_path = if env.systemd_cgroup {
            child.oci_cgroups_path.clone()
        } else {
            child.cgroupfs_path()
        };
        record.cgroup_relative = child.relative_path.clone();

        let sandbox_ctx = sandbox_context(env, &self.sandbox);
        let settings = ImageSettings {
            entrypoint: self.image.config.entrypoint.clone(),
            cmd: self.image.config.cmd.clone(),
            env: self.image.config.env.clone(),
            working_dir: self.image.config.working_dir.clone(),
            user: self.image.config.user.clone(),
            stop_signal: self.image.config.stop_signal.clone(),
        };
        let target_pid = self.target_pid(env)?;
        let mut built = corral_oci::build_spec(&SpecInput {
            container_id: &self.id,
            config: &self.config,
            sandbox: &sandbox_ctx,
            image: &settings,
            rootfs: &rootfs,
            cgroups_path: record.cgroups_path.clone(),
            target_pid,
            mountinfo: std::path::Path::new("/proc/self/mountinfo"),
            seccomp_localhost_root: None,
            apparmor_enabled: env.apparmor,
            cgroup_v2: env.cgroup_layout.mode() == corral_cgroups::CgroupMode::V2,
        })
        .map_err(|e| {
            if e.is_invalid_argument() {
                CriError::InvalidArgument(crate::error::brief(e))
            } else {
                step("generate OCI spec")(crate::error::brief(e))
            }
        })?;
        record.created_sources = built.mounts_created.clone();
        // Limits the pod's cgroup cannot pass on are left out, or refused when really set.
        if let Some(resources) = built
            .spec
            .linux_mut()
            .as_mut()
            .and_then(|linux| linux.resources_mut().as_mut())
        {
            corral_oci::drop_unenforceable(resources, &pod_cgroup.child_limits())
                .map_err(|e| CriError::InvalidArgument(e.to_string()))?;
        }
        if let Some((pin, maps)) = &userns {
            crate::userns::join_pod_userns(&mut built.spec, pin, maps)?;
            crate::userns::stage_idmapped_mounts(
                &mut built.spec,
                &dir.join(crate::userns::STAGING_DIR),
                pin,
            )?;
        }
        record.user = (
            built.user.uid,
            built.user.gid,
            built.user.additional_gids.clone(),
        );
        record.stop_signal = stop_signal(&self.config, &settings.stop_signal);
        let spec_json = serde_json::to_vec_pretty(&built.spec)
            .map_err(|e| step("serialise OCI spec")(e.to_string()))?;
        std::fs::write(dir.join("config.json"), spec_json)
            .map_err(|e| step("write config.json")(e.to_string()))?;

        if let Some(parent) = self.log_path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| step("create log directory")(e.to_string()))?;
        }
        let runtime = env.runtime(&self.sandbox.runtime_handler)?;
        let memory_dirs = env
            .cgroup_layout
            .hierarchies()
            .iter()
            .filter(|h| h.has_controller("memory"))
            .map(|h| h.dir(&child.relative_path))
            .collect();
        // Recorded before the shim starts: a crash during create still leads to a cleanup.
        env.store.put(CONTAINERS, &record.id, record)?;
        let shim = corral_runtime::launch_shim(&ShimConfig {
            shim_binary: env.shim_binary.clone(),
            runtime,
            container_id: self.id.clone(),
            bundle: dir.clone(),
            state_dir: dir.clone(),
            log_path: self.log_path.clone(),
            tty: self.config.tty,
            stdin: self.config.stdin,
            stdin_once: self.config.stdin_once,
            cgroup_memory_dirs: memory_dirs,
        })
        .map_err(|e| step("create container with the OCI runtime")(e.to_string()))?;
        record.shim = Some(ShimRef {
            pid: shim.shim_pid,
            start_time: shim.shim_start_time,
            container_pid: shim.container_pid,
        });
        if let Some(resources) = self
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
        {
            // runc already wrote the file: a failure here only loses it at systemd's next reload.
            if let Err(e) = super::lifecycle::io_weight_to_systemd(env, record, &resources.unified)
            {
                tracing::warn!(container_id = %self.id, error = %e, "io.weight not handed to systemd");
            }
        }
        Ok(())
    }

    /// The init pid of the container a TARGET pid namespace names.
    fn target_pid(&self, env: &ContainerEnv) -> CriResult<Option<i32>> {
        let opts = self
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref());
        let Some(opts) = opts.filter(|o| o.pid == NamespaceMode::Target as i32) else {
            return Ok(None);
        };
        let target: Option<ContainerRecord> = env.store.get(CONTAINERS, &opts.target_id)?;
        match target.and_then(|t| t.shim) {
            Some(shim) => Ok(Some(shim.container_pid)),
            None => Err(CriError::InvalidArgument(format!(
                "config.linux.security_context.namespace_options.target_id: container {:?} not found or not created",
                opts.target_id
            ))),
        }
    }
}

/// What a container needs to know of its pod.
pub(super) fn sandbox_context(env: &ContainerEnv, sandbox: &SandboxRecord) -> SandboxContext {
    let (network, pid, ipc) = sandbox.namespace_modes();
    let sandbox_dir = env.config.state.join("sandboxes").join(&sandbox.id);
    let hostname = std::fs::read_to_string(sandbox_dir.join("hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    SandboxContext {
        sandbox_id: sandbox.id.clone(),
        pause_pid: sandbox.pause.map(|p| p.pid).unwrap_or(0),
        netns_path: sandbox.netns_path.clone(),
        network,
        pid,
        ipc,
        hostname,
        sandbox_dir,
        shm_path: sandbox.shm_path.clone(),
        privileged: sandbox
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged),
        log_directory: sandbox.config.log_directory.clone(),
    }
}

/// The signal StopContainer sends first: the config's, else the image's, else SIGTERM.
fn stop_signal(config: &ContainerConfig, image: &str) -> String {
    let from_config = cri_proto::v1::Signal::try_from(config.stop_signal)
        .ok()
        .filter(|s| *s != cri_proto::v1::Signal::RuntimeDefault)
        .map(|s| s.as_str_name().to_string());
    from_config
        .or_else(|| (!image.is_empty()).then(|| image.to_string()))
        .unwrap_or_else(|| "SIGTERM".into())
}

/// Where the container's log goes: `log_path` under the pod's `log_directory`, never outside
/// it (no `..`, not absolute); with no log directory, `log_path` must be absolute; with no
/// `log_path`, `default`.
fn log_path(log_dir: &str, log_path: &str, default: PathBuf) -> CriResult<PathBuf> {
    use std::path::{Component, Path};
    let invalid = |m: String| Err(CriError::InvalidArgument(m));
    if log_path.is_empty() {
        return Ok(default);
    }
    let shown = crate::error::shown(log_path);
    if log_path.contains('\0') {
        return invalid(format!("config.log_path: {shown} contains a NUL byte"));
    }
    let path = Path::new(log_path);
    if path.components().any(|c| c == Component::ParentDir) {
        return invalid(format!(
            "config.log_path: {shown} has a `..` component; give a path inside the pod's \
             log_directory, such as NAME/ATTEMPT.log"
        ));
    }
    if log_dir.is_empty() {
        if !path.is_absolute() {
            return invalid(format!(
                "config.log_path: {shown} is not absolute and the sandbox has no log_directory"
            ));
        }
        return Ok(path.to_path_buf());
    }
    if path.is_absolute() {
        return invalid(format!(
            "config.log_path: {shown} is absolute, but the sandbox has a log_directory; give \
             it relative to {}",
            crate::error::shown(log_dir)
        ));
    }
    let dir = Path::new(log_dir);
    if !dir.is_absolute() || dir.components().any(|c| c == Component::ParentDir) {
        return Err(CriError::FailedPrecondition(format!(
            "the sandbox's log_directory {} is not an absolute path without `..`; run a new \
             sandbox with an absolute log_directory",
            crate::error::shown(log_dir)
        )));
    }
    Ok(dir.join(path))
}

#[cfg(test)]
mod log_path_tests {
    use super::*;

    fn refusal(dir: &str, path: &str) -> String {
        match log_path(dir, path, PathBuf::from("/default")) {
            Err(CriError::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn a_log_path_climbing_out_of_the_log_directory_is_refused() {
        let m = refusal("/var/log/pods/p", "../../../etc/cron.d/x");
        assert!(m.starts_with("config.log_path:") && m.contains(".."), "{m}");
        assert!(refusal("/var/log/pods/p", "c/../../x").starts_with("config.log_path:"));
        assert!(refusal("", "/var/log/../../etc/x").starts_with("config.log_path:"));
    }

    #[test]
    fn an_absolute_log_path_under_a_log_directory_is_refused() {
        assert!(refusal("/var/log/pods/p", "/etc/passwd").starts_with("config.log_path:"));
    }

    #[test]
    fn a_relative_log_directory_is_refused() {
        let got = log_path("logs", "c/0.log", PathBuf::from("/default"));
        assert!(
            matches!(got, Err(CriError::FailedPrecondition(_))),
            "{got:?}"
        );
    }

    #[test]
    fn good_log_paths_are_accepted() {
        let got = log_path("/var/log/pods/p", "c/0.log", PathBuf::new()).ok();
        assert_eq!(got, Some(PathBuf::from("/var/log/pods/p/c/0.log")));
        let got = log_path("", "/tmp/c.log", PathBuf::new()).ok();
        assert_eq!(got, Some(PathBuf::from("/tmp/c.log")));
        let got = log_path("/l", "", PathBuf::from("/default")).ok();
        assert_eq!(got, Some(PathBuf::from("/default")));
    }
}
