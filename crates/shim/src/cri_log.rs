//! The container's log in the CRI format that kubelet reads:
//! `<RFC3339Nano UTC timestamp> <stdout|stderr> <P|F> <text>\n`.
//!
//! A line that ended in the container's output is written with `F` (full); text that did not end
//! with a newline when it was read, and every 16 KiB piece of a longer line but the last, is
//! written with `P` (partial). Output is written as soon as it is read, so nothing waits in the
//! shim for a newline that may never come.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest text of one log entry; longer lines are split into `P` entries.
pub const MAX_ENTRY: usize = 16 * 1024;

/// Which of the container's streams output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The stream's name in the log.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Appends the log entries for `data`, read from `stream` at `timestamp`, to `out`.
pub fn format_entries(stream: Stream, timestamp: &str, data: &[u8], out: &mut Vec<u8>) {
    let mut entry = |tag: &str, text: &[u8]| {
        out.extend_from_slice(timestamp.as_bytes());
        out.push(b' ');
        out.extend_from_slice(stream.name().as_bytes());
        out.push(b' ');
        out.extend_from_slice(tag.as_bytes());
        out.push(b' ');
        out.extend_from_slice(text);
        out.push(b'\n');
    };
    let mut rest = data;
    while !rest.is_empty() {
        let (mut line, complete, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], true, &rest[end + 1..]),
            None => (rest, false, &[][..]),
        };
        while line.len() > MAX_ENTRY {
            entry("P", &line[..MAX_ENTRY]);
            line = &line[MAX_ENTRY..];
        }
        entry(if complete { "F" } else { "P" }, line);
        rest = next;
    }
}

/// `2024-05-01T12:34:56.123456789Z`: RFC 3339 in UTC with nanoseconds (always nine digits, so
/// entries sort as text too).
pub fn rfc3339_nano(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let days = i64::try_from(seconds / 86_400).unwrap_or(i64::MAX);
    let second_of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        since_epoch.subsec_nanos()
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // In range by construction: month 1..=12, day 1..=31.
    (year, month as u32, day as u32)
}

/// The CRI log file of one container.
#[derive(Debug)]
pub struct CriLog {
    path: PathBuf,
    file: File,
}

impl CriLog {
    /// Opens (appending, creating it 0640 and its directory as needed) the log at `path`.
    pub fn open(path: &Path) -> io::Result<CriLog> {
        Ok(CriLog {
            path: path.to_owned(),
            file: open_log_file(path)?,
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a new file at the log's path (after a rotation renamed the old one) and writes
    /// there from now on. On failure the old file is kept.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = open_log_file(&self.path)?;
        Ok(())
    }

    /// Writes the entries for output `data` of `stream`, read now.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        let timestamp = rfc3339_nano(SystemTime::now());
        let mut entries = Vec::with_capacity(data.len() + 64);
        format_entries(stream, &timestamp, data, &mut entries);
        self.file.write_all(&entries)
    }
}

fn open_log_file(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TS: &str = "2024-01-02T03:04:05.000000006Z";

    fn entries(stream: Stream, data: &[u8]) -> String {
        let mut out = Vec::new();
        format_entries(stream, TS, data, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn full_and_partial_lines_are_tagged() {
        assert_eq!(
            entries(Stream::Stdout, b"hello\nworld\n"),
            format!("{TS} stdout F hello\n{TS} stdout F world\n")
        );
        assert_eq!(
            entries(Stream::Stderr, b"a\nprompt> "),
            format!("{TS} stderr F a\n{TS} stderr P prompt> \n")
        );
        assert_eq!(entries(Stream::Stdout, b"\n"), format!("{TS} stdout F \n"));
        assert_eq!(entries(Stream::Stdout, b""), "");
    }

    #[test]
    fn long_lines_are_split_at_16_kib() {
        let line = "x".repeat(40 * 1024);
        let text = entries(Stream::Stdout, format!("{line}\n").as_bytes());
        let parsed: Vec<(&str, usize)> = text
            .lines()
            .map(|entry| {
                let mut fields = entry.splitn(4, ' ');
                assert_eq!(fields.next(), Some(TS));
                assert_eq!(fields.next(), Some("stdout"));
                (fields.next().unwrap(), fields.next().unwrap().len())
            })
            .collect();
        assert_eq!(parsed, [("P", 16384), ("P", 16384), ("F", 8192)]);

        // Exactly 16 KiB fits one entry; one byte more does not.
        let text = entries(
            Stream::Stdout,
            format!("{}\n", "y".repeat(MAX_ENTRY)).as_bytes(),
        );
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains(" F "));
        let text = entries(Stream::Stdout, "z".repeat(MAX_ENTRY + 1).as_bytes());
        let tags: Vec<&str> = text.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(tags, ["P", "P"]);
    }

    #[test]
    fn timestamps_are_rfc3339_with_nanoseconds() {
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let time = UNIX_EPOCH + Duration::new(1_709_210_096, 123_456_789);
        assert_eq!(rfc3339_nano(time), "2024-02-29T12:34:56.123456789Z");
        let time = UNIX_EPOCH + Duration::new(951_868_799, 5);
        assert_eq!(rfc3339_nano(time), "2000-02-29T23:59:59.000000005Z");
        let time = UNIX_EPOCH + Duration::from_secs(4_102_444_800);
        assert_eq!(rfc3339_nano(time), "2100-01-01T00:00:00.000000000Z");
        let time = UNIX_EPOCH + Duration::from_secs(1_735_689_599);
        assert_eq!(rfc3339_nano(time), "2024-12-31T23:59:59.000000000Z");
    }

    #[test]
    fn reopening_starts_a_new_file_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods/c/0.log");
        let mut log = CriLog::open(&path).unwrap();
        log.write(Stream::Stdout, b"one\n").unwrap();
        fs::rename(&path, dir.path().join("rotated")).unwrap();
        log.write(Stream::Stdout, b"two\n").unwrap();
        log.reopen().unwrap();
        log.write(Stream::Stderr, b"three\n").unwrap();
        let rotated = fs::read_to_string(dir.path().join("rotated")).unwrap();
        let current = fs::read_to_string(&path).unwrap();
        assert!(rotated.contains(" stdout F one\n"));
        assert!(rotated.contains(" stdout F two\n"));
        assert!(current.ends_with(" stderr F three\n"));
        assert_eq!(current.lines().count(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "mode {mode:o}");
    }
}
