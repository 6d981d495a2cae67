//! `corral-bench all`: every figure of issue 13 in one table at the end of one run. The pod
//! paths, node, OCI runtime call and pull benchmarks each print their own tables as they go and
//! also [`record`] their headline rows here; [`print`] sets them side by side with the ratio
//! corral / containerd (below 1: corral is faster) and the target the issue gives.
//!
//! The rows are kept in a process-wide list rather than handed back through every benchmark's
//! return value: each benchmark also runs alone, and recording is all they need to add.

use std::sync::Mutex;

/// One row of the final table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The part of the issue it belongs to (`pod start`, `500 pods`, ...).
    pub section: String,
    pub label: String,
    pub corral: String,
    /// `-` when containerd was not measured (or has no such figure).
    pub containerd: String,
    /// corral / containerd.
    pub ratio: Option<f64>,
    /// The target for the row, if it sets one.
    pub target: String,
}

static ROWS: Mutex<Vec<Row>> = Mutex::new(Vec::new());

/// Adds a row to the final table.
pub fn record(section: &str, label: &str, corral: String, containerd: String, ratio: Option<f64>) {
    record_with_target(section, label, corral, containerd, ratio, "");
}

/// Adds a row with the target for it.
pub fn record_with_target(
    section: &str,
    label: &str,
    corral: String,
    containerd: String,
    ratio: Option<f64>,
    target: &str,
) {
    let row = Row {
        section: section.to_string(),
        label: label.to_string(),
        corral,
        containerd,
        ratio,
        target: target.to_string(),
    };
    ROWS.lock().unwrap_or_else(|p| p.into_inner()).push(row);
}

/// `corral / containerd` when both are known and containerd's is not zero.
pub fn ratio(corral: Option<f64>, containerd: Option<f64>) -> Option<f64> {
    match (corral, containerd) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The rows recorded so far, in order.
pub fn rows() -> Vec<Row> {
    ROWS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The final table as Markdown (so that it can go into the README as it is), grouped by
/// section in the order the sections were first recorded.
pub fn table(rows: &[Row]) -> String {
    let mut sections: Vec<&str> = Vec::new();
    for row in rows {
        if !sections.contains(&row.section.as_str()) {
            sections.push(&row.section);
        }
    }
    let mut out =
        String::from("| | corral | containerd | ratio | target |\n|---|---|---|---|---|\n");
    for section in sections {
        out.push_str(&format!("| **{section}** | | | | |\n"));
        for row in rows.iter().filter(|r| r.section == section) {
            let ratio = row.ratio.map_or("-".to_string(), |r| format!("{r:.2}"));
            out.push_str(&format!(
                "| {} | {} | {} | {ratio} | {} |\n",
                row.label, row.corral, row.containerd, row.target
            ));
        }
    }
    out
}

/// Prints every recorded row, with the load average seen at the start and the end of the run.
pub fn print(machine: &str, load_start: &str, load_end: &str) {
    println!("\n=== issue 13, every row from this run; ratio = corral / containerd (below 1: corral is faster) ===");
    println!("machine: {machine}");
    println!("load average (1, 5, 15 min): {load_start} at the start, {load_end} at the end\n");
    print!("{}", table(&rows()));
}

/// CPU model, core count and memory of this machine, from `/proc`.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / (1 << 20) as f64);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} x {model}, {mem_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(section: &str, label: &str, ratio: Option<f64>) -> Row {
        Row {
            section: section.into(),
            label: label.into(),
            corral: "1 ms".into(),
            containerd: "2 ms".into(),
            ratio,
            target: String::new(),
        }
    }

    #[test]
    fn the_table_groups_rows_by_section_in_first_seen_order() {
        let rows = [
            row("pods", "a", Some(0.5)),
            row("node", "b", None),
            row("pods", "c", Some(0.25)),
        ];
        let table = table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[2], "| **pods** | | | | |");
        assert_eq!(lines[3], "| a | 1 ms | 2 ms | 0.50 |  |");
        assert_eq!(lines[4], "| c | 1 ms | 2 ms | 0.25 |  |");
        assert_eq!(lines[5], "| **node** | | | | |");
        assert_eq!(lines[6], "| b | 1 ms | 2 ms | - |  |");
    }

    #[test]
    fn a_ratio_needs_both_figures_and_a_nonzero_containerd() {
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(4.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
    }
}
