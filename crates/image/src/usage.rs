//! Disk use of a directory tree, such as a container's writable (overlay upper) layer.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Disk use of a directory tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerUsage {
    /// Bytes of allocated blocks (as `du` counts them), hard links once.
    pub bytes: u64,
    /// Inodes, the directory itself included.
    pub inodes: u64,
    /// Whether the walk saw everything (false: stopped at the entry limit).
    pub complete: bool,
}

/// Disk use of the tree at `root` (not following symlinks nor leaving its filesystem), looking
/// at no more than `max_entries` entries; `None` when `root` cannot be read.
pub fn layer_usage(root: &Path, max_entries: usize) -> Option<LayerUsage> {
    let top = std::fs::symlink_metadata(root).ok()?;
    let device = top.dev();
    let mut usage = LayerUsage {
        bytes: 0,
        inodes: 0,
        complete: true,
    };
    let mut linked = HashSet::new();
    let mut pending = vec![(root.to_path_buf(), top)];
    let mut entries = 0;
    while let Some((path, meta)) = pending.pop() {
        if meta.nlink() > 1 && !meta.is_dir() && !linked.insert(meta.ino()) {
            continue;
        }
        usage.bytes = usage
            .bytes
            .saturating_add(meta.blocks().saturating_mul(512));
        usage.inodes += 1;
        if !meta.is_dir() || meta.dev() != device {
            continue;
        }
        let Ok(children) = std::fs::read_dir(&path) else {
            continue;
        };
        for child in children.flatten() {
            entries += 1;
            if entries > max_entries {
                usage.complete = false;
                return Some(usage);
            }
            if let Ok(meta) = child.metadata() {
                pending.push((child.path(), meta));
            }
        }
    }
    Some(usage)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn layer_usage_counts_files_dirs_and_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("upper");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/data"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::hard_link(root.join("a/b/data"), root.join("a/link")).unwrap();
        std::os::unix::fs::symlink("/nowhere", root.join("dangling")).unwrap();
        let usage = layer_usage(&root, 1_000).unwrap();
        // upper, a, a/b, data (linked twice), the symlink.
        assert_eq!(usage.inodes, 5);
        assert!(usage.complete);
        assert!(usage.bytes >= 64 * 1024, "{usage:?}");
        assert!(usage.bytes < 2 * 64 * 1024 + 4 * 64 * 1024, "{usage:?}");

        let capped = layer_usage(&root, 2).unwrap();
        assert!(!capped.complete);
        assert!(capped.inodes < usage.inodes);

        assert_eq!(layer_usage(&dir.path().join("missing"), 10), None);
    }
}
