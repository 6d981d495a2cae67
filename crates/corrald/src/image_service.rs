//! `runtime.v1.ImageService`: the CRI image RPCs, answered by the image store
//! (`corral_image::ImageStore`). Lookups are served from memory; pulls, removals and disk
//! accounting run off the async workers.

use std::path::Path;
use std::sync::Arc;

use corral_image::{ImageError, ImageRecord, ImageStore, RegistryConfig};
use cri_proto::v1::image_service_server::ImageService;
use cri_proto::v1::*;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

/// Images sent per `StreamImages` message.
const STREAM_CHUNK: usize = 100;

/// The ImageService implementation.
#[derive(Debug, Clone)]
pub struct ImageServiceImpl {
    images: ImageStore,
}

/// An image-store error as an RPC status, with the code of its kind (see `error.rs`).
pub fn image_error_status(err: ImageError) -> Status {
    crate::error::CriError::from(err).into()
}

impl ImageServiceImpl {
    /// Opens the image store under `root` with the `[registry]` configuration.
    pub fn new(
        store: Arc<corral_store::Store>,
        root: &Path,
        registry: RegistryConfig,
    ) -> Result<Self, ImageError> {
        Ok(ImageServiceImpl {
            images: ImageStore::open(store, root, registry)?,
        })
    }

    /// The image store, shared with the container code (rootfs mounts) and the admin service.
    pub fn image_store(&self) -> ImageStore {
        self.images.clone()
    }
}

/// Runs blocking store work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("image store task: {e}")))?
        .map_err(image_error_status)
}

fn required_image(spec: Option<&ImageSpec>) -> Result<String, Status> {
    match spec.map(|s| s.image.trim()) {
        Some(image) if !image.is_empty() => Ok(image.to_string()),
        _ => Err(Status::invalid_argument("image reference is required")),
    }
}

fn auth_config(auth: &AuthConfig) -> corral_image::AuthConfig {
    corral_image::AuthConfig {
        username: auth.username.clone(),
        password: auth.password.clone(),
        auth: auth.auth.clone(),
        identitytoken: auth.identity_token.clone(),
        registrytoken: auth.registry_token.clone(),
        server_address: auth.server_address.clone(),
    }
}

/// The CRI view of an image record.
fn cri_image(record: &ImageRecord) -> Image {
    let (uid, username) = record.user();
    Image {
        id: record.id.clone(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid: uid.map(|value| Int64Value { value }),
        username,
        spec: Some(ImageSpec {
            image: record.id.clone(),
            ..Default::default()
        }),
        pinned: record.pinned,
    }
}

impl ImageServiceImpl {
    /// Images matching a list filter: one image if it names one, else all.
    fn filtered(&self, filter: Option<&ImageFilter>) -> Vec<Image> {
        let wanted = filter
            .and_then(|f| f.image.as_ref())
            .map(|s| s.image.trim())
            .filter(|s| !s.is_empty());
        match wanted {
            Some(reference) => self
                .images
                .resolve(reference)
                .iter()
                .map(cri_image)
                .collect(),
            None => self.images.list().iter().map(cri_image).collect(),
        }
    }

    /// `ImageStatus`'s verbose info: the image config and the layers' identity.
    fn verbose_info(&self, record: &ImageRecord) -> Result<String, Status> {
        let config = self
            .images
            .config_blob(&record.id)
            .map_err(image_error_status)?
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        let info = serde_json::json!({
            "imageSpec": config,
            "chainID": record.chain_id().unwrap_or_default(),
            "chainIDs": record.chain_ids,
            "diffIDs": record.diff_ids,
            "manifestDigest": record.manifest_digest,
            "created": record.created,
        });
        Ok(info.to_string())
    }
}

type ResultStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ImageService for ImageServiceImpl {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let images = self.filtered(request.get_ref().filter.as_ref());
        Ok(Response::new(ListImagesResponse { images }))
    }

    type StreamImagesStream = ResultStream<StreamImagesResponse>;

    async fn stream_images(
        &self,
        request: Request<StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let images = self.filtered(request.get_ref().filter.as_ref());
        let chunks: Vec<Result<StreamImagesResponse, Status>> = images
            .chunks(STREAM_CHUNK)
            .map(|c| Ok(StreamImagesResponse { images: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let req = request.get_ref();
        let reference = required_image(req.image.as_ref())?;
        // An unknown image is not an error: the response simply has no image.
        let Some(record) = self.images.resolve(&reference) else {
            return Ok(Response::new(ImageStatusResponse::default()));
        };
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            info.insert("info".to_string(), self.verbose_info(&record)?);
        }
        Ok(Response::new(ImageStatusResponse {
            image: Some(cri_image(&record)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let req = request.get_ref();
        let reference = required_image(req.image.as_ref())?;
        let auth = req.auth.as_ref().map(auth_config);
        let span = tracing::info_span!("PullImage", image = %reference);
        let started = std::time::Instant::now();
        let record = self
            .images
            .pull(&reference, auth.as_ref())
            .instrument(span)
            .await
            .map_err(image_error_status)?;
        crate::prometheus::record_pull(record.size, started.elapsed().as_secs_f64());
        Ok(Response::new(PullImageResponse {
            image_ref: record.id,
        }))
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let reference = required_image(request.get_ref().image.as_ref())?;
        let images = self.images.clone();
        let removed = blocking(move || images.remove(&reference)).await?;
        tracing::debug!(removed, "RemoveImage");
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let images = self.images.clone();
        let usage = blocking(move || images.fs_usage()).await?;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![FilesystemUsage {
                timestamp,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: usage.mountpoint.display().to_string(),
                }),
                used_bytes: Some(UInt64Value {
                    value: usage.used_bytes,
                }),
                inodes_used: Some(UInt64Value {
                    value: usage.inodes_used,
                }),
            }],
            container_filesystems: Vec::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tonic::Code;

    fn service() -> (tempfile::TempDir, ImageServiceImpl) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(corral_store::Store::open(&dir.path().join("meta.redb")).unwrap());
        let svc = ImageServiceImpl::new(store, dir.path(), RegistryConfig::default()).unwrap();
        (dir, svc)
    }

    fn spec(image: &str) -> Option<ImageSpec> {
        Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        })
    }

    #[test]
    fn error_kinds_map_to_codes() {
        let cases = [
            (ImageError::ImageNotFound("x".into()), Code::NotFound),
            (
                ImageError::Unauthenticated {
                    registry: "r".into(),
                    repository: "p".into(),
                    detail: "d".into(),
                },
                Code::Unauthenticated,
            ),
            (
                ImageError::InvalidReference {
                    reference: "X".into(),
                    reason: "bad".into(),
                },
                Code::InvalidArgument,
            ),
            (
                ImageError::DigestMismatch {
                    what: "layer",
                    expected: "a".into(),
                    actual: "b".into(),
                },
                Code::DataLoss,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(image_error_status(err).code(), code);
        }
        // A request that joined another's pull gets that pull's code.
        let joined = ImageError::Joined(Arc::new(ImageError::ImageNotFound("x".into())));
        assert_eq!(image_error_status(joined).code(), Code::NotFound);
    }

    #[tokio::test]
    async fn empty_store_answers_every_read_rpc() {
        let (_dir, svc) = service();
        let list = svc
            .list_images(Request::new(ListImagesRequest::default()))
            .await
            .unwrap();
        assert!(list.get_ref().images.is_empty());
        let status = svc
            .image_status(Request::new(ImageStatusRequest {
                image: spec("busybox"),
                verbose: true,
            }))
            .await
            .unwrap();
        assert!(status.get_ref().image.is_none());
        svc.remove_image(Request::new(RemoveImageRequest {
            image: spec("busybox"),
        }))
        .await
        .unwrap();
        let fs = svc
            .image_fs_info(Request::new(ImageFsInfoRequest {}))
            .await
            .unwrap();
        let usage = &fs.get_ref().image_filesystems[0];
        assert!(usage.fs_id.as_ref().unwrap().mountpoint.ends_with("layers"));
        assert_eq!(usage.used_bytes.as_ref().unwrap().value, 0);
    }

    #[tokio::test]
    async fn requests_without_an_image_are_invalid() {
        let (_dir, svc) = service();
        let err = svc
            .pull_image(Request::new(PullImageRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = svc
            .pull_image(Request::new(PullImageRequest {
                image: spec("Bad Name"),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
}
