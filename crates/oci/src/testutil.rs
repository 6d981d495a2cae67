//! Fakes shared by the unit tests: mountinfo files and image root filesystems.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// One line of a fake mountinfo file.
pub struct MountLine {
    mount_point: String,
    optional_fields: String,
}

impl MountLine {
    /// A tmpfs at `mount_point` (written as given, so escapes stay escaped) with the optional
    /// fields `fields` (`shared:1`, `master:2`, `unbindable` or nothing).
    pub fn new(mount_point: impl AsRef<Path>, fields: &str) -> MountLine {
        MountLine {
            mount_point: mount_point.as_ref().to_string_lossy().into_owned(),
            optional_fields: fields.to_owned(),
        }
    }
}

/// Writes `lines` as `<dir>/mountinfo` and returns its path.
pub fn mountinfo_file(dir: &Path, lines: &[MountLine]) -> PathBuf {
    let mut text = String::new();
    for (i, line) in lines.iter().enumerate() {
        let id = 100 + i;
        let fields = if line.optional_fields.is_empty() {
            String::new()
        } else {
            format!("{} ", line.optional_fields)
        };
        text.push_str(&format!(
            "{id} 1 0:{id} / {} rw,relatime {fields}- tmpfs tmpfs rw\n",
            line.mount_point
        ));
    }
    let path = dir.join("mountinfo");
    std::fs::write(&path, text).unwrap();
    path
}

/// A fake image root filesystem with `/etc/passwd` and `/etc/group`.
pub fn rootfs_with(dir: &Path, passwd: &str, group: &str) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/passwd"), passwd).unwrap();
    std::fs::write(rootfs.join("etc/group"), group).unwrap();
    rootfs
}

/// The `/etc/passwd` of the fake images.
pub const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment
alice:x:1000:1000:Alice:/home/alice:/bin/sh
bob:x:1001:100::/home/bob:/bin/sh
nohome:x:1002:1002:::/bin/sh
broken line
";

/// The `/etc/group` of the fake images.
pub const GROUP: &str = "\
root:x:0:
daemon:x:1:
users:x:100:alice
alice:x:1000:
wheel:x:10:alice,bob
audio:x:29:bob
nohome:x:1002:
";
