//! How a CRI `cgroup_parent` and an OCI `cgroupsPath` name a cgroup: the cgroupfs driver
//! takes paths, the systemd driver takes slice names and `slice:prefix:name` triples.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{CgroupError, Result};

/// The prefix of the systemd scopes this runtime names (`corral-<name>.scope`).
pub const SYSTEMD_SCOPE_PREFIX: &str = "corral";

/// The cgroup driver, as configured for the kubelet (`--cgroup-driver`).
///
/// With `Systemd`, names follow systemd's rules (slices nest by their `-` separated prefixes,
/// containers get `.scope` units). Where systemd runs, the units are systemd's, made over D-Bus
/// (see [`crate::systemd`] and `PodCgroup::create_with_systemd`); on hosts where systemd is not
/// PID 1 the same directories are made and removed through cgroupfs directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// `cgroup_parent` is an absolute path such as `/kubepods/burstable/pod<uid>`.
    Cgroupfs,
    /// `cgroup_parent` is a slice such as `kubepods-burstable-pod<uid>.slice`.
    Systemd,
}

/// Where a cgroup beside the pod's containers lives, in the forms its users need.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChildCgroupPath {
    /// The OCI `linux.cgroupsPath` in the driver's syntax: `/kubepods/pod<uid>/<name>`
    /// (cgroupfs) or `kubepods-pod<uid>.slice:corral:<name>` (systemd; what
    /// `runc --systemd-cgroup` expects).
    pub oci_cgroups_path: String,
    /// The cgroup relative to every hierarchy's root, e.g.
    /// `kubepods.slice/kubepods-pod<uid>.slice/corral-<name>.scope`.
    pub relative_path: PathBuf,
}

impl ChildCgroupPath {
    /// The same cgroup as an absolute cgroupfs path (`/` + [`Self::relative_path`]): the
    /// `cgroupsPath` to give an OCI runtime that is not told to use systemd, which is what the
    /// systemd driver needs on a host without a running systemd.
    pub fn cgroupfs_path(&self) -> String {
        format!("/{}", self.relative_path.display())
    }
}

impl CgroupDriver {
    /// Checks a CRI `cgroup_parent` and returns the pod cgroup it names, relative to every
    /// hierarchy's root.
    pub fn pod_relative_path(self, cgroup_parent: &str) -> Result<PathBuf> {
        match self {
            Self::Cgroupfs => cgroupfs_parent_path(cgroup_parent),
            Self::Systemd => systemd_parent_path(cgroup_parent),
        }
    }

    /// `cgroup_parent` as this driver names units. kubelet with the systemd driver sends a
    /// slice's whole cgroup path (`/kubepods.slice/kubepods-pod<uid>.slice`), which containerd
    /// and CRI-O accept; systemd's API and runc's `slice:prefix:name` take the slice's name, its
    /// last component, and the path must be where systemd nests that slice. Slice names and
    /// cgroupfs parents are returned unchanged.
    pub fn unit_parent(self, cgroup_parent: &str) -> Result<String> {
        if self == Self::Cgroupfs || !cgroup_parent.contains('/') {
            return Ok(cgroup_parent.to_owned());
        }
        let path = cgroup_parent.trim_matches('/');
        let slice = path.rsplit('/').next().unwrap_or(path);
        let expected = expand_slice(slice)?;
        if expected != Path::new(path) {
            return Err(CgroupError::InvalidParent {
                parent: cgroup_parent.to_owned(),
                reason: format!(
                    "{slice} is nested at /{} by systemd; give that path or just the slice name",
                    expected.display()
                ),
            });
        }
        Ok(slice.to_owned())
    }

    /// The cgroup called `name` inside the pod cgroup named by `cgroup_parent` (the pause
    /// process's leaf, or a container's cgroup).
    pub fn child_path(self, cgroup_parent: &str, name: &str) -> Result<ChildCgroupPath> {
        check_child_name(name)?;
        let pod = self.pod_relative_path(cgroup_parent)?;
        Ok(match self {
            Self::Cgroupfs => ChildCgroupPath {
                oci_cgroups_path: format!("/{}/{name}", pod.display()),
                relative_path: pod.join(name),
            },
            Self::Systemd => ChildCgroupPath {
                oci_cgroups_path: format!(
                    "{}:{SYSTEMD_SCOPE_PREFIX}:{name}",
                    self.unit_parent(cgroup_parent)?
                ),
                relative_path: pod.join(scope_unit(SYSTEMD_SCOPE_PREFIX, name)),
            },
        })
    }

    /// Resolves an OCI `cgroupsPath` written in this driver's syntax (`/a/b` for cgroupfs,
    /// `slice:prefix:name` for systemd) to a path relative to every hierarchy's root.
    pub fn resolve_cgroups_path(self, cgroups_path: &str) -> Result<PathBuf> {
        match self {
            Self::Cgroupfs => cgroupfs_parent_path(cgroups_path),
            Self::Systemd => {
                let invalid = |reason: &str| CgroupError::InvalidName {
                    name: cgroups_path.to_owned(),
                    reason: reason.to_owned(),
                };
                let parts: Vec<&str> = cgroups_path.split(':').collect();
                let [slice, prefix, name] = parts[..] else {
                    return Err(invalid(
                        "a systemd cgroupsPath has the form <slice>:<prefix>:<name>",
                    ));
                };
                check_child_name(prefix)?;
                check_child_name(name)?;
                let mut path = expand_slice(slice)?;
                path.push(scope_unit(prefix, name));
                Ok(path)
            }
        }
    }
}

impl fmt::Display for CgroupDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cgroupfs => "cgroupfs",
            Self::Systemd => "systemd",
        })
    }
}

impl FromStr for CgroupDriver {
    type Err = CgroupError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cgroupfs" => Ok(Self::Cgroupfs),
            "systemd" => Ok(Self::Systemd),
            other => Err(CgroupError::InvalidName {
                name: other.to_owned(),
                reason: "the cgroup driver is either `cgroupfs` or `systemd`".to_owned(),
            }),
        }
    }
}

/// Expands a systemd slice name into its cgroup path the way systemd nests slices: every
/// `-` separated prefix is a parent slice, so `a-b-c.slice` lives at
/// `a.slice/a-b.slice/a-b-c.slice`. The root slice `-.slice` is the empty path.
pub fn expand_slice(slice: &str) -> Result<PathBuf> {
    let invalid = |reason: &str| CgroupError::InvalidParent {
        parent: slice.to_owned(),
        reason: reason.to_owned(),
    };
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(invalid(
            "the systemd driver takes a slice name ending in `.slice`, such as \
             kubepods-burstable-pod<uid>.slice (paths like /kubepods/... need the cgroupfs driver)",
        ));
    };
    if slice.contains('/') {
        return Err(invalid(
            "a slice name must not contain `/`; name nested slices with `-`, as in \
             kubepods-burstable.slice",
        ));
    }
    if stem == "-" {
        return Ok(PathBuf::new());
    }
    let parts: Vec<&str> = stem.split('-').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(invalid(
            "a slice name must not start or end with `-` nor contain `--`",
        ));
    }
    let mut path = PathBuf::new();
    for depth in 1..=parts.len() {
        path.push(format!("{}.slice", parts[..depth].join("-")));
    }
    Ok(path)
}

fn scope_unit(prefix: &str, name: &str) -> String {
    format!("{prefix}-{name}.scope")
}

fn cgroupfs_parent_path(parent: &str) -> Result<PathBuf> {
    let invalid = |reason: String| CgroupError::InvalidParent {
        parent: parent.to_owned(),
        reason,
    };
    if parent.is_empty() {
        return Err(invalid(
            "empty; set linux.cgroup_parent to an absolute path such as /kubepods/pod<uid>"
                .to_owned(),
        ));
    }
    if !parent.starts_with('/') {
        let hint = if parent.ends_with(".slice") {
            " (this looks like a systemd slice: configure the systemd cgroup driver)"
        } else {
            ""
        };
        return Err(invalid(format!(
            "the cgroupfs driver needs an absolute path such as /kubepods/burstable/pod<uid>{hint}"
        )));
    }
    if parent.contains('\0') {
        return Err(invalid("must not contain a NUL byte".to_owned()));
    }
    let mut path = PathBuf::new();
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        if part == ".." || part == "." {
            return Err(invalid(format!(
                "must not contain `{part}` components; give the cgroup's plain absolute path"
            )));
        }
        path.push(part);
    }
    if path.as_os_str().is_empty() {
        return Err(invalid(
            "names the root cgroup; a pod needs a cgroup of its own such as /kubepods/pod<uid>"
                .to_owned(),
        ));
    }
    Ok(path)
}

fn systemd_parent_path(parent: &str) -> Result<PathBuf> {
    let path = expand_slice(&CgroupDriver::Systemd.unit_parent(parent)?)?;
    if path.as_os_str().is_empty() {
        return Err(CgroupError::InvalidParent {
            parent: parent.to_owned(),
            reason: "names the root slice; a pod needs a slice of its own such as \
                     kubepods-pod<uid>.slice"
                .to_owned(),
        });
    }
    Ok(path)
}

/// A child cgroup name is one path component that also fits systemd's `slice:prefix:name`.
fn check_child_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name == "." || name == ".." {
        "must not be `.` or `..`"
    } else if name.contains(['/', ':', '\0']) {
        "must not contain `/`, `:` or NUL"
    } else {
        return Ok(());
    };
    Err(CgroupError::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parent_error(driver: CgroupDriver, parent: &str) -> String {
        match driver.pod_relative_path(parent) {
            Err(error @ CgroupError::InvalidParent { .. }) => error.to_string(),
            other => panic!("{parent:?} should be an invalid parent, got {other:?}"),
        }
    }

    #[test]
    fn kubelets_systemd_cgroup_path_names_its_slice() {
        let systemd = CgroupDriver::Systemd;
        let kubelet = "/kubepods.slice/kubepods-podc3bc.slice";
        assert_eq!(
            systemd.unit_parent(kubelet).unwrap(),
            "kubepods-podc3bc.slice"
        );
        assert_eq!(
            systemd.pod_relative_path(kubelet).unwrap(),
            Path::new("kubepods.slice/kubepods-podc3bc.slice")
        );
        let child = systemd.child_path(kubelet, "abc").unwrap();
        assert_eq!(child.oci_cgroups_path, "kubepods-podc3bc.slice:corral:abc");
        assert_eq!(
            child.relative_path,
            Path::new("kubepods.slice/kubepods-podc3bc.slice/corral-abc.scope")
        );
        assert_eq!(systemd.unit_parent("a-b.slice").unwrap(), "a-b.slice");
        assert_eq!(CgroupDriver::Cgroupfs.unit_parent("/a/b").unwrap(), "/a/b");
        // A path where systemd would not put the slice.
        let err = parent_error(systemd, "/other.slice/kubepods-podc3bc.slice");
        assert!(
            err.contains("/kubepods.slice/kubepods-podc3bc.slice"),
            "{err}"
        );
    }

    #[test]
    fn slices_expand_into_nested_directories() {
        assert_eq!(
            expand_slice("kubepods-burstable-pod1234_5678.slice").unwrap(),
            Path::new(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice"
            )
        );
        assert_eq!(
            expand_slice("kubepods.slice").unwrap(),
            Path::new("kubepods.slice")
        );
        assert_eq!(expand_slice("-.slice").unwrap(), Path::new(""));
    }

    #[test]
    fn malformed_slices_are_rejected() {
        for slice in [
            "kubepods",
            "kubepods.scope",
            "a/b.slice",
            "-a.slice",
            "a-.slice",
            "a--b.slice",
            "",
        ] {
            assert!(
                matches!(expand_slice(slice), Err(CgroupError::InvalidParent { .. })),
                "{slice:?} should be rejected"
            );
        }
    }

    #[test]
    fn cgroupfs_parents_are_absolute_paths() {
        let driver = CgroupDriver::Cgroupfs;
        assert_eq!(
            driver
                .pod_relative_path("/kubepods/burstable/pod1")
                .unwrap(),
            Path::new("kubepods/burstable/pod1")
        );
        assert_eq!(
            driver.pod_relative_path("//kubepods//pod1/").unwrap(),
            Path::new("kubepods/pod1")
        );
        assert!(parent_error(driver, "").contains("set linux.cgroup_parent"));
        assert!(parent_error(driver, "kubepods/pod1").contains("absolute path"));
        assert!(parent_error(driver, "kubepods-pod1.slice").contains("systemd cgroup driver"));
        assert!(parent_error(driver, "/kubepods/../etc").contains("`..`"));
        assert!(parent_error(driver, "/kubepods/./pod1").contains("`.`"));
        assert!(parent_error(driver, "/").contains("root cgroup"));
        assert_eq!(
            parent_error(driver, "/a/../b"),
            "invalid cgroup parent \"/a/../b\": must not contain `..` components; \
             give the cgroup's plain absolute path"
        );
    }

    #[test]
    fn systemd_parents_are_slices() {
        let driver = CgroupDriver::Systemd;
        assert_eq!(
            driver
                .pod_relative_path("kubepods-besteffort-pod1.slice")
                .unwrap(),
            Path::new("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice")
        );
        assert!(parent_error(driver, "/kubepods/pod1").contains("cgroupfs driver"));
        assert!(parent_error(driver, "kubepods/x.slice").contains("nested at /x.slice"));
        assert!(parent_error(driver, "-.slice").contains("root slice"));
        assert!(parent_error(driver, "kube--pods.slice").contains("`--`"));
    }

    #[test]
    fn children_of_a_cgroupfs_pod() {
        let child = CgroupDriver::Cgroupfs
            .child_path("/kubepods/burstable/pod1", "sandbox1")
            .unwrap();
        assert_eq!(child.oci_cgroups_path, "/kubepods/burstable/pod1/sandbox1");
        assert_eq!(
            child.relative_path,
            Path::new("kubepods/burstable/pod1/sandbox1")
        );
        assert_eq!(child.cgroupfs_path(), "/kubepods/burstable/pod1/sandbox1");
    }

    #[test]
    fn children_of_a_systemd_pod_are_scopes() {
        let child = CgroupDriver::Systemd
            .child_path("kubepods-burstable-pod1.slice", "abc123")
            .unwrap();
        assert_eq!(
            child.oci_cgroups_path,
            "kubepods-burstable-pod1.slice:corral:abc123"
        );
        assert_eq!(
            child.relative_path,
            Path::new(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/corral-abc123.scope"
            )
        );
        assert_eq!(
            child.cgroupfs_path(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/corral-abc123.scope"
        );
        // The OCI form resolves back to the same directory.
        assert_eq!(
            CgroupDriver::Systemd
                .resolve_cgroups_path(&child.oci_cgroups_path)
                .unwrap(),
            child.relative_path
        );
    }

    #[test]
    fn child_names_are_single_components() {
        for name in ["", ".", "..", "a/b", "a:b", "a\0b"] {
            for driver in [CgroupDriver::Cgroupfs, CgroupDriver::Systemd] {
                let parent = match driver {
                    CgroupDriver::Cgroupfs => "/kubepods/pod1",
                    CgroupDriver::Systemd => "kubepods-pod1.slice",
                };
                assert!(
                    matches!(
                        driver.child_path(parent, name),
                        Err(CgroupError::InvalidName { .. })
                    ),
                    "{name:?} should be rejected by {driver}"
                );
            }
        }
    }

    #[test]
    fn oci_cgroups_paths_resolve() {
        assert_eq!(
            CgroupDriver::Cgroupfs
                .resolve_cgroups_path("/kubepods/pod1/c1")
                .unwrap(),
            Path::new("kubepods/pod1/c1")
        );
        assert_eq!(
            CgroupDriver::Systemd
                .resolve_cgroups_path("system.slice:docker:c1")
                .unwrap(),
            Path::new("system.slice/docker-c1.scope")
        );
        for bad in [
            "system.slice:c1",
            "system.slice:a:b:c",
            "system:a:b",
            "x.slice::c1",
        ] {
            assert!(
                CgroupDriver::Systemd.resolve_cgroups_path(bad).is_err(),
                "{bad:?} should not resolve"
            );
        }
    }

    #[test]
    fn driver_names_round_trip() {
        for driver in [CgroupDriver::Cgroupfs, CgroupDriver::Systemd] {
            assert_eq!(driver.to_string().parse::<CgroupDriver>().unwrap(), driver);
        }
        assert!("cgroupv2".parse::<CgroupDriver>().is_err());
        assert_eq!(
            serde_json::to_string(&CgroupDriver::Systemd).unwrap(),
            "\"systemd\""
        );
    }
}
