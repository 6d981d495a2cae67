//! The container's processes still running when its init has exited.
//!
//! A container with a PID namespace of its own loses every process with its init: the kernel
//! kills them. A container that shares one (the pod's, the host's or another container's) does
//! not: its init's children are re-parented to that namespace's init (the pod's pause) and run
//! on. The shim kills them before it records the exit, as containerd's shim does for containers
//! without a PID namespace of their own, so that a container seen exited has no process left.
//! It also waits until they are reaped: until then their numbers stay taken in the shared
//! namespace — a process keeps its pid, and the group and session ids it inherited from the
//! init keep the init's pid taken too. A checkpoint restored into the pod needs those pids back
//! (CRIU gives a restored process its old pid).
//!
//! The processes are found in the container's cgroup (`cgroup.procs` of its memory cgroup, the
//! directories the shim watches for OOM kills) and killed through pidfds: no `<runtime> kill`
//! to start, and a pid is signalled only while it is proven to be in the cgroup.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use corral_process::{read_stat, Pidfd, ProcessIdentity};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::diag::diag;

/// How long the shim tries to kill and see reaped what its container left running.
const LIMIT: Duration = Duration::from_secs(2);

/// How often the cgroup and the killed processes are looked at again while some are left.
const POLL: Duration = Duration::from_millis(5);

/// Kills every process left in `cgroups` (the container's cgroup directories) and waits, up to
/// [`LIMIT`], until they are reaped. Does nothing when none is left (a container with its own
/// PID namespace, or whose processes all exited). Returns how many were killed.
pub fn kill_leftovers(cgroups: &[PathBuf]) -> usize {
    let deadline = Instant::now() + LIMIT;
    let mut killed: Vec<ProcessIdentity> = Vec::new();
    loop {
        let pids = listed(cgroups);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            if let Some(identity) = kill_listed(pid, cgroups) {
                if !killed.contains(&identity) {
                    killed.push(identity);
                }
            }
        }
        if Instant::now() >= deadline {
            diag!("processes of the container still in its cgroup after {LIMIT:?}");
            return killed.len();
        }
        std::thread::sleep(POLL);
    }
    // Killed processes are reaped by their PID namespace's init (the pause), or by the shim (the
    // subreaper) for a container in the host's PID namespace.
    while killed.iter().any(holds_its_pid) {
        reap_children();
        if Instant::now() >= deadline {
            diag!("processes killed after the container's init exited are not reaped yet");
            break;
        }
        std::thread::sleep(POLL);
    }
    if !killed.is_empty() {
        diag!(
            "killed {} process(es) left running after the container's init exited",
            killed.len()
        );
    }
    killed.len()
}

/// The pids `cgroup.procs` lists in the first of `cgroups` that can be read.
fn listed(cgroups: &[PathBuf]) -> Vec<i32> {
    cgroups
        .iter()
        .find_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
        .map(|text| parse_procs(&text))
        .unwrap_or_default()
}

fn parse_procs(text: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|line| line.trim().parse().ok())
        .filter(|pid| *pid > 0)
        .collect()
}

/// Sends SIGKILL to `pid` if it is still in the cgroup; the process killed.
fn kill_listed(pid: i32, cgroups: &[PathBuf]) -> Option<ProcessIdentity> {
    let pidfd = Pidfd::open(pid).ok().flatten()?;
    let identity = ProcessIdentity::of_pid(pid).ok().flatten()?;
    // The pidfd holds the process that had `pid` when it was opened. Listed in the cgroup after
    // that, the pid is either still that process's (so it is in the cgroup) or, if it exited
    // meanwhile, the signal reaches nobody.
    if !listed(cgroups).contains(&pid) {
        return None;
    }
    pidfd.send(Signal::SIGKILL).ok()?;
    Some(identity)
}

/// Whether the process still holds its pid: running, or a zombie not reaped yet.
fn holds_its_pid(identity: &ProcessIdentity) -> bool {
    matches!(read_stat(identity.pid), Ok(Some(stat)) if stat.start_time == identity.start_time)
}

/// Reaps the shim's exited children without waiting.
fn reap_children() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => {
                diag!("waitpid: {errno}");
                return;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_procs_lines_are_pids() {
        assert_eq!(parse_procs("12\n345\n"), vec![12, 345]);
        assert_eq!(parse_procs(""), Vec::<i32>::new());
        assert_eq!(parse_procs("0\nx\n7\n"), vec![7]);
    }

    #[test]
    fn nothing_is_killed_without_a_readable_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(kill_leftovers(&[dir.path().to_path_buf()]), 0);
        assert_eq!(kill_leftovers(&[]), 0);
    }

    #[test]
    fn a_process_no_longer_listed_is_not_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        // An empty list: the pid is not (or no longer) in the cgroup.
        std::fs::write(dir.path().join("cgroup.procs"), "").unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        assert_eq!(kill_listed(pid, &[dir.path().to_path_buf()]), None);
        assert!(child.try_wait().unwrap().is_none(), "signalled");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_listed_process_is_killed() {
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.procs"), format!("{pid}\n")).unwrap();
        let identity = kill_listed(pid, &[dir.path().to_path_buf()]).unwrap();
        assert_eq!(identity.pid, pid);
        assert!(
            holds_its_pid(&identity),
            "a zombie or a live process holds its pid"
        );
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert!(
            !holds_its_pid(&identity),
            "reaped, it holds its pid no more"
        );
    }
}
