//! Mount propagation: what the host's mount table says about a volume's source, and whether a
//! CRI mount's requested propagation can be honoured from it.
//!
//! A bind mount only receives the host's later mounts (`HOST_TO_CONTAINER`, OCI `rslave`) when
//! its source sits on a shared or slave mount, and only sends its own back to the host
//! (`BIDIRECTIONAL`, OCI `rshared`) when the source is shared. The kernel would silently give a
//! private mount instead, so these are checked here and refused with the command that fixes the
//! host.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use cri_proto::v1::{Mount as CriMount, MountPropagation};

use crate::error::{io_error, SpecError};
use crate::peers::{assess_mount, MountTable};

/// The propagation type of a mount, as `/proc/self/mountinfo` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// `shared:N`: in a peer group; mounts under it propagate both ways (possibly also a slave).
    Shared,
    /// `master:N` without `shared:`: receives mounts from its master, sends none.
    Slave,
    /// No propagation.
    Private,
    /// `unbindable`: private and cannot be bind-mounted.
    Unbindable,
}

impl fmt::Display for Propagation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Propagation::Shared => "shared",
            Propagation::Slave => "slave",
            Propagation::Private => "private",
            Propagation::Unbindable => "unbindable",
        })
    }
}

/// The mount that holds a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainingMount {
    /// Where that mount is mounted.
    pub mount_point: PathBuf,
    /// Its propagation.
    pub propagation: Propagation,
}

/// The propagation of the mount containing `path`, per the mount table `mountinfo`
/// (normally `/proc/self/mountinfo`).
///
/// Symlinks in `path` are resolved first; a path that does not exist yet is looked up through
/// its nearest existing ancestor, which is where it would be created.
pub fn mountinfo_propagation(path: &Path, mountinfo: &Path) -> Result<Propagation, SpecError> {
    containing_mount(path, mountinfo).map(|mount| mount.propagation)
}

/// The mount containing `path` (the longest mount point that is a prefix of it, the topmost
/// if several are stacked there), per the mount table `mountinfo`.
pub fn containing_mount(path: &Path, mountinfo: &Path) -> Result<ContainingMount, SpecError> {
    let resolved = resolve_existing_prefix(path)?;
    let table = MountTable::read(mountinfo)?;
    table
        .containing(&resolved)
        .map(|entry| ContainingMount {
            mount_point: entry.mount_point.clone(),
            propagation: entry.propagation(),
        })
        .ok_or_else(|| SpecError::NoContainingMount {
            path: resolved,
            mountinfo: mountinfo.to_path_buf(),
        })
}

/// `path` as CreateContainer looks it up: absolute, symlinks resolved as far as it exists.
pub fn resolve_host_path(path: &Path) -> Result<PathBuf, SpecError> {
    resolve_existing_prefix(path)
}

/// Checks that a CRI mount's propagation and read-only settings can be honoured: its
/// `recursive_read_only` needs `readonly` and PRIVATE propagation, and the propagation must
/// be one [`assess_mount`] accepts (BIDIRECTIONAL needs a `privileged` container and a shared
/// source mount, HOST_TO_CONTAINER a shared or slave one, and no source may sit on an
/// unbindable mount). `corralctl explain-mount` shows the same verdict before a pod exists.
///
/// The source is looked up in `mountinfo` (through its nearest existing ancestor when it does
/// not exist yet). Every refusal names the mount, the source's propagation and the fix.
pub fn check_mount(mount: &CriMount, privileged: bool, mountinfo: &Path) -> Result<(), SpecError> {
    let requested = requested_propagation(mount)?;
    let refuse = |reason: String| SpecError::MountRefused {
        container_path: mount.container_path.clone(),
        host_path: mount.host_path.clone(),
        reason,
    };

    if mount.recursive_read_only {
        if !mount.readonly {
            return Err(refuse(
                "recursive_read_only needs readonly: set readonly: true as well".to_owned(),
            ));
        }
        if requested != MountPropagation::PropagationPrivate {
            return Err(refuse(format!(
                "recursive_read_only needs PROPAGATION_PRIVATE, but {} was asked for: set \
                 propagation to PROPAGATION_PRIVATE or drop recursive_read_only",
                requested.as_str_name()
            )));
        }
    }

    let source = resolve_existing_prefix(Path::new(&mount.host_path))?;
    let table = MountTable::read(mountinfo)?;
    let verdict = assess_mount(&source, requested, privileged, &table).map_err(|e| match e {
        SpecError::NoContainingMount { path, .. } => SpecError::NoContainingMount {
            path,
            mountinfo: mountinfo.to_path_buf(),
        },
        other => other,
    })?;
    match verdict.refusal() {
        Some(reason) => Err(refuse(reason)),
        None => Ok(()),
    }
}

/// The OCI mount option for a CRI propagation: `rprivate`, `rslave` or `rshared`.
pub fn oci_propagation_option(propagation: MountPropagation) -> &'static str {
    match propagation {
        MountPropagation::PropagationPrivate => "rprivate",
        MountPropagation::PropagationHostToContainer => "rslave",
        MountPropagation::PropagationBidirectional => "rshared",
    }
}

/// The CRI mount's propagation; an unknown number is an invalid field.
pub(crate) fn requested_propagation(mount: &CriMount) -> Result<MountPropagation, SpecError> {
    MountPropagation::try_from(mount.propagation).map_err(|_| {
        SpecError::invalid(
            format!("mounts[{}].propagation", mount.container_path),
            format!(
                "unknown propagation {}; use PROPAGATION_PRIVATE, \
                 PROPAGATION_HOST_TO_CONTAINER or PROPAGATION_BIDIRECTIONAL",
                mount.propagation
            ),
        )
    })
}

/// `path` with symlinks resolved as far as it exists, and the rest (what is yet to be
/// created) appended as it is. Relative paths are taken from `/`.
pub(crate) fn resolve_existing_prefix(path: &Path) -> Result<PathBuf, SpecError> {
    let absolute = Path::new("/").join(path);
    let mut existing = absolute.as_path();
    let mut missing: Vec<&std::ffi::OsStr> = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(mut resolved) => {
                for part in missing.iter().rev() {
                    resolved.push(part);
                }
                return Ok(resolved);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match (existing.parent(), existing.components().next_back()) {
                    (Some(parent), Some(Component::Normal(name))) => {
                        missing.push(name);
                        existing = parent;
                    }
                    // `..` or `.` past a missing directory: look through the parent.
                    (Some(parent), Some(_)) => existing = parent,
                    _ => return Err(io_error("resolve", path)(e)),
                }
            }
            Err(e) => return Err(io_error("resolve", path)(e)),
        }
    }
}

/// Undoes the kernel's octal escapes (`\040` for a space) in a mountinfo mount point.
pub(crate) fn unescape_mount_point(escaped: &Path) -> PathBuf {
    let bytes = escaped.as_os_str().as_encoded_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil::{mountinfo_file, MountLine};

    fn cri_mount(host: &Path, propagation: MountPropagation) -> CriMount {
        CriMount {
            container_path: "/data".to_owned(),
            host_path: host.to_string_lossy().into_owned(),
            propagation: propagation as i32,
            ..Default::default()
        }
    }

    /// A temp dir with `shared/`, `slave/`, `private/`, `unbindable/` and `both/` mount
    /// points listed in a fake mountinfo on top of a private `/`.
    struct Fixture {
        dir: tempfile::TempDir,
        mountinfo: PathBuf,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().canonicalize().unwrap();
            for name in ["shared", "slave", "private", "unbindable", "both"] {
                std::fs::create_dir(root.join(name)).unwrap();
            }
            let mountinfo = mountinfo_file(
                dir.path(),
                &[
                    MountLine::new("/", ""),
                    MountLine::new(root.join("shared"), "shared:7"),
                    MountLine::new(root.join("slave"), "master:3"),
                    MountLine::new(root.join("private"), ""),
                    MountLine::new(root.join("unbindable"), "unbindable"),
                    MountLine::new(root.join("both"), "shared:9 master:2"),
                ],
            );
            Fixture { dir, mountinfo }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().canonicalize().unwrap().join(name)
        }
    }

    #[test]
    fn propagation_comes_from_the_optional_fields() {
        let f = Fixture::new();
        let of = |name: &str| mountinfo_propagation(&f.path(name), &f.mountinfo).unwrap();
        assert_eq!(of("shared"), Propagation::Shared);
        assert_eq!(of("slave"), Propagation::Slave);
        assert_eq!(of("private"), Propagation::Private);
        assert_eq!(of("unbindable"), Propagation::Unbindable);
        assert_eq!(of("both"), Propagation::Shared);
    }

    #[test]
    fn the_longest_mount_point_wins_and_missing_paths_use_their_ancestor() {
        let f = Fixture::new();
        let nested = f.path("shared").join("not/yet/there");
        let mount = containing_mount(&nested, &f.mountinfo).unwrap();
        assert_eq!(mount.mount_point, f.path("shared"));
        assert_eq!(mount.propagation, Propagation::Shared);
        // The temp dir itself is only under the private `/`.
        let mount = containing_mount(&f.path(""), &f.mountinfo).unwrap();
        assert_eq!(mount.mount_point, PathBuf::from("/"));
        assert_eq!(mount.propagation, Propagation::Private);
    }

    #[test]
    fn symlinks_are_resolved_before_the_lookup() {
        let f = Fixture::new();
        let link = f.path("link-to-shared");
        std::os::unix::fs::symlink(f.path("shared"), &link).unwrap();
        assert_eq!(
            mountinfo_propagation(&link, &f.mountinfo).unwrap(),
            Propagation::Shared
        );
    }

    #[test]
    fn a_prefix_that_is_not_a_whole_component_does_not_match() {
        let f = Fixture::new();
        std::fs::create_dir(f.path("sharedness")).unwrap();
        assert_eq!(
            mountinfo_propagation(&f.path("sharedness"), &f.mountinfo).unwrap(),
            Propagation::Private
        );
    }

    #[test]
    fn stacked_mounts_take_the_topmost() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let mountinfo = mountinfo_file(
            dir.path(),
            &[
                MountLine::new("/", ""),
                MountLine::new(&root, "shared:1"),
                MountLine::new(&root, ""),
            ],
        );
        assert_eq!(
            mountinfo_propagation(&root, &mountinfo).unwrap(),
            Propagation::Private
        );
    }

    #[test]
    fn escaped_mount_points_are_matched() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let spaced = root.join("a b");
        std::fs::create_dir(&spaced).unwrap();
        let escaped = format!("{}/a\\040b", root.display());
        let mountinfo = mountinfo_file(
            dir.path(),
            &[
                MountLine::new("/", ""),
                MountLine::new(&escaped, "shared:4"),
            ],
        );
        assert_eq!(
            mountinfo_propagation(&spaced, &mountinfo).unwrap(),
            Propagation::Shared
        );
        assert_eq!(
            unescape_mount_point(Path::new("/x\\134y\\011z\\")),
            PathBuf::from("/x\\y\tz\\")
        );
    }

    #[test]
    fn an_unreadable_mount_table_is_an_internal_error() {
        let err =
            mountinfo_propagation(Path::new("/"), Path::new("/nonexistent/mountinfo")).unwrap_err();
        assert!(matches!(err, SpecError::Mountinfo { .. }), "{err}");
        assert!(!err.is_invalid_argument());
    }

    #[test]
    fn private_propagation_is_accepted_from_any_bindable_source() {
        let f = Fixture::new();
        for name in ["shared", "slave", "private"] {
            let mount = cri_mount(&f.path(name), MountPropagation::PropagationPrivate);
            check_mount(&mount, false, &f.mountinfo).unwrap();
        }
    }

    #[test]
    fn host_to_container_needs_a_shared_or_slave_source() {
        let f = Fixture::new();
        for name in ["shared", "slave", "both"] {
            let mount = cri_mount(&f.path(name), MountPropagation::PropagationHostToContainer);
            check_mount(&mount, false, &f.mountinfo).unwrap();
        }
        let mount = cri_mount(
            &f.path("private"),
            MountPropagation::PropagationHostToContainer,
        );
        let err = check_mount(&mount, false, &f.mountinfo).unwrap_err();
        assert!(err.is_invalid_argument());
        let text = err.to_string();
        let mount_point = f.path("private");
        assert!(text.contains("/data"), "{text}");
        assert!(text.contains(&mount.host_path), "{text}");
        assert!(text.contains("is private"), "{text}");
        assert!(
            text.contains(&format!("mount --make-rshared {}", mount_point.display())),
            "{text}"
        );
        assert!(text.contains("--make-rslave"), "{text}");
    }

    #[test]
    fn bidirectional_needs_a_shared_source() {
        let f = Fixture::new();
        let ok = cri_mount(
            &f.path("shared"),
            MountPropagation::PropagationBidirectional,
        );
        check_mount(&ok, true, &f.mountinfo).unwrap();
        for (name, shown) in [("slave", "is slave"), ("private", "is private")] {
            let mount = cri_mount(&f.path(name), MountPropagation::PropagationBidirectional);
            let text = check_mount(&mount, true, &f.mountinfo)
                .unwrap_err()
                .to_string();
            assert!(text.contains(shown), "{text}");
            assert!(
                text.contains(&format!("mount --make-rshared {}", f.path(name).display())),
                "{text}"
            );
        }
    }

    #[test]
    fn bidirectional_needs_a_privileged_container() {
        let f = Fixture::new();
        let mount = cri_mount(
            &f.path("shared"),
            MountPropagation::PropagationBidirectional,
        );
        let err = check_mount(&mount, false, &f.mountinfo).unwrap_err();
        assert!(err.is_invalid_argument());
        let text = err.to_string();
        assert!(text.contains("privileged: true"), "{text}");
        assert!(text.contains("is shared"), "{text}");
        assert!(text.contains("/data"), "{text}");
    }

    #[test]
    fn unbindable_sources_are_refused() {
        let f = Fixture::new();
        let mount = cri_mount(&f.path("unbindable"), MountPropagation::PropagationPrivate);
        let text = check_mount(&mount, false, &f.mountinfo)
            .unwrap_err()
            .to_string();
        assert!(text.contains("unbindable"), "{text}");
        assert!(text.contains("--make-private"), "{text}");
    }

    #[test]
    fn recursive_read_only_needs_readonly_and_private_propagation() {
        let f = Fixture::new();
        let mut mount = cri_mount(&f.path("shared"), MountPropagation::PropagationPrivate);
        mount.recursive_read_only = true;
        let text = check_mount(&mount, false, &f.mountinfo)
            .unwrap_err()
            .to_string();
        assert!(text.contains("readonly: true"), "{text}");

        mount.readonly = true;
        check_mount(&mount, false, &f.mountinfo).unwrap();

        mount.propagation = MountPropagation::PropagationHostToContainer as i32;
        let text = check_mount(&mount, false, &f.mountinfo)
            .unwrap_err()
            .to_string();
        assert!(text.contains("PROPAGATION_PRIVATE"), "{text}");
    }

    #[test]
    fn unknown_propagation_numbers_are_invalid() {
        let f = Fixture::new();
        let mut mount = cri_mount(&f.path("shared"), MountPropagation::PropagationPrivate);
        mount.propagation = 42;
        let err = check_mount(&mount, false, &f.mountinfo).unwrap_err();
        assert!(err.is_invalid_argument());
        assert!(
            err.to_string().contains("mounts[/data].propagation"),
            "{err}"
        );
    }

    #[test]
    fn oci_options_match_the_cri_modes() {
        assert_eq!(
            oci_propagation_option(MountPropagation::PropagationPrivate),
            "rprivate"
        );
        assert_eq!(
            oci_propagation_option(MountPropagation::PropagationHostToContainer),
            "rslave"
        );
        assert_eq!(
            oci_propagation_option(MountPropagation::PropagationBidirectional),
            "rshared"
        );
    }
}
