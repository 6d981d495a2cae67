//! What the container benchmark measured, and the tables that set two runtimes side by side:
//! latency percentiles with containerd/corral ratios, and memory per pod.

use std::time::Duration;

use crate::memory::PodMemory;
use crate::percentile;

/// Pods (one container each) alive while memory is measured.
pub const MEMORY_PODS: usize = 10;

/// A timed path through the CRI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timed {
    CreateStart,
    StopRemove,
    PodWithContainer,
}

impl Timed {
    /// How the tables name it.
    pub fn label(self) -> &'static str {
        match self {
            Timed::CreateStart => "Create+Start",
            Timed::StopRemove => "Stop+Remove",
            Timed::PodWithContainer => "Pod+container",
        }
    }
}

/// The latencies of one path at one concurrency, sorted.
pub struct Series {
    pub path: Timed,
    pub concurrency: usize,
    pub samples: Vec<Duration>,
}

impl Series {
    /// Sorts `samples`.
    pub fn new(path: Timed, concurrency: usize, mut samples: Vec<Duration>) -> Series {
        samples.sort();
        Series {
            path,
            concurrency,
            samples,
        }
    }

    /// `Create+Start seq`, `Pod+container x20`.
    pub fn name(&self) -> String {
        let mode = match self.concurrency {
            1 => "seq".to_string(),
            c => format!("x{c}"),
        };
        format!("{} {mode}", self.path.label())
    }

    /// The `q` quantile.
    pub fn p(&self, q: f64) -> Duration {
        percentile(&self.samples, q)
    }
}

/// One handler's figures, or why it could not run.
pub struct HandlerFigures {
    pub handler: String,
    pub outcome: Result<Vec<Series>, String>,
}

/// One runtime's figures.
pub struct Figures {
    /// `corral` or `containerd`, with its version.
    pub runtime: String,
    pub handlers: Vec<HandlerFigures>,
    pub memory: Result<PodMemory, String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `b / a` as `1.23x`, or `-` when `a` is zero.
fn ratio(a: Duration, b: Duration) -> String {
    if a.is_zero() {
        "-".into()
    } else {
        format!("{:.2}x", b.as_secs_f64() / a.as_secs_f64())
    }
}

/// The first line of an error, cut to `max` characters.
pub fn short(error: &str, max: usize) -> String {
    let line = error.lines().next().unwrap_or("");
    if line.chars().count() <= max {
        line.to_string()
    } else {
        format!("{}...", line.chars().take(max).collect::<String>())
    }
}

/// The latency table: corral and containerd p50/p90 per path and handler, and the ratio
/// containerd / corral (above 1: corral is faster).
pub fn print_comparison(corral: &Figures, containerd: &Figures) {
    println!(
        "\n=== {} vs {}: latency in ms; ratio = containerd / corral (above 1: corral is faster) ===",
        corral.runtime, containerd.runtime
    );
    println!(
        "{:<28} {:^19}   {:^19}   {:^15}",
        "", "corral", "containerd", "ratio"
    );
    println!(
        "{:<28} {:>9} {:>9}   {:>9} {:>9}   {:>7} {:>7}",
        "", "p50", "p90", "p50", "p90", "p50", "p90"
    );
    let mut errors = Vec::new();
    for ours in &corral.handlers {
        let theirs = containerd
            .handlers
            .iter()
            .find(|h| h.handler == ours.handler);
        let theirs = theirs.map(|h| &h.outcome);
        match (&ours.outcome, theirs) {
            (Ok(series), Some(Ok(other))) => {
                for s in series {
                    let o = other
                        .iter()
                        .find(|o| o.path == s.path && o.concurrency == s.concurrency);
                    let Some(o) = o else { continue };
                    println!(
                        "{:<28} {:>9.2} {:>9.2}   {:>9.2} {:>9.2}   {:>7} {:>7}",
                        format!("{} {}", ours.handler, s.name()),
                        ms(s.p(0.5)),
                        ms(s.p(0.9)),
                        ms(o.p(0.5)),
                        ms(o.p(0.9)),
                        ratio(s.p(0.5), o.p(0.5)),
                        ratio(s.p(0.9), o.p(0.9)),
                    );
                }
            }
            (Ok(series), theirs) => {
                for s in series {
                    println!(
                        "{:<28} {:>9.2} {:>9.2}   {:>9} {:>9}",
                        format!("{} {}", ours.handler, s.name()),
                        ms(s.p(0.5)),
                        ms(s.p(0.9)),
                        "failed",
                        "",
                    );
                }
                if let Some(Err(e)) = theirs {
                    errors.push(format!("containerd / {}: {e}", ours.handler));
                }
            }
            (Err(e), theirs) => {
                println!(
                    "{:<28} corral: {}",
                    format!("{} (all)", ours.handler),
                    short(e, 90)
                );
                errors.push(format!("corral / {}: {e}", ours.handler));
                match theirs {
                    Some(Err(e)) => {
                        println!("{:<28} containerd: {}", "", short(e, 90));
                        errors.push(format!("containerd / {}: {e}", ours.handler));
                    }
                    Some(Ok(_)) => println!("{:<28} containerd: ran (figures above)", ""),
                    None => {}
                }
            }
        }
    }
    for e in errors {
        println!("  {e}");
    }
}

fn mib(kib: f64) -> String {
    format!("{:.2}", kib / 1024.0)
}

/// A line of the memory table: its label and the figure it shows, in KiB.
type MemoryRow = (&'static str, fn(&PodMemory) -> f64);

/// Memory per pod, for each runtime that was measured.
pub fn print_memory(corral: &Figures, containerd: Option<&Figures>) {
    let runtimes: Vec<&Figures> = std::iter::once(corral).chain(containerd).collect();
    println!(
        "\n=== memory with {MEMORY_PODS} pods, one `sleep 3600` container each (MiB; the workload itself left out) ==="
    );
    let measured: Vec<(&str, &PodMemory)> = runtimes
        .iter()
        .filter_map(|f| match &f.memory {
            Ok(m) => Some((f.runtime.as_str(), m)),
            Err(e) => {
                println!("{}: {e}", f.runtime);
                None
            }
        })
        .collect();
    if measured.is_empty() {
        return;
    }
    let rows: [MemoryRow; 5] = [
        ("per-pod processes, RSS / pod", |m| {
            m.processes_rss_per_pod_kib()
        }),
        ("per-pod processes, PSS / pod", |m| {
            m.processes_pss_per_pod_kib()
        }),
        ("daemon RSS growth / pod", |m| m.daemon_growth_per_pod_kib()),
        ("overhead / pod (RSS + growth)", |m| {
            m.overhead_per_pod_kib()
        }),
        ("daemon RSS with the pods", |m| {
            m.daemon_rss_after_kib as f64
        }),
    ];
    print!("{:<32}", "");
    for (name, _) in &measured {
        print!(" {:>22}", short(name, 22));
    }
    println!();
    for (label, value) in rows {
        print!("{label:<32}");
        for (_, m) in &measured {
            print!(" {:>22}", mib(value(m)));
        }
        if let [(_, a), (_, b)] = measured.as_slice() {
            // A ratio of a figure that shrank (a garbage collector ran) means nothing.
            if value(a) > 0.0 && value(b) > 0.0 {
                print!("   ratio {:.2}x", value(b) / value(a));
            }
        }
        println!();
    }
    for (name, m) in &measured {
        let kinds: Vec<String> = m
            .kinds
            .iter()
            .map(|(program, k)| {
                format!(
                    "{} x {program} ({} RSS, {} PSS each)",
                    k.count,
                    mib(k.rss_kib as f64 / k.count.max(1) as f64),
                    mib(k.pss_kib as f64 / k.count.max(1) as f64)
                )
            })
            .collect();
        println!("  {name}: {}", kinds.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_read_containerd_over_corral() {
        let corral = Duration::from_millis(20);
        let containerd = Duration::from_millis(50);
        assert_eq!(ratio(corral, containerd), "2.50x");
        assert_eq!(ratio(Duration::ZERO, containerd), "-");
    }

    #[test]
    fn series_are_named_by_path_and_mode_and_sorted() {
        let s = Series::new(
            Timed::CreateStart,
            1,
            vec![Duration::from_millis(3), Duration::from_millis(1)],
        );
        assert_eq!(s.name(), "Create+Start seq");
        assert_eq!(s.p(0.0), Duration::from_millis(1));
        let c = Series::new(Timed::PodWithContainer, 20, Vec::new());
        assert_eq!(c.name(), "Pod+container x20");
        assert_eq!(c.p(0.5), Duration::ZERO);
    }

    #[test]
    fn long_errors_are_cut_to_their_first_line() {
        assert_eq!(short("one\ntwo", 10), "one");
        assert_eq!(short("abcdef", 3), "abc...");
    }
}
