//! `corral-bench pull`: cold pulls of a realistic image — about 200 MB in 8 layers of
//! random-but-compressible files, pushed gzip- and zstd-compressed to a loopback registry —
//! by corral and (optionally) by a private containerd, in turns: wall time, and the CPU time
//! the daemon spent (its threads and the children it reaped, such as `unpigz`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use corral_e2e::registry::{
    self, push_image, Compression, ImageSpec as PushSpec, LayerBuilder, Registry,
};
use cri_proto::v1::image_service_client::ImageServiceClient;
use cri_proto::v1::*;
use tonic::transport::Channel;

use crate::containerd::Containerd;
use crate::node::{cpu_ticks, ticks_per_second};

/// `corral-bench pull` options.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Cold pulls per runtime and compression.
    #[arg(long, default_value_t = 3)]
    pub pulls: usize,
    /// Uncompressed size of the image, in MiB.
    #[arg(long, default_value_t = 200)]
    pub mib: usize,
    /// Layers of the image.
    #[arg(long, default_value_t = 8)]
    pub layers: usize,
    /// Also pull with a private containerd, in turns with corral.
    #[arg(long)]
    pub with_containerd: bool,
}

/// A runtime pulling images.
struct Puller {
    name: &'static str,
    channel: Channel,
    pid: i32,
    /// Where containerd keeps its blobs (to wait for its garbage collector); none for corral,
    /// which collects as RemoveImage returns.
    content_dir: Option<std::path::PathBuf>,
}

/// A small xorshift generator: the content only has to look like files, not be secure.
pub struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `len` bytes of text-like data: random words from a small vocabulary with random numbers
/// among them, which gzip and zstd shrink about 3x (like binaries and text in real images).
pub fn compressible(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: [&[u8]; 16] = [
        b"lib",
        b"function",
        b"return",
        b"static",
        b"const ",
        b"0x7f",
        b"struct",
        b"{\n",
        b"}\n",
        b"usr/share",
        b"value",
        b" = ",
        b";\n",
        b"if (",
        b"else",
        b"error",
    ];
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let r = rng.next();
        out.extend_from_slice(WORDS[(r & 15) as usize]);
        if r & 0x30 == 0 {
            out.extend_from_slice(format!("{:x}", r >> 20).as_bytes());
        }
        out.push(b' ');
    }
    out.truncate(len);
    out
}

/// The image's uncompressed layers: `layers` tars of `mib / layers` MiB each, in files from 1
/// KiB to 1 MiB.
fn image_layers(mib: usize, layers: usize) -> Vec<Vec<u8>> {
    let per_layer = mib * 1024 * 1024 / layers.max(1);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..layers.max(1))
        .map(|l| {
            let mut layer = LayerBuilder::new().dir(&format!("layer{l}"));
            let mut size = 0;
            let mut i = 0;
            while size < per_layer {
                let len = match rng.next() % 4 {
                    0 => 1024 + (rng.next() % 4096) as usize,
                    1 => 64 * 1024,
                    _ => 256 * 1024 + (rng.next() % (768 * 1024)) as usize,
                }
                .min(per_layer - size);
                layer = layer.file(
                    &format!("layer{l}/file{i}"),
                    &compressible(&mut rng, len),
                    0o644,
                );
                size += len;
                i += 1;
            }
            layer.tar()
        })
        .collect()
}

/// One compression of the image, pushed.
struct Variant {
    /// `gzip` or `zstd`.
    label: &'static str,
    /// The reference to pull.
    image: String,
    layer_digests: Vec<String>,
}

/// Runs the pull benchmark.
pub async fn run(options: Options) -> anyhow::Result<()> {
    if let Some(reason) = registry::skip_reason() {
        bail!("cannot run a local registry: {reason}");
    }
    println!(
        "load average at start: {}",
        crate::containers::load_average()
    );
    let registry = Registry::start();
    let variants = push_variants(&registry, &options);

    let corral_daemon = crate::node::start_quiet_corrald()?;
    let mut pullers = vec![Puller {
        name: "corral",
        channel: corral_daemon.channel().await,
        pid: corral_daemon.pid(),
        content_dir: None,
    }];
    let containerd = if options.with_containerd {
        // No pod runs: the sandbox image is never pulled.
        let (containerd, puller) = start_containerd(&registry.host, &variants[0].image).await?;
        pullers.push(puller);
        Some(containerd)
    } else {
        None
    };

    let samples = pull_in_turns(&pullers, &variants, options.pulls.max(1)).await?;
    print_pulls(&options, &pullers, &variants, samples);
    println!(
        "\nload average at the end: {}",
        crate::containers::load_average()
    );
    drop(containerd);
    drop(corral_daemon);
    drop(registry);
    Ok(())
}

/// Builds the image and pushes it gzip- and zstd-compressed.
fn push_variants(registry: &Registry, options: &Options) -> Vec<Variant> {
    let t = Instant::now();
    let layers = image_layers(options.mib, options.layers);
    let tar_bytes: usize = layers.iter().map(Vec::len).sum();
    let mut variants = Vec::new();
    for (label, compression) in [("gzip", Compression::Gzip), ("zstd", Compression::Zstd)] {
        let spec = PushSpec::new(layers.clone()).compression(compression);
        let pushed = push_image(registry, &format!("bench/big-{label}"), "1", &spec);
        let blobs: u64 = pushed
            .layer_digests
            .iter()
            .filter_map(|d| std::fs::metadata(registry.blob_data_path(d)).ok())
            .map(|m| m.len())
            .sum();
        println!(
            "image {label}: {} layers, {:.0} MiB of tar, {:.0} MiB compressed",
            layers.len(),
            tar_bytes as f64 / (1 << 20) as f64,
            blobs as f64 / (1 << 20) as f64
        );
        variants.push(Variant {
            label,
            image: format!("{}/bench/big-{label}:1", registry.host),
            layer_digests: pushed.layer_digests,
        });
    }
    drop(layers);
    println!("built and pushed in {:.1} s", t.elapsed().as_secs_f64());
    variants
}

/// A private containerd (with `sandbox_image` as its pause image) and its puller.
async fn start_containerd(
    registry_host: &str,
    sandbox_image: &str,
) -> anyhow::Result<(Containerd, Puller)> {
    let cgroup_root = format!("/containerd-bench-{}", std::process::id());
    let mut containerd = Containerd::start(registry_host, sandbox_image, &cgroup_root)?;
    let channel = containerd.ready_channel(Duration::from_secs(30)).await?;
    let puller = Puller {
        name: "containerd",
        channel,
        pid: containerd.pid(),
        content_dir: Some(
            containerd
                .dir()
                .join("root/io.containerd.content.v1.content/blobs/sha256"),
        ),
    };
    Ok((containerd, puller))
}

/// Each puller's (wall, CPU) per variant: `samples[variant][puller]`, `pulls` rounds in
/// turns.
async fn pull_in_turns(
    pullers: &[Puller],
    variants: &[Variant],
    pulls: usize,
) -> anyhow::Result<Vec<Vec<Vec<(Duration, f64)>>>> {
    let mut samples = vec![vec![Vec::new(); pullers.len()]; variants.len()];
    for _ in 0..pulls {
        for (v, variant) in variants.iter().enumerate() {
            for (p, puller) in pullers.iter().enumerate() {
                samples[v][p]
                    .push(pull_cold(puller, &variant.image, &variant.layer_digests).await?);
            }
        }
    }
    Ok(samples)
}

/// The table: p50 wall and CPU per compression and runtime, and the ratio of the walls.
fn print_pulls(
    options: &Options,
    pullers: &[Puller],
    variants: &[Variant],
    samples: Vec<Vec<Vec<(Duration, f64)>>>,
) {
    println!(
        "\n=== cold PullImage of a {} MiB, {}-layer image from a loopback registry ===",
        options.mib, options.layers
    );
    print!("{:<22}", "");
    for puller in pullers {
        print!(" {:>28}", format!("{} wall / CPU (s)", puller.name));
    }
    println!("   ratio wall p50");
    let section = format!(
        "cold PullImage, {} MiB in {} layers (p50 of {})",
        options.mib,
        options.layers,
        options.pulls.max(1)
    );
    for (variant, per_puller) in variants.iter().zip(samples) {
        pull_row(&section, variant.label, per_puller);
    }
}

/// Prints and records one compression's row: each puller's p50 wall / CPU.
fn pull_row(section: &str, label: &str, per_puller: Vec<Vec<(Duration, f64)>>) {
    print!("{:<22}", format!("{label}, p50"));
    let mut walls = Vec::new();
    let mut cells = Vec::new();
    for runs in per_puller {
        let mut wall: Vec<Duration> = runs.iter().map(|r| r.0).collect();
        wall.sort();
        let mut cpu: Vec<f64> = runs.iter().map(|r| r.1).collect();
        cpu.sort_by(f64::total_cmp);
        let wall = crate::percentile(&wall, 0.5).as_secs_f64();
        walls.push(wall);
        let cpu = cpu.get(cpu.len() / 2).copied().unwrap_or(0.0);
        print!(" {:>28}", format!("{wall:.2} / {cpu:.2}"));
        cells.push(format!("{wall:.1} s / {cpu:.1} s"));
    }
    if let [corral, containerd] = walls.as_slice() {
        print!("   {:.2}", corral / containerd);
    }
    println!();
    let mut cells = cells.into_iter();
    crate::summary::record_with_target(
        section,
        &format!("{label}: wall / CPU"),
        cells.next().unwrap_or_else(|| "-".into()),
        cells.next().unwrap_or_else(|| "-".into()),
        crate::summary::ratio(walls.first().copied(), walls.get(1).copied()),
        "wall ≤ 0.7×",
    );
}

/// Waits until the runtime holds none of `layers`, pulls `image`, removes it again; returns
/// the pull's wall time and the daemon's CPU seconds during it.
async fn pull_cold(
    puller: &Puller,
    image: &str,
    layers: &[String],
) -> anyhow::Result<(Duration, f64)> {
    if let Some(dir) = &puller.content_dir {
        wait_until_gone(dir, layers).await;
    }
    let mut images = ImageServiceClient::new(puller.channel.clone());
    let cpu = cpu_ticks(puller.pid);
    let t = Instant::now();
    let id = crate::images::pull(&mut images, image)
        .await
        .with_context(|| format!("{} pulling {image}", puller.name))?;
    let wall = t.elapsed();
    let cpu = cpu_ticks(puller.pid).saturating_sub(cpu) as f64 / ticks_per_second();
    images
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: id,
                ..Default::default()
            }),
        })
        .await
        .context("RemoveImage")?;
    println!(
        "  {:<11} {image}: {:.2} s wall, {cpu:.2} s CPU",
        puller.name,
        wall.as_secs_f64()
    );
    Ok((wall, cpu))
}

/// containerd deletes content in the background after RemoveImage: wait (up to 30 s) until no
/// blob of `layers` is left, so that the next pull is cold.
async fn wait_until_gone(dir: &Path, layers: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let present = || {
        layers
            .iter()
            .filter(|d| dir.join(d.trim_start_matches("sha256:")).exists())
            .count()
    };
    while present() > 0 {
        if Instant::now() > deadline {
            println!(
                "  (containerd still holds {} layers: not a cold pull)",
                present()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_compresses_but_not_to_nothing() {
        let data = compressible(&mut Rng(1), 1 << 20);
        assert_eq!(data.len(), 1 << 20);
        let packed = registry::compress(&data, Compression::Zstd).len();
        assert!(packed < data.len() / 2, "zstd: {packed} bytes");
        assert!(packed > data.len() / 20, "zstd: {packed} bytes");
    }

    #[test]
    fn layers_add_up_to_the_size_asked() {
        let layers = image_layers(2, 4);
        assert_eq!(layers.len(), 4);
        for layer in &layers {
            assert!(layer.len() >= 512 * 1024, "{}", layer.len());
        }
    }
}
