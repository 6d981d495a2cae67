//! CRI `CreateContainer` requests turned into OCI runtime specs.
//!
//! [`build_spec`] takes the container config, what the container needs from its pod
//! ([`SandboxContext`]) and from its image ([`ImageSettings`]), and returns the
//! `config.json` an OCI runtime (runc, crun) runs: the pod's namespaces joined through the
//! pause process, the cgroup path the caller chose, resources, mounts with their propagation
//! checked against the host's mount table, the process with its user resolved in the image,
//! capabilities, seccomp, AppArmor, masked paths and devices.
//!
//! Privileged containers (only in privileged pods) get every capability the runtime holds,
//! every device node of the host's `/dev` with an allow-all device rule, writable `/sys`, no
//! masked paths and no seccomp filter, as with containerd. No container gets more capabilities
//! than the runtime itself has.
//!
//! Building a spec changes nothing on the host except creating missing volume directories,
//! which [`BuiltSpec::mounts_created`] lists so that a failed create can remove them again;
//! [`plan_spec`] only lists them, for a caller that records them before they are made.
//! Everything is blocking file I/O; async callers use `spawn_blocking`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cri_proto::v1::{ContainerConfig, NamespaceMode};
use oci_spec::runtime::{Linux, Process, Root, Spec, User};

mod capabilities;
mod devices;
mod enforce;
mod error;
mod mounts;
mod namespaces;
pub mod peers;
mod process;
pub mod propagation;
mod resources;
mod seccomp;
mod security;
mod user;

#[cfg(any(test, feature = "fuzzing"))]
mod testutil;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

pub use capabilities::{ALL_CAPABILITIES, DEFAULT_CAPABILITIES};
pub use enforce::drop_unenforceable;
pub use error::SpecError;
pub use propagation::{mountinfo_propagation, Propagation};
pub use resources::{hugepage_limits_to_unified, linux_resources};
pub use seccomp::{default_seccomp_profile, load_profile, runtime_default_profile};
pub use security::{DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS};
pub use user::ResolvedUser;

/// The OCI runtime spec version the generated specs follow.
pub const OCI_VERSION: &str = "1.0.2";

/// Annotations corral puts on every container spec (the keys containerd uses, which tools
/// such as crictl and monitoring agents read).
pub mod annotations {
    /// `container` for application containers.
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    /// The pod sandbox's id.
    pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
    /// The container's name from its metadata.
    pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    /// The image as the user named it.
    pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
    /// The pod's log directory.
    pub const SANDBOX_LOG_DIRECTORY: &str = "io.kubernetes.cri.sandbox-log-directory";
    /// The value of [`CONTAINER_TYPE`] for application containers.
    pub const CONTAINER_TYPE_CONTAINER: &str = "container";
}

/// What a container needs from its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxContext {
    /// The sandbox id.
    pub sandbox_id: String,
    /// The pause process's host pid: the pod's IPC, UTS (and PID) namespaces are joined
    /// through `/proc/<pid>/ns/{ipc,uts,pid}`.
    pub pause_pid: i32,
    /// The pinned network namespace (network POD); `None` for NODE. When the pod has its own
    /// network but no pin is given, `/proc/<pause_pid>/ns/net` is joined.
    pub netns_path: Option<PathBuf>,
    /// The pod's network namespace mode (POD or NODE).
    pub network: NamespaceMode,
    /// The pod's PID namespace mode.
    pub pid: NamespaceMode,
    /// The pod's IPC namespace mode.
    pub ipc: NamespaceMode,
    /// The pod's hostname (empty: the host's).
    pub hostname: String,
    /// The directory with the pod's `hostname`, `hosts` and `resolv.conf`.
    pub sandbox_dir: PathBuf,
    /// The pod's `/dev/shm` tmpfs; `None` when IPC is NODE (the host's `/dev/shm` is bound).
    pub shm_path: Option<PathBuf>,
    /// Whether the pod is privileged (`security_context.privileged`).
    pub privileged: bool,
    /// The pod's log directory.
    pub log_directory: String,
}

/// What a container needs from its image's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSettings {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `KEY=value`.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: String,
    /// `User`: `name`, `uid`, `name:group` or `uid:gid`.
    pub user: String,
    /// `StopSignal` (not part of the spec; for the caller's StopContainer).
    pub stop_signal: String,
}

/// Everything [`build_spec`] needs.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    /// The container id.
    pub container_id: &'a str,
    /// The CRI container config.
    pub config: &'a ContainerConfig,
    /// The container's pod.
    pub sandbox: &'a SandboxContext,
    /// The container's image config.
    pub image: &'a ImageSettings,
    /// The mounted root filesystem; its `/etc/passwd` and `/etc/group` resolve the user.
    pub rootfs: &'a Path,
    /// The cgroup path, already computed by the caller (cgroupfs `/parent/<id>` or systemd
    /// `slice:corral:<id>`); empty leaves it to the runtime.
    pub cgroups_path: String,
    /// The host pid of the target container's init, for PID namespace mode TARGET.
    pub target_pid: Option<i32>,
    /// The mount table checked for volume propagation (normally `/proc/self/mountinfo`).
    pub mountinfo: &'a Path,
    /// When set, Localhost seccomp profiles must lie under this directory.
    pub seccomp_localhost_root: Option<&'a Path>,
    /// Whether the host has AppArmor (`/sys/module/apparmor/parameters/enabled` is `Y`).
    pub apparmor_enabled: bool,
    /// Whether the host's cgroups are pure v2: an unprivileged container then gets a cgroup
    /// namespace of its own (see [`namespaces::container_namespaces`]).
    pub cgroup_v2: bool,
}

/// A generated spec and what building it found or did.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltSpec {
    /// The OCI runtime spec (`config.json`).
    pub spec: Spec,
    /// The user the process runs as (for ContainerStatus).
    pub user: ResolvedUser,
    /// Volume source directories created because they were missing, outermost first; remove
    /// them in reverse order to undo a failed create. ([`plan_spec`] creates none.)
    pub mounts_created: Vec<PathBuf>,
    /// The volume source directories missing when the spec was built, outermost first: what
    /// [`create_mount_sources`] makes.
    pub mounts_to_create: Vec<PathBuf>,
}

/// Builds the OCI runtime spec of a CRI container.
///
/// Everything is checked before anything is made: the only change to the host, creating
/// missing volume directories, is the last step, and undone when it fails half-way.
pub fn build_spec(input: &SpecInput<'_>) -> Result<BuiltSpec, SpecError> {
    let mut built = plan_spec(input)?;
    built.mounts_created = create_mount_sources(&built.mounts_to_create)?;
    Ok(built)
}

/// Creates the missing volume source directories `dirs` ([`BuiltSpec::mounts_to_create`]),
/// outermost first, and returns those it made (one that appeared meanwhile is not this
/// caller's). When one cannot be made, those made so far are removed again.
pub fn create_mount_sources(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, SpecError> {
    mounts::create_dirs(dirs)
}

/// [`build_spec`] without changing the host: the missing volume directories are only listed
/// ([`BuiltSpec::mounts_to_create`]), so that a caller can record them before it makes them
/// (a crash in between then still knows them) with [`create_mount_sources`].
pub fn plan_spec(input: &SpecInput<'_>) -> Result<BuiltSpec, SpecError> {
    let parts = SpecParts::checked(input)?;
    let mounts_to_create = mounts::dirs_to_create(&parts.mounts.missing_sources);
    let user = parts.user.clone();
    let spec = parts.into_spec(input);
    tracing::debug!(
        container_id = input.container_id,
        sandbox_id = %input.sandbox.sandbox_id,
        to_create = mounts_to_create.len(),
        "OCI spec built"
    );
    Ok(BuiltSpec {
        spec,
        user,
        mounts_created: Vec::new(),
        mounts_to_create,
    })
}

/// Everything the spec is made of, each part checked; nothing is changed on the host yet.
struct SpecParts {
    args: Vec<String>,
    env: Vec<String>,
    cwd: PathBuf,
    user: ResolvedUser,
    hostname: String,
    capabilities: oci_spec::runtime::LinuxCapabilities,
    no_new_privileges: bool,
    apparmor: Option<String>,
    oom_score_adj: i32,
    seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    masked_paths: Vec<String>,
    readonly_paths: Vec<String>,
    resources: oci_spec::runtime::LinuxResources,
    namespaces: Vec<oci_spec::runtime::LinuxNamespace>,
    device_nodes: Vec<oci_spec::runtime::LinuxDevice>,
    readonly_rootfs: bool,
    mounts: mounts::PlannedMounts,
}

impl SpecParts {
    /// Reads the request, the image and the host and checks every part.
    fn checked(input: &SpecInput<'_>) -> Result<SpecParts, SpecError> {
        let config = input.config;
        let linux_config = config.linux.as_ref();
        let security = linux_config.and_then(|l| l.security_context.as_ref());
        let privileged = security.is_some_and(|s| s.privileged);
        if privileged && !input.sandbox.privileged {
            return Err(SpecError::invalid(
                "linux.security_context.privileged",
                "a privileged container needs a privileged pod; set privileged in the pod's \
                 security context too",
            ));
        }
        let namespaces = spec_namespaces(input, security, privileged)?;
        let args = process::process_args(config, input.image)?;
        let cwd = process::working_dir(config, input.image)?;
        let user = user::resolve_user(input.rootfs, security, &input.image.user)?;
        let hostname = pod_hostname(input.sandbox);
        let env = process::process_env(
            &input.image.env,
            &config.envs,
            &hostname,
            user.home.as_deref(),
            config.tty,
        )?;
        let runtime_caps = capabilities::runtime_capabilities(Path::new("/proc/self"));
        let caps = capabilities::capability_sets(
            security.and_then(|s| s.capabilities.as_ref()),
            privileged,
            runtime_caps.as_ref(),
        )?;
        let seccomp = seccomp::container_seccomp(
            security,
            privileged,
            &caps.held,
            input.seccomp_localhost_root,
        )?;
        let apparmor = security::apparmor_profile(security, input.apparmor_enabled)?;
        let (masked_paths, readonly_paths) =
            security::masked_and_readonly_paths(security, privileged);
        let (mut resources, oom_score_adj) = spec_resources(linux_config)?;
        let container_devices = devices::cri_devices(&config.devices)?;
        let device_nodes = spec_device_nodes(container_devices.nodes, privileged)?;
        resources.set_devices(Some(devices::device_rules(
            privileged,
            container_devices.rules,
        )));
        let readonly_rootfs = security.is_some_and(|s| s.readonly_rootfs);
        let mounts = mounts::plan_mounts(
            &config.mounts,
            &mounts::MountSettings {
                sandbox: input.sandbox,
                privileged,
                readonly_rootfs,
                mountinfo: input.mountinfo,
            },
        )?;
        Ok(SpecParts {
            args,
            env,
            cwd,
            user: user.user,
            hostname,
            capabilities: caps.to_oci(),
            no_new_privileges: security.is_some_and(|s| s.no_new_privs),
            apparmor,
            oom_score_adj,
            seccomp,
            masked_paths,
            readonly_paths,
            resources,
            namespaces,
            device_nodes,
            readonly_rootfs,
            mounts,
        })
    }

    /// The OCI spec of these parts.
    fn into_spec(self, input: &SpecInput<'_>) -> Spec {
        let mut process = Process::default();
        process.set_terminal(Some(input.config.tty));
        process.set_console_size(None);
        process.set_user(oci_user(&self.user));
        process.set_args(Some(self.args));
        process.set_env(Some(self.env));
        process.set_cwd(self.cwd);
        process.set_capabilities(Some(self.capabilities));
        process.set_rlimits(None);
        process.set_no_new_privileges(Some(self.no_new_privileges));
        process.set_apparmor_profile(self.apparmor);
        process.set_oom_score_adj(Some(self.oom_score_adj));
        process.set_selinux_label(None);

        let mut root = Root::default();
        root.set_path(input.rootfs.to_path_buf());
        root.set_readonly(Some(self.readonly_rootfs));

        let mut linux = Linux::default();
        linux.set_uid_mappings(None);
        linux.set_gid_mappings(None);
        linux.set_sysctl(None);
        linux.set_resources(Some(self.resources));
        linux.set_cgroups_path(
            (!input.cgroups_path.is_empty()).then(|| PathBuf::from(&input.cgroups_path)),
        );
        linux.set_namespaces(Some(self.namespaces));
        linux.set_devices((!self.device_nodes.is_empty()).then_some(self.device_nodes));
        linux.set_seccomp(self.seccomp);
        linux.set_rootfs_propagation(self.mounts.rootfs_propagation);
        linux.set_masked_paths(Some(self.masked_paths));
        linux.set_readonly_paths(Some(self.readonly_paths));
        linux.set_mount_label(None);

        let mut spec = Spec::default();
        spec.set_version(OCI_VERSION.to_owned());
        spec.set_root(Some(root));
        spec.set_mounts(Some(self.mounts.mounts));
        spec.set_process(Some(process));
        spec.set_hostname((input.sandbox.network != NamespaceMode::Node).then_some(self.hostname));
        spec.set_domainname(None);
        spec.set_hooks(None);
        spec.set_annotations(Some(spec_annotations(input)));
        spec.set_linux(Some(linux));
        spec
    }
}

/// The container's namespaces: the pod's, its own, or a target container's (PID), and a new
/// cgroup namespace for an unprivileged container on cgroup v2.
fn spec_namespaces(
    input: &SpecInput<'_>,
    security: Option<&cri_proto::v1::LinuxContainerSecurityContext>,
    privileged: bool,
) -> Result<Vec<oci_spec::runtime::LinuxNamespace>, SpecError> {
    let namespace_options = security.and_then(|s| s.namespace_options.as_ref());
    let pid_mode = match namespace_options {
        Some(options) => NamespaceMode::try_from(options.pid).map_err(|_| {
            SpecError::invalid(
                "linux.security_context.namespace_options.pid",
                format!("unknown namespace mode {}", options.pid),
            )
        })?,
        None => input.sandbox.pid,
    };
    let target_id = namespace_options.map_or("", |o| o.target_id.as_str());
    let mut namespaces =
        namespaces::container_namespaces(input.sandbox, pid_mode, input.target_pid, target_id)?;
    if input.cgroup_v2 && !privileged {
        namespaces.push(namespaces::cgroup_namespace());
    }
    Ok(namespaces)
}

/// The container's cgroup limits and its OOM score adjustment (clamped to what this process
/// may set).
fn spec_resources(
    linux_config: Option<&cri_proto::v1::LinuxContainerConfig>,
) -> Result<(oci_spec::runtime::LinuxResources, i32), SpecError> {
    let resource_config = linux_config.and_then(|l| l.resources.as_ref());
    let resources = match resource_config {
        Some(r) => resources::linux_resources(r)?,
        None => linux_resources(&Default::default())?,
    };
    let (own_oom, can_lower) = resources::own_oom_limits(Path::new("/proc/self"));
    let oom_score_adj = resources::clamp_oom_score_adj(
        resource_config.map_or(0, |r| r.oom_score_adj),
        own_oom,
        can_lower,
    )?;
    Ok((resources, oom_score_adj))
}

/// The device nodes to create: the requested ones, and a privileged container's host devices.
fn spec_device_nodes(
    mut nodes: Vec<oci_spec::runtime::LinuxDevice>,
    privileged: bool,
) -> Result<Vec<oci_spec::runtime::LinuxDevice>, SpecError> {
    if privileged {
        for node in devices::host_devices(Path::new("/dev"))? {
            if !nodes.iter().any(|d| d.path() == node.path()) {
                nodes.push(node);
            }
        }
    }
    Ok(nodes)
}

/// The OCI user of the resolved user.
fn oci_user(resolved: &ResolvedUser) -> User {
    let mut oci_user = User::default();
    oci_user.set_uid(resolved.uid);
    oci_user.set_gid(resolved.gid);
    oci_user.set_additional_gids(Some(resolved.additional_gids.clone()));
    oci_user.set_umask(None);
    oci_user.set_username(None);
    oci_user
}

/// The pod's hostname, or the host's when the pod gives none.
fn pod_hostname(sandbox: &SandboxContext) -> String {
    if !sandbox.hostname.is_empty() {
        return sandbox.hostname.clone();
    }
    nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn spec_annotations(input: &SpecInput<'_>) -> HashMap<String, String> {
    let config = input.config;
    let image = config.image.as_ref().map_or("", |image| {
        if image.user_specified_image.is_empty() {
            image.image.as_str()
        } else {
            image.user_specified_image.as_str()
        }
    });
    let name = config.metadata.as_ref().map_or("", |m| m.name.as_str());
    [
        (
            annotations::CONTAINER_TYPE,
            annotations::CONTAINER_TYPE_CONTAINER,
        ),
        (annotations::SANDBOX_ID, input.sandbox.sandbox_id.as_str()),
        (annotations::CONTAINER_NAME, name),
        (annotations::IMAGE_NAME, image),
        (
            annotations::SANDBOX_LOG_DIRECTORY,
            input.sandbox.log_directory.as_str(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[cfg(test)]
mod tests;
