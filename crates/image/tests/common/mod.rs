//! Helpers for the image crate's tests: the registry harness and image builder shared with the
//! end-to-end tests, plus an image store in a temp dir.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../../tests/src/registry.rs"]
mod registry;

pub use registry::*;

use std::path::Path;

macro_rules! skip_unless_ready {
    () => {
        if let Some(reason) = common::skip_reason() {
            eprintln!("skipping: {reason}");
            return;
        }
    };
}
pub(crate) use skip_unless_ready;

/// Registry config TOML → `RegistryConfig`.
pub fn registry_config(toml_text: &str) -> corral_image::RegistryConfig {
    #[derive(serde::Deserialize)]
    struct Root {
        #[serde(default)]
        registry: corral_image::RegistryConfig,
    }
    toml::from_str::<Root>(toml_text).unwrap().registry
}

/// An image store in a fresh temp dir.
pub struct TestStore {
    pub store: corral_image::ImageStore,
    pub dir: tempfile::TempDir,
}

impl TestStore {
    pub fn new(config: corral_image::RegistryConfig) -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let store = Self::open(dir.path(), config);
        TestStore { dir, store }
    }

    pub fn open(root: &Path, config: corral_image::RegistryConfig) -> corral_image::ImageStore {
        let db = std::sync::Arc::new(corral_store::Store::open(&root.join("meta.redb")).unwrap());
        corral_image::ImageStore::open(db, root, config).unwrap()
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Entries under layers/ and content/ (temporaries included).
    pub fn files(&self) -> (Vec<String>, Vec<String>) {
        (
            tree(&self.root().join("layers")),
            tree(&self.root().join("content")),
        )
    }
}
