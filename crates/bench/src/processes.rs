//! The processes this bench started, read from `/proc`: who descends from whom, what they run,
//! how much memory they hold, and reaping the ones re-parented to us.

use std::collections::{BTreeMap, BTreeSet};

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// One process as `/proc/PID/{stat,cmdline}` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    /// Field 2 of `stat`, the kernel's name for it (at most 15 bytes); kept by zombies.
    pub name: String,
    /// Field 22 of `stat`: with the pid, identifies the process even if the pid is reused.
    pub start_time: u64,
    /// Field 3 of `stat` (`R`, `S`, `Z`, ...).
    pub state: char,
    /// argv, NUL-separated in `/proc/PID/cmdline`.
    pub argv: Vec<String>,
}

impl Process {
    /// The file name of argv[0] (`/usr/bin/containerd-shim-runc-v2` → `containerd-shim-runc-v2`).
    pub fn program(&self) -> &str {
        self.argv
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("")
    }

    /// Whether the process has exited and waits to be reaped.
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }

    /// The command line, space-separated.
    pub fn command_line(&self) -> String {
        self.argv.join(" ")
    }
}

/// `/proc/PID/stat`'s fields that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub name: String,
    pub ppid: i32,
    pub state: char,
    pub start_time: u64,
}

/// Parses `/proc/PID/stat`. The name in parentheses may itself hold spaces and parentheses,
/// so it ends at the last `)` and fields are counted from there.
pub fn parse_stat(stat: &str) -> Option<Stat> {
    let (head, rest) = stat.rsplit_once(')')?;
    let (_, name) = head.split_once('(')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); ppid is field 4, starttime field 22.
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some(Stat {
        name: name.to_string(),
        ppid,
        state,
        start_time,
    })
}

/// One process, or `None` when it is gone (or unreadable).
pub fn read(pid: i32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let Stat {
        name,
        ppid,
        state,
        start_time,
    } = parse_stat(&stat)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(Process {
        pid,
        ppid,
        name,
        start_time,
        state,
        argv,
    })
}

/// Every process on the machine right now.
pub fn all() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read)
        .collect()
}

/// The processes of `all` below `root` in the parent tree (not `root` itself).
pub fn descendants(all: &[Process], root: i32) -> Vec<Process> {
    let mut children: BTreeMap<i32, Vec<&Process>> = BTreeMap::new();
    for p in all {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    let mut seen = BTreeSet::new();
    while let Some(pid) = todo.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            if seen.insert(child.pid) {
                out.push((*child).clone());
                todo.push(child.pid);
            }
        }
    }
    out
}

/// Processes below this bench process: everything it started, and (being a child subreaper)
/// everything they left behind when they double-forked.
pub fn ours() -> Vec<Process> {
    descendants(&all(), std::process::id() as i32)
}

/// A `kB` field (`VmRSS:`, `Pss:`) of a `/proc` status-like file, in KiB.
pub fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident set size of `pid` in KiB (`VmRSS` of `/proc/PID/status`); 0 when gone.
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| kib_field(&s, "VmRSS:"))
        .unwrap_or(0)
}

/// Proportional set size of `pid` in KiB (`Pss` of `/proc/PID/smaps_rollup`: shared pages
/// divided among the processes sharing them); 0 when gone.
pub fn pss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| kib_field(&s, "Pss:"))
        .unwrap_or(0)
}

/// Reaps the zombies among our direct children for which `reap` says yes: processes that
/// double-forked were re-parented to this bench (a child subreaper), and the PID 1 of some
/// machines never reaps what we leave.
pub fn reap_zombie_children(mut reap: impl FnMut(&Process) -> bool) {
    let me = std::process::id() as i32;
    for p in all() {
        if p.ppid == me && p.is_zombie() && reap(&p) {
            let _ = waitpid(Pid::from_raw(p.pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: i32, ppid: i32, argv: &[&str]) -> Process {
        Process {
            pid,
            ppid,
            name: argv.first().copied().unwrap_or_default().to_string(),
            start_time: 1,
            state: 'S',
            argv: argv.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = "4242 (odd) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        let parsed = parse_stat(stat).expect("parses");
        assert_eq!(parsed.name, "odd) name");
        assert_eq!(
            (parsed.ppid, parsed.state, parsed.start_time),
            (17, 'S', 987654)
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn descendants_follow_the_parent_tree_and_skip_other_branches() {
        let all = vec![
            process(10, 1, &["bench"]),
            process(11, 10, &["containerd"]),
            process(12, 10, &["/usr/bin/containerd-shim-runc-v2", "-id", "x"]),
            process(13, 12, &["/bin/sleep", "infinity"]),
            process(20, 1, &["someone-else"]),
            process(21, 20, &["their-child"]),
        ];
        let mut pids: Vec<i32> = descendants(&all, 10).iter().map(|p| p.pid).collect();
        pids.sort();
        assert_eq!(pids, vec![11, 12, 13]);
        assert_eq!(all[2].program(), "containerd-shim-runc-v2");
        assert_eq!(all[3].command_line(), "/bin/sleep infinity");
    }

    #[test]
    fn kib_fields_are_read_from_status_and_smaps_rollup() {
        let status = "Name:\tsleep\nVmPeak:\t    2000 kB\nVmRSS:\t     964 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(964));
        let rollup = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:                1200 kB\nPss:                 310 kB\nPss_Anon:            100 kB\n";
        assert_eq!(kib_field(rollup, "Pss:"), Some(310));
        assert_eq!(kib_field(rollup, "Swap:"), None);
    }
}
