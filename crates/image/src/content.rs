//! Content-addressed blobs (manifests, indexes, configs) under `<root>/content/sha256/<hex>`.
//!
//! Blobs are written to `<root>/content/ingest/` and renamed into place, so a blob file is
//! always complete; the ingest directory is emptied at start-up.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::Digest;
use crate::error::{ImageError, Result};

/// The blob directory and its ingest area.
#[derive(Debug)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A name no other temporary file of this process uses.
pub(crate) fn unique_suffix() -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

impl ContentStore {
    /// Opens (creating) the content store under `dir`, removing leftovers of interrupted writes.
    pub fn open(dir: &Path) -> Result<Self> {
        let blobs = dir.join("sha256");
        let ingest = dir.join("ingest");
        fs::create_dir_all(&blobs).map_err(ImageError::io("create directory", &blobs))?;
        if ingest.exists() {
            fs::remove_dir_all(&ingest)
                .map_err(ImageError::io("clean ingest directory", &ingest))?;
        }
        fs::create_dir_all(&ingest).map_err(ImageError::io("create directory", &ingest))?;
        Ok(ContentStore { blobs, ingest })
    }

    /// The directory for temporary files (imports unpack archives here).
    pub fn ingest_dir(&self) -> &Path {
        &self.ingest
    }

    /// The path of a blob.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Reads a blob; `None` if absent.
    pub fn read(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        let path = self.path(digest);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io("read blob", path)(e)),
        }
    }

    /// Stores `bytes` under `digest` after checking they hash to it.
    pub fn write(&self, what: &'static str, digest: &Digest, bytes: &[u8]) -> Result<()> {
        digest.verify(what, bytes)?;
        let path = self.path(digest);
        if path.is_file() {
            return Ok(());
        }
        let tmp = self
            .ingest
            .join(format!("{}-{}", digest.hex(), unique_suffix()));
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(ImageError::io("write blob", path)(e));
        }
        Ok(())
    }

    /// Removes a blob if present.
    pub fn remove(&self, digest: &Digest) -> Result<()> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(ImageError::io("remove blob", path)(e))
            }
            _ => Ok(()),
        }
    }

    /// Every blob present, with its size.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs).map_err(ImageError::io("list blobs", &self.blobs))? {
            let entry = entry.map_err(ImageError::io("list blobs", &self.blobs))?;
            let name = entry.file_name();
            let Some(digest) = name
                .to_str()
                .and_then(|n| Digest::parse(&format!("sha256:{n}")).ok())
            else {
                continue;
            };
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((digest, size));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn write_read_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of(b"abc");
        assert!(store.read(&d).unwrap().is_none());
        store.write("blob", &d, b"abc").unwrap();
        assert_eq!(store.read(&d).unwrap().unwrap(), b"abc");
        assert_eq!(store.list().unwrap(), vec![(d.clone(), 3)]);
        store.remove(&d).unwrap();
        assert!(store.read(&d).unwrap().is_none());
    }

    #[test]
    fn refuses_content_that_does_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let err = store
            .write("blob", &Digest::of(b"abc"), b"abd")
            .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }));
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn open_empties_ingest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        fs::write(store.ingest_dir().join("partial"), b"x").unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
    }
}
