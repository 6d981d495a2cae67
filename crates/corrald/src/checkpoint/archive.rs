//! The checkpoint archive, in the layout CRI-O and containerd write (and `checkpointctl`
//! reads): an uncompressed tar holding
//!
//! | entry | contents |
//! | --- | --- |
//! | `config.dump` | JSON: the container's id, name, image, runtime and times ([`ConfigDump`]); corral adds the CRI container config it was created with |
//! | `spec.dump` | the container's OCI runtime spec (its `config.json`) |
//! | `checkpoint/` | CRIU's images (`runc checkpoint --image-path`) |
//! | `rootfs-diff.tar` | the files the container added or changed in its root filesystem (the overlay's upper directory, without its whiteouts) |
//! | `deleted.files` | JSON list of the image's files the container deleted (the whiteouts) |
//! | `stats-dump`, `dump.log` | CRIU's statistics and log of the dump |
//!
//! `config.dump` comes first, so reading it does not read through the images.
//!
//! Written with the `tar` crate; the layout is corral's own code from those projects' documented
//! file names.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use cri_proto::v1::ContainerConfig;
use serde::{Deserialize, Serialize};

/// CRIU's images.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// The container's metadata.
pub const CONFIG_DUMP: &str = "config.dump";
/// The container's OCI spec.
pub const SPEC_DUMP: &str = "spec.dump";
/// The writable layer's added and changed files.
pub const ROOTFS_DIFF: &str = "rootfs-diff.tar";
/// The image files the container deleted.
pub const DELETED_FILES: &str = "deleted.files";
/// CRIU's dump statistics.
pub const STATS_DUMP: &str = "stats-dump";
/// CRIU's log of the dump.
pub const DUMP_LOG: &str = "dump.log";

/// The most `config.dump` may hold.
const CONFIG_DUMP_LIMIT: u64 = 4 << 20;

/// What went wrong with an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The archive is not a checkpoint archive, or a damaged one.
    #[error("{} is not a usable checkpoint archive: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.to_path_buf();
    move |source| ArchiveError::Io { what, path, source }
}

/// `config.dump`: CRI-O's fields, and the CRI config corral restores the container from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDump {
    /// The checkpointed container's id.
    pub id: String,
    /// Its name (the CRI metadata's).
    pub name: String,
    /// The image as the container's config named it.
    pub rootfs_image: String,
    /// The image's id.
    pub rootfs_image_ref: String,
    /// The image's name (as `rootfs_image`).
    pub rootfs_image_name: String,
    /// The OCI runtime handler.
    pub runtime: String,
    /// When the container was created (RFC 3339).
    pub created_time: String,
    /// When it was checkpointed (RFC 3339).
    pub checkpointed_time: String,
    /// The CRI container config the container was created with (corral's own key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corral_container_config: Option<ContainerConfig>,
}

/// The files of a checkpoint before they are packed.
pub struct Parts<'a> {
    /// The container's metadata.
    pub config: &'a ConfigDump,
    /// The container's `config.json`.
    pub spec: &'a Path,
    /// CRIU's images.
    pub images: &'a Path,
    /// CRIU's work directory (holding `dump.log`, maybe `stats-dump`).
    pub work: &'a Path,
    /// The overlay's upper directory.
    pub upper: &'a Path,
}

/// Writes the archive at `location` (through a temporary file beside it, renamed at the end:
/// nothing is left at `location` on failure). `scratch` holds the rootfs diff meanwhile.
pub fn write(location: &Path, parts: &Parts<'_>, scratch: &Path) -> Result<(), ArchiveError> {
    let diff = scratch.join(ROOTFS_DIFF);
    let deleted = write_rootfs_diff(parts.upper, &diff)?;
    let deleted_json = serde_json::to_vec(&deleted).map_err(|e| ArchiveError::Invalid {
        path: location.to_path_buf(),
        reason: format!("encode {DELETED_FILES}: {e}"),
    })?;
    let config_json =
        serde_json::to_vec_pretty(parts.config).map_err(|e| ArchiveError::Invalid {
            path: location.to_path_buf(),
            reason: format!("encode {CONFIG_DUMP}: {e}"),
        })?;
    let file_name = location
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = location.with_file_name(format!(".{file_name}.partial"));
    let result = (|| {
        let file = File::create(&partial).map_err(io_error("create", &partial))?;
        let mut tar = tar::Builder::new(BufWriter::new(file));
        tar.follow_symlinks(false);
        let add_err = io_error("write", &partial);
        append_bytes(&mut tar, CONFIG_DUMP, &config_json).map_err(add_err)?;
        tar.append_path_with_name(parts.spec, SPEC_DUMP)
            .map_err(io_error("add", parts.spec))?;
        append_bytes(&mut tar, DELETED_FILES, &deleted_json)
            .map_err(io_error("write", &partial))?;
        tar.append_path_with_name(&diff, ROOTFS_DIFF)
            .map_err(io_error("add", &diff))?;
        for name in [STATS_DUMP, DUMP_LOG] {
            let found = [parts.images.join(name), parts.work.join(name)]
                .into_iter()
                .find(|p| p.is_file());
            if let Some(path) = found {
                tar.append_path_with_name(&path, name)
                    .map_err(io_error("add", &path))?;
            }
        }
        tar.append_dir_all(CHECKPOINT_DIR, parts.images)
            .map_err(io_error("add", parts.images))?;
        let mut out = tar.into_inner().map_err(io_error("write", &partial))?;
        out.flush().map_err(io_error("write", &partial))?;
        out.get_ref()
            .sync_all()
            .map_err(io_error("sync", &partial))?;
        fs::rename(&partial, location).map_err(io_error("rename into place", location))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, data: &[u8]) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    header.set_cksum();
    tar.append_data(&mut header, name, data)
}

/// Packs the upper directory into `out` (whiteouts left out); returns the whiteouts' paths
/// (relative, as the container sees them without the leading `/`).
fn write_rootfs_diff(upper: &Path, out: &Path) -> Result<Vec<String>, ArchiveError> {
    let file = File::create(out).map_err(io_error("create", out))?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    tar.follow_symlinks(false);
    let mut deleted = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let dir = upper.join(&rel);
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(io_error("read directory", &dir))?
            .collect::<Result<_, _>>()
            .map_err(io_error("read directory", &dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = rel.join(entry.file_name());
            let meta = fs::symlink_metadata(&path).map_err(io_error("stat", &path))?;
            let kind = meta.file_type();
            if kind.is_char_device() && std::os::unix::fs::MetadataExt::rdev(&meta) == 0 {
                deleted.push(name.to_string_lossy().into_owned());
                continue;
            }
            if kind.is_dir() || kind.is_file() || kind.is_symlink() {
                tar.append_path_with_name(&path, &name)
                    .map_err(io_error("add", &path))?;
            }
            if kind.is_dir() {
                pending.push(name);
            }
        }
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io_error("write", out))?;
    Ok(deleted)
}

/// Reads `config.dump` from the archive at `path`.
pub fn read_config(path: &Path) -> Result<ConfigDump, ArchiveError> {
    let invalid = |reason: String| ArchiveError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(io_error("open", path))?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(io_error("read", path))? {
        let entry = entry.map_err(|e| invalid(format!("not a tar archive ({e})")))?;
        let is_config = entry
            .path()
            .map(|p| p == Path::new(CONFIG_DUMP))
            .unwrap_or(false);
        if !is_config {
            continue;
        }
        let mut data = Vec::new();
        entry
            .take(CONFIG_DUMP_LIMIT)
            .read_to_end(&mut data)
            .map_err(io_error("read", path))?;
        return serde_json::from_slice(&data).map_err(|e| invalid(format!("{CONFIG_DUMP}: {e}")));
    }
    Err(invalid(format!("it has no {CONFIG_DUMP}")))
}

/// Unpacks the archive into `dest` (created); checks that it holds CRIU's images.
pub fn unpack(path: &Path, dest: &Path) -> Result<(), ArchiveError> {
    fs::create_dir_all(dest).map_err(io_error("create", dest))?;
    let file = File::open(path).map_err(io_error("open", path))?;
    let mut archive = tar::Archive::new(file);
    archive.set_preserve_permissions(true);
    archive.unpack(dest).map_err(|e| ArchiveError::Invalid {
        path: path.to_path_buf(),
        reason: format!("unpack: {e}"),
    })?;
    if !dest.join(CHECKPOINT_DIR).is_dir() {
        return Err(ArchiveError::Invalid {
            path: path.to_path_buf(),
            reason: format!("it has no {CHECKPOINT_DIR}/ directory of CRIU images"),
        });
    }
    Ok(())
}

/// Applies an unpacked archive's `rootfs-diff.tar` and `deleted.files` to the container's
/// mounted root filesystem.
pub fn apply_rootfs_diff(unpacked: &Path, rootfs: &Path) -> Result<(), ArchiveError> {
    let diff = unpacked.join(ROOTFS_DIFF);
    if diff.is_file() {
        let file = File::open(&diff).map_err(io_error("open", &diff))?;
        let mut archive = tar::Archive::new(file);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_overwrite(true);
        archive.unpack(rootfs).map_err(|e| ArchiveError::Invalid {
            path: diff.clone(),
            reason: format!("unpack into {}: {e}", rootfs.display()),
        })?;
    }
    let deleted_path = unpacked.join(DELETED_FILES);
    let deleted: Vec<String> = match fs::read(&deleted_path) {
        Ok(data) => serde_json::from_slice(&data).map_err(|e| ArchiveError::Invalid {
            path: deleted_path.clone(),
            reason: e.to_string(),
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_error("read", &deleted_path)(e)),
    };
    for name in deleted {
        let target = inside(rootfs, &name).ok_or_else(|| ArchiveError::Invalid {
            path: deleted_path.clone(),
            reason: format!("{name:?} is not a path inside the container"),
        })?;
        let removed = match fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&target),
            Ok(_) => fs::remove_file(&target),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        removed.map_err(io_error("remove", &target))?;
    }
    Ok(())
}

/// `name` under `root`, when it is a relative path of plain components none of whose parents
/// is a symbolic link (which could lead out of `root`).
fn inside(root: &Path, name: &str) -> Option<PathBuf> {
    let rel = Path::new(name.trim_start_matches('/'));
    let mut path = root.to_path_buf();
    let mut components = rel.components().peekable();
    components.peek()?;
    while let Some(component) = components.next() {
        let Component::Normal(part) = component else {
            return None;
        };
        path.push(part);
        let is_last = components.peek().is_none();
        if !is_last
            && fs::symlink_metadata(&path)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false)
        {
            return None;
        }
    }
    Some(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> ConfigDump {
        ConfigDump {
            id: "c1".into(),
            name: "counter".into(),
            rootfs_image: "busybox:1".into(),
            rootfs_image_ref: "sha256:abc".into(),
            rootfs_image_name: "busybox:1".into(),
            runtime: "runc".into(),
            created_time: "2026-01-01T00:00:00Z".into(),
            checkpointed_time: "2026-01-01T00:01:00Z".into(),
            corral_container_config: Some(ContainerConfig::default()),
        }
    }

    #[test]
    fn an_archive_round_trips_with_its_rootfs_changes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in [
            "images",
            "work",
            "upper/etc",
            "scratch",
            "rootfs/etc",
            "rootfs/old",
        ] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        fs::write(d.join("images/pages-1.img"), b"pages").unwrap();
        fs::write(d.join("images/stats-dump"), b"stats").unwrap();
        fs::write(d.join("work/dump.log"), b"log").unwrap();
        fs::write(d.join("spec.json"), b"{}").unwrap();
        fs::write(d.join("upper/etc/new"), b"written").unwrap();
        // A whiteout: the container deleted /old/gone.
        fs::create_dir_all(d.join("upper/old")).unwrap();
        nix::sys::stat::mknod(
            &d.join("upper/old/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0),
            0,
        )
        .unwrap();
        fs::write(d.join("rootfs/old/gone"), b"image file").unwrap();
        let location = d.join("ckpt.tar");
        let config = config();
        let parts = Parts {
            config: &config,
            spec: &d.join("spec.json"),
            images: &d.join("images"),
            work: &d.join("work"),
            upper: &d.join("upper"),
        };
        write(&location, &parts, &d.join("scratch")).unwrap();
        assert!(!d.join(".ckpt.tar.partial").exists());

        assert_eq!(read_config(&location).unwrap(), config);
        let unpacked = d.join("unpacked");
        unpack(&location, &unpacked).unwrap();
        for name in [
            "spec.dump",
            "checkpoint/pages-1.img",
            "stats-dump",
            "dump.log",
        ] {
            assert!(unpacked.join(name).is_file(), "{name}");
        }
        let deleted: Vec<String> =
            serde_json::from_slice(&fs::read(unpacked.join(DELETED_FILES)).unwrap()).unwrap();
        assert_eq!(deleted, ["old/gone"]);
        apply_rootfs_diff(&unpacked, &d.join("rootfs")).unwrap();
        assert_eq!(fs::read(d.join("rootfs/etc/new")).unwrap(), b"written");
        assert!(!d.join("rootfs/old/gone").exists());
    }

    #[test]
    fn deleted_paths_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        assert!(inside(&root, "../etc/passwd").is_none());
        assert!(inside(&root, "escape/etc/passwd").is_none());
        assert!(inside(&root, "").is_none());
        assert_eq!(inside(&root, "/a/b"), Some(root.join("a/b")));
        // The link itself may be deleted.
        assert_eq!(inside(&root, "escape"), Some(root.join("escape")));
    }

    #[test]
    fn a_file_that_is_no_checkpoint_archive_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tar");
        fs::write(&path, b"not a tar").unwrap();
        let err = read_config(&path).unwrap_err();
        assert!(
            err.to_string().contains("not a usable checkpoint archive"),
            "{err}"
        );
    }
}
