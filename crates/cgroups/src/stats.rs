//! Reading a cgroup's counters and settings for statistics and metrics: CPU time (total, user,
//! system), CFS throttling, memory (usage, cache, RSS, failures, OOM kills), the CPU and memory
//! limits set, processes and threads, and pressure stall information — each from whichever
//! hierarchy holds the controller, cgroup v1 or v2.
//!
//! Every reader returns `None` (or leaves a field `None`) for a file that is missing or
//! unreadable: a cgroup removed meanwhile or a controller the host lacks is not an error for a
//! statistics call.

use std::path::Path;

use crate::dir::CgroupFiles;
use crate::layout::{CgroupLayout, CgroupVersion};

/// A v1 limit at or above this is the kernel's "unlimited" (`PAGE_COUNTER_MAX` pages).
const V1_UNLIMITED: u64 = 1 << 62;

/// The value of `key` in a flat-keyed cgroup file (`key value` per line).
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A limit file's value; `None` for no limit (`max`, or v1's huge default).
pub fn parse_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok().filter(|&l| l < V1_UNLIMITED)
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

/// CPU time and CFS throttling of a cgroup; nanoseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Total CPU time.
    pub usage_ns: Option<u64>,
    /// User CPU time.
    pub user_ns: Option<u64>,
    /// System CPU time.
    pub system_ns: Option<u64>,
    /// Elapsed CFS enforcement periods.
    pub periods: Option<u64>,
    /// Periods in which the cgroup was throttled.
    pub throttled_periods: Option<u64>,
    /// Time the cgroup spent throttled.
    pub throttled_ns: Option<u64>,
}

/// USER_HZ: the unit of v1 `cpuacct.stat` (100 on every Linux architecture corral runs on).
const USER_HZ_NS: u64 = 10_000_000;

impl CpuTimes {
    /// The total CPU time of the cgroup at `relative` alone, in nanoseconds, from one file
    /// (v1 `cpuacct.usage`, else v2 `cpu.stat`): what a stats call over hundreds of
    /// containers needs, at a third of [`CpuTimes::read`]'s reads.
    pub fn read_usage(layout: &CgroupLayout, relative: &Path) -> Option<u64> {
        Self::usage_from(&CgroupFiles::new(layout, relative))
    }

    /// [`CpuTimes::read_usage`] of a cgroup whose directories are open.
    pub fn usage_from(files: &CgroupFiles) -> Option<u64> {
        if let Some((_, dir)) = files
            .for_controller("cpuacct")
            .filter(|(h, _)| h.version() == CgroupVersion::V1)
        {
            if let Some(usage) = dir.read_u64("cpuacct.usage") {
                return Some(usage);
            }
        }
        // cpu.stat's usage fields exist on v2 even without the cpu controller; a v2 hierarchy
        // with it is the unified one.
        let (_, dir) = files.unified()?;
        let stat = dir.read("cpu.stat")?;
        keyed_value(&stat, "usage_usec").map(|us| us.saturating_mul(1000))
    }

    /// Reads the cgroup at `relative`: v1 `cpuacct.usage`, `cpuacct.stat`, `cpu.stat`; else
    /// v2 `cpu.stat`.
    pub fn read(layout: &CgroupLayout, relative: &Path) -> Option<CpuTimes> {
        let mut times = CpuTimes::default();
        if let Some(h) = layout
            .hierarchy_for("cpuacct")
            .filter(|h| h.version() == CgroupVersion::V1)
        {
            let dir = h.dir(relative);
            times.usage_ns = read_u64(&dir.join("cpuacct.usage"));
            if let Some(stat) = read(&dir.join("cpuacct.stat")) {
                times.user_ns = keyed_value(&stat, "user").map(|t| t.saturating_mul(USER_HZ_NS));
                times.system_ns =
                    keyed_value(&stat, "system").map(|t| t.saturating_mul(USER_HZ_NS));
            }
        }
        if let Some(h) = layout.hierarchy_for("cpu") {
            let stat = read(&h.dir(relative).join("cpu.stat")).unwrap_or_default();
            times.merge_cpu_stat(&stat, h.version());
        } else if let Some(h) = layout.unified() {
            // cpu.stat's usage fields exist on v2 even without the cpu controller.
            let stat = read(&h.dir(relative).join("cpu.stat")).unwrap_or_default();
            times.merge_cpu_stat(&stat, CgroupVersion::V2);
        }
        (times != CpuTimes::default()).then_some(times)
    }

    /// Fills what a `cpu.stat` of `version` has and the fields still lack.
    fn merge_cpu_stat(&mut self, stat: &str, version: CgroupVersion) {
        let usec = |key: &str| keyed_value(stat, key).map(|us| us.saturating_mul(1000));
        match version {
            CgroupVersion::V1 => {
                self.throttled_ns = self.throttled_ns.or(keyed_value(stat, "throttled_time"));
            }
            CgroupVersion::V2 => {
                self.usage_ns = self.usage_ns.or(usec("usage_usec"));
                self.user_ns = self.user_ns.or(usec("user_usec"));
                self.system_ns = self.system_ns.or(usec("system_usec"));
                self.throttled_ns = self.throttled_ns.or(usec("throttled_usec"));
            }
        }
        self.periods = self.periods.or(keyed_value(stat, "nr_periods"));
        self.throttled_periods = self.throttled_periods.or(keyed_value(stat, "nr_throttled"));
    }
}

/// Memory use of a cgroup, bytes unless said otherwise.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoryCounters {
    /// Usage (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub usage: u64,
    /// The limit, `None` when unlimited.
    pub limit: Option<u64>,
    /// Page cache (v1 `cache`, v2 `file`).
    pub cache: u64,
    /// Anonymous memory (v1 `rss`, v2 `anon`).
    pub rss: u64,
    /// Inactive file pages (left out of the working set).
    pub inactive_file: u64,
    /// Times usage hit the limit (v1 `memory.failcnt`, v2 `memory.events` `max`).
    pub failcnt: Option<u64>,
    /// Processes the OOM killer killed (v1 `memory.oom_control` `oom_kill`, v2
    /// `memory.events` `oom_kill`).
    pub oom_kills: Option<u64>,
    /// Page faults (count).
    pub page_faults: u64,
    /// Major page faults (count).
    pub major_page_faults: u64,
}

impl MemoryCounters {
    /// The working set: usage less inactive file pages.
    pub fn working_set(&self) -> u64 {
        self.usage.saturating_sub(self.inactive_file)
    }

    /// Reads the cgroup at `relative` from the memory hierarchy.
    pub fn read(layout: &CgroupLayout, relative: &Path) -> Option<MemoryCounters> {
        Self::read_with(layout, relative, true)
    }

    /// [`MemoryCounters::read`] without the limit-hit and OOM-kill counts (`failcnt` and
    /// `oom_kills` are `None`): the usage a stats call needs, two files fewer on cgroup v1 and
    /// one on v2.
    pub fn read_usage(layout: &CgroupLayout, relative: &Path) -> Option<MemoryCounters> {
        Self::read_with(layout, relative, false)
    }

    /// [`MemoryCounters::read_usage`] of a cgroup whose directories are open.
    pub fn usage_from(files: &CgroupFiles) -> Option<MemoryCounters> {
        Self::read_from(files, false)
    }

    fn read_with(
        layout: &CgroupLayout,
        relative: &Path,
        with_events: bool,
    ) -> Option<MemoryCounters> {
        Self::read_from(&CgroupFiles::new(layout, relative), with_events)
    }

    fn read_from(files: &CgroupFiles, with_events: bool) -> Option<MemoryCounters> {
        let (h, dir) = files.for_controller("memory")?;
        let stat = dir.read("memory.stat")?;
        Some(match h.version() {
            CgroupVersion::V1 => {
                // The hierarchical totals: a pod cgroup's memory is its children's.
                let field = |name: &str| {
                    keyed_value(&stat, &format!("total_{name}"))
                        .or_else(|| keyed_value(&stat, name))
                        .unwrap_or(0)
                };
                MemoryCounters {
                    usage: dir.read_u64("memory.usage_in_bytes")?,
                    limit: dir
                        .read("memory.limit_in_bytes")
                        .and_then(|s| parse_limit(&s)),
                    cache: field("cache"),
                    rss: field("rss"),
                    inactive_file: field("inactive_file"),
                    failcnt: with_events
                        .then(|| dir.read_u64("memory.failcnt"))
                        .flatten(),
                    oom_kills: with_events
                        .then(|| dir.read("memory.oom_control"))
                        .flatten()
                        .and_then(|s| keyed_value(&s, "oom_kill")),
                    page_faults: field("pgfault"),
                    major_page_faults: field("pgmajfault"),
                }
            }
            CgroupVersion::V2 => {
                let field = |name: &str| keyed_value(&stat, name).unwrap_or(0);
                let events = with_events
                    .then(|| dir.read("memory.events"))
                    .flatten()
                    .unwrap_or_default();
                MemoryCounters {
                    usage: dir.read_u64("memory.current")?,
                    limit: dir.read("memory.max").and_then(|s| parse_limit(&s)),
                    cache: field("file"),
                    rss: field("anon"),
                    inactive_file: field("inactive_file"),
                    failcnt: keyed_value(&events, "max"),
                    oom_kills: keyed_value(&events, "oom_kill"),
                    page_faults: field("pgfault"),
                    major_page_faults: field("pgmajfault"),
                }
            }
        })
    }
}

/// The CPU settings of a cgroup as cAdvisor reports them (v1 units: shares 2..262144, quota
/// and period in microseconds; v2's weight and `cpu.max` are converted).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CpuSpec {
    /// CPU shares (v2: from `cpu.weight`).
    pub shares: Option<u64>,
    /// CFS quota in microseconds; `None` when unlimited.
    pub quota_us: Option<u64>,
    /// CFS period in microseconds.
    pub period_us: Option<u64>,
}

impl CpuSpec {
    /// Reads the cgroup at `relative` from the cpu hierarchy.
    pub fn read(layout: &CgroupLayout, relative: &Path) -> Option<CpuSpec> {
        let h = layout.hierarchy_for("cpu")?;
        let dir = h.dir(relative);
        Some(match h.version() {
            CgroupVersion::V1 => CpuSpec {
                shares: read_u64(&dir.join("cpu.shares")),
                quota_us: read(&dir.join("cpu.cfs_quota_us"))
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .and_then(|q| u64::try_from(q).ok()),
                period_us: read_u64(&dir.join("cpu.cfs_period_us")),
            },
            CgroupVersion::V2 => {
                let max = read(&dir.join("cpu.max")).unwrap_or_default();
                let mut fields = max.split_whitespace();
                let quota_us = fields.next().and_then(|q| q.parse().ok());
                CpuSpec {
                    shares: read_u64(&dir.join("cpu.weight")).map(weight_to_shares),
                    quota_us,
                    period_us: fields.next().and_then(|p| p.parse().ok()),
                }
            }
        })
    }
}

/// The inverse of the runtimes' shares → weight mapping (`1 + (shares - 2) * 9999 / 262142`).
pub fn weight_to_shares(weight: u64) -> u64 {
    2 + weight.saturating_sub(1).saturating_mul(262_142) / 9_999
}

/// Processes and threads in a cgroup (not its children): `cgroup.procs` and `tasks`
/// (v2: `cgroup.threads`) of the pids hierarchy, or any hierarchy.
pub fn processes_and_threads(layout: &CgroupLayout, relative: &Path) -> Option<(u64, u64)> {
    let h = layout
        .hierarchy_for("pids")
        .or_else(|| layout.hierarchies().first())?;
    let dir = h.dir(relative);
    let count = |file: &str| {
        read(&dir.join(file)).map(|s| s.lines().filter(|l| !l.trim().is_empty()).count() as u64)
    };
    let threads = match h.version() {
        CgroupVersion::V1 => count("tasks"),
        CgroupVersion::V2 => count("cgroup.threads"),
    };
    Some((count("cgroup.procs")?, threads?))
}

/// One line of a pressure file: the share of time (percent, averaged over 10, 60 and 300 s)
/// and total microseconds some or all tasks stalled.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PressureLine {
    /// Percent over 10 seconds.
    pub avg10: f64,
    /// Percent over 60 seconds.
    pub avg60: f64,
    /// Percent over 300 seconds.
    pub avg300: f64,
    /// Total stall time, microseconds.
    pub total_us: u64,
}

/// A pressure file (`cpu.pressure`, `memory.pressure`, `io.pressure`).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Pressure {
    /// Some tasks stalled.
    pub some: PressureLine,
    /// All tasks stalled (absent for cpu on older kernels: zero).
    pub full: Option<PressureLine>,
}

impl Pressure {
    /// Parses a pressure file.
    pub fn parse(text: &str) -> Option<Pressure> {
        let mut some = None;
        let mut full = None;
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let kind = fields.next();
            let mut parsed = PressureLine::default();
            for field in fields {
                let Some((key, value)) = field.split_once('=') else {
                    continue;
                };
                match key {
                    "avg10" => parsed.avg10 = value.parse().ok()?,
                    "avg60" => parsed.avg60 = value.parse().ok()?,
                    "avg300" => parsed.avg300 = value.parse().ok()?,
                    "total" => parsed.total_us = value.parse().ok()?,
                    _ => {}
                }
            }
            match kind {
                Some("some") => some = Some(parsed),
                Some("full") => full = Some(parsed),
                _ => {}
            }
        }
        Some(Pressure { some: some?, full })
    }

    /// The pressure of `resource` (`cpu`, `memory`, `io`) for the cgroup at `relative`: only
    /// cgroup v2 has it, and only a kernel with PSI enabled.
    pub fn read(layout: &CgroupLayout, relative: &Path, resource: &str) -> Option<Pressure> {
        Self::read_from(&CgroupFiles::new(layout, relative), resource)
    }

    /// [`Pressure::read`] of a cgroup whose directories are open: read in the unified
    /// hierarchy only (no v1 hierarchy has pressure files).
    pub fn read_from(files: &CgroupFiles, resource: &str) -> Option<Pressure> {
        let (_, dir) = files.unified()?;
        Pressure::parse(&dir.read(&format!("{resource}.pressure"))?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::layout::Hierarchy;

    fn v1_layout(root: &Path) -> CgroupLayout {
        let hierarchies = ["cpu,cpuacct", "memory", "pids"]
            .iter()
            .map(|name| {
                let controllers = name.split(',').map(String::from).collect();
                Hierarchy::new(CgroupVersion::V1, root.join(name), controllers)
            })
            .chain(std::iter::once(Hierarchy::new(
                CgroupVersion::V2,
                root.join("unified"),
                Vec::new(),
            )))
            .collect();
        CgroupLayout::from_hierarchies(hierarchies).unwrap()
    }

    fn v2_layout(root: &Path) -> CgroupLayout {
        let controllers = ["cpu", "memory", "pids"].map(String::from).to_vec();
        CgroupLayout::from_hierarchies(vec![Hierarchy::new(
            CgroupVersion::V2,
            root.to_path_buf(),
            controllers,
        )])
        .unwrap()
    }

    fn write(dir: PathBuf, files: &[(&str, &str)]) {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn v1_counters_from_cpuacct_cpu_and_memory() {
        let root = tempfile::tempdir().unwrap();
        let layout = v1_layout(root.path());
        let rel = Path::new("pod/c1");
        write(
            root.path().join("cpu,cpuacct/pod/c1"),
            &[
                ("cpuacct.usage", "5000000000\n"),
                ("cpuacct.stat", "user 300\nsystem 150\n"),
                (
                    "cpu.stat",
                    "nr_periods 40\nnr_throttled 7\nthrottled_time 12345\n",
                ),
                ("cpu.shares", "512\n"),
                ("cpu.cfs_quota_us", "-1\n"),
                ("cpu.cfs_period_us", "100000\n"),
            ],
        );
        write(
            root.path().join("memory/pod/c1"),
            &[
                ("memory.usage_in_bytes", "10000\n"),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory.failcnt", "3\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
                (
                    "memory.stat",
                    "cache 1\nrss 2\npgfault 3\ntotal_cache 4000\ntotal_rss 5000\n\
                     total_inactive_file 1500\ntotal_pgfault 30\ntotal_pgmajfault 10\n",
                ),
            ],
        );
        write(
            root.path().join("pids/pod/c1"),
            &[("cgroup.procs", "10\n11\n"), ("tasks", "10\n11\n12\n")],
        );
        assert_eq!(
            CpuTimes::read(&layout, rel).unwrap(),
            CpuTimes {
                usage_ns: Some(5_000_000_000),
                user_ns: Some(3_000_000_000),
                system_ns: Some(1_500_000_000),
                periods: Some(40),
                throttled_periods: Some(7),
                throttled_ns: Some(12345),
            }
        );
        let memory = MemoryCounters::read(&layout, rel).unwrap();
        assert_eq!(
            memory,
            MemoryCounters {
                usage: 10000,
                limit: None,
                cache: 4000,
                rss: 5000,
                inactive_file: 1500,
                failcnt: Some(3),
                oom_kills: Some(2),
                page_faults: 30,
                major_page_faults: 10,
            }
        );
        assert_eq!(memory.working_set(), 8500);
        assert_eq!(CpuTimes::read_usage(&layout, rel), Some(5_000_000_000));
        assert_eq!(
            MemoryCounters::read_usage(&layout, rel).unwrap(),
            MemoryCounters {
                failcnt: None,
                oom_kills: None,
                ..memory
            }
        );
        assert_eq!(
            CpuSpec::read(&layout, rel).unwrap(),
            CpuSpec {
                shares: Some(512),
                quota_us: None,
                period_us: Some(100_000),
            }
        );
        assert_eq!(processes_and_threads(&layout, rel), Some((2, 3)));
        assert_eq!(Pressure::read(&layout, rel, "cpu"), None);
    }

    #[test]
    fn v2_counters_from_cpu_stat_memory_events_and_cpu_max() {
        let root = tempfile::tempdir().unwrap();
        let layout = v2_layout(root.path());
        let rel = Path::new("pod/c1");
        write(
            root.path().join("pod/c1"),
            &[
                (
                    "cpu.stat",
                    "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 9\n\
                     nr_throttled 4\nthrottled_usec 30\n",
                ),
                ("cpu.weight", "100\n"),
                ("cpu.max", "50000 100000\n"),
                ("memory.current", "8192\n"),
                ("memory.max", "1048576\n"),
                ("memory.events", "low 0\nhigh 0\nmax 6\noom 1\noom_kill 1\n"),
                (
                    "memory.stat",
                    "anon 4096\nfile 2048\ninactive_file 1024\npgfault 77\npgmajfault 2\n",
                ),
                ("cgroup.procs", "1\n"),
                ("cgroup.threads", "1\n2\n"),
                (
                    "cpu.pressure",
                    "some avg10=1.50 avg60=0.20 avg300=0.00 total=1234\n\
                     full avg10=0.00 avg60=0.00 avg300=0.00 total=99\n",
                ),
            ],
        );
        assert_eq!(
            CpuTimes::read(&layout, rel).unwrap(),
            CpuTimes {
                usage_ns: Some(2_500_000),
                user_ns: Some(2_000_000),
                system_ns: Some(500_000),
                periods: Some(9),
                throttled_periods: Some(4),
                throttled_ns: Some(30_000),
            }
        );
        let memory = MemoryCounters::read(&layout, rel).unwrap();
        assert_eq!(memory.limit, Some(1_048_576));
        assert_eq!((memory.cache, memory.rss), (2048, 4096));
        assert_eq!((memory.failcnt, memory.oom_kills), (Some(6), Some(1)));
        assert_eq!(memory.working_set(), 7168);
        assert_eq!((memory.page_faults, memory.major_page_faults), (77, 2));
        assert_eq!(CpuTimes::read_usage(&layout, rel), Some(2_500_000));
        let usage = MemoryCounters::read_usage(&layout, rel).unwrap();
        assert_eq!((usage.failcnt, usage.oom_kills), (None, None));
        assert_eq!(usage.working_set(), 7168);
        let spec = CpuSpec::read(&layout, rel).unwrap();
        assert_eq!(spec.quota_us, Some(50_000));
        assert_eq!(spec.period_us, Some(100_000));
        // The v2 default weight, as shares the way cAdvisor converts it.
        assert_eq!(spec.shares, Some(2 + 99 * 262_142 / 9_999));
        assert_eq!(processes_and_threads(&layout, rel), Some((1, 2)));
        let psi = Pressure::read(&layout, rel, "cpu").unwrap();
        assert_eq!(psi.some.avg10, 1.5);
        assert_eq!(psi.some.total_us, 1234);
        assert_eq!(psi.full.unwrap().total_us, 99);
    }

    #[test]
    fn missing_files_are_none_not_errors() {
        let root = tempfile::tempdir().unwrap();
        let layout = v2_layout(root.path());
        let rel = Path::new("gone");
        assert_eq!(CpuTimes::read(&layout, rel), None);
        assert_eq!(MemoryCounters::read(&layout, rel), None);
        assert_eq!(processes_and_threads(&layout, rel), None);
        assert_eq!(Pressure::parse("garbage"), None);
    }

    #[test]
    fn unlimited_cpu_max_has_no_quota() {
        let root = tempfile::tempdir().unwrap();
        let layout = v2_layout(root.path());
        write(root.path().join("c"), &[("cpu.max", "max 100000\n")]);
        let spec = CpuSpec::read(&layout, Path::new("c")).unwrap();
        assert_eq!((spec.quota_us, spec.period_us), (None, Some(100_000)));
    }
}
