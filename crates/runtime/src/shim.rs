//! Starting a container's corral-shim and reading what it reports.
//!
//! corrald runs `corral-shim` with the flags of [`ShimConfig::to_args`]. That process is only a
//! launcher: it forks the shim proper (which starts a new session, so it is not corrald's child
//! once the launcher exits), waits until the shim has run `<runtime> create`, prints one line on
//! stdout (see [`LaunchReport`]) and exits.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::error::{io_error, Result, RuntimeError};
use crate::runtime::OciRuntime;
use crate::state_dir::ProcessIdentity;

/// Everything a shim needs to create and then look after one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimConfig {
    /// The `corral-shim` executable.
    pub shim_binary: PathBuf,
    /// The OCI runtime that creates the container.
    pub runtime: OciRuntime,
    /// The container's id (for the runtime).
    pub container_id: String,
    /// The bundle directory, holding `config.json`.
    pub bundle: PathBuf,
    /// The container's state directory (see the crate docs for its files); created if missing.
    pub state_dir: PathBuf,
    /// The CRI log file; its directory is created if missing.
    pub log_path: PathBuf,
    /// The container has a terminal (`process.terminal` in its config).
    pub tty: bool,
    /// The container's stdin is kept open for attach clients.
    pub stdin: bool,
    /// The container's stdin is closed once the first attach client detaches.
    pub stdin_once: bool,
    /// The container's memory cgroup directories (v1 and/or v2), for its OOM kill count.
    pub cgroup_memory_dirs: Vec<PathBuf>,
    /// Restore the container from checkpoint images instead of creating it afresh.
    pub restore: Option<RestoreFrom>,
    /// The `cgroup.procs` of the cgroup the shim starts in, which the shim writes its own pid
    /// to while the runtime creates the container (see corral-shim's `warm.rs`).
    pub cgroup_warmup: Option<PathBuf>,
}

/// Where a restored container's checkpoint comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreFrom {
    /// CRIU's checkpoint images (the archive's `checkpoint/` directory).
    pub images: PathBuf,
    /// The CRIU binary the runtime runs.
    pub criu: PathBuf,
}

impl ShimConfig {
    /// The shim's command-line arguments.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut pair = |flag: &str, value: OsString| {
            args.push(flag.into());
            args.push(value);
        };
        pair("--id", self.container_id.clone().into());
        pair("--bundle", self.bundle.clone().into());
        pair("--state-dir", self.state_dir.clone().into());
        pair("--log-path", self.log_path.clone().into());
        pair("--runtime", self.runtime.binary.clone().into());
        pair("--runtime-name", self.runtime.name.clone().into());
        pair("--runtime-root", self.runtime.root.clone().into());
        for dir in &self.cgroup_memory_dirs {
            pair("--memory-cgroup", dir.clone().into());
        }
        if let Some(restore) = &self.restore {
            pair("--restore-from", restore.images.clone().into());
            pair("--criu", restore.criu.clone().into());
        }
        if let Some(procs) = &self.cgroup_warmup {
            pair("--warm-cgroup-procs", procs.clone().into());
        }
        for (wanted, flag) in [
            (self.runtime.systemd_cgroup, "--systemd-cgroup"),
            (self.tty, "--tty"),
            (self.stdin, "--stdin"),
            (self.stdin_once, "--stdin-once"),
        ] {
            if wanted {
                args.push(flag.into());
            }
        }
        args
    }
}

/// A running shim and the container it created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShimProcess {
    /// The shim's pid.
    pub shim_pid: i32,
    /// The shim's start time (field 22 of `/proc/PID/stat`), which tells it from a reused pid.
    pub shim_start_time: u64,
    /// The container's init process, created and not yet started.
    pub container_pid: i32,
    /// How long `<runtime> create` took, as the shim saw it (for the steps of CreateContainer;
    /// `None` from a shim that does not say).
    pub runtime_create: Option<std::time::Duration>,
}

impl ShimProcess {
    /// The shim as pid and start time.
    pub fn identity(&self) -> ProcessIdentity {
        ProcessIdentity {
            pid: self.shim_pid,
            start_time: self.shim_start_time,
        }
    }
}

/// The longest message a [`LaunchReport`] carries, in bytes.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// `message` cut to about `max` bytes (on character boundaries), saying how long it was: its
/// start and its end, which says why (`exec: "<a huge name>": executable file not found`).
fn cut(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_owned();
    }
    let mut head = max / 2;
    while !message.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = message.len() - max / 2;
    while !message.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{} … ({} bytes) … {}",
        &message[..head],
        message.len(),
        &message[tail..]
    )
}

/// The launcher's one line on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchReport {
    /// `created SHIM_PID SHIM_START_TIME CONTAINER_PID [RUNTIME_CREATE_US]`: the runtime
    /// created the container.
    Created(ShimProcess),
    /// `create-failed: MESSAGE`: the runtime refused to create it; what it said.
    RuntimeFailed(String),
    /// `error: MESSAGE`: the shim itself failed.
    ShimFailed(String),
}

impl LaunchReport {
    /// The report as printed, newline included. A message is cut to about
    /// [`MAX_MESSAGE_LEN`] bytes, keeping its start and end (the runtime's error may echo a
    /// request's 1 MB argument): a report larger than the pipe would block the shim writing
    /// it while its launcher, past its read limit, waits for the shim.
    pub fn to_line(&self) -> String {
        let one_line = |message: &str| cut(message, MAX_MESSAGE_LEN).replace('\n', " ");
        match self {
            LaunchReport::Created(shim) => {
                let took = shim
                    .runtime_create
                    .map(|took| format!(" {}", took.as_micros()))
                    .unwrap_or_default();
                format!(
                    "created {} {} {}{took}\n",
                    shim.shim_pid, shim.shim_start_time, shim.container_pid
                )
            }
            LaunchReport::RuntimeFailed(message) => {
                format!("create-failed: {}\n", one_line(message))
            }
            LaunchReport::ShimFailed(message) => format!("error: {}\n", one_line(message)),
        }
    }

    /// Finds the report in the launcher's stdout.
    pub fn parse(stdout: &str) -> Option<LaunchReport> {
        stdout.lines().find_map(|line| {
            if let Some(message) = line.strip_prefix("create-failed:") {
                return Some(LaunchReport::RuntimeFailed(message.trim().to_owned()));
            }
            if let Some(message) = line.strip_prefix("error:") {
                return Some(LaunchReport::ShimFailed(message.trim().to_owned()));
            }
            let mut words = line.strip_prefix("created ")?.split_whitespace();
            let mut number = || words.next().and_then(|word| word.parse::<u64>().ok());
            let (shim_pid, shim_start_time, container_pid) = (number()?, number()?, number()?);
            Some(LaunchReport::Created(ShimProcess {
                shim_pid: i32::try_from(shim_pid).ok().filter(|pid| *pid > 0)?,
                shim_start_time,
                container_pid: i32::try_from(container_pid).ok().filter(|pid| *pid > 0)?,
                runtime_create: number().map(std::time::Duration::from_micros),
            }))
        })
    }
}

/// Starts the container's shim and waits until the runtime has created the container (not
/// started it). On failure nothing is left running: the shim has exited and the runtime's
/// `delete --force` has run. Blocking.
///
/// The shim is not this process's child afterwards (unless this process is a child subreaper,
/// when it is re-parented here and must be reaped by pid once it exits).
pub fn launch_shim(cfg: &ShimConfig) -> Result<ShimProcess> {
    std::fs::create_dir_all(&cfg.state_dir).map_err(io_error("create", &cfg.state_dir))?;
    let output = Command::new(&cfg.shim_binary)
        .args(cfg.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| RuntimeError::LaunchShim {
            binary: cfg.shim_binary.clone(),
            id: cfg.container_id.clone(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let failed = |message: String| RuntimeError::ShimFailed {
        id: cfg.container_id.clone(),
        message,
    };
    match LaunchReport::parse(&stdout) {
        Some(LaunchReport::Created(shim)) if output.status.success() => {
            tracing::debug!(
                id = %cfg.container_id,
                shim_pid = shim.shim_pid,
                container_pid = shim.container_pid,
                "container created"
            );
            Ok(shim)
        }
        Some(LaunchReport::Created(_)) => Err(failed(format!(
            "the launcher reported success but exited with {}",
            output.status
        ))),
        Some(LaunchReport::RuntimeFailed(message)) => {
            // The command the shim ran: a restore's failure is not a create's.
            let command = if cfg.restore.is_some() {
                "restore"
            } else {
                "create"
            };
            Err(cfg
                .runtime
                .classify_failure(command, &cfg.container_id, message))
        }
        Some(LaunchReport::ShimFailed(message)) => Err(failed(message)),
        None => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(failed(format!(
                "no report from {} ({}); stdout {:?}, stderr {:?}",
                cfg.shim_binary.display(),
                output.status,
                stdout.trim(),
                stderr.trim()
            )))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_huge_message_is_cut_to_fit_the_report_pipe() {
        let huge =
            LaunchReport::RuntimeFailed(format!("exec: \"{}\": not found", "é".repeat(40_000)));
        let line = huge.to_line();
        assert!(line.len() < MAX_MESSAGE_LEN + 64, "{} bytes", line.len());
        assert!(line.contains(" … (80019 bytes) … "), "{line}");
        assert!(
            line.ends_with("éé\": not found\n"),
            "the end says why: {line}"
        );
        assert!(matches!(
            LaunchReport::parse(&line),
            Some(LaunchReport::RuntimeFailed(_))
        ));
    }

    #[test]
    fn reports_round_trip() {
        let created = LaunchReport::Created(ShimProcess {
            shim_pid: 10,
            shim_start_time: 20,
            container_pid: 30,
            runtime_create: None,
        });
        assert_eq!(created.to_line(), "created 10 20 30\n");
        let timed = LaunchReport::Created(ShimProcess {
            runtime_create: Some(std::time::Duration::from_micros(31_250)),
            ..ShimProcess {
                shim_pid: 10,
                shim_start_time: 20,
                container_pid: 30,
                runtime_create: None,
            }
        });
        assert_eq!(timed.to_line(), "created 10 20 30 31250\n");
        for report in [
            created,
            timed,
            LaunchReport::RuntimeFailed("exec: \"x\": not found".into()),
            LaunchReport::ShimFailed("open log".into()),
        ] {
            assert_eq!(LaunchReport::parse(&report.to_line()), Some(report));
        }
        assert_eq!(
            LaunchReport::parse("error: a\nb\n"),
            Some(LaunchReport::ShimFailed("a".into()))
        );
        assert_eq!(LaunchReport::parse("created 0 1 2\n"), None);
        assert_eq!(LaunchReport::parse("created 1 2\n"), None);
        assert_eq!(LaunchReport::parse(""), None);
    }

    #[test]
    fn a_failing_launcher_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-shim");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'create-failed: container_linux.go: oops'\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = ShimConfig {
            shim_binary: fake,
            runtime: OciRuntime {
                name: "runc".into(),
                binary: "/usr/sbin/runc".into(),
                root: dir.path().join("root"),
                systemd_cgroup: false,
            },
            container_id: "c1".into(),
            bundle: dir.path().join("bundle"),
            state_dir: dir.path().join("state"),
            log_path: dir.path().join("log"),
            tty: false,
            stdin: false,
            stdin_once: false,
            cgroup_memory_dirs: Vec::new(),
            restore: None,
            cgroup_warmup: None,
        };
        let error = launch_shim(&cfg).unwrap_err();
        assert_eq!(
            error.to_string(),
            "/usr/sbin/runc create c1 failed: container_linux.go: oops"
        );
        assert!(cfg.state_dir.is_dir());
    }
}
