//! The long-lived pause process: finishes its setup, reports it, then waits for a stop signal.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use corral_process::detach;
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{
    chdir, geteuid, getgroups, setgroups, setresgid, setresuid, setsid, write, Gid, Uid,
};

use crate::args::PauseArgs;

const OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";

/// The signals the pause waits for: stop requests, and children to reap.
pub fn handled_signals() -> SigSet {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGCHLD);
    signals
}

/// Runs in the forked child: never returns.
///
/// The launcher blocked [`handled_signals`] before forking, so none can be lost before
/// [`wait_for_stop`] takes them with `sigwait`.
pub fn run(args: &PauseArgs, status_writer: OwnedFd) -> ! {
    match prepare(args, status_writer.as_raw_fd()) {
        Ok(()) => {
            report(&status_writer, "ok");
            drop(status_writer);
            wait_for_stop()
        }
        Err(error) => {
            report(&status_writer, &error);
            std::process::exit(1)
        }
    }
}

/// Everything the pause does before it is ready; the privilege drop comes last.
fn prepare(args: &PauseArgs, status_fd: RawFd) -> Result<(), String> {
    setsid().map_err(|e| format!("setsid: {e}"))?;
    chdir("/").map_err(|e| format!("chdir(\"/\"): {e}"))?;
    redirect_stdio_to_null()?;
    // The pause holds no open files but its status pipe.
    detach::close_fds_except(status_fd).map_err(|e| e.to_string())?;
    drop_privileges(Uid::from_raw(args.uid), Gid::from_raw(args.gid))
}

fn report(status_writer: &OwnedFd, status: &str) {
    // Nothing can be done if the launcher is gone; it then reports the failure itself.
    let _ = write(status_writer, status.as_bytes());
}

/// Sets the OOM score adjustment (in the launcher; the pause inherits it). Lowering it needs
/// CAP_SYS_RESOURCE; without it the kernel refuses and the pause keeps the value it inherited,
/// which is the lowest it may have (the clamp).
pub fn set_oom_score_adj(value: i32) -> Result<(), String> {
    let write_result = OpenOptions::new()
        .write(true)
        .open(OOM_SCORE_ADJ)
        .and_then(|mut file| io::Write::write_all(&mut file, value.to_string().as_bytes()));
    match write_result {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            fs::read_to_string(OOM_SCORE_ADJ)
                .map(drop)
                .map_err(|e| format!("read {OOM_SCORE_ADJ}: {e}"))
        }
        Err(e) => Err(format!("write {value} to {OOM_SCORE_ADJ}: {e}")),
    }
}

fn redirect_stdio_to_null() -> Result<(), String> {
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("open /dev/null: {e}"))?;
    detach::redirect_stdio(null.as_fd(), null.as_fd(), null.as_fd())
        .map_err(|e| format!("redirect stdio to /dev/null: {e}"))
}

/// Drops supplementary groups, then the gid, then the uid.
fn drop_privileges(uid: Uid, gid: Gid) -> Result<(), String> {
    let has_groups = !getgroups()
        .map_err(|e| format!("getgroups: {e}"))?
        .is_empty();
    if geteuid().is_root() || has_groups {
        setgroups(&[]).map_err(|e| format!("drop privileges: setgroups([]): {e}"))?;
    }
    setresgid(gid, gid, gid).map_err(|e| format!("drop privileges: setresgid({gid}): {e}"))?;
    setresuid(uid, uid, uid).map_err(|e| format!("drop privileges: setresuid({uid}): {e}"))
}

/// Sleeps until SIGTERM or SIGINT. When the pause is PID 1 of a PID namespace, orphans of the pod
/// are reparented to it, and it reaps them whenever SIGCHLD arrives (an ordinary pause has no
/// children, so there is nothing to reap).
fn wait_for_stop() -> ! {
    let signals = handled_signals();
    // Already blocked by the launcher; blocking again keeps this function correct on its own.
    let _ = signals.thread_block();
    loop {
        match signals.wait() {
            Ok(Signal::SIGTERM | Signal::SIGINT) => std::process::exit(0),
            Ok(Signal::SIGCHLD) => reap_children(),
            Ok(_) | Err(_) => {}
        }
    }
}

fn reap_children() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}
