//! Shared helpers of the root integration tests.
//!
//! They need the `corral-pause` binary built in the same target directory:
//! `cargo build -p corral-pause` before `cargo test -p corral-sandbox`.

#![allow(dead_code, clippy::unwrap_used)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_sandbox::{spawn_pause, PauseProcess, PauseSpec};
use nix::sched::{setns, CloneFlags};

/// Returns the pause binary when the test can run: as root, with `corral-pause` built. Otherwise
/// prints why the test is skipped and returns `None`.
///
/// Also makes this test process a child subreaper, so pauses (whose launcher exits) are reparented
/// to it instead of to this VM's PID 1, which never reaps them.
pub fn setup(test: &str) -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {test}: needs root");
        return None;
    }
    let Some(binary) = pause_binary() else {
        eprintln!(
            "skipping {test}: corral-pause is not built; run `cargo build -p corral-pause` first"
        );
        return None;
    };
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    Some(binary)
}

/// `corral-pause` in the target directory this test binary was built into.
fn pause_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .map(|dir| dir.join("corral-pause"))
        .find(|candidate| candidate.is_file())
}

/// A pause that is stopped (and reaped) when dropped, even if the test panics.
pub struct RunningPause(pub PauseProcess);

impl RunningPause {
    pub fn spawn(binary: &Path, spec: &PauseSpec) -> RunningPause {
        RunningPause(spawn_pause(binary, spec).unwrap())
    }
}

impl std::ops::Deref for RunningPause {
    type Target = PauseProcess;
    fn deref(&self) -> &PauseProcess {
        &self.0
    }
}

impl Drop for RunningPause {
    fn drop(&mut self) {
        if let Err(error) = self.0.stop(Duration::from_secs(5)) {
            eprintln!("cannot stop pause {}: {error}", self.0.pid);
        }
    }
}

/// Reads `path` from a thread that has joined the namespace `ns_file` (of type `kind`). Files under
/// `/proc/sys` are resolved in the reader's namespaces, so this shows the namespace's sysctls.
pub fn read_in_namespace(ns_file: &Path, kind: CloneFlags, path: &str) -> String {
    let ns_file = ns_file.to_owned();
    let path = path.to_owned();
    std::thread::spawn(move || {
        let namespace = File::open(&ns_file).unwrap();
        setns(&namespace, kind).unwrap();
        fs::read_to_string(&path).unwrap().trim().to_owned()
    })
    .join()
    .unwrap()
}

/// Reads a file of this process's namespaces, trimmed.
pub fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path).unwrap().trim().to_owned()
}

/// The value of a `Name:` line of `/proc/PID/status`; `None` when the process is gone.
pub fn status_field(pid: i32, name: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|value| value.trim().to_owned())
    })
}

/// Waits (up to a minute, so a broken test fails instead of hanging) until `condition` holds.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
