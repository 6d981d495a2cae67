//! Unpacking one layer (a tar stream, gzip/zstd or plain) into its own directory, ready to be an
//! overlayfs lowerdir.
//!
//! Whiteouts become overlay whiteouts: `.wh.NAME` a 0/0 character device `NAME`, `.wh..wh..opq`
//! the `trusted.overlay.opaque=y` xattr on its directory. Hard links, symlinks, devices, fifos,
//! ownership, modes, mtimes and xattrs are kept. Entries are refused, failing the layer, when
//! their path has a `..` component, when a hard link's target would leave the layer, or when a
//! path would be written through a symlink. The caller unpacks into a fresh temporary
//! directory and renames it into place only when the layer verified, so a failure leaves
//! nothing behind that looks like a layer.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::digest::{Digest, DigestReader, SizeExceeded};
use crate::error::{ImageError, Result};
use crate::media::Compression;

/// The xattr overlayfs reads to hide a lower directory's content.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const XATTR_PAX_PREFIX: &str = "SCHILY.xattr.";

/// A layer may decompress to at most this many times its compressed size (plus
/// [`RATIO_SLACK`]): real layers compress 2-10x, a gzip bomb ~1000x and a zstd one far more,
/// and unpacking one would fill the disk. Checked while reading, so a bomb stops early.
pub const MAX_RATIO: u64 = 100;
/// Uncompressed bytes always allowed, whatever the ratio (small, very compressible layers).
pub const RATIO_SLACK: u64 = 64 << 20;

/// What unpacking a layer saw: the digests to verify against the manifest and config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedLayer {
    /// Digest of the blob as read (compressed).
    pub digest: Digest,
    /// Size of the blob as read.
    pub size: u64,
    /// Digest of the uncompressed tar stream (the DiffID).
    pub diff_id: Digest,
    /// Size of the uncompressed tar stream.
    pub diff_size: u64,
}

/// Disk space a directory tree takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiskUsage {
    /// Bytes allocated (blocks × 512).
    pub bytes: u64,
    /// Inodes (hard links counted once).
    pub inodes: u64,
}

/// The compression of a blob, from its first bytes.
pub fn sniff_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Unpacks the layer blob read from `reader` into the existing, empty directory `dest`.
///
/// `layer` names the layer in errors; `max_size` bounds the blob's length. The returned
/// digests are those of the bytes read; the caller compares them with what it expected.
pub fn unpack_layer<R: Read>(
    reader: R,
    dest: &Path,
    layer: &str,
    max_size: Option<u64>,
) -> Result<UnpackedLayer> {
    let read = Rc::new(Cell::new(0));
    let counted = Counting {
        inner: reader,
        count: Rc::clone(&read),
    };
    let mut compressed = DigestReader::new(counted, max_size);
    let unpacked = unpack_stream(&mut compressed, &read, dest, layer);
    if let Err(err @ ImageError::LayerArchive { .. }) = unpacked {
        // A tar or decompression error is most often a corrupted blob: say so if it is.
        return Err(match (Digest::parse(layer), compressed.drain()) {
            (Ok(expected), Ok(())) => {
                let (actual, _) = compressed.finish();
                if actual == expected {
                    err
                } else {
                    ImageError::DigestMismatch {
                        what: "layer",
                        expected: expected.to_string(),
                        actual: actual.to_string(),
                    }
                }
            }
            _ => err,
        });
    }
    let (diff_id, diff_size) = unpacked?;
    compressed
        .drain()
        .map_err(|e| archive_error(layer, "read past end of stream", e))?;
    let (digest, size) = compressed.finish();
    Ok(UnpackedLayer {
        digest,
        size,
        diff_id,
        diff_size,
    })
}

/// Decompresses and applies the tar stream; returns the DiffID and uncompressed size.
fn unpack_stream<R: Read>(
    compressed: &mut DigestReader<R>,
    compressed_read: &Rc<Cell<u64>>,
    dest: &Path,
    layer: &str,
) -> Result<(Digest, u64)> {
    {
        let archive_err = |op: &str| {
            let op = op.to_string();
            move |e: io::Error| archive_error(layer, &op, e)
        };
        let mut buffered = BufReader::with_capacity(128 * 1024, compressed);
        let head = buffered.fill_buf().map_err(archive_err("read"))?;
        let decoded: Box<dyn Read + '_> = match sniff_compression(head) {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(buffered)
                    .map_err(archive_err("start zstd decoder"))?,
            ),
            Compression::None => Box::new(buffered),
        };
        let bounded = RatioLimit {
            inner: decoded,
            compressed: Rc::clone(compressed_read),
            read: 0,
        };
        let mut diff = DigestReader::new(bounded, None);
        let mut unpacker = Unpacker::new(dest, layer);
        {
            let mut archive = tar::Archive::new(&mut diff);
            for entry in archive.entries().map_err(archive_err("read tar"))? {
                let mut entry = entry.map_err(archive_err("read tar entry"))?;
                unpacker.apply(&mut entry)?;
            }
        }
        diff.drain().map_err(archive_err("read past end of tar"))?;
        unpacker.finish()?;
        Ok(diff.finish())
    }
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Fails a decompressed stream once it passes [`MAX_RATIO`] times the compressed bytes read
/// so far, plus [`RATIO_SLACK`].
struct RatioLimit<R> {
    inner: R,
    compressed: Rc<Cell<u64>>,
    read: u64,
}

/// The error [`RatioLimit`] reads fail with; [`archive_error`] turns it into
/// [`ImageError::DecompressionBomb`].
#[derive(Debug, thiserror::Error)]
#[error("decompressed {read} bytes from {compressed} compressed")]
struct RatioExceeded {
    read: u64,
    compressed: u64,
}

impl<R: Read> Read for RatioLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        let compressed = self.compressed.get();
        if self.read > ratio_limit(compressed) {
            return Err(io::Error::other(RatioExceeded {
                read: self.read,
                compressed,
            }));
        }
        Ok(n)
    }
}

/// The uncompressed bytes allowed for `compressed` bytes of blob.
fn ratio_limit(compressed: u64) -> u64 {
    compressed
        .saturating_mul(MAX_RATIO)
        .saturating_add(RATIO_SLACK)
}

/// The bytes and inodes a directory tree takes on disk.
pub fn disk_usage(root: &Path) -> Result<DiskUsage> {
    let mut usage = DiskUsage::default();
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).map_err(ImageError::io("stat", &path))?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        usage.bytes += meta.blocks() * 512;
        usage.inodes += 1;
        if meta.is_dir() {
            for child in fs::read_dir(&path).map_err(ImageError::io("read dir", &path))? {
                let child = child.map_err(ImageError::io("read dir", &path))?;
                stack.push(child.path());
            }
        }
    }
    Ok(usage)
}

/// Turns an I/O error from reading a layer into the error that says what really happened.
fn archive_error(layer: &str, op: &str, e: io::Error) -> ImageError {
    if let Some(exceeded) = e.get_ref().and_then(|i| i.downcast_ref::<SizeExceeded>()) {
        return ImageError::SizeMismatch {
            what: "layer",
            digest: layer.to_string(),
            expected: exceeded.limit,
            actual: exceeded.limit + 1,
        };
    }
    if let Some(bomb) = e.get_ref().and_then(|i| i.downcast_ref::<RatioExceeded>()) {
        return ImageError::DecompressionBomb {
            layer: layer.to_string(),
            compressed: bomb.compressed,
            limit: ratio_limit(bomb.compressed),
            ratio: MAX_RATIO,
        };
    }
    if let Some(t) = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<crate::registry::TransportError>())
    {
        return ImageError::Unreachable {
            registry: t.registry.clone(),
            op: format!("fetch layer {layer}"),
            detail: t.detail.clone(),
        };
    }
    ImageError::LayerArchive {
        layer: layer.to_string(),
        op: op.to_string(),
        source: e,
    }
}

/// Metadata of one entry, gathered before its data is read.
struct EntryMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Unpacker<'a> {
    root: &'a Path,
    layer: &'a str,
    chown: bool,
    /// Directories whose mtime is set last, once nothing more is written into them.
    dir_times: Vec<(PathBuf, u64)>,
}

impl<'a> Unpacker<'a> {
    fn new(root: &'a Path, layer: &'a str) -> Self {
        Unpacker {
            root,
            layer,
            chown: nix::unistd::geteuid().is_root(),
            dir_times: Vec::new(),
        }
    }

    fn refuse(&self, entry: &Path, reason: &'static str) -> ImageError {
        ImageError::UnsafeLayerEntry {
            layer: self.layer.to_string(),
            entry: entry.display().to_string(),
            reason,
        }
    }

    /// A path relative to the layer root with no `..`, no root and no `.` components.
    fn relative(&self, raw: &Path) -> Result<PathBuf> {
        let mut out = PathBuf::new();
        for c in raw.components() {
            match c {
                Component::Normal(part) => out.push(part),
                Component::CurDir | Component::RootDir => {}
                Component::ParentDir => return Err(self.refuse(raw, "path has a .. component")),
                Component::Prefix(_) => return Err(self.refuse(raw, "path has a prefix")),
            }
        }
        Ok(out)
    }

    /// Makes sure every ancestor of `rel` is a real directory inside the layer (creating missing
    /// ones) and returns the absolute parent path.
    fn prepare_parent(&self, raw: &Path, rel: &Path) -> Result<PathBuf> {
        let mut dir = self.root.to_path_buf();
        let Some(parent) = rel.parent() else {
            return Ok(dir);
        };
        for part in parent.components() {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.refuse(raw, "parent directory is a symlink"))
                }
                Ok(_) => return Err(self.refuse(raw, "parent is not a directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&dir).map_err(ImageError::io("create directory", &dir))?;
                }
                Err(e) => return Err(ImageError::io("stat", &dir)(e)),
            }
        }
        Ok(dir)
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry
            .path()
            .map_err(|e| archive_error(self.layer, "read entry path", e))?
            .into_owned();
        let rel = self.relative(&raw)?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName
        ) {
            return Ok(());
        }
        let meta = self.entry_meta(entry)?;

        let Some(name) = rel.file_name().map(OsStr::as_bytes) else {
            // The layer root itself ("./").
            if kind.is_dir() {
                self.set_owner_mode_xattrs(self.root, &meta, false)?;
                self.dir_times.push((self.root.to_path_buf(), meta.mtime));
                return Ok(());
            }
            return Err(self.refuse(&raw, "non-directory entry for the layer root"));
        };
        if name == OPAQUE_MARKER {
            let parent = self.prepare_parent(&raw, &rel)?;
            return set_xattr(&parent, OPAQUE_XATTR, b"y");
        }
        if name.starts_with(b".wh..wh.") {
            // Other AUFS bookkeeping entries carry nothing for overlay.
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
                return Err(self.refuse(&raw, "whiteout of an invalid name"));
            }
            let parent = self.prepare_parent(&raw, &rel)?;
            let target = parent.join(OsStr::from_bytes(hidden));
            remove_existing(&target)?;
            return make_node(&target, SFlag::S_IFCHR, 0, 0, 0);
        }

        let parent = self.prepare_parent(&raw, &rel)?;
        let target = parent.join(OsStr::from_bytes(name));
        match kind {
            tar::EntryType::Directory => self.make_dir(target, &meta)?,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.write_file(entry, &target, &meta)?;
            }
            tar::EntryType::Symlink => self.make_symlink(entry, &raw, &target, &meta)?,
            tar::EntryType::Link => self.make_hard_link(entry, &raw, &target)?,
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (major, minor) = (
                    entry.header().device_major().ok().flatten().unwrap_or(0),
                    entry.header().device_minor().ok().flatten().unwrap_or(0),
                );
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                remove_existing(&target)?;
                make_node(&target, sflag, meta.mode, major, minor)?;
                self.set_owner_mode_xattrs(&target, &meta, false)?;
                set_path_mtime(&target, meta.mtime)?;
            }
            other => {
                tracing::debug!(layer = self.layer, entry = %raw.display(), kind = ?other, "skipping tar entry");
            }
        }
        Ok(())
    }

    /// A directory entry: kept if there, replacing anything else; its times are set at the end.
    fn make_dir(&mut self, target: PathBuf, meta: &EntryMeta) -> Result<()> {
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                remove_existing(&target)?;
                create_dir(&target)?;
            }
            Err(_) => create_dir(&target)?,
        }
        self.set_owner_mode_xattrs(&target, meta, false)?;
        self.dir_times.push((target, meta.mtime));
        Ok(())
    }

    /// A regular file entry, written without following a link at `target`.
    fn write_file<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        target: &Path,
        meta: &EntryMeta,
    ) -> Result<()> {
        remove_existing(target)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(target)
            .map_err(ImageError::io("create file", target))?;
        io::copy(entry, &mut file).map_err(|e| archive_error(self.layer, "read file data", e))?;
        if self.chown {
            std::os::unix::fs::fchown(&file, Some(meta.uid), Some(meta.gid))
                .map_err(ImageError::io("chown", target))?;
        }
        file.set_permissions(fs::Permissions::from_mode(meta.mode))
            .map_err(ImageError::io("chmod", target))?;
        for (name, value) in &meta.xattrs {
            set_xattr(target, name, value)?;
        }
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(meta.mtime);
        set_file_times(&file, t).map_err(ImageError::io("set mtime", target))
    }

    /// A symlink entry.
    fn make_symlink<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        raw: &Path,
        target: &Path,
        meta: &EntryMeta,
    ) -> Result<()> {
        let link = entry
            .link_name()
            .map_err(|e| archive_error(self.layer, "read link target", e))?
            .ok_or_else(|| self.refuse(raw, "symlink without target"))?;
        remove_existing(target)?;
        std::os::unix::fs::symlink(&link, target)
            .map_err(ImageError::io("create symlink", target))?;
        self.set_owner_mode_xattrs(target, meta, true)?;
        set_path_mtime(target, meta.mtime)
    }

    /// A hard link entry: its target must be a non-directory this layer already holds.
    fn make_hard_link<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        raw: &Path,
        target: &Path,
    ) -> Result<()> {
        let link = entry
            .link_name()
            .map_err(|e| archive_error(self.layer, "read link target", e))?
            .ok_or_else(|| self.refuse(raw, "hard link without target"))?
            .into_owned();
        let link_rel = self.relative(&link)?;
        if link_rel.as_os_str().is_empty() {
            return Err(self.refuse(raw, "hard link to the layer root"));
        }
        let link_parent = self.prepare_parent(raw, &link_rel)?;
        let source = link_parent.join(link_rel.file_name().unwrap_or_default());
        match fs::symlink_metadata(&source) {
            Ok(m) if !m.is_dir() => {}
            _ => return Err(self.refuse(raw, "hard link target not in this layer")),
        }
        if source != target {
            remove_existing(target)?;
            fs::hard_link(&source, target).map_err(ImageError::io("create hard link", target))?;
        }
        Ok(())
    }

    fn entry_meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<EntryMeta> {
        let header = entry.header();
        let num = |r: io::Result<u64>| r.unwrap_or(0);
        let mut meta = EntryMeta {
            mode: header.mode().unwrap_or(0o644) & 0o7777,
            uid: u32::try_from(num(header.uid())).unwrap_or(0),
            gid: u32::try_from(num(header.gid())).unwrap_or(0),
            mtime: num(header.mtime()),
            xattrs: Vec::new(),
        };
        let pax = entry
            .pax_extensions()
            .map_err(|e| archive_error(self.layer, "read pax header", e))?;
        if let Some(pax) = pax {
            for ext in pax {
                let ext = ext.map_err(|e| archive_error(self.layer, "read pax header", e))?;
                let Ok(key) = ext.key() else { continue };
                let value = ext.value_bytes();
                let as_num = || {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.split('.').next())
                        .and_then(|v| v.parse::<u64>().ok())
                };
                match key {
                    "uid" => {
                        meta.uid = as_num()
                            .and_then(|v| u32::try_from(v).ok())
                            .unwrap_or(meta.uid)
                    }
                    "gid" => {
                        meta.gid = as_num()
                            .and_then(|v| u32::try_from(v).ok())
                            .unwrap_or(meta.gid)
                    }
                    "mtime" => meta.mtime = as_num().unwrap_or(meta.mtime),
                    _ => {
                        if let Some(name) = key.strip_prefix(XATTR_PAX_PREFIX) {
                            // Overlay's own xattrs are the runtime's to set, never the image's.
                            if !name.starts_with("trusted.overlay.") {
                                meta.xattrs.push((name.to_string(), value.to_vec()));
                            }
                        }
                    }
                }
            }
        }
        Ok(meta)
    }

    fn set_owner_mode_xattrs(&self, path: &Path, meta: &EntryMeta, symlink: bool) -> Result<()> {
        if self.chown {
            std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))
                .map_err(ImageError::io("chown", path))?;
        }
        if !symlink {
            fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))
                .map_err(ImageError::io("chmod", path))?;
        }
        for (name, value) in &meta.xattrs {
            set_xattr(path, name, value)?;
        }
        Ok(())
    }

    /// Sets directory mtimes, deepest first, now that nothing more is written into them.
    fn finish(&mut self) -> Result<()> {
        for (dir, mtime) in self.dir_times.drain(..).rev() {
            set_path_mtime(&dir, mtime)?;
        }
        Ok(())
    }
}

fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir(path).map_err(ImageError::io("create directory", path))
}

/// Removes whatever is at `path` (a later entry replaces an earlier one).
fn remove_existing(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(ImageError::io("remove", path)),
        Ok(_) => fs::remove_file(path).map_err(ImageError::io("remove", path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io("stat", path)(e)),
    }
}

fn make_node(path: &Path, kind: SFlag, mode: u32, major: u32, minor: u32) -> Result<()> {
    let dev = makedev(u64::from(major), u64::from(minor));
    mknod(path, kind, Mode::from_bits_truncate(mode), dev).map_err(|e| ImageError::Io {
        op: "mknod",
        path: path.to_path_buf(),
        source: e.into(),
    })
}

fn set_file_times(file: &File, t: SystemTime) -> io::Result<()> {
    file.set_times(FileTimes::new().set_accessed(t).set_modified(t))
}

fn set_path_mtime(path: &Path, mtime: u64) -> Result<()> {
    let secs = i64::try_from(mtime).unwrap_or(i64::MAX);
    let t = TimeSpec::new(secs, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| ImageError::Io {
        op: "set mtime",
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// Sets an extended attribute on `path` itself (not a symlink's target).
pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    let io_err = |source: io::Error| ImageError::Io {
        op: "set xattr",
        path: path.to_path_buf(),
        source,
    };
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io_err(io::ErrorKind::InvalidInput.into()))?;
    let c_name = CString::new(name).map_err(|_| io_err(io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: both strings are NUL-terminated and outlive the call; `value` is a valid slice
    // of `value.len()` bytes.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io_err(io::Error::last_os_error()));
    }
    Ok(())
}

/// Reads an extended attribute of `path` itself; `None` when it is not set.
pub fn get_xattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let io_err = |source: io::Error| ImageError::Io {
        op: "get xattr",
        path: path.to_path_buf(),
        source,
    };
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io_err(io::ErrorKind::InvalidInput.into()))?;
    let c_name = CString::new(name).map_err(|_| io_err(io::ErrorKind::InvalidInput.into()))?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated and outlive the call; `buf` is writable for
    // `buf.len()` bytes.
    let rc = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENODATA) {
            return Ok(None);
        }
        return Err(io_err(err));
    }
    buf.truncate(usize::try_from(rc).unwrap_or(0));
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// A tar builder that writes raw names (the `tar` crate's path setters refuse `..`).
    struct Layer(tar::Builder<Vec<u8>>);

    impl Layer {
        fn new() -> Self {
            Layer(tar::Builder::new(Vec::new()))
        }
        fn header(kind: tar::EntryType, name: &str, mode: u32) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_mode(mode);
            h.set_uid(1000);
            h.set_gid(1001);
            h.set_mtime(1_000_000);
            h.set_size(0);
            h
        }
        fn dir(mut self, name: &str) -> Self {
            let mut h = Self::header(tar::EntryType::Directory, name, 0o750);
            h.set_cksum();
            self.0.append(&h, io::empty()).unwrap();
            self
        }
        fn file(mut self, name: &str, data: &[u8]) -> Self {
            let mut h = Self::header(tar::EntryType::Regular, name, 0o4755);
            h.set_size(data.len() as u64);
            h.set_cksum();
            self.0.append(&h, data).unwrap();
            self
        }
        fn link(mut self, kind: tar::EntryType, name: &str, target: &str) -> Self {
            let mut h = Self::header(kind, name, 0o777);
            h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
            h.set_cksum();
            self.0.append(&h, io::empty()).unwrap();
            self
        }
        fn node(mut self, kind: tar::EntryType, name: &str) -> Self {
            let mut h = Self::header(kind, name, 0o600);
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
            h.set_cksum();
            self.0.append(&h, io::empty()).unwrap();
            self
        }
        fn tar(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<UnpackedLayer>) {
        let dir = tempfile::tempdir().unwrap();
        let res = unpack_layer(bytes, dir.path(), "test-layer", None);
        (dir, res)
    }

    #[test]
    fn sniffs_compression() {
        assert_eq!(sniff_compression(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            sniff_compression(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(sniff_compression(b"etc/"), Compression::None);
    }

    #[test]
    fn digests_of_plain_gzip_and_zstd_blobs() {
        let tar = Layer::new().file("a", b"hello").tar();
        let diff_id = Digest::of(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        for blob in [tar.clone(), gz, zst] {
            let (dir, res) = unpack(&blob);
            let res = res.unwrap();
            assert_eq!(res.diff_id, diff_id);
            assert_eq!(res.digest, Digest::of(&blob));
            assert_eq!(res.size, blob.len() as u64);
            assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"hello");
        }
    }

    /// A zstd stream of `len` zero bytes as one tar file entry: thousands of times smaller than
    /// it unpacks.
    fn zstd_bomb(len: u64) -> Vec<u8> {
        let mut zst = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        {
            let mut builder = tar::Builder::new(&mut zst);
            let mut h = Layer::header(tar::EntryType::Regular, "zeros", 0o644);
            h.set_size(len);
            h.set_cksum();
            builder.append(&h, io::repeat(0).take(len)).unwrap();
            builder.finish().unwrap();
        }
        zst.finish().unwrap()
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_it_is_unpacked() {
        let blob = zstd_bomb(RATIO_SLACK * 2);
        let (dir, res) = unpack(&blob);
        assert!(
            matches!(res, Err(ImageError::DecompressionBomb { .. })),
            "{res:?}"
        );
        assert_eq!(
            res.unwrap_err().kind(),
            crate::ErrorKind::FailedPrecondition
        );
        let written = fs::metadata(dir.path().join("zeros")).map_or(0, |m| m.len());
        assert!(
            written <= ratio_limit(blob.len() as u64),
            "{written} bytes written"
        );
    }

    #[test]
    fn a_compressible_layer_within_the_slack_is_unpacked() {
        let (dir, res) = unpack(&zstd_bomb(1 << 20));
        res.unwrap();
        assert_eq!(
            fs::metadata(dir.path().join("zeros")).unwrap().len(),
            1 << 20
        );
    }

    #[test]
    fn absolute_paths_land_inside_the_layer() {
        let outside = tempfile::tempdir().unwrap();
        let name = format!("{}/abs", outside.path().display());
        let (dir, res) = unpack(&Layer::new().file(&name, b"x").tar());
        res.unwrap();
        assert!(!outside.path().join("abs").exists());
        let inside = dir.path().join(name.trim_start_matches('/'));
        assert_eq!(fs::read(inside).unwrap(), b"x");
    }

    #[test]
    fn hard_links_through_symlinks_out_of_the_layer_are_refused() {
        let tar = Layer::new()
            .link(tar::EntryType::Symlink, "etc", "/etc")
            .link(tar::EntryType::Link, "shadow", "etc/passwd")
            .tar();
        let (dir, res) = unpack(&tar);
        assert!(
            matches!(res, Err(ImageError::UnsafeLayerEntry { .. })),
            "{res:?}"
        );
        assert!(!dir.path().join("shadow").exists());
    }

    #[test]
    fn refuses_parent_components() {
        let (_dir, res) = unpack(&Layer::new().file("../evil", b"x").tar());
        let err = res.unwrap_err();
        assert!(matches!(err, ImageError::UnsafeLayerEntry { .. }), "{err}");
        let (_dir, res) = unpack(&Layer::new().file("a/../../evil", b"x").tar());
        assert!(matches!(res, Err(ImageError::UnsafeLayerEntry { .. })));
    }

    #[test]
    fn refuses_writing_through_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_string();
        let tar = Layer::new()
            .link(tar::EntryType::Symlink, "esc", &target)
            .file("esc/pwned", b"x")
            .tar();
        let (_dir, res) = unpack(&tar);
        assert!(
            matches!(res, Err(ImageError::UnsafeLayerEntry { .. })),
            "{res:?}"
        );
        assert!(!outside.path().join("pwned").exists());
    }

    #[test]
    fn refuses_hard_links_leaving_the_layer() {
        let tar = Layer::new()
            .link(tar::EntryType::Link, "passwd", "../../etc/passwd")
            .tar();
        let (_dir, res) = unpack(&tar);
        assert!(
            matches!(res, Err(ImageError::UnsafeLayerEntry { .. })),
            "{res:?}"
        );
        // An absolute target is read inside the layer, where it does not exist.
        let tar = Layer::new()
            .link(tar::EntryType::Link, "passwd", "/etc/passwd")
            .tar();
        let (dir, res) = unpack(&tar);
        assert!(
            matches!(res, Err(ImageError::UnsafeLayerEntry { .. })),
            "{res:?}"
        );
        assert!(!dir.path().join("passwd").exists());
    }

    #[test]
    fn keeps_links_modes_and_mtimes() {
        let tar = Layer::new()
            .dir("bin/")
            .file("bin/busybox", b"elf")
            .link(tar::EntryType::Link, "bin/sh", "bin/busybox")
            .link(tar::EntryType::Symlink, "bin/ls", "/bin/busybox")
            .tar();
        let (dir, res) = unpack(&tar);
        res.unwrap();
        let bin = dir.path().join("bin");
        let bb = fs::metadata(bin.join("busybox")).unwrap();
        assert_eq!(bb.nlink(), 2);
        assert_eq!(bb.ino(), fs::metadata(bin.join("sh")).unwrap().ino());
        assert_eq!(bb.mode() & 0o7777, 0o4755);
        assert_eq!(bb.mtime(), 1_000_000);
        assert_eq!(
            fs::read_link(bin.join("ls")).unwrap(),
            Path::new("/bin/busybox")
        );
        let d = fs::metadata(&bin).unwrap();
        assert_eq!(d.mode() & 0o7777, 0o750);
        assert_eq!(d.mtime(), 1_000_000);
        if is_root() {
            assert_eq!((bb.uid(), bb.gid()), (1000, 1001));
        }
    }

    #[test]
    fn whiteouts_devices_fifos_and_opaque_dirs() {
        if !is_root() {
            eprintln!("skipping: whiteouts and device nodes need root (mknod, trusted xattrs)");
            return;
        }
        let tar = Layer::new()
            .file("etc/.wh.motd", b"")
            .dir("var/")
            .file("var/.wh..wh..opq", b"")
            .node(tar::EntryType::Char, "dev/null")
            .node(tar::EntryType::Fifo, "run/fifo")
            .tar();
        let (dir, res) = unpack(&tar);
        res.unwrap();
        let wh = fs::symlink_metadata(dir.path().join("etc/motd")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert!(!dir.path().join("etc/.wh.motd").exists());
        let opaque = get_xattr(&dir.path().join("var"), OPAQUE_XATTR).unwrap();
        assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
        assert!(!dir.path().join("var/.wh..wh..opq").exists());
        let null = fs::symlink_metadata(dir.path().join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), makedev(1, 3));
        assert!(fs::symlink_metadata(dir.path().join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
    }

    #[test]
    fn whiteout_of_dotdot_is_refused() {
        let (_dir, res) = unpack(&Layer::new().file("a/.wh...", b"").tar());
        assert!(
            matches!(res, Err(ImageError::UnsafeLayerEntry { .. })),
            "{res:?}"
        );
    }

    #[test]
    fn size_limit_is_enforced() {
        let tar = Layer::new().file("a", b"hello").tar();
        let dir = tempfile::tempdir().unwrap();
        let err = unpack_layer(&tar[..], dir.path(), "l", Some(100)).unwrap_err();
        assert!(matches!(err, ImageError::SizeMismatch { .. }), "{err}");
    }

    #[test]
    fn disk_usage_counts_hard_links_once() {
        let tar = Layer::new()
            .file("a", &[7u8; 10000])
            .link(tar::EntryType::Link, "b", "a")
            .tar();
        let (dir, res) = unpack(&tar);
        res.unwrap();
        let usage = disk_usage(dir.path()).unwrap();
        assert_eq!(usage.inodes, 2);
        assert!(usage.bytes >= 10000);
    }
}
