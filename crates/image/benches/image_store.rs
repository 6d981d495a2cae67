//! Image store benchmark against a loopback `docker-registry`:
//! - pull time of a 5-layer image (busybox plus four 4 MiB layers, gzip) into an empty store;
//! - with 200 images stored: `list` (ListImages) and `resolve` by tag (ImageStatus) latency.
//!
//! Run with `cargo bench -p corral-image` (as root, with docker-registry and busybox-static).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{push_image, ImageSpec, LayerBuilder, Registry, TestStore};
use corral_image::RegistryConfig;

const PULL_RUNS: usize = 5;
const IMAGES: usize = 200;
const LOOKUPS: u32 = 2000;

/// A layer with `size` bytes of incompressible data.
fn noise_layer(seed: u64, size: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    LayerBuilder::new()
        .dir("noise/")
        .file(&format!("noise/{seed}.bin"), &data, 0o644)
        .tar()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    common::skip_unless_ready!();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = Registry::start();

    let mut layers = vec![common::busybox_layer()];
    layers.extend((1..=4).map(|i| noise_layer(i, 4 << 20)));
    let spec = ImageSpec::new(layers);
    push_image(&registry, "bench/five", "v1", &spec);
    let reference = format!("{}/bench/five:v1", registry.host);
    let mut pulls = Vec::new();
    let mut size = 0;
    for _ in 0..PULL_RUNS {
        let ts = TestStore::new(RegistryConfig::default());
        let start = Instant::now();
        let image = rt.block_on(ts.store.pull(&reference, None)).unwrap();
        pulls.push(start.elapsed());
        size = image.size;
    }
    println!(
        "pull 5-layer image ({:.1} MiB compressed) from loopback registry: median {:?}, min {:?} ({PULL_RUNS} runs)",
        size as f64 / (1 << 20) as f64,
        median(pulls.clone()),
        pulls.iter().min().unwrap()
    );

    let ts = TestStore::new(RegistryConfig::default());
    let base = common::small_layer(0);
    for i in 0..IMAGES {
        let spec = ImageSpec::new(vec![base.clone(), common::small_layer(i + 1)]);
        push_image(&registry, "bench/many", &format!("v{i}"), &spec);
    }
    let start = Instant::now();
    rt.block_on(async {
        let pulls = (0..IMAGES).map(|i| {
            let store = ts.store.clone();
            let reference = format!("{}/bench/many:v{i}", registry.host);
            tokio::spawn(async move { store.pull(&reference, None).await })
        });
        for p in futures::future::join_all(pulls).await {
            p.unwrap().unwrap();
        }
    });
    println!(
        "pull {IMAGES} two-layer images concurrently: {:?}",
        start.elapsed()
    );
    assert_eq!(ts.store.list().len(), IMAGES);

    let start = Instant::now();
    for _ in 0..LOOKUPS {
        std::hint::black_box(ts.store.list());
    }
    println!(
        "list {IMAGES} images (ListImages): {:?} per call",
        start.elapsed() / LOOKUPS
    );
    let names: Vec<String> = (0..IMAGES)
        .map(|i| format!("{}/bench/many:v{i}", registry.host))
        .collect();
    let start = Instant::now();
    for i in 0..LOOKUPS {
        let name = &names[i as usize % IMAGES];
        std::hint::black_box(ts.store.resolve(name).unwrap());
    }
    println!(
        "resolve by tag with {IMAGES} images (ImageStatus): {:?} per call",
        start.elapsed() / LOOKUPS
    );
}
