//! A real kubelet (v1.20.2, built by `scripts/build-kubelet.sh`) driving a private corrald:
//! standalone (no API server; static pods from a manifest directory), cgroupfs, ports on
//! 127.0.0.1, its root, plugin and manifest directories in a temp dir.
//!
//! What kubelet changes on the host and cannot be pointed elsewhere is saved and restored
//! ([`HostState`]): the sysctls it sets at start, the `/kubepods` cgroups, `/var/log/pods`
//! (fixed in kubelet 1.20) and `/var/lib/kubelet`. `CORRAL_KUBELET_LOG=PATH` keeps a copy of
//! kubelet's whole log.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Debian source package version `scripts/build-kubelet.sh` builds.
pub const KUBELET_PACKAGE_VERSION: &str = "1.20.5+really1.20.2-1.1+deb12u1";

/// The kubelet binary: `$CORRAL_KUBELET`, else the build script's cache. `None` (with the
/// reason printed) when it is absent outside CI; under `CI=true` an absent kubelet fails.
pub fn kubelet_binary() -> Option<PathBuf> {
    let path = std::env::var_os("CORRAL_KUBELET")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(format!(
                "/var/cache/corral-ci/kubelet-{KUBELET_PACKAGE_VERSION}/kubelet"
            ))
        });
    if path.exists() {
        return Some(path);
    }
    let message = format!(
        "kubelet not found at {}: run scripts/build-kubelet.sh (as scripts/test.sh does) or set CORRAL_KUBELET",
        path.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("skipped: {message}");
    None
}

/// Sysctls kubelet sets at start (`setupKernelTunables`, and the keyring limits).
const KUBELET_SYSCTLS: &[&str] = &[
    "kernel/panic",
    "kernel/panic_on_oops",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// Host settings and directories kubelet changes, as they were before it started.
pub struct HostState {
    sysctls: Vec<(&'static str, String)>,
    /// Host directories that did not exist before (removed again, when empty of ours).
    created: Vec<PathBuf>,
    kubepods_existed: bool,
}

impl HostState {
    pub fn save() -> HostState {
        let sysctls = KUBELET_SYSCTLS
            .iter()
            .filter_map(|name| {
                let value = std::fs::read_to_string(Path::new("/proc/sys").join(name)).ok()?;
                Some((*name, value.trim().to_string()))
            })
            .collect();
        let created = ["/var/log/pods", "/var/lib/kubelet"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect();
        HostState {
            sysctls,
            created,
            kubepods_existed: !crate::cgroup_dirs_containing("/kubepods").is_empty(),
        }
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        for (name, value) in &self.sysctls {
            let path = Path::new("/proc/sys").join(name);
            if std::fs::read_to_string(&path).is_ok_and(|now| now.trim() != value) {
                if let Err(e) = std::fs::write(&path, value) {
                    eprintln!("restoring {}: {e}", path.display());
                }
            }
        }
        if !self.kubepods_existed {
            crate::remove_cgroup_dirs("/kubepods");
        }
        // They did not exist before: only what this test's kubelet made can be in them.
        for dir in &self.created {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A running kubelet.
pub struct Kubelet {
    child: Child,
    dir: PathBuf,
    /// The read-only HTTP port (`/pods`, `/stats/summary`).
    pub read_only_port: u16,
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Kubelet {
    /// Starts `binary` against the CRI socket `socket`, with its files under `dir`; static pod
    /// manifests are read from [`Kubelet::manifests`].
    pub fn start(binary: &Path, socket: &Path, dir: &Path) -> Kubelet {
        let manifests = dir.join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        let read_only_port = free_port();
        let endpoint = format!("unix://{}", socket.display());
        let log = std::fs::File::create(dir.join("kubelet.log")).unwrap();
        let child = Command::new(binary)
            .args([
                "--container-runtime=remote",
                &format!("--container-runtime-endpoint={endpoint}"),
                &format!("--image-service-endpoint={endpoint}"),
                &format!("--pod-manifest-path={}", manifests.display()),
                "--file-check-frequency=2s",
                &format!("--root-dir={}", dir.join("root").display()),
                &format!(
                    "--volume-plugin-dir={}",
                    dir.join("volume-plugins").display()
                ),
                "--cgroup-driver=cgroupfs",
                "--fail-swap-on=false",
                "--address=127.0.0.1",
                &format!("--port={}", free_port()),
                &format!("--read-only-port={read_only_port}"),
                "--healthz-bind-address=127.0.0.1",
                &format!("--healthz-port={}", free_port()),
                "--hostname-override=corral-e2e-node",
                // Host changes this test does not need: iptables chains, image GC, evictions.
                "--make-iptables-util-chains=false",
                "--image-gc-high-threshold=100",
                "--image-gc-low-threshold=99",
                "--eviction-hard=memory.available<1Mi",
                "--v=2",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kubelet");
        let mut kubelet = Kubelet {
            child,
            dir: dir.to_path_buf(),
            read_only_port,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while kubelet.get("/healthz").is_none() {
            if let Ok(Some(status)) = kubelet.child.try_wait() {
                panic!("kubelet exited ({status}); log:\n{}", kubelet.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "kubelet did not serve its read-only port; log:\n{}",
                kubelet.log_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        kubelet
    }

    /// The static pod manifest directory.
    pub fn manifests(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    /// The last 150 lines of kubelet's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("kubelet.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(150)..].join("\n")
    }

    /// GET on the read-only port; the body, or `None` when it does not answer 200.
    pub fn get(&self, path: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.read_only_port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .ok()?;
        // HTTP/1.0: the answer is not chunked and ends at EOF.
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw).ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200").then(|| body.to_string())
    }

    /// GET returning JSON.
    pub fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        serde_json::from_str(&self.get(path)?).ok()
    }

    /// The pod named `name` as kubelet's `/pods` shows it (static pods are named
    /// `<name>-<node>`).
    pub fn pod(&self, name: &str) -> Option<serde_json::Value> {
        let pods = self.get_json("/pods")?;
        pods["items"]
            .as_array()?
            .iter()
            .find(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&format!("{name}-")))
            })
            .cloned()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if std::thread::panicking() {
            eprintln!("kubelet log (tail):\n{}", self.log_tail());
        }
        // For a look at everything kubelet said: CORRAL_KUBELET_LOG=/path/to/copy.
        if let Some(copy) = std::env::var_os("CORRAL_KUBELET_LOG") {
            let _ = std::fs::copy(self.dir.join("kubelet.log"), copy);
        }
    }
}
