//! Shared helpers of the root integration tests: a busybox bundle, a runc root and a cgroup
//! parent per test, and guards that remove them (and the container, and reap the shim) even when
//! the test fails.
//!
//! They need the `corral-shim` binary built in the same target directory:
//! `cargo build -p corral-shim` before `cargo test -p corral-runtime`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use corral_runtime::attach::{AttachClient, AttachReader, AttachStreams, AttachWriter};
use corral_runtime::{
    launch_shim, read_exit, ExecChild, ExecIo, ExitInfo, OciRuntime, Result, ShimConfig,
    ShimProcess,
};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{ProcessBuilder, UserBuilder};
use serde_json::{json, Value};

/// The busybox applets linked into the test rootfs.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "head", "tail", "tr", "dd", "stty", "true", "false", "ls", "env",
    "wc", "yes", "kill", "ps", "id", "seq",
];

/// What a root test needs from the host.
pub struct Host {
    pub shim: PathBuf,
    pub runc: PathBuf,
    pub busybox: PathBuf,
}

/// Returns the host's tools when the test can run: as root, with `corral-shim` built, runc and
/// busybox installed. Otherwise prints why the test is skipped and returns `None`.
///
/// Also makes this test process a child subreaper, so shims (whose launcher exits) are
/// re-parented to it instead of to this VM's PID 1, which never reaps them.
pub fn setup(test: &str) -> Option<Host> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {test}: needs root");
        return None;
    }
    let Some(shim) = built_binary("corral-shim") else {
        eprintln!(
            "skipping {test}: corral-shim is not built; run `cargo build -p corral-shim` first"
        );
        return None;
    };
    let Some(runc) = on_path("runc") else {
        eprintln!("skipping {test}: runc is not installed");
        return None;
    };
    let busybox = PathBuf::from("/bin/busybox");
    if !is_static_busybox(&busybox) {
        eprintln!("skipping {test}: /bin/busybox (Debian's busybox-static) is not installed");
        return None;
    }
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    Some(Host {
        shim,
        runc,
        busybox,
    })
}

/// `name` in the target directory this test binary was built into.
fn built_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn is_static_busybox(path: &Path) -> bool {
    // A static binary has no program interpreter; look for the dynamic loader's name.
    match fs::read(path) {
        Ok(bytes) => !bytes
            .windows(8)
            .any(|w| w == b"/lib64/l" || w == b"/lib/ld-"),
        Err(_) => false,
    }
}

/// How the test container should run.
#[derive(Debug, Clone)]
pub struct Options {
    pub args: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    pub memory_limit: Option<i64>,
    /// Make the state directory so deep that its socket paths exceed `sockaddr_un`.
    pub deep_state_dir: bool,
}

impl Options {
    pub fn command(args: &[&str]) -> Options {
        Options {
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            tty: false,
            stdin: false,
            stdin_once: false,
            memory_limit: None,
            deep_state_dir: false,
        }
    }

    pub fn shell(script: &str) -> Options {
        Options::command(&["sh", "-c", script])
    }
}

/// The fixture of `test` with `options`, or `None` (the reason printed) when it cannot run here.
pub fn fixture(test: &str, options: &Options) -> Option<Fixture> {
    let host = setup(test)?;
    Some(Fixture::new(&host, options))
}

/// A process to exec as root in `/`, with `PATH` and `TERM` set.
pub fn process(args: &[&str]) -> oci_spec::runtime::Process {
    ProcessBuilder::default()
        .args(args.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>())
        .env(vec!["PATH=/bin".to_owned(), "TERM=xterm".to_owned()])
        .cwd("/")
        .user(UserBuilder::default().uid(0u32).gid(0u32).build().unwrap())
        .build()
        .unwrap()
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One test container: its bundle, runc root, state dir and cgroup, all removed on drop together
/// with the container itself; its shim is reaped.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub id: String,
    pub runtime: OciRuntime,
    pub config: ShimConfig,
    pub cgroup_parent: String,
    pub shim: Option<ShimProcess>,
}

impl Fixture {
    pub fn new(host: &Host, options: &Options) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("corral-rt-test-")
            .tempdir()
            .unwrap();
        let unique = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let id = format!("ctr-{unique}");
        let cgroup_parent = format!("corral-rt-test-{unique}");
        let bundle = dir.path().join("bundle");
        make_rootfs(&bundle.join("rootfs"), &host.busybox);
        let spec = spec(options, &format!("/{cgroup_parent}/{id}"));
        fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        let state_dir = if options.deep_state_dir {
            dir.path()
                .join("s".repeat(50))
                .join("t".repeat(50))
                .join(&id)
        } else {
            dir.path().join("state")
        };
        let runtime = OciRuntime {
            name: "runc".into(),
            binary: host.runc.clone(),
            root: dir.path().join("runc-root"),
            systemd_cgroup: false,
        };
        let config = ShimConfig {
            shim_binary: host.shim.clone(),
            runtime: runtime.clone(),
            container_id: id.clone(),
            bundle,
            state_dir,
            log_path: dir.path().join("logs").join("ctr").join("0.log"),
            tty: options.tty,
            stdin: options.stdin,
            stdin_once: options.stdin_once,
            cgroup_memory_dirs: vec![Path::new("/sys/fs/cgroup/memory")
                .join(&cgroup_parent)
                .join(&id)],
            restore: None,
            cgroup_warmup: None,
        };
        Fixture {
            dir,
            id,
            runtime,
            config,
            cgroup_parent,
            shim: None,
        }
    }

    /// Launches the shim (runc create).
    pub fn launch(&mut self) -> Result<ShimProcess> {
        let shim = launch_shim(&self.config)?;
        self.shim = Some(shim);
        Ok(shim)
    }

    /// Runs `args` in the running container with `io`.
    pub fn exec(&self, args: &[&str], io: ExecIo) -> ExecChild {
        self.runtime
            .exec_spawn(&self.id, &process(args), io)
            .unwrap()
    }

    /// Attaches to the container's shim with `streams`; the client's two halves.
    pub fn attach(&self, streams: AttachStreams) -> (AttachReader, AttachWriter) {
        AttachClient::connect(self.state_dir(), streams)
            .unwrap()
            .split()
            .unwrap()
    }

    /// Launches the shim and starts the container.
    pub fn run(&mut self) -> ShimProcess {
        let shim = self.launch().unwrap();
        self.runtime.start(&self.id).unwrap();
        shim
    }

    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.config.log_path
    }

    /// The container's cgroup directory under a v1 controller.
    pub fn cgroup_dir(&self, controller: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(&self.cgroup_parent)
            .join(&self.id)
    }

    /// Waits (up to a minute) for `exit.json`, then for the shim to exit, and reaps it.
    pub fn wait_exit(&mut self) -> ExitInfo {
        let mut exit = None;
        eventually("the container's exit is recorded", || {
            exit = read_exit(self.state_dir()).unwrap();
            exit.is_some()
        });
        if let Some(shim) = self.shim.take() {
            reap(shim.shim_pid, Duration::from_secs(60));
        }
        exit.unwrap()
    }

    /// The log's entries as (stream, tag, text), checking each entry's timestamp.
    pub fn log_entries(&self) -> Vec<(String, String, String)> {
        parse_log(&fs::read_to_string(self.log_path()).unwrap_or_default())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Err(error) = self.runtime.delete(&self.id, true) {
            eprintln!("cleanup: delete {}: {error}", self.id);
        }
        if let Some(shim) = self.shim.take() {
            reap(shim.shim_pid, Duration::from_secs(20));
        }
        remove_cgroups(&self.cgroup_parent);
    }
}

/// Reaps `pid` (a shim re-parented to this subreaper) once it exits; kills it after `limit`.
pub fn reap(pid: i32, limit: Duration) {
    let pid = Pid::from_raw(pid);
    let deadline = Instant::now() + limit;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(WaitStatus::StillAlive) => {
                eprintln!("shim {pid} still runs after {limit:?}; killing it");
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(pid, None);
                return;
            }
            Ok(_) | Err(_) => return,
        }
    }
}

/// Removes the test's cgroup parent (and any child left in it) from every hierarchy.
fn remove_cgroups(parent: &str) {
    let roots = fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten();
    for root in roots {
        let dir = root.path().join(parent);
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = fs::remove_dir(entry.path());
                }
            }
        }
        if dir.exists() {
            if let Err(error) = fs::remove_dir(&dir) {
                eprintln!("cleanup: rmdir {}: {error}", dir.display());
            }
        }
    }
}

fn make_rootfs(rootfs: &Path, busybox: &Path) {
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in APPLETS {
        symlink("busybox", bin.join(applet)).unwrap();
    }
    for dir in ["proc", "sys", "dev", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
}

/// A minimal OCI spec: own pid, mount, ipc and uts namespaces, the host's network, no seccomp.
fn spec(options: &Options, cgroups_path: &str) -> Value {
    let capabilities = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut resources = json!({ "devices": [{ "allow": false, "access": "rwm" }] });
    if let Some(limit) = options.memory_limit {
        resources["memory"] = json!({ "limit": limit, "swap": limit });
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": options.tty,
            "user": { "uid": 0, "gid": 0 },
            "args": options.args,
            "env": ["PATH=/bin", "TERM=xterm", "HOME=/"],
            "cwd": "/",
            "capabilities": {
                "bounding": capabilities,
                "effective": capabilities,
                "permitted": capabilities,
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true,
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": "corral-test",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "nodev"] },
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": resources,
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" },
            ],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    })
}

/// Parses CRI log text into (stream, tag, text), checking the timestamp's form.
pub fn parse_log(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .map(|line| {
            let mut fields = line.splitn(4, ' ');
            let timestamp = fields.next().unwrap();
            assert_rfc3339_nano(timestamp);
            let stream = fields.next().unwrap().to_owned();
            assert!(stream == "stdout" || stream == "stderr", "{line:?}");
            let tag = fields.next().unwrap().to_owned();
            assert!(tag == "P" || tag == "F", "{line:?}");
            let text = fields.next().expect("a space after the tag").to_owned();
            (stream, tag, text)
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ`.
fn assert_rfc3339_nano(timestamp: &str) {
    let bytes = timestamp.as_bytes();
    let ok = bytes.len() == 30
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[10] == b'T'
        && bytes[13] == b':'
        && bytes[16] == b':'
        && bytes[19] == b'.'
        && bytes[29] == b'Z'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| [4, 7, 10, 13, 16, 19, 29].contains(&i) || b.is_ascii_digit());
    assert!(
        ok,
        "not an RFC 3339 timestamp with nanoseconds: {timestamp:?}"
    );
}

/// Waits (up to a minute, so a broken test fails instead of hanging) until `condition` holds.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
