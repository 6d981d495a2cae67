//! The shim proper, from its setup to its exit.

use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use corral_process::detach;
use corral_runtime::state_dir::{
    write_atomically, ATTACH_SOCKET, CONTROL_SOCKET, EXIT_FILE, SHIM_LOG, SHIM_PID_FILE,
};
use corral_runtime::{unix_socket, write_exit, LaunchReport, ProcessIdentity, ShimProcess};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chdir, setsid, write, Pid};

use crate::args::ShimArgs;
use crate::create::{create_container, CreateError, CreatedContainer};
use crate::cri_log::CriLog;
use crate::diag::diag;
use crate::oom::OomBaseline;
use crate::supervisor::{Supervisor, SupervisorParts};

/// After a failed create, how long the shim waits for the runtime's leftovers to be reapable.
const CLEANUP_REAP_LIMIT: Duration = Duration::from_secs(2);

/// What the shim sets up before it creates the container.
struct Setup {
    log: CriLog,
    signals: SignalFd,
    attach_listener: UnixListener,
    control_listener: UnixListener,
}

/// Runs in the forked child of the launcher and never returns. `report` is the pipe on which the
/// launcher waits for one [`LaunchReport`] line.
pub fn run(args: &ShimArgs, report: OwnedFd) -> ! {
    let setup = match prepare(args, report.as_raw_fd()) {
        Ok(setup) => setup,
        Err(message) => {
            diag!("setup failed: {message}");
            remove_sockets(&args.state_dir);
            send_report(&report, &LaunchReport::ShimFailed(message));
            std::process::exit(1)
        }
    };
    let created = create_or_exit(args, &report);
    let container_pid = created.pid;
    let oom_baseline = OomBaseline::read(&args.memory_cgroups);
    let supervisor = supervise_or_exit(args, setup, created, &report);
    drop(report);
    diag!("container {} created, init pid {container_pid}", args.id);
    supervise_until_exit(args, supervisor, &oom_baseline)
}

/// Creates the container; on failure reports why and exits.
fn create_or_exit(args: &ShimArgs, report: &OwnedFd) -> CreatedContainer {
    diag!(
        "creating container {} with {}",
        args.id,
        args.runtime.binary.display()
    );
    match create_container(args) {
        Ok(created) => created,
        Err(error) => {
            let report_line = match error {
                CreateError::Runtime(message) => LaunchReport::RuntimeFailed(message),
                CreateError::Shim(message) => LaunchReport::ShimFailed(message),
            };
            diag!("create failed: {}", report_line.to_line().trim());
            clean_up_failed_create(args);
            send_report(report, &report_line);
            std::process::exit(1)
        }
    }
}

/// Sets up the supervisor of the created container and reports it created; when either fails,
/// removes the container and exits.
fn supervise_or_exit(
    args: &ShimArgs,
    setup: Setup,
    created: CreatedContainer,
    report: &OwnedFd,
) -> Supervisor {
    let container_pid = created.pid;
    let runtime_create = Some(created.runtime_took);
    let supervisor = Supervisor::new(SupervisorParts {
        container_pid,
        io: created.io,
        stdin: args.stdin,
        stdin_once: args.stdin_once,
        log: setup.log,
        signals: setup.signals,
        attach_listener: setup.attach_listener,
        control_listener: setup.control_listener,
    });
    match (supervisor, own_identity()) {
        (Ok(supervisor), Ok(me)) => {
            let created = LaunchReport::Created(ShimProcess {
                shim_pid: me.pid,
                shim_start_time: me.start_time,
                container_pid,
                runtime_create,
            });
            if let Err(error) = write_all(report, created.to_line().as_bytes()) {
                // Nobody learns of this container, so nobody would ever remove it.
                diag!("cannot report to the launcher ({error}); removing the container");
                clean_up_failed_create(args);
                std::process::exit(1)
            }
            supervisor
        }
        (Err(error), _) | (_, Err(error)) => {
            let message = format!("set up the container's stdio: {error}");
            diag!("{message}");
            clean_up_failed_create(args);
            send_report(report, &LaunchReport::ShimFailed(message));
            std::process::exit(1)
        }
    }
}

/// Serves the container until it exits, records the exit and tells those waiting, then exits.
fn supervise_until_exit(
    args: &ShimArgs,
    mut supervisor: Supervisor,
    oom_baseline: &OomBaseline,
) -> ! {
    // A container sharing a PID namespace leaves processes behind; gone before it is seen exited.
    let exit = supervisor.run(|| {
        crate::leftovers::kill_leftovers(&args.memory_cgroups);
    });
    let oom_killed = oom_baseline.oom_killed_since(&args.memory_cgroups);
    let exit = exit.into_exit_info(oom_killed);
    if let Err(error) = write_exit(&args.state_dir, &exit) {
        diag!("cannot record the exit: {error}");
    }
    supervisor.notify_exit(exit.exit_code);
    drop(supervisor);
    remove_sockets(&args.state_dir);
    reap_leftovers(Duration::ZERO);
    diag!(
        "container {} exited with {} (oom killed: {oom_killed}); shim exits",
        args.id,
        exit.exit_code
    );
    std::process::exit(0)
}

/// Detaches from the launcher's session and stdio, becomes the subreaper, records its pid and
/// opens the log and the sockets.
fn prepare(args: &ShimArgs, report_fd: RawFd) -> Result<Setup, String> {
    setsid().map_err(|e| format!("setsid: {e}"))?;
    redirect_stdio(&args.state_dir.join(SHIM_LOG))?;
    chdir("/").map_err(|e| format!("chdir(\"/\"): {e}"))?;
    // Closes every descriptor above stderr but the report pipe: the shim holds nothing of its
    // launcher's.
    detach::close_fds_except(report_fd).map_err(|e| e.to_string())?;
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("prctl(PR_SET_CHILD_SUBREAPER): {e}"))?;
    let me = own_identity().map_err(|e| format!("read own start time: {e}"))?;
    write_atomically(&args.state_dir.join(SHIM_PID_FILE), me.to_line().as_bytes())
        .map_err(|e| e.to_string())?;

    // SIGCHLD is taken through a signalfd; blocked before any child exists, none is lost.
    let mut sigchld = SigSet::empty();
    sigchld.add(Signal::SIGCHLD);
    sigchld
        .thread_block()
        .map_err(|e| format!("block SIGCHLD: {e}"))?;
    let signals = SignalFd::with_flags(&sigchld, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;

    let log = CriLog::open(&args.log_path)
        .map_err(|e| format!("open log {}: {e}", args.log_path.display()))?;
    remove_stale(&args.state_dir.join(EXIT_FILE))?;
    let attach_listener = bind(&args.state_dir.join(ATTACH_SOCKET))?;
    let control_listener = bind(&args.state_dir.join(CONTROL_SOCKET))?;
    Ok(Setup {
        log,
        signals,
        attach_listener,
        control_listener,
    })
}

fn own_identity() -> std::io::Result<ProcessIdentity> {
    let pid = nix::unistd::getpid().as_raw();
    ProcessIdentity::of_pid(pid)?.ok_or_else(|| std::io::Error::from(Errno::ESRCH))
}

/// Stdin from `/dev/null`; stdout and stderr appended to `shim.log`.
fn redirect_stdio(shim_log: &Path) -> Result<(), String> {
    let null = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    let log = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(shim_log)
        .map_err(|e| format!("open {}: {e}", shim_log.display()))?;
    detach::redirect_stdio(null.as_fd(), log.as_fd(), log.as_fd())
        .map_err(|e| format!("redirect stdio: {e}"))
}

fn bind(path: &Path) -> Result<UnixListener, String> {
    remove_stale(path)?;
    unix_socket::bind(path).map_err(|e| format!("bind {}: {e}", path.display()))
}

fn remove_stale(path: &Path) -> Result<(), String> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("remove stale {}: {e}", path.display())),
    }
}

fn remove_sockets(state_dir: &Path) {
    for name in [ATTACH_SOCKET, CONTROL_SOCKET] {
        let _ = fs::remove_file(state_dir.join(name));
    }
}

/// Undoes a create that failed or cannot be reported: the runtime deletes whatever it made, the
/// shim reaps what was left to it and removes its sockets.
fn clean_up_failed_create(args: &ShimArgs) {
    if let Err(error) = args.runtime.delete(&args.id, true) {
        diag!("delete --force after a failed create: {error}");
    }
    remove_sockets(&args.state_dir);
    reap_leftovers(CLEANUP_REAP_LIMIT);
}

/// Reaps exited children; waits up to `limit` for the remaining ones to exit.
fn reap_leftovers(limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => return,
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() >= deadline {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => {
                diag!("waitpid: {errno}");
                return;
            }
        }
    }
}

fn send_report(report: &OwnedFd, line: &LaunchReport) {
    // If the launcher is gone it reports the shim's silence itself.
    let _ = write_all(report, line.to_line().as_bytes());
}

fn write_all(fd: &OwnedFd, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        match write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}
