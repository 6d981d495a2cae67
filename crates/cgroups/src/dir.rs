//! One cgroup's directories, each opened once, and its files read relative to them.
//!
//! A stats call over hundreds of containers reads a dozen files of each; by absolute path
//! (`/sys/fs/cgroup/memory/<parent>/<pod>/<container>/memory.stat`) the kernel resolves every
//! component from the root for every file, which profiled as the largest single cost of the
//! call. [`CgroupFiles`] opens the cgroup's directory in a hierarchy the first time a file of
//! that hierarchy is read and then opens each file with `openat` and a one-component name.
//!
//! The directories are held for one read of one object only (a [`CgroupFiles`] is made per
//! container or pod per call and dropped with it): no descriptor outlives the call, and a
//! cgroup removed and made again under the same name is opened afresh by the next call instead
//! of being read through a descriptor of the removed one.
//!
//! Written here rather than taken from cgroups-rs: that crate reads every file by its full
//! path (the cost this module removes) and has no relative-read interface.

use std::cell::OnceCell;
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::dir::{Dir, Type};
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use crate::layout::{CgroupLayout, Hierarchy};

/// An open cgroup directory; its files are read relative to it.
#[derive(Debug)]
pub struct CgroupDir(OwnedFd);

impl CgroupDir {
    /// Opens the directory at `path`; `None` when it does not exist or cannot be opened.
    pub fn open(path: &Path) -> Option<CgroupDir> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        openat(nix::fcntl::AT_FDCWD, path, flags, Mode::empty())
            .ok()
            .map(CgroupDir)
    }

    /// The text of the file `name` (one path component) in the directory; `None` when it is
    /// missing or unreadable.
    pub fn read(&self, name: &str) -> Option<String> {
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        let mut file = File::from(openat(&self.0, name, flags, Mode::empty()).ok()?);
        // Read in chunks rather than with `read_to_string`, whose size hint costs a `statx`
        // per file (and cgroupfs reports no useful size anyway).
        let mut text = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(chunk.get(..n)?),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        String::from_utf8(text).ok()
    }

    /// The directories in this one (child cgroups), each opened relative to it; those that
    /// cannot be listed or opened are left out.
    pub fn children(&self) -> Vec<CgroupDir> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let Ok(mut listing) = Dir::openat(&self.0, ".", flags, Mode::empty()) else {
            return Vec::new();
        };
        let names: Vec<CString> = listing
            .iter()
            .flatten()
            .filter(|e| e.file_type() == Some(Type::Directory))
            .map(|e| e.file_name().to_owned())
            .filter(|name| !matches!(name.as_bytes(), b"." | b".."))
            .collect();
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        names
            .iter()
            .filter_map(|name| openat(&self.0, name.as_c_str(), flags, Mode::empty()).ok())
            .map(CgroupDir)
            .collect()
    }

    /// The number the file `name` holds.
    pub fn read_u64(&self, name: &str) -> Option<u64> {
        self.read(name)?.trim().parse().ok()
    }
}

/// The directories of one cgroup (`relative` below every hierarchy of a layout), each opened
/// the first time one of its files is read; a directory that cannot be opened is tried once.
#[derive(Debug)]
pub struct CgroupFiles<'a> {
    layout: &'a CgroupLayout,
    relative: &'a Path,
    /// One per hierarchy of the layout, in its order.
    dirs: Vec<OnceCell<Option<CgroupDir>>>,
}

impl<'a> CgroupFiles<'a> {
    /// The cgroup at `relative` in `layout`'s hierarchies; nothing is opened yet.
    pub fn new(layout: &'a CgroupLayout, relative: &'a Path) -> Self {
        CgroupFiles {
            layout,
            relative,
            dirs: layout
                .hierarchies()
                .iter()
                .map(|_| OnceCell::new())
                .collect(),
        }
    }

    /// The layout the cgroup is in.
    pub fn layout(&self) -> &'a CgroupLayout {
        self.layout
    }

    /// The hierarchy that has `controller`, and the cgroup's directory in it.
    pub fn for_controller(&self, controller: &str) -> Option<(&'a Hierarchy, &CgroupDir)> {
        self.at(self.layout.hierarchy_index_for(controller)?)
    }

    /// The unified (v2) hierarchy, and the cgroup's directory in it.
    pub fn unified(&self) -> Option<(&'a Hierarchy, &CgroupDir)> {
        self.at(self.layout.unified_index()?)
    }

    fn at(&self, index: usize) -> Option<(&'a Hierarchy, &CgroupDir)> {
        let hierarchy = self.layout.hierarchies().get(index)?;
        let dir = self
            .dirs
            .get(index)?
            .get_or_init(|| CgroupDir::open(&hierarchy.dir(self.relative)))
            .as_ref()?;
        Some((hierarchy, dir))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::layout::CgroupVersion;

    fn v2(root: &Path) -> CgroupLayout {
        CgroupLayout::from_hierarchies(vec![Hierarchy::new(
            CgroupVersion::V2,
            root.to_path_buf(),
            vec!["memory".into()],
        )])
        .unwrap()
    }

    #[test]
    fn files_are_read_relative_to_the_opened_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pod/c1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.current"), "42\n").unwrap();
        let layout = v2(root.path());
        let files = CgroupFiles::new(&layout, Path::new("/pod/c1"));
        let (h, d) = files.for_controller("memory").unwrap();
        assert_eq!(h.version(), CgroupVersion::V2);
        assert_eq!(d.read_u64("memory.current"), Some(42));
        assert_eq!(d.read("memory.max"), None);
        assert!(files.for_controller("pids").is_none());
        assert!(files.unified().is_some());
        let gone = CgroupFiles::new(&layout, Path::new("pod/gone"));
        assert!(gone.unified().is_none());
    }

    #[test]
    fn a_removed_and_recreated_cgroup_is_read_fresh() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pod/c1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.current"), "1\n").unwrap();
        let layout = v2(root.path());
        let rel = Path::new("pod/c1");
        let first = CgroupFiles::new(&layout, rel);
        assert_eq!(
            first.unified().unwrap().1.read_u64("memory.current"),
            Some(1)
        );

        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.current"), "2\n").unwrap();
        // The next read of the object (a new call) opens the new directory...
        let next = CgroupFiles::new(&layout, rel);
        assert_eq!(
            next.unified().unwrap().1.read_u64("memory.current"),
            Some(2)
        );
        // ...while a descriptor of the removed one reads nothing of the new one.
        assert_eq!(first.unified().unwrap().1.read_u64("memory.current"), None);
    }
}
