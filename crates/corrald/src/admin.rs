//! `corral.admin.v1.Admin`: corral's node-local administration RPCs, for `corralctl`.
//! `ImportImage` loads an image archive or OCI layout from the node into the image store
//! (corrald holds the metadata database open, so imports have to go through it).

use std::path::Path;

use corral_image::ImageStore;
use cri_proto::admin::admin_server::Admin;
use cri_proto::admin::{ImportImageRequest, ImportImageResponse, ImportedImage};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::image_service::image_error_status;

/// The Admin service implementation.
#[derive(Debug, Clone)]
pub struct AdminServiceImpl {
    images: ImageStore,
}

impl AdminServiceImpl {
    /// An admin service over the same image store as the ImageService
    /// (`ImageServiceImpl::image_store`).
    pub fn new(images: ImageStore) -> Self {
        AdminServiceImpl { images }
    }
}

#[tonic::async_trait]
impl Admin for AdminServiceImpl {
    async fn import_image(
        &self,
        request: Request<ImportImageRequest>,
    ) -> Result<Response<ImportImageResponse>, Status> {
        let path = Path::new(&request.get_ref().path);
        if !path.is_absolute() {
            return Err(Status::invalid_argument(format!(
                "import path {:?} must be absolute",
                path.display().to_string()
            )));
        }
        let span = tracing::info_span!("ImportImage", path = %path.display());
        let records = self
            .images
            .import(path)
            .instrument(span)
            .await
            .map_err(image_error_status)?;
        let images = records
            .into_iter()
            .map(|r| ImportedImage {
                id: r.id,
                repo_tags: r.repo_tags,
                repo_digests: r.repo_digests,
            })
            .collect();
        Ok(Response::new(ImportImageResponse { images }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn relative_and_missing_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(corral_store::Store::open(&dir.path().join("meta.redb")).unwrap());
        let images =
            ImageStore::open(store, dir.path(), corral_image::RegistryConfig::default()).unwrap();
        let admin = AdminServiceImpl::new(images);
        let err = admin
            .import_image(Request::new(ImportImageRequest {
                path: "relative.tar".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = admin
            .import_image(Request::new(ImportImageRequest {
                path: dir.path().join("missing.tar").display().to_string(),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    }
}
