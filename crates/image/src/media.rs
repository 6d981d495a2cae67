//! The JSON documents of an image: manifests, indexes (manifest lists) and the image config, in
//! both the OCI and the Docker v2 schema 2 media types.

use std::collections::BTreeMap;

use crate::digest::Digest;
use crate::error::{ImageError, Result};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The `Accept` header sent for manifests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index accepted.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Largest image config accepted.
pub const MAX_CONFIG_SIZE: u64 = 16 << 20;
/// The most layers an image may have: far more than any real image (Docker refuses more than
/// 125), and an overlay mount of thousands of lowerdirs cannot be made anyway.
pub const MAX_LAYERS: usize = 128;

/// A reference to content: its media type, digest and size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The content's media type.
    #[serde(default)]
    pub media_type: String,
    /// The content's digest.
    pub digest: Digest,
    /// The content's size in bytes.
    pub size: u64,
    /// The platform of a manifest in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// The platform an index entry is for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    /// CPU architecture in Go's spelling (`amd64`, `arm64`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU variant (`v8`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A manifest or an index, parsed loosely; [`ManifestDoc::parse`] also says which it is.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestDoc {
    /// 2 for every supported kind.
    #[serde(default)]
    pub schema_version: u32,
    /// The media type the document declares, if any.
    #[serde(default)]
    pub media_type: Option<String>,
    /// The config descriptor (manifests).
    #[serde(default)]
    pub config: Option<Descriptor>,
    /// The layer descriptors, base first (manifests).
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The per-platform manifests (indexes).
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// Whether a document is a single-platform manifest or an index of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image manifest (OCI or Docker).
    Manifest,
    /// An image index or manifest list.
    Index,
}

impl ManifestDoc {
    /// Parses a manifest or index. `content_type` is the media type the registry (or the
    /// referring descriptor) gave, used when the document does not declare its own.
    pub fn parse(
        bytes: &[u8],
        content_type: Option<&str>,
        digest: &Digest,
    ) -> Result<(Self, ManifestKind)> {
        let doc: ManifestDoc =
            serde_json::from_slice(bytes).map_err(|e| ImageError::InvalidContent {
                what: "manifest",
                digest: digest.to_string(),
                reason: format!("invalid JSON: {e}"),
            })?;
        let declared = doc
            .media_type
            .clone()
            .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string()))
            .unwrap_or_default();
        let kind = match declared.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST => ManifestKind::Manifest,
            OCI_INDEX | DOCKER_MANIFEST_LIST => ManifestKind::Index,
            // OCI manifests may omit mediaType; tell them apart by shape.
            "" | "application/json" if doc.schema_version == 2 => {
                if doc.config.is_some() {
                    ManifestKind::Manifest
                } else {
                    ManifestKind::Index
                }
            }
            other => {
                return Err(ImageError::UnsupportedMediaType {
                    what: "manifest",
                    digest: digest.to_string(),
                    media_type: other.to_string(),
                })
            }
        };
        if kind == ManifestKind::Manifest && doc.config.is_none() {
            return Err(ImageError::InvalidContent {
                what: "manifest",
                digest: digest.to_string(),
                reason: "no config descriptor".into(),
            });
        }
        Ok((doc, kind))
    }

    /// The index entry for `platform` (`os/arch[/variant]`), if any.
    pub fn select_platform(&self, platform: &Platform) -> Option<&Descriptor> {
        let matches = |d: &&Descriptor| {
            d.platform.as_ref().is_some_and(|p| {
                p.os == platform.os
                    && p.architecture == platform.architecture
                    && (platform.variant.is_none()
                        || p.variant.is_none()
                        || p.variant == platform.variant)
            })
        };
        self.manifests.iter().find(matches)
    }
}

/// The platform of this host, in the spelling of image indexes.
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        other => (other, None),
    };
    Platform {
        architecture: architecture.to_string(),
        os: "linux".to_string(),
        variant: variant.map(str::to_string),
    }
}

/// The compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// The compression a layer media type declares, or an error for non-layer types.
pub fn layer_compression(media_type: &str, digest: &Digest) -> Result<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(Compression::Zstd),
        other => Err(ImageError::UnsupportedMediaType {
            what: "layer",
            digest: digest.to_string(),
            media_type: other.to_string(),
        }),
    }
}

/// The image config document (the subset the runtime reads), OCI and Docker alike.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ConfigDoc {
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// Creation time (RFC 3339), if recorded.
    #[serde(default)]
    pub created: Option<String>,
    /// The defaults for containers run from the image.
    #[serde(default)]
    pub config: Option<ContainerDefaults>,
    /// The layers' DiffIDs.
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// The uncompressed layers' digests, base first.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// The `config` object of an image config (Docker's field spelling).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerDefaults {
    /// `user`, `uid`, `user:group` or `uid:gid`.
    #[serde(default)]
    pub user: Option<String>,
    /// `NAME=value` entries.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Entrypoint argv.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Signal that stops the container.
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// `port/proto` keys.
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Volume paths as keys.
    #[serde(default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// Labels.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// What a container run from an image inherits from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    /// `USER`: a name or uid, optionally `:group`.
    pub user: String,
    /// `ENV` entries, `NAME=value`.
    pub env: Vec<String>,
    /// `ENTRYPOINT`.
    pub entrypoint: Vec<String>,
    /// `CMD`.
    pub cmd: Vec<String>,
    /// `WORKDIR`.
    pub working_dir: String,
    /// `STOPSIGNAL`.
    pub stop_signal: String,
    /// `EXPOSE`d ports, `port/proto`.
    pub exposed_ports: Vec<String>,
    /// `VOLUME` paths.
    pub volumes: Vec<String>,
    /// `LABEL`s.
    pub labels: BTreeMap<String, String>,
}

impl ConfigDoc {
    /// Parses an image config blob.
    pub fn parse(bytes: &[u8], digest: &Digest) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| ImageError::InvalidContent {
            what: "image config",
            digest: digest.to_string(),
            reason: format!("invalid JSON: {e}"),
        })
    }

    /// The container defaults, flattened.
    pub fn image_config(&self) -> ImageConfig {
        let Some(c) = &self.config else {
            return ImageConfig::default();
        };
        ImageConfig {
            user: c.user.clone().unwrap_or_default(),
            env: c.env.clone().unwrap_or_default(),
            entrypoint: c.entrypoint.clone().unwrap_or_default(),
            cmd: c.cmd.clone().unwrap_or_default(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            stop_signal: c.stop_signal.clone().unwrap_or_default(),
            exposed_ports: c
                .exposed_ports
                .as_ref()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            volumes: c
                .volumes
                .as_ref()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            labels: c.labels.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    #[test]
    fn manifest_kinds_by_media_type_and_shape() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
                "config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{}","size":3}},
                "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":5}}]}}"#,
            d("c"),
            d("l")
        );
        let (doc, kind) = ManifestDoc::parse(m.as_bytes(), None, &d("m")).unwrap();
        assert_eq!(kind, ManifestKind::Manifest);
        assert_eq!(doc.layers.len(), 1);
        let bare_index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{}","size":1,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
               {{"digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            d("a"),
            d("b")
        );
        let (doc, kind) = ManifestDoc::parse(bare_index.as_bytes(), None, &d("i")).unwrap();
        assert_eq!(kind, ManifestKind::Index);
        let amd64 = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        };
        assert_eq!(doc.select_platform(&amd64).unwrap().digest, d("b"));
        let arm64 = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
        };
        assert_eq!(doc.select_platform(&arm64).unwrap().digest, d("a"));
    }

    #[test]
    fn schema1_is_unsupported() {
        let m = r#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        let ct = "application/vnd.docker.distribution.manifest.v1+prettyjws";
        let err = ManifestDoc::parse(m.as_bytes(), Some(ct), &d("m")).unwrap_err();
        assert!(
            matches!(err, ImageError::UnsupportedMediaType { .. }),
            "{err}"
        );
    }

    #[test]
    fn config_defaults_flatten() {
        let c = r#"{"architecture":"amd64","os":"linux","config":{"User":"1000:1000","Env":null,
            "Cmd":["sh"],"ExposedPorts":{"80/tcp":{}},"WorkingDir":"/w","StopSignal":"SIGQUIT"},
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cfg = ConfigDoc::parse(c.as_bytes(), &d("c"))
            .unwrap()
            .image_config();
        assert_eq!(cfg.user, "1000:1000");
        assert!(cfg.env.is_empty());
        assert_eq!(cfg.cmd, ["sh"]);
        assert_eq!(cfg.exposed_ports, ["80/tcp"]);
        assert_eq!(cfg.working_dir, "/w");
        assert_eq!(cfg.stop_signal, "SIGQUIT");
    }

    #[test]
    fn layer_media_types() {
        let x = d("x");
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip", &x).unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+zstd", &x).unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar", &x).unwrap(),
            Compression::None
        );
        assert!(layer_compression("application/octet-stream", &x).is_err());
    }
}
