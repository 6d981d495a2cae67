//! Output as crictl prints it: aligned tables, short IDs, human ages and sizes, and JSON or
//! YAML documents.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use cri_proto::v1::{ContainerState, PodSandboxState};
use serde::Serialize;
use serde_json::{Map, Value};

/// How a list or status is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

/// How an inspect-style document is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DocumentFormat {
    #[default]
    Json,
    Yaml,
}

impl OutputFormat {
    /// The document format, or `None` for a table.
    pub fn document(self) -> Option<DocumentFormat> {
        match self {
            Self::Table => None,
            Self::Json => Some(DocumentFormat::Json),
            Self::Yaml => Some(DocumentFormat::Yaml),
        }
    }
}

/// Length of an ID in tables, as crictl truncates them.
pub const SHORT_ID_LEN: usize = 13;

/// Smallest column width of a table (crictl's tabwriter minwidth).
const MIN_COLUMN_WIDTH: usize = 20;
/// Spaces after the widest cell of a column (crictl's tabwriter padding).
const COLUMN_PADDING: usize = 3;

/// A table whose columns are aligned like Go's tabwriter with crictl's settings: each column
/// but the last is as wide as its widest cell plus 3, and at least 20.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with a header row.
    pub fn with_header(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Appends a row.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Renders the rows, one line each.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![MIN_COLUMN_WIDTH; columns.saturating_sub(1)];
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count() + COLUMN_PADDING);
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                out.push_str(cell);
                if let Some(width) = widths.get(i) {
                    if i + 1 < row.len() {
                        let pad = width - cell.chars().count();
                        out.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.push('\n');
        }
        out
    }

    /// Prints the table to stdout.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// The first 13 characters of an ID, after stripping a `sha256:` algorithm prefix.
pub fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    match id.char_indices().nth(SHORT_ID_LEN) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// A duration in words, like docker's `HumanDuration` ("2 minutes", "About an hour").
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let minutes = seconds / 60;
    // Hours are rounded to the nearest hour, as Go's `Duration.Round(time.Hour)` does.
    let hours = (seconds + 1800) / 3600;
    match () {
        _ if seconds < 1 => "Less than a second".to_string(),
        _ if seconds == 1 => "1 second".to_string(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// How long ago a CRI timestamp (nanoseconds since the epoch) was, e.g. "2 minutes ago".
/// Timestamps in the future count as now.
pub fn age(timestamp_nanos: i64, now: SystemTime) -> String {
    let then = UNIX_EPOCH + Duration::from_nanos(u64::try_from(timestamp_nanos).unwrap_or(0));
    let elapsed = now.duration_since(then).unwrap_or(Duration::ZERO);
    format!("{} ago", human_duration(elapsed))
}

/// A byte count with three significant digits and decimal units, like docker's
/// `HumanSizeWithPrecision(size, 3)` ("4.26MB", "786B").
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    format!("{}{}", three_significant_digits(size), UNITS[unit])
}

/// Formats `value` (0 or in 1..1000) with at most three significant digits, no trailing zeros.
fn three_significant_digits(value: f64) -> String {
    let integer_digits = if value >= 100.0 {
        3
    } else if value >= 10.0 {
        2
    } else {
        1
    };
    let decimals = 3 - integer_digits;
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A pod state as crictl's tables show it.
pub fn pod_state_name(state: i32) -> &'static str {
    match PodSandboxState::try_from(state) {
        Ok(PodSandboxState::SandboxReady) => "Ready",
        Ok(PodSandboxState::SandboxNotready) => "NotReady",
        Err(_) => "Unknown",
    }
}

/// A container state as crictl's tables show it.
pub fn container_state_name(state: i32) -> &'static str {
    match ContainerState::try_from(state) {
        Ok(ContainerState::ContainerCreated) => "Created",
        Ok(ContainerState::ContainerRunning) => "Running",
        Ok(ContainerState::ContainerExited) => "Exited",
        Ok(ContainerState::ContainerUnknown) | Err(_) => "Unknown",
    }
}

/// Renders `value` as pretty JSON or YAML.
pub fn render_document<T: Serialize + ?Sized>(value: &T, format: DocumentFormat) -> Result<String> {
    match format {
        DocumentFormat::Json => {
            let mut text = serde_json::to_string_pretty(value).context("encoding JSON")?;
            text.push('\n');
            Ok(text)
        }
        DocumentFormat::Yaml => serde_yaml::to_string(value).context("encoding YAML"),
    }
}

/// Prints `value` as pretty JSON or YAML on stdout.
pub fn print_document<T: Serialize + ?Sized>(value: &T, format: DocumentFormat) -> Result<()> {
    print!("{}", render_document(value, format)?);
    Ok(())
}

/// Builds the document crictl prints for a verbose status call: `{"status": ...}` plus one
/// key per `info` entry, whose value is parsed as JSON when it is JSON (a string otherwise).
pub fn status_document<T: Serialize>(
    status: &T,
    info: &HashMap<String, String>,
) -> Result<Map<String, Value>> {
    let mut document = Map::new();
    document.insert(
        "status".to_string(),
        serde_json::to_value(status).context("encoding status")?,
    );
    let mut keys: Vec<&String> = info.keys().collect();
    keys.sort();
    for key in keys {
        let raw = &info[key];
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()));
        document.insert(key.clone(), value);
    }
    Ok(document)
}

/// The verbose list output's `Labels:` and `Annotations:` blocks (each only when not empty),
/// appended to `out`.
pub fn push_labels_and_annotations(
    out: &mut String,
    labels: &HashMap<String, String>,
    annotations: &HashMap<String, String>,
) {
    for (title, map) in [("Labels", labels), ("Annotations", annotations)] {
        if !map.is_empty() {
            out.push_str(&format!("{title}:\n"));
            for (key, value) in sorted_pairs(map) {
                out.push_str(&format!("\t{key} -> {value}\n"));
            }
        }
    }
}

/// Sorted `key -> value` lines for the verbose list output.
pub fn sorted_pairs(map: &HashMap<String, String>) -> Vec<(&str, &str)> {
    let mut pairs: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pairs.sort();
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_are_aligned_like_crictl() {
        let mut table = Table::with_header(&["POD ID", "CREATED", "STATE", "NAME"]);
        table.push(vec![
            "0123456789abc".into(),
            "2 minutes ago".into(),
            "Ready".into(),
            "nginx".into(),
        ]);
        table.push(vec![
            "ffff".into(),
            "About an hour ago".into(),
            "NotReady".into(),
            "a-very-long-pod-name-indeed".into(),
        ]);
        let expected = concat!(
            "POD ID              CREATED             STATE               NAME\n",
            "0123456789abc       2 minutes ago       Ready               nginx\n",
            "ffff                About an hour ago   NotReady            a-very-long-pod-name-indeed\n",
        );
        assert_eq!(table.render(), expected);
    }

    #[test]
    fn wide_cells_widen_their_column_by_padding() {
        let mut table = Table::with_header(&["IMAGE", "TAG"]);
        table.push(vec!["docker.io/library/busybox".into(), "latest".into()]);
        let rendered = table.render();
        let lines: Vec<&str> = rendered.lines().collect();
        // 25 characters + 3 of padding.
        assert_eq!(lines[0], format!("IMAGE{}TAG", " ".repeat(23)));
        assert_eq!(lines[1], "docker.io/library/busybox   latest");
    }

    #[test]
    fn empty_table_renders_nothing() {
        assert_eq!(Table::default().render(), "");
    }

    #[test]
    fn short_ids() {
        let id = "4dbd1a3b1b1c4a6b8e2f9d0c1a2b3c4d";
        assert_eq!(short_id(id), "4dbd1a3b1b1c4");
        assert_eq!(short_id("sha256:abcdef0123456789abcdef"), "abcdef0123456");
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn human_durations() {
        let cases = [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (120, "2 minutes"),
            (59 * 60 + 59, "59 minutes"),
            (3600, "About an hour"),
            (90 * 60, "2 hours"),
            (47 * 3600, "47 hours"),
            (48 * 3600, "2 days"),
            (13 * 24 * 3600, "13 days"),
            (14 * 24 * 3600, "2 weeks"),
            (60 * 24 * 3600, "2 months"),
            (3 * 365 * 24 * 3600, "3 years"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(
                human_duration(Duration::from_secs(seconds)),
                expected,
                "{seconds}s"
            );
        }
    }

    #[test]
    fn ages_from_cri_timestamps() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let two_minutes_before = (1_700_000_000i64 - 150) * 1_000_000_000;
        assert_eq!(age(two_minutes_before, now), "2 minutes ago");
        let in_the_future = (1_700_000_000i64 + 10) * 1_000_000_000;
        assert_eq!(age(in_the_future, now), "Less than a second ago");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(786), "786B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1500), "1.5kB");
        assert_eq!(human_size(4_263_936), "4.26MB");
        assert_eq!(human_size(42_639_360), "42.6MB");
        assert_eq!(human_size(426_393_600), "426MB");
        assert_eq!(human_size(2_000_000_000), "2GB");
    }

    #[test]
    fn state_names() {
        for (name, expected) in [
            (
                pod_state_name(PodSandboxState::SandboxReady as i32),
                "Ready",
            ),
            (
                pod_state_name(PodSandboxState::SandboxNotready as i32),
                "NotReady",
            ),
            (pod_state_name(42), "Unknown"),
            (
                container_state_name(ContainerState::ContainerRunning as i32),
                "Running",
            ),
            (
                container_state_name(ContainerState::ContainerExited as i32),
                "Exited",
            ),
        ] {
            assert_eq!(name, expected);
        }
    }

    #[test]
    fn status_document_parses_json_info() {
        let info = HashMap::from([
            (
                "info".to_string(),
                r#"{"pid": 42, "netns": "/run/x"}"#.to_string(),
            ),
            ("note".to_string(), "plain text".to_string()),
        ]);
        let document = status_document(&serde_json::json!({"id": "abc"}), &info).expect("encodes");
        assert_eq!(
            Value::Object(document),
            serde_json::json!({
                "status": {"id": "abc"},
                "info": {"pid": 42, "netns": "/run/x"},
                "note": "plain text",
            })
        );
    }

    #[test]
    fn documents_render_as_json_and_yaml() {
        let value = serde_json::json!({"a": 1});
        assert_eq!(
            render_document(&value, DocumentFormat::Json).expect("json"),
            "{\n  \"a\": 1\n}\n"
        );
        assert_eq!(
            render_document(&value, DocumentFormat::Yaml).expect("yaml"),
            "a: 1\n"
        );
    }
}

/// Output flags every list verb (`pods`, `ps`, `images`) shares.
#[derive(Debug, clap::Args)]
pub struct ListFormat {
    /// Print only the IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print details of each item.
    #[arg(short, long)]
    pub verbose: bool,
    /// Show full IDs (and digests).
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[cfg(test)]
impl ListFormat {
    /// The flags' defaults: a truncated table.
    pub fn table() -> ListFormat {
        ListFormat {
            quiet: false,
            verbose: false,
            no_trunc: false,
            output: OutputFormat::Table,
        }
    }
}
