//! A pod's cgroup: created in every hierarchy, limited, populated and removed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::driver::{CgroupDriver, ChildCgroupPath};
use crate::error::{CgroupError, Result};
use crate::fs::{self, Removal};
use crate::layout::{CgroupLayout, CgroupMode, CgroupVersion, Hierarchy};
use crate::resources::{self, Resources, V1MemoryState};
use crate::systemd::{self, Started, UnitManager, SYSTEMD_RUNNING_MARKER};

/// The cgroup of one pod sandbox, in every hierarchy of the host.
///
/// It remembers which directories it created, so that [`PodCgroup::remove`] takes away only
/// what the runtime made (a kubelet usually creates the pod cgroup itself; then nothing but the
/// leaves inside it is removed). The whole value is serde-serializable so the caller can keep
/// it in its database and remove the cgroup after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodCgroup {
    layout: CgroupLayout,
    driver: CgroupDriver,
    cgroup_parent: String,
    relative_path: PathBuf,
    created_dirs: Vec<PathBuf>,
    /// Set when systemd manages this pod's slice (systemd driver with systemd running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    systemd: Option<SystemdSlice>,
}

/// The pod slice systemd manages for a [`PodCgroup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemdSlice {
    /// The slice unit (`kubepods-burstable-pod<uid>.slice`).
    pub name: String,
    /// Whether corral started it (else the kubelet or an earlier sandbox of the pod did).
    pub started: bool,
}

impl PodCgroup {
    /// Creates the pod cgroup named by the CRI `cgroup_parent` (and every missing ancestor)
    /// in every hierarchy of `layout`. A v1 cpuset directory gets its parent's `cpuset.cpus`
    /// and `cpuset.mems` so tasks can join it. On failure, whatever was created is removed.
    pub fn create(
        layout: &CgroupLayout,
        driver: CgroupDriver,
        cgroup_parent: &str,
    ) -> Result<Self> {
        let relative_path = driver.pod_relative_path(cgroup_parent)?;
        if driver == CgroupDriver::Systemd && Path::new(SYSTEMD_RUNNING_MARKER).exists() {
            tracing::warn!(
                cgroup_parent,
                "systemd is running, but this pod slice is made through cgroupfs: \
                 systemd will not know about it (use PodCgroup::create_with_systemd)"
            );
        }
        let mut pod = Self {
            layout: layout.clone(),
            driver,
            cgroup_parent: cgroup_parent.to_owned(),
            relative_path,
            created_dirs: Vec::new(),
            systemd: None,
        };
        for hierarchy in layout.hierarchies() {
            if let Err(error) = make_path(hierarchy, &pod.relative_path, &mut pod.created_dirs) {
                if let Err(cleanup) = pod.remove() {
                    tracing::warn!(%cleanup, "could not undo a partly created pod cgroup");
                }
                return Err(error);
            }
        }
        if layout.mode() == CgroupMode::V2 {
            pod.offer_controllers_to_children();
        }
        tracing::debug!(
            cgroup_parent,
            created = pod.created_dirs.len(),
            "created pod cgroup"
        );
        Ok(pod)
    }

    /// On a v2 host, enables every controller the root offers in the `cgroup.subtree_control`
    /// of each ancestor of the pod cgroup, as runc does for a container's ancestors, so that
    /// the pod's `cgroup.controllers` lists them and its containers can be given any limit the
    /// host supports (CreateContainer refuses a limit on a controller the pod lacks). Best
    /// effort: a controller an ancestor refuses (a `cgroup_parent` holding processes of its
    /// own, say) is left out with a warning.
    fn offer_controllers_to_children(&self) {
        let Some(unified) = self.layout.unified() else {
            return;
        };
        let root = unified.mount_point().to_path_buf();
        let offered = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let controllers: Vec<&str> = offered.split_whitespace().collect();
        let ancestors = self
            .relative_path
            .parent()
            .into_iter()
            .flat_map(Path::components);
        let mut dir = root;
        for component in std::iter::once(None).chain(ancestors.map(Some)) {
            if let Some(component) = component {
                dir.push(component);
            }
            if fs::enable_subtree_controllers(&dir, &controllers).is_ok() {
                continue;
            }
            for controller in &controllers {
                if let Err(error) = fs::enable_subtree_controllers(&dir, &[controller]) {
                    tracing::warn!(
                        dir = %dir.display(), controller, %error,
                        "cannot offer a cgroup controller to the pod's containers"
                    );
                }
            }
        }
    }

    /// Asks systemd for the pod slice named by `cgroup_parent` (systemd driver, systemd
    /// running): a transient `.slice` unit with accounting on. A slice that already exists
    /// (the kubelet's) is used as it is and never stopped by corral.
    pub fn create_with_systemd(
        layout: &CgroupLayout,
        cgroup_parent: &str,
        units: &dyn UnitManager,
    ) -> Result<Self> {
        let mut pod = Self::systemd_handle(layout, cgroup_parent)?;
        let started =
            units.start_transient_unit(cgroup_parent, &systemd::slice_properties(cgroup_parent))?;
        tracing::debug!(slice = cgroup_parent, ?started, "pod slice through systemd");
        if let Some(slice) = &mut pod.systemd {
            slice.started = started == Started::New;
        }
        Ok(pod)
    }

    /// A handle on the systemd pod slice `cgroup_parent`, whether or not it exists, starting
    /// nothing: for stopping a slice a killed daemon started but never recorded (its name was
    /// recorded first, see [`PodCgroup::is_missing`]) or one no record names any more.
    pub fn systemd_handle(layout: &CgroupLayout, cgroup_parent: &str) -> Result<Self> {
        let relative_path = CgroupDriver::Systemd.pod_relative_path(cgroup_parent)?;
        Ok(Self {
            layout: layout.clone(),
            driver: CgroupDriver::Systemd,
            cgroup_parent: cgroup_parent.to_owned(),
            relative_path,
            created_dirs: Vec::new(),
            systemd: Some(SystemdSlice {
                name: cgroup_parent.to_owned(),
                started: false,
            }),
        })
    }

    /// Whether the pod cgroup `cgroup_parent` exists in none of `layout`'s hierarchies: a
    /// slice started now would be this caller's, so its name is recorded before it is.
    pub fn is_missing(
        layout: &CgroupLayout,
        driver: CgroupDriver,
        cgroup_parent: &str,
    ) -> Result<bool> {
        let relative = driver.pod_relative_path(cgroup_parent)?;
        Ok(layout
            .hierarchies()
            .iter()
            .all(|h| !h.dir(&relative).exists()))
    }

    /// The systemd slice of this pod, when systemd manages it.
    pub fn systemd_slice(&self) -> Option<&SystemdSlice> {
        self.systemd.as_ref()
    }

    /// Moves `pid` into the leaf `leaf`: through systemd as a delegated transient scope when
    /// systemd manages this pod (and `units` is given), else like [`PodCgroup::add_process`].
    pub fn add_process_with(
        &self,
        leaf: &Path,
        pid: i32,
        units: Option<&dyn UnitManager>,
    ) -> Result<()> {
        let (Some(slice), Some(units)) = (&self.systemd, units) else {
            return self.add_process(leaf, pid);
        };
        let leaf = self.leaf_path(leaf)?;
        let scope = unit_name(&leaf)?;
        let pid_u32 = u32::try_from(pid).map_err(|_| CgroupError::InvalidName {
            name: pid.to_string(),
            reason: "not a process id".to_owned(),
        })?;
        units.start_transient_unit(
            &scope,
            &systemd::scope_properties(&scope, &slice.name, pid_u32),
        )?;
        tracing::debug!(pid, scope, "moved process into a systemd scope");
        Ok(())
    }

    /// Applies pod-level limits: through systemd (`SetUnitProperties` on the slice) when
    /// systemd manages this pod, with what systemd has no property for written to the slice's
    /// files; else like [`PodCgroup::apply`].
    pub fn apply_with(&self, resources: &Resources, units: Option<&dyn UnitManager>) -> Result<()> {
        let (Some(slice), Some(units)) = (&self.systemd, units) else {
            return self.apply(resources);
        };
        let (properties, rest) = systemd::resource_properties(&self.layout, resources);
        if !properties.is_empty() {
            units.set_unit_properties(&slice.name, &properties)?;
        }
        if rest != Resources::default() {
            self.apply(&rest)?;
        }
        Ok(())
    }

    /// Removes the leaf `leaf`: stops its systemd scope when systemd manages this pod, then
    /// removes whatever directories are left like [`PodCgroup::remove_leaf`].
    pub fn remove_leaf_with(&self, leaf: &Path, units: Option<&dyn UnitManager>) -> Result<()> {
        if let (Some(_), Some(units)) = (&self.systemd, units) {
            let relative = self.leaf_path(leaf)?;
            units.stop_unit(&unit_name(&relative)?)?;
        }
        self.remove_leaf(leaf)
    }

    /// Stops this pod's systemd slice once nothing is in it any more (no process, no child
    /// cgroup). Returns whether the slice is gone; a busy one stays. Whether corral owns the
    /// slice (see [`SystemdSlice::started`]; another sandbox of the pod may have started it)
    /// is the caller's decision.
    pub fn stop_slice_if_unused(&self, units: &dyn UnitManager) -> Result<bool> {
        let Some(slice) = self.systemd.as_ref() else {
            return Ok(false);
        };
        for dir in self.dirs() {
            if !fs::read_procs(&dir)?.is_empty() || !fs::child_dirs(&dir)?.is_empty() {
                tracing::debug!(slice = slice.name, "keeping pod slice still in use");
                return Ok(false);
            }
        }
        units.stop_unit(&slice.name)?;
        Ok(true)
    }

    /// The host layout this cgroup was created in.
    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    /// The driver that named this cgroup.
    pub fn driver(&self) -> CgroupDriver {
        self.driver
    }

    /// The CRI `cgroup_parent` as given.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// The pod cgroup relative to every hierarchy's root (`kubepods/burstable/pod<uid>`).
    pub fn relative_path(&self) -> &Path {
        &self.relative_path
    }

    /// The directories [`PodCgroup::create`] made, in creation order (parents first).
    pub fn created_dirs(&self) -> &[PathBuf] {
        &self.created_dirs
    }

    /// The pod cgroup's directory in every hierarchy.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.layout
            .hierarchies()
            .iter()
            .map(|h| h.dir(&self.relative_path))
            .collect()
    }

    /// The cgroup called `name` inside this pod's cgroup, beside the containers' (for the
    /// pause process, or the `cgroupsPath` of a container).
    pub fn child(&self, name: &str) -> Result<ChildCgroupPath> {
        self.driver.child_path(&self.cgroup_parent, name)
    }

    /// Creates the leaf cgroup `leaf` (a [`ChildCgroupPath::relative_path`] inside this pod's
    /// cgroup) in every hierarchy and moves `pid` into it.
    pub fn add_process(&self, leaf: &Path, pid: i32) -> Result<()> {
        let leaf = self.leaf_path(leaf)?;
        for hierarchy in self.layout.hierarchies() {
            make_path(hierarchy, &leaf, &mut Vec::new())?;
            fs::add_pid(&hierarchy.dir(&leaf), pid)?;
        }
        tracing::debug!(pid, leaf = %leaf.display(), "moved process into pod cgroup");
        Ok(())
    }

    /// The processes in the cgroup at `relative` (merged over every hierarchy, sorted).
    pub fn processes(&self, relative: &Path) -> Result<Vec<i32>> {
        self.layout.processes(relative)
    }

    /// Writes pod-level limits into the pod cgroup, each to the hierarchy that has its
    /// controller; on v2 the controllers are first enabled in the ancestors'
    /// `cgroup.subtree_control`. Controllers the host lacks are skipped with a warning.
    pub fn apply(&self, resources: &Resources) -> Result<()> {
        let plan = resources::plan(&self.layout, resources, self.v1_memory_state()?)?;
        if !plan.v2_controllers.is_empty() {
            if let Some(unified) = self.layout.unified() {
                let controllers: Vec<&str> =
                    plan.v2_controllers.iter().map(String::as_str).collect();
                let mut dir = unified.mount_point().to_path_buf();
                fs::enable_subtree_controllers(&dir, &controllers)?;
                for component in self
                    .relative_path
                    .parent()
                    .into_iter()
                    .flat_map(Path::components)
                {
                    dir.push(component);
                    fs::enable_subtree_controllers(&dir, &controllers)?;
                }
            }
        }
        for write in &plan.writes {
            let hierarchy = &self.layout.hierarchies()[write.hierarchy];
            let path = hierarchy.dir(&self.relative_path).join(&write.file);
            fs::write(&path, &write.value)?;
            tracing::debug!(path = %path.display(), value = %write.value, "set cgroup limit");
        }
        Ok(())
    }

    /// Removes the leaf cgroup `leaf` (and anything below it) from every hierarchy. Missing
    /// directories are fine; a leaf still busy after a short wait is an error.
    pub fn remove_leaf(&self, leaf: &Path) -> Result<()> {
        let leaf = self.leaf_path(leaf)?;
        let mut dirs = Vec::new();
        for hierarchy in self.layout.hierarchies() {
            let dir = hierarchy.dir(&leaf);
            dirs.extend(fs::descendants(&dir)?);
            dirs.push(dir);
        }
        fs::remove_dirs_retrying(dirs)
    }

    /// Removes what this pod made and nothing uses any more: the directories
    /// [`PodCgroup::create`] made, deepest first, each only once it holds no process and no
    /// child cgroup. The pod cgroup is shared by every sandbox attempt of one pod and parents by
    /// many pods, so a busy directory is kept, not an error; owners remove their leaves first
    /// with [`PodCgroup::remove_leaf`]. Returns the directories that are gone.
    pub fn remove(&self) -> Result<Vec<PathBuf>> {
        remove_unused_dirs(self.created_dirs.clone())
    }

    /// Checks that `leaf` is a cgroup strictly inside this pod's, in relative form.
    fn leaf_path(&self, leaf: &Path) -> Result<PathBuf> {
        let relative = fs::relative_cgroup_path(leaf)?;
        if relative == self.relative_path || !relative.starts_with(&self.relative_path) {
            return Err(CgroupError::InvalidName {
                name: leaf.display().to_string(),
                reason: format!(
                    "a leaf must be a cgroup inside the pod cgroup {}",
                    self.relative_path.display()
                ),
            });
        }
        Ok(relative)
    }

    /// What the v1 memory controller has now (decides the order of memory writes).
    fn v1_memory_state(&self) -> Result<V1MemoryState> {
        let Some(memory) = self
            .layout
            .hierarchy_for("memory")
            .filter(|h| h.version() == CgroupVersion::V1)
        else {
            return Ok(V1MemoryState {
                current_limit: None,
                memsw_supported: false,
            });
        };
        let limit_file = memory
            .dir(&self.relative_path)
            .join("memory.limit_in_bytes");
        Ok(V1MemoryState {
            current_limit: fs::read_optional(&limit_file)?.and_then(|v| v.trim().parse().ok()),
            memsw_supported: memory
                .mount_point()
                .join("memory.memsw.limit_in_bytes")
                .exists(),
        })
    }
}

/// The unit name of a leaf: its last path component (`corral-<id>.scope`).
/// The slices nested directly in the slice `parent` (`corral.slice`) whose names start with
/// `prefix`, as the hierarchies show them: the pod slices a daemon named after its sandboxes,
/// for a start-up sweep of those no record names.
pub fn child_slices(layout: &CgroupLayout, parent: &str, prefix: &str) -> Result<Vec<String>> {
    let relative = CgroupDriver::Systemd.pod_relative_path(parent)?;
    let mut found = std::collections::BTreeSet::new();
    for hierarchy in layout.hierarchies() {
        for dir in fs::child_dirs(&hierarchy.dir(&relative))? {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with(prefix) && name.ends_with(".slice") {
                found.insert(name);
            }
        }
    }
    Ok(found.into_iter().collect())
}

fn unit_name(leaf: &Path) -> Result<String> {
    leaf.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| CgroupError::InvalidName {
            name: leaf.display().to_string(),
            reason: "a leaf cgroup needs a name".to_owned(),
        })
}

/// Removes each of `dirs` that holds no process and no child cgroup, deepest first, and returns
/// those that are gone (removed now or already missing); busy ones stay.
pub fn remove_unused_dirs(mut dirs: Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    fs::sort_deepest_first(&mut dirs);
    let mut gone = Vec::new();
    for dir in dirs {
        match fs::remove_dir(&dir)? {
            Removal::Removed | Removal::Missing => gone.push(dir),
            Removal::Busy => {
                tracing::debug!(dir = %dir.display(), "keeping cgroup still in use");
            }
        }
    }
    Ok(gone)
}

/// Creates every missing directory of `relative` in `hierarchy`, appending the ones this call
/// made to `created`; fills v1 cpuset directories along the way.
fn make_path(hierarchy: &Hierarchy, relative: &Path, created: &mut Vec<PathBuf>) -> Result<()> {
    let is_v1_cpuset =
        hierarchy.version() == CgroupVersion::V1 && hierarchy.has_controller("cpuset");
    let mut dir = hierarchy.mount_point().to_path_buf();
    for component in relative.components() {
        dir.push(component);
        if fs::create_dir(&dir)? {
            created.push(dir.clone());
        }
        if is_v1_cpuset {
            fs::fill_cpuset_from_parent(&dir)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::mock::{read, MockCgroupFs};
    use crate::systemd::fake::FakeUnits;
    use crate::systemd::PropertyValue;

    const HYBRID_MOUNTS: [&str; 10] = [
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
        "unified",
    ];

    #[test]
    fn create_makes_the_path_in_every_hierarchy_and_records_it() {
        let mock = MockCgroupFs::hybrid();
        let pod =
            PodCgroup::create(&mock.layout(), CgroupDriver::Cgroupfs, "/kubepods/pod1").unwrap();
        assert_eq!(pod.relative_path(), Path::new("kubepods/pod1"));
        let expected: Vec<PathBuf> = HYBRID_MOUNTS
            .iter()
            .flat_map(|m| [mock.dir(m, "kubepods"), mock.dir(m, "kubepods/pod1")])
            .collect();
        assert_eq!(pod.created_dirs(), expected);
        assert!(expected.iter().all(|d| d.is_dir()));
        assert_eq!(
            pod.dirs(),
            HYBRID_MOUNTS
                .iter()
                .map(|m| mock.dir(m, "kubepods/pod1"))
                .collect::<Vec<_>>()
        );
        // New cpuset cgroups inherit CPUs and memory nodes; other hierarchies are untouched.
        for dir in ["kubepods", "kubepods/pod1"] {
            assert_eq!(read(&mock.dir("cpuset", dir).join("cpuset.cpus")), "0-3");
            assert_eq!(read(&mock.dir("cpuset", dir).join("cpuset.mems")), "0");
            assert!(!mock.dir("memory", dir).join("cpuset.cpus").exists());
        }
    }

    #[test]
    fn create_records_only_what_it_made() {
        let mock = MockCgroupFs::v1();
        let layout = mock.layout();
        // The kubelet made /kubepods already, but only in the memory hierarchy.
        std::fs::create_dir(mock.dir("memory", "kubepods")).unwrap();
        let pod = PodCgroup::create(&layout, CgroupDriver::Cgroupfs, "/kubepods/pod1").unwrap();
        assert!(pod
            .created_dirs()
            .contains(&mock.dir("memory", "kubepods/pod1")));
        assert!(!pod.created_dirs().contains(&mock.dir("memory", "kubepods")));
        assert!(pod.created_dirs().contains(&mock.dir("pids", "kubepods")));
        // Creating it again (a second sandbox of the same pod) creates nothing.
        let again = PodCgroup::create(&layout, CgroupDriver::Cgroupfs, "/kubepods/pod1").unwrap();
        assert!(again.created_dirs().is_empty());

        mock.strip_interface_files();
        again.remove().unwrap();
        assert!(mock.dir("memory", "kubepods/pod1").is_dir());
        pod.remove().unwrap();
        assert!(!mock.dir("memory", "kubepods/pod1").exists());
        assert!(!mock.dir("pids", "kubepods").exists());
        assert!(
            mock.dir("memory", "kubepods").is_dir(),
            "the kubelet's dir is kept"
        );
    }

    #[test]
    fn systemd_driver_creates_nested_slices_and_scopes() {
        let mock = MockCgroupFs::v2();
        let pod = PodCgroup::create(
            &mock.layout(),
            CgroupDriver::Systemd,
            "kubepods-burstable-pod1.slice",
        )
        .unwrap();
        let slice = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice";
        assert_eq!(
            pod.created_dirs(),
            [
                mock.dir("", "kubepods.slice"),
                mock.dir("", "kubepods.slice/kubepods-burstable.slice"),
                mock.dir("", slice),
            ]
        );
        let pause = pod.child("pause").unwrap();
        assert_eq!(
            pause.oci_cgroups_path,
            "kubepods-burstable-pod1.slice:corral:pause"
        );
        assert_eq!(
            pause.relative_path,
            Path::new(slice).join("corral-pause.scope")
        );
        pod.add_process(&pause.relative_path, 4321).unwrap();
        assert_eq!(
            read(&mock.dir("", slice).join("corral-pause.scope/cgroup.procs")),
            "4321"
        );
    }

    /// A daemon killed between starting a pod slice and recording its cgroup knew the slice
    /// was missing (and recorded its name) before starting it; at start-up a handle on that
    /// name stops the pause scope and then the slice, once empty, through systemd.
    #[test]
    fn a_slice_started_but_never_recorded_is_found_and_stopped_by_name() {
        let mock = MockCgroupFs::v2();
        let layout = mock.layout();
        let units = FakeUnits::default();
        let slice = "corral-podabc.slice";
        assert!(PodCgroup::is_missing(&layout, CgroupDriver::Systemd, slice).unwrap());
        // What the killed daemon did: the slice and the pause's scope; systemd made their
        // cgroups.
        let started = PodCgroup::create_with_systemd(&layout, slice, &units).unwrap();
        let pause = started.child("abc").unwrap();
        started
            .add_process_with(&pause.relative_path, 4321, Some(&units))
            .unwrap();
        let slice_dir = mock.dir("", "corral.slice/corral-podabc.slice");
        std::fs::create_dir_all(slice_dir.join("corral-abc.scope")).unwrap();
        assert!(!PodCgroup::is_missing(&layout, CgroupDriver::Systemd, slice).unwrap());
        assert_eq!(
            child_slices(&layout, "corral.slice", "corral-pod").unwrap(),
            [slice]
        );

        let found = PodCgroup::systemd_handle(&layout, slice).unwrap();
        assert!(
            !found.stop_slice_if_unused(&units).unwrap(),
            "a slice holding the pause's scope is busy"
        );
        found
            .remove_leaf_with(&pause.relative_path, Some(&units))
            .unwrap();
        assert!(found.stop_slice_if_unused(&units).unwrap());
        assert_eq!(
            units.calls(),
            [
                "start corral-podabc.slice",
                "start corral-abc.scope",
                "stop corral-abc.scope",
                "stop corral-podabc.slice",
            ]
        );
        assert!(units.units.lock().unwrap().is_empty());
    }

    #[test]
    fn add_process_creates_the_leaf_everywhere_and_moves_the_pid() {
        let mock = MockCgroupFs::hybrid();
        let pod =
            PodCgroup::create(&mock.layout(), CgroupDriver::Cgroupfs, "/kubepods/pod1").unwrap();
        let pause = pod.child("pause").unwrap();
        assert_eq!(pause.oci_cgroups_path, "/kubepods/pod1/pause");
        pod.add_process(&pause.relative_path, 4242).unwrap();
        for mount in HYBRID_MOUNTS {
            let leaf = mock.dir(mount, "kubepods/pod1/pause");
            assert_eq!(read(&leaf.join("cgroup.procs")), "4242", "{mount}");
        }
        assert_eq!(
            read(&mock.dir("cpuset", "kubepods/pod1/pause/cpuset.cpus")),
            "0-3"
        );
        assert_eq!(pod.processes(&pause.relative_path).unwrap(), [4242]);
        // The leaf is not one of the pod's created dirs: remove() clears the pod's inside.
        assert!(!pod
            .created_dirs()
            .contains(&mock.dir("memory", "kubepods/pod1/pause")));
    }

    #[test]
    fn leaves_must_be_inside_the_pod() {
        let mock = MockCgroupFs::v2();
        let pod =
            PodCgroup::create(&mock.layout(), CgroupDriver::Cgroupfs, "/kubepods/pod1").unwrap();
        for leaf in [
            "kubepods/pod1",
            "/kubepods/pod1",
            "kubepods/pod2/x",
            "kubepods/pod1/../pod2",
            "other",
        ] {
            let error = pod.add_process(Path::new(leaf), 1).unwrap_err();
            assert!(
                matches!(error, CgroupError::InvalidName { .. }),
                "{leaf}: {error}"
            );
            assert!(pod.remove_leaf(Path::new(leaf)).is_err(), "{leaf}");
        }
        assert!(!mock.dir("", "kubepods/pod2").exists());
    }

    #[test]
    fn apply_on_hybrid_writes_v1_files_and_enables_hugetlb_on_v2() {
        let mock = MockCgroupFs::hybrid();
        let pod = PodCgroup::create(
            &mock.layout(),
            CgroupDriver::Cgroupfs,
            "/kubepods/burstable/pod1",
        )
        .unwrap();
        let resources = Resources {
            cpu_shares: Some(512),
            memory_limit_bytes: Some(64 << 20),
            memory_swap_limit_bytes: Some(128 << 20),
            pids_limit: Some(50),
            hugepage_limits: vec![("2MB".to_owned(), 2 << 20)],
            ..Resources::default()
        };
        pod.apply(&resources).unwrap();
        let pod_file =
            |mount: &str, file: &str| read(&mock.dir(mount, "kubepods/burstable/pod1").join(file));
        assert_eq!(pod_file("cpu", "cpu.shares"), "512");
        assert_eq!(pod_file("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(
            pod_file("memory", "memory.memsw.limit_in_bytes"),
            "134217728"
        );
        assert_eq!(pod_file("pids", "pids.max"), "50");
        assert_eq!(pod_file("unified", "hugetlb.2MB.max"), "2097152");
        assert_eq!(
            read(&mock.dir("unified", "cgroup.subtree_control")),
            "+hugetlb"
        );
        assert_eq!(
            read(&mock.dir("unified", "kubepods/cgroup.subtree_control")),
            "+hugetlb"
        );
        assert_eq!(
            read(&mock.dir("unified", "kubepods/burstable/cgroup.subtree_control")),
            "+hugetlb"
        );
        assert!(!mock
            .dir("unified", "kubepods/burstable/pod1/cgroup.subtree_control")
            .exists());
        assert!(!mock
            .dir("memory", "kubepods/burstable/pod1/hugetlb.2MB.max")
            .exists());
    }

    #[test]
    fn create_on_v2_offers_the_pods_children_every_controller_the_root_has() {
        let mock = MockCgroupFs::v2();
        PodCgroup::create(
            &mock.layout(),
            CgroupDriver::Cgroupfs,
            "/kubepods/burstable/pod1",
        )
        .unwrap();
        let all = "+cpuset +cpu +io +memory +hugetlb +pids +rdma +misc";
        assert_eq!(read(&mock.dir("", "cgroup.subtree_control")), all);
        assert_eq!(read(&mock.dir("", "kubepods/cgroup.subtree_control")), all);
        assert_eq!(
            read(&mock.dir("", "kubepods/burstable/cgroup.subtree_control")),
            all
        );
        // The pod's own subtree_control is the OCI runtime's, for its containers.
        assert!(!mock
            .dir("", "kubepods/burstable/pod1/cgroup.subtree_control")
            .exists());
    }

    #[test]
    fn apply_on_v2_converts_and_enables_only_what_is_missing() {
        let mock = MockCgroupFs::v2();
        let pod =
            PodCgroup::create(&mock.layout(), CgroupDriver::Cgroupfs, "/kubepods/pod1").unwrap();
        // As if only cpu and memory were enabled, at the root only (the mock's files keep the
        // last write, not the kernel's merged list).
        std::fs::write(mock.dir("", "cgroup.subtree_control"), "cpu memory\n").unwrap();
        std::fs::write(mock.dir("", "kubepods/cgroup.subtree_control"), "").unwrap();
        let resources = Resources {
            cpu_shares: Some(1024),
            cpu_quota: Some(20_000),
            cpu_period: Some(100_000),
            memory_limit_bytes: Some(100 << 20),
            memory_swap_limit_bytes: Some(150 << 20),
            pids_limit: Some(10),
            unified: [("memory.high".to_owned(), "90M".to_owned())].into(),
            ..Resources::default()
        };
        pod.apply(&resources).unwrap();
        let pod_file = |file: &str| read(&mock.dir("", "kubepods/pod1").join(file));
        assert_eq!(pod_file("cpu.weight"), "39");
        assert_eq!(pod_file("cpu.max"), "20000 100000");
        assert_eq!(pod_file("memory.max"), "104857600");
        assert_eq!(pod_file("memory.swap.max"), "52428800");
        assert_eq!(pod_file("memory.high"), "90M");
        assert_eq!(pod_file("pids.max"), "10");
        // The root had cpu and memory already: only pids is added there.
        assert_eq!(read(&mock.dir("", "cgroup.subtree_control")), "+pids");
        assert_eq!(
            read(&mock.dir("", "kubepods/cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
    }

    #[test]
    fn apply_reports_the_file_it_could_not_write() {
        let mock = MockCgroupFs::v1();
        let pod =
            PodCgroup::create(&mock.layout(), CgroupDriver::Cgroupfs, "/kubepods/pod1").unwrap();
        // A directory where the interface file should be makes the write fail.
        std::fs::create_dir(mock.dir("pids", "kubepods/pod1/pids.max")).unwrap();
        let error = pod
            .apply(&Resources {
                pids_limit: Some(5),
                ..Resources::default()
            })
            .unwrap_err();
        let expected = format!(
            "write {}: ",
            mock.dir("pids", "kubepods/pod1/pids.max").display()
        );
        assert!(error.to_string().starts_with(&expected), "{error}");
    }

    #[test]
    fn remove_takes_created_dirs_once_unused_and_keeps_shared_ones() {
        let mock = MockCgroupFs::hybrid();
        let layout = mock.layout();
        let pod1 = PodCgroup::create(&layout, CgroupDriver::Cgroupfs, "/kubepods/pod1").unwrap();
        let pod2 = PodCgroup::create(&layout, CgroupDriver::Cgroupfs, "/kubepods/pod2").unwrap();
        let pause = pod1.child("pause").unwrap();
        pod1.add_process(&pause.relative_path, 11).unwrap();
        mock.strip_interface_files();

        // The pause leaf is still there: pod1's cgroup is in use and stays.
        pod1.remove().unwrap();
        assert!(mock.dir("memory", "kubepods/pod1/pause").is_dir());
        pod1.remove_leaf(&pause.relative_path).unwrap();
        let gone = pod1.remove().unwrap();
        assert!(
            gone.contains(&mock.dir("memory", "kubepods/pod1")),
            "{gone:?}"
        );
        for mount in HYBRID_MOUNTS {
            assert!(!mock.dir(mount, "kubepods/pod1").exists(), "{mount}");
            assert!(mock.dir(mount, "kubepods/pod2").is_dir(), "{mount}");
        }
        pod2.remove().unwrap();
        for mount in HYBRID_MOUNTS {
            // pod1 made /kubepods, pod2 did not: it stays (empty) after both are gone.
            assert!(mock.dir(mount, "kubepods").is_dir(), "{mount}");
            assert!(!mock.dir(mount, "kubepods/pod2").exists(), "{mount}");
        }
        // Removing again finds nothing to do; the shared parent goes when asked directly.
        pod1.remove().unwrap();
        let gone = remove_unused_dirs(pod1.created_dirs().to_vec()).unwrap();
        assert!(gone.contains(&mock.dir("memory", "kubepods")));
        assert!(!mock.dir("memory", "kubepods").exists());
    }

    #[test]
    fn remove_leaf_removes_only_that_leaf() {
        let mock = MockCgroupFs::v2();
        let pod =
            PodCgroup::create(&mock.layout(), CgroupDriver::Cgroupfs, "/kubepods/pod1").unwrap();
        let pause = pod.child("pause").unwrap();
        pod.add_process(&pause.relative_path, 11).unwrap();
        mock.strip_interface_files();
        pod.remove_leaf(&pause.relative_path).unwrap();
        assert!(!mock.dir("", "kubepods/pod1/pause").exists());
        assert!(mock.dir("", "kubepods/pod1").is_dir());
        pod.remove_leaf(&pause.relative_path).unwrap();
    }

    #[test]
    fn a_busy_leaf_is_reported_with_its_processes() {
        let mock = MockCgroupFs::v2();
        let pod =
            PodCgroup::create(&mock.layout(), CgroupDriver::Cgroupfs, "/kubepods/pod1").unwrap();
        let pause = pod.child("pause").unwrap();
        pod.add_process(&pause.relative_path, 4242).unwrap();
        // Interface files left in place: the mock's rmdir fails like a cgroup with a task.
        let error = pod.remove_leaf(&pause.relative_path).unwrap_err();
        match &error {
            CgroupError::Busy { path, procs, .. } => {
                assert_eq!(path, &mock.dir("", "kubepods/pod1/pause"));
                assert_eq!(procs, &[4242]);
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        assert!(
            error.to_string().contains("cgroup.procs: [4242]"),
            "{error}"
        );
        // The pod cgroup holding it is kept, not an error.
        assert!(pod.remove().unwrap().is_empty());
        assert!(mock.dir("", "kubepods/pod1").is_dir());
    }

    #[test]
    fn a_failed_create_undoes_what_it_made() {
        // Without cpuset, whose files in new dirs would keep the mock's rmdir from working.
        let mountinfo: String = crate::mock::HYBRID_MOUNTINFO
            .lines()
            .filter(|line| !line.contains("cpuset"))
            .map(|line| format!("{line}\n"))
            .collect();
        let mock = MockCgroupFs::new(&mountinfo, "hugetlb", true);
        let layout = mock.layout();
        // The pids hierarchy cannot take a new directory.
        std::fs::write(mock.dir("pids", "kubepods"), "not a dir").unwrap();
        let error =
            PodCgroup::create(&layout, CgroupDriver::Cgroupfs, "/kubepods/pod1").unwrap_err();
        let expected = format!(
            "create dir {}: ",
            mock.dir("pids", "kubepods/pod1").display()
        );
        assert!(error.to_string().starts_with(&expected), "{error}");
        for mount in ["cpu", "memory", "blkio"] {
            assert!(!mock.dir(mount, "kubepods").exists(), "{mount}");
        }
    }

    #[test]
    fn a_pod_cgroup_survives_serde_and_can_still_be_removed() {
        let mock = MockCgroupFs::hybrid();
        let pod = PodCgroup::create(&mock.layout(), CgroupDriver::Systemd, "kubepods-pod1.slice")
            .unwrap();
        let json = serde_json::to_string(&pod).unwrap();
        let restored: PodCgroup = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, pod);
        mock.strip_interface_files();
        restored.remove().unwrap();
        for mount in HYBRID_MOUNTS {
            assert!(!mock.dir(mount, "kubepods.slice").exists(), "{mount}");
        }
    }

    #[test]
    fn systemd_makes_the_pod_slice_and_knows_whose_it_is() {
        let mock = MockCgroupFs::v2();
        let units = FakeUnits::default();
        let parent = "kubepods-burstable-pod1.slice";
        let pod = PodCgroup::create_with_systemd(&mock.layout(), parent, &units).unwrap();
        assert_eq!(
            pod.relative_path(),
            Path::new("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice")
        );
        assert!(
            pod.created_dirs().is_empty(),
            "systemd makes the directories"
        );
        assert_eq!(
            pod.systemd_slice(),
            Some(&SystemdSlice {
                name: parent.to_owned(),
                started: true
            })
        );
        // A second sandbox of the same pod finds the slice and does not own it.
        let again = PodCgroup::create_with_systemd(&mock.layout(), parent, &units).unwrap();
        assert!(!again.systemd_slice().unwrap().started);
        assert_eq!(
            units.calls(),
            vec![format!("start {parent}"), format!("start {parent}")]
        );
        let json = serde_json::to_string(&pod).unwrap();
        assert_eq!(serde_json::from_str::<PodCgroup>(&json).unwrap(), pod);
        assert!(PodCgroup::create_with_systemd(&mock.layout(), "/kubepods/pod1", &units).is_err());
    }

    #[test]
    fn the_pause_goes_into_a_delegated_scope_of_the_slice() {
        let mock = MockCgroupFs::v2();
        let units = FakeUnits::default();
        let pod =
            PodCgroup::create_with_systemd(&mock.layout(), "corral-pod1.slice", &units).unwrap();
        let leaf = pod.child("abc").unwrap();
        pod.add_process_with(&leaf.relative_path, 4242, Some(&units))
            .unwrap();
        let scope = "corral-abc.scope";
        assert_eq!(
            units.property(scope, "Slice"),
            Some(PropertyValue::Str("corral-pod1.slice".into()))
        );
        assert_eq!(
            units.property(scope, "PIDs"),
            Some(PropertyValue::U32List(vec![4242]))
        );
        assert_eq!(
            units.property(scope, "Delegate"),
            Some(PropertyValue::Bool(true))
        );
        assert!(
            !mock.dir("", "corral.slice").exists(),
            "no cgroupfs writes behind systemd's back"
        );
        pod.remove_leaf_with(&leaf.relative_path, Some(&units))
            .unwrap();
        assert!(!units.units.lock().unwrap().contains_key(scope));
        assert!(pod
            .add_process_with(Path::new("elsewhere/x.scope"), 1, Some(&units))
            .is_err());
    }

    #[test]
    fn pod_limits_go_through_systemd_and_the_rest_to_files() {
        let mock = MockCgroupFs::v2();
        let units = FakeUnits::default();
        let pod =
            PodCgroup::create_with_systemd(&mock.layout(), "corral-pod1.slice", &units).unwrap();
        std::fs::create_dir_all(mock.dir("", "corral.slice/corral-pod1.slice")).unwrap();
        let resources = Resources {
            memory_limit_bytes: Some(128 << 20),
            pids_limit: Some(64),
            hugepage_limits: vec![("2MB".to_owned(), 0)],
            ..Resources::default()
        };
        pod.apply_with(&resources, Some(&units)).unwrap();
        assert_eq!(
            units.property("corral-pod1.slice", "MemoryMax"),
            Some(PropertyValue::U64(128 << 20))
        );
        assert_eq!(
            units.property("corral-pod1.slice", "TasksMax"),
            Some(PropertyValue::U64(64))
        );
        let dir = mock.dir("", "corral.slice/corral-pod1.slice");
        assert_eq!(read(&dir.join("hugetlb.2MB.max")), "0");
        assert!(!dir.join("memory.max").exists(), "memory is systemd's");
    }

    #[test]
    fn a_slice_is_stopped_only_when_unused() {
        let mock = MockCgroupFs::v2();
        let units = FakeUnits::default();
        let pod =
            PodCgroup::create_with_systemd(&mock.layout(), "corral-pod1.slice", &units).unwrap();
        let scope_dir = mock.dir("", "corral.slice/corral-pod1.slice/corral-c1.scope");
        std::fs::create_dir_all(&scope_dir).unwrap();
        assert!(!pod.stop_slice_if_unused(&units).unwrap());
        std::fs::remove_dir(&scope_dir).unwrap();
        assert!(pod.stop_slice_if_unused(&units).unwrap());
        assert_eq!(units.calls().last().unwrap(), "stop corral-pod1.slice");
    }

    #[test]
    fn a_failing_systemd_is_reported_with_the_unit() {
        let mock = MockCgroupFs::v2();
        let units = FakeUnits {
            failing: Some("corral-pod1.slice".to_owned()),
            ..FakeUnits::default()
        };
        let error = PodCgroup::create_with_systemd(&mock.layout(), "corral-pod1.slice", &units)
            .unwrap_err()
            .to_string();
        assert!(error.contains("corral-pod1.slice"), "{error}");
    }

    #[test]
    fn without_a_unit_manager_the_systemd_pod_falls_back_to_cgroupfs() {
        let mock = MockCgroupFs::v2();
        let pod =
            PodCgroup::create(&mock.layout(), CgroupDriver::Systemd, "corral-pod1.slice").unwrap();
        let leaf = pod.child("abc").unwrap();
        pod.add_process_with(&leaf.relative_path, 7, None).unwrap();
        assert_eq!(
            read(&mock.dir(
                "",
                "corral.slice/corral-pod1.slice/corral-abc.scope/cgroup.procs"
            )),
            "7"
        );
    }

    #[test]
    fn invalid_parents_create_nothing() {
        let mock = MockCgroupFs::v1();
        let error =
            PodCgroup::create(&mock.layout(), CgroupDriver::Systemd, "/kubepods/pod1").unwrap_err();
        assert!(
            matches!(error, CgroupError::InvalidParent { .. }),
            "{error}"
        );
        assert!(!mock.dir("memory", "kubepods").exists());
    }
}
