//! CreateContainer: validate, then build the container step by step, recording each resource
//! as it is made so that a failure at any step undoes exactly what exists.

use std::path::PathBuf;

use corral_oci::{ImageSettings, SandboxContext, SpecInput};
use corral_runtime::{RestoreFrom, ShimConfig};
use corral_store::CONTAINERS;
use cri_proto::v1::{ContainerConfig, NamespaceMode};

use super::lifecycle;
use super::record::{name_key, ContainerRecord, ContainerState, ProcessUser, ShimRef};
use super::ContainerEnv;
use crate::checkpoint::archive;
use crate::error::{CriError, CriResult};

/// The error of a failed CreateContainer step: the step named first, the error's kind kept.
fn step<E: Into<CriError>>(name: &str) -> impl FnOnce(E) -> CriError {
    crate::error::during(format!("CreateContainer: {name}"))
}
use crate::pod::{SandboxRecord, SandboxState};

/// A validated CreateContainer request.
pub(super) struct ContainerPlan {
    pub id: String,
    pub name: String,
    pub name_key: String,
    pub pod_sandbox_id: String,
    config: ContainerConfig,
    sandbox: SandboxRecord,
    image: corral_image::ImageRecord,
    image_name: String,
    log_path: PathBuf,
    /// The checkpoint archive the container is restored from, if it is.
    restore: Option<PathBuf>,
}

impl ContainerPlan {
    /// Checks the request against the sandbox and the image store.
    pub fn new(
        env: &ContainerEnv,
        config: ContainerConfig,
        sandbox: SandboxRecord,
    ) -> CriResult<ContainerPlan> {
        let id = crate::pod::new_id()?;
        let rules = ContainerRules {
            runtimes: &env.config.runtimes,
            recursive_read_only: env.features.recursive_read_only(&sandbox.runtime_handler),
        };
        let default_log = env.container_dir(&id).join("container.log");
        let Checked {
            name,
            image_name,
            log_path,
        } = validate(&rules, &config, &sandbox, default_log)?;
        if !sandbox.pause_alive() {
            return Err(not_ready(&sandbox));
        }
        // An image given as the path of a checkpoint archive: restore from it (as CRI-O does).
        let (config, image_name, restore) = if is_archive_path(&image_name) {
            let archive = PathBuf::from(&image_name);
            let (config, image_name) = restore_config(config, &archive)?;
            (config, image_name, Some(archive))
        } else {
            (config, image_name, None)
        };
        let image = env.images.resolve(&image_name).ok_or_else(|| {
            CriError::NotFound(format!(
                "image {image_name:?} not found; pull it first (PullImage / corralctl pull)"
            ))
        })?;
        env.runtime(&sandbox.runtime_handler)?;
        Ok(ContainerPlan {
            name,
            name_key: name_key(&sandbox.id, &config),
            pod_sandbox_id: sandbox.id.clone(),
            id,
            config,
            sandbox,
            image,
            image_name,
            log_path,
            restore,
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
            user: ProcessUser::default(),
            stop_signal: String::new(),
            restored: false,
        };
        env.store.put(CONTAINERS, &record.id, &record)?;
        crate::crash::point("create_container:recorded");
        match self.build(env, &mut record) {
            Ok(()) => {
                crate::crash::point("create_container:shim_launched");
                record.state = ContainerState::Created;
                env.store.put(CONTAINERS, &record.id, &record)?;
                tracing::info!(container_id = %record.id, pod_id = %record.pod_sandbox_id, name = %self.name, "container created");
                Ok(())
            }
            Err(err) => {
                tracing::warn!(container_id = %record.id, error = %err, "CreateContainer failed; undoing");
                if let Err(undo) = lifecycle::destroy(env, &mut record) {
                    // The `Creating` record stays, for start-up reconciliation to finish.
                    tracing::error!(container_id = %record.id, error = %undo, "undoing a failed CreateContainer");
                    if let Err(e) = env.store.put(CONTAINERS, &record.id, &record) {
                        tracing::error!(container_id = %record.id, error = %e, "recording what is left of a failed container");
                    }
                } else if let Err(e) = env.store.delete(CONTAINERS, &record.id) {
                    tracing::error!(container_id = %record.id, error = %e, "deleting the record of a failed container");
                }
                Err(err)
            }
        }
    }

    fn build(&self, env: &ContainerEnv, record: &mut ContainerRecord) -> CriResult<()> {
        if self.restore.is_some() {
            if let Some(reason) = crate::checkpoint::criu_unavailable(&env.config.criu_path) {
                return Err(CriError::FailedPrecondition(format!(
                    "config.image.image: cannot restore a checkpoint: CRIU cannot work on this \
                     host: {reason}"
                )));
            }
        }
        let dir = env.container_dir(&self.id);
        std::fs::create_dir_all(&dir).map_err(step("create container directory"))?;

        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(step("create rootfs mount point"))?;
        let userns = self.sandbox.userns();
        if userns.is_some() {
            crate::userns::check_searchable(&rootfs)?;
        }
        match &userns {
            // The image layers through a read-only idmapped view of the image store: the
            // image's files are then the pod's root's (see `userns.rs`).
            Some((pin, maps)) => {
                let view = dir.join(crate::userns::STAGING_DIR).join("store");
                std::fs::create_dir_all(&view).map_err(step("create the image store view"))?;
                corral_sandbox::idmap::mount_idmapped(env.images.root(), &view, pin, false, true)
                    .map_err(step("idmap the image store"))?;
                env.images
                    .mount_rootfs_through(
                        &self.image.id,
                        &self.id,
                        &rootfs,
                        &view,
                        (maps.uid.host_id, maps.gid.host_id),
                    )
                    .map_err(step("mount image rootfs"))?;
            }
            None => {
                env.images
                    .mount_rootfs(&self.image.id, &self.id, &rootfs)
                    .map_err(step("mount image rootfs"))?;
            }
        }
        record.rootfs_mounted = true;
        crate::crash::point("create_container:rootfs_mounted");
        if let Some(path) = &self.restore {
            let unpacked = dir.join(RESTORE_DIR);
            archive::unpack(path, &unpacked)
                .map_err(|e| CriError::InvalidArgument(format!("config.image.image: {e}")))?;
            archive::apply_rootfs_diff(&unpacked, &rootfs).map_err(|e| {
                CriError::Internal(format!(
                    "CreateContainer: apply the checkpoint's root filesystem changes: {e}"
                ))
            })?;
        }

        let pod_cgroup = self.sandbox.pod_cgroup.as_ref().ok_or_else(|| {
            CriError::FailedPrecondition(format!("pod sandbox {} has no cgroup", self.sandbox.id))
        })?;
        let child = pod_cgroup
            .child(&self.id)
            .map_err(step("container cgroup path"))?;
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
            // A refusal names the field itself; a host failure gets the step.
            if e.is_invalid_argument() {
                CriError::from(e)
            } else {
                step("generate OCI spec")(e)
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
        record.user = ProcessUser {
            uid: built.user.uid,
            gid: built.user.gid,
            additional_gids: built.user.additional_gids.clone(),
        };
        record.stop_signal = stop_signal(&self.config, &settings.stop_signal);
        let spec_json = serde_json::to_vec_pretty(&built.spec)
            .map_err(|e| CriError::internal("CreateContainer: serialise OCI spec", e))?;
        std::fs::write(dir.join("config.json"), spec_json).map_err(step("write config.json"))?;
        crate::crash::point("create_container:spec_written");

        if let Some(parent) = self.log_path.parent() {
            std::fs::create_dir_all(parent).map_err(step("create log directory"))?;
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
        let restore = self.restore.as_ref().map(|_| RestoreFrom {
            images: dir.join(RESTORE_DIR).join(archive::CHECKPOINT_DIR),
            criu: env.config.criu_path.clone(),
        });
        let shim = corral_runtime::launch_shim(&ShimConfig {
            shim_binary: env.shim_binary.clone(),
            runtime: runtime.clone(),
            container_id: self.id.clone(),
            bundle: dir.clone(),
            state_dir: dir.clone(),
            log_path: self.log_path.clone(),
            tty: self.config.tty,
            stdin: self.config.stdin,
            stdin_once: self.config.stdin_once,
            cgroup_memory_dirs: memory_dirs,
            restore,
        })
        .map_err(|e| match self.restore {
            Some(_) => CriError::Internal(format!(
                "CreateContainer: restore the container from its checkpoint: {e}{}",
                crate::checkpoint::criu_log_errors(&dir.join("restore-work/restore.log"))
            )),
            None => step("create container with the OCI runtime")(e),
        })?;
        record.shim = Some(ShimRef {
            pid: shim.shim_pid,
            start_time: shim.shim_start_time,
            container_pid: shim.container_pid,
        });
        if self.restore.is_some() {
            // Restored running; held still until StartContainer resumes it.
            runtime
                .pause(&self.id)
                .map_err(step("pause the restored container"))?;
            record.restored = true;
        }
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

/// What CreateContainer's checks need of the daemon: its configuration and what it probed,
/// as plain data, so that [`validate`] runs without a host.
pub(super) struct ContainerRules<'a> {
    /// The configured runtime handlers.
    pub runtimes: &'a std::collections::BTreeMap<String, crate::config::RuntimeHandler>,
    /// Whether the pod's runtime handler can make recursive read-only mounts here.
    pub recursive_read_only: bool,
}

/// What [`validate`] found valid and worked out.
pub(super) struct Checked {
    name: String,
    image_name: String,
    log_path: PathBuf,
}

/// Every check of a CreateContainer request that needs no host, a pure function of the
/// daemon's rules, the request and its pod's record: metadata, image reference, log path, the
/// pod's state and runtime handler, recursive read-only mounts. (Mounts, devices, security
/// and resources are checked by `corral_oci::build_spec`, with its own tests.) Every refusal
/// names the field; `default_log` is the log path when the request gives none.
pub(super) fn validate(
    rules: &ContainerRules<'_>,
    config: &ContainerConfig,
    sandbox: &SandboxRecord,
    default_log: PathBuf,
) -> CriResult<Checked> {
    let invalid = |m: String| Err(CriError::InvalidArgument(m));
    let Some(meta) = config.metadata.as_ref() else {
        return invalid("config.metadata: missing; give the container's name and attempt".into());
    };
    if meta.name.is_empty() {
        return invalid("config.metadata.name: must not be empty".into());
    }
    if sandbox.state != SandboxState::Ready {
        return Err(not_ready(sandbox));
    }
    let image_name = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    if image_name.is_empty() {
        return invalid("config.image.image: must name an image".into());
    }
    // An absolute path names a checkpoint archive to restore from, not an image reference.
    if !image_name.starts_with('/') {
        check_image_name(&image_name)?;
    }
    let handler = if sandbox.runtime_handler.is_empty() {
        crate::config::DEFAULT_HANDLER
    } else {
        &sandbox.runtime_handler
    };
    if !rules.runtimes.contains_key(handler) {
        return Err(CriError::FailedPrecondition(format!(
            "the pod's runtime_handler {} is no longer configured; add [runtimes.{handler}] \
             back to the configuration or run the pod again with another handler",
            crate::error::shown(handler)
        )));
    }
    if let Some(mount) = config.mounts.iter().find(|m| m.recursive_read_only) {
        if !rules.recursive_read_only {
            return Err(CriError::FailedPrecondition(format!(
                "mounts[{}].recursive_read_only: runtime handler {:?} cannot make recursive \
                 read-only mounts on this host (it needs an OCI runtime whose `features` \
                 lists rro, such as runc >= 1.1, and Linux >= 5.12); drop it or use readonly",
                mount.container_path, sandbox.runtime_handler
            )));
        }
    }
    let log_path = log_path(&sandbox.config.log_directory, &config.log_path, default_log)?;
    Ok(Checked {
        name: meta.name.clone(),
        image_name,
        log_path,
    })
}

fn not_ready(sandbox: &SandboxRecord) -> CriError {
    CriError::FailedPrecondition(format!(
        "pod sandbox {} is not ready; run a new sandbox for the pod",
        sandbox.id
    ))
}

/// Refuses an image name that is neither a reference nor an image id (or a prefix of one): no
/// image could have it, and the caller gets the parse error instead of "not found".
fn check_image_name(name: &str) -> CriResult<()> {
    let hex = name.trim().strip_prefix("sha256:").unwrap_or(name.trim());
    let id_like = !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match corral_image::Reference::parse(name.trim()) {
        Err(e) if !id_like => Err(CriError::InvalidArgument(format!(
            "config.image.image: {}",
            crate::error::brief(e)
        ))),
        _ => Ok(()),
    }
}

/// Where, in the container's directory, a checkpoint archive is unpacked for a restore.
const RESTORE_DIR: &str = "restore";

/// Whether a CreateContainer image names a checkpoint archive: an absolute path to a file
/// (image references never start with `/`).
fn is_archive_path(image: &str) -> bool {
    image.starts_with('/') && std::path::Path::new(image).is_file()
}

/// The config a container restored from `archive` is created with: the checkpointed
/// container's, with the request's metadata, labels, annotations and log path; and the image
/// it was made from.
fn restore_config(
    request: ContainerConfig,
    archive: &std::path::Path,
) -> CriResult<(ContainerConfig, String)> {
    let dump = archive::read_config(archive).map_err(|e| {
        CriError::InvalidArgument(format!(
            "config.image.image: {e}; give an image, or the path of an archive \
             CheckpointContainer wrote"
        ))
    })?;
    let Some(mut config) = dump.corral_container_config else {
        return Err(CriError::InvalidArgument(format!(
            "config.image.image: {}: its {} has no corralContainerConfig; corral restores \
             only archives it wrote",
            archive.display(),
            archive::CONFIG_DUMP
        )));
    };
    if config.tty {
        return Err(CriError::FailedPrecondition(format!(
            "config.image.image: {}: the checkpointed container has a terminal, which corral \
             cannot restore",
            archive.display()
        )));
    }
    config.metadata = request.metadata;
    config.labels.extend(request.labels);
    config.annotations.extend(request.annotations);
    config.log_path = request.log_path;
    Ok((config, dump.rootfs_image_name))
}

/// What a container needs to know of its pod.
pub(super) fn sandbox_context(env: &ContainerEnv, sandbox: &SandboxRecord) -> SandboxContext {
    let crate::pod::NamespaceModes { network, pid, ipc } = sandbox.namespace_modes();
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

#[cfg(test)]
mod validate_tests {
    #![allow(clippy::unwrap_used)]
    use cri_proto::v1::{ContainerMetadata, ImageSpec, Mount, PodSandboxConfig};

    use super::*;

    /// A ready pod with handler `runc`, whose log directory is `log_directory`; built from its
    /// JSON form so that record fields added later (with serde defaults) need no change here.
    fn sandbox(log_directory: &str, runtime_handler: &str) -> SandboxRecord {
        let config = PodSandboxConfig {
            log_directory: log_directory.into(),
            ..Default::default()
        };
        serde_json::from_value(serde_json::json!({
            "id": "pod0",
            "config": config,
            "runtime_handler": runtime_handler,
            "created_at": 0,
            "state": "Ready",
        }))
        .unwrap()
    }

    fn container() -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: "busybox:1.36".into(),
                ..Default::default()
            }),
            log_path: "app/0.log".into(),
            ..Default::default()
        }
    }

    fn check(config: &ContainerConfig, sandbox: &SandboxRecord, rro: bool) -> CriResult<Checked> {
        let runtimes = [(
            "runc".to_owned(),
            crate::config::RuntimeHandler {
                path: "runc".into(),
                root: None,
            },
        )]
        .into_iter()
        .collect();
        let rules = ContainerRules {
            runtimes: &runtimes,
            recursive_read_only: rro,
        };
        validate(&rules, config, sandbox, PathBuf::from("/default.log"))
    }

    type Mutation = fn(&mut ContainerConfig, &mut SandboxRecord);

    /// Every refusal of CreateContainer's checks: what is wrong, the code, and the field the
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
                |c, _| c.metadata = Some(ContainerMetadata::default()),
                InvalidArgument,
                "config.metadata.name",
            ),
            (
                "no image",
                |c, _| c.image = None,
                InvalidArgument,
                "config.image.image",
            ),
            // Answered NotFound ("pull it first") before.
            (
                "malformed image reference",
                |c, _| c.image.as_mut().unwrap().image = "Not An Image!".into(),
                InvalidArgument,
                "config.image.image",
            ),
            (
                "log path climbing out",
                |c, _| c.log_path = "../../etc/x".into(),
                InvalidArgument,
                "config.log_path",
            ),
            (
                "absolute log path under a log directory",
                |c, _| c.log_path = "/etc/x".into(),
                InvalidArgument,
                "config.log_path",
            ),
            (
                "NUL in log path",
                |c, _| c.log_path = "a\0b".into(),
                InvalidArgument,
                "config.log_path",
            ),
            (
                "relative log path without a log directory",
                |c, s| {
                    s.config.log_directory.clear();
                    c.log_path = "x.log".into();
                },
                InvalidArgument,
                "config.log_path",
            ),
            (
                "pod with a relative log directory",
                |_, s| s.config.log_directory = "logs".into(),
                FailedPrecondition,
                "log_directory",
            ),
            (
                "pod not ready",
                |_, s| s.state = SandboxState::NotReady,
                FailedPrecondition,
                "pod sandbox pod0",
            ),
            // Answered InvalidArgument naming a field CreateContainer does not have before.
            (
                "pod's handler no longer configured",
                |_, s| s.runtime_handler = "kata".into(),
                FailedPrecondition,
                "runtime_handler",
            ),
            (
                "recursive read-only mount the runtime cannot make",
                |c, _| {
                    c.mounts.push(Mount {
                        container_path: "/data".into(),
                        host_path: "/srv".into(),
                        readonly: true,
                        recursive_read_only: true,
                        ..Default::default()
                    })
                },
                FailedPrecondition,
                "mounts[/data].recursive_read_only",
            ),
        ]
    };

    #[test]
    fn every_refusal_has_its_code_and_names_the_field() {
        let mut failures = Vec::new();
        for (what, mutate, code, field) in REFUSALS {
            let (mut config, mut pod) = (container(), sandbox("/var/log/pods/p", ""));
            mutate(&mut config, &mut pod);
            match check(&config, &pod, false) {
                Ok(_) => failures.push(format!("{what}: accepted")),
                Err(err) => {
                    let status = tonic::Status::from(err);
                    if status.code() != *code || !status.message().contains(field) {
                        failures.push(format!(
                            "{what}: want {code:?} naming {field}, got {:?}: {}",
                            status.code(),
                            status.message()
                        ));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn good_requests_pass_with_their_log_path() {
        let pod = sandbox("/var/log/pods/p", "runc");
        let checked = check(&container(), &pod, false).unwrap();
        assert_eq!(checked.log_path, PathBuf::from("/var/log/pods/p/app/0.log"));
        assert_eq!(checked.name, "app");
        let mut by_id = container();
        by_id.image.as_mut().unwrap().image = format!("sha256:{}", "ab".repeat(32));
        by_id.log_path.clear();
        let checked = check(&by_id, &pod, false).unwrap();
        assert_eq!(checked.log_path, PathBuf::from("/default.log"));
        let mut rro = container();
        rro.mounts.push(Mount {
            container_path: "/data".into(),
            host_path: "/srv".into(),
            recursive_read_only: true,
            ..Default::default()
        });
        assert!(check(&rro, &pod, true).is_ok());
        let mut short_id = container();
        short_id.image.as_mut().unwrap().image = "0123abc".into();
        assert!(check(&short_id, &pod, false).is_ok());
    }
}
