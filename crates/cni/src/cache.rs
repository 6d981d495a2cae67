//! The on-disk cache of ADD results: one JSON file per attachment (network,
//! container id, interface), holding the result and everything needed to run
//! DEL after the runtime restarts.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::NetworkConfigList;
use crate::error::{CniError, Result};
use crate::names::{validate_container_id, validate_if_name, validate_network_name};
use crate::result::CniResult;
use crate::runtime::RuntimeConf;

/// The format marker written into every cache file.
const CACHE_KIND: &str = "corralCniCacheV1";

/// Distinguishes temp files written concurrently by this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What the cache knows about one attachment.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedAttachment {
    /// The network configuration the attachment was made with.
    pub network: NetworkConfigList,
    /// The runtime parameters of the ADD (netns, CNI_ARGS, capability args).
    pub runtime: RuntimeConf,
    /// The final ADD result.
    pub result: CniResult,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheFile {
    kind: String,
    network_name: String,
    runtime: RuntimeConf,
    config: Value,
    result: CniResult,
}

/// The `results` directory under the runtime's CNI cache dir.
#[derive(Debug, Clone)]
pub(crate) struct ResultCache {
    dir: PathBuf,
}

impl ResultCache {
    pub(crate) fn new(cache_dir: &Path) -> Self {
        ResultCache {
            dir: cache_dir.join("results"),
        }
    }

    /// The file for one attachment. The three parts cannot contain ':'
    /// (network names and container ids are `[a-zA-Z0-9_.-]`, interface names
    /// exclude ':' and '/'), so names never collide or escape the directory.
    pub(crate) fn path(&self, network: &str, container_id: &str, if_name: &str) -> Result<PathBuf> {
        validate_network_name(network)?;
        validate_container_id(container_id)?;
        validate_if_name(if_name)?;
        Ok(self.dir.join(format!("{network}:{container_id}:{if_name}")))
    }

    /// Writes the attachment atomically (temp file, rename), without an fsync, as libcni
    /// does: readers never see half a file, and a crashed runtime finds it in the page cache.
    /// Across a power loss the cache need not survive — the runtime keeps it in its volatile
    /// state directory, and after a reboot DEL runs from the network config without it — while
    /// an fsync cost 10-25 ms of every pod's start on a busy disk.
    pub(crate) fn store(
        &self,
        network: &NetworkConfigList,
        runtime: &RuntimeConf,
        result: &CniResult,
    ) -> Result<()> {
        let path = self.path(network.name(), &runtime.container_id, &runtime.if_name)?;
        let file = CacheFile {
            kind: CACHE_KIND.to_owned(),
            network_name: network.name().to_owned(),
            runtime: runtime.clone(),
            config: network.to_json(),
            result: result.clone(),
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| CniError::CacheCorrupt {
            path: path.clone(),
            reason: format!("encode: {e}"),
        })?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| CniError::Cache {
                operation: "create dir",
                path: self.dir.clone(),
                source,
            })?;
        let temp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = write_new(&temp, &bytes).and_then(|()| {
            std::fs::rename(&temp, &path).map_err(|source| CniError::Cache {
                operation: "rename into place",
                path: path.clone(),
                source,
            })
        });
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }

    /// Reads an attachment; `None` when nothing is cached.
    pub(crate) fn load(
        &self,
        network: &str,
        container_id: &str,
        if_name: &str,
    ) -> Result<Option<CachedAttachment>> {
        let path = self.path(network, container_id, if_name)?;
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CniError::Cache {
                    operation: "read",
                    path,
                    source,
                })
            }
        };
        let corrupt = |reason: String| CniError::CacheCorrupt {
            path: path.clone(),
            reason,
        };
        let file: CacheFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.kind != CACHE_KIND {
            return Err(corrupt(format!("unknown kind {:?}", file.kind)));
        }
        if file.network_name != network
            || file.runtime.container_id != container_id
            || file.runtime.if_name != if_name
        {
            return Err(corrupt("written for another attachment".into()));
        }
        let config = NetworkConfigList::from_json(file.config)
            .map_err(|e| corrupt(format!("cached config: {e}")))?;
        Ok(Some(CachedAttachment {
            network: config,
            runtime: file.runtime,
            result: file.result,
        }))
    }

    /// Removes an attachment's file; a missing file is fine.
    pub(crate) fn remove(&self, network: &str, container_id: &str, if_name: &str) -> Result<()> {
        let path = self.path(network, container_id, if_name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CniError::Cache {
                operation: "remove",
                path,
                source,
            }),
        }
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let error = |operation| {
        move |source| CniError::Cache {
            operation,
            path: path.to_owned(),
            source,
        }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(error("create"))?;
    file.write_all(bytes).map_err(error("write"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn network() -> NetworkConfigList {
        NetworkConfigList::from_conflist_bytes(
            br#"{"cniVersion":"1.0.0","name":"net1","plugins":[{"type":"bridge"}]}"#,
        )
        .expect("parse")
    }

    fn runtime() -> RuntimeConf {
        RuntimeConf {
            container_id: "c1".into(),
            netns_path: "/run/netns/x".into(),
            if_name: "eth0".into(),
            args: vec![("K8S_POD_NAME".into(), "p".into())],
            capability_args: json!({"portMappings": []})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn result() -> CniResult {
        serde_json::from_value(json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}))
            .expect("result")
    }

    #[test]
    fn store_load_remove_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ResultCache::new(dir.path());
        assert_eq!(cache.load("net1", "c1", "eth0").expect("load"), None);
        cache
            .store(&network(), &runtime(), &result())
            .expect("store");
        let cached = cache
            .load("net1", "c1", "eth0")
            .expect("load")
            .expect("some");
        assert_eq!(cached.network, network());
        assert_eq!(cached.runtime, runtime());
        assert_eq!(cached.result, result());
        let entries: Vec<_> = std::fs::read_dir(dir.path().join("results"))
            .expect("readdir")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(entries, ["net1:c1:eth0"], "no temp files left behind");
        cache.remove("net1", "c1", "eth0").expect("remove");
        cache.remove("net1", "c1", "eth0").expect("remove again");
        assert_eq!(cache.load("net1", "c1", "eth0").expect("load"), None);
    }

    #[test]
    fn corrupt_or_foreign_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ResultCache::new(dir.path());
        let path = cache.path("net1", "c1", "eth0").expect("path");
        std::fs::create_dir_all(dir.path().join("results")).expect("mkdir");
        std::fs::write(&path, "{").expect("write");
        assert!(matches!(
            cache.load("net1", "c1", "eth0"),
            Err(CniError::CacheCorrupt { .. })
        ));
    }

    #[test]
    fn rejects_names_that_would_escape_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ResultCache::new(dir.path());
        assert!(cache.path("net1", "../x", "eth0").is_err());
        assert!(cache.path("../net", "c1", "eth0").is_err());
        assert!(cache.path("net1", "c1", "a/b").is_err());
    }
}
