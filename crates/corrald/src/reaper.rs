//! corrald is the child subreaper of what it starts: exec'd processes (`runc exec --detach`)
//! are handed back to it to wait for, and pause and shim processes, which detach themselves,
//! are re-parented to it while it runs. This module makes it one, and reaps those detached
//! processes when they exit. Only session leaders named corral-pause or corral-shim are reaped
//! here — their launchers, and every other child, are waited for by whoever started them.

use std::time::Duration;

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
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if is_detached_zombie_child(&stat, &me) {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}

/// `/proc/PID/stat`: `pid (comm) state ppid pgrp session ...`.
fn is_detached_zombie_child(stat: &str, parent: &str) -> bool {
    let Some((head, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let Some((pid, comm)) = head.split_once(" (") else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (Some(state), Some(ppid), Some(session)) = (fields.first(), fields.get(1), fields.get(3))
    else {
        return false;
    };
    matches!(comm, "corral-pause" | "corral-shim")
        && *state == "Z"
        && *ppid == parent
        && *session == pid.trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_detached_pause_and_shim_zombies_of_ours() {
        let z = "4242 (corral-pause) Z 100 4242 4242 0 -1";
        assert!(is_detached_zombie_child(z, "100"));
        // Not ours, not a zombie, a launcher (not a session leader), another program.
        assert!(!is_detached_zombie_child(z, "101"));
        assert!(!is_detached_zombie_child(
            "4242 (corral-pause) S 100 4242 4242 0",
            "100"
        ));
        assert!(!is_detached_zombie_child(
            "4243 (corral-pause) Z 100 100 100 0",
            "100"
        ));
        assert!(!is_detached_zombie_child(
            "4244 (runc) Z 100 4244 4244 0",
            "100"
        ));
        assert!(is_detached_zombie_child(
            "4245 (corral-shim) Z 100 4245 4245 0",
            "100"
        ));
    }
}
