//! corrald's configuration: command-line flags over a TOML file over built-in defaults.
//!
//! Every flag has a top-level key of the same name in the file, with `_` for `-`
//! (`--cni-bin-dir` is `cni_bin_dir`, a list). A flag given on the command line wins over the
//! file; the file wins over the default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Parser;
use serde::{Deserialize, Serialize};

/// Command-line flags of corrald.
#[derive(Debug, Parser)]
#[command(
    name = "corrald",
    version,
    about = "Kubernetes container runtime (CRI v1)"
)]
pub struct Flags {
    /// TOML configuration file; flags given here override its keys.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Unix socket to serve the CRI on [default: /run/corral/corral.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Persistent data directory [default: /var/lib/corral].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Volatile state directory [default: /run/corral].
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Directory holding CNI network configurations [default: /etc/cni/net.d].
    #[arg(long)]
    pub cni_conf_dir: Option<PathBuf>,
    /// Directory holding CNI plugins; repeat for several [default: /usr/lib/cni, /opt/cni/bin].
    #[arg(long)]
    pub cni_bin_dir: Vec<PathBuf>,
    /// How cgroups are named and managed [default: cgroupfs].
    #[arg(long, value_enum)]
    pub cgroup_driver: Option<CgroupDriverName>,
    /// Log filter, e.g. `info` or `corrald=debug` [default: info].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Address the exec/attach/port-forward streaming server listens on [default: 127.0.0.1].
    #[arg(long)]
    pub stream_address: Option<std::net::IpAddr>,
    /// Port of the streaming server; 0 picks a free one [default: 0].
    #[arg(long)]
    pub stream_port: Option<u16>,
    /// Address of corrald's Prometheus metrics endpoint (`GET /metrics`), e.g.
    /// 127.0.0.1:9323; empty turns it off [default: off].
    #[arg(long)]
    pub metrics_address: Option<String>,
    /// Exec/attach sessions allowed at once per container; 0: no limit [default: 16].
    #[arg(long)]
    pub max_streams_per_container: Option<usize>,
    /// Seconds an exec/attach session may pass without input or output before it is closed;
    /// 0: never [default: 14400, kubelet's streaming idle timeout].
    #[arg(long)]
    pub stream_idle_timeout: Option<u64>,
    /// The CRIU binary the OCI runtime checkpoints and restores containers with; a bare name
    /// is looked up on PATH [default: criu].
    #[arg(long)]
    pub criu_path: Option<PathBuf>,
    /// Tests only: print the names of corrald's crash points (`CORRAL_CRASH_AT`), one a line,
    /// and exit.
    #[arg(long, hide = true)]
    pub crash_steps: bool,
}

/// The cgroup driver, as named in flags and the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriverName {
    /// cgroups are paths under the cgroup filesystem (`/kubepods/burstable/pod<uid>`).
    Cgroupfs,
    /// cgroups are systemd slices and scopes (`kubepods-burstable-pod<uid>.slice`).
    Systemd,
}

impl CgroupDriverName {
    /// The name kubelet and the config file use.
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupDriverName::Cgroupfs => "cgroupfs",
            CgroupDriverName::Systemd => "systemd",
        }
    }
}

/// An OCI runtime handler, selected by a pod's `runtime_handler` (a RuntimeClass's handler).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeHandler {
    /// The OCI runtime binary (`runc`, `/usr/bin/crun`); a bare name is looked up on PATH.
    pub path: PathBuf,
    /// The runtime's state directory (its `--root`); defaults to `<state>/runtimes/<name>`.
    #[serde(default)]
    pub root: Option<PathBuf>,
}

/// Exec/attach sessions per container by default: far more than a person or kubelet opens,
/// few enough that a runaway client cannot exhaust corrald's threads and descriptors.
pub const DEFAULT_MAX_STREAMS_PER_CONTAINER: usize = 16;
/// Idle seconds before a session is closed by default: kubelet's
/// `streamingConnectionIdleTimeout` (4 h).
pub const DEFAULT_STREAM_IDLE_TIMEOUT: u64 = 4 * 60 * 60;

/// The keys of the TOML configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    socket: Option<PathBuf>,
    root: Option<PathBuf>,
    state: Option<PathBuf>,
    cni_conf_dir: Option<PathBuf>,
    cni_bin_dir: Option<Vec<PathBuf>>,
    cgroup_driver: Option<CgroupDriverName>,
    log_level: Option<String>,
    stream_address: Option<std::net::IpAddr>,
    stream_port: Option<u16>,
    metrics_address: Option<String>,
    max_streams_per_container: Option<usize>,
    stream_idle_timeout: Option<u64>,
    criu_path: Option<PathBuf>,
    disable_v1alpha2: Option<bool>,
    #[serde(default)]
    runtimes: BTreeMap<String, RuntimeHandler>,
    #[serde(default)]
    registry: toml::Table,
}

/// The effective configuration of a running corrald.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Unix socket the CRI is served on.
    pub socket: PathBuf,
    /// Persistent data directory.
    pub root: PathBuf,
    /// Volatile state directory.
    pub state: PathBuf,
    /// Directory holding CNI network configurations.
    pub cni_conf_dir: PathBuf,
    /// Directories holding CNI plugins, searched in order.
    pub cni_bin_dir: Vec<PathBuf>,
    /// How cgroups are named and managed.
    pub cgroup_driver: CgroupDriverName,
    /// Log filter.
    pub log_level: String,
    /// Address and port of the streaming server (exec, attach, port-forward).
    pub stream_address: std::net::IpAddr,
    /// Port of the streaming server; 0 picks a free one.
    pub stream_port: u16,
    /// Where corrald's own Prometheus metrics are served; `None`: not served.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Exec/attach sessions allowed at once per container (0: no limit).
    pub max_streams_per_container: usize,
    /// Seconds an exec/attach session may stay idle before it is closed (0: never).
    pub stream_idle_timeout: u64,
    /// The CRIU binary for checkpoint and restore.
    pub criu_path: PathBuf,
    /// Whether the old `runtime.v1alpha2` API is turned off.
    pub disable_v1alpha2: bool,
    /// OCI runtime handlers by name; `runc` is always present.
    pub runtimes: BTreeMap<String, RuntimeHandler>,
    /// Registry mirrors and credentials, in containerd's `[registry]` shape.
    pub registry: toml::Table,
}

/// The handler used when a pod names none.
pub const DEFAULT_HANDLER: &str = "runc";

impl Config {
    /// Where things live under the state directory.
    pub fn layout(&self) -> corral_sandbox::StateLayout {
        corral_sandbox::StateLayout::new(&self.state)
    }

    /// Builds the configuration from parsed flags, reading `--config` if given.
    pub fn load(flags: Flags) -> anyhow::Result<Config> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Config::merge(flags, file)
    }

    fn merge(flags: Flags, file: FileConfig) -> anyhow::Result<Config> {
        let cni_bin_dir = if !flags.cni_bin_dir.is_empty() {
            flags.cni_bin_dir
        } else {
            file.cni_bin_dir
                .unwrap_or_else(|| vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()])
        };
        let mut runtimes = file.runtimes;
        for (name, handler) in &runtimes {
            if name.is_empty() || handler.path.as_os_str().is_empty() {
                bail!("config: [runtimes.{name}] needs a non-empty name and `path`");
            }
        }
        runtimes
            .entry(DEFAULT_HANDLER.to_string())
            .or_insert_with(|| RuntimeHandler {
                path: "runc".into(),
                root: None,
            });
        Ok(Config {
            socket: flags
                .socket
                .or(file.socket)
                .unwrap_or_else(|| "/run/corral/corral.sock".into()),
            root: flags
                .root
                .or(file.root)
                .unwrap_or_else(|| "/var/lib/corral".into()),
            state: flags
                .state
                .or(file.state)
                .unwrap_or_else(|| "/run/corral".into()),
            cni_conf_dir: flags
                .cni_conf_dir
                .or(file.cni_conf_dir)
                .unwrap_or_else(|| "/etc/cni/net.d".into()),
            cni_bin_dir,
            cgroup_driver: flags
                .cgroup_driver
                .or(file.cgroup_driver)
                .unwrap_or(CgroupDriverName::Cgroupfs),
            log_level: flags
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            stream_address: flags
                .stream_address
                .or(file.stream_address)
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            stream_port: flags.stream_port.or(file.stream_port).unwrap_or(0),
            metrics_address: parse_metrics_address(
                flags.metrics_address.or(file.metrics_address).as_deref(),
            )?,
            max_streams_per_container: flags
                .max_streams_per_container
                .or(file.max_streams_per_container)
                .unwrap_or(DEFAULT_MAX_STREAMS_PER_CONTAINER),
            stream_idle_timeout: flags
                .stream_idle_timeout
                .or(file.stream_idle_timeout)
                .unwrap_or(DEFAULT_STREAM_IDLE_TIMEOUT),
            criu_path: flags
                .criu_path
                .or(file.criu_path)
                .unwrap_or_else(|| "criu".into()),
            disable_v1alpha2: file.disable_v1alpha2.unwrap_or(false),
            runtimes,
            registry: file.registry,
        })
    }
}

/// `metrics_address`: empty or absent is off; otherwise `IP:PORT`.
fn parse_metrics_address(text: Option<&str>) -> anyhow::Result<Option<std::net::SocketAddr>> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).with_context(|| {
            format!("metrics_address {text:?}: expected IP:PORT such as 127.0.0.1:9323, or empty for off")
        }),
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parse config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::parse_from(std::iter::once("corrald").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let c = Config::merge(flags(&[]), FileConfig::default()).unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/corral/corral.sock"));
        assert_eq!(c.root, PathBuf::from("/var/lib/corral"));
        assert_eq!(c.state, PathBuf::from("/run/corral"));
        assert_eq!(c.cni_conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(
            c.cni_bin_dir,
            [PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")]
        );
        assert_eq!(c.cgroup_driver, CgroupDriverName::Cgroupfs);
        assert!(!c.disable_v1alpha2);
        assert_eq!(c.runtimes[DEFAULT_HANDLER].path, PathBuf::from("runc"));
    }

    #[test]
    fn metrics_address_is_off_by_default_or_empty_and_names_itself_when_bad() {
        let off = Config::merge(flags(&[]), FileConfig::default()).unwrap();
        assert_eq!(off.metrics_address, None);
        let file: FileConfig = toml::from_str(r#"metrics_address = "127.0.0.1:9323""#).unwrap();
        let on = Config::merge(flags(&[]), file).unwrap();
        assert_eq!(on.metrics_address, Some("127.0.0.1:9323".parse().unwrap()));
        let file: FileConfig = toml::from_str(r#"metrics_address = "127.0.0.1:9323""#).unwrap();
        let flag_off = Config::merge(flags(&["--metrics-address", ""]), file).unwrap();
        assert_eq!(flag_off.metrics_address, None);
        let error = Config::merge(flags(&["--metrics-address", "9323"]), FileConfig::default())
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("metrics_address"),
            "{error:#}"
        );
    }

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            socket = "/tmp/f.sock"
            root = "/tmp/froot"
            cni_bin_dir = ["/a", "/b"]
            cgroup_driver = "systemd"
            disable_v1alpha2 = true
            [runtimes.crun]
            path = "/usr/bin/crun"
            "#,
        )
        .unwrap();
        let c = Config::merge(flags(&["--socket", "/tmp/x.sock"]), file).unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.root, PathBuf::from("/tmp/froot"));
        assert_eq!(c.cni_bin_dir, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(c.cgroup_driver, CgroupDriverName::Systemd);
        assert!(c.disable_v1alpha2);
        assert_eq!(c.runtimes["crun"].path, PathBuf::from("/usr/bin/crun"));
        assert!(c.runtimes.contains_key("runc"));
    }

    #[test]
    fn repeated_cni_bin_dir_flag() {
        let c = Config::merge(
            flags(&["--cni-bin-dir", "/x", "--cni-bin-dir", "/y"]),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(c.cni_bin_dir, [PathBuf::from("/x"), PathBuf::from("/y")]);
    }

    #[test]
    fn unknown_key_is_refused() {
        let err = toml::from_str::<FileConfig>("sockett = \"/x\"").unwrap_err();
        assert!(err.to_string().contains("sockett"), "{err}");
    }
}
