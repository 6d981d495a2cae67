//! The mounts of a container: the system file systems, the pod's `/etc/hostname`,
//! `/etc/hosts`, `/etc/resolv.conf` and `/dev/shm`, and the CRI config's volumes as bind mounts
//! with their propagation.
//!
//! The pod's files are bind-mounted writable unless the root filesystem is read-only, as
//! containerd does: kubelet (and some programs) rewrite `/etc/hosts`, and the files belong to
//! the pod, not the host. A CRI mount at any of these paths replaces the pod's own.

use std::path::{Component, Path, PathBuf};

use cri_proto::v1::{Mount as CriMount, MountPropagation, NamespaceMode};
use oci_spec::runtime::Mount;

use crate::error::{io_error, SpecError};
use crate::propagation::{
    check_mount, oci_propagation_option, requested_propagation, resolve_existing_prefix,
};
use crate::SandboxContext;

/// The host's `/dev/shm`, shared with containers of host-IPC pods.
const HOST_DEV_SHM: &str = "/dev/shm";

/// The mounts planned for a container, before anything is created on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedMounts {
    /// All mounts in the order the runtime must make them.
    pub mounts: Vec<Mount>,
    /// `rslave` or `rshared` when a volume's propagation needs the root to be so.
    pub rootfs_propagation: Option<String>,
    /// Volume sources that do not exist yet and are to be created as directories.
    pub missing_sources: Vec<PathBuf>,
}

/// What mount planning needs to know about the container.
pub(crate) struct MountSettings<'a> {
    pub sandbox: &'a SandboxContext,
    pub privileged: bool,
    pub readonly_rootfs: bool,
    pub mountinfo: &'a Path,
}

/// Plans every mount of a container; nothing on the host is changed.
pub(crate) fn plan_mounts(
    cri_mounts: &[CriMount],
    settings: &MountSettings<'_>,
) -> Result<PlannedMounts, SpecError> {
    let volumes = plan_volumes(cri_mounts, settings)?;
    let taken = |destination: &str| {
        cri_mounts
            .iter()
            .any(|m| Path::new(&m.container_path) == Path::new(destination))
    };

    let mut mounts: Vec<Mount> = system_mounts(settings.privileged)
        .into_iter()
        .filter(|m| !taken(&m.destination().to_string_lossy()))
        .collect();
    let file_mode = if settings.readonly_rootfs { "ro" } else { "rw" };
    for (file, destination) in [
        ("hostname", "/etc/hostname"),
        ("hosts", "/etc/hosts"),
        ("resolv.conf", "/etc/resolv.conf"),
    ] {
        if taken(destination) {
            continue;
        }
        let source = settings.sandbox.sandbox_dir.join(file);
        if !source.exists() {
            tracing::warn!(
                sandbox_id = %settings.sandbox.sandbox_id,
                file = %source.display(),
                "the pod has no {destination} to bind"
            );
            continue;
        }
        mounts.push(bind(
            destination,
            &source,
            &["rbind", "rprivate", file_mode],
        ));
    }
    if !taken("/dev/shm") {
        mounts.push(shm_mount(settings.sandbox));
    }
    mounts.extend(volumes.mounts);

    Ok(PlannedMounts {
        mounts,
        rootfs_propagation: volumes.rootfs_propagation,
        missing_sources: volumes.missing_sources,
    })
}

/// The CRI volumes: checked, ordered parents first, as bind mounts.
fn plan_volumes(
    cri_mounts: &[CriMount],
    settings: &MountSettings<'_>,
) -> Result<PlannedMounts, SpecError> {
    let mut ordered: Vec<&CriMount> = cri_mounts.iter().collect();
    ordered.sort_by_key(|m| Path::new(&m.container_path).components().count());

    let mut mounts = Vec::with_capacity(ordered.len());
    let mut missing_sources = Vec::new();
    let mut strongest = MountPropagation::PropagationPrivate;
    for (i, mount) in ordered.iter().enumerate() {
        check_volume_fields(mount)?;
        if ordered[..i]
            .iter()
            .any(|other| Path::new(&other.container_path) == Path::new(&mount.container_path))
        {
            return Err(SpecError::invalid(
                format!("mounts[{}]", mount.container_path),
                "two mounts have this container_path; keep one",
            ));
        }
        check_mount(mount, settings.privileged, settings.mountinfo)?;
        let propagation = requested_propagation(mount)?;
        let (source, missing) = volume_source(mount)?;
        if missing {
            missing_sources.push(source.clone());
        }
        if propagation_rank(propagation) > propagation_rank(strongest) {
            strongest = propagation;
        }

        let mut options = vec![
            "rbind",
            oci_propagation_option(propagation),
            if mount.readonly { "ro" } else { "rw" },
        ];
        if mount.recursive_read_only {
            options.push("rro");
        }
        mounts.push(bind(&mount.container_path, &source, &options));
    }
    let rootfs_propagation = match strongest {
        MountPropagation::PropagationPrivate => None,
        other => Some(oci_propagation_option(other).to_owned()),
    };
    Ok(PlannedMounts {
        mounts,
        rootfs_propagation,
        missing_sources,
    })
}

/// The longest path the kernel takes (`PATH_MAX`), and the longest name in it (`NAME_MAX`).
const PATH_MAX: usize = 4096;
const NAME_MAX: usize = 255;

/// Refuses volume fields corral cannot honour.
fn check_volume_fields(mount: &CriMount) -> Result<(), SpecError> {
    let refuse = |reason: &str| SpecError::MountRefused {
        container_path: mount.container_path.clone(),
        host_path: mount.host_path.clone(),
        reason: reason.to_owned(),
    };
    for (field, path) in [
        ("container_path", &mount.container_path),
        ("host_path", &mount.host_path),
    ] {
        if path.contains('\0') {
            return Err(refuse(&format!("{field} contains a NUL byte")));
        }
        if path.len() > PATH_MAX
            || Path::new(path)
                .components()
                .any(|c| c.as_os_str().len() > NAME_MAX)
        {
            return Err(refuse(&format!(
                "{field} is longer than the kernel allows ({PATH_MAX} bytes, {NAME_MAX} per \
                 component)"
            )));
        }
        if Path::new(path)
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(refuse(&format!(
                "{field} has a `..` component; give the path without it"
            )));
        }
    }
    if !Path::new(&mount.container_path).is_absolute() {
        return Err(refuse("container_path must be an absolute path"));
    }
    if Path::new(&mount.container_path)
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::CurDir))
    {
        return Err(refuse(
            "container_path is the container's root: a volume cannot replace the root \
             filesystem; mount it at a directory below /",
        ));
    }
    if mount.recursive_read_only && !mount.readonly {
        return Err(refuse(
            "recursive_read_only needs readonly: true as well; set both, or neither",
        ));
    }
    if mount.recursive_read_only && mount.propagation != MountPropagation::PropagationPrivate as i32
    {
        return Err(refuse(
            "recursive_read_only needs propagation PROPAGATION_PRIVATE: mounts propagated \
             from or to the host later would not be read-only",
        ));
    }
    if mount
        .image
        .as_ref()
        .is_some_and(|image| !image.image.is_empty())
    {
        return Err(refuse(
            "image volumes are not supported; use a host_path volume",
        ));
    }
    if !Path::new(&mount.host_path).is_absolute() {
        return Err(refuse("host_path must be an absolute path on the node"));
    }
    if !mount.uid_mappings.is_empty() || !mount.gid_mappings.is_empty() {
        return Err(refuse(
            "per-mount id mappings are not supported (in a pod with its own user namespace \
             every mount is idmapped with the pod's mappings); drop uidMappings and gidMappings",
        ));
    }
    Ok(())
}

/// The volume's source with symlinks resolved, and whether it is missing (to be created as a
/// directory). A symlink to nothing is an error: what it should be is unknown.
fn volume_source(mount: &CriMount) -> Result<(PathBuf, bool), SpecError> {
    let host = Path::new(&mount.host_path);
    let refuse = |reason: String| SpecError::MountRefused {
        container_path: mount.container_path.clone(),
        host_path: mount.host_path.clone(),
        reason,
    };
    match std::fs::symlink_metadata(host) {
        Ok(_) => match std::fs::canonicalize(host) {
            Ok(resolved) => Ok((resolved, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(refuse(
                "host_path is a symlink to something that does not exist; create its target \
                 or fix the link"
                    .to_owned(),
            )),
            Err(e) => Err(refuse(format!("host_path cannot be resolved: {e}"))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((resolve_existing_prefix(host)?, true))
        }
        Err(e) => Err(refuse(format!("host_path cannot be used: {e}"))),
    }
}

fn propagation_rank(propagation: MountPropagation) -> u8 {
    match propagation {
        MountPropagation::PropagationPrivate => 0,
        MountPropagation::PropagationHostToContainer => 1,
        MountPropagation::PropagationBidirectional => 2,
    }
}

/// Creates the missing volume directories, outermost first, and returns every directory it
/// created in that order (the caller removes them in reverse to undo). When one cannot be
/// made, those made so far are removed again.
#[cfg(test)]
pub(crate) fn create_missing_sources(paths: &[PathBuf]) -> Result<Vec<PathBuf>, SpecError> {
    create_dirs(&dirs_to_create(paths))
}

/// The directories to make so that every path of `paths` exists: each missing ancestor and
/// the path itself, outermost first, each once. Nothing is changed.
pub(crate) fn dirs_to_create(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for path in paths {
        let mut missing: Vec<&Path> = path
            .ancestors()
            .take_while(|dir| std::fs::symlink_metadata(dir).is_err())
            .collect();
        missing.reverse();
        for dir in missing {
            if !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_path_buf());
            }
        }
    }
    dirs
}

/// Makes `dirs` in order (parents first); returns those made, leaving out any that exists
/// already as a directory. On failure, removes those it made.
pub(crate) fn create_dirs(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, SpecError> {
    let mut created: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        match std::fs::create_dir(dir) {
            Ok(()) => created.push(dir.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => {
                remove_created(&created);
                return Err(io_error("create volume directory", dir)(e));
            }
        }
    }
    Ok(created)
}

/// Removes directories made by [`create_dirs`], innermost first.
pub(crate) fn remove_created(created: &[PathBuf]) {
    for dir in created.iter().rev() {
        if let Err(e) = std::fs::remove_dir(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a volume directory it made");
        }
    }
}

/// `/proc`, `/dev`, `/dev/pts`, `/dev/mqueue`, `/sys` and `/sys/fs/cgroup` (read-only unless
/// privileged).
fn system_mounts(privileged: bool) -> Vec<Mount> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    vec![
        special("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        special(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        special(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        special(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        special(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        ),
        special(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        ),
    ]
}

/// The container's `/dev/shm`: the pod's tmpfs, the host's for host-IPC pods, or a tmpfs of
/// its own when the pod has none.
fn shm_mount(sandbox: &SandboxContext) -> Mount {
    let options = ["rbind", "rprivate", "rw"];
    match &sandbox.shm_path {
        Some(path) => bind("/dev/shm", path, &options),
        None if sandbox.ipc == NamespaceMode::Node => {
            bind("/dev/shm", Path::new(HOST_DEV_SHM), &options)
        }
        None => special(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    }
}

fn special(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut mount = Mount::default();
    mount.set_destination(PathBuf::from(destination));
    mount.set_typ(Some(typ.to_owned()));
    mount.set_source(Some(PathBuf::from(source)));
    mount.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    mount
}

fn bind(destination: &str, source: &Path, options: &[&str]) -> Mount {
    let mut mount = Mount::default();
    mount.set_destination(PathBuf::from(destination));
    mount.set_typ(Some("bind".to_owned()));
    mount.set_source(Some(source.to_path_buf()));
    mount.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    mount
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil::{mountinfo_file, MountLine};
    use cri_proto::v1::{IdMapping, ImageSpec};

    struct Fixture {
        dir: tempfile::TempDir,
        mountinfo: PathBuf,
        sandbox: SandboxContext,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().canonicalize().unwrap();
            let sandbox_dir = root.join("sandbox");
            std::fs::create_dir_all(sandbox_dir.join("shm")).unwrap();
            for file in ["hostname", "hosts", "resolv.conf"] {
                std::fs::write(sandbox_dir.join(file), "x\n").unwrap();
            }
            for name in ["shared", "slave", "private"] {
                std::fs::create_dir(root.join(name)).unwrap();
            }
            let mountinfo = mountinfo_file(
                &root,
                &[
                    MountLine::new("/", ""),
                    MountLine::new(root.join("shared"), "shared:1"),
                    MountLine::new(root.join("slave"), "master:1"),
                ],
            );
            let sandbox = SandboxContext {
                sandbox_id: "sb".to_owned(),
                pause_pid: 1,
                netns_path: None,
                network: NamespaceMode::Pod,
                pid: NamespaceMode::Container,
                ipc: NamespaceMode::Pod,
                hostname: "pod".to_owned(),
                sandbox_dir: sandbox_dir.clone(),
                shm_path: Some(sandbox_dir.join("shm")),
                privileged: true,
                log_directory: "/var/log/pods/x".to_owned(),
            };
            Fixture {
                dir,
                mountinfo,
                sandbox,
            }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().canonicalize().unwrap().join(name)
        }

        /// A volume at `container` from the fixture's directory `dir` (shared, slave, private).
        fn volume(&self, container: &str, dir: &str, propagation: MountPropagation) -> CriMount {
            volume(container, &self.path(dir), propagation)
        }

        /// Plans one HOST_TO_CONTAINER volume at `/v` from `source`, unprivileged.
        fn plan_host_to_container_at_v(&self, source: &Path) -> Result<PlannedMounts, SpecError> {
            let mount = volume("/v", source, MountPropagation::PropagationHostToContainer);
            self.plan(&[mount], false)
        }

        /// A PRIVATE volume at `container` from the private directory.
        fn private(&self, container: &str) -> CriMount {
            self.volume(container, "private", MountPropagation::PropagationPrivate)
        }

        fn plan(&self, mounts: &[CriMount], privileged: bool) -> Result<PlannedMounts, SpecError> {
            plan_mounts(
                mounts,
                &MountSettings {
                    sandbox: &self.sandbox,
                    privileged,
                    readonly_rootfs: false,
                    mountinfo: &self.mountinfo,
                },
            )
        }
    }

    fn volume(container: &str, host: &Path, propagation: MountPropagation) -> CriMount {
        CriMount {
            container_path: container.to_owned(),
            host_path: host.to_string_lossy().into_owned(),
            propagation: propagation as i32,
            ..Default::default()
        }
    }

    fn find<'a>(mounts: &'a [Mount], destination: &str) -> Option<&'a Mount> {
        mounts
            .iter()
            .find(|m| m.destination() == Path::new(destination))
    }

    fn options(mount: &Mount) -> Vec<&str> {
        mount
            .options()
            .as_ref()
            .unwrap()
            .iter()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn the_system_and_pod_mounts_are_there_in_order() {
        let f = Fixture::new();
        let plan = f.plan(&[], false).unwrap();
        let destinations: Vec<String> = plan
            .mounts
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            destinations,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/etc/hostname",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/dev/shm"
            ]
        );
        assert_eq!(plan.rootfs_propagation, None);
        assert!(plan.missing_sources.is_empty());
        let sys = find(&plan.mounts, "/sys").unwrap();
        assert!(options(sys).contains(&"ro"));
        let cgroup = find(&plan.mounts, "/sys/fs/cgroup").unwrap();
        assert!(options(cgroup).contains(&"ro"));
        let hosts = find(&plan.mounts, "/etc/hosts").unwrap();
        assert_eq!(
            hosts.source().as_ref().unwrap(),
            &f.sandbox.sandbox_dir.join("hosts")
        );
        assert_eq!(options(hosts), ["rbind", "rprivate", "rw"]);
        let shm = find(&plan.mounts, "/dev/shm").unwrap();
        assert_eq!(
            shm.source().as_ref().unwrap(),
            &f.sandbox.sandbox_dir.join("shm")
        );
        assert_eq!(shm.typ().as_deref(), Some("bind"));
    }

    #[test]
    fn privileged_containers_get_a_writable_sys() {
        let f = Fixture::new();
        let plan = f.plan(&[], true).unwrap();
        assert!(options(find(&plan.mounts, "/sys").unwrap()).contains(&"rw"));
        assert!(options(find(&plan.mounts, "/sys/fs/cgroup").unwrap()).contains(&"rw"));
    }

    #[test]
    fn a_readonly_rootfs_makes_the_pod_files_readonly() {
        let f = Fixture::new();
        let plan = plan_mounts(
            &[],
            &MountSettings {
                sandbox: &f.sandbox,
                privileged: false,
                readonly_rootfs: true,
                mountinfo: &f.mountinfo,
            },
        )
        .unwrap();
        for file in ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"] {
            assert!(options(find(&plan.mounts, file).unwrap()).contains(&"ro"));
        }
        assert!(options(find(&plan.mounts, "/dev/shm").unwrap()).contains(&"rw"));
    }

    #[test]
    fn missing_pod_files_are_skipped() {
        let f = Fixture::new();
        std::fs::remove_file(f.sandbox.sandbox_dir.join("resolv.conf")).unwrap();
        let plan = f.plan(&[], false).unwrap();
        assert!(find(&plan.mounts, "/etc/resolv.conf").is_none());
        assert!(find(&plan.mounts, "/etc/hosts").is_some());
    }

    #[test]
    fn shm_comes_from_the_host_for_host_ipc_and_is_private_without_a_pod_shm() {
        let mut f = Fixture::new();
        f.sandbox.shm_path = None;
        f.sandbox.ipc = NamespaceMode::Node;
        let plan = f.plan(&[], false).unwrap();
        let shm = find(&plan.mounts, "/dev/shm").unwrap();
        assert_eq!(shm.source().as_deref(), Some(Path::new("/dev/shm")));
        assert_eq!(shm.typ().as_deref(), Some("bind"));

        f.sandbox.ipc = NamespaceMode::Pod;
        let plan = f.plan(&[], false).unwrap();
        let shm = find(&plan.mounts, "/dev/shm").unwrap();
        assert_eq!(shm.typ().as_deref(), Some("tmpfs"));
    }

    #[test]
    fn cri_mounts_replace_pod_and_system_mounts_at_the_same_path() {
        let f = Fixture::new();
        let mounts = [f.private("/dev/shm"), f.private("/etc/hosts/")];
        let plan = f.plan(&mounts, false).unwrap();
        for destination in ["/dev/shm", "/etc/hosts"] {
            let at: Vec<_> = plan
                .mounts
                .iter()
                .filter(|m| m.destination() == Path::new(destination))
                .collect();
            assert_eq!(at.len(), 1, "{destination}");
            assert_eq!(at[0].source().as_ref().unwrap(), &f.path("private"));
        }
    }

    #[test]
    fn volumes_are_rbinds_with_propagation_and_readonly_options() {
        let f = Fixture::new();
        let mut ro = f.private("/ro");
        ro.readonly = true;
        let mut rro = f.private("/rro");
        rro.readonly = true;
        rro.recursive_read_only = true;
        rro.selinux_relabel = true;
        let slave = f.volume(
            "/slave",
            "slave",
            MountPropagation::PropagationHostToContainer,
        );
        let plan = f.plan(&[ro, rro, slave], false).unwrap();
        assert_eq!(
            options(find(&plan.mounts, "/ro").unwrap()),
            ["rbind", "rprivate", "ro"]
        );
        assert_eq!(
            options(find(&plan.mounts, "/rro").unwrap()),
            ["rbind", "rprivate", "ro", "rro"]
        );
        assert_eq!(
            options(find(&plan.mounts, "/slave").unwrap()),
            ["rbind", "rslave", "rw"]
        );
        assert_eq!(plan.rootfs_propagation.as_deref(), Some("rslave"));
    }

    #[test]
    fn bidirectional_raises_the_rootfs_propagation_to_shared() {
        let f = Fixture::new();
        let mounts = [
            f.volume("/a", "shared", MountPropagation::PropagationBidirectional),
            f.volume("/b", "slave", MountPropagation::PropagationHostToContainer),
        ];
        let plan = f.plan(&mounts, true).unwrap();
        assert_eq!(plan.rootfs_propagation.as_deref(), Some("rshared"));
        assert_eq!(
            options(find(&plan.mounts, "/a").unwrap()),
            ["rbind", "rshared", "rw"]
        );
    }

    #[test]
    fn volumes_are_ordered_parents_first() {
        let f = Fixture::new();
        let mounts = [f.private("/a/b/c"), f.private("/a"), f.private("/a/b")];
        let plan = f.plan(&mounts, false).unwrap();
        let order: Vec<_> = plan
            .mounts
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .filter(|d| d.starts_with("/a"))
            .collect();
        assert_eq!(order, ["/a", "/a/b", "/a/b/c"]);
    }

    #[test]
    fn symlinked_sources_are_resolved() {
        let f = Fixture::new();
        let link = f.path("link");
        std::os::unix::fs::symlink(f.path("shared"), &link).unwrap();
        let plan = f
            .plan(
                &[volume(
                    "/v",
                    &link,
                    MountPropagation::PropagationBidirectional,
                )],
                true,
            )
            .unwrap();
        assert_eq!(
            find(&plan.mounts, "/v").unwrap().source().as_ref().unwrap(),
            &f.path("shared")
        );
    }

    #[test]
    fn missing_sources_are_planned_and_created_then_undone() {
        let f = Fixture::new();
        let missing = f.path("shared").join("new/deeper");
        let plan = f.plan_host_to_container_at_v(&missing).unwrap();
        assert_eq!(plan.missing_sources, vec![missing.clone()]);
        assert!(!missing.exists(), "planning must not create anything");

        let created = create_missing_sources(&plan.missing_sources).unwrap();
        assert_eq!(created, vec![f.path("shared").join("new"), missing.clone()]);
        assert!(missing.is_dir());
        remove_created(&created);
        assert!(!f.path("shared").join("new").exists());
    }

    #[test]
    fn a_failed_creation_removes_what_it_made() {
        let f = Fixture::new();
        let good = f.path("private").join("made");
        let blocker = f.path("private").join("file");
        std::fs::write(&blocker, "").unwrap();
        let bad = blocker.join("below");
        let err = create_missing_sources(&[good.clone(), bad]).unwrap_err();
        assert!(!err.is_invalid_argument());
        assert!(!good.exists());
    }

    #[test]
    fn dangling_symlinks_and_bad_fields_are_refused_naming_the_mount() {
        let f = Fixture::new();
        let dangling = f.path("dangling");
        std::os::unix::fs::symlink(f.path("nothing-here"), &dangling).unwrap();
        let private = MountPropagation::PropagationPrivate;
        let mut image = volume("/img", Path::new(""), private);
        image.image = Some(ImageSpec {
            image: "busybox".to_owned(),
            ..Default::default()
        });
        let mut idmapped = volume("/idm", &f.path("private"), private);
        idmapped.uid_mappings = vec![IdMapping {
            host_id: 1000,
            container_id: 0,
            length: 1,
        }];
        let mut rro_writable = volume("/rro", &f.path("private"), private);
        rro_writable.recursive_read_only = true;
        let mut rro_slave = f.volume(
            "/rro",
            "slave",
            MountPropagation::PropagationHostToContainer,
        );
        rro_slave.readonly = true;
        rro_slave.recursive_read_only = true;
        let mut rro_shared = f.volume("/rro", "shared", MountPropagation::PropagationBidirectional);
        rro_shared.readonly = true;
        rro_shared.recursive_read_only = true;
        for (mount, hint) in [
            (volume("/v", &dangling, private), "does not exist"),
            (volume("relative", &f.path("private"), private), "absolute"),
            (
                volume("/v", Path::new("relative/host"), private),
                "absolute",
            ),
            (image, "image volumes"),
            (idmapped, "uidMappings"),
            (rro_writable, "readonly: true"),
            (rro_slave, "PROPAGATION_PRIVATE"),
            (rro_shared, "PROPAGATION_PRIVATE"),
        ] {
            let err = f.plan(std::slice::from_ref(&mount), false).unwrap_err();
            assert!(err.is_invalid_argument(), "{err}");
            let text = err.to_string();
            assert!(text.contains(&mount.container_path), "{text}");
            assert!(text.contains(hint), "{text}");
        }
    }

    #[test]
    fn nul_bytes_and_parent_components_are_refused_naming_the_mount() {
        let fx = Fixture::new();
        let shared = fx.path("shared");
        let climbing = format!("{}/../../etc", shared.display());
        for (container, host) in [
            ("/data/../../etc", shared.to_str().unwrap()),
            ("/da\0ta", shared.to_str().unwrap()),
            ("/data", climbing.as_str()),
            ("/data", "/tmp/x\0y"),
        ] {
            let mount = CriMount {
                container_path: container.to_owned(),
                host_path: host.to_owned(),
                ..Default::default()
            };
            match fx.plan(&[mount], false) {
                Err(SpecError::MountRefused { reason, .. }) => {
                    assert!(reason.contains("NUL") || reason.contains(".."), "{reason}")
                }
                other => panic!("{container} {host}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_volume_over_the_root_is_refused_naming_the_mount() {
        let f = Fixture::new();
        for root in ["/", "//", "/.", "/./"] {
            let err = f
                .plan(
                    &[volume(
                        root,
                        &f.path("private"),
                        MountPropagation::PropagationPrivate,
                    )],
                    false,
                )
                .unwrap_err();
            assert!(err.is_invalid_argument(), "{root}: {err}");
            assert!(
                err.to_string().contains("container's root"),
                "{root}: {err}"
            );
        }
    }

    #[test]
    fn duplicate_container_paths_are_refused() {
        let f = Fixture::new();
        let private = MountPropagation::PropagationPrivate;
        let err = f
            .plan(
                &[
                    volume("/v", &f.path("private"), private),
                    volume("/v/", &f.path("shared"), private),
                ],
                false,
            )
            .unwrap_err();
        assert!(err.to_string().contains("two mounts"), "{err}");
    }

    #[test]
    fn propagation_refusals_come_before_anything_is_created() {
        let f = Fixture::new();
        let missing = f.path("private").join("new");
        let err = f.plan_host_to_container_at_v(&missing).unwrap_err();
        assert!(err.to_string().contains("mount --make-rshared"), "{err}");
        assert!(!missing.exists());
    }
}
