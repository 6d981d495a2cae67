//! corrald is the child subreaper of what it starts: exec'd processes (`runc exec --detach`)
//! are handed back to it to wait for, and pause and shim processes, which detach themselves,
//! are re-parented to it while it runs. This module makes it one, and reaps those detached
//! processes when they exit. Only session leaders named corral-pause or corral-shim are reaped
//! here — their launchers, and every other child, are waited for by whoever started them.

use std::time::Duration;

use corral_process::ProcessStat;

/// How long the reaper waits before looking again when the child that exited is someone
/// else's to wait for, or when there is no child at all.
const INTERVAL: Duration = Duration::from_secs(2);

/// Makes the calling process the subreaper of its descendants. Call before any thread starts.
pub fn become_subreaper() -> anyhow::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes plain integers and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        anyhow::bail!(
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Starts the background thread that reaps exited pause and shim processes.
///
/// It sleeps in `waitid(P_ALL, WEXITED | WNOWAIT)` until a child has exited, so an idle node
/// costs nothing (scanning all of `/proc` every 2 s cost ~1 % of a core with 500 pods). The
/// exited child is only peeked at: a detached pause or shim is reaped; any other child belongs
/// to whoever started it, so the reaper then falls back to a scan of `/proc` for detached
/// zombies and waits [`INTERVAL`] for that owner before peeking again.
pub fn spawn() {
    let spawned = std::thread::Builder::new()
        .name("reaper".into())
        .spawn(|| loop {
            if !reap_next_exited() {
                reap_detached();
                std::thread::sleep(INTERVAL);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the reaper thread; exited pause and shim processes stay zombies until their pod is removed");
    }
}

/// Reaps zombie children that are detached pause or shim processes.
pub fn reap_detached() {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(Some(stat)) = corral_process::read_stat(pid) else {
            continue;
        };
        if is_detached_zombie_child(pid, &stat, me) {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}

/// Waits until a child has exited and reaps it if it is a detached pause or shim; `false` when
/// it is not (or there is no child, or waiting failed): the caller then scans and waits.
fn reap_next_exited() -> bool {
    use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag};
    let exited = match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
        Ok(status) => status.pid(),
        Err(nix::errno::Errno::EINTR) => return true,
        Err(nix::errno::Errno::ECHILD) => return false,
        Err(e) => {
            tracing::debug!(error = %e, "waitid for exited children");
            return false;
        }
    };
    let Some(pid) = exited else { return false };
    let me = std::process::id() as i32;
    match corral_process::read_stat(pid.as_raw()) {
        Ok(Some(stat)) if is_detached_zombie_child(pid.as_raw(), &stat, me) => {
            let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
            true
        }
        _ => false,
    }
}

/// A zombie corral-pause or corral-shim of `parent` that leads its own session.
fn is_detached_zombie_child(pid: i32, stat: &ProcessStat, parent: i32) -> bool {
    matches!(stat.comm.as_str(), "corral-pause" | "corral-shim")
        && stat.state == 'Z'
        && stat.ppid == parent
        && stat.session == pid
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/PID/stat` of `pid`, named `comm`, in `state`, child of 100, leading session `session`.
    fn stat(comm: &str, state: char, session: i32) -> ProcessStat {
        let line = format!(
            "1 ({comm}) {state} 100 {session} {session} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 77"
        );
        corral_process::stat::parse_stat(&line).expect("a stat line")
    }

    #[test]
    fn only_detached_pause_and_shim_zombies_of_ours() {
        let z = stat("corral-pause", 'Z', 4242);
        assert!(is_detached_zombie_child(4242, &z, 100));
        // Not ours, not a zombie, a launcher (not a session leader), another program.
        assert!(!is_detached_zombie_child(4242, &z, 101));
        assert!(!is_detached_zombie_child(
            4242,
            &stat("corral-pause", 'S', 4242),
            100
        ));
        assert!(!is_detached_zombie_child(
            4243,
            &stat("corral-pause", 'Z', 100),
            100
        ));
        assert!(!is_detached_zombie_child(
            4244,
            &stat("runc", 'Z', 4244),
            100
        ));
        assert!(is_detached_zombie_child(
            4245,
            &stat("corral-shim", 'Z', 4245),
            100
        ));
    }
}
