//! `ImageStore::import`: OCI layouts (directory or tar) and `docker save` archives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{skip_unless_ready, small_layer, Compression, ImageSpec, LayerBuilder, TestStore};
use corral_image::{ImageError, RegistryConfig};

#[tokio::test(flavor = "multi_thread")]
async fn imports_an_oci_layout_directory_and_mounts_it() {
    skip_unless_ready!();
    let ts = TestStore::new(RegistryConfig::default());
    let layout = tempfile::tempdir().unwrap();
    let spec = ImageSpec::busybox().compression(Compression::Zstd);
    let id = common::write_oci_layout(layout.path(), "registry.example/app/busybox:v1", &spec);
    let images = ts.store.import(layout.path()).await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].id, id);
    assert_eq!(images[0].repo_tags, ["registry.example/app/busybox:v1"]);
    assert_eq!(images[0].repo_digests.len(), 1);
    let target = ts.root().join("mnt");
    ts.store
        .mount_rootfs("registry.example/app/busybox:v1", "imp", &target)
        .unwrap();
    let ok = target.join("bin/busybox").exists() && !target.join("etc/motd").exists();
    ts.store.unmount_rootfs(&target).unwrap();
    ts.store.remove_rootfs("imp").unwrap();
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn imports_tarred_layouts_and_docker_save_archives() {
    skip_unless_ready!();
    let ts = TestStore::new(RegistryConfig::default());
    let work = tempfile::tempdir().unwrap();

    // docker save output, gzip-compressed as `docker save | gzip` makes it.
    let save = work.path().join("save.tar");
    let spec = ImageSpec::new(vec![small_layer(1), small_layer(2)]);
    let id = common::write_docker_save(&save, &["busybox:1.36"], &spec);
    let gz = common::compress(&std::fs::read(&save).unwrap(), Compression::Gzip);
    std::fs::write(work.path().join("save.tar.gz"), gz).unwrap();
    let images = ts
        .store
        .import(&work.path().join("save.tar.gz"))
        .await
        .unwrap();
    assert_eq!(images[0].id, id);
    assert_eq!(images[0].repo_tags, ["docker.io/library/busybox:1.36"]);

    // An OCI layout packed into a tar.
    let layout = work.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    let id2 = common::write_oci_layout(
        &layout,
        "localhost/x:y",
        &ImageSpec::new(vec![small_layer(3)]),
    );
    let tar_path = work.path().join("layout.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    builder.append_dir_all(".", &layout).unwrap();
    builder.finish().unwrap();
    drop(builder);
    let images = ts.store.import(&tar_path).await.unwrap();
    assert_eq!(images[0].id, id2);
    assert!(ts.store.resolve("localhost/x:y").is_some());
    // The extracted archive is gone from the ingest area.
    assert_eq!(
        std::fs::read_dir(ts.root().join("content/ingest"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_archives_store_nothing() {
    skip_unless_ready!();
    let ts = TestStore::new(RegistryConfig::default());
    let work = tempfile::tempdir().unwrap();
    // A layer that escapes.
    let evil = LayerBuilder::new().file("../x", b"x", 0o644).tar();
    let save = work.path().join("evil.tar");
    common::write_docker_save(
        &save,
        &["evil:1"],
        &ImageSpec::new(vec![small_layer(1), evil]),
    );
    let err = ts.store.import(&save).await.unwrap_err();
    assert!(matches!(err, ImageError::UnsafeLayerEntry { .. }), "{err}");
    // Not an image at all.
    std::fs::write(work.path().join("junk"), b"junk").unwrap();
    let err = ts
        .store
        .import(&work.path().join("junk"))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        corral_image::ErrorKind::FailedPrecondition,
        "{err}"
    );
    assert!(ts.store.list().is_empty());
    let (layers, content) = ts.files();
    assert!(layers.is_empty(), "{layers:?}");
    assert_eq!(content, ["ingest", "sha256"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_commits_with_the_callers_record_or_not_at_all() {
    skip_unless_ready!();
    let dir = tempfile::tempdir().unwrap();
    let db = std::sync::Arc::new(corral_store::Store::open(&dir.path().join("meta.redb")).unwrap());
    let store =
        corral_image::ImageStore::open(db.clone(), dir.path(), RegistryConfig::default()).unwrap();
    let layout = tempfile::tempdir().unwrap();
    let spec = ImageSpec::busybox();
    common::write_oci_layout(layout.path(), "registry.example/app/busybox:v1", &spec);
    store.import(layout.path()).await.unwrap();
    let image = "registry.example/app/busybox:v1";

    store
        .lease_rootfs_with(image, "c1", |tx| {
            tx.put(corral_store::CONTAINERS, "c1", &"the caller's record")
        })
        .unwrap();
    assert!(store.rootfs_lease("c1").is_some());
    assert_eq!(
        db.get::<String>(corral_store::CONTAINERS, "c1").unwrap(),
        Some("the caller's record".to_string())
    );

    // The caller's write fails (a map with non-string keys is no JSON): no lease either.
    let unwritable: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let err = store
        .lease_rootfs_with(image, "c2", |tx| {
            tx.put(corral_store::CONTAINERS, "c2", &unwritable)
        })
        .unwrap_err();
    assert!(matches!(err, ImageError::Store(_)), "{err}");
    assert!(store.rootfs_lease("c2").is_none());

    // What was committed is what a restarted store finds.
    drop(store);
    let reopened =
        corral_image::ImageStore::open(db.clone(), dir.path(), RegistryConfig::default()).unwrap();
    assert!(reopened.rootfs_lease("c1").is_some());
    assert!(reopened.rootfs_lease("c2").is_none());
    assert_eq!(
        db.get::<String>(corral_store::CONTAINERS, "c2").unwrap(),
        None
    );
}
