//! The image store: image, layer and rootfs records in the metadata database, layers unpacked
//! under `<root>/layers/<chain-id-hex>/`, blobs in the content store, and the garbage
//! collection that ties them together.
//!
//! The database is the source of truth; an in-memory copy of the records (loaded at start-up,
//! updated after each committed write) answers lookups without touching disk. Every write
//! happens under one mutex, inside one database transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use corral_store::{Store, Table, IMAGES};
use futures::future::{BoxFuture, Shared};

use crate::config::RegistryConfig;
use crate::content::{unique_suffix, ContentStore};
use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::media::ImageConfig;
use crate::reference::Reference;
use crate::registry::RegistryClient;
use crate::unpack::DiskUsage;

/// Image names (`repo:tag`, `repo@digest`) → image id.
pub const IMAGE_NAMES: Table = Table::new("image_names");
/// Unpacked layers, keyed by ChainID.
pub const IMAGE_LAYERS: Table = Table::new("image_layers");
/// Container rootfs leases (the layers a container's overlay uses), keyed by container id.
pub const IMAGE_ROOTFS: Table = Table::new("image_rootfs");

/// One image: its names, config and layers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ImageRecord {
    /// The image id: the digest of its config.
    pub id: String,
    /// `domain/repo:tag` names.
    pub repo_tags: Vec<String>,
    /// `domain/repo@digest` names (the digest of the manifest or index pulled).
    pub repo_digests: Vec<String>,
    /// Bytes of the image's content as distributed (config plus compressed layers).
    pub size: u64,
    /// What containers inherit from the image.
    pub config: ImageConfig,
    /// The layers' ChainIDs, base first.
    pub chain_ids: Vec<String>,
    /// The layers' DiffIDs, base first.
    pub diff_ids: Vec<String>,
    /// Digest of the platform manifest.
    pub manifest_digest: String,
    /// Content-store blobs this image keeps (config, manifest, index).
    pub blobs: Vec<String>,
    /// Whether the image is exempt from kubelet's image garbage collection.
    pub pinned: bool,
    /// Creation time from the config, if recorded.
    pub created: Option<String>,
}

impl ImageRecord {
    /// Every name of the image: its tags, then its digests.
    pub fn names(&self) -> Vec<String> {
        self.repo_tags
            .iter()
            .chain(&self.repo_digests)
            .cloned()
            .collect()
    }

    /// The user a container runs as by default: a uid if `USER` is numeric, else a name.
    pub fn user(&self) -> (Option<i64>, String) {
        let user = self.config.user.split(':').next().unwrap_or_default();
        if user.is_empty() {
            return (None, String::new());
        }
        match user.parse::<i64>() {
            Ok(uid) => (Some(uid), String::new()),
            Err(_) => (None, user.to_string()),
        }
    }

    /// The top layer's ChainID (the image's rootfs identity), if it has layers.
    pub fn chain_id(&self) -> Option<&str> {
        self.chain_ids.last().map(String::as_str)
    }
}

/// One unpacked layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LayerRecord {
    /// ChainID: names the directory and identifies the layer with everything below it.
    pub chain_id: String,
    /// Digest of the uncompressed layer tar.
    pub diff_id: String,
    /// The ChainID of the layer below, if any.
    pub parent: Option<String>,
    /// Size of the blob it was unpacked from.
    pub blob_size: u64,
    /// Disk space the unpacked directory takes.
    pub usage: DiskUsage,
}

/// The layers a container's rootfs is built from; they are kept while the lease exists.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RootfsLease {
    /// The container.
    pub container_id: String,
    /// The image it was created from.
    pub image_id: String,
    /// The layers, base first.
    pub chain_ids: Vec<String>,
}

/// Space used by the image store, for `ImageFsInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    /// The directory holding the unpacked layers.
    pub mountpoint: PathBuf,
    /// Bytes used by layers and blobs.
    pub used_bytes: u64,
    /// Inodes used by layers and blobs.
    pub inodes_used: u64,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) images: BTreeMap<String, ImageRecord>,
    pub(crate) names: BTreeMap<String, String>,
    pub(crate) layers: BTreeMap<String, LayerRecord>,
    pub(crate) leases: BTreeMap<String, RootfsLease>,
    /// Layers and blobs an in-flight pull or import relies on; collection skips them.
    pub(crate) pins: HashMap<String, usize>,
}

pub(crate) type PullResult = std::result::Result<ImageRecord, Arc<ImageError>>;
pub(crate) type SharedPull = Shared<BoxFuture<'static, PullResult>>;

/// The image store. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct ImageStore {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) layers_dir: PathBuf,
    pub(crate) containers_dir: PathBuf,
    pub(crate) content: ContentStore,
    pub(crate) db: Arc<Store>,
    pub(crate) registry: RegistryClient,
    pub(crate) state: Mutex<State>,
    pub(crate) inflight: Mutex<HashMap<String, SharedPull>>,
    pub(crate) layer_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a directory entry under `layers/` is a temporary (being written or deleted).
fn is_temp_name(name: &str) -> bool {
    name.starts_with(".tmp-") || name.starts_with(".del-")
}

impl ImageStore {
    /// Opens the store under `root` (`content/`, `layers/`, `containers/`), loads its records,
    /// removes what an interrupted pull or removal left behind, and collects unused layers.
    pub fn open(db: Arc<Store>, root: &Path, registry: RegistryConfig) -> Result<Self> {
        let layers_dir = root.join("layers");
        let containers_dir = root.join("containers");
        for dir in [&layers_dir, &containers_dir] {
            fs::create_dir_all(dir).map_err(ImageError::io("create directory", dir))?;
        }
        let content = ContentStore::open(&root.join("content"))?;
        let mut state = State {
            images: db.list::<ImageRecord>(IMAGES)?.into_iter().collect(),
            names: db.list::<String>(IMAGE_NAMES)?.into_iter().collect(),
            layers: db.list::<LayerRecord>(IMAGE_LAYERS)?.into_iter().collect(),
            leases: db.list::<RootfsLease>(IMAGE_ROOTFS)?.into_iter().collect(),
            pins: HashMap::new(),
        };
        reconcile(&db, &layers_dir, &mut state)?;
        let store = ImageStore {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                layers_dir,
                containers_dir,
                content,
                db,
                registry: RegistryClient::new(registry)?,
                state: Mutex::new(state),
                inflight: Mutex::new(HashMap::new()),
                layer_locks: Mutex::new(HashMap::new()),
            }),
        };
        store.collect_garbage()?;
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The directory of an unpacked layer.
    pub fn layer_dir(&self, chain_id: &str) -> PathBuf {
        self.inner.layer_dir(chain_id)
    }

    /// Every image, ordered by id.
    pub fn list(&self) -> Vec<ImageRecord> {
        lock(&self.inner.state).images.values().cloned().collect()
    }

    /// Finds an image by id (`sha256:…` or bare hex), by name (`repo:tag`, `repo@digest`,
    /// normalised like a pull), or by a unique id prefix.
    pub fn resolve(&self, reference: &str) -> Option<ImageRecord> {
        let state = lock(&self.inner.state);
        resolve_id(&state, reference).and_then(|id| state.images.get(&id).cloned())
    }

    /// The raw image config JSON of an image, by id.
    pub fn config_blob(&self, id: &str) -> Result<Option<Vec<u8>>> {
        match Digest::parse(id) {
            Ok(digest) => self.inner.content.read(&digest),
            Err(_) => Ok(None),
        }
    }

    /// One layer's record.
    pub fn layer(&self, chain_id: &str) -> Option<LayerRecord> {
        lock(&self.inner.state).layers.get(chain_id).cloned()
    }

    /// Removes an image with all its names, then frees the blobs and layers nothing else uses
    /// (layers under a container's rootfs stay). Returns whether the image existed.
    pub fn remove(&self, reference: &str) -> Result<bool> {
        {
            let mut state = lock(&self.inner.state);
            let Some(id) = resolve_id(&state, reference) else {
                return Ok(false);
            };
            let names: Vec<String> = state
                .names
                .iter()
                .filter(|(_, v)| **v == id)
                .map(|(k, _)| k.clone())
                .collect();
            self.inner.db.write(|tx| {
                tx.delete(IMAGES, &id)?;
                for name in &names {
                    tx.delete(IMAGE_NAMES, name)?;
                }
                Ok(())
            })?;
            state.images.remove(&id);
            for name in &names {
                state.names.remove(name);
            }
            tracing::info!(image = %id, "removed image");
        }
        self.collect_garbage()?;
        Ok(true)
    }

    /// Marks an image as pinned (or not).
    pub fn set_pinned(&self, reference: &str, pinned: bool) -> Result<bool> {
        let mut state = lock(&self.inner.state);
        let Some(id) = resolve_id(&state, reference) else {
            return Ok(false);
        };
        let Some(mut record) = state.images.get(&id).cloned() else {
            return Ok(false);
        };
        record.pinned = pinned;
        self.inner.db.put(IMAGES, &id, &record)?;
        state.images.insert(id, record);
        Ok(true)
    }

    /// Bytes and inodes used by layers and blobs.
    pub fn fs_usage(&self) -> Result<FsUsage> {
        let (mut used_bytes, mut inodes_used) = {
            let state = lock(&self.inner.state);
            state.layers.values().fold((0u64, 0u64), |(b, i), l| {
                (b + l.usage.bytes, i + l.usage.inodes)
            })
        };
        for (_, size) in self.inner.content.list()? {
            used_bytes += size;
            inodes_used += 1;
        }
        Ok(FsUsage {
            mountpoint: self.inner.layers_dir.clone(),
            used_bytes,
            inodes_used,
        })
    }

    /// Deletes layers and blobs that no image, container or in-flight pull uses.
    pub fn collect_garbage(&self) -> Result<()> {
        self.inner.collect_garbage()
    }
}

impl Inner {
    pub(crate) fn layer_dir(&self, chain_id: &str) -> PathBuf {
        let hex = chain_id.strip_prefix("sha256:").unwrap_or(chain_id);
        self.layers_dir.join(hex)
    }

    pub(crate) fn collect_garbage(&self) -> Result<()> {
        let mut doomed_dirs = Vec::new();
        {
            let mut state = lock(&self.state);
            let mut used: BTreeSet<&str> = BTreeSet::new();
            for image in state.images.values() {
                used.extend(image.chain_ids.iter().map(String::as_str));
                used.extend(image.blobs.iter().map(String::as_str));
            }
            for lease in state.leases.values() {
                used.extend(lease.chain_ids.iter().map(String::as_str));
            }
            used.extend(state.pins.keys().map(String::as_str));
            let dead_layers: Vec<String> = state
                .layers
                .keys()
                .filter(|k| !used.contains(k.as_str()))
                .cloned()
                .collect();
            let dead_blobs: Vec<Digest> = self
                .content
                .list()?
                .into_iter()
                .map(|(d, _)| d)
                .filter(|d| !used.contains(d.as_str()))
                .collect();
            if !dead_layers.is_empty() {
                self.db.write(|tx| {
                    for chain in &dead_layers {
                        tx.delete(IMAGE_LAYERS, chain)?;
                    }
                    Ok(())
                })?;
            }
            for chain in &dead_layers {
                state.layers.remove(chain);
                // Renamed under the lock, so a pull that finds the layer missing and unpacks it
                // again never collides with the old directory.
                let dir = self.layer_dir(chain);
                let doomed = self.layers_dir.join(format!(".del-{}", unique_suffix()));
                match fs::rename(&dir, &doomed) {
                    Ok(()) => doomed_dirs.push(doomed),
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot move unused layer aside")
                    }
                }
                tracing::debug!(layer = %chain, "removing unused layer");
            }
            for blob in &dead_blobs {
                self.content.remove(blob)?;
            }
        }
        for dir in doomed_dirs {
            fs::remove_dir_all(&dir).map_err(ImageError::io("remove layer", &dir))?;
        }
        Ok(())
    }

    /// Pins layers or blobs for the life of the returned guard.
    pub(crate) fn pin(self: &Arc<Self>, keys: impl IntoIterator<Item = String>) -> PinGuard {
        let keys: Vec<String> = keys.into_iter().collect();
        let mut state = lock(&self.state);
        for k in &keys {
            *state.pins.entry(k.clone()).or_default() += 1;
        }
        PinGuard {
            inner: self.clone(),
            keys,
        }
    }

    pub(crate) fn has_layer(&self, chain_id: &str) -> bool {
        lock(&self.state).layers.contains_key(chain_id)
    }

    /// Serialises work on one layer across pulls and imports.
    pub(crate) async fn layer_lock(&self, chain_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.layer_mutex(chain_id).lock_owned().await
    }

    /// [`Self::layer_lock`] for blocking contexts (imports).
    pub(crate) fn layer_lock_blocking(&self, chain_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.layer_mutex(chain_id).blocking_lock_owned()
    }

    fn layer_mutex(&self, chain_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = lock(&self.layer_locks);
        locks.retain(|_, m| Arc::strong_count(m) > 1);
        locks.entry(chain_id.to_string()).or_default().clone()
    }

    /// A fresh temporary directory under `layers/` for unpacking.
    pub(crate) fn temp_layer_dir(&self) -> Result<TempDir> {
        let path = self.layers_dir.join(format!(".tmp-{}", unique_suffix()));
        fs::create_dir(&path).map_err(ImageError::io("create directory", &path))?;
        Ok(TempDir(Some(path)))
    }

    /// Moves an unpacked layer into place and records it.
    pub(crate) fn install_layer(&self, mut tmp: TempDir, record: LayerRecord) -> Result<()> {
        let mut state = lock(&self.state);
        if state.layers.contains_key(&record.chain_id) {
            return Ok(());
        }
        let dir = self.layer_dir(&record.chain_id);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(ImageError::io("remove stale layer", &dir))?;
        }
        let Some(src) = tmp.0.take() else {
            return Err(ImageError::Task(
                "temporary layer directory already used".into(),
            ));
        };
        fs::rename(&src, &dir).map_err(ImageError::io("move layer into place", &dir))?;
        if let Err(e) = self.db.put(IMAGE_LAYERS, &record.chain_id, &record) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        tracing::debug!(layer = %record.chain_id, "layer unpacked");
        state.layers.insert(record.chain_id.clone(), record);
        Ok(())
    }

    /// Records an image under `names`, merging with an existing record of the same id and
    /// moving tags away from images that had them.
    pub(crate) fn commit_image(
        &self,
        record: ImageRecord,
        names: &[String],
    ) -> Result<ImageRecord> {
        let mut state = lock(&self.state);
        for chain in &record.chain_ids {
            if !state.layers.contains_key(chain) {
                return Err(ImageError::LayerMissing {
                    image: record.id.clone(),
                    chain_id: chain.clone(),
                });
            }
        }
        let mut merged = match state.images.get(&record.id) {
            Some(old) => {
                let mut m = record.clone();
                m.pinned = old.pinned;
                for (mine, theirs) in [
                    (&mut m.repo_tags, &old.repo_tags),
                    (&mut m.repo_digests, &old.repo_digests),
                    (&mut m.blobs, &old.blobs),
                ] {
                    for t in theirs {
                        if !mine.contains(t) {
                            mine.push(t.clone());
                        }
                    }
                }
                m
            }
            None => record,
        };
        merged.repo_tags.sort();
        merged.repo_digests.sort();
        let mut changed_others: BTreeMap<String, ImageRecord> = BTreeMap::new();
        for name in names {
            if let Some(other_id) = state.names.get(name).filter(|o| **o != merged.id) {
                if let Some(other) = state.images.get(other_id) {
                    let other = changed_others
                        .entry(other_id.clone())
                        .or_insert_with(|| other.clone());
                    other.repo_tags.retain(|t| t != name);
                    other.repo_digests.retain(|t| t != name);
                }
            }
        }
        self.db.write(|tx| {
            tx.put(IMAGES, &merged.id, &merged)?;
            for other in changed_others.values() {
                tx.put(IMAGES, &other.id, other)?;
            }
            for name in names {
                tx.put(IMAGE_NAMES, name, &merged.id)?;
            }
            Ok(())
        })?;
        for (id, other) in changed_others {
            state.images.insert(id, other);
        }
        for name in names {
            state.names.insert(name.clone(), merged.id.clone());
        }
        state.images.insert(merged.id.clone(), merged.clone());
        tracing::info!(image = %merged.id, names = ?names, "image stored");
        Ok(merged)
    }
}

/// Releases pins when dropped.
pub(crate) struct PinGuard {
    inner: Arc<Inner>,
    keys: Vec<String>,
}

impl PinGuard {
    /// Pins more keys under the same guard.
    pub(crate) fn add(&mut self, keys: impl IntoIterator<Item = String>) {
        let mut state = lock(&self.inner.state);
        for k in keys {
            *state.pins.entry(k.clone()).or_default() += 1;
            self.keys.push(k);
        }
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut state = lock(&self.inner.state);
        for k in &self.keys {
            if let Some(n) = state.pins.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    state.pins.remove(k);
                }
            }
        }
    }
}

/// A temporary directory removed on drop unless it was moved into place.
pub(crate) struct TempDir(pub(crate) Option<PathBuf>);

impl TempDir {
    pub(crate) fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            if let Err(e) = fs::remove_dir_all(&path) {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove temporary directory");
            }
        }
    }
}

/// Resolves a reference to an image id (see [`ImageStore::resolve`]).
pub(crate) fn resolve_id(state: &State, reference: &str) -> Option<String> {
    let reference = reference.trim();
    if reference.is_empty() {
        return None;
    }
    if state.images.contains_key(reference) {
        return Some(reference.to_string());
    }
    let is_hex =
        |s: &str| !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if reference.len() == 64 && is_hex(reference) {
        let id = format!("sha256:{reference}");
        if state.images.contains_key(&id) {
            return Some(id);
        }
    }
    if let Ok(r) = Reference::parse(reference) {
        let name = match r.digest() {
            Some(d) => r.digested_name(d),
            None => r.tagged_name().unwrap_or_else(|| r.to_string()),
        };
        if let Some(id) = state.names.get(&name) {
            return Some(id.clone());
        }
    }
    let prefix = reference.strip_prefix("sha256:").unwrap_or(reference);
    if prefix.len() >= 3 && is_hex(prefix) {
        let mut matches = state.images.keys().filter(|id| {
            id.strip_prefix("sha256:")
                .is_some_and(|h| h.starts_with(prefix))
        });
        if let (Some(id), None) = (matches.next(), matches.next()) {
            return Some(id.clone());
        }
    }
    None
}

/// Makes records and directories agree after a crash: layer records whose directory is gone
/// are dropped, directories without a record and temporaries are removed, names pointing at
/// no image are dropped.
fn reconcile(db: &Store, layers_dir: &Path, state: &mut State) -> Result<()> {
    let missing: Vec<String> = state
        .layers
        .keys()
        .filter(|chain| {
            let hex = chain.strip_prefix("sha256:").unwrap_or(chain);
            !layers_dir.join(hex).is_dir()
        })
        .cloned()
        .collect();
    let dangling_names: Vec<String> = state
        .names
        .iter()
        .filter(|(_, id)| !state.images.contains_key(*id))
        .map(|(n, _)| n.clone())
        .collect();
    if !missing.is_empty() || !dangling_names.is_empty() {
        db.write(|tx| {
            for chain in &missing {
                tx.delete(IMAGE_LAYERS, chain)?;
            }
            for name in &dangling_names {
                tx.delete(IMAGE_NAMES, name)?;
            }
            Ok(())
        })?;
    }
    for chain in &missing {
        tracing::warn!(layer = %chain, "layer directory missing; the layer will be fetched again");
        state.layers.remove(chain);
    }
    for name in &dangling_names {
        state.names.remove(name);
    }
    for entry in fs::read_dir(layers_dir).map_err(ImageError::io("list layers", layers_dir))? {
        let entry = entry.map_err(ImageError::io("list layers", layers_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let known = state.layers.contains_key(&format!("sha256:{name}"));
        if is_temp_name(&name) || !known {
            let path = entry.path();
            tracing::info!(dir = %path.display(), "removing leftover layer directory");
            let res = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            res.map_err(ImageError::io("remove leftover", &path))?;
        }
    }
    Ok(())
}
