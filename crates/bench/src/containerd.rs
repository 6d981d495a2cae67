//! A private containerd (Debian's `containerd` package and its CRI plugin) to compare against:
//! its config, root, state, socket, runc/crun state, CNI config and bridge all live in one temp
//! dir, and it never touches a system containerd. Stopping it removes its pods through the CRI,
//! then stops it by PID and clears whatever it left: shims, container processes, mounts,
//! cgroups, its bridge.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use corral_e2e::net::TestNetwork;
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use cri_proto::v1::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tonic::transport::Channel;

use crate::cleanup;
use crate::processes;

/// The daemon binary of Debian's `containerd` package.
pub const CONTAINERD: &str = "/usr/bin/containerd";

/// Directories containerd 1.6 makes on the host whatever its config says: the shims' socket
/// dir and go-cni's result cache. Those that did not exist before are removed if left empty.
const HOST_DIRS: [&str; 4] = [
    "/run/containerd/s",
    "/run/containerd",
    "/var/lib/cni/results",
    "/var/lib/cni",
];

/// The kernel's name (15 bytes at most) of `containerd-shim-runc-v2`, which a zombie keeps.
const SHIM_NAME: &str = "containerd-shim";

/// What the generated config points at.
pub struct ConfigInputs<'a> {
    /// The temp dir holding everything of this containerd.
    pub dir: &'a Path,
    /// `127.0.0.1:PORT` of the loopback registry, reached over plain HTTP.
    pub registry_host: &'a str,
    /// The image containerd runs as each pod's pause container.
    pub sandbox_image: &'a str,
}

/// containerd's `config.toml` (version 2): everything under `dir`, runc and crun handlers on
/// cgroupfs, overlayfs snapshots, the loopback registry as an HTTP mirror of itself, CNI from
/// `dir/cni-conf` with the plugins Debian installs in /usr/lib/cni. `restrict_oom_score_adj`
/// keeps containers' oom_score_adj no lower than containerd's own, as corral does: without
/// CAP_SYS_RESOURCE (some CI machines) the pause's -998 cannot be written.
pub fn config_toml(inputs: &ConfigInputs) -> String {
    let dir = inputs.dir;
    let path = |name: &str| format!("{:?}", dir.join(name).to_string_lossy());
    let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
    let runtime = |name: &str, binary: &str| {
        format!(
            "[{cri}.containerd.runtimes.{name}]\n  runtime_type = \"io.containerd.runc.v2\"\n\
             [{cri}.containerd.runtimes.{name}.options]\n  BinaryName = {binary:?}\n  \
             Root = {}\n  SystemdCgroup = false\n",
            path(name)
        )
    };
    format!(
        "version = 2\n\
         root = {root}\n\
         state = {state}\n\
         disabled_plugins = [\"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.btrfs\", \
         \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.snapshotter.v1.zfs\"]\n\
         \n\
         [grpc]\n  address = {socket}\n\
         [debug]\n  level = \"info\"\n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt}\n\
         [{cri}]\n  sandbox_image = {sandbox:?}\n  stream_server_address = \"127.0.0.1\"\n  \
         stream_server_port = \"0\"\n  netns_mounts_under_state_dir = true\n  \
         restrict_oom_score_adj = true\n\
         [{cri}.cni]\n  bin_dir = \"/usr/lib/cni\"\n  conf_dir = {cni_conf}\n  max_conf_num = 1\n\
         [{cri}.containerd]\n  snapshotter = \"overlayfs\"\n  default_runtime_name = \"runc\"\n\
         {runc}{crun}\
         [{cri}.registry.mirrors.{host:?}]\n  endpoint = [{endpoint:?}]\n",
        root = path("root"),
        state = path("state"),
        socket = path("containerd.sock"),
        opt = path("opt"),
        sandbox = inputs.sandbox_image,
        cni_conf = path("cni-conf"),
        runc = runtime("runc", "runc"),
        crun = runtime("crun", "/usr/bin/crun"),
        host = inputs.registry_host,
        endpoint = format!("http://{}", inputs.registry_host),
    )
}

/// A containerd started by this bench, in its own temp dir.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    net: TestNetwork,
    /// Every cgroup the pods were given lives under this name (`/containerd-bench-PID`).
    cgroup_root: String,
    /// The [`HOST_DIRS`] that did not exist before containerd started.
    host_dirs_made: Vec<PathBuf>,
    /// How long the log was when the CRI plugin first answered (start-up noise ends there).
    log_len_when_ready: usize,
}

impl Containerd {
    /// Writes the config and the CNI conflist and starts containerd; returns once its socket
    /// accepts connections. The bench becomes a child subreaper first, so the shims that
    /// containerd double-forks stay below it and can be found and reaped.
    pub fn start(
        registry_host: &str,
        sandbox_image: &str,
        cgroup_root: &str,
    ) -> anyhow::Result<Containerd> {
        Containerd::start_with_conflist(registry_host, sandbox_image, cgroup_root, |net| {
            net.conflist()
        })
    }

    /// [`Containerd::start`] with the CNI conflist `conflist` makes for the network (a wider
    /// subnet for hundreds of pods).
    pub fn start_with_conflist(
        registry_host: &str,
        sandbox_image: &str,
        cgroup_root: &str,
        conflist: impl FnOnce(&TestNetwork) -> String,
    ) -> anyhow::Result<Containerd> {
        if !Path::new(CONTAINERD).exists() {
            bail!("{CONTAINERD} is missing: apt-get install -y containerd");
        }
        nix::sys::prctl::set_child_subreaper(true).context("PR_SET_CHILD_SUBREAPER")?;
        let dir = tempfile::Builder::new()
            .prefix("containerd-bench-")
            .tempdir()
            .context("create the containerd temp dir")?;
        // The harness numbers corrald's networks from 0; 200 keeps ours apart.
        let net = TestNetwork::new(200, dir.path());
        let cni_conf = dir.path().join("cni-conf");
        std::fs::create_dir_all(&cni_conf).context("create the CNI conf dir")?;
        std::fs::write(cni_conf.join("10-bench.conflist"), conflist(&net))
            .context("write the CNI conflist")?;
        let config = config_toml(&ConfigInputs {
            dir: dir.path(),
            registry_host,
            sandbox_image,
        });
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).context("write containerd's config.toml")?;
        let mut containerd = Containerd {
            host_dirs_made: HOST_DIRS
                .iter()
                .map(PathBuf::from)
                .filter(|d| !d.exists())
                .collect(),
            dir,
            child: None,
            net,
            cgroup_root: cgroup_root.to_string(),
            log_len_when_ready: 0,
        };
        containerd.spawn()?;
        Ok(containerd)
    }

    /// Starts the daemon on the config in the temp dir (appending to its log) and waits for
    /// its socket.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("containerd.log"))
            .context("open containerd.log")?;
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("dup containerd.log")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {CONTAINERD}"))?;
        self.child = Some(child);
        self.wait_for_socket(Duration::from_secs(30))
    }

    /// Stops the daemon with SIGTERM (its shims and containers keep running), waits for it to
    /// exit, and returns how long that took.
    pub fn stop_daemon(&mut self) -> Duration {
        let started = Instant::now();
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let _ = child.wait();
        }
        started.elapsed()
    }

    /// Starts a daemon stopped by [`Containerd::stop_daemon`] again on the same directories;
    /// returns once its socket accepts connections.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.spawn()
    }

    fn wait_for_socket(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().context("wait for containerd")? {
                    self.child = None;
                    bail!("containerd exited early ({status}):\n{}", self.log_tail(30));
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not open its socket in {timeout:?}:\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The CRI socket (`grpc.address`).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The daemon's pid (0 once stopped).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// The temp dir everything of this containerd lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The bridge device of its CNI network.
    pub fn bridge(&self) -> &str {
        &self.net.bridge
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The warnings and errors containerd logged since its CRI plugin became ready, as
    /// `(count, level and message)`, most frequent first.
    pub fn logged_problems(&self) -> Vec<(usize, String)> {
        let log = self.log();
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for line in log
            .get(self.log_len_when_ready..)
            .unwrap_or_default()
            .lines()
        {
            if let Some(problem) = problem_of(line) {
                *counts.entry(problem).or_default() += 1;
            }
        }
        let mut problems: Vec<(usize, String)> = counts.into_iter().map(|(m, n)| (n, m)).collect();
        problems.sort_by_key(|p| std::cmp::Reverse(p.0));
        problems
    }

    /// A channel to the CRI once the plugin answers `Version` (it finishes starting after the
    /// socket opens).
    pub async fn ready_channel(&mut self, timeout: Duration) -> anyhow::Result<Channel> {
        let channel = corral_e2e::connect_unix(self.socket()).await;
        let deadline = Instant::now() + timeout;
        loop {
            let answer = RuntimeServiceClient::new(channel.clone())
                .version(VersionRequest::default())
                .await;
            match answer {
                Ok(_) => {
                    self.log_len_when_ready = self.log().len();
                    return Ok(channel);
                }
                Err(status) if Instant::now() > deadline => bail!(
                    "containerd's CRI plugin did not answer Version: {}\n{}",
                    status.message(),
                    self.log_tail(30)
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Removes every pod through the CRI (which stops their containers and shims and unmounts
    /// their rootfs, shm and netns), then stops containerd and clears what is left.
    pub async fn shutdown(mut self, channel: Channel) {
        cleanup::remove_all_pods(channel).await;
        self.terminate();
    }

    /// Waits briefly for the shims to exit, stops containerd by PID (SIGTERM, then SIGKILL
    /// after 10 s), kills what is left (shims naming our dir, processes in our cgroups), reaps
    /// the shims re-parented to us, unmounts everything under the temp dir, removes our
    /// cgroups, the bridge and the host dirs containerd made. Idempotent.
    fn terminate(&mut self) {
        let dir = self.dir.path().to_string_lossy().into_owned();
        // A shim exits by itself once its pod is removed.
        corral_e2e::wait_for(Duration::from_secs(5), || {
            cleanup::processes_naming(&dir).is_empty()
        });
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let exited = corral_e2e::wait_for(Duration::from_secs(10), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            if !exited {
                let _ = kill(pid, Signal::SIGKILL);
            }
            let _ = child.wait();
        }
        let mut killed = cleanup::kill_processes_naming(&dir);
        killed.extend(cleanup::kill_cgroup_members(&self.cgroup_root));
        corral_e2e::wait_for(Duration::from_secs(5), || {
            processes::reap_zombie_children(|p| p.name == SHIM_NAME || killed.contains(&p.pid));
            killed.iter().all(|pid| !corral_e2e::process_alive(*pid))
        });
        processes::reap_zombie_children(|p| p.name == SHIM_NAME || killed.contains(&p.pid));
        corral_e2e::unmount_under(self.dir.path());
        cleanup::remove_cgroups(&self.cgroup_root);
        self.net.cleanup();
        for made in self.host_dirs_made.drain(..) {
            // remove_dir refuses a directory that is not empty: only what we made, and only
            // if nothing was left in it.
            let _ = std::fs::remove_dir(made);
        }
    }
}

/// `warning: <msg>` for a logrus line at level warning or error, without its timestamp and
/// ids (so that the same problem on different containers counts once).
fn problem_of(line: &str) -> Option<String> {
    let level = ["error", "warning"]
        .into_iter()
        .find(|l| line.contains(&format!("level={l} ")))?;
    let (_, rest) = line.split_once("msg=\"")?;
    let mut msg = String::new();
    let mut escaped = false;
    for c in rest.chars() {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, '"') => break,
            (_, c) => {
                escaped = false;
                msg.push(c);
            }
        }
    }
    // Ids, pids and times differ between lines of the same problem: keep only the words.
    let msg: String = msg
        .split_whitespace()
        .map(|w| {
            let hexish = w.len() >= 32 && w.chars().all(|c| c.is_ascii_hexdigit());
            match w.split_once('=') {
                Some((key, _)) => format!("{key}=…"),
                None if hexish => "<id>".to_string(),
                None => w.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    Some(format!("{level}: {msg}"))
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.terminate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_keeps_every_path_in_the_temp_dir() {
        let dir = Path::new("/tmp/containerd-bench-x");
        let text = config_toml(&ConfigInputs {
            dir,
            registry_host: "127.0.0.1:5000",
            sandbox_image: "127.0.0.1:5000/bench/pause:1",
        });
        let config: toml::Table = text.parse().expect("valid TOML");
        let str_at = |path: &[&str]| -> String {
            let mut value = &toml::Value::Table(config.clone());
            for key in path {
                value = value
                    .get(key)
                    .unwrap_or_else(|| panic!("{path:?} in\n{text}"));
            }
            value.as_str().unwrap_or_default().to_string()
        };
        assert_eq!(config["version"].as_integer(), Some(2));
        for key in [&["root"][..], &["state"], &["grpc", "address"]] {
            assert!(
                str_at(key).starts_with("/tmp/containerd-bench-x/"),
                "{key:?}"
            );
        }
        let cri = "io.containerd.grpc.v1.cri";
        assert_eq!(
            str_at(&["plugins", cri, "sandbox_image"]),
            "127.0.0.1:5000/bench/pause:1"
        );
        assert_eq!(
            str_at(&["plugins", cri, "cni", "conf_dir"]),
            "/tmp/containerd-bench-x/cni-conf"
        );
        for handler in ["runc", "crun"] {
            let options = &config["plugins"][cri]["containerd"]["runtimes"][handler]["options"];
            assert_eq!(options["SystemdCgroup"].as_bool(), Some(false));
            assert_eq!(
                options["Root"].as_str(),
                Some(format!("/tmp/containerd-bench-x/{handler}").as_str())
            );
        }
        let mirror = &config["plugins"][cri]["registry"]["mirrors"]["127.0.0.1:5000"];
        assert_eq!(
            mirror["endpoint"].as_array().and_then(|e| e[0].as_str()),
            Some("http://127.0.0.1:5000")
        );
    }

    #[test]
    fn log_problems_are_told_apart_by_message_not_by_container() {
        let a = r#"time="2026-11-22T00:46:08Z" level=warning msg="cleaning up after shim disconnected" id=b3ca namespace=k8s.io"#;
        let b = r#"time="2026-11-22T00:46:09Z" level=error msg="failed to handle \"TaskExit\" for 4c9377905338a9e57c02c047e522c2d8f4c31895f7d6f4f29e8e0fbceb9594c0""#;
        assert_eq!(
            problem_of(a).as_deref(),
            Some("warning: cleaning up after shim disconnected")
        );
        assert_eq!(
            problem_of(b).as_deref(),
            Some("error: failed to handle \"TaskExit\" for <id>")
        );
        let nested =
            r#"time="x" level=warning msg="cleanup warnings time=\"2026\" level=info pid=4011\n""#;
        assert_eq!(
            problem_of(nested).as_deref(),
            Some("warning: cleanup warnings time=… level=… pid=…")
        );
        assert_eq!(problem_of(r#"level=info msg="serving...""#), None);
    }
}
