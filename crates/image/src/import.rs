//! Importing images without a registry: an OCI image layout directory, or a tar archive
//! (optionally gzip/zstd-compressed) of an OCI layout or of `docker save` output.
//!
//! Everything is checked as in a pull: blobs against their digests where the format gives them,
//! every layer against the config's DiffIDs, and entries against escaping paths.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::content::unique_suffix;
use crate::digest::{chain_ids, digest_strings, Digest};
use crate::error::{ImageError, Result};
use crate::media::{host_platform, ConfigDoc, Descriptor, ManifestDoc, ManifestKind};
use crate::media::{Compression, MAX_CONFIG_SIZE, MAX_LAYERS};
use crate::pull::{check_layers, verify_layer};
use crate::reference::Reference;
use crate::store::{ImageRecord, ImageStore, Inner, LayerRecord, TempDir};
use crate::unpack::{disk_usage, sniff_compression, unpack_layer};

/// Annotation holding an image's full name in OCI layouts written by containerd and docker.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation holding a reference name (a full name, or just a tag).
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One image found in the archive, before it is stored.
#[derive(Debug)]
struct Candidate {
    names: Vec<String>,
    config: Vec<u8>,
    manifest: Option<(Digest, Vec<u8>)>,
    layers: Vec<LayerSource>,
}

#[derive(Debug)]
struct LayerSource {
    path: PathBuf,
    /// The descriptor, when the format records one (OCI); `docker save` does not.
    descriptor: Option<Descriptor>,
}

impl ImageStore {
    /// Imports every image in `path` (see the module docs) and returns them as stored.
    pub async fn import(&self, path: &Path) -> Result<Vec<ImageRecord>> {
        let inner = self.inner.clone();
        let path = path.to_path_buf();
        let result = tokio::task::spawn_blocking(move || import_blocking(&inner, &path))
            .await
            .map_err(|e| ImageError::Task(format!("import: {e}")))?;
        if result.is_err() {
            let store = self.clone();
            let _ = tokio::task::spawn_blocking(move || store.collect_garbage()).await;
        }
        result
    }
}

fn import_err(path: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::Import {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn import_blocking(inner: &Arc<Inner>, path: &Path) -> Result<Vec<ImageRecord>> {
    let meta = fs::metadata(path).map_err(|e| import_err(path, format!("cannot read: {e}")))?;
    // An archive is extracted into the ingest area first; the guard removes it.
    let (_extracted, dir) = if meta.is_dir() {
        (None, path.to_path_buf())
    } else {
        let tmp = TempDir(Some(
            inner
                .content
                .ingest_dir()
                .join(format!("import-{}", unique_suffix())),
        ));
        fs::create_dir(tmp.path()).map_err(ImageError::io("create directory", tmp.path()))?;
        extract_archive(path, tmp.path())?;
        let dir = tmp.path().to_path_buf();
        (Some(tmp), dir)
    };
    let candidates = if dir.join("manifest.json").is_file() {
        docker_save_candidates(path, &dir)?
    } else if dir.join("index.json").is_file() {
        oci_layout_candidates(path, &dir)?
    } else {
        return Err(import_err(
            path,
            "neither an OCI layout (index.json) nor docker save output (manifest.json)",
        ));
    };
    if candidates.is_empty() {
        return Err(import_err(path, "no images inside"));
    }
    candidates
        .into_iter()
        .map(|c| store_candidate(inner, path, &dir, c))
        .collect()
}

/// Extracts a (possibly compressed) tar archive with the `tar` crate's path checks.
fn extract_archive(archive: &Path, dest: &Path) -> Result<()> {
    let file = fs::File::open(archive).map_err(ImageError::io("open", archive))?;
    let mut reader = BufReader::new(file);
    let head = reader.fill_buf().map_err(ImageError::io("read", archive))?;
    let decoded: Box<dyn Read> = match sniff_compression(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(ImageError::io("read", archive))?,
        ),
        Compression::None => Box::new(reader),
    };
    let mut tar = tar::Archive::new(decoded);
    tar.set_preserve_permissions(false);
    tar.set_unpack_xattrs(false);
    tar.unpack(dest)
        .map_err(|e| import_err(archive, format!("not a readable tar archive: {e}")))
}

/// A file inside the extracted archive, refusing names that leave it.
fn inside(archive: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    let rel = Path::new(name);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(import_err(
            archive,
            format!("path {name:?} leaves the archive"),
        ));
    }
    Ok(dir.join(rel))
}

/// Opens a regular file of the extracted archive: one that resolves inside `dir` (an archive
/// may hold symlinks to anywhere, `/dev/zero` among them).
fn open_inside(archive: &Path, dir: &Path, path: &Path) -> Result<fs::File> {
    let leaves = || {
        import_err(
            archive,
            format!(
                "{} is not a regular file inside the archive",
                path.strip_prefix(dir).unwrap_or(path).display()
            ),
        )
    };
    let root = dir.canonicalize().map_err(ImageError::io("resolve", dir))?;
    let resolved = path
        .canonicalize()
        .map_err(ImageError::io("resolve", path))?;
    if !resolved.starts_with(&root) {
        return Err(leaves());
    }
    let file = fs::File::open(&resolved).map_err(ImageError::io("open", path))?;
    let meta = file.metadata().map_err(ImageError::io("stat", path))?;
    if !meta.is_file() {
        return Err(leaves());
    }
    Ok(file)
}

/// Reads a metadata file (manifest, index, config) of the archive, refusing one larger than
/// any real one ([`MAX_CONFIG_SIZE`]).
fn read_file(archive: &Path, dir: &Path, path: &Path) -> Result<Vec<u8>> {
    let file = open_inside(archive, dir, path)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(ImageError::io("read", path))?;
    if bytes.len() as u64 > MAX_CONFIG_SIZE {
        return Err(import_err(
            archive,
            format!(
                "{} is larger than the {MAX_CONFIG_SIZE} bytes allowed",
                path.strip_prefix(dir).unwrap_or(path).display()
            ),
        ));
    }
    Ok(bytes)
}

/// `docker save`: `manifest.json` lists `{Config, RepoTags, Layers}` per image.
fn docker_save_candidates(archive: &Path, dir: &Path) -> Result<Vec<Candidate>> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let bytes = read_file(archive, dir, &dir.join("manifest.json"))?;
    let entries: Vec<Entry> = serde_json::from_slice(&bytes)
        .map_err(|e| import_err(archive, format!("manifest.json: {e}")))?;
    entries
        .into_iter()
        .map(|e| {
            Ok(Candidate {
                names: e.repo_tags.unwrap_or_default(),
                config: read_file(archive, dir, &inside(archive, dir, &e.config)?)?,
                manifest: None,
                layers: e
                    .layers
                    .iter()
                    .map(|l| {
                        Ok(LayerSource {
                            path: inside(archive, dir, l)?,
                            descriptor: None,
                        })
                    })
                    .collect::<Result<_>>()?,
            })
        })
        .collect()
}

/// An OCI image layout: `index.json` → manifests (or nested indexes) → `blobs/sha256/<hex>`.
fn oci_layout_candidates(archive: &Path, dir: &Path) -> Result<Vec<Candidate>> {
    let blob = |d: &Digest| dir.join("blobs/sha256").join(d.hex());
    let read_verified = |d: &Digest, what: &'static str| -> Result<Vec<u8>> {
        let bytes = read_file(archive, dir, &blob(d))?;
        d.verify(what, &bytes)?;
        Ok(bytes)
    };
    let index_bytes = read_file(archive, dir, &dir.join("index.json"))?;
    #[derive(serde::Deserialize)]
    struct Index {
        manifests: Vec<AnnotatedDescriptor>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct AnnotatedDescriptor {
        #[serde(flatten)]
        descriptor: Descriptor,
        #[serde(default)]
        annotations: std::collections::BTreeMap<String, String>,
    }
    let index: Index = serde_json::from_slice(&index_bytes)
        .map_err(|e| import_err(archive, format!("index.json: {e}")))?;
    let mut out = Vec::new();
    for entry in index.manifests {
        let names: Vec<String> = [CONTAINERD_NAME, OCI_REF_NAME]
            .iter()
            .filter_map(|k| entry.annotations.get(*k))
            .filter(|n| n.contains('/') || n.contains(':'))
            .filter(|n| Reference::parse(n).is_ok())
            .take(1)
            .cloned()
            .collect();
        let mut desc = entry.descriptor;
        let mut bytes = read_verified(&desc.digest, "manifest")?;
        let top_digest = desc.digest.clone();
        let (mut doc, mut kind) = ManifestDoc::parse(&bytes, Some(&desc.media_type), &desc.digest)?;
        if kind == ManifestKind::Index {
            let platform = host_platform();
            desc = doc.select_platform(&platform).cloned().ok_or_else(|| {
                ImageError::NoMatchingPlatform {
                    reference: archive.display().to_string(),
                    platform: format!("{}/{}", platform.os, platform.architecture),
                    digest: top_digest.to_string(),
                }
            })?;
            bytes = read_verified(&desc.digest, "manifest")?;
            (doc, kind) = ManifestDoc::parse(&bytes, Some(&desc.media_type), &desc.digest)?;
            if kind != ManifestKind::Manifest {
                return Err(import_err(archive, "nested index"));
            }
        }
        let Some(config_desc) = doc.config.clone() else {
            return Err(import_err(archive, "manifest without config"));
        };
        out.push(Candidate {
            names,
            config: read_verified(&config_desc.digest, "image config")?,
            manifest: Some((desc.digest.clone(), bytes)),
            layers: doc
                .layers
                .iter()
                .map(|l| LayerSource {
                    path: blob(&l.digest),
                    descriptor: Some(l.clone()),
                })
                .collect(),
        });
    }
    Ok(out)
}

fn store_candidate(
    inner: &Arc<Inner>,
    archive: &Path,
    dir: &Path,
    c: Candidate,
) -> Result<ImageRecord> {
    let config_digest = Digest::of(&c.config);
    let config = ConfigDoc::parse(&c.config, &config_digest)?;
    let manifest_digest = c
        .manifest
        .as_ref()
        .map(|(d, _)| d.clone())
        .unwrap_or_else(|| config_digest.clone());
    check_candidate_layers(archive, &c.layers, &config, &manifest_digest)?;
    let chain = chain_ids(&config.rootfs.diff_ids);
    let mut pins = inner.pin(
        [config_digest.to_string()]
            .into_iter()
            .chain(c.manifest.as_ref().map(|(d, _)| d.to_string())),
    );
    pins.add(chain.iter().map(Digest::to_string));
    let mut blob_size = 0;
    for (i, (layer, (diff_id, chain_id))) in c
        .layers
        .iter()
        .zip(config.rootfs.diff_ids.iter().zip(&chain))
        .enumerate()
    {
        let _guard = inner.layer_lock_blocking(chain_id.as_str());
        blob_size += match &layer.descriptor {
            Some(d) => d.size,
            None => fs::metadata(&layer.path).map(|m| m.len()).unwrap_or(0),
        };
        if inner.has_layer(chain_id.as_str()) {
            continue;
        }
        let parent = i.checked_sub(1).map(|p| chain[p].to_string());
        import_layer(inner, (archive, dir), layer, (diff_id, chain_id), parent)?;
    }
    inner
        .content
        .write("image config", &config_digest, &c.config)?;
    let mut blobs = vec![config_digest.to_string()];
    if let Some((digest, bytes)) = &c.manifest {
        inner.content.write("manifest", digest, bytes)?;
        blobs.push(digest.to_string());
    }
    let (repo_tags, repo_digests) = repo_names(&c)?;
    let record = ImageRecord {
        id: config_digest.to_string(),
        repo_tags,
        repo_digests,
        size: c.config.len() as u64 + blob_size,
        config: config.image_config(),
        chain_ids: digest_strings(&chain),
        diff_ids: digest_strings(&config.rootfs.diff_ids),
        manifest_digest: manifest_digest.to_string(),
        blobs,
        pinned: false,
        created: config.created.clone(),
    };
    let names = record.names();
    let stored = inner.commit_image(record, &names)?;
    drop(pins);
    Ok(stored)
}

/// The candidate's layers agree with its config: not too many, one per diff_id, and (when
/// every layer has a descriptor) the descriptors with the manifest.
fn check_candidate_layers(
    archive: &Path,
    layers: &[LayerSource],
    config: &ConfigDoc,
    manifest_digest: &Digest,
) -> Result<()> {
    if layers.len() > MAX_LAYERS {
        return Err(import_err(
            archive,
            format!(
                "{} layers; corral takes images of at most {MAX_LAYERS}",
                layers.len()
            ),
        ));
    }
    if layers.len() != config.rootfs.diff_ids.len() {
        return Err(import_err(
            archive,
            format!(
                "{} layers but the config lists {} diff_ids",
                layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    let descriptors: Vec<Descriptor> = layers.iter().filter_map(|l| l.descriptor.clone()).collect();
    if descriptors.len() == layers.len() {
        check_layers(config, &descriptors, manifest_digest)?;
    }
    Ok(())
}

/// Unpacks `layer` from the archive (`archive` unpacked in `dir`), checks it against its
/// descriptor or its diff_id, and installs it under its chain id (`ids`: diff_id, chain id).
fn import_layer(
    inner: &Arc<Inner>,
    (archive, dir): (&Path, &Path),
    layer: &LayerSource,
    (diff_id, chain_id): (&Digest, &Digest),
    parent: Option<String>,
) -> Result<()> {
    let file = open_inside(archive, dir, &layer.path)?;
    let tmp = inner.temp_layer_dir()?;
    let name = layer
        .descriptor
        .as_ref()
        .map(|d| d.digest.to_string())
        .unwrap_or_else(|| layer.path.display().to_string());
    let max = layer.descriptor.as_ref().map(|d| d.size);
    let unpacked = unpack_layer(file, tmp.path(), &name, max)?;
    match &layer.descriptor {
        Some(desc) => verify_layer(desc, diff_id, &unpacked)?,
        None if &unpacked.diff_id != diff_id => {
            return Err(ImageError::DigestMismatch {
                what: "uncompressed layer",
                expected: diff_id.to_string(),
                actual: unpacked.diff_id.to_string(),
            })
        }
        None => {}
    }
    let record = LayerRecord {
        chain_id: chain_id.to_string(),
        diff_id: diff_id.to_string(),
        parent,
        blob_size: unpacked.size,
        usage: disk_usage(tmp.path())?,
    };
    inner.install_layer(tmp, record)
}

/// The candidate's names as repo tags and repo digests (a name by tag also by the manifest's
/// digest).
fn repo_names(c: &Candidate) -> Result<(Vec<String>, Vec<String>)> {
    let mut repo_tags = Vec::new();
    let mut repo_digests = Vec::new();
    for name in &c.names {
        let r = Reference::parse(name)?;
        match r.tagged_name() {
            Some(tagged) => repo_tags.push(tagged),
            None => repo_digests.push(r.to_string()),
        }
        if let Some((digest, _)) = &c.manifest {
            repo_digests.push(r.digested_name(digest));
        }
    }
    repo_digests.dedup();
    Ok((repo_tags, repo_digests))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn files_resolving_out_of_the_archive_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Path::new("hostile.tar");
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("manifest.json")).unwrap();
        let err = docker_save_candidates(archive, dir.path()).unwrap_err();
        assert!(matches!(err, ImageError::Import { .. }), "{err}");

        std::fs::remove_file(dir.path().join("manifest.json")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("index.json")).unwrap();
        let err = oci_layout_candidates(archive, dir.path()).unwrap_err();
        assert!(matches!(err, ImageError::Import { .. }), "{err}");
    }

    #[test]
    fn oversized_metadata_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = fs::File::create(dir.path().join("manifest.json")).unwrap();
        big.set_len(MAX_CONFIG_SIZE + 1).unwrap();
        let err = docker_save_candidates(Path::new("big.tar"), dir.path()).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }
}
