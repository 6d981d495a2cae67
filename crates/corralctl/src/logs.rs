//! Reading CRI container log files.
//!
//! Each line is `<RFC3339Nano timestamp> <stdout|stderr> <tag> <text>`; the first `:`-separated
//! part of the tag is `P` for a partial line (continued by the next line of the same stream)
//! or `F` for the end of a line.

use std::fmt;

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
}
