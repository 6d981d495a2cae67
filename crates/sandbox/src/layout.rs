//! Where a sandbox's volatile files live under the state directory (`/run/corral` by default):
//!
//! ```text
//! <state>/netns/<id>                 the pinned network namespace
//! <state>/userns/<id>                the pinned user namespace (pods with their own)
//! <state>/sandboxes/<id>/hostname
//! <state>/sandboxes/<id>/hosts
//! <state>/sandboxes/<id>/resolv.conf
//! <state>/sandboxes/<id>/shm/        the pod's /dev/shm (tmpfs)
//! <state>/containers/<id>/           a container's bundle and shim state
//! ```

use std::path::{Path, PathBuf};

use crate::error::{Result, SandboxError};

/// File name of the pod's `/etc/hostname` in the sandbox directory.
pub const HOSTNAME_FILE: &str = "hostname";
/// File name of the pod's `/etc/hosts` in the sandbox directory.
pub const HOSTS_FILE: &str = "hosts";
/// File name of the pod's `/etc/resolv.conf` in the sandbox directory.
pub const RESOLV_CONF_FILE: &str = "resolv.conf";
/// Directory name of the pod's `/dev/shm` mount in the sandbox directory.
pub const SHM_DIR: &str = "shm";

/// The longest sandbox id accepted as a file name.
const MAX_ID_LEN: usize = 128;

/// The state directory's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLayout {
    root: PathBuf,
}

/// The paths of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPaths {
    /// `<state>/netns/<id>`: where the pod's network namespace is pinned.
    pub netns_pin: PathBuf,
    /// `<state>/sandboxes/<id>`
    pub dir: PathBuf,
    /// `<state>/sandboxes/<id>/hostname`
    pub hostname: PathBuf,
    /// `<state>/sandboxes/<id>/hosts`
    pub hosts: PathBuf,
    /// `<state>/sandboxes/<id>/resolv.conf`
    pub resolv_conf: PathBuf,
    /// `<state>/sandboxes/<id>/shm`
    pub shm: PathBuf,
}

impl StateLayout {
    /// A layout rooted at the state directory `root`.
    pub fn new(root: impl Into<PathBuf>) -> StateLayout {
        StateLayout { root: root.into() }
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<state>/netns`: the directory of network namespace pins.
    pub fn netns_dir(&self) -> PathBuf {
        self.root.join("netns")
    }

    /// `<state>/sandboxes`: one directory per sandbox.
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    /// `<state>/userns`: the directory of user namespace pins.
    pub fn userns_dir(&self) -> PathBuf {
        self.root.join("userns")
    }

    /// `<state>/containers`: one directory per container (bundle and shim state).
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// The paths of sandbox `id`; the id must be usable as a single file name.
    pub fn sandbox(&self, id: &str) -> Result<SandboxPaths> {
        check_id(id)?;
        let dir = self.sandboxes_dir().join(id);
        Ok(SandboxPaths {
            netns_pin: self.netns_dir().join(id),
            hostname: dir.join(HOSTNAME_FILE),
            hosts: dir.join(HOSTS_FILE),
            resolv_conf: dir.join(RESOLV_CONF_FILE),
            shm: dir.join(SHM_DIR),
            dir,
        })
    }
}

fn check_id(id: &str) -> Result<()> {
    let invalid = |reason| {
        Err(SandboxError::InvalidSandboxId {
            id: id.to_owned(),
            reason,
        })
    };
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return invalid("must be 1 to 128 characters long");
    }
    if id == "." || id == ".." {
        return invalid("'.' and '..' are not names");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return invalid("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_paths_follow_the_layout() {
        let layout = StateLayout::new("/run/corral");
        let paths = layout.sandbox("0123abcd").unwrap();
        assert_eq!(paths.netns_pin, Path::new("/run/corral/netns/0123abcd"));
        assert_eq!(paths.dir, Path::new("/run/corral/sandboxes/0123abcd"));
        assert_eq!(
            paths.hostname,
            Path::new("/run/corral/sandboxes/0123abcd/hostname")
        );
        assert_eq!(
            paths.hosts,
            Path::new("/run/corral/sandboxes/0123abcd/hosts")
        );
        assert_eq!(
            paths.resolv_conf,
            Path::new("/run/corral/sandboxes/0123abcd/resolv.conf")
        );
        assert_eq!(paths.shm, Path::new("/run/corral/sandboxes/0123abcd/shm"));
        assert_eq!(layout.root(), Path::new("/run/corral"));
        assert_eq!(layout.userns_dir(), Path::new("/run/corral/userns"));
        assert_eq!(layout.containers_dir(), Path::new("/run/corral/containers"));
    }

    #[test]
    fn ids_that_are_not_file_names_are_refused() {
        let layout = StateLayout::new("/run/corral");
        for id in ["", ".", "..", "a/b", "../x", "a b", "é", &"x".repeat(129)] {
            assert!(layout.sandbox(id).is_err(), "{id:?} accepted");
        }
        assert!(layout.sandbox(&"x".repeat(128)).is_ok());
        assert!(layout.sandbox("pod_1.a-b").is_ok());
    }
}
