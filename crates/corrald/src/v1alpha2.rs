//! Serving the old `runtime.v1alpha2` API from the `runtime.v1` handlers.
//!
//! kubelet 1.20–1.25 dial `/runtime.v1alpha2.RuntimeService/*` and
//! `/runtime.v1alpha2.ImageService/*`. Every message of v1alpha2 is wire-compatible with its v1
//! namesake (v1 began as a copy and only added fields), so the server needs no second
//! implementation: this layer rewrites the request path of an RPC that v1alpha2 has to its v1
//! path and tags the request with [`ApiVersion::V1alpha2`] so that `Version` can answer in kind.
//! RPCs that exist only in v1 keep their v1alpha2 path and so get `Unimplemented` from the router.

use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http::{Request, Uri};
use tower::{Layer, Service};

/// Which CRI API version a request arrived through; set as a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `runtime.v1alpha2`, through the rewrite of this module.
    V1alpha2,
}

const OLD_RUNTIME: &str = "/runtime.v1alpha2.RuntimeService/";
const OLD_IMAGE: &str = "/runtime.v1alpha2.ImageService/";

/// RuntimeService RPCs that `runtime.v1alpha2` defines (as of its last release, Kubernetes 1.25).
const RUNTIME_RPCS: &[&str] = &[
    "Version",
    "RunPodSandbox",
    "StopPodSandbox",
    "RemovePodSandbox",
    "PodSandboxStatus",
    "ListPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "ListContainers",
    "ContainerStatus",
    "UpdateContainerResources",
    "ReopenContainerLog",
    "ExecSync",
    "Exec",
    "Attach",
    "PortForward",
    "ContainerStats",
    "ListContainerStats",
    "PodSandboxStats",
    "ListPodSandboxStats",
    "UpdateRuntimeConfig",
    "Status",
];

/// ImageService RPCs that `runtime.v1alpha2` defines.
const IMAGE_RPCS: &[&str] = &[
    "ListImages",
    "ImageStatus",
    "PullImage",
    "RemoveImage",
    "ImageFsInfo",
];

/// The v1 path serving a v1alpha2 path, or `None` when the path is not a v1alpha2 RPC.
pub fn v1_path(path: &str) -> Option<String> {
    if let Some(rpc) = path.strip_prefix(OLD_RUNTIME) {
        RUNTIME_RPCS
            .contains(&rpc)
            .then(|| format!("/runtime.v1.RuntimeService/{rpc}"))
    } else if let Some(rpc) = path.strip_prefix(OLD_IMAGE) {
        IMAGE_RPCS
            .contains(&rpc)
            .then(|| format!("/runtime.v1.ImageService/{rpc}"))
    } else {
        None
    }
}

/// A layer that routes v1alpha2 requests to the v1 services (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct V1alpha2Layer {
    /// When false the layer passes every request through untouched.
    pub enabled: bool,
}

impl<S> Layer<S> for V1alpha2Layer {
    type Service = V1alpha2Routing<S>;

    fn layer(&self, inner: S) -> Self::Service {
        V1alpha2Routing {
            inner,
            enabled: self.enabled,
        }
    }
}

/// The service made by [`V1alpha2Layer`].
#[derive(Debug, Clone)]
pub struct V1alpha2Routing<S> {
    inner: S,
    enabled: bool,
}

impl<S, B> Service<Request<B>> for V1alpha2Routing<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if self.enabled {
            if let Some(path) = v1_path(req.uri().path()) {
                if let Ok(uri) = rewrite_path(req.uri(), &path) {
                    *req.uri_mut() = uri;
                    req.extensions_mut().insert(ApiVersion::V1alpha2);
                }
            }
        }
        self.inner.call(req)
    }
}

fn rewrite_path(uri: &Uri, path: &str) -> Result<Uri, http::Error> {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path)?);
    Ok(Uri::from_parts(parts)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_old_rpcs_to_v1() {
        assert_eq!(
            v1_path("/runtime.v1alpha2.RuntimeService/RunPodSandbox").as_deref(),
            Some("/runtime.v1.RuntimeService/RunPodSandbox")
        );
        assert_eq!(
            v1_path("/runtime.v1alpha2.ImageService/PullImage").as_deref(),
            Some("/runtime.v1.ImageService/PullImage")
        );
    }

    #[test]
    fn leaves_v1_only_and_foreign_paths_alone() {
        assert_eq!(
            v1_path("/runtime.v1alpha2.RuntimeService/StreamPodSandboxes"),
            None
        );
        assert_eq!(
            v1_path("/runtime.v1alpha2.RuntimeService/UpdatePodSandboxResources"),
            None
        );
        assert_eq!(v1_path("/runtime.v1.RuntimeService/Version"), None);
        assert_eq!(v1_path("/other.Service/Version"), None);
    }

    #[test]
    fn every_listed_rpc_exists_in_v1() {
        let proto = include_str!("../../../proto/api.proto");
        for rpc in RUNTIME_RPCS.iter().chain(IMAGE_RPCS) {
            assert!(
                proto.contains(&format!("rpc {rpc}(")),
                "{rpc} missing in v1"
            );
        }
    }
}
