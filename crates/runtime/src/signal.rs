//! Signalling a container's init process directly, without running `<runtime> kill`.
//!
//! Stopping a container is a signal to its init (or, with SIGKILL, to all its processes). Each
//! `runc kill` is a Go program's start-up plus, for `--all`, a freeze of the container's cgroup:
//! 20-70 ms on a busy node. corrald can send the signal itself through a pidfd when it can prove
//! the process is the container's init:
//!
//! - the pid comes from the runtime's `container.pid`, and the pidfd is opened before the
//!   process is checked, so the signal goes to the process that was checked;
//! - the process must be in the container's own cgroup (a reused pid is not);
//! - for "all processes", the init must be pid 1 of its own PID namespace: SIGKILL to it makes
//!   the kernel kill every process of the namespace, which holds all of the container's
//!   processes. A container sharing the pod's PID namespace is left to the runtime.
//!
//! Anything that cannot be proven this way is answered [`Signalled::NotProven`] and the caller
//! runs the runtime's `kill` as before.

use std::os::fd::AsFd;
use std::path::Path;

use crate::error::{io_error, Result};
use crate::state_dir::read_container_pid;
use corral_process::pidfd::{open as pidfd_open, send_signal as pidfd_send_signal};

/// What [`signal_init`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signalled {
    /// The signal was sent.
    Sent,
    /// The init has exited already: there is nothing to signal.
    Gone,
    /// The process could not be proven to be the container's init (or, for `all`, the
    /// container shares a PID namespace): use the runtime's `kill`.
    NotProven,
}

/// Sends `signal` to the init of the container whose state directory is `state_dir` and whose
/// cgroup is `cgroup` (relative to the hierarchies' roots, as in `/proc/PID/cgroup`); with
/// `all`, to every process of the container (only when the init leads its own PID namespace).
pub fn signal_init(state_dir: &Path, cgroup: &Path, signal: i32, all: bool) -> Result<Signalled> {
    let Some(pid) = read_container_pid(state_dir)? else {
        return Ok(Signalled::NotProven);
    };
    let pidfd = match pidfd_open(pid) {
        Ok(pidfd) => pidfd,
        Err(e) if corral_process::pidfd::no_such_process(&e, pid) => return Ok(Signalled::Gone),
        Err(e) => return Err(io_error("pidfd_open", format!("/proc/{pid}"))(e)),
    };
    let proc_dir = format!("/proc/{pid}");
    let Some(cgroups) = read_proc_file(&proc_dir, "cgroup")? else {
        return Ok(Signalled::Gone);
    };
    if !in_cgroup(&cgroups, cgroup) {
        return Ok(Signalled::NotProven);
    }
    if all {
        let Some(status) = read_proc_file(&proc_dir, "status")? else {
            return Ok(Signalled::Gone);
        };
        if !leads_own_pid_namespace(&status) {
            return Ok(Signalled::NotProven);
        }
    }
    let signal = nix::sys::signal::Signal::try_from(signal)
        .map_err(|e| io_error("pidfd_send_signal", proc_dir.clone())(std::io::Error::from(e)))?;
    pidfd_send_signal(pidfd.as_fd(), signal).map_err(io_error("pidfd_send_signal", proc_dir))?;
    Ok(Signalled::Sent)
}

/// `/proc/PID/NAME`; `None` once the process is gone.
fn read_proc_file(proc_dir: &str, name: &str) -> Result<Option<String>> {
    let path = format!("{proc_dir}/{name}");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ESRCH) =>
        {
            Ok(None)
        }
        Err(e) => Err(io_error("read", path)(e)),
    }
}

/// Whether a `/proc/PID/cgroup` text puts the process in `cgroup` in at least one hierarchy.
fn in_cgroup(cgroups: &str, cgroup: &Path) -> bool {
    let wanted = Path::new("/").join(cgroup);
    !cgroup.as_os_str().is_empty()
        && cgroups
            .lines()
            .filter_map(|line| line.splitn(3, ':').nth(2))
            .any(|path| Path::new(path) == wanted)
}

/// Whether a `/proc/PID/status` text says the process is pid 1 of its innermost PID namespace
/// (the last number of `NSpid:`) and not of corrald's own.
fn leads_own_pid_namespace(status: &str) -> bool {
    let Some(pids) = status.lines().find_map(|l| l.strip_prefix("NSpid:")) else {
        return false;
    };
    let pids: Vec<&str> = pids.split_whitespace().collect();
    pids.len() > 1 && pids.last() == Some(&"1")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CGROUPS: &str =
        "12:memory:/kubepods/pod1/abc\n1:name=systemd:/kubepods/pod1/abc\n0::/kubepods/pod1/abc\n";

    #[test]
    fn the_process_must_be_in_the_containers_cgroup() {
        assert!(in_cgroup(CGROUPS, Path::new("kubepods/pod1/abc")));
        assert!(!in_cgroup(CGROUPS, Path::new("kubepods/pod1")));
        assert!(!in_cgroup(CGROUPS, Path::new("kubepods/pod1/abcd")));
        assert!(!in_cgroup(CGROUPS, Path::new("")));
        assert!(!in_cgroup("0::/\n", Path::new("kubepods/pod1/abc")));
    }

    #[test]
    fn only_the_pid_1_of_a_namespace_of_its_own_leads_it() {
        assert!(leads_own_pid_namespace("Name:\tsleep\nNSpid:\t4321\t1\n"));
        assert!(leads_own_pid_namespace("NSpid:\t4321\t7\t1\n"));
        assert!(!leads_own_pid_namespace("NSpid:\t4321\t5\n"));
        // pid 1 of the namespace corrald runs in is not a container's init.
        assert!(!leads_own_pid_namespace("NSpid:\t1\n"));
        assert!(!leads_own_pid_namespace("Name:\tsleep\n"));
    }

    #[test]
    fn a_container_without_a_pid_file_is_left_to_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            signal_init(dir.path(), Path::new("x/y"), libc::SIGKILL, true).unwrap(),
            Signalled::NotProven
        );
    }

    #[test]
    fn a_process_outside_the_cgroup_is_not_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("container.pid"), child.id().to_string()).unwrap();
        let outcome = signal_init(
            dir.path(),
            Path::new("no/such/cgroup"),
            libc::SIGKILL,
            false,
        );
        assert_eq!(outcome.unwrap(), Signalled::NotProven);
        assert!(
            child.try_wait().unwrap().is_none(),
            "the process was signalled"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        // Gone (or, were the pid reused already, not proven): never signalled.
        assert_ne!(
            signal_init(
                dir.path(),
                Path::new("no/such/cgroup"),
                libc::SIGKILL,
                false
            )
            .unwrap(),
            Signalled::Sent
        );
    }
}
