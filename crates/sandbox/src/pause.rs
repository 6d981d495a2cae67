//! Starting and stopping `corral-pause`, the process that holds a pod's namespaces.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::error::{Result, SandboxError};
use crate::namespace::{ns_file_of, ns_inode};
use crate::process::{read_stat, Pidfd};
use crate::userns::UsernsMappings;

/// The name of the pause binary.
pub const PAUSE_BINARY_NAME: &str = "corral-pause";

/// The pause's OOM score adjustment unless told otherwise: almost never chosen by the OOM killer.
pub const DEFAULT_OOM_SCORE_ADJ: i32 = -998;

/// How long [`PauseProcess::stop`] waits for the pause to die after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the pause process should hold and how it should be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseSpec {
    /// A new network namespace (false: the pod uses the host network).
    pub new_net: bool,
    /// A new IPC namespace.
    pub new_ipc: bool,
    /// A new UTS namespace (needed for `hostname`).
    pub new_uts: bool,
    /// A new PID namespace, with the pause as its PID 1 (pod-wide process namespace sharing).
    pub new_pid: bool,
    /// The hostname of the new UTS namespace.
    pub hostname: Option<String>,
    /// Sysctls to set in the new namespaces, checked beforehand with [`crate::sysctl::pod_sysctls`].
    pub sysctls: Vec<(String, String)>,
    /// The pause's OOM score adjustment; without CAP_SYS_RESOURCE a value below the inherited one
    /// is not applied and the inherited one is kept.
    pub oom_score_adj: i32,
    /// A new user namespace with these mappings, made first so that it owns the other new
    /// namespaces; the pause then runs as an unprivileged id mapped in it.
    pub userns: Option<UsernsMappings>,
}

impl Default for PauseSpec {
    fn default() -> Self {
        PauseSpec {
            new_net: false,
            new_ipc: false,
            new_uts: false,
            new_pid: false,
            hostname: None,
            sysctls: Vec::new(),
            oom_score_adj: DEFAULT_OOM_SCORE_ADJ,
            userns: None,
        }
    }
}

impl PauseSpec {
    /// The launcher's command-line arguments for this spec.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(userns) = &self.userns {
            args.push("--uid-map".to_owned());
            args.push(userns.uid.to_arg());
            args.push("--gid-map".to_owned());
            args.push(userns.gid.to_arg());
        }
        for (wanted, flag) in [
            (self.new_net, "--net"),
            (self.new_ipc, "--ipc"),
            (self.new_uts, "--uts"),
            (self.new_pid, "--pid"),
        ] {
            if wanted {
                args.push(flag.to_owned());
            }
        }
        if let Some(hostname) = &self.hostname {
            args.push("--hostname".to_owned());
            args.push(hostname.clone());
        }
        for (key, value) in &self.sysctls {
            args.push("--sysctl".to_owned());
            args.push(format!("{key}={value}"));
        }
        args.push("--oom-score-adj".to_owned());
        args.push(self.oom_score_adj.to_string());
        args
    }
}

/// A running pause process, identified by pid *and* start time so that a reused pid is never taken
/// for it. Both fields can be stored and the value rebuilt after corrald restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PauseProcess {
    /// The pid, in corrald's PID namespace.
    pub pid: i32,
    /// Field 22 of `/proc/PID/stat`: clock ticks after boot when the process started.
    pub start_time: u64,
}

/// Runs the pause launcher `binary` with `spec` and returns the pause once it is set up.
///
/// Blocking: the launcher is waited for (it exits as soon as the pause reports ready). The pause is
/// not our child afterwards unless this process is a child subreaper (see
/// [`crate::reap_if_child`]).
pub fn spawn_pause(binary: &Path, spec: &PauseSpec) -> Result<PauseProcess> {
    spawn(binary, spec, None)
}

/// [`spawn_pause`] with the pause marked as `owner`'s (`CORRAL_OWNER=<owner>` in its
/// environment), so that [`crate::find::owned_under`] finds it even when its pid was never
/// recorded (a daemon killed while the launcher ran).
pub fn spawn_pause_owned(binary: &Path, spec: &PauseSpec, owner: &Path) -> Result<PauseProcess> {
    spawn(binary, spec, Some(owner))
}

fn spawn(binary: &Path, spec: &PauseSpec, owner: Option<&Path>) -> Result<PauseProcess> {
    let mut command = Command::new(binary);
    if let Some(owner) = owner {
        command.env(crate::find::OWNER_ENV, owner);
    }
    let output = command
        .args(spec.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| SandboxError::LaunchPause {
            binary: binary.to_owned(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let failed = |message: String| SandboxError::PauseFailed {
        binary: binary.to_owned(),
        message,
    };
    let pid = match parse_launcher_output(&stdout) {
        Ok(pid) if output.status.success() => pid,
        Ok(_) => {
            return Err(failed(format!(
                "reported ready but exited with {}",
                output.status
            )))
        }
        Err(message) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let mut message = format!("{message} ({})", output.status);
            if !stderr.trim().is_empty() && !stdout.contains("error:") {
                message.push_str(&format!("; stderr: {}", stderr.trim()));
            }
            return Err(failed(message));
        }
    };
    let pause = PauseProcess::from_pid(pid)?.ok_or_else(|| {
        failed(format!(
            "pause pid {pid} exited right after reporting ready"
        ))
    })?;
    tracing::debug!(pid, start_time = pause.start_time, "pause started");
    Ok(pause)
}

/// Reads the launcher's stdout: `pid N` then `ready`, or an `error: ...` line.
fn parse_launcher_output(stdout: &str) -> std::result::Result<i32, String> {
    let mut pid = None;
    let mut ready = false;
    for line in stdout.lines() {
        if let Some(error) = line.strip_prefix("error:") {
            return Err(error.trim().to_owned());
        } else if let Some(number) = line.strip_prefix("pid ") {
            let number = number
                .trim()
                .parse::<i32>()
                .ok()
                .filter(|pid| *pid > 0)
                .ok_or_else(|| format!("invalid pid line {line:?}"))?;
            pid = Some(number);
        } else if line == "ready" {
            ready = true;
        }
    }
    match (pid, ready) {
        (Some(pid), true) => Ok(pid),
        (Some(_), false) => Err("no \"ready\" line after the pid".to_owned()),
        (None, _) => Err(format!("no pid reported; stdout was {stdout:?}")),
    }
}

impl PauseProcess {
    /// The process now running as `pid`, with its start time; `None` if there is none.
    pub fn from_pid(pid: i32) -> Result<Option<PauseProcess>> {
        Ok(read_stat(pid)?.map(|stat| PauseProcess {
            pid,
            start_time: stat.start_time,
        }))
    }

    /// Whether the pause still runs: the pid exists, has the same start time, and is not a zombie.
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Ok(Some(stat)) => {
                stat.start_time == self.start_time && !matches!(stat.state, 'Z' | 'X')
            }
            Ok(None) => false,
            Err(error) => {
                tracing::warn!(pid = self.pid, %error, "cannot read pause state; assuming it is gone");
                false
            }
        }
    }

    /// Stops the pause: SIGTERM, up to `grace` for it to exit, then SIGKILL. Succeeds if it is
    /// already gone. Reaps it when it is our child (see [`crate::reap_if_child`]).
    pub fn stop(&self, grace: Duration) -> Result<()> {
        let Some(pidfd) = Pidfd::open_if_same(self.pid, self.start_time)? else {
            return Ok(());
        };
        if !pidfd.wait_for_exit(Duration::ZERO)? {
            pidfd.send(Signal::SIGTERM)?;
            if !pidfd.wait_for_exit(grace)? {
                tracing::warn!(
                    pid = self.pid,
                    ?grace,
                    "pause ignored SIGTERM; sending SIGKILL"
                );
                pidfd.send(Signal::SIGKILL)?;
                if !pidfd.wait_for_exit(KILL_TIMEOUT)? {
                    return Err(SandboxError::StopTimedOut {
                        pid: self.pid,
                        waited: KILL_TIMEOUT,
                    });
                }
            }
        }
        pidfd.reap_if_child()
    }

    /// `/proc/PID/ns/NS`, e.g. `ns_path("net")`.
    pub fn ns_path(&self, ns: &str) -> PathBuf {
        ns_file_of(self.pid, ns)
    }

    /// The inode of the pause's namespace `ns`, which identifies the namespace.
    pub fn ns_inode(&self, ns: &str) -> Result<u64> {
        ns_inode(self.pid, ns)
    }
}

/// Finds an executable `name`: next to the running executable first, then on `PATH`.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let beside_us = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)));
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .collect()
        })
        .unwrap_or_default();
    beside_us
        .into_iter()
        .chain(on_path)
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_becomes_launcher_arguments() {
        let spec = PauseSpec {
            new_net: true,
            new_ipc: true,
            new_uts: true,
            new_pid: false,
            hostname: Some("web-0".into()),
            sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
            oom_score_adj: -998,
            userns: None,
        };
        assert_eq!(
            spec.to_args(),
            [
                "--net",
                "--ipc",
                "--uts",
                "--hostname",
                "web-0",
                "--sysctl",
                "net.ipv4.ip_forward=1",
                "--oom-score-adj",
                "-998"
            ]
        );
        assert_eq!(PauseSpec::default().to_args(), ["--oom-score-adj", "-998"]);
        let map = crate::IdMapping {
            container_id: 0,
            host_id: 1000,
            length: 65536,
        };
        let spec = PauseSpec {
            userns: Some(UsernsMappings { uid: map, gid: map }),
            ..PauseSpec::default()
        };
        assert_eq!(
            spec.to_args(),
            [
                "--uid-map",
                "0:1000:65536",
                "--gid-map",
                "0:1000:65536",
                "--oom-score-adj",
                "-998"
            ]
        );
    }

    #[test]
    fn launcher_output_is_parsed() {
        assert_eq!(parse_launcher_output("pid 42\nready\n"), Ok(42));
        assert_eq!(
            parse_launcher_output("error: unshare(CLONE_NEWNET): EPERM\n"),
            Err("unshare(CLONE_NEWNET): EPERM".to_owned())
        );
        assert!(parse_launcher_output("pid 42\n").is_err());
        assert!(parse_launcher_output("ready\n").is_err());
        assert!(parse_launcher_output("pid x\nready\n").is_err());
        assert!(parse_launcher_output("pid -1\nready\n").is_err());
        assert!(parse_launcher_output("").is_err());
    }

    #[test]
    fn a_process_that_is_gone_is_not_alive_and_stops_at_once() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let process = PauseProcess::from_pid(pid)
            .unwrap()
            .unwrap_or(PauseProcess { pid, start_time: 0 });
        child.wait().unwrap();
        assert!(!process.is_alive());
        process.stop(Duration::from_secs(1)).unwrap();
        assert_eq!(PauseProcess::from_pid(pid).unwrap(), None);
    }

    #[test]
    fn a_reused_pid_is_not_our_process() {
        let me = PauseProcess::from_pid(i32::try_from(std::process::id()).unwrap())
            .unwrap()
            .unwrap();
        assert!(me.is_alive());
        let impostor = PauseProcess {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!impostor.is_alive());
        // Stopping the impostor must not signal the process that has its pid (this test).
        impostor.stop(Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn a_child_is_stopped_and_reaped() {
        let mut child = Command::new("sleep").arg("600").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let process = PauseProcess::from_pid(pid).unwrap().unwrap();
        assert!(process.is_alive());
        process.stop(Duration::from_secs(10)).unwrap();
        assert!(!process.is_alive());
        assert_eq!(PauseProcess::from_pid(pid).unwrap(), None, "not reaped");
        assert!(
            child.try_wait().is_err(),
            "the child was left to us to reap"
        );
        process.stop(Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; exec sleep 600"])
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        // Wait until `sleep` runs with SIGTERM ignored (bit 15 of SigIgn).
        let ignores_sigterm = || {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let ignored = status
                .lines()
                .find_map(|line| line.strip_prefix("SigIgn:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .unwrap();
            status.starts_with("Name:\tsleep") && ignored & (1 << (libc::SIGTERM - 1)) != 0
        };
        while !ignores_sigterm() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let process = PauseProcess::from_pid(pid).unwrap().unwrap();
        process.stop(Duration::from_millis(100)).unwrap();
        assert!(!process.is_alive());
        assert!(child.try_wait().is_err(), "stop() reaped it");
    }

    #[test]
    fn binaries_are_found_on_path() {
        assert!(find_binary("sh").is_some());
        assert!(find_binary("corral-no-such-binary").is_none());
    }
}
