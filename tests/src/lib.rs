//! Harness for corral's end-to-end tests: starts a real `corrald` (built by `cargo build`) in a
//! private temp directory with its own socket, root, state, CNI config and bridge, and hands out
//! gRPC clients connected to it. Tests run as root against the real kernel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

pub mod cri;
pub mod images;
pub mod kubelet;
pub mod net;
pub mod registry;
pub mod volume;

/// A client of the old `runtime.v1alpha2` API, generated for the tests (see `build.rs`).
pub mod v1alpha2 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("runtime.v1alpha2");
}

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use cri_proto::v1::image_service_client::ImageServiceClient;
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

/// Returns from the test with a message when not running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: this end-to-end test needs root (run the suite with sudo)");
            return;
        }
    };
}

/// How to start a daemon.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// TOML appended to the generated config file.
    pub extra_config_toml: String,
    /// Whether to install a CNI bridge config (a private bridge and subnet per daemon).
    pub with_cni: bool,
    /// `cgroupfs` or `systemd`.
    pub cgroup_driver: &'static str,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            extra_config_toml: String::new(),
            with_cni: true,
            cgroup_driver: "cgroupfs",
        }
    }
}

/// A running corrald in its own temp directory.
pub struct Daemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The bridge and subnet of this daemon's CNI network.
    pub net: net::TestNetwork,
    /// Environment variables corrald gets at its next starts (see [`Daemon::set_env`]).
    env: Vec<(String, String)>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The directory holding the binaries `cargo build` made: the running executable's own
/// directory when corrald is there (a bench binary in `target/release`), else its parent (a
/// test binary in `target/debug/deps`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let own = exe.parent().expect("executable has a directory");
    if own.join("corrald").exists() {
        return own.to_path_buf();
    }
    own.parent()
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// `corralctl --socket <the daemon's socket>`, for the caller's arguments.
pub fn corralctl(daemon: &Daemon) -> Command {
    let mut command = Command::new(built_binary("corralctl"));
    command.arg("--socket").arg(daemon.socket());
    command
}

/// Runs `corralctl ARGS` against the daemon and waits for it.
pub fn corralctl_run(daemon: &Daemon, args: &[&str]) -> Output {
    corralctl(daemon)
        .args(args)
        .output()
        .expect("run corralctl")
}

/// corralctl's standard output, after checking that it succeeded.
pub fn corralctl_ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "corralctl failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("corralctl prints UTF-8")
}

/// A binary built by this workspace; panics with the command to run when it is missing.
pub fn built_binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before the end-to-end tests",
        path.display()
    );
    path
}

impl Daemon {
    /// Starts a daemon and waits until its socket answers.
    pub fn start(opts: DaemonOptions) -> Daemon {
        init_reaper();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = tempfile::Builder::new()
            .prefix("corral-e2e-")
            .tempdir()
            .expect("tempdir");
        let net = net::TestNetwork::new(n, dir.path());
        let cni_conf = dir.path().join("cni-conf");
        std::fs::create_dir_all(&cni_conf).unwrap();
        if opts.with_cni {
            std::fs::write(cni_conf.join("10-test.conflist"), net.conflist()).unwrap();
        }
        let config = format!(
            "socket = {:?}\nroot = {:?}\nstate = {:?}\ncni_conf_dir = {:?}\ncni_bin_dir = [\"/usr/lib/cni\", \"/opt/cni/bin\"]\ncgroup_driver = {:?}\nlog_level = \"debug\"\n{}\n",
            dir.path().join("corral.sock"),
            dir.path().join("root"),
            dir.path().join("state"),
            cni_conf,
            opts.cgroup_driver,
            opts.extra_config_toml,
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let mut daemon = Daemon {
            dir,
            child: None,
            net,
            env: Vec::new(),
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("corrald.log"))
            .unwrap();
        let child = Command::new(built_binary("corrald"))
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .expect("spawn corrald");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                // Reaped: its pid may be another process's now, so nothing may signal it.
                self.child = None;
                panic!("corrald exited early ({status}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "corrald did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("corrald.log")).unwrap_or_default()
    }

    /// The pid of the running daemon.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// The unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("corral.sock")
    }

    /// `--root`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `--state`.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The temp directory everything of this daemon lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A RuntimeService client.
    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    /// An ImageService client.
    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    /// A gRPC channel to the daemon's socket.
    pub async fn channel(&self) -> Channel {
        connect_unix(self.socket()).await
    }

    /// Stops the daemon with SIGTERM and starts it again on the same directories.
    pub fn restart(&mut self) {
        self.stop_daemon(nix::sys::signal::Signal::SIGTERM);
        self.spawn();
    }

    /// Stops the daemon with SIGTERM and leaves it stopped (its shims and containers keep
    /// running); [`Daemon::start_again`] brings it back on the same directories.
    pub fn stop(&mut self) {
        self.stop_daemon(nix::sys::signal::Signal::SIGTERM);
    }

    /// Starts a stopped daemon again on the same directories and waits until its socket answers.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again: the daemon is running");
        self.spawn();
    }

    /// Sets (`Some`) or unsets (`None`) an environment variable of corrald for its next starts.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.env.push((key.to_owned(), value.to_owned()));
        }
    }

    /// Waits up to `timeout` for the daemon to exit by itself; returns how it ended, or `None`
    /// (the daemon still running) when it did not.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.child.as_mut()?.try_wait().unwrap();
            if let Some(status) = status {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon with SIGKILL (no chance to clean up) and starts it again.
    pub fn kill9_and_restart(&mut self) {
        self.stop_daemon(nix::sys::signal::Signal::SIGKILL);
        self.spawn();
    }

    fn stop_daemon(&mut self, signal: nix::sys::signal::Signal) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
            let _ = child.wait();
        }
    }
}

impl Daemon {
    /// Stops and removes every pod the daemon still has (a failed test's leftovers), so that a
    /// failing test does not leak processes, mounts or cgroups onto the machine.
    fn remove_all_pods(&self) {
        if self.child.is_none() {
            return;
        }
        let socket = self.socket();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let mut rt = RuntimeServiceClient::new(connect_unix(socket).await);
                let Ok(pods) = rt
                    .list_pod_sandbox(cri_proto::v1::ListPodSandboxRequest::default())
                    .await
                else {
                    return;
                };
                for pod in pods.into_inner().items {
                    let id = pod.id;
                    let _ = rt
                        .stop_pod_sandbox(cri_proto::v1::StopPodSandboxRequest {
                            pod_sandbox_id: id.clone(),
                        })
                        .await;
                    let _ = rt
                        .remove_pod_sandbox(cri_proto::v1::RemovePodSandboxRequest {
                            pod_sandbox_id: id,
                        })
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A daemon that died (a crash test's, say) answers nothing: only the forced part runs.
        if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
            self.child = None;
        }
        self.remove_all_pods();
        self.stop_daemon(nix::sys::signal::Signal::SIGTERM);
        // Anything a failed test left: mounts under our directory, our bridge.
        unmount_under(self.dir.path());
        self.net.cleanup();
        if std::thread::panicking() {
            eprintln!("corrald log:\n{}", self.log());
        }
    }
}

/// Connects a tonic channel to a unix socket.
pub async fn connect_unix(path: PathBuf) -> Channel {
    connect_unix_with(unix_endpoint(), path).await
}

/// The endpoint [`connect_unix`] uses (its URI is a placeholder), to be tuned before
/// [`connect_unix_with`].
pub fn unix_endpoint() -> Endpoint {
    Endpoint::try_from("http://[::]:50051").unwrap()
}

/// Connects a tonic channel with the settings of `endpoint` to a unix socket.
pub async fn connect_unix_with(endpoint: Endpoint, path: PathBuf) -> Channel {
    endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("connect to corrald")
}

/// Lazily unmounts every mount under `dir` (deepest first).
pub fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().to_string();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Mount points (field 5 of mountinfo) that contain `needle`.
pub fn mounts_containing(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.contains(needle))
        .map(str::to_string)
        .collect()
}

/// The inode of a process's namespace (`/proc/PID/ns/NS`).
pub fn ns_inode(pid: i32, ns: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{ns}"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/ns/{ns}: {e}"))
        .ino()
}

/// Whether a process exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Waits up to `timeout` for `cond`.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Makes the test process the subreaper of everything it starts, and reaps the pause and shim
/// processes that get re-parented to it when a daemon dies or they double-fork. (On a node,
/// PID 1 does this; the PID 1 of some test machines does not reap at all.) Only processes named
/// corral-pause / corral-shim are reaped, so `Command::output()` elsewhere keeps its children.
fn init_reaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers and touches no memory.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        std::thread::spawn(|| loop {
            reap_orphans();
            std::thread::sleep(Duration::from_millis(50));
        });
    });
}

fn reap_orphans() {
    // Reading every process's status 20 times a second takes most of a core on a machine with
    // thousands of processes (`corral-bench node`): look only when a child of ours has exited.
    if !has_zombie_child() {
        return;
    }
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let ours = ["corral-pause", "corral-shim"].contains(&field("Name:").as_str());
        if ours && field("PPid:") == me && field("State:").starts_with('Z') {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
    }
}

/// Whether a child of this process has exited and not been waited for; it is left in place.
fn has_zombie_child() -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::All, flags) {
        Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => false,
        Ok(_) | Err(_) => true,
    }
}

/// A pod config as kubelet sends it: metadata, hostname, log dir, a cgroup parent under a
/// unique test root, and the given namespace modes (network, pid, ipc).
pub fn pod_config(
    name: &str,
    cgroup_parent: &str,
    modes: (i32, i32, i32),
) -> cri_proto::v1::PodSandboxConfig {
    use cri_proto::v1::*;
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "e2e".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: format!("/tmp/corral-e2e-logs/{name}"),
        labels: [("app".to_string(), name.to_string())].into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: modes.0,
                    pid: modes.1,
                    ipc: modes.2,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A cgroupfs parent unique to this test process and `tag`: `/corral-e2e-<pid>-<tag>/pod<tag>`.
pub fn unique_cgroup_parent(tag: &str) -> String {
    format!("/corral-e2e-{}-{tag}/pod{tag}", std::process::id())
}

/// The cgroup path of `pid` in the v1 hierarchy `controller` (from /proc/PID/cgroup).
pub fn cgroup_of(pid: i32, controller: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _ = parts.next()?;
            let ctrls = parts.next()?;
            let path = parts.next()?;
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
}

/// Every cgroup directory (in any hierarchy under /sys/fs/cgroup) whose path contains `needle`.
pub fn cgroup_dirs_containing(needle: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, needle: &str, depth: usize, out: &mut Vec<PathBuf>) {
        if depth > 6 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let p = e.path();
                if p.to_string_lossy().contains(needle) {
                    out.push(p.clone());
                }
                walk(&p, needle, depth + 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), needle, 0, &mut out);
    out
}

/// Removes the cgroup directories a test's parent left (deepest first); used in cleanup only.
pub fn remove_cgroup_dirs(needle: &str) {
    let mut dirs = cgroup_dirs_containing(needle);
    dirs.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}

/// The names in a directory (none when it does not exist).
pub fn dir_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The top cgroup of the test's pods tagged `tag` (the first part of [`unique_cgroup_parent`]):
/// `corral-e2e-<pid>-<tag>`, for looking for leftovers and removing them.
pub fn test_cgroup_root(tag: &str) -> String {
    format!("corral-e2e-{}-{tag}", std::process::id())
}
