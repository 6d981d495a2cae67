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
    moves: u32,
}

impl Warmer {
    /// Warming through `procs` (the `cgroup.procs` of the shim's own cgroup); none without.
    pub fn new(procs: Option<&Path>) -> Warmer {
        Warmer {
            procs: procs.map(Path::to_path_buf),
            pid: std::process::id().to_string(),
            next: Instant::now(),
            moves: 0,
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
            self.moves += 1;
            self.next = Instant::now() + INTERVAL;
        }
        Some(self.next.saturating_duration_since(Instant::now()))
    }

    /// How many moves were made.
    #[cfg(test)]
    fn moves(&self) -> u32 {
        self.moves
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
        let mut warmer = Warmer::new(Some(&procs));
        let wait = warmer.tick().unwrap();
        assert!(wait <= INTERVAL);
        // Not due again at once.
        warmer.tick().unwrap();
        assert_eq!(warmer.moves(), 1);
        std::thread::sleep(INTERVAL);
        warmer.tick().unwrap();
        assert_eq!(warmer.moves(), 2);
        assert_eq!(
            std::fs::read_to_string(&procs).unwrap(),
            std::process::id().to_string()
        );
    }

    #[test]
    fn a_move_that_fails_ends_the_warming_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let mut warmer = Warmer::new(Some(&dir.path().join("missing/cgroup.procs")));
        assert_eq!(warmer.tick(), None);
        assert_eq!(warmer.tick(), None);
        assert_eq!(warmer.moves(), 0);
        assert_eq!(Warmer::new(None).tick(), None);
    }
}
