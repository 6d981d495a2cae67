//! Test-only crash points: `CORRAL_CRASH_AT=<step>` makes corrald kill itself with SIGKILL the
//! first time it reaches the named step, so that the end-to-end tests (`tests/tests/crash.rs`)
//! can prove that a restarted corrald undoes whatever the dead one left half-made.
//!
//! The points are compiled into every build and inert unless the variable is set: the e2e
//! suite runs the very binaries `cargo build` makes (a cargo feature would either be on in
//! every workspace build through feature unification or need a second corrald build), and a
//! point costs one read of a process-wide `OnceLock`. SIGKILL rather than `abort()`: it is what
//! the tests simulate (an operator's or the OOM killer's `kill -9`), runs no handler and writes
//! no core file.
//!
//! Step names are `<rpc>:<what has just been done>`; [`STEPS`] lists them all. Points in the
//! shared teardown (`stop_pod:*`, `remove_pod:*`, `remove_container:*`) fire wherever it runs:
//! in the undo of a failed create and in start-up reconciliation too, so a test restarts corrald
//! without the variable after the crash.

use crate::error::{CriError, CriResult};
use std::sync::OnceLock;

/// Every crash point, in the order the RPCs reach them.
pub(crate) const STEPS: &[&str] = &[
    "run_pod:recorded",
    "run_pod:files_written",
    "run_pod:cgroup_created",
    "run_pod:pause_started",
    "run_pod:pause_in_cgroup",
    "run_pod:shm_mounted",
    "run_pod:netns_pinned",
    "run_pod:network_added",
    "run_pod:built",
    "create_container:recorded",
    "create_container:rootfs_mounted",
    "create_container:sources_recorded",
    "create_container:spec_written",
    "create_container:shim_launched",
    "start_container:started",
    "stop_pod:pause_stopped",
    "stop_pod:network_removed",
    "remove_pod:released",
    "remove_pod:cgroups_removed",
    "remove_pod:files_removed",
    "remove_container:killed",
    "remove_container:rootfs_unmounted",
    "remove_container:destroyed",
];

/// `corrald --crash-steps`: [`STEPS`], one a line, for the tests to read (so that the list is
/// written once).
pub(crate) fn print_steps() {
    for step in STEPS {
        println!("{step}");
    }
}

/// The environment variable naming the step to crash at.
pub(crate) const ENV: &str = "CORRAL_CRASH_AT";

/// Kills this process with SIGKILL when `CORRAL_CRASH_AT` names `step`; otherwise does nothing.
pub(crate) fn point(step: &str) {
    debug_assert!(STEPS.contains(&step), "crash point {step} is not in STEPS");
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        let at = std::env::var(ENV).ok().filter(|s| !s.is_empty());
        if let Some(at) = &at {
            tracing::warn!(step = %at, "{ENV} is set: corrald kills itself at this step (tests only)");
        }
        at
    });
    if armed.as_deref() == Some(step) {
        tracing::warn!(step, "crash point reached; killing corrald with SIGKILL");
        // Nothing to clean up by design; if raise somehow returns, abort is as abrupt.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
}

/// How long start-up waits for the metadata database's lock (see [`open_store`]).
const STORE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Start-up: opens the metadata database, waiting (up to [`STORE_LOCK_WAIT`]) while its lock
/// is still held by what a killed corrald left: a child it had forked (a CNI plugin, runc, a
/// launcher) shares the locked descriptor until it reaches its `exec`, which on a loaded
/// machine can come after a supervisor has already restarted corrald.
pub(crate) fn open_store(path: &std::path::Path) -> anyhow::Result<corral_store::Store> {
    use anyhow::Context;
    corral_store::Store::open_when_free(path, STORE_LOCK_WAIT, |holders| {
        tracing::warn!(
            db = %path.display(),
            ?holders,
            "the metadata database is still locked (by a process a killed corrald left?); \
             waiting up to {STORE_LOCK_WAIT:?} for it to be released"
        );
    })
    .context("open metadata store")
}

/// Start-up: runs `undo` on every half-made record `(id, record)` at once, one thread each
/// (each undo waits for processes and plugins to die, so one after the other many of them would
/// hold the CRI socket closed for long); returns each record after its undo, with the outcome.
///
/// Every record comes back, whatever its undo did: one that panicked is returned with an
/// Internal error (and logged), so that the caller keeps it, named and recorded, for a later
/// RemovePodSandbox or start-up to finish, instead of forgetting a half-made object.
pub(crate) fn undo_side_by_side<R: Send>(
    half_made: Vec<(String, R)>,
    undo: impl Fn(&str, &mut R) -> CriResult<()> + Sync,
) -> Vec<(String, R, CriResult<()>)> {
    let undo = &undo;
    std::thread::scope(|scope| {
        let undos: Vec<_> = half_made
            .into_iter()
            .map(|(id, mut record)| {
                scope.spawn(move || {
                    // The record stays this thread's whatever the undo does; a record left
                    // half-updated by a panic still names at least what remains.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        undo(&id, &mut record)
                    }));
                    let result = outcome.unwrap_or_else(|panic| {
                        let why = panic_message(panic.as_ref());
                        tracing::error!(id = %id, panic = %why, "the undo of a half-made record panicked; keeping the record");
                        Err(CriError::Internal(format!("undo of {id} panicked: {why}")))
                    });
                    (id, record, result)
                })
            })
            .collect();
        undos
            .into_iter()
            // The closure above catches every panic, so a join error cannot happen.
            .filter_map(|undo| undo.join().ok())
            .collect()
    })
}

/// The text of a panic's payload (a `&str` or `String`, as `panic!` makes).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for step in STEPS {
            assert!(seen.insert(step), "{step} twice");
            assert!(step.split_once(':').is_some(), "{step}");
        }
    }

    #[test]
    fn a_panicking_undo_keeps_its_record_and_reports_an_error() {
        let half_made = vec![
            ("good".to_owned(), vec!["pause"]),
            ("bad".to_owned(), vec!["pause", "netns"]),
        ];
        let mut undone = undo_side_by_side(half_made, |id, made: &mut Vec<&str>| {
            made.pop();
            if id == "bad" {
                panic!("undo of {id} broke");
            }
            made.clear();
            Ok(())
        });
        undone.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(undone.len(), 2, "a record was lost");
        let (id, record, result) = &undone[0];
        assert_eq!(id, "bad");
        assert_eq!(record, &vec!["pause"], "the record keeps what is left");
        let message = result
            .as_ref()
            .expect_err("a panicking undo is an error")
            .to_string();
        assert!(
            message.contains("panicked") && message.contains("undo of bad broke"),
            "{message}"
        );
        assert!(matches!(result, Err(CriError::Internal(_))));
        let (id, record, result) = &undone[1];
        assert_eq!((id.as_str(), record.is_empty()), ("good", true));
        assert!(result.is_ok());
    }
}
