//! Pulling an image: resolve the manifest (through mirrors), fetch the config, fetch and unpack
//! the layers not yet present, then record the image in one transaction.
//!
//! Requests for the same reference (with the same credentials) while a pull runs join it: the
//! pull runs once, in its own task, and every request gets its outcome. Layers are unpacked
//! under a per-layer lock, so two images sharing a layer fetch it once.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use tokio_util::io::SyncIoBridge;

use crate::config::AuthConfig;
use crate::digest::{chain_ids, digest_strings, Digest};
use crate::error::{ImageError, Result};
use crate::media::{
    host_platform, layer_compression, ConfigDoc, Descriptor, ManifestDoc, ManifestKind,
    MAX_CONFIG_SIZE, MAX_LAYERS,
};
use crate::reference::Reference;
use crate::registry::{Credentials, Session};
use crate::store::{lock, ImageRecord, ImageStore, Inner, LayerRecord, TempDir};
use crate::unpack::{disk_usage, unpack_layer, DiskUsage, UnpackedLayer};

/// Layers fetched at once by one pull.
const LAYER_CONCURRENCY: usize = 3;

impl ImageStore {
    /// Pulls `reference` (normalised like kubelet does) and returns the stored image. `auth`
    /// holds the request's credentials, if any.
    pub async fn pull(&self, reference: &str, auth: Option<&AuthConfig>) -> Result<ImageRecord> {
        let reference = Reference::parse(reference)?;
        let fingerprint = auth
            .and_then(Credentials::from_auth_config)
            .map(|c| c.fingerprint())
            .unwrap_or_default();
        let key = format!("{reference}#{fingerprint}");
        let pull = {
            let mut inflight = lock(&self.inner.inflight);
            match inflight.get(&key) {
                Some(running) => {
                    tracing::debug!(%reference, "joining a pull in progress");
                    running.clone()
                }
                None => {
                    let inner = self.inner.clone();
                    let auth = auth.cloned();
                    let task_key = key.clone();
                    let task = tokio::spawn(async move {
                        let out = inner.pull_image(&reference, auth.as_ref()).await;
                        if out.is_err() {
                            // Free what the failed pull stored and nothing else uses.
                            let gc = inner.clone();
                            let freed =
                                tokio::task::spawn_blocking(move || gc.collect_garbage()).await;
                            if let Ok(Err(e)) = freed {
                                tracing::warn!(error = %e, "cleanup after failed pull");
                            }
                        }
                        lock(&inner.inflight).remove(&task_key);
                        out.map_err(Arc::new)
                    });
                    let weak = Arc::downgrade(&self.inner);
                    let shared_key = key.clone();
                    let shared = async move {
                        task.await.unwrap_or_else(|e| {
                            // The task died before clearing its entry; clear it here so the
                            // next request starts afresh.
                            if let Some(inner) = weak.upgrade() {
                                lock(&inner.inflight).remove(&shared_key);
                            }
                            Err(Arc::new(ImageError::Task(format!("pull task failed: {e}"))))
                        })
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key, shared.clone());
                    shared
                }
            }
        };
        pull.await.map_err(|e| match Arc::try_unwrap(e) {
            Ok(e) => e,
            Err(shared) => ImageError::Joined(shared),
        })
    }
}

impl Inner {
    async fn pull_image(
        self: &Arc<Self>,
        reference: &Reference,
        auth: Option<&AuthConfig>,
    ) -> Result<ImageRecord> {
        tracing::info!(%reference, "pulling image");
        let (session, top) = self.registry.resolve(reference, auth).await?;
        let (top_doc, kind) =
            ManifestDoc::parse(&top.bytes, top.media_type.as_deref(), &top.digest)?;
        let mut blobs = vec![(top.digest.clone(), top.bytes.clone())];
        let (manifest, manifest_digest) = match kind {
            ManifestKind::Manifest => (top_doc, top.digest.clone()),
            ManifestKind::Index => {
                let (doc, bytes, digest) =
                    platform_manifest(&session, reference, &top_doc, &top.digest).await?;
                blobs.push((digest.clone(), bytes));
                (doc, digest)
            }
        };
        let config_desc = manifest
            .config
            .clone()
            .ok_or_else(|| ImageError::InvalidContent {
                what: "manifest",
                digest: manifest_digest.to_string(),
                reason: "no config descriptor".into(),
            })?;
        let mut pins = self.pin(
            blobs
                .iter()
                .map(|(d, _)| d.to_string())
                .chain([config_desc.digest.to_string()]),
        );
        let config_bytes = self.config_bytes(&session, &config_desc).await?;
        let config = ConfigDoc::parse(&config_bytes, &config_desc.digest)?;
        let layers = check_layers(&config, &manifest.layers, &manifest_digest)?;
        let chain = chain_ids(&config.rootfs.diff_ids);
        pins.add(chain.iter().map(Digest::to_string));

        self.ensure_layers(&session, &manifest.layers, &config.rootfs.diff_ids, &chain)
            .await?;

        for (digest, bytes) in &blobs {
            self.content.write("manifest", digest, bytes)?;
        }
        let record = ImageRecord {
            id: config_desc.digest.to_string(),
            repo_tags: reference.tagged_name().into_iter().collect(),
            repo_digests: vec![reference.digested_name(&top.digest)],
            size: config_desc.size + layers.iter().map(|l| l.size).sum::<u64>(),
            config: config.image_config(),
            chain_ids: digest_strings(&chain),
            diff_ids: digest_strings(&config.rootfs.diff_ids),
            manifest_digest: manifest_digest.to_string(),
            blobs: blobs
                .iter()
                .map(|(d, _)| d.to_string())
                .chain([config_desc.digest.to_string()])
                .collect(),
            pinned: false,
            created: config.created.clone(),
        };
        let names = record.names();
        let inner = self.clone();
        let stored = tokio::task::spawn_blocking(move || inner.commit_image(record, &names))
            .await
            .map_err(|e| ImageError::Task(format!("commit image: {e}")))??;
        drop(pins);
        tracing::info!(%reference, image = %stored.id, "pulled image");
        Ok(stored)
    }

    /// The image config: from the content store, or fetched and stored.
    async fn config_bytes(
        self: &Arc<Self>,
        session: &Session<'_>,
        config_desc: &Descriptor,
    ) -> Result<Vec<u8>> {
        if let Some(bytes) = self.content.read(&config_desc.digest)? {
            return Ok(bytes);
        }
        let bytes = session
            .fetch_blob("image config", config_desc, MAX_CONFIG_SIZE)
            .await?;
        self.content
            .write("image config", &config_desc.digest, &bytes)?;
        Ok(bytes.to_vec())
    }

    /// Fetches and unpacks the layers not yet present, some at once. Every layer job runs to
    /// its end, even after one failed, so that no unpack is still writing when the pull
    /// reports its error.
    async fn ensure_layers(
        self: &Arc<Self>,
        session: &Session<'_>,
        layers: &[Descriptor],
        diff_ids: &[Digest],
        chain: &[Digest],
    ) -> Result<()> {
        let mut jobs: Vec<BoxFuture<'_, Result<()>>> = Vec::with_capacity(chain.len());
        for (i, ((desc, diff_id), chain_id)) in layers.iter().zip(diff_ids).zip(chain).enumerate() {
            let parent = i.checked_sub(1).map(|p| chain[p].to_string());
            jobs.push(
                self.ensure_layer(session, desc, diff_id, chain_id, parent)
                    .boxed(),
            );
        }
        let outcomes: Vec<Result<()>> = futures::stream::iter(jobs)
            .buffer_unordered(LAYER_CONCURRENCY)
            .collect()
            .await;
        outcomes.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(())
    }

    /// Fetches and unpacks one layer unless it is already present.
    async fn ensure_layer(
        self: &Arc<Self>,
        session: &Session<'_>,
        desc: &Descriptor,
        diff_id: &Digest,
        chain_id: &Digest,
        parent: Option<String>,
    ) -> Result<()> {
        let _guard = self.layer_lock(chain_id.as_str()).await;
        if self.has_layer(chain_id.as_str()) {
            tracing::debug!(layer = %chain_id, "layer already present");
            return Ok(());
        }
        let reader = session.open_blob(desc).await?;
        let bridge = SyncIoBridge::new(reader);
        let tmp = self.temp_layer_dir()?;
        let name = desc.digest.to_string();
        let size = desc.size;
        // The temporary directory lives in the blocking task: it is removed when that task
        // ends without handing it back, whatever happens to this future.
        let (tmp, unpacked, usage) =
            tokio::task::spawn_blocking(move || -> Result<(TempDir, UnpackedLayer, DiskUsage)> {
                let unpacked = unpack_layer(bridge, tmp.path(), &name, Some(size))?;
                let usage = disk_usage(tmp.path())?;
                Ok((tmp, unpacked, usage))
            })
            .await
            .map_err(|e| ImageError::Task(format!("unpack layer {}: {e}", desc.digest)))??;
        verify_layer(desc, diff_id, &unpacked)?;
        let record = LayerRecord {
            chain_id: chain_id.to_string(),
            diff_id: diff_id.to_string(),
            parent,
            blob_size: desc.size,
            usage,
        };
        let inner = self.clone();
        tokio::task::spawn_blocking(move || inner.install_layer(tmp, record))
            .await
            .map_err(|e| ImageError::Task(format!("install layer: {e}")))?
    }
}

/// Checks that the manifest's layers are layers and match the config's DiffIDs one for one.
/// The manifest an index lists for this host's platform: (document, bytes, digest).
async fn platform_manifest(
    session: &Session<'_>,
    reference: &Reference,
    index: &ManifestDoc,
    index_digest: &Digest,
) -> Result<(ManifestDoc, bytes::Bytes, Digest)> {
    let platform = host_platform();
    let entry = index
        .select_platform(&platform)
        .ok_or_else(|| ImageError::NoMatchingPlatform {
            reference: reference.to_string(),
            platform: format!("{}/{}", platform.os, platform.architecture),
            digest: index_digest.to_string(),
        })?;
    let fetched = session.fetch_manifest(entry.digest.as_str()).await?;
    let (doc, kind) = ManifestDoc::parse(&fetched.bytes, Some(&entry.media_type), &fetched.digest)?;
    if kind != ManifestKind::Manifest {
        return Err(ImageError::InvalidContent {
            what: "manifest",
            digest: fetched.digest.to_string(),
            reason: "an index inside an index".into(),
        });
    }
    Ok((doc, fetched.bytes, fetched.digest))
}

pub(crate) fn check_layers<'a>(
    config: &ConfigDoc,
    layers: &'a [Descriptor],
    manifest_digest: &Digest,
) -> Result<&'a [Descriptor]> {
    if !config.os.is_empty() && config.os != "linux" {
        return Err(ImageError::InvalidContent {
            what: "image config",
            digest: manifest_digest.to_string(),
            reason: format!("image is for os {:?}, not linux", config.os),
        });
    }
    if layers.len() > MAX_LAYERS {
        return Err(ImageError::InvalidContent {
            what: "manifest",
            digest: manifest_digest.to_string(),
            reason: format!(
                "{} layers; corral takes images of at most {MAX_LAYERS}",
                layers.len()
            ),
        });
    }
    if layers.len() != config.rootfs.diff_ids.len() {
        return Err(ImageError::InvalidContent {
            what: "manifest",
            digest: manifest_digest.to_string(),
            reason: format!(
                "{} layers but the config lists {} diff_ids",
                layers.len(),
                config.rootfs.diff_ids.len()
            ),
        });
    }
    for layer in layers {
        layer_compression(&layer.media_type, &layer.digest)?;
    }
    Ok(layers)
}

/// Compares what was unpacked with the descriptor and the config's DiffID.
pub(crate) fn verify_layer(
    desc: &Descriptor,
    diff_id: &Digest,
    unpacked: &UnpackedLayer,
) -> Result<()> {
    if unpacked.size != desc.size {
        return Err(ImageError::SizeMismatch {
            what: "layer",
            digest: desc.digest.to_string(),
            expected: desc.size,
            actual: unpacked.size,
        });
    }
    if unpacked.digest != desc.digest {
        return Err(ImageError::DigestMismatch {
            what: "layer",
            expected: desc.digest.to_string(),
            actual: unpacked.digest.to_string(),
        });
    }
    if &unpacked.diff_id != diff_id {
        return Err(ImageError::DigestMismatch {
            what: "uncompressed layer",
            expected: diff_id.to_string(),
            actual: unpacked.diff_id.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_manifest_with_thousands_of_layers_is_refused() {
        let digest = Digest::of(b"layer");
        let layer = Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".to_owned(),
            digest: digest.clone(),
            size: 5,
            platform: None,
        };
        let mut config = ConfigDoc::default();
        config.rootfs.diff_ids = vec![digest.clone(); 10_000];
        let layers = vec![layer; 10_000];
        let err = check_layers(&config, &layers, &Digest::of(b"manifest")).unwrap_err();
        assert!(
            matches!(err, ImageError::InvalidContent { ref reason, .. } if reason.contains("10000 layers")),
            "{err}"
        );
        assert_eq!(err.kind(), crate::ErrorKind::FailedPrecondition);
        config.rootfs.diff_ids.truncate(MAX_LAYERS);
        assert!(check_layers(&config, &layers[..MAX_LAYERS], &digest).is_ok());
    }
}
