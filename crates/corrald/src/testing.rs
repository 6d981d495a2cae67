//! Handler tests without root: a whole daemon (pod and container managers, streaming server,
//! the real `RuntimeService` handlers) on a temporary directory, whose host is [`FakeHost`].
//!
//! [`FakeHost`] implements the four host traits (`pod::host::{Pauses, PodNetwork, PodCgroups}`
//! and `container::host::ContainerHost`). It touches nothing but the test's directory, records
//! every operation by name in order (a failed one with a trailing `!`), and fails the
//! operations it is told to ([`FakeHost::fail`]). The rest is the daemon's own code: the
//! metadata store, validation, records, undo, the image store's leases and the cgroup
//! directories (on a mock cgroupfs under the test's directory).
//!
//! A handler test builds a [`TestDaemon`], calls the RPC through [`TestDaemon::service`], and
//! checks the answer, [`FakeHost::calls`] (what was done and undone) and the store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use corral_cgroups::{CgroupLayout, CgroupVersion, Hierarchy, PodCgroup, Resources};
use corral_cni::{NetworkConfigList, RuntimeConf};
use corral_image::ImageStore;
use corral_runtime::{ExecOutput, ExitInfo, OciRuntime, ShimConfig, ShimProcess, Signalled};
use corral_sandbox::pause::{PauseProcess, PauseSpec};
use corral_store::Store;

use crate::config::{Config, Flags};
use crate::container::host::ContainerHost;
use crate::container::host::ShimRef;
use crate::container::{ContainerEnv, ContainerManager};
use crate::error::CriResult;
use crate::pod::host::PauseRef;
use crate::pod::host::{Pauses, PodCgroups, PodNetwork};
use crate::pod::{PodEnv, PodManager};
use crate::runtime_service::RuntimeServiceImpl;

/// A pid no process can have (above the kernel's `pid_max` limit): the fake shim's.
const NO_PID: i32 = i32::MAX - 1;

/// The image every test daemon has (no layers).
pub(crate) const IMAGE_ID: &str =
    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A fake container, as the fake shim and runtime know it.
#[derive(Debug, Default, Clone)]
struct FakeContainer {
    alive: bool,
    exit: Option<ExitInfo>,
}

/// The host of a [`TestDaemon`]: records operations, fails the ones it is told to.
#[derive(Default)]
pub(crate) struct FakeHost {
    calls: Mutex<Vec<String>>,
    failing: Mutex<HashSet<&'static str>>,
    containers: Mutex<HashMap<String, FakeContainer>>,
    /// Whether containers ignore the stop signal (SIGKILL still ends them).
    stubborn: Mutex<bool>,
    /// The mock cgroupfs pod cgroups are made in.
    layout: Option<CgroupLayout>,
}

impl FakeHost {
    /// Every operation so far, in order; a failed one ends with `!`.
    pub fn calls(&self) -> Vec<String> {
        crate::ids::lock(&self.calls).clone()
    }

    /// Forgets the operations recorded so far.
    pub fn clear(&self) {
        crate::ids::lock(&self.calls).clear();
    }

    /// Makes operation `name` fail from now on.
    pub fn fail(&self, name: &'static str) {
        crate::ids::lock(&self.failing).insert(name);
    }

    /// Makes every operation succeed again.
    pub fn heal(&self) {
        crate::ids::lock(&self.failing).clear();
    }

    /// Makes containers ignore their stop signal.
    pub fn ignore_stop_signal(&self) {
        *crate::ids::lock(&self.stubborn) = true;
    }

    /// Records `name`; `Err` when it is to fail.
    fn op(&self, name: &'static str) -> Result<(), std::io::Error> {
        let fails = crate::ids::lock(&self.failing).contains(name);
        let entry = if fails {
            format!("{name}!")
        } else {
            name.to_owned()
        };
        crate::ids::lock(&self.calls).push(entry);
        if fails {
            Err(std::io::Error::other(format!("injected failure of {name}")))
        } else {
            Ok(())
        }
    }

    fn container(&self, id: &str) -> FakeContainer {
        crate::ids::lock(&self.containers)
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// The container exits with `code`, as its shim records it (no store write).
    pub(crate) fn exit(&self, id: &str, code: i32) {
        let mut containers = crate::ids::lock(&self.containers);
        let container = containers.entry(id.to_owned()).or_default();
        if container.alive {
            container.alive = false;
            container.exit = Some(ExitInfo {
                exit_code: code,
                finished_at_ns: crate::ids::now_nanos(),
                oom_killed: false,
                signal: None,
            });
        }
    }
}

/// The id of the container whose state directory is `dir`.
fn id_of(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sandbox_error(
    op: &'static str,
    path: &Path,
    source: std::io::Error,
) -> corral_sandbox::SandboxError {
    corral_sandbox::SandboxError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn cgroup_error(op: &'static str, source: std::io::Error) -> corral_cgroups::CgroupError {
    corral_cgroups::CgroupError::Io {
        op,
        path: PathBuf::from("/fake"),
        source,
    }
}

fn runtime_error(op: &'static str, source: std::io::Error) -> corral_runtime::RuntimeError {
    corral_runtime::RuntimeError::Io {
        op,
        path: PathBuf::from("/fake"),
        source,
    }
}

impl Pauses for FakeHost {
    /// The "pause" is the test process itself: alive, and never signalled by the fake.
    fn spawn(&self, _spec: &PauseSpec, dir: &Path) -> corral_sandbox::Result<PauseProcess> {
        self.op("spawn_pause")
            .map_err(|e| sandbox_error("spawn pause", dir, e))?;
        let me = corral_process::ProcessIdentity::current().expect("read /proc/self/stat");
        Ok(PauseProcess {
            pid: me.pid,
            start_time: me.start_time,
        })
    }

    fn stop(&self, _pause: PauseRef) -> CriResult<()> {
        self.op("stop_pause")
            .map_err(|e| crate::error::CriError::internal("stop pause process", e))
    }

    fn stop_marked(&self, _dir: &Path) -> CriResult<()> {
        self.op("stop_marked_pauses")
            .map_err(|e| crate::error::CriError::internal("look for the pause process", e))
    }

    fn pin_userns(&self, _pid: i32, pin: &Path) -> corral_sandbox::Result<()> {
        self.op("pin_userns")
            .map_err(|e| sandbox_error("pin", pin, e))
    }

    fn unpin_userns(&self, pin: &Path) -> corral_sandbox::Result<()> {
        self.op("unpin_userns")
            .map_err(|e| sandbox_error("unpin", pin, e))
    }

    fn mount_shm(&self, path: &Path) -> corral_sandbox::Result<()> {
        self.op("mount_shm")
            .map_err(|e| sandbox_error("mount shm", path, e))?;
        std::fs::create_dir_all(path).map_err(|e| sandbox_error("create", path, e))
    }

    fn unmount_shm(&self, path: &Path) -> corral_sandbox::Result<()> {
        self.op("unmount_shm")
            .map_err(|e| sandbox_error("unmount shm", path, e))
    }
}

impl PodNetwork for FakeHost {
    fn pin_netns(&self, _pid: i32, pin: &Path) -> corral_sandbox::Result<()> {
        self.op("pin_netns")
            .map_err(|e| sandbox_error("pin", pin, e))
    }

    fn unpin_netns(&self, pin: &Path) -> corral_sandbox::Result<()> {
        self.op("unpin_netns")
            .map_err(|e| sandbox_error("unpin", pin, e))
    }

    fn add(&self, _net: &NetworkConfigList, _rt: &RuntimeConf) -> corral_cni::Result<Vec<IpAddr>> {
        self.op("cni_add")
            .map_err(|source| corral_cni::CniError::Cache {
                operation: "fake ADD",
                path: PathBuf::from("/fake"),
                source,
            })?;
        Ok(vec![IpAddr::from([10, 88, 0, 2])])
    }

    fn del(
        &self,
        _network: &str,
        _recorded: Option<&serde_json::Value>,
        _rt: &RuntimeConf,
    ) -> corral_cni::Result<()> {
        self.op("cni_del")
            .map_err(|source| corral_cni::CniError::Cache {
                operation: "fake DEL",
                path: PathBuf::from("/fake"),
                source,
            })
    }

    fn settle(&self, _pin: &Path) {}
}

impl PodCgroups for FakeHost {
    /// A real pod cgroup, on the mock cgroupfs: its directories are made and later removed by
    /// the daemon's own code, so a leak shows as a directory left there.
    fn create(&self, parent: &str) -> corral_cgroups::Result<PodCgroup> {
        self.op("cgroup_create")
            .map_err(|e| cgroup_error("create dir", e))?;
        let layout = self.layout.as_ref().expect("the fake has a cgroup layout");
        PodCgroup::create(layout, corral_cgroups::CgroupDriver::Cgroupfs, parent)
    }

    fn apply(&self, _cgroup: &PodCgroup, _resources: &Resources) -> corral_cgroups::Result<()> {
        self.op("cgroup_apply")
            .map_err(|e| cgroup_error("write", e))
    }

    fn add_process(
        &self,
        _cgroup: &PodCgroup,
        _leaf: &Path,
        _pid: i32,
    ) -> corral_cgroups::Result<()> {
        self.op("cgroup_add_process")
            .map_err(|e| cgroup_error("write", e))
    }

    fn remove_leaf(&self, cgroup: &PodCgroup, leaf: &Path) -> corral_cgroups::Result<()> {
        self.op("cgroup_remove_leaf")
            .map_err(|e| cgroup_error("remove dir", e))?;
        cgroup.remove_leaf(leaf)
    }
}

impl ContainerHost for FakeHost {
    /// Leases the image's layers for real (the lease is released by the daemon's own code),
    /// mounts nothing.
    fn mount_rootfs(
        &self,
        images: &ImageStore,
        image: &str,
        id: &str,
        target: &Path,
    ) -> corral_image::Result<()> {
        self.op("mount_rootfs")
            .map_err(|source| corral_image::ImageError::Io {
                op: "fake mount",
                path: target.to_path_buf(),
                source,
            })?;
        images.prepare_rootfs(image, id)?;
        Ok(())
    }

    fn unmount_rootfs(&self, _images: &ImageStore, target: &Path) -> corral_image::Result<()> {
        self.op("unmount_rootfs")
            .map_err(|source| corral_image::ImageError::Io {
                op: "fake unmount",
                path: target.to_path_buf(),
                source,
            })
    }

    /// A failed launch is a shim that started (and wrote its pid file, as corral-shim does
    /// first) but whose `<runtime> create` failed: the undo must still delete.
    fn launch_shim(&self, config: &ShimConfig) -> corral_runtime::Result<ShimProcess> {
        if let Err(e) = self.op("launch_shim") {
            let pid_file = config
                .state_dir
                .join(corral_runtime::state_dir::SHIM_PID_FILE);
            std::fs::write(&pid_file, NO_PID.to_string())
                .map_err(|e| runtime_error("write shim pid", e))?;
            return Err(runtime_error("launch shim", e));
        }
        crate::ids::lock(&self.containers).insert(
            config.container_id.clone(),
            FakeContainer {
                alive: true,
                exit: None,
            },
        );
        Ok(ShimProcess {
            shim_pid: NO_PID,
            shim_start_time: 1,
            container_pid: NO_PID,
            runtime_create: None,
        })
    }

    fn read_exit(&self, dir: &Path) -> corral_runtime::Result<Option<ExitInfo>> {
        Ok(self.container(&id_of(dir)).exit)
    }

    fn shim_alive(&self, dir: &Path) -> bool {
        self.container(&id_of(dir)).alive
    }

    fn wait_exited(&self, dir: &Path, _shim: Option<ShimRef>, _timeout: Duration) -> bool {
        !self.container(&id_of(dir)).alive
    }

    fn wait_shim_gone(&self, _dir: &Path, _shim: Option<ShimRef>) {}

    /// Never proves the init: every signal goes through the runtime's `kill`.
    fn signal_init(
        &self,
        _dir: &Path,
        _cgroup: &Path,
        _signal: i32,
        _all: bool,
    ) -> corral_runtime::Result<Signalled> {
        Ok(Signalled::NotProven)
    }

    fn reopen_log(&self, _dir: &Path) -> corral_runtime::Result<()> {
        self.op("reopen_log")
            .map_err(|e| runtime_error("reopen log", e))
    }

    fn start(&self, _runtime: &OciRuntime, _id: &str) -> corral_runtime::Result<()> {
        self.op("start").map_err(|e| runtime_error("start", e))
    }

    fn resume(&self, _runtime: &OciRuntime, _id: &str) -> corral_runtime::Result<()> {
        self.op("resume").map_err(|e| runtime_error("resume", e))
    }

    fn pause(&self, _runtime: &OciRuntime, _id: &str) -> corral_runtime::Result<()> {
        self.op("pause").map_err(|e| runtime_error("pause", e))
    }

    fn is_running(&self, _runtime: &OciRuntime, _id: &str) -> bool {
        false
    }

    fn kill(
        &self,
        _runtime: &OciRuntime,
        id: &str,
        signal: i32,
        _all: bool,
    ) -> corral_runtime::Result<()> {
        let name = if signal == libc::SIGKILL {
            "kill_sigkill"
        } else {
            "kill_stop_signal"
        };
        self.op(name).map_err(|e| runtime_error("kill", e))?;
        if signal == libc::SIGKILL || !*crate::ids::lock(&self.stubborn) {
            self.exit(id, 128 + signal);
        }
        Ok(())
    }

    fn delete(&self, _runtime: &OciRuntime, id: &str) -> corral_runtime::Result<()> {
        self.op("delete").map_err(|e| runtime_error("delete", e))?;
        crate::ids::lock(&self.containers).remove(id);
        Ok(())
    }

    fn update(
        &self,
        _runtime: &OciRuntime,
        _id: &str,
        _resources: &oci_spec::runtime::LinuxResources,
    ) -> corral_runtime::Result<()> {
        self.op("update").map_err(|e| runtime_error("update", e))
    }

    fn exec_sync(
        &self,
        _runtime: &OciRuntime,
        _id: &str,
        process: &oci_spec::runtime::Process,
        _timeout: Option<Duration>,
    ) -> corral_runtime::Result<ExecOutput> {
        self.op("exec_sync").map_err(|e| runtime_error("exec", e))?;
        Ok(ExecOutput {
            stdout: process
                .args()
                .clone()
                .unwrap_or_default()
                .join(" ")
                .into_bytes(),
            stderr: Vec::new(),
            exit_code: 0,
            timed_out: false,
        })
    }
}

/// A daemon on a temporary directory with a [`FakeHost`].
pub(crate) struct TestDaemon {
    pub service: RuntimeServiceImpl,
    pub daemon: Arc<crate::Daemon>,
    pub host: Arc<FakeHost>,
    pub dir: tempfile::TempDir,
    _changes: tokio::sync::mpsc::UnboundedReceiver<crate::events::Change>,
}

impl TestDaemon {
    /// A daemon whose pods get a (fake) CNI network.
    pub async fn new() -> TestDaemon {
        TestDaemon::build(true).await
    }

    /// A daemon with no CNI config: pods with their own network are refused.
    pub async fn without_network() -> TestDaemon {
        TestDaemon::build(false).await
    }

    async fn build(network: bool) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        for name in ["root", "state", "cni", "cgroup"] {
            std::fs::create_dir_all(path(name)).unwrap();
        }
        if network {
            std::fs::write(
                path("cni").join("10-fake.conflist"),
                r#"{"cniVersion": "1.0.0", "name": "fake", "plugins": [{"type": "bridge"}]}"#,
            )
            .unwrap();
        }
        // The handler's binary must exist; the fake host never runs it.
        std::fs::write(
            path("corrald.toml"),
            "[runtimes.runc]\npath = \"/bin/sh\"\n",
        )
        .unwrap();
        let arg = |p: PathBuf| p.to_string_lossy().into_owned();
        let config = Config::load(Flags::parse_from([
            "corrald".to_owned(),
            "--config".to_owned(),
            arg(path("corrald.toml")),
            "--root".to_owned(),
            arg(path("root")),
            "--state".to_owned(),
            arg(path("state")),
            "--cni-conf-dir".to_owned(),
            arg(path("cni")),
        ]))
        .unwrap();
        let layout = CgroupLayout::from_hierarchies(vec![Hierarchy::new(
            CgroupVersion::V2,
            path("cgroup"),
            ["cpu", "memory", "pids"].map(String::from).to_vec(),
        )])
        .unwrap();
        let host = Arc::new(FakeHost {
            layout: Some(layout.clone()),
            ..FakeHost::default()
        });
        let store = Arc::new(Store::open(&path("root").join("meta.redb")).unwrap());
        let image = corral_image::ImageRecord {
            id: IMAGE_ID.to_owned(),
            ..Default::default()
        };
        store.put(corral_store::IMAGES, IMAGE_ID, &image).unwrap();
        let images = ImageStore::open(
            store.clone(),
            &path("root").join("images"),
            corral_image::RegistryConfig::default(),
        )
        .unwrap();
        let (events, changes) = crate::events::EventSink::channel();
        let pods = PodManager::with_env(PodEnv {
            cni_config: corral_cni::ConfigWatch::new(&config.cni_conf_dir),
            userns_support: [("runc".to_owned(), Ok(()))].into_iter().collect(),
            config: config.clone(),
            store: store.clone(),
            pauses: host.clone(),
            network: host.clone(),
            cgroups: host.clone(),
            cgroup_layout: layout.clone(),
            cgroup_driver: corral_cgroups::CgroupDriver::Cgroupfs,
            events: events.clone(),
            systemd: None,
        })
        .await
        .unwrap();
        let containers = ContainerManager::with_env(ContainerEnv {
            config: config.clone(),
            store: store.clone(),
            images,
            host: host.clone(),
            shim_binary: PathBuf::from("/bin/false"),
            cgroup_layout: layout,
            systemd_cgroup: false,
            apparmor: false,
            features: crate::features::Features::default(),
            events,
        })
        .await
        .unwrap();
        let backend = Arc::new(crate::streaming::StreamingBackend {
            daemon: std::sync::OnceLock::new(),
            limits: crate::stream_limits::StreamLimits::new(1, Duration::from_secs(60)),
        });
        let streaming = corral_streaming::StreamingServer::start(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            backend.clone(),
        )
        .await
        .unwrap();
        let daemon = Arc::new(crate::Daemon {
            config,
            store,
            pods,
            containers,
            streaming,
            events: crate::events::Events::new(),
        });
        let _ = backend.daemon.set(Arc::downgrade(&daemon));
        TestDaemon {
            service: RuntimeServiceImpl::new(daemon.clone()),
            daemon,
            host,
            dir,
            _changes: changes,
        }
    }

    /// The directories under the mock cgroupfs (relative), deepest first.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let root = self.dir.path().join("cgroup");
        let mut found = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.path().is_dir() {
                    found.push(entry.path().strip_prefix(&root).unwrap().to_path_buf());
                    stack.push(entry.path());
                }
            }
        }
        found
    }

    /// The entries of `<state>/<sub>` (sandbox or container directories, pins).
    pub fn state_entries(&self, sub: &str) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("state").join(sub))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// The ids of the sandbox records in the store.
    pub fn sandbox_records(&self) -> Vec<String> {
        self.daemon
            .store
            .list::<crate::pod::SandboxRecord>(corral_store::SANDBOXES)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// The ids of the container records in the store.
    pub fn container_records(&self) -> Vec<String> {
        self.daemon
            .store
            .list::<crate::container::ContainerRecord>(corral_store::CONTAINERS)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }
}

/// For each operation done (and not failed) in `calls` before the failure, whether its undo
/// follows it; the operations whose undo is missing.
pub(crate) fn not_undone(calls: &[String], pairs: &[(&str, &str)]) -> Vec<String> {
    let mut missing = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        let Some((_, undo)) = pairs.iter().find(|(done, _)| done == call) else {
            continue;
        };
        if !calls[i + 1..].iter().any(|c| c == undo) {
            missing.push(call.clone());
        }
    }
    missing
}

/// Checks the error of `rpc` after a failure injected at `step`: Internal, the RPC named first
/// with the injected failure, the step seen failing, and every operation before it undone.
pub(crate) fn assert_undone_after(
    t: &TestDaemon,
    rpc: &str,
    step: &str,
    err: &tonic::Status,
    pairs: &[(&str, &str)],
) {
    assert_eq!(err.code(), tonic::Code::Internal, "{step}: {err:?}");
    assert!(
        err.message().starts_with(&format!("{rpc}: "))
            && err.message().contains("injected failure"),
        "{step}: {}",
        err.message()
    );
    let calls = t.host.calls();
    assert!(calls.contains(&format!("{step}!")), "{step}: {calls:?}");
    assert_eq!(
        not_undone(&calls, pairs),
        Vec::<String>::new(),
        "{step}: {calls:?}"
    );
}

/// What is wrong with `got` as the refusal of `what` (a table test's row): accepted, or
/// refused with another code or without naming `field`.
pub(crate) fn refusal_mismatch<T>(
    what: &str,
    got: CriResult<T>,
    code: tonic::Code,
    field: &str,
) -> Option<String> {
    let status = match got {
        Ok(_) => return Some(format!("{what}: accepted")),
        Err(err) => tonic::Status::from(err),
    };
    (status.code() != code || !status.message().contains(field)).then(|| {
        format!(
            "{what}: want {code:?} naming {field}, got {:?}: {}",
            status.code(),
            status.message()
        )
    })
}
