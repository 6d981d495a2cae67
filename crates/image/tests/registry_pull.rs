//! Pulls from a real `docker-registry` on loopback, unpacks into real directories and mounts
//! real overlays. Needs root, `docker-registry`, `busybox-static` and `apache2-utils`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::{
    push_image, push_index, skip_unless_ready, small_layer, Compression, Format, ImageSpec,
    LayerBuilder, Registry, TestStore,
};
use corral_image::{AuthConfig, ErrorKind, ImageError, RegistryConfig};

fn no_config() -> RegistryConfig {
    RegistryConfig::default()
}

/// Asserts the store holds no image and no layer, blob or temporary file.
fn assert_empty(ts: &TestStore) {
    assert!(
        ts.store.list().is_empty(),
        "images left: {:?}",
        ts.store.list()
    );
    let (layers, content) = ts.files();
    assert!(layers.is_empty(), "layers left: {layers:?}");
    assert_eq!(content, ["ingest", "sha256"], "content left");
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_by_tag_then_by_digest() {
    skip_unless_ready!();
    let registry = Registry::start();
    let pushed = push_image(&registry, "test/busybox", "v1", &ImageSpec::busybox());
    let ts = TestStore::new(no_config());
    let name = format!("{}/test/busybox", registry.host);

    let image = ts.store.pull(&format!("{name}:v1"), None).await.unwrap();
    assert_eq!(image.id, pushed.config_digest);
    assert_eq!(image.repo_tags, [format!("{name}:v1")]);
    assert_eq!(image.repo_digests, [format!("{name}@{}", pushed.digest)]);
    assert_eq!(image.diff_ids, pushed.diff_ids);
    assert_eq!(image.chain_ids.len(), 3);
    assert_eq!(image.config.user, "1000:1000");
    assert_eq!(image.user(), (Some(1000), String::new()));
    assert_eq!(image.config.working_dir, "/data");
    assert_eq!(image.config.exposed_ports, ["8080/tcp"]);
    assert!(image.size > 0);

    let by_digest = ts
        .store
        .pull(&format!("{name}@{}", pushed.digest), None)
        .await
        .unwrap();
    assert_eq!(by_digest.id, image.id);
    assert_eq!(
        by_digest.repo_tags, image.repo_tags,
        "a digest pull adds no tag"
    );

    // Lookups by id, bare hex, prefix, tag and digest all find it.
    let hex = image.id.trim_start_matches("sha256:");
    for r in [
        image.id.clone(),
        hex.to_string(),
        hex[..12].to_string(),
        format!("{name}:v1"),
        format!("{name}@{}", pushed.digest),
        format!("{name}:v1@{}", pushed.digest),
    ] {
        assert_eq!(
            ts.store.resolve(&r).map(|i| i.id),
            Some(image.id.clone()),
            "{r}"
        );
    }
    assert!(ts.store.resolve(&format!("{name}:v2")).is_none());

    // Every layer was fetched once, even though the image was pulled twice.
    for digest in &pushed.layer_digests {
        assert_eq!(registry.blob_gets("test/busybox", digest), 1, "{digest}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_through_mirror_keeps_repository_path_and_falls_back() {
    skip_unless_ready!();
    let registry = Registry::start();
    push_image(
        &registry,
        "e2e-test-images/busybox",
        "1.29-4",
        &ImageSpec::busybox(),
    );
    // The first mirror is dead; the second is the registry; the upstream is never asked.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = common::registry_config(&format!(
        "[registry.mirrors.\"registry.k8s.io\"]\nendpoints = [\"http://{dead}\", \"http://{}\"]\n",
        registry.host
    ));
    let ts = TestStore::new(config);
    let image = ts
        .store
        .pull("registry.k8s.io/e2e-test-images/busybox:1.29-4", None)
        .await
        .unwrap();
    assert_eq!(
        image.repo_tags,
        ["registry.k8s.io/e2e-test-images/busybox:1.29-4"]
    );
    assert!(
        registry.log().contains("ns=registry.k8s.io"),
        "mirror requests carry ns="
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_hub_names_go_to_their_mirror() {
    skip_unless_ready!();
    let registry = Registry::start();
    push_image(
        &registry,
        "library/busybox",
        "latest",
        &ImageSpec::busybox().format(Format::Oci),
    );
    let config = common::registry_config(&format!(
        "[registry.mirrors.\"docker.io\"]\nendpoint = [\"http://{}\"]\n",
        registry.host
    ));
    let ts = TestStore::new(config);
    let image = ts.store.pull("busybox", None).await.unwrap();
    assert_eq!(image.repo_tags, ["docker.io/library/busybox:latest"]);
    assert_eq!(
        ts.store.resolve("busybox").map(|i| i.id),
        Some(image.id.clone())
    );
    assert_eq!(
        ts.store
            .resolve("docker.io/library/busybox:latest")
            .map(|i| i.id),
        Some(image.id)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_fetch_once() {
    skip_unless_ready!();
    let registry = Registry::start();
    let pushed = push_image(&registry, "test/busybox", "v1", &ImageSpec::busybox());
    let ts = TestStore::new(no_config());
    let reference = format!("{}/test/busybox:v1", registry.host);
    let pulls = (0..8).map(|_| {
        let store = ts.store.clone();
        let reference = reference.clone();
        tokio::spawn(async move { store.pull(&reference, None).await })
    });
    let ids: Vec<String> = futures::future::join_all(pulls)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().id)
        .collect();
    assert!(ids.iter().all(|id| *id == pushed.config_digest), "{ids:?}");
    for digest in pushed.layer_digests.iter().chain([&pushed.config_digest]) {
        assert_eq!(
            registry.blob_gets("test/busybox", digest),
            1,
            "{digest} fetched more than once"
        );
    }
    let manifest_gets = registry
        .log()
        .matches("\"GET /v2/test/busybox/manifests/v1")
        .count();
    assert_eq!(
        manifest_gets, 1,
        "one manifest fetch for eight joined pulls"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn overlay_rootfs_applies_whiteouts_and_opaque_dirs() {
    skip_unless_ready!();
    let registry = Registry::start();
    push_image(&registry, "test/busybox", "v1", &ImageSpec::busybox());
    let ts = TestStore::new(no_config());
    let reference = format!("{}/test/busybox:v1", registry.host);
    let image = ts.store.pull(&reference, None).await.unwrap();

    // The layers on disk carry overlay's whiteout forms.
    let whiteout = ts.store.layer_dir(&image.chain_ids[1]).join("etc/motd");
    let meta = std::fs::symlink_metadata(&whiteout).unwrap();
    assert!(meta.file_type().is_char_device() && meta.rdev() == 0);
    let opaque_dir = ts.store.layer_dir(&image.chain_ids[2]).join("data");
    assert_eq!(
        corral_image::unpack::get_xattr(&opaque_dir, "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );

    let target = ts.root().join("mnt/c1");
    let mount = ts.store.mount_rootfs(&reference, "c1", &target).unwrap();
    assert_eq!(mount.lowerdirs.len(), 3);
    let result = std::panic::catch_unwind(|| {
        assert!(target.join("bin/busybox").is_file());
        assert_eq!(
            std::fs::metadata(target.join("bin/busybox")).unwrap().ino(),
            std::fs::metadata(target.join("bin/busybox.hl"))
                .unwrap()
                .ino()
        );
        assert_eq!(
            std::fs::read_link(target.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert!(
            !target.join("etc/motd").exists(),
            "the whiteout hides /etc/motd"
        );
        assert!(target.join("etc/passwd").exists());
        assert_eq!(std::fs::read(target.join("etc/added")).unwrap(), b"added\n");
        assert!(
            !target.join("data/lower.txt").exists(),
            "the opaque dir hides lower files"
        );
        assert!(
            !target.join("data/sub").exists(),
            "the opaque dir hides lower dirs"
        );
        assert!(target.join("data/upper.txt").exists());
        // Writes land in the container's upper dir, not in the layers.
        std::fs::write(target.join("tmp/written"), b"x").unwrap();
    });
    ts.store.unmount_rootfs(&target).unwrap();
    result.unwrap();
    assert!(ts
        .store
        .container_dir("c1")
        .unwrap()
        .join("upper/tmp/written")
        .exists());
    assert!(!ts
        .store
        .layer_dir(&image.chain_ids[0])
        .join("tmp/written")
        .exists());
    ts.store.remove_rootfs("c1").unwrap();
    assert!(!ts.store.container_dir("c1").unwrap().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn media_types_and_compressions() {
    skip_unless_ready!();
    let registry = Registry::start();
    let ts = TestStore::new(no_config());
    for (i, (format, compression)) in [
        (Format::Docker, Compression::Gzip),
        (Format::Oci, Compression::Gzip),
        (Format::Oci, Compression::Zstd),
        (Format::Oci, Compression::None),
        (Format::Docker, Compression::None),
    ]
    .into_iter()
    .enumerate()
    {
        let spec = ImageSpec::new(vec![small_layer(i), small_layer(100 + i)])
            .format(format)
            .compression(compression);
        let pushed = push_image(&registry, "test/kinds", &format!("t{i}"), &spec);
        let image = ts
            .store
            .pull(&format!("{}/test/kinds:t{i}", registry.host), None)
            .await
            .unwrap_or_else(|e| panic!("{format:?} {compression:?}: {e}"));
        assert_eq!(image.id, pushed.config_digest);
        let top = ts.store.layer_dir(&image.chain_ids[1]);
        assert!(top.join(format!("layers/{}.txt", 100 + i)).exists());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn index_selects_this_platform() {
    skip_unless_ready!();
    let registry = Registry::start();
    let host_arch = corral_image::media::host_platform().architecture;
    let other_arch = if host_arch == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let mut ours = ImageSpec::new(vec![small_layer(1)]);
    ours.architecture = host_arch.clone();
    let mut theirs = ImageSpec::new(vec![small_layer(2)]);
    theirs.architecture = other_arch.into();
    for format in [Format::Docker, Format::Oci] {
        let tag = format!("{format:?}").to_lowercase();
        let (index_digest, images) = push_index(
            &registry,
            "test/multi",
            &tag,
            &[theirs.clone().format(format), ours.clone().format(format)],
        );
        let ts = TestStore::new(no_config());
        let name = format!("{}/test/multi", registry.host);
        let image = ts.store.pull(&format!("{name}:{tag}"), None).await.unwrap();
        assert_eq!(image.id, images[1].config_digest, "{format:?}");
        assert_eq!(image.repo_digests, [format!("{name}@{index_digest}")]);
        // Pull by the index digest too.
        let again = ts
            .store
            .pull(&format!("{name}@{index_digest}"), None)
            .await
            .unwrap();
        assert_eq!(again.id, image.id);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn htpasswd_registry_needs_the_right_credentials() {
    skip_unless_ready!();
    let registry = Registry::start_with_auth("alice", "s3cret");
    push_image(
        &registry,
        "private/app",
        "v1",
        &ImageSpec::new(vec![small_layer(7)]),
    );
    let reference = format!("{}/private/app:v1", registry.host);
    let ts = TestStore::new(no_config());

    let err = ts.store.pull(&reference, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(err.to_string().contains(&registry.host), "{err}");

    let wrong = AuthConfig {
        username: "alice".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let err = ts.store.pull(&reference, Some(&wrong)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&registry.host) && msg.contains("authentication failed"),
        "{msg}"
    );
    assert!(ts.store.list().is_empty());

    let right = AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    ts.store.pull(&reference, Some(&right)).await.unwrap();

    // Docker's base64 `auth` form, from the config file instead of the request.
    use base64::Engine as _;
    let config = common::registry_config(&format!(
        "[registry.configs.\"{}\".auth]\nauth = \"{}\"\n",
        registry.host,
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    ));
    let ts2 = TestStore::new(config);
    ts2.store.pull(&reference, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupted_blob_fails_cleanly() {
    skip_unless_ready!();
    let registry = Registry::start();
    let pushed = push_image(&registry, "test/corrupt", "v1", &ImageSpec::busybox());
    // Flip bytes of the last layer in the registry's storage: same size, other digest.
    let path = registry.blob_data_path(&pushed.layer_digests[2]);
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    data[mid + 1] ^= 0xff;
    std::fs::write(&path, &data).unwrap();

    let ts = TestStore::new(no_config());
    let err = ts
        .store
        .pull(&format!("{}/test/corrupt:v1", registry.host), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    assert!(err.to_string().contains(&pushed.layer_digests[2]), "{err}");
    assert_empty(&ts);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_diff_id_fails_cleanly() {
    skip_unless_ready!();
    let registry = Registry::start();
    let mut spec = ImageSpec::new(vec![small_layer(1), small_layer(2)]);
    spec.diff_ids = Some(vec![
        common::sha256(&small_layer(1)),
        common::sha256(b"not it"),
    ]);
    push_image(&registry, "test/diffid", "v1", &spec);
    let ts = TestStore::new(no_config());
    let err = ts
        .store
        .pull(&format!("{}/test/diffid:v1", registry.host), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::DigestMismatch {
                what: "uncompressed layer",
                ..
            }
        ),
        "{err}"
    );
    assert_empty(&ts);
}

#[tokio::test(flavor = "multi_thread")]
async fn escaping_layer_path_fails_cleanly() {
    skip_unless_ready!();
    let registry = Registry::start();
    let evil = LayerBuilder::new().file("../../escaped", b"x", 0o644).tar();
    push_image(
        &registry,
        "test/evil",
        "v1",
        &ImageSpec::new(vec![small_layer(1), evil]),
    );
    let ts = TestStore::new(no_config());
    let err = ts
        .store
        .pull(&format!("{}/test/evil:v1", registry.host), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::UnsafeLayerEntry { .. }), "{err}");
    assert!(err.to_string().contains("../../escaped"), "{err}");
    assert!(
        !ts.root().join("escaped").exists()
            && !ts.root().parent().unwrap().join("escaped").exists()
    );
    assert_empty(&ts);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_references_fail_cleanly() {
    skip_unless_ready!();
    let registry = Registry::start();
    let ts = TestStore::new(no_config());
    let err = ts
        .store
        .pull(&format!("{}/no/such:image", registry.host), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = ts.store.pull("Not A Reference", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = ts
        .store
        .pull(&format!("{dead}/x:y"), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_empty(&ts);
}

#[tokio::test(flavor = "multi_thread")]
async fn removal_keeps_shared_layers_and_frees_everything_at_the_end() {
    skip_unless_ready!();
    let registry = Registry::start();
    let shared = common::busybox_layer();
    push_image(
        &registry,
        "test/a",
        "v1",
        &ImageSpec::new(vec![shared.clone(), small_layer(1)]),
    );
    push_image(
        &registry,
        "test/b",
        "v1",
        &ImageSpec::new(vec![shared, small_layer(2)]),
    );
    let ts = TestStore::new(no_config());
    let a = ts
        .store
        .pull(&format!("{}/test/a:v1", registry.host), None)
        .await
        .unwrap();
    let b = ts
        .store
        .pull(&format!("{}/test/b:v1", registry.host), None)
        .await
        .unwrap();
    assert_eq!(a.chain_ids[0], b.chain_ids[0]);
    let usage_both = ts.store.fs_usage().unwrap();

    assert!(ts.store.remove(&a.id).unwrap());
    assert!(
        !ts.store.remove(&a.id).unwrap(),
        "removing twice is not an error"
    );
    assert!(
        ts.store.layer_dir(&a.chain_ids[0]).is_dir(),
        "shared base layer kept"
    );
    assert!(
        !ts.store.layer_dir(&a.chain_ids[1]).exists(),
        "a's own layer freed"
    );
    assert!(ts.store.fs_usage().unwrap().used_bytes < usage_both.used_bytes);

    // b still mounts.
    let target = ts.root().join("mnt/b");
    ts.store.mount_rootfs(&b.id, "cb", &target).unwrap();
    let ok = target.join("bin/busybox").exists() && target.join("layers/2.txt").exists();
    ts.store.unmount_rootfs(&target).unwrap();
    ts.store.remove_rootfs("cb").unwrap();
    assert!(ok);

    assert!(ts
        .store
        .remove(&format!("{}/test/b:v1", registry.host))
        .unwrap());
    assert_empty(&ts);
    let usage = ts.store.fs_usage().unwrap();
    assert_eq!((usage.used_bytes, usage.inodes_used), (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn layers_under_a_container_survive_image_removal() {
    skip_unless_ready!();
    let registry = Registry::start();
    push_image(&registry, "test/busybox", "v1", &ImageSpec::busybox());
    let ts = TestStore::new(no_config());
    let image = ts
        .store
        .pull(&format!("{}/test/busybox:v1", registry.host), None)
        .await
        .unwrap();
    let target = ts.root().join("mnt/c");
    ts.store.mount_rootfs(&image.id, "c", &target).unwrap();
    assert!(ts.store.remove(&image.id).unwrap());
    assert!(ts.store.resolve(&image.id).is_none());
    let still_there = target.join("bin/busybox").exists();
    for chain in &image.chain_ids {
        assert!(
            ts.store.layer_dir(chain).is_dir(),
            "layer {chain} kept for the container"
        );
    }
    ts.store.unmount_rootfs(&target).unwrap();
    assert!(still_there);
    ts.store.remove_rootfs("c").unwrap();
    assert_empty(&ts);
}

#[tokio::test(flavor = "multi_thread")]
async fn records_survive_reopen_and_leftovers_are_cleaned() {
    skip_unless_ready!();
    let registry = Registry::start();
    push_image(&registry, "test/busybox", "v1", &ImageSpec::busybox());
    let dir = tempfile::tempdir().unwrap();
    let reference = format!("{}/test/busybox:v1", registry.host);
    let id = {
        let store = TestStore::open(dir.path(), no_config());
        store.pull(&reference, None).await.unwrap().id
    };
    // What a crash mid-pull leaves: a half-unpacked layer, a partial blob, an unrecorded layer.
    std::fs::create_dir_all(dir.path().join("layers/.tmp-123-0/etc")).unwrap();
    std::fs::write(dir.path().join("content/ingest/abc-1-0"), b"partial").unwrap();
    std::fs::create_dir_all(dir.path().join("layers").join("f".repeat(64))).unwrap();

    let store = TestStore::open(dir.path(), no_config());
    let image = store.resolve(&reference).expect("image survives reopen");
    assert_eq!(image.id, id);
    assert!(!dir.path().join("layers/.tmp-123-0").exists());
    assert!(!dir.path().join("layers").join("f".repeat(64)).exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("content/ingest"))
            .unwrap()
            .count(),
        0
    );
    for chain in &image.chain_ids {
        assert!(store.layer(chain).is_some());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retag_moves_the_tag() {
    skip_unless_ready!();
    let registry = Registry::start();
    let first = push_image(
        &registry,
        "test/moving",
        "latest",
        &ImageSpec::new(vec![small_layer(1)]),
    );
    let ts = TestStore::new(no_config());
    let reference = format!("{}/test/moving:latest", registry.host);
    ts.store.pull(&reference, None).await.unwrap();
    let second = push_image(
        &registry,
        "test/moving",
        "latest",
        &ImageSpec::new(vec![small_layer(2)]),
    );
    let image = ts.store.pull(&reference, None).await.unwrap();
    assert_eq!(image.id, second.config_digest);
    let old = ts.store.resolve(&first.config_digest).unwrap();
    assert!(old.repo_tags.is_empty(), "the tag moved: {old:?}");
    assert_eq!(
        old.repo_digests.len(),
        1,
        "the old image keeps its digest name"
    );
}
