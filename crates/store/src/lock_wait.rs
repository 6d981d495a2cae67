//! Opening the database while another open file description still holds its lock.
//!
//! redb locks the file with open-file-description locks, which a forked child shares until it
//! closes its copy of the descriptor: Rust opens every file close-on-exec, but between `fork`
//! and `exec` a child corrald starts (a CNI plugin, runc, a pause or shim launcher) holds the
//! database's lock too. When corrald is killed (SIGKILL, OOM) at that moment and restarted at
//! once, the new daemon finds the database "already open" until the child reaches its `exec`
//! — microseconds on an idle machine, much longer on a loaded one. [`Store::open_when_free`]
//! therefore waits, for a bounded time, for such a holder to let go, and names the processes
//! holding the file while it waits.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{Result, Store, StoreError};

/// How often a refused open is tried again.
const RETRY: Duration = Duration::from_millis(50);

impl Store {
    /// [`Store::open`], waiting up to `wait` while another open file description (a process
    /// that is going away, or a child between fork and exec) holds the database's lock.
    /// `waiting` is told, once, which processes hold the file when the first open is refused.
    pub fn open_when_free(
        path: &Path,
        wait: Duration,
        mut waiting: impl FnMut(&[(i32, String)]),
    ) -> Result<Self> {
        let deadline = Instant::now() + wait;
        let mut told = false;
        loop {
            match Store::open(path) {
                Err(e) if is_already_open(&e) && Instant::now() < deadline => {
                    if !told {
                        waiting(&holders(path));
                        told = true;
                    }
                    std::thread::sleep(RETRY);
                }
                other => return other,
            }
        }
    }
}

fn is_already_open(error: &StoreError) -> bool {
    matches!(error, StoreError::Open { source, .. }
        if matches!(**source, redb::DatabaseError::DatabaseAlreadyOpen))
}

/// The processes (pid, name) with `path` open, as `/proc/*/fd` shows them (all of them, when
/// run as root; this process's own descriptors included).
pub fn holders(path: &Path) -> Vec<(i32, String)> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in procs.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path));
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push((pid, name.trim().to_owned()));
        }
    }
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Set for [`sigkilled_owner_with_a_forked_child`] run as a helper process: the database.
    const HELPER_ENV: &str = "CORRAL_STORE_LOCK_HELPER";

    /// The case that made a restarted corrald fail: the database's owner dies by SIGKILL (so
    /// redb unlocks nothing) while a child it forked has not reached its `exec` yet and still
    /// shares the locked descriptor. A plain open is refused; the waiting open gets the
    /// database once the child lets go, and names it meanwhile.
    #[test]
    fn an_open_waits_for_a_forked_child_of_a_killed_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        // Its output goes to a file: a pipe would stay open in the child until it exits.
        let said_path = dir.path().join("helper.out");
        let said_file = std::fs::File::create(&said_path).unwrap();
        let helper = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock_wait::tests::sigkilled_owner_with_a_forked_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HELPER_ENV, &path)
            .stdout(said_file)
            .status()
            .unwrap();
        let said = std::fs::read_to_string(&said_path).unwrap();
        let child: i32 = said
            .rsplit("child ")
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("the helper did not run: {helper:?}: {said}"));
        assert!(
            Store::open(&path).is_err_and(|e| is_already_open(&e)),
            "the killed owner's child holds the lock"
        );
        let mut told = Vec::new();
        let store = Store::open_when_free(&path, Duration::from_secs(30), |holders| {
            told = holders.to_vec()
        });
        assert!(store.is_ok(), "{:?}", store.err());
        assert!(
            told.iter().any(|(pid, _)| *pid == child),
            "the holder {child} is named: {told:?}"
        );
    }

    /// The helper of the test above (run only as its child process): opens the database,
    /// forks a child that holds the descriptor for a second, and kills itself with SIGKILL.
    #[test]
    #[ignore = "a helper process of an_open_waits_for_a_forked_child_of_a_killed_owner"]
    fn sigkilled_owner_with_a_forked_child() {
        let Some(path) = std::env::var_os(HELPER_ENV) else {
            return;
        };
        let store = Store::open(Path::new(&path)).unwrap();
        // SAFETY: the child only sleeps and exits (both async-signal-safe), holding a copy of
        // the database's descriptor, as a child between fork and exec would.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: plain syscalls with no memory passed.
            unsafe {
                libc::usleep(1_000_000);
                libc::_exit(0);
            }
        }
        println!("child {child}");
        // Written before the kill below.
        std::io::Write::flush(&mut std::io::stdout()).unwrap();
        // SAFETY: raise takes a signal number; SIGKILL ends this process at once.
        unsafe { libc::raise(libc::SIGKILL) };
        drop(store);
    }

    #[test]
    fn an_open_held_past_the_wait_fails_as_already_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let _held = Store::open(&path).unwrap();
        let refused = Store::open_when_free(&path, Duration::from_millis(200), |_| {});
        assert!(refused.is_err_and(|e| is_already_open(&e)));
    }
}
