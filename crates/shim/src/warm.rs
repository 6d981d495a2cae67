//! Keeps the kernel's cgroup migration lock warm while the OCI runtime creates a container.
//!
//! Moving a process into a cgroup takes the kernel's `cgroup_threadgroup_rwsem` for writing,
//! and the first writer after a quiet spell first waits for an RCU grace period
//! (`rcu_sync_enter`), unless the hierarchy is mounted with `favordynmods`. A writer that comes
//! while the lock is still warm from another one (within about a grace period) does not wait.
//! `runc create` moves the container's first process into its cgroups, and on this kind of
//! machine paid that wait — 10-15 ms, a third of the whole create — for every container.
//!
//! So while the runtime runs, the shim moves itself, every [`INTERVAL`], into the cgroup it
//! is already in (`cgroup.procs` of its own cgroup, which corrald names): the same lock, and
//! nothing changes. The first move pays the wait while the runtime is still starting (the shim
//! has nothing else to do meanwhile, so it moves from the thread that waits for the runtime: no
//! thread, no memory of its own); the runtime's own move then finds the lock warm (measured
//! here: `runc create` p50 39 → 28 ms). A move that fails ends the warming (once, in the
//! shim's log): the container is made all the same, only without the gain.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::diag::diag;

/// How often the shim moves itself while the runtime runs: well within a grace period.
pub const INTERVAL: Duration = Duration::from_millis(2);

/// The moves of one runtime call.
#[derive(Debug)]
pub struct Warmer {
    /// `None` once warming is off (never asked for, or a move failed).
    procs: Option<PathBuf>,
    pid: String,
    next: Instant,
}

impl Warmer {
    /// Warming through `procs` (the `cgroup.procs` of the shim's own cgroup); none without.
    pub fn new(procs: Option<&Path>) -> Warmer {
        Warmer {
            procs: procs.map(Path::to_path_buf),
            pid: std::process::id().to_string(),
            next: Instant::now(),
        }
    }

    /// Moves the shim if a move is due; returns how long until the next one (`None` when not
    /// warming). The first move may block for a grace period.
    pub fn tick(&mut self) -> Option<Duration> {
        let procs = self.procs.as_ref()?;
        if Instant::now() >= self.next {
            let moved = OpenOptions::new()
                .write(true)
                .open(procs)
                .and_then(|mut file| file.write_all(self.pid.as_bytes()));
            if let Err(error) = moved {
                diag!(
                    "cannot move into {} ({error}); the cgroup lock is not kept warm",
                    procs.display()
                );
                self.procs = None;
                return None;
            }
            self.next = Instant::now() + INTERVAL;
        }
        Some(self.next.saturating_duration_since(Instant::now()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn moves_the_own_pid_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let procs = dir.path().join("cgroup.procs");
        std::fs::write(&procs, "").unwrap();
        let own = std::process::id().to_string();
        let mut warmer = Warmer::new(Some(&procs));
        let wait = warmer.tick().unwrap();
        assert!(wait <= INTERVAL);
        assert_eq!(std::fs::read_to_string(&procs).unwrap(), own);
        // Not due again at once: nothing is written.
        std::fs::write(&procs, "").unwrap();
        warmer.tick().unwrap();
        assert_eq!(std::fs::read_to_string(&procs).unwrap(), "");
        std::thread::sleep(INTERVAL);
        warmer.tick().unwrap();
        assert_eq!(std::fs::read_to_string(&procs).unwrap(), own);
    }

    #[test]
    fn a_move_that_fails_ends_the_warming_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let mut warmer = Warmer::new(Some(&dir.path().join("missing/cgroup.procs")));
        assert_eq!(warmer.tick(), None);
        // Off for good, even once the file would be there.
        std::fs::create_dir(dir.path().join("missing")).unwrap();
        std::fs::write(dir.path().join("missing/cgroup.procs"), "").unwrap();
        assert_eq!(warmer.tick(), None);
        assert_eq!(Warmer::new(None).tick(), None);
    }
}
