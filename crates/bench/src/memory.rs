//! Memory per pod: what the processes a runtime adds for each pod hold (corral: corral-pause
//! and one corral-shim per container; containerd: one containerd-shim-runc-v2 per pod and its
//! pause container), plus how much the daemon itself grew.

use std::collections::{BTreeMap, BTreeSet};

use crate::processes::{self, Process};

/// The processes below the bench before the pods were made, by `(pid, start_time)`.
pub struct Before {
    processes: BTreeSet<(i32, u64)>,
    daemon_rss_kib: u64,
}

/// Takes the snapshot to compare against, with the daemon's RSS at that moment.
pub fn before(daemon_pid: i32) -> Before {
    Before {
        processes: processes::ours()
            .iter()
            .map(|p| (p.pid, p.start_time))
            .collect(),
        daemon_rss_kib: processes::rss_kib(daemon_pid),
    }
}

/// One kind of per-pod process (by program name) and what all of them hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProcessKind {
    pub count: usize,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

/// Memory of `pods` pods, each running one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMemory {
    pub pods: usize,
    /// The new processes by program name; the workload containers are left out.
    pub kinds: BTreeMap<String, ProcessKind>,
    pub daemon_rss_before_kib: u64,
    pub daemon_rss_after_kib: u64,
}

impl PodMemory {
    /// RSS of the per-pod processes, per pod.
    pub fn processes_rss_per_pod_kib(&self) -> f64 {
        self.kinds.values().map(|k| k.rss_kib).sum::<u64>() as f64 / self.pods.max(1) as f64
    }

    /// PSS of the per-pod processes, per pod.
    pub fn processes_pss_per_pod_kib(&self) -> f64 {
        self.kinds.values().map(|k| k.pss_kib).sum::<u64>() as f64 / self.pods.max(1) as f64
    }

    /// How much the daemon's RSS grew, per pod (may be negative: a garbage collector ran).
    pub fn daemon_growth_per_pod_kib(&self) -> f64 {
        (self.daemon_rss_after_kib as f64 - self.daemon_rss_before_kib as f64)
            / self.pods.max(1) as f64
    }

    /// Per-pod processes' RSS plus the daemon's growth, per pod.
    pub fn overhead_per_pod_kib(&self) -> f64 {
        self.processes_rss_per_pod_kib() + self.daemon_growth_per_pod_kib()
    }
}

/// Groups the processes that are new since `before` by program name, leaving out the daemon
/// and the workload (`workload_argv`, e.g. `sleep 3600`).
pub fn classify(
    before: &BTreeSet<(i32, u64)>,
    now: &[Process],
    daemon_pid: i32,
    workload_argv: &[&str],
    memory_of: impl Fn(i32) -> (u64, u64),
) -> BTreeMap<String, ProcessKind> {
    let mut kinds: BTreeMap<String, ProcessKind> = BTreeMap::new();
    for p in now {
        let new = !before.contains(&(p.pid, p.start_time));
        let workload = p.argv == workload_argv;
        if !new || workload || p.pid == daemon_pid || p.is_zombie() {
            continue;
        }
        let (rss, pss) = memory_of(p.pid);
        let kind = kinds.entry(p.program().to_string()).or_default();
        kind.count += 1;
        kind.rss_kib += rss;
        kind.pss_kib += pss;
    }
    kinds
}

/// Measures the processes added since `before` for `pods` pods.
pub fn after(before: &Before, daemon_pid: i32, workload_argv: &[&str], pods: usize) -> PodMemory {
    let kinds = classify(
        &before.processes,
        &processes::ours(),
        daemon_pid,
        workload_argv,
        |pid| (processes::rss_kib(pid), processes::pss_kib(pid)),
    );
    PodMemory {
        pods,
        kinds,
        daemon_rss_before_kib: before.daemon_rss_kib,
        daemon_rss_after_kib: processes::rss_kib(daemon_pid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: i32, argv: &[&str]) -> Process {
        Process {
            pid,
            ppid: 1,
            name: String::new(),
            start_time: 100,
            state: 'S',
            argv: argv.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn new_processes_are_grouped_without_the_daemon_and_the_workload() {
        let before: BTreeSet<(i32, u64)> = [(5, 100)].into();
        let now = vec![
            process(5, &["docker-registry", "serve"]),
            process(6, &["/usr/bin/containerd"]),
            process(7, &["/usr/bin/containerd-shim-runc-v2", "-id", "a"]),
            process(8, &["/usr/bin/containerd-shim-runc-v2", "-id", "b"]),
            process(9, &["/bin/sleep", "infinity"]),
            process(10, &["sleep", "3600"]),
        ];
        let kinds = classify(&before, &now, 6, &["sleep", "3600"], |pid| {
            (pid as u64 * 10, pid as u64)
        });
        assert_eq!(kinds.len(), 2);
        assert_eq!(
            kinds["containerd-shim-runc-v2"],
            ProcessKind {
                count: 2,
                rss_kib: 150,
                pss_kib: 15
            }
        );
        assert_eq!(kinds["sleep"].count, 1);
        let memory = PodMemory {
            pods: 2,
            kinds,
            daemon_rss_before_kib: 1000,
            daemon_rss_after_kib: 1100,
        };
        assert_eq!(memory.processes_rss_per_pod_kib(), 120.0);
        assert_eq!(memory.daemon_growth_per_pod_kib(), 50.0);
        assert_eq!(memory.overhead_per_pod_kib(), 170.0);
    }

    #[test]
    fn a_pid_reused_since_the_snapshot_counts_as_new() {
        let before: BTreeSet<(i32, u64)> = [(7, 1)].into();
        let kinds = classify(
            &before,
            &[process(7, &["corral-shim"])],
            1,
            &["sleep"],
            |_| (1, 1),
        );
        assert_eq!(kinds["corral-shim"].count, 1);
    }
}
