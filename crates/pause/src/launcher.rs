//! The launcher: creates the namespaces, configures them, forks the pause and waits for it to be ready.
//!
//! With a user namespace, the launcher creates it first, so that it owns the network, IPC, UTS
//! and PID namespaces made next (capabilities inside it then govern them). A process cannot
//! give itself arbitrary id mappings, so a helper forked *before* the unshare (and so left in
//! the parent user namespace, as root) writes `/proc/<launcher>/uid_map` and `gid_map`; then
//! the launcher becomes root of the new namespace.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use corral_process::detach::{self, describe_exit, PipeError};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{
    fork, getpid, pipe2, read, sethostname, setresgid, setresuid, write, ForkResult, Gid, Pid, Uid,
};

use crate::args::{PauseArgs, UsernsMaps};
use crate::pause;

/// How long the launcher waits for the pause to report that it is set up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The most the pause writes on its status pipe (one error line).
const MAX_STATUS_LEN: usize = 4096;

/// Sets IFF_UP on `lo` in the calling process's network namespace.
fn bring_up_loopback() -> Result<(), String> {
    // SAFETY: socket() takes plain integers; the returned fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!(
            "bring up lo: socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a valid descriptor just returned by socket() and owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `req`, which lives
    // for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(format!(
            "bring up lo: SIOCGIFFLAGS: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(format!(
            "bring up lo: SIOCSIFFLAGS: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Sets up the namespaces, forks the pause and returns its pid once it is ready.
pub fn launch(args: &PauseArgs) -> Result<i32, String> {
    // Before the user namespace: lowering it needs CAP_SYS_RESOURCE in the host's. The pause
    // inherits it across fork.
    pause::set_oom_score_adj(args.oom_score_adj)?;
    if let Some(maps) = &args.userns {
        enter_user_namespace(maps)?;
    }
    create_namespaces(args)?;
    if args.new_net {
        // A new network namespace starts with `lo` down: containers of the pod could not talk
        // over 127.0.0.1. (CNI plugins configure only the pod's interface.)
        bring_up_loopback()?;
    }
    if let Some(hostname) = &args.hostname {
        sethostname(hostname).map_err(|e| format!("sethostname({hostname:?}): {e}"))?;
    }
    for sysctl in &args.sysctls {
        write_sysctl(
            &Path::new("/proc/sys").join(&sysctl.relative_path),
            &sysctl.value,
        )
        .map_err(|e| format!("sysctl {}: {e}", sysctl.key))?;
    }

    let (status_reader, status_writer) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("create status pipe: {e}"))?;
    // The pause waits for these with sigwait; blocking them before the fork means none is lost in
    // between (an unhandled SIGTERM is ignored by a PID 1).
    let signals = pause::handled_signals();
    let old_mask = signals
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map_err(|e| format!("block signals: {e}"))?;

    // SAFETY: the launcher is single-threaded (no thread is ever started), so the child may run
    // arbitrary code after fork.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(status_reader);
            pause::run(args, status_writer)
        }
        ForkResult::Parent { child } => {
            drop(status_writer);
            // Only matters for the launcher's last moments; failing to restore it is harmless.
            let _ = old_mask.thread_set_mask();
            wait_until_ready(child, status_reader)
        }
    }
}

/// Kills and reaps a pause whose pid could not be reported.
pub fn abandon(pid: i32) {
    let pid = Pid::from_raw(pid);
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

/// Unshares a user namespace, has its mappings written from the parent namespace, and becomes
/// its root (uid and gid 0 inside, the mapped ids outside), keeping full capabilities in it.
fn enter_user_namespace(maps: &UsernsMaps) -> Result<(), String> {
    let (go_reader, go_writer) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("create userns pipe: {e}"))?;
    let (result_reader, result_writer) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("create userns pipe: {e}"))?;
    let launcher = getpid();
    // SAFETY: the launcher is single-threaded, so the child may run arbitrary code after fork.
    let helper = match unsafe { fork() }.map_err(|e| format!("fork id-map helper: {e}"))? {
        ForkResult::Child => {
            drop(go_writer);
            drop(result_reader);
            let code = match write_maps_when_told(launcher, maps, &go_reader) {
                Ok(()) => 0,
                Err(error) => {
                    let _ = write(&result_writer, error.as_bytes());
                    1
                }
            };
            // SAFETY: _exit ends the forked helper without running the parent's atexit handlers
            // or flushing stdio buffers it shares with the launcher.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(go_reader);
    drop(result_writer);
    if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
        // Closing the go pipe unblocks the helper, which then writes nothing.
        drop(go_writer);
        let _ = waitpid(helper, None);
        return Err(format!("unshare(CLONE_NEWUSER): {e}"));
    }
    let told = write(&go_writer, b"g").map_err(|e| format!("signal id-map helper: {e}"));
    drop(go_writer);
    let report = read_to_end(&result_reader);
    let exit = waitpid(helper, None).map_err(|e| format!("wait for id-map helper: {e}"))?;
    told?;
    match (report?, exit) {
        (report, WaitStatus::Exited(_, 0)) if report.is_empty() => {}
        (report, _) if !report.is_empty() => return Err(report),
        (_, exit) => return Err(format!("id-map helper failed ({})", describe_exit(exit))),
    }
    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(|e| format!("become gid 0 in the user namespace: {e}"))?;
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(|e| format!("become uid 0 in the user namespace: {e}"))
}

/// In the helper: waits for the launcher's go, then writes its uid and gid maps.
fn write_maps_when_told(launcher: Pid, maps: &UsernsMaps, go: &OwnedFd) -> Result<(), String> {
    let mut byte = [0u8; 1];
    loop {
        match read(go, &mut byte) {
            Ok(0) => return Ok(()), // the launcher gave up before unsharing
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("read userns pipe: {e}")),
        }
    }
    for (file, map) in [("uid_map", &maps.uid), ("gid_map", &maps.gid)] {
        let path = format!("/proc/{launcher}/{file}");
        let line = map.map_line();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| format!("write {:?} to {path}: {e}", line.trim_end()))?;
    }
    Ok(())
}

/// Reads a pipe until every writer closed it.
fn read_to_end(reader: &OwnedFd) -> Result<String, String> {
    match detach::read_report(reader.as_fd(), None, MAX_STATUS_LEN, false) {
        Ok(text) => Ok(String::from_utf8_lossy(&text).trim().to_owned()),
        Err(PipeError::TooLong(_)) => Err("id-map helper wrote an overlong status".to_owned()),
        Err(e) => Err(format!("read userns pipe: {e}")),
    }
}

fn create_namespaces(args: &PauseArgs) -> Result<(), String> {
    let mut flags = CloneFlags::empty();
    flags.set(CloneFlags::CLONE_NEWNET, args.new_net);
    flags.set(CloneFlags::CLONE_NEWIPC, args.new_ipc);
    flags.set(CloneFlags::CLONE_NEWUTS, args.new_uts);
    flags.set(CloneFlags::CLONE_NEWPID, args.new_pid);
    if flags.is_empty() {
        return Ok(());
    }
    unshare(flags).map_err(|e| {
        let names: Vec<&str> = flags.iter_names().map(|(name, _)| name).collect();
        format!("unshare({}): {e}", names.join(" | "))
    })
}

/// Writes one sysctl. `/proc/sys/net` (and the ipc and uts entries) are looked up in the namespaces of
/// the process that opens them, so after `unshare` these writes reach the new namespaces without
/// remounting `/proc`.
fn write_sysctl(path: &Path, value: &str) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    file.write_all(value.as_bytes())
        .map_err(|e| format!("write {value:?} to {}: {e}", path.display()))
}

/// Reads the pause's status pipe to end of file: `ok` means ready, anything else is its error.
fn wait_until_ready(child: Pid, status_reader: OwnedFd) -> Result<i32, String> {
    let failure = match read_status(&status_reader) {
        Ok(status) if status == "ok" => return Ok(child.as_raw()),
        Ok(status) if status.is_empty() => {
            let exit = waitpid(child, None)
                .map(describe_exit)
                .unwrap_or_else(|e| format!("waitpid failed: {e}"));
            return Err(format!("pause exited before it was ready ({exit})"));
        }
        Ok(status) => status,
        Err(error) => {
            let _ = kill(child, Signal::SIGKILL);
            error
        }
    };
    let _ = waitpid(child, None);
    Err(failure)
}

fn read_status(status_reader: &OwnedFd) -> Result<String, String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    match detach::read_report(status_reader.as_fd(), Some(deadline), MAX_STATUS_LEN, false) {
        Ok(status) => Ok(String::from_utf8_lossy(&status).trim().to_owned()),
        Err(PipeError::TimedOut) => Err(format!(
            "pause did not report readiness within {READY_TIMEOUT:?}"
        )),
        Err(PipeError::TooLong(_)) => Err("pause wrote an overlong status".to_owned()),
        Err(PipeError::Read(e)) => Err(format!("read status pipe: {e}")),
    }
}
