//! The CRI ImageService of a real corrald, pulling from a real `docker-registry` on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use corral_e2e::registry::{self, push_image, Registry};
use corral_e2e::*;
use cri_proto::v1::image_service_client::ImageServiceClient;
use cri_proto::v1::*;
use tonic::transport::Channel;
use tonic::Code;

type Images = ImageServiceClient<Channel>;

macro_rules! require_registry {
    () => {
        require_root!();
        if let Some(reason) = registry::skip_reason() {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

fn daemon(extra_config_toml: String) -> Daemon {
    Daemon::start(DaemonOptions {
        extra_config_toml,
        with_cni: false,
        ..Default::default()
    })
}

async fn pull(
    images: &mut Images,
    image: &str,
    auth: Option<AuthConfig>,
) -> Result<String, tonic::Status> {
    images
        .pull_image(PullImageRequest {
            image: spec(image),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn status(images: &mut Images, image: &str) -> ImageStatusResponse {
    images
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose: true,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
}

async fn list(images: &mut Images, filter: Option<&str>) -> Vec<Image> {
    images
        .list_images(ListImagesRequest {
            filter: filter.map(|f| ImageFilter { image: spec(f) }),
        })
        .await
        .expect("ListImages")
        .into_inner()
        .images
}

async fn fs_used(images: &mut Images) -> (String, u64) {
    let fs = images
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo")
        .into_inner();
    let usage = &fs.image_filesystems[0];
    (
        usage.fs_id.as_ref().unwrap().mountpoint.clone(),
        usage.used_bytes.as_ref().unwrap().value,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_through_mirror_then_list_status_restart_remove() {
    require_registry!();
    let registry = Registry::start();
    let pushed = push_image(
        &registry,
        "e2e-test-images/busybox",
        "1.29-4",
        &registry::ImageSpec::busybox(),
    );
    let mut d = daemon(format!(
        "[registry.mirrors.\"registry.k8s.io\"]\nendpoints = [\"http://{}\"]\n",
        registry.host
    ));
    let mut images = d.images().await;
    let name = "registry.k8s.io/e2e-test-images/busybox:1.29-4";

    let image_ref = pull(&mut images, name, None).await.expect("PullImage");
    assert_eq!(image_ref, pushed.config_digest, "image_ref is the image id");

    let all = list(&mut images, None).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].repo_tags, [name]);
    let digest_name = format!("registry.k8s.io/e2e-test-images/busybox@{}", pushed.digest);
    assert_eq!(all[0].repo_digests, std::slice::from_ref(&digest_name));
    assert_eq!(
        all[0].uid.as_ref().map(|u| u.value),
        Some(1000),
        "from USER 1000:1000"
    );
    assert_eq!(list(&mut images, Some(name)).await.len(), 1);
    assert!(list(&mut images, Some("registry.k8s.io/other:1"))
        .await
        .is_empty());

    let st = status(&mut images, &digest_name).await;
    assert_eq!(
        st.image.as_ref().map(|i| i.id.as_str()),
        Some(image_ref.as_str())
    );
    let info: serde_json::Value =
        serde_json::from_str(&st.info["info"]).expect("verbose info is JSON");
    assert_eq!(info["imageSpec"]["config"]["Cmd"][0], "/bin/sh");
    assert!(info["chainID"].as_str().unwrap().starts_with("sha256:"));
    assert!(status(&mut images, "registry.k8s.io/nothing:here")
        .await
        .image
        .is_none());

    let mut streamed = images
        .stream_images(StreamImagesRequest { filter: None })
        .await
        .expect("StreamImages")
        .into_inner();
    let mut count = 0;
    while let Some(msg) = streamed.message().await.unwrap() {
        count += msg.images.len();
    }
    assert_eq!(count, 1);

    let (mountpoint, used) = fs_used(&mut images).await;
    assert!(
        mountpoint.starts_with(&d.root().display().to_string()),
        "{mountpoint}"
    );
    assert!(used > 1_000_000, "busybox is in the store: {used}");

    d.restart();
    let mut images = d.images().await;
    assert_eq!(
        list(&mut images, None).await.len(),
        1,
        "images survive a restart"
    );

    images
        .remove_image(RemoveImageRequest { image: spec(name) })
        .await
        .expect("RemoveImage");
    assert!(status(&mut images, &image_ref).await.image.is_none());
    assert_eq!(fs_used(&mut images).await.1, 0, "all space freed");
    images
        .remove_image(RemoveImageRequest { image: spec(name) })
        .await
        .expect("removing a missing image is not an error");
    let layers: Vec<_> = std::fs::read_dir(d.root().join("layers"))
        .unwrap()
        .collect();
    assert!(layers.is_empty(), "{layers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_errors_carry_cri_codes() {
    require_registry!();
    let registry = Registry::start_with_auth("alice", "s3cret");
    push_image(
        &registry,
        "private/app",
        "v1",
        &registry::ImageSpec::new(vec![registry::small_layer(1)]),
    );
    let d = daemon(String::new());
    let mut images = d.images().await;
    let name = format!("{}/private/app:v1", registry.host);

    let err = pull(&mut images, &name, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains(&registry.host), "{}", err.message());
    let wrong = AuthConfig {
        username: "alice".into(),
        password: "nope".into(),
        ..Default::default()
    };
    let err = pull(&mut images, &name, Some(wrong)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(list(&mut images, None).await.is_empty());

    let right = AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    pull(&mut images, &name, Some(right.clone()))
        .await
        .expect("right credentials pull");

    let err = pull(
        &mut images,
        &format!("{}/private/none:v1", registry.host),
        Some(right),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = pull(&mut images, "Not/A Reference", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pull_requests_fetch_once() {
    require_registry!();
    let registry = Registry::start();
    let pushed = push_image(
        &registry,
        "test/busybox",
        "v1",
        &registry::ImageSpec::busybox(),
    );
    let d = daemon(String::new());
    let name = format!("{}/test/busybox:v1", registry.host);
    let mut pulls = Vec::new();
    for _ in 0..6 {
        let mut images = d.images().await;
        let name = name.clone();
        pulls.push(tokio::spawn(
            async move { pull(&mut images, &name, None).await },
        ));
    }
    for p in pulls {
        assert_eq!(p.await.unwrap().expect("PullImage"), pushed.config_digest);
    }
    for digest in &pushed.layer_digests {
        assert_eq!(registry.blob_gets("test/busybox", digest), 1, "{digest}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn import_through_the_admin_service() {
    require_registry!();
    use cri_proto::admin::admin_client::AdminClient;
    use cri_proto::admin::ImportImageRequest;
    let d = daemon(String::new());
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("save.tar");
    let id = registry::write_docker_save(
        &archive,
        &["offline/app:v1"],
        &registry::ImageSpec::busybox(),
    );
    let mut admin = AdminClient::new(d.channel().await);
    let resp = admin
        .import_image(ImportImageRequest {
            path: archive.display().to_string(),
        })
        .await
        .expect("ImportImage")
        .into_inner();
    assert_eq!(resp.images.len(), 1);
    assert_eq!(resp.images[0].id, id);
    assert_eq!(resp.images[0].repo_tags, ["docker.io/offline/app:v1"]);
    let mut images = d.images().await;
    let st = status(&mut images, "offline/app:v1").await;
    assert_eq!(st.image.map(|i| i.id), Some(id));
    let err = admin
        .import_image(ImportImageRequest {
            path: "relative.tar".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
