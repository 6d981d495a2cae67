//! A real image registry for tests: `docker-registry serve` on a free loopback port with its
//! storage in a temp dir (optionally behind htpasswd), stopped by PID on drop; and a builder of
//! small images made from `/bin/busybox` (busybox-static) with several layers, including one
//! that deletes a file (whiteout) and one that makes a directory opaque, pushed with plain HTTP
//! (monolithic blob upload, then the manifest). Also writes OCI layouts and `docker save`
//! archives for import tests.
//!
//! The image crate's own tests include this file too (`crates/image/tests/common`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
pub const BUSYBOX: &str = "/bin/busybox";

/// Why the registry tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (mknod for whiteouts, overlay mounts)".into());
    }
    for bin in [REGISTRY_BIN, BUSYBOX] {
        if !Path::new(bin).exists() {
            return Some(format!("{bin} is not installed"));
        }
    }
    None
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A `docker-registry serve` process with its storage in a temp dir; killed on drop.
pub struct Registry {
    child: Child,
    pub host: String,
    pub dir: tempfile::TempDir,
    pub credentials: Option<(String, String)>,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with(None)
    }

    /// A registry protected by htpasswd (bcrypt) with one user.
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Self::start_with(Some((user.to_string(), password.to_string())))
    }

    fn start_with(credentials: Option<(String, String)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = &credentials {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("run htpasswd (apache2-utils)");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: corral-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = Registry {
            child,
            host,
            dir,
            credentials,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(resp) = http(&self.host, "GET", "/v2/", &[], &[]) {
                if resp.status == 200 || resp.status == 401 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "registry at {} did not start: {}",
                self.host,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The registry's log (access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many times a blob was fetched with GET.
    pub fn blob_gets(&self, repo: &str, digest: &str) -> usize {
        let needle = format!("\"GET /v2/{repo}/blobs/{digest}");
        self.log().matches(&needle).count()
    }

    /// The file where the registry keeps a blob's bytes.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn auth_header(&self) -> Vec<(String, String)> {
        match &self.credentials {
            Some((u, p)) => {
                use base64::Engine as _;
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                vec![("Authorization".into(), format!("Basic {token}"))]
            }
            None => Vec::new(),
        }
    }

    /// Uploads a blob (monolithic: POST, then PUT with the digest) unless present.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let headers = self.auth_header();
        let head = http(
            &self.host,
            "HEAD",
            &format!("/v2/{repo}/blobs/{digest}"),
            &headers,
            &[],
        )
        .unwrap();
        if head.status == 200 {
            return digest;
        }
        let start = http(
            &self.host,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &headers,
            &[],
        )
        .unwrap();
        assert_eq!(start.status, 202, "start upload: {}", start.text());
        let location = start.header("location").expect("upload location");
        let path = location
            .split_once("://")
            .map(|(_, rest)| &rest[rest.find('/').unwrap()..])
            .unwrap_or(&location)
            .to_string();
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut put_headers = headers.clone();
        put_headers.push(("Content-Type".into(), "application/octet-stream".into()));
        let done = http(
            &self.host,
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &put_headers,
            bytes,
        )
        .unwrap();
        assert_eq!(done.status, 201, "finish upload: {}", done.text());
        digest
    }

    /// Uploads a manifest or index under `reference` (a tag or digest); returns its digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        let mut headers = self.auth_header();
        headers.push(("Content-Type".into(), media_type.into()));
        let resp = http(
            &self.host,
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &headers,
            bytes,
        )
        .unwrap();
        assert_eq!(resp.status, 201, "push manifest: {}", resp.text());
        sha256(bytes)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A response of the tiny HTTP client.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request with `Connection: close`, read to EOF.
pub fn http(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// How layer blobs are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Docker v2 schema 2 or OCI media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Docker,
    Oci,
}

/// One tar layer under construction.
pub struct LayerBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        LayerBuilder {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, name: &str, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        // Raw bytes: the tar crate's path setters refuse `..`, which some tests need.
        let name_bytes = name.as_bytes();
        h.as_old_mut().name[..name_bytes.len()].copy_from_slice(name_bytes);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(size);
        h
    }

    pub fn dir(mut self, name: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, name, 0o755, 0);
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn file(mut self, name: &str, data: &[u8], mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, name, mode, data.len() as u64);
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, name, 0o777, 0);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, name, 0o755, 0);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    /// `.wh.NAME` in `dir`: deletes `dir/NAME` of lower layers.
    pub fn whiteout(self, dir: &str, name: &str) -> Self {
        self.file(&format!("{dir}/.wh.{name}"), b"", 0o644)
    }

    /// `.wh..wh..opq` in `dir`: hides all lower content of `dir`.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }

    pub fn tar(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// The base layer: busybox with a few applets, /etc files, a /data dir with lower content.
pub fn busybox_layer() -> Vec<u8> {
    let busybox = std::fs::read(BUSYBOX).unwrap();
    let mut layer = LayerBuilder::new()
        .dir("bin/")
        .file("bin/busybox", &busybox, 0o755)
        .hardlink("bin/busybox.hl", "bin/busybox");
    for applet in ["sh", "ls", "cat", "echo", "sleep", "true", "id", "env"] {
        layer = layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    layer
        .dir("etc/")
        .file("etc/motd", b"welcome\n", 0o644)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
            0o644,
        )
        .file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
        .dir("data/")
        .file("data/lower.txt", b"from the base layer\n", 0o644)
        .dir("data/sub/")
        .file("data/sub/deep.txt", b"deep\n", 0o644)
        .dir("tmp/")
        .tar()
}

/// A layer deleting /etc/motd and adding /etc/added.
pub fn whiteout_layer() -> Vec<u8> {
    LayerBuilder::new()
        .dir("etc/")
        .whiteout("etc", "motd")
        .file("etc/added", b"added\n", 0o644)
        .tar()
}

/// A layer making /data opaque, with new content.
pub fn opaque_layer() -> Vec<u8> {
    LayerBuilder::new()
        .dir("data/")
        .opaque("data")
        .file("data/upper.txt", b"from the opaque layer\n", 0o644)
        .tar()
}

/// A small layer with one file, distinct per `n`.
pub fn small_layer(n: usize) -> Vec<u8> {
    LayerBuilder::new()
        .dir("layers/")
        .file(
            &format!("layers/{n}.txt"),
            format!("layer {n}\n").as_bytes(),
            0o644,
        )
        .tar()
}

pub fn compress(tar: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(tar).unwrap();
            gz.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar, 1).unwrap(),
    }
}

/// An image to push: layers (uncompressed tars), a compression, a format, config defaults.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub layers: Vec<Vec<u8>>,
    pub compression: Compression,
    pub format: Format,
    pub config: serde_json::Value,
    /// Override the config's diff_ids (to test verification).
    pub diff_ids: Option<Vec<String>>,
    pub architecture: String,
}

impl ImageSpec {
    pub fn new(layers: Vec<Vec<u8>>) -> Self {
        ImageSpec {
            layers,
            compression: Compression::Gzip,
            format: Format::Docker,
            config: serde_json::json!({
                "Env": ["PATH=/bin"],
                "Cmd": ["/bin/sh"],
                "User": "1000:1000",
                "WorkingDir": "/data",
                "StopSignal": "SIGQUIT",
                "ExposedPorts": {"8080/tcp": {}},
            }),
            diff_ids: None,
            architecture: "amd64".into(),
        }
    }

    /// The standard three-layer busybox image: base, whiteout, opaque.
    pub fn busybox() -> Self {
        Self::new(vec![busybox_layer(), whiteout_layer(), opaque_layer()])
    }

    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }

    pub fn format(mut self, f: Format) -> Self {
        self.format = f;
        self
    }
}

/// What was pushed.
#[derive(Debug, Clone)]
pub struct PushedImage {
    pub repo: String,
    pub tag: String,
    /// Digest of the manifest (or index) the tag points to.
    pub digest: String,
    /// The config digest: the image id.
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
}

fn media_types(
    format: Format,
    compression: Compression,
) -> (&'static str, &'static str, &'static str) {
    match format {
        Format::Docker => (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
            match compression {
                Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
                // Docker has no plain or zstd layer type; registries accept the OCI ones.
                Compression::None => "application/vnd.oci.image.layer.v1.tar",
                Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            },
        ),
        Format::Oci => (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
            match compression {
                Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::None => "application/vnd.oci.image.layer.v1.tar",
                Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            },
        ),
    }
}

/// Builds the manifest's blobs, pushes them, and returns the manifest bytes, media type and
/// what was pushed (without tagging anything).
fn push_parts(
    registry: &Registry,
    repo: &str,
    spec: &ImageSpec,
) -> (Vec<u8>, &'static str, PushedImage) {
    let (manifest_type, config_type, layer_type) = media_types(spec.format, spec.compression);
    let diff_ids: Vec<String> = spec
        .diff_ids
        .clone()
        .unwrap_or_else(|| spec.layers.iter().map(|l| sha256(l)).collect());
    let mut layer_descs = Vec::new();
    let mut layer_digests = Vec::new();
    for layer in &spec.layers {
        let blob = compress(layer, spec.compression);
        let digest = registry.push_blob(repo, &blob);
        layer_descs.push(
            serde_json::json!({"mediaType": layer_type, "digest": digest, "size": blob.len()}),
        );
        layer_digests.push(digest);
    }
    let config = serde_json::json!({
        "architecture": spec.architecture,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": spec.config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [],
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = registry.push_blob(repo, &config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, "digest": config_digest, "size": config_bytes.len()},
        "layers": layer_descs,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let pushed = PushedImage {
        repo: repo.to_string(),
        tag: String::new(),
        digest: sha256(&manifest_bytes),
        config_digest,
        layer_digests,
        diff_ids,
    };
    (manifest_bytes, manifest_type, pushed)
}

/// Pushes an image as `repo:tag`.
pub fn push_image(registry: &Registry, repo: &str, tag: &str, spec: &ImageSpec) -> PushedImage {
    let (manifest, media_type, mut pushed) = push_parts(registry, repo, spec);
    registry.push_manifest(repo, tag, media_type, &manifest);
    pushed.tag = tag.to_string();
    pushed
}

/// Pushes an index (manifest list) with one manifest per spec (each tagged with its
/// architecture) as `repo:tag`; returns the index digest and each platform image.
pub fn push_index(
    registry: &Registry,
    repo: &str,
    tag: &str,
    specs: &[ImageSpec],
) -> (String, Vec<PushedImage>) {
    let mut entries = Vec::new();
    let mut images = Vec::new();
    let mut oci = false;
    for spec in specs {
        let (manifest, media_type, mut pushed) = push_parts(registry, repo, spec);
        let digest = registry.push_manifest(repo, &sha256(&manifest), media_type, &manifest);
        oci |= spec.format == Format::Oci;
        entries.push(serde_json::json!({
            "mediaType": media_type,
            "digest": digest,
            "size": manifest.len(),
            "platform": {"architecture": spec.architecture, "os": "linux"},
        }));
        pushed.tag = tag.to_string();
        images.push(pushed);
    }
    let index_type = if oci {
        "application/vnd.oci.image.index.v1+json"
    } else {
        "application/vnd.docker.distribution.manifest.list.v2+json"
    };
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": index_type, "manifests": entries});
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = registry.push_manifest(repo, tag, index_type, &bytes);
    for image in &mut images {
        image.digest = digest.clone();
    }
    (digest, images)
}

/// Every entry under `dir`, recursively, as relative paths (for "nothing left behind" checks).
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Writes `spec` as an OCI image layout in `dir`, named `name` (a full reference); returns the
/// config digest.
pub fn write_oci_layout(dir: &Path, name: &str, spec: &ImageSpec) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), bytes).unwrap();
        d
    };
    let (manifest_type, config_type, layer_type) = media_types(Format::Oci, spec.compression);
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in &spec.layers {
        let blob = compress(layer, spec.compression);
        layers.push(
            serde_json::json!({"mediaType": layer_type, "digest": put(&blob), "size": blob.len()}),
        );
        diff_ids.push(sha256(layer));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": spec.architecture, "os": "linux", "config": spec.config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": manifest_type,
        "config": {"mediaType": config_type, "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": manifest_type, "digest": manifest_digest, "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "v1"},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    config_digest
}

/// Writes `spec` as `docker save` output (legacy layout) into the tar file `path`; returns the
/// config digest.
pub fn write_docker_save(path: &Path, tags: &[&str], spec: &ImageSpec) -> String {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder.append(&h, bytes).unwrap();
    };
    let mut layer_names = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, layer) in spec.layers.iter().enumerate() {
        let name = format!("layer{i}/layer.tar");
        add(&name, layer);
        layer_names.push(name);
        diff_ids.push(sha256(layer));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": spec.architecture, "os": "linux", "config": spec.config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_digest = sha256(&config);
    let config_name = format!("{}.json", config_digest.trim_start_matches("sha256:"));
    add(&config_name, &config);
    let manifest =
        serde_json::json!([{"Config": config_name, "RepoTags": tags, "Layers": layer_names}]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    std::fs::write(path, builder.into_inner().unwrap()).unwrap();
    config_digest
}
