//! [`OciRuntime`]: one OCI runtime binary (runc, crun) and the commands corral runs through it.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use crate::capture::{capture_output, Captured};
use crate::error::{io_error, Result, RuntimeError};
use corral_process::pidfd::open as pidfd_open;

/// How long a runtime command other than `exec` may take before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The most of a runtime command's stdout or stderr that is kept (its messages are short).
const COMMAND_OUTPUT_LIMIT: usize = 1 << 20;

/// What crun says when it refuses a host whose cgroup v2 hierarchy holds controllers beside v1.
const HYBRID_REFUSAL: &str = "hybrid mode not supported";

/// An OCI runtime: a handler's binary and the directory where it keeps its containers' state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRuntime {
    /// The handler's name (`runc`, `crun`, ...), used in messages.
    pub name: String,
    /// The runtime's executable.
    pub binary: PathBuf,
    /// The runtime's state directory (its `--root`).
    pub root: PathBuf,
    /// Whether cgroups are managed through systemd (`--systemd-cgroup`).
    pub systemd_cgroup: bool,
}

/// What the runtime's `state` command reports about a container.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RuntimeState {
    /// `creating`, `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// The container's init process in the host's PID namespace (0 once it is gone).
    #[serde(default)]
    pub pid: i32,
}

impl OciRuntime {
    /// The runtime's binary with its global options (`--root`, `--systemd-cgroup`).
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--root").arg(&self.root);
        if self.systemd_cgroup {
            command.arg("--systemd-cgroup");
        }
        command
    }

    /// The `create` command that corral-shim runs: the container `id` from `bundle`, its init's pid
    /// written to `pid_file`, the runtime's own messages to `log_file` (as JSON lines), and for a
    /// terminal the pty master sent to `console_socket`. The caller sets the stdio, which a
    /// container without a terminal inherits.
    pub fn create_command(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        log_file: &Path,
        console_socket: Option<&Path>,
    ) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--root").arg(&self.root);
        if self.systemd_cgroup {
            command.arg("--systemd-cgroup");
        }
        command
            .arg("--log")
            .arg(log_file)
            .args(["--log-format", "json", "create", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file);
        if let Some(socket) = console_socket {
            command.arg("--console-socket").arg(socket);
        }
        command.arg(id);
        command
    }

    /// Checks that the runtime runs at all (`<binary> --version`).
    pub fn check_usable(&self) -> Result<()> {
        let output = Command::new(&self.binary)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                command: "--version",
                id: String::new(),
                source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Unusable {
                runtime: self.name.clone(),
                message: format!(
                    "{} --version exited with {}: {}",
                    self.binary.display(),
                    output.status,
                    runtime_message(&output.stderr)
                ),
            })
        }
    }

    /// The container's state; `None` when the runtime does not know the container.
    pub fn state(&self, id: &str) -> Result<Option<RuntimeState>> {
        if !self.root.join(id).exists() {
            return Ok(None);
        }
        let output = match self.run("state", id, &[]) {
            Ok(output) => output,
            Err(RuntimeError::Command { message, .. }) if is_unknown_container(&message) => {
                return Ok(None)
            }
            Err(error) => return Err(error),
        };
        serde_json::from_slice(&output)
            .map(Some)
            .map_err(|error| RuntimeError::Output {
                binary: self.binary.clone(),
                command: "state",
                id: id.to_owned(),
                message: error.to_string(),
            })
    }

    /// Starts a created container's process.
    pub fn start(&self, id: &str) -> Result<()> {
        self.run("start", id, &[]).map(drop)
    }

    /// Freezes the container's processes (`pause`).
    pub fn pause(&self, id: &str) -> Result<()> {
        self.run("pause", id, &[]).map(drop)
    }

    /// Thaws a paused container (`resume`).
    pub fn resume(&self, id: &str) -> Result<()> {
        self.run("resume", id, &[]).map(drop)
    }

    /// Checkpoints the running container with CRIU (`criu` is its binary): its images go to
    /// `image_path`, CRIU's work files and `dump.log` to `work_path` (both created by the
    /// runtime). The container goes on running with `leave_running`, else it is stopped. The
    /// runtime is killed after `timeout`.
    pub fn checkpoint(
        &self,
        id: &str,
        criu: &Path,
        image_path: &Path,
        work_path: &Path,
        leave_running: bool,
        timeout: Duration,
    ) -> Result<()> {
        let mut command = self.command();
        command
            .arg("--criu")
            .arg(criu)
            .arg("checkpoint")
            .arg("--image-path")
            .arg(image_path)
            .arg("--work-path")
            .arg(work_path);
        if leave_running {
            command.arg("--leave-running");
        }
        command.arg(id);
        self.run_command(command, "checkpoint", id, timeout)
            .map(drop)
    }

    /// The `restore` command that corral-shim runs in place of [`Self::create_command`] for a
    /// container restored from checkpoint images at `image_path` (CRIU's work files go to
    /// `work_path`). The restored process takes the command's stdio where it had pipes, and runs
    /// once the command returns (`--detach`).
    #[allow(clippy::too_many_arguments)]
    pub fn restore_command(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        log_file: &Path,
        criu: &Path,
        image_path: &Path,
        work_path: &Path,
    ) -> Command {
        let mut command = self.command();
        command
            .arg("--log")
            .arg(log_file)
            .args(["--log-format", "json", "--criu"])
            .arg(criu)
            .args(["restore", "--detach", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file)
            .arg("--image-path")
            .arg(image_path)
            .arg("--work-path")
            .arg(work_path)
            .arg(id);
        command
    }

    /// Sends `signal` to the container's init (to all its processes with `all`). A container that
    /// is not running or not known is not an error: there is nothing left to signal.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let signal = signal.to_string();
        let args: Vec<&str> = if all {
            vec!["--all", id, &signal]
        } else {
            vec![id, &signal]
        };
        match self.run("kill", id, &args) {
            Err(RuntimeError::Command { message, .. })
                if is_unknown_container(&message) || is_not_running(&message) =>
            {
                Ok(())
            }
            result => result.map(drop),
        }
    }

    /// Deletes the container (`force`: even while it runs, killing it). An unknown container is
    /// not an error.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let args: Vec<&str> = if force { vec!["--force", id] } else { vec![id] };
        match self.run("delete", id, &args) {
            Err(RuntimeError::Command { message, .. }) if is_unknown_container(&message) => Ok(()),
            result => result.map(drop),
        }
    }

    /// Changes the container's cgroup limits: `update --resources FILE` with `resources` as OCI
    /// JSON (a file rather than stdin because crun reads only files).
    pub fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        let json = serde_json::to_vec(resources).map_err(|source| RuntimeError::Encode {
            what: "linux resources",
            source,
        })?;
        let mut file = tempfile::Builder::new()
            .prefix("corral-resources-")
            .suffix(".json")
            .tempfile()
            .map_err(io_error("create", std::env::temp_dir()))?;
        file.write_all(&json)
            .and_then(|()| file.flush())
            .map_err(io_error("write", file.path()))?;
        let path = file.path().to_string_lossy().into_owned();
        self.run("update", id, &["--resources", &path, id])
            .map(drop)
    }

    /// Runs `<binary> --root R <command> <args>` (or `<command> <id>` when `args` is empty),
    /// waits up to [`COMMAND_TIMEOUT`] and returns its stdout when it succeeded.
    pub(crate) fn run(&self, command: &'static str, id: &str, args: &[&str]) -> Result<Vec<u8>> {
        let mut cmd = self.command();
        cmd.arg(command);
        if args.is_empty() {
            cmd.arg(id);
        } else {
            cmd.args(args);
        }
        self.run_command(cmd, command, id, COMMAND_TIMEOUT)
    }

    /// Runs `cmd` (the runtime's `command` for container `id`) as [`Self::run`] does, killing it
    /// after `timeout`.
    fn run_command(
        &self,
        mut cmd: Command,
        command: &'static str,
        id: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_error = |source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            command,
            id: id.to_owned(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_error)?;
        let captured = capture_child(&mut child, timeout).map_err(spawn_error)?;
        let status = child.wait().map_err(spawn_error)?;
        if captured.timed_out {
            return Err(RuntimeError::Timeout {
                binary: self.binary.clone(),
                command,
                id: id.to_owned(),
                waited: timeout,
            });
        }
        if !status.success() {
            let mut message = runtime_message(&captured.stderr);
            if message.is_empty() {
                message = format!("exited with {status}");
            }
            tracing::debug!(runtime = %self.name, command, id, %message, "runtime command failed");
            return Err(self.classify_failure(command, id, message));
        }
        Ok(captured.stdout)
    }

    /// Turns a failure message into an error, recognising a runtime that cannot run on this host
    /// and its refusals of the request's process (`refusal.rs`).
    pub(crate) fn classify_failure(
        &self,
        command: &'static str,
        id: &str,
        message: String,
    ) -> RuntimeError {
        if message.contains(HYBRID_REFUSAL) {
            RuntimeError::Unusable {
                runtime: self.name.clone(),
                message: format!(
                    "{} cannot run on this host's hybrid cgroup layout \
                     (cgroup v1 controllers with a cgroup v2 hierarchy that holds controllers too): \
                     {message}",
                    self.name
                ),
            }
        } else if let Some(refusal) = crate::refusal::recognise(command, &message) {
            RuntimeError::Refused {
                binary: self.binary.clone(),
                command,
                id: id.to_owned(),
                field: refusal.field,
                reason: refusal.reason,
                message,
            }
        } else {
            RuntimeError::Command {
                binary: self.binary.clone(),
                command,
                id: id.to_owned(),
                message,
            }
        }
    }
}

/// Captures a runtime command's output (killing it after `timeout`); the caller reaps it.
fn capture_child(child: &mut std::process::Child, timeout: Duration) -> std::io::Result<Captured> {
    let pipe = |fd: Option<OwnedFd>| fd.map(std::fs::File::from);
    let stdout = pipe(child.stdout.take().map(OwnedFd::from));
    let stderr = pipe(child.stderr.take().map(OwnedFd::from));
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let pidfd = match pidfd_open(pid) {
        Ok(pidfd) => pidfd,
        Err(error) => {
            let _ = child.kill();
            return Err(error);
        }
    };
    capture_output(
        pidfd.as_fd(),
        stdout,
        stderr,
        COMMAND_OUTPUT_LIMIT,
        Some(timeout),
    )
}

/// Whether a runtime's message says the container does not exist (runc: "container does not
/// exist"; crun: "error opening file `<root>/<id>/status`: No such file or directory").
pub(crate) fn is_unknown_container(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("does not exist")
        || message.contains("not found")
        || message.contains("no such file or directory")
}

/// Whether a runtime's message says the container's process has already exited.
pub(crate) fn is_not_running(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("not running")
        || message.contains("process already finished")
        || message.contains("no such process")
        || message.contains("container is stopped")
}

/// What a runtime said on stderr or in its log, as one line: the `msg` of logrus text lines
/// (`time=... level=error msg="..."`) and of JSON lines (`{"msg": "...", "level": "error"}`),
/// other lines as they are. Debug and info entries are left out when there are errors.
pub fn runtime_message(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let mut errors = Vec::new();
    let mut others = Vec::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let (level, message) = parse_log_line(line);
        let message = message.trim().to_owned();
        if message.is_empty() {
            continue;
        }
        match level.as_deref() {
            Some("error" | "fatal" | "panic" | "warning" | "warn") | None => errors.push(message),
            Some(_) => others.push(message),
        }
    }
    let chosen = if errors.is_empty() { others } else { errors };
    let mut unique: Vec<String> = Vec::new();
    for message in chosen {
        if !unique.contains(&message) {
            unique.push(message);
        }
    }
    unique.join("; ")
}

/// Splits one log line into its level (if it has one) and message.
fn parse_log_line(line: &str) -> (Option<String>, String) {
    if line.starts_with('{') {
        if let Ok(serde_json::Value::Object(entry)) = serde_json::from_str(line) {
            let field = |name: &str| {
                entry
                    .get(name)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            };
            if let Some(message) = field("msg") {
                return (field("level"), message);
            }
        }
    }
    if let Some(message) = logfmt_field(line, "msg") {
        return (logfmt_field(line, "level"), message);
    }
    (None, line.to_owned())
}

/// The value of `key=value` or `key="quoted \"value\""` in a logfmt line.
fn logfmt_field(line: &str, key: &str) -> Option<String> {
    let mut rest = line;
    loop {
        let start = rest.find(&format!("{key}="))?;
        let at_word_start = start == 0 || rest.as_bytes()[start - 1] == b' ';
        let value = &rest[start + key.len() + 1..];
        if !at_word_start {
            rest = value;
            continue;
        }
        return Some(match value.strip_prefix('"') {
            Some(quoted) => unquote(quoted),
            None => value.split(' ').next().unwrap_or_default().to_owned(),
        });
    }
}

/// Reads a Go-quoted string up to its closing quote (the opening one already removed).
fn unquote(quoted: &str) -> String {
    let mut value = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => value.push('\n'),
                Some('t') => value.push('\t'),
                Some(other) => value.push(other),
                None => break,
            },
            c => value.push(c),
        }
    }
    value
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn runc_text_messages_are_extracted() {
        let stderr =
            b"time=\"2024-01-01T00:00:00Z\" level=error msg=\"container does not exist\"\n";
        assert_eq!(runtime_message(stderr), "container does not exist");
        let quoted = b"time=\"x\" level=error msg=\"exec: \\\"nope\\\": not found\"\n";
        assert_eq!(runtime_message(quoted), "exec: \"nope\": not found");
        let bare = b"level=error msg=oops\n";
        assert_eq!(runtime_message(bare), "oops");
    }

    #[test]
    fn json_log_messages_prefer_errors() {
        let log = br#"{"level":"info","msg":"starting","time":"x"}
{"level":"error","msg":"cgroups in hybrid mode not supported, drop all controllers from cgroupv2","time":"x"}
"#;
        assert_eq!(
            runtime_message(log),
            "cgroups in hybrid mode not supported, drop all controllers from cgroupv2"
        );
        let info_only = br#"{"level":"info","msg":"starting"}"#;
        assert_eq!(runtime_message(info_only), "starting");
    }

    #[test]
    fn plain_lines_are_kept_once() {
        let stderr = b"error opening file `/r/x/status`: No such file or directory\n\nerror opening file `/r/x/status`: No such file or directory\n";
        assert_eq!(
            runtime_message(stderr),
            "error opening file `/r/x/status`: No such file or directory"
        );
        assert_eq!(runtime_message(b""), "");
    }

    #[test]
    fn unknown_and_stopped_containers_are_recognised() {
        assert!(is_unknown_container("container does not exist"));
        assert!(is_unknown_container(
            "error opening file `/run/crun/x/status`: No such file or directory"
        ));
        assert!(!is_unknown_container("permission denied"));
        assert!(is_not_running("container not running"));
        assert!(is_not_running("kill container: No such process"));
        assert!(!is_not_running("permission denied"));
    }

    #[test]
    fn the_hybrid_refusal_becomes_a_plain_error() {
        let runtime = OciRuntime {
            name: "crun".into(),
            binary: "/usr/bin/crun".into(),
            root: "/run/crun".into(),
            systemd_cgroup: false,
        };
        let error = runtime.classify_failure(
            "create",
            "c1",
            "cgroups in hybrid mode not supported, drop all controllers from cgroupv2".into(),
        );
        assert!(matches!(error, RuntimeError::Unusable { .. }), "{error:?}");
        assert!(error
            .to_string()
            .contains("crun cannot run on this host's hybrid cgroup layout"));
        let error = runtime.classify_failure("create", "c1", "bad spec".into());
        assert_eq!(
            error.to_string(),
            "/usr/bin/crun create c1 failed: bad spec"
        );
    }

    #[test]
    fn commands_carry_the_global_options() {
        let runtime = OciRuntime {
            name: "runc".into(),
            binary: "/usr/sbin/runc".into(),
            root: "/run/corral/runc".into(),
            systemd_cgroup: true,
        };
        let create = runtime.create_command(
            "c1",
            Path::new("/b"),
            Path::new("/s/container.pid"),
            Path::new("/s/runtime.log"),
            Some(Path::new("/s/console.sock")),
        );
        let args: Vec<_> = create
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--root",
                "/run/corral/runc",
                "--systemd-cgroup",
                "--log",
                "/s/runtime.log",
                "--log-format",
                "json",
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/s/container.pid",
                "--console-socket",
                "/s/console.sock",
                "c1"
            ]
        );
    }

    #[test]
    fn a_missing_runtime_is_reported_with_its_path() {
        let runtime = OciRuntime {
            name: "nope".into(),
            binary: "/nonexistent/runtime".into(),
            root: "/tmp".into(),
            systemd_cgroup: false,
        };
        let error = runtime.check_usable().unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/runtime"),
            "{error}"
        );
        let error = runtime.start("c1").unwrap_err();
        assert!(error.to_string().contains("start"), "{error}");
    }
}
