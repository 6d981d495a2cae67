//! Finding a plugin binary and running it with the CNI protocol: the
//! configuration on stdin, parameters in `CNI_*` environment variables, the
//! result (or a CNI error object) on stdout.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{CniError, Result};

/// How often a busy executable (ETXTBSY) is retried before giving up.
const SPAWN_ATTEMPTS: u32 = 10;
/// The most of a plugin's stderr kept in an error message.
const MAX_STDERR_IN_ERROR: usize = 4096;

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CniCommand {
    Add,
    Del,
    Check,
}

impl CniCommand {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
        }
    }
}

/// Finds `plugin_type` in `bin_dirs`: the first regular file of that name.
pub(crate) fn find_plugin(bin_dirs: &[PathBuf], plugin_type: &str) -> Result<PathBuf> {
    bin_dirs
        .iter()
        .map(|dir| dir.join(plugin_type))
        .find(|path| std::fs::metadata(path).is_ok_and(|m| m.is_file()))
        .ok_or_else(|| CniError::PluginNotFound {
            plugin_type: plugin_type.to_owned(),
            searched: bin_dirs.to_vec(),
        })
}

/// One plugin execution.
pub(crate) struct PluginCall<'a> {
    pub command: CniCommand,
    pub network: &'a str,
    pub plugin_type: &'a str,
    pub binary: &'a Path,
    /// The `CNI_*` variables, added to the runtime's own environment (plugins
    /// such as portmap need `PATH` to find iptables).
    pub env: Vec<(&'static str, OsString)>,
    pub stdin: Vec<u8>,
    pub timeout: Option<Duration>,
}

/// The CNI error object a failing plugin prints on stdout.
#[derive(Debug, Deserialize)]
struct PluginErrorObject {
    #[serde(default)]
    code: u32,
    msg: String,
    #[serde(default)]
    details: String,
}

impl PluginCall<'_> {
    /// Runs the plugin and returns its stdout when it exits successfully.
    pub(crate) fn run(mut self) -> Result<Vec<u8>> {
        let command = self.command.as_str();
        tracing::debug!(
            network = self.network,
            plugin = self.plugin_type,
            command,
            "running CNI plugin"
        );
        let mut child = self.spawn()?;
        let config = std::mem::take(&mut self.stdin);
        let writer = child.stdin.take().map(|mut stdin| {
            std::thread::spawn(move || {
                // A plugin may exit without reading its config (e.g. on a
                // usage error); its exit status tells what happened.
                let _ = stdin.write_all(&config);
            })
        });
        let stdout_reader = child.stdout.take().map(read_to_end_in_thread);
        let stderr_reader = child.stderr.take().map(read_to_end_in_thread);
        let status = self.wait(&mut child)?;
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        let stdout = join_output(stdout_reader);
        let stderr = join_output(stderr_reader);
        if status.success() {
            if !stderr.is_empty() {
                tracing::debug!(
                    plugin = self.plugin_type,
                    command,
                    stderr = %String::from_utf8_lossy(&stderr).trim(),
                    "CNI plugin stderr"
                );
            }
            return Ok(stdout);
        }
        Err(self.failure(status, &stdout, &stderr))
    }

    fn spawn(&self) -> Result<Child> {
        let mut attempt = 1;
        loop {
            let spawned = Command::new(self.binary)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            match spawned {
                Ok(child) => return Ok(child),
                // ETXTBSY: another thread forked while the binary was open for
                // writing (seen right after installing a plugin); try again.
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < SPAWN_ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(10 * u64::from(attempt)));
                    attempt += 1;
                }
                Err(source) => {
                    return Err(CniError::Spawn {
                        path: self.binary.to_owned(),
                        command: self.command.as_str(),
                        source,
                    })
                }
            }
        }
    }

    /// Waits for the plugin, killing it when the timeout passes. The exit is seen the moment
    /// it happens, through a pidfd: a polling loop (1 ms doubling to 50 ms) used to notice a
    /// plugin that took 33 ms only at 63 ms, adding ~20 ms to every pod's CNI chain.
    fn wait(&self, child: &mut Child) -> Result<ExitStatus> {
        let spawn_error = |source| CniError::Spawn {
            path: self.binary.to_owned(),
            command: self.command.as_str(),
            source,
        };
        let Some(timeout) = self.timeout else {
            return child.wait().map_err(spawn_error);
        };
        let exited = match exits_within(child.id(), timeout) {
            Ok(exited) => exited,
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(spawn_error(error));
            }
        };
        if !exited {
            // The plugin may have exited just now; either way it is reaped.
            let _ = child.kill();
            let _ = child.wait();
            return Err(CniError::Timeout {
                network: self.network.to_owned(),
                plugin_type: self.plugin_type.to_owned(),
                command: self.command.as_str(),
                seconds: timeout.as_secs_f64(),
            });
        }
        child.wait().map_err(spawn_error)
    }

    fn failure(&self, status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> CniError {
        if let Ok(error) = serde_json::from_slice::<PluginErrorObject>(stdout) {
            return CniError::Plugin {
                network: self.network.to_owned(),
                plugin_type: self.plugin_type.to_owned(),
                command: self.command.as_str(),
                code: error.code,
                msg: error.msg,
                details: error.details,
            };
        }
        // Without a CNI error object, show what the plugin printed.
        let output = if stderr.iter().all(u8::is_ascii_whitespace) {
            stdout
        } else {
            stderr
        };
        let mut text = String::from_utf8_lossy(output).trim().to_owned();
        if text.len() > MAX_STDERR_IN_ERROR {
            let mut end = MAX_STDERR_IN_ERROR;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str("...");
        }
        CniError::PluginExit {
            network: self.network.to_owned(),
            plugin_type: self.plugin_type.to_owned(),
            command: self.command.as_str(),
            status,
            stderr: text,
        }
    }
}

/// Whether the child `pid` (not yet reaped, so the pid cannot be reused) exits within
/// `timeout`: waits on a pidfd, which becomes readable when the process exits.
fn exits_within(pid: u32, timeout: Duration) -> std::io::Result<bool> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let raw = i32::try_from(raw).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let millis =
            libc::c_int::try_from(remaining.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
        let mut fd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, which outlives the call.
        let ready = unsafe { libc::poll(&mut fd, 1, millis) };
        match ready {
            n if n > 0 => return Ok(true),
            0 if remaining.is_zero() => return Ok(false),
            0 => continue,
            _ => {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

/// Drains a pipe on its own thread so a chatty plugin never blocks on a full
/// pipe. The thread is detached if the plugin is killed (a descendant may
/// still hold the pipe open).
fn read_to_end_in_thread(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn join_output(reader: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    reader
        .and_then(|handle| handle.join().ok())
        .unwrap_or_default()
}
