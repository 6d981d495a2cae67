//! corrald is the child subreaper of what it starts: exec'd processes (`runc exec --detach`)
//! are handed back to it to wait for, and pause and shim processes, which detach themselves,
//! are re-parented to it while it runs. This module makes it one, and reaps those detached
//! processes when they exit. Only session leaders named corral-pause or corral-shim are reaped
//! here — their launchers, and every other child, are waited for by whoever started them.

use std::time::Duration;

use corral_process::ProcessStat;

/// How often exited pause and shim processes are looked for.
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
pub fn spawn() {
    let spawned = std::thread::Builder::new()
        .name("reaper".into())
        .spawn(|| loop {
            reap_detached();
            std::thread::sleep(INTERVAL);
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
