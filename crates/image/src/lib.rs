//! corral's images: pulling from OCI distribution registries, a content-addressed store,
//! layers unpacked once into directories keyed by ChainID, and overlay root filesystems for
//! containers built from them.
//!
//! [`ImageStore`] is the entry point: [`ImageStore::open`] with the runtime's metadata database,
//! its root directory and the `[registry]` configuration; then [`ImageStore::pull`],
//! [`ImageStore::resolve`], [`ImageStore::list`], [`ImageStore::remove`],
//! [`ImageStore::import`], and [`ImageStore::mount_rootfs`] / [`ImageStore::unmount_rootfs`] /
//! [`ImageStore::remove_rootfs`] for containers.
//!
//! On disk, under the root: `content/sha256/<hex>` (manifests, indexes, configs),
//! `content/ingest/` (temporaries), `layers/<chain-id-hex>/` (unpacked layers, overlay
//! lowerdirs), `containers/<id>/{upper,work}` (container writable layers).

mod config;
mod content;
mod digest;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod import;
pub mod media;
mod pull;
mod reference;
pub mod registry;
mod rootfs;
mod store;
pub mod unpack;
pub mod usage;

pub use config::{AuthConfig, HostConfig, MirrorConfig, RegistryConfig, TlsConfig};
pub use digest::{chain_ids, Digest};
pub use error::{ErrorKind, ImageError, Result};
pub use media::ImageConfig;
pub use reference::Reference;
pub use rootfs::RootfsMount;
pub use store::{
    FsUsage, ImageRecord, ImageStore, LayerRecord, RootfsLease, IMAGE_LAYERS, IMAGE_NAMES,
    IMAGE_ROOTFS,
};
