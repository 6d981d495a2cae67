//! Reading CRI container log files.
//!
//! Each line is `<RFC3339Nano timestamp> <stdout|stderr> <tag> <text>`; the first `:`-separated
//! part of the tag is `P` for a partial line (continued by the next line of the same stream)
//! or `F` for the end of a line.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Which output stream of the container a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One parsed line of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub timestamp: &'a str,
    pub stream: LogStream,
    /// `true` for a `P` line: the text continues in the next line of the same stream.
    pub partial: bool,
    pub text: &'a str,
}

/// A log line that does not have the CRI format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedLogLine {
    /// Line number in the file, from 1.
    pub line_number: usize,
    pub reason: &'static str,
}

impl fmt::Display for MalformedLogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "log line {} is not in CRI format: {}",
            self.line_number, self.reason
        )
    }
}

/// Parses one line (without its trailing newline).
pub fn parse_line(line: &str) -> Result<LogLine<'_>, &'static str> {
    let (timestamp, rest) = line.split_once(' ').ok_or("no timestamp")?;
    let (stream, rest) = rest.split_once(' ').ok_or("no stream")?;
    let stream = match stream {
        "stdout" => LogStream::Stdout,
        "stderr" => LogStream::Stderr,
        _ => return Err("stream is neither stdout nor stderr"),
    };
    // The text may be empty, and then the separating space may be missing too.
    let (tag, text) = rest.split_once(' ').unwrap_or((rest, ""));
    if tag.is_empty() {
        return Err("no tag");
    }
    let partial = tag.split(':').next() == Some("P");
    Ok(LogLine {
        timestamp,
        stream,
        partial,
        text,
    })
}

/// A line of container output, put back together from its partial pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMessage {
    /// Timestamp of the first piece.
    pub timestamp: String,
    pub stream: LogStream,
    pub text: String,
    /// `false` when the file ends before the line's final (`F`) piece.
    pub complete: bool,
}

impl LogMessage {
    /// The message as it is printed: optionally prefixed by its timestamp, and followed by a
    /// newline unless the container has not finished the line.
    pub fn render(&self, timestamps: bool) -> String {
        let mut out = String::new();
        if timestamps {
            out.push_str(&self.timestamp);
            out.push(' ');
        }
        out.push_str(&self.text);
        if self.complete {
            out.push('\n');
        }
        out
    }
}

/// Parses a whole log file into messages, joining `P` pieces with the following line of the
/// same stream. Malformed lines are skipped and returned alongside.
pub fn assemble(content: &str) -> (Vec<LogMessage>, Vec<MalformedLogLine>) {
    let mut messages = Vec::new();
    let mut malformed = Vec::new();
    // Unfinished lines, one per stream: stdout and stderr interleave independently.
    let mut pending: [Option<LogMessage>; 2] = [None, None];
    for (index, line) in content.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let parsed = match parse_line(line) {
            Ok(parsed) => parsed,
            Err(reason) => {
                malformed.push(MalformedLogLine {
                    line_number: index + 1,
                    reason,
                });
                continue;
            }
        };
        let slot = &mut pending[parsed.stream as usize];
        let message = slot.get_or_insert_with(|| LogMessage {
            timestamp: parsed.timestamp.to_string(),
            stream: parsed.stream,
            text: String::new(),
            complete: false,
        });
        message.text.push_str(parsed.text);
        if !parsed.partial {
            if let Some(mut finished) = slot.take() {
                finished.complete = true;
                messages.push(finished);
            }
        }
    }
    messages.extend(pending.into_iter().flatten());
    (messages, malformed)
}

/// Prints log lines one at a time as they arrive (`logs -f`): a partial (`P`) line's text
/// without a newline, its timestamp only where its message starts.
#[derive(Debug, Clone, Default)]
pub struct LinePrinter {
    timestamps: bool,
    /// Per stream: the last line printed was partial, so the next continues its message.
    mid_message: [bool; 2],
}

impl LinePrinter {
    /// A printer; `timestamps` prefixes each message with its first piece's timestamp.
    pub fn new(timestamps: bool) -> Self {
        LinePrinter {
            timestamps,
            mid_message: [false; 2],
        }
    }

    /// Notes that `stream` has an unfinished message already printed (by `assemble`).
    pub fn continue_message(&mut self, stream: LogStream) {
        self.mid_message[stream as usize] = true;
    }

    /// The text to print for `line`.
    pub fn render(&mut self, line: &LogLine<'_>) -> String {
        let continuing = &mut self.mid_message[line.stream as usize];
        let mut out = String::new();
        if self.timestamps && !*continuing {
            out.push_str(line.timestamp);
            out.push(' ');
        }
        out.push_str(line.text);
        if !line.partial {
            out.push('\n');
        }
        *continuing = line.partial;
        out
    }
}

/// The end of the complete lines in `bytes` (just after the last newline); 0 when there is
/// none. A log line is used once its newline is there: the writer may be mid-line.
pub fn complete_lines_end(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(0, |index| index + 1)
}

/// Reads what is appended to the log file at a path, across rotations: when the path names
/// a new file (the old one was renamed and the writer reopened the path), the rest of the old
/// one is read, then the new one from its start; a file that shrank (truncated) is read again
/// from its start.
#[derive(Debug)]
pub struct LogTail {
    path: PathBuf,
    file: File,
    identity: (u64, u64),
    offset: u64,
}

impl LogTail {
    /// Opens the file at `path`, to be read from its start.
    pub fn open(path: &Path) -> io::Result<LogTail> {
        let file = File::open(path)?;
        let identity = file_identity(&file.metadata()?);
        Ok(LogTail {
            path: path.to_path_buf(),
            file,
            identity,
            offset: 0,
        })
    }

    /// Everything written since the last call.
    pub fn read_new(&mut self) -> io::Result<Vec<u8>> {
        let mut new = Vec::new();
        self.read_current(&mut new)?;
        if !new.is_empty() {
            return Ok(new);
        }
        match std::fs::metadata(&self.path) {
            Ok(at_path) if file_identity(&at_path) != self.identity => {
                // Rotated: the writer has moved to the new file, so what the old one holds
                // now is all it will ever hold.
                self.read_current(&mut new)?;
                let file = File::open(&self.path)?;
                self.identity = file_identity(&file.metadata()?);
                self.file = file;
                self.offset = 0;
                self.read_current(&mut new)?;
            }
            Ok(at_path) if at_path.len() < self.offset => {
                self.file.seek(SeekFrom::Start(0))?;
                self.offset = 0;
                self.read_current(&mut new)?;
            }
            // Unchanged, or renamed and not reopened yet: keep reading the current file.
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        Ok(new)
    }

    fn read_current(&mut self, into: &mut Vec<u8>) -> io::Result<()> {
        let read = self.file.read_to_end(into)?;
        self.offset += read as u64;
        Ok(())
    }
}

fn file_identity(metadata: &std::fs::Metadata) -> (u64, u64) {
    (metadata.dev(), metadata.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_line() {
        let line =
            parse_line("2024-01-02T03:04:05.123456789Z stdout F hello world").expect("valid line");
        assert_eq!(
            line,
            LogLine {
                timestamp: "2024-01-02T03:04:05.123456789Z",
                stream: LogStream::Stdout,
                partial: false,
                text: "hello world",
            }
        );
    }

    #[test]
    fn parses_partial_and_tagged_lines() {
        let line = parse_line("t stderr P:extra  two spaces").expect("valid");
        assert_eq!(line.stream, LogStream::Stderr);
        assert!(line.partial);
        assert_eq!(line.text, " two spaces");
    }

    #[test]
    fn empty_text_is_allowed() {
        assert_eq!(parse_line("t stdout F").expect("valid").text, "");
        assert_eq!(parse_line("t stdout F ").expect("valid").text, "");
    }

    #[test]
    fn rejects_malformed_lines() {
        assert_eq!(parse_line("garbage"), Err("no timestamp"));
        assert_eq!(parse_line("t stdout"), Err("no stream"));
        assert_eq!(
            parse_line("t stdin F x"),
            Err("stream is neither stdout nor stderr")
        );
    }

    #[test]
    fn partial_lines_join_with_the_next_line_of_their_stream() {
        let content = concat!(
            "t1 stdout P hel\n",
            "t2 stderr F oops\n",
            "t3 stdout P lo \n",
            "t4 stdout F world\n",
            "t5 stdout F second\n",
        );
        let (messages, malformed) = assemble(content);
        assert!(malformed.is_empty());
        let rendered: Vec<(LogStream, String)> = messages
            .iter()
            .map(|m| (m.stream, m.render(false)))
            .collect();
        assert_eq!(
            rendered,
            vec![
                (LogStream::Stderr, "oops\n".to_string()),
                (LogStream::Stdout, "hello world\n".to_string()),
                (LogStream::Stdout, "second\n".to_string()),
            ]
        );
        assert_eq!(messages[1].timestamp, "t1", "first piece's timestamp");
        assert_eq!(messages[1].render(true), "t1 hello world\n");
    }

    #[test]
    fn unfinished_line_at_end_has_no_newline() {
        let (messages, _) = assemble("t1 stdout F done\nt2 stdout P still typ\n");
        assert_eq!(messages.len(), 2);
        assert!(!messages[1].complete);
        assert_eq!(messages[1].render(false), "still typ");
    }

    #[test]
    fn malformed_lines_are_skipped_and_reported() {
        let (messages, malformed) = assemble("t1 stdout F a\nnonsense\nt2 stdout F b\n");
        assert_eq!(messages.len(), 2);
        assert_eq!(
            malformed,
            vec![MalformedLogLine {
                line_number: 2,
                reason: "no timestamp"
            }]
        );
        assert_eq!(
            malformed[0].to_string(),
            "log line 2 is not in CRI format: no timestamp"
        );
    }

    #[test]
    fn lines_print_as_they_come() {
        let mut printer = LinePrinter::new(true);
        let line = |text| parse_line(text).expect("valid line");
        assert_eq!(printer.render(&line("t1 stdout P hel")), "t1 hel");
        assert_eq!(printer.render(&line("t2 stderr F oops")), "t2 oops\n");
        assert_eq!(printer.render(&line("t3 stdout F lo")), "lo\n");
        assert_eq!(printer.render(&line("t4 stdout F next")), "t4 next\n");
        let mut plain = LinePrinter::new(false);
        plain.continue_message(LogStream::Stdout);
        assert_eq!(plain.render(&line("t5 stdout F rest")), "rest\n");
    }

    #[test]
    fn only_complete_lines_are_used() {
        assert_eq!(complete_lines_end(b""), 0);
        assert_eq!(complete_lines_end(b"t stdout F a"), 0);
        assert_eq!(complete_lines_end(b"t stdout F a\nt stdout F b"), 13);
        assert_eq!(complete_lines_end(b"x\ny\n"), 4);
    }

    #[test]
    fn a_tail_follows_appends_rotation_and_truncation() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.log");
        let append = |path: &Path, text: &str| {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open for append");
            file.write_all(text.as_bytes()).expect("write");
        };
        append(&path, "one\n");
        let mut tail = LogTail::open(&path).expect("opens");
        assert_eq!(tail.read_new().expect("reads"), b"one\n");
        assert_eq!(tail.read_new().expect("reads"), b"");
        append(&path, "two\n");
        assert_eq!(tail.read_new().expect("reads"), b"two\n");

        // Rotated: renamed, written to a little longer, then a new file at the path.
        let rotated = dir.path().join("c.log.1");
        std::fs::rename(&path, &rotated).expect("rename");
        append(&rotated, "three\n");
        assert_eq!(tail.read_new().expect("reads"), b"three\n");
        assert_eq!(tail.read_new().expect("reads"), b"");
        append(&rotated, "four\n");
        append(&path, "five\n");
        // The old file first, to its end; then the new one.
        assert_eq!(tail.read_new().expect("reads"), b"four\n");
        assert_eq!(tail.read_new().expect("reads"), b"five\n");
        append(&path, "six\n");
        assert_eq!(tail.read_new().expect("reads"), b"six\n");

        // Truncated in place.
        std::fs::write(&path, "").expect("truncate");
        append(&path, "7\n");
        assert_eq!(tail.read_new().expect("reads"), b"7\n");
    }
}
