//! `corral-bench images`: image pulls from a real registry on loopback, and lookups.

use std::time::Instant;

use anyhow::Context;
use corral_e2e::registry::{self, push_image, Registry};
use cri_proto::v1::image_service_client::ImageServiceClient;
use cri_proto::v1::*;
use tonic::transport::Channel;

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

/// PullImage; returns the image ref.
pub(crate) async fn pull(
    images: &mut ImageServiceClient<Channel>,
    image: &str,
) -> anyhow::Result<String> {
    Ok(images
        .pull_image(PullImageRequest {
            image: spec(image),
            auth: None,
            sandbox_config: None,
        })
        .await
        .with_context(|| format!("PullImage {image}"))?
        .into_inner()
        .image_ref)
}

/// Runs the image benchmark against the runtime on `channel`.
pub async fn run(channel: Channel, pulls: usize, calls: usize) -> anyhow::Result<()> {
    if let Some(reason) = registry::skip_reason() {
        anyhow::bail!("cannot run a local registry: {reason}");
    }
    let registry = Registry::start();
    push_images(&registry);
    let mut images = ImageServiceClient::new(channel);
    cold_pulls(&mut images, &registry.host, pulls).await?;
    concurrent_pulls(&images, &registry.host).await?;
    lookups(&mut images, &registry.host, calls).await
}

/// Pushes `bench/five:v1` (busybox and 4 small layers) and 200 tags of `bench/many`, which
/// share a base layer.
fn push_images(registry: &Registry) {
    let mut layers = vec![registry::busybox_layer()];
    layers.extend((1..=4).map(|i| registry::small_layer(1000 + i)));
    push_image(
        registry,
        "bench/five",
        "v1",
        &registry::ImageSpec::new(layers),
    );
    let base = registry::small_layer(0);
    for i in 0..200 {
        let layers = vec![base.clone(), registry::small_layer(i + 1)];
        push_image(
            registry,
            "bench/many",
            &format!("v{i}"),
            &registry::ImageSpec::new(layers),
        );
    }
}

/// `pulls` timed pulls of the 5-layer image, removed after each.
async fn cold_pulls(
    images: &mut ImageServiceClient<Channel>,
    host: &str,
    pulls: usize,
) -> anyhow::Result<()> {
    let five = format!("{host}/bench/five:v1");
    let mut pull_times = Vec::new();
    for _ in 0..pulls.max(1) {
        let start = Instant::now();
        let id = pull(images, &five).await?;
        pull_times.push(start.elapsed());
        images
            .remove_image(RemoveImageRequest { image: spec(&id) })
            .await
            .context("RemoveImage")?;
    }
    println!("\nPullImage of a 5-layer image (busybox + 4), loopback registry, cold store:");
    crate::report("PullImage", pull_times);
    Ok(())
}

/// The 200 `bench/many` tags pulled at once: the wall time.
async fn concurrent_pulls(images: &ImageServiceClient<Channel>, host: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut images = images.clone();
        let name = format!("{host}/bench/many:v{i}");
        tasks.push(tokio::spawn(async move { pull(&mut images, &name).await }));
    }
    for task in tasks {
        task.await??;
    }
    println!(
        "\nPullImage x200 concurrently (shared base layer): {:.2}s wall",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `calls` timed ListImages and ImageStatus calls, with the 200 images stored.
async fn lookups(
    images: &mut ImageServiceClient<Channel>,
    host: &str,
    calls: usize,
) -> anyhow::Result<()> {
    let mut list_times = Vec::new();
    let mut status_times = Vec::new();
    for i in 0..calls.max(1) {
        let start = Instant::now();
        let n = images
            .list_images(ListImagesRequest::default())
            .await?
            .into_inner()
            .images
            .len();
        list_times.push(start.elapsed());
        anyhow::ensure!(n >= 200, "ListImages returned {n} images");
        let name = format!("{host}/bench/many:v{}", i % 200);
        let start = Instant::now();
        let found = images
            .image_status(ImageStatusRequest {
                image: spec(&name),
                verbose: false,
            })
            .await?
            .into_inner()
            .image
            .is_some();
        status_times.push(start.elapsed());
        anyhow::ensure!(found, "ImageStatus did not find {name}");
    }
    println!("\nLookups with 200 images stored:");
    crate::report("ListImages", list_times);
    crate::report("ImageStatus", status_times);
    Ok(())
}
