//! CreateContainer: validate, then build the container step by step, recording each resource
//! as it is made so that a failure at any step undoes exactly what exists.

use std::path::{Path, PathBuf};

use corral_oci::{ImageSettings, SandboxContext, SpecInput};
use corral_runtime::{RestoreFrom, ShimConfig};
use corral_store::CONTAINERS;
use cri_proto::v1::{ContainerConfig, NamespaceMode};

use super::record::{name_key, ContainerRecord, ContainerState, ProcessUser, ShimRef};
use super::validate::{not_ready, validate, Checked, ContainerRules};
use super::ContainerEnv;
use crate::checkpoint::archive;
use crate::error::{CriError, CriResult};
use crate::phases::Phases;
use crate::pod::SandboxRecord;

/// The error of a failed CreateContainer step: the step named first, the error's kind kept.
fn step<E: Into<CriError>>(name: &str) -> impl FnOnce(E) -> CriError {
    crate::error::during(format!("CreateContainer: {name}"))
}

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
        let id = crate::ids::new_id()?;
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
    ///
    /// Two writes of the record: `Creating` before anything is made (with the cgroup path,
    /// known from the pod, and in one commit with the lease on the image's layers), `Created`
    /// once the shim reports the container. What is made in
    /// between needs no write of its own: the teardown of a `Creating` record also looks where
    /// the id says the rootfs mount, the shim, the runtime's container and the cgroup would be
    /// (see `remove.rs`); only mount sources, which the id does not name, are written ahead.
    pub fn execute(self, env: &ContainerEnv) -> CriResult<()> {
        let phases = Phases::new();
        let span = tracing::Span::current();
        let (cgroups_path, cgroup_relative) = self.cgroup_paths(env)?;
        let mut record = ContainerRecord {
            id: self.id.clone(),
            pod_sandbox_id: self.sandbox.id.clone(),
            config: self.config.clone(),
            image_name: self.image_name.clone(),
            image_id: self.image.id.clone(),
            runtime_handler: self.sandbox.runtime_handler.clone(),
            created_at: crate::ids::now_nanos(),
            started_at: 0,
            state: ContainerState::Creating,
            shim: None,
            exit: None,
            log_path: self.log_path.clone(),
            cgroups_path,
            cgroup_relative,
            rootfs_mounted: false,
            created_sources: Vec::new(),
            resources: self.config.linux.as_ref().and_then(|l| l.resources.clone()),
            user: ProcessUser::default(),
            stop_signal: String::new(),
            restored: false,
        };
        // With the lease on the image's layers: one commit for both.
        phases.step(&span, "record_creating", || {
            env.images
                .lease_rootfs_with(&self.image.id, &record.id, |tx| {
                    tx.put(CONTAINERS, &record.id, &record)
                })
                .map_err(step("record the container and lease its image's layers"))
        })?;
        crate::crash::point("create_container:recorded");
        match self.build(env, &mut record, &phases, &span) {
            Ok(()) => {
                crate::crash::point("create_container:shim_launched");
                record.state = ContainerState::Created;
                phases.step(&span, "record_created", || {
                    env.store.put(CONTAINERS, &record.id, &record)
                })?;
                tracing::info!(
                    container_id = %record.id,
                    pod_id = %record.pod_sandbox_id,
                    name = %self.name,
                    phases = %phases.summary(),
                    "container created"
                );
                Ok(())
            }
            Err(err) => {
                tracing::warn!(container_id = %record.id, error = %err, "CreateContainer failed; undoing");
                if let Err(undo) = super::remove::destroy(env, &mut record) {
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

    /// The container's cgroup under its pod's: as the OCI spec names it (a path, or systemd's
    /// `slice:prefix:name`) and relative to each hierarchy's root.
    fn cgroup_paths(&self, env: &ContainerEnv) -> CriResult<(String, PathBuf)> {
        let child = self
            .pod_cgroup()?
            .child(&self.id)
            .map_err(step("container cgroup path"))?;
        let oci = if env.systemd_cgroup {
            child.oci_cgroups_path.clone()
        } else {
            child.cgroupfs_path()
        };
        Ok((oci, child.relative_path))
    }

    fn pod_cgroup(&self) -> CriResult<&corral_cgroups::PodCgroup> {
        self.sandbox.pod_cgroup.as_ref().ok_or_else(|| {
            CriError::FailedPrecondition(format!("pod sandbox {} has no cgroup", self.sandbox.id))
        })
    }

    /// Makes the container: its directory, rootfs, spec and shim, recording each in `record`
    /// as it is made so that an undo finds it; each a step of `phases`.
    fn build(
        &self,
        env: &ContainerEnv,
        record: &mut ContainerRecord,
        phases: &Phases,
        span: &tracing::Span,
    ) -> CriResult<()> {
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
        let rootfs = phases.step(span, "rootfs", || self.mount_rootfs(env, &dir, record))?;
        if let Some(path) = &self.restore {
            apply_checkpoint_rootfs(path, &dir, &rootfs)?;
        }
        let pod_cgroup = self.pod_cgroup()?;
        phases.step(span, "spec", || -> CriResult<()> {
            let spec = self.spec(env, &dir, &rootfs, pod_cgroup, record)?;
            let spec_json = serde_json::to_vec_pretty(&spec)
                .map_err(|e| CriError::internal("CreateContainer: serialise OCI spec", e))?;
            std::fs::write(dir.join("config.json"), spec_json).map_err(step("write config.json"))
        })?;
        crate::crash::point("create_container:spec_written");

        let runtime_took = phases.step(span, "shim", || self.launch(env, &dir, record))?;
        if let Some(took) = runtime_took {
            // Inside the shim's step: what of it the OCI runtime's create took.
            phases.record_ending_now("runtime_create", took);
        }
        if let Some(resources) = self
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
        {
            // runc already wrote the file: a failure here only loses it at systemd's next reload.
            if let Err(e) = super::update::io_weight_to_systemd(env, record, &resources.unified) {
                tracing::warn!(container_id = %self.id, error = %e, "io.weight not handed to systemd");
            }
        }
        Ok(())
    }

    /// Mounts the image's layers at `dir/rootfs` (through an idmapped view of the image store
    /// in a pod with its own user namespace) and records it.
    fn mount_rootfs(
        &self,
        env: &ContainerEnv,
        dir: &Path,
        record: &mut ContainerRecord,
    ) -> CriResult<PathBuf> {
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(step("create rootfs mount point"))?;
        match self.sandbox.userns() {
            // The image layers through a read-only idmapped view of the image store: the
            // image's files are then the pod's root's (see `userns.rs`).
            Some((pin, maps)) => {
                crate::userns::check_searchable(&rootfs)?;
                let view = dir.join(crate::userns::STAGING_DIR).join("store");
                std::fs::create_dir_all(&view).map_err(step("create the image store view"))?;
                corral_sandbox::idmap::mount_idmapped(env.images.root(), &view, &pin, false, true)
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
                env.host
                    .mount_rootfs(&env.images, &self.image.id, &self.id, &rootfs)
                    .map_err(step("mount image rootfs"))?;
            }
        }
        record.rootfs_mounted = true;
        crate::crash::point("create_container:rootfs_mounted");
        Ok(rootfs)
    }

    /// The container's OCI spec: planned from the request, its missing mount sources recorded
    /// and then made, limits the pod cannot pass on dropped, the pod's user namespace joined.
    fn spec(
        &self,
        env: &ContainerEnv,
        dir: &Path,
        rootfs: &Path,
        pod_cgroup: &corral_cgroups::PodCgroup,
        record: &mut ContainerRecord,
    ) -> CriResult<oci_spec::runtime::Spec> {
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
        let mut built = corral_oci::plan_spec(&SpecInput {
            container_id: &self.id,
            config: &self.config,
            sandbox: &sandbox_ctx,
            image: &settings,
            rootfs,
            cgroups_path: record.cgroups_path.clone(),
            target_pid,
            mountinfo: Path::new("/proc/self/mountinfo"),
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
        if !built.mounts_to_create.is_empty() {
            create_mount_sources(env, &built.mounts_to_create, record)?;
        }
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
        if let Some((pin, maps)) = &self.sandbox.userns() {
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
        if self.restore.is_some() {
            let images = dir.join(RESTORE_DIR).join(archive::CHECKPOINT_DIR);
            crate::checkpoint::pids::check_pids_free(&built.spec, &images)?;
        }
        Ok(built.spec)
    }

    /// Starts the shim, which creates the container with the OCI runtime (or restores it, held
    /// still until StartContainer), and records it; returns how long the runtime took, if the
    /// shim said.
    fn launch(
        &self,
        env: &ContainerEnv,
        dir: &Path,
        record: &mut ContainerRecord,
    ) -> CriResult<Option<std::time::Duration>> {
        if let Some(parent) = self.log_path.parent() {
            std::fs::create_dir_all(parent).map_err(step("create log directory"))?;
        }
        let runtime = env.runtime(&self.sandbox.runtime_handler)?;
        let memory_dirs = env
            .cgroup_layout
            .hierarchies()
            .iter()
            .filter(|h| h.has_controller("memory"))
            .map(|h| h.dir(&record.cgroup_relative))
            .collect();
        let restore = self.restore.as_ref().map(|_| RestoreFrom {
            images: dir.join(RESTORE_DIR).join(archive::CHECKPOINT_DIR),
            criu: env.config.criu_path.clone(),
        });
        let shim = env
            .host
            .launch_shim(&ShimConfig {
                shim_binary: env.shim_binary.clone(),
                runtime: runtime.clone(),
                container_id: self.id.clone(),
                bundle: dir.to_path_buf(),
                state_dir: dir.to_path_buf(),
                log_path: self.log_path.clone(),
                tty: self.config.tty,
                stdin: self.config.stdin,
                stdin_once: self.config.stdin_once,
                cgroup_memory_dirs: memory_dirs,
                restore,
                cgroup_warmup: own_cgroup_procs(env),
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
            env.host
                .pause(&runtime, &self.id)
                .map_err(step("pause the restored container"))?;
            record.restored = true;
        }
        Ok(shim.runtime_create)
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

/// The `cgroup.procs` of corrald's own cgroup, where the shim it launches starts: the shim
/// writes itself there while the runtime creates the container (corral-shim's `warm.rs`).
/// Read once: corrald's cgroup does not change while it runs.
fn own_cgroup_procs(env: &ContainerEnv) -> Option<PathBuf> {
    static OWN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    OWN.get_or_init(|| {
        let own = i32::try_from(std::process::id()).ok()?;
        let cgroups = corral_cgroups::pid_cgroup_paths(own).ok()?;
        env.cgroup_layout.procs_file_of(&cgroups)
    })
    .clone()
}

/// Where, in the container's directory, a checkpoint archive is unpacked for a restore.
const RESTORE_DIR: &str = "restore";

/// Whether a CreateContainer image names a checkpoint archive: an absolute path to a file
/// (image references never start with `/`).
/// Unpacks the checkpoint archive at `path` into `dir` and applies its root filesystem changes.
fn apply_checkpoint_rootfs(path: &Path, dir: &Path, rootfs: &Path) -> CriResult<()> {
    let unpacked = dir.join(RESTORE_DIR);
    archive::unpack(path, &unpacked)
        .map_err(|e| CriError::InvalidArgument(format!("config.image.image: {e}")))?;
    archive::apply_rootfs_diff(&unpacked, rootfs).map_err(|e| {
        CriError::Internal(format!(
            "CreateContainer: apply the checkpoint's root filesystem changes: {e}"
        ))
    })
}

/// Write-ahead: the missing mount sources are recorded before they are made, so that a crash
/// in between still removes them (those still empty) at start-up. Then records what was made
/// (a directory that appeared meanwhile is not this container's); a failure removed what it
/// made itself.
fn create_mount_sources(
    env: &ContainerEnv,
    dirs: &[PathBuf],
    record: &mut ContainerRecord,
) -> CriResult<()> {
    record.created_sources = dirs.to_vec();
    env.store.put(CONTAINERS, &record.id, &*record)?;
    crate::crash::point("create_container:sources_recorded");
    let made = corral_oci::create_mount_sources(dirs);
    record.created_sources = made.as_ref().cloned().unwrap_or_default();
    made.map(drop).map_err(step("create missing mount sources"))
}

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
    let sandbox_dir = env.config.layout().sandboxes_dir().join(&sandbox.id);
    let hostname = std::fs::read_to_string(sandbox_dir.join(corral_sandbox::layout::HOSTNAME_FILE))
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
