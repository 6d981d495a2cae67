//! Driving OCI runtimes (runc, crun) and the per-container `corral-shim`.
//!
//! Everything here is blocking and synchronous; corrald calls it from
//! `tokio::task::spawn_blocking`. Runtimes are run as child processes with
//! `std::process::Command`; nothing forks and keeps running Rust code.
//!
//! - [`OciRuntime`]: `state`, `start`, `kill`, `delete`, `update`, `exec` of one handler. `exec`
//!   runs the process detached from the runtime and waits for it as its parent, so the calling
//!   process must be a child subreaper (`PR_SET_CHILD_SUBREAPER`), as corrald is for its shims.
//! - [`launch_shim`]: starts the container's shim, which runs `<runtime> create` and from then on
//!   holds the container's stdio, writes its CRI log, reaps it and records its exit.
//! - [`read_exit`], [`shim_alive`], [`wait_for_shim_exit`], [`reopen_log`], [`attach`]: talking
//!   to a shim (or reading what it left) through its state directory, also after corrald
//!   restarted.
//! - [`signal_init`]: a signal to a container's init without running the runtime's `kill`, when
//!   the process can be proven to be that init.
//!
//! # The state directory
//!
//! Each container has one (`ShimConfig::state_dir`), shared by corrald and the shim:
//!
//! | file | written by | contents |
//! | --- | --- | --- |
//! | `shim.pid` | shim, at start | `PID START_TIME` (start time: field 22 of `/proc/PID/stat`) |
//! | `container.pid` | runtime (`--pid-file`) | the container init's pid |
//! | `exit.json` | shim, once, atomically (temp + rename; volatile, not fsynced) | [`ExitInfo`] as JSON |
//! | `attach.sock` | shim (socket) | attach protocol, see [`attach`] |
//! | `ctl` | shim (socket) | control protocol, see [`control`] |
//! | `shim.log` | shim | its own diagnostics (its stderr) |
//! | `runtime.log` | runtime, during create | the runtime's JSON log |
//! | `console.sock` | shim (socket), during create with a terminal | the runtime sends the pty master |
//!
//! The sockets are removed when the shim exits; the files stay for the caller to read and remove
//! with the directory.
//!
//! # Tests
//!
//! The root integration tests in `tests/` run real containers with runc and a busybox rootfs:
//! run `cargo build -p corral-shim` before `cargo test -p corral-runtime` (they skip with a
//! message when the shim is not built, runc or busybox is missing, or when not run as root).

pub mod attach;
mod capture;
pub mod control;
pub mod error;
mod exec;
mod exit;
mod lookup;
mod refusal;
mod runtime;
mod shim;
mod signal;
pub mod state_dir;
pub mod unix_socket;

pub use control::reopen_log;
pub use error::{Result, RuntimeError};
pub use exec::{ExecChild, ExecIo, ExecOutput, EXEC_OUTPUT_LIMIT};
pub use exit::{read_exit, write_exit, ExitInfo};
pub use lookup::{on_path, parse_signal};
pub use runtime::{runtime_message, OciRuntime, RuntimeState, COMMAND_TIMEOUT};
pub use shim::{launch_shim, LaunchReport, RestoreFrom, ShimConfig, ShimProcess};
pub use signal::{signal_init, Signalled};
pub use state_dir::{read_container_pid, shim_alive, ProcessIdentity};

/// Sets a terminal's window size (`TIOCSWINSZ`) on the descriptor `fd`.
pub fn set_window_size(fd: std::os::fd::BorrowedFd<'_>, width: u16, height: u16) -> Result<()> {
    use std::os::fd::AsRawFd;
    exec::set_window_size(fd.as_raw_fd(), width, height)
}
