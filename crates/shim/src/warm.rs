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
//! nothing changes. The first of these pays the wait on a thread of its own, while the runtime
//! is still starting; the runtime's own move then finds the lock warm (measured here:
//! `runc create` p50 39 → 28 ms). A write that fails ends the warming (once, in the shim's
//! log): the container is made all the same, only without the gain.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::diag::diag;

/// How often the shim moves itself while the runtime runs: well within a grace period.
pub const INTERVAL: Duration = Duration::from_millis(2);

/// The warming thread; stopped and joined when dropped.
#[derive(Debug)]
pub struct Warmer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<u32>>,
}

impl Warmer {
    /// Starts warming through `procs` (the `cgroup.procs` of the shim's own cgroup); does
    /// nothing without one or when no thread can be started.
    pub fn start(procs: Option<&Path>) -> Warmer {
        let Some(procs) = procs.map(Path::to_path_buf) else {
            return Warmer::idle();
        };
        let (stop, stopped) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("cgroup-warm".into())
            .spawn(move || warm(&procs, &stopped));
        match spawned {
            Ok(thread) => Warmer {
                stop: Some(stop),
                thread: Some(thread),
            },
            Err(error) => {
                diag!("no thread to warm the cgroup lock with: {error}");
                Warmer::idle()
            }
        }
    }

    fn idle() -> Warmer {
        Warmer {
            stop: None,
            thread: None,
        }
    }

    /// Stops warming; returns how many moves were made.
    pub fn finish(mut self) -> u32 {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> u32 {
        drop(self.stop.take());
        self.thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or(0)
    }
}

impl Drop for Warmer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Writes this process's pid to `procs` until `stopped` says stop (or its sender is gone);
/// returns how many writes succeeded.
fn warm(procs: &PathBuf, stopped: &mpsc::Receiver<()>) -> u32 {
    let pid = std::process::id().to_string();
    let mut moves = 0;
    loop {
        let written = OpenOptions::new()
            .write(true)
            .open(procs)
            .and_then(|mut file| file.write_all(pid.as_bytes()));
        if let Err(error) = written {
            diag!(
                "cannot move into {} ({error}); the cgroup lock is not kept warm",
                procs.display()
            );
            return moves;
        }
        moves += 1;
        match stopped.recv_timeout(INTERVAL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return moves,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_own_pid_until_finished() {
        let dir = tempfile::tempdir().unwrap();
        let procs = dir.path().join("cgroup.procs");
        std::fs::write(&procs, "").unwrap();
        let warmer = Warmer::start(Some(&procs));
        std::thread::sleep(INTERVAL * 5);
        let moves = warmer.finish();
        assert!(moves >= 1, "{moves}");
        assert_eq!(
            std::fs::read_to_string(&procs).unwrap(),
            std::process::id().to_string()
        );
    }

    #[test]
    fn a_write_that_fails_ends_the_warming_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let warmer = Warmer::start(Some(&dir.path().join("missing/cgroup.procs")));
        assert_eq!(warmer.finish(), 0);
        assert_eq!(Warmer::start(None).finish(), 0);
    }
}
