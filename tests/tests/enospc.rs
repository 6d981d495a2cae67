//! A full disk (issue 10, item 5): corrald's root on a small tmpfs; a pull that runs out of
//! space fails with ResourceExhausted, serves nothing half-written, and the store works again
//! once space returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use corral_e2e::*;
use cri_proto::v1::image_service_client::ImageServiceClient;
use cri_proto::v1::*;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tonic::Code;

/// Bytes free on the file system of `path`.
fn available(path: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).unwrap();
    st.blocks_available() * st.fragment_size()
}

/// Fills the file system of `dir` up to `keep` free bytes with one file; returns its path.
fn fill(dir: &Path, keep: u64) -> std::path::PathBuf {
    let filler = dir.join("filler");
    let size = available(dir).saturating_sub(keep);
    let file = std::fs::File::create(&filler).unwrap();
    // A tmpfs allocates on write, not on set_len: write the bytes.
    use std::io::Write;
    let mut w = std::io::BufWriter::new(file);
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if w.write_all(&chunk[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    let _ = w.flush();
    filler
}

async fn pull(
    images: &mut ImageServiceClient<tonic::transport::Channel>,
    image: &str,
) -> Result<String, tonic::Status> {
    images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

/// Every image ListImages returns.
async fn all_images(images: &mut ImageServiceClient<tonic::transport::Channel>) -> Vec<Image> {
    images
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
}

#[tokio::test]
async fn a_pull_onto_a_full_root_is_resource_exhausted_and_leaves_the_store_usable() {
    require_root!();
    let Some((_registry, image)) = cri::busybox_registry() else {
        return;
    };
    let mut daemon = Daemon::start(DaemonOptions {
        with_cni: false,
        ..DaemonOptions::default()
    });
    // Move the root onto a 32 MiB tmpfs.
    daemon.stop();
    let root = daemon.root();
    let saved = daemon.dir().join("root-saved");
    std::fs::rename(&root, &saved).unwrap();
    std::fs::create_dir(&root).unwrap();
    mount(
        Some("tmpfs"),
        &root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=32m"),
    )
    .unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", saved.display()))
        .arg(&root)
        .status()
        .unwrap();
    assert!(copied.success());
    daemon.start_again();

    let filler = fill(&root, 64 * 1024);
    let mut images = daemon.images().await;
    let got = pull(&mut images, &image).await;
    let status = got.expect_err("a pull onto a full disk succeeded");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // Nothing half-written is served.
    let listed = all_images(&mut images).await;
    assert!(listed.is_empty(), "{listed:?}");
    let status = images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none());

    // Space returns: the same pull works and the image is there.
    std::fs::remove_file(&filler).unwrap();
    pull(&mut images, &image)
        .await
        .expect("pull after space returned");
    let listed = all_images(&mut images).await;
    assert_eq!(listed.len(), 1);

    // A state write (the metadata store's commit of a new pod) on a full disk.
    let filler = fill(&root, 0);
    let mut rt = daemon.runtime().await;
    let parent = unique_cgroup_parent("enospc");
    let config = pod_config("enospc", &parent, (2, 0, 0));
    let got = cri::try_run_pod(&mut rt, config.clone()).await;
    let status = got.expect_err("a pod was recorded on a full disk");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let pods = cri::all_pods(&mut rt).await;
    assert!(pods.is_empty(), "{pods:?}");
    std::fs::remove_file(&filler).unwrap();
    let id = cri::try_run_pod(&mut rt, config)
        .await
        .expect("RunPodSandbox after space returned");
    cri::remove_pod(&mut rt, &id).await;
    remove_cgroup_dirs(&test_cgroup_root("enospc"));

    daemon.stop();
    let _ = umount2(&root, MntFlags::MNT_DETACH);
}
