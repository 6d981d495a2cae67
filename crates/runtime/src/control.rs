//! The shim's control socket (`<state_dir>/ctl`).
//!
//! Protocol: connect, send one request line, read one answer line: `ok` or `error: <message>`;
//! the shim then closes the connection. Requests: `reopen-log` (close the CRI log and open a new
//! file at its path; the switch happens between two reads of the container's output, so no output
//! is lost and none is written to both files).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::error::{Result, RuntimeError};
use crate::state_dir::CONTROL_SOCKET;
use crate::unix_socket;

/// The longest request or answer line.
pub const MAX_LINE: usize = 4096;

/// What a client can ask the shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    /// Reopen the CRI log file at its path.
    ReopenLog,
}

impl ControlRequest {
    /// The request as sent on the socket (without the newline).
    pub fn as_str(&self) -> &'static str {
        match self {
            ControlRequest::ReopenLog => "reopen-log",
        }
    }

    /// Parses a request line (the newline already removed).
    pub fn parse(line: &str) -> Option<ControlRequest> {
        match line.trim() {
            "reopen-log" => Some(ControlRequest::ReopenLog),
            _ => None,
        }
    }
}

/// The answer line for a request's outcome.
pub fn answer_line(outcome: &std::result::Result<(), String>) -> String {
    match outcome {
        Ok(()) => "ok\n".to_owned(),
        Err(message) => format!("error: {}\n", message.replace('\n', " ")),
    }
}

/// Asks the shim to reopen the container's CRI log and waits up to `timeout` for it to confirm.
pub fn reopen_log(state_dir: &Path, timeout: Duration) -> Result<()> {
    send_request(state_dir, ControlRequest::ReopenLog, timeout)
}

/// Sends one request and reads its answer.
pub fn send_request(state_dir: &Path, request: ControlRequest, timeout: Duration) -> Result<()> {
    let failed = |message: String| RuntimeError::Control {
        state_dir: state_dir.to_owned(),
        request: request.as_str(),
        message,
    };
    let stream = unix_socket::connect(&state_dir.join(CONTROL_SOCKET)).map_err(|e| {
        failed(format!(
            "connect to {CONTROL_SOCKET} (is the shim running?): {e}"
        ))
    })?;
    let timeout = timeout.max(Duration::from_millis(1));
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| failed(format!("set socket timeout: {e}")))?;
    (&stream)
        .write_all(format!("{}\n", request.as_str()).as_bytes())
        .map_err(|e| failed(format!("send: {e}")))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .take(MAX_LINE as u64)
        .read_line(&mut answer)
        .map_err(|e| failed(format!("no answer within {timeout:?}: {e}")))?;
    let answer = answer.trim();
    if answer == "ok" {
        Ok(())
    } else if let Some(message) = answer.strip_prefix("error:") {
        Err(failed(message.trim().to_owned()))
    } else if answer.is_empty() {
        Err(failed(
            "the shim closed the connection without answering".into(),
        ))
    } else {
        Err(failed(format!("unexpected answer {answer:?}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_have_one_line_each() {
        assert_eq!(
            ControlRequest::parse("reopen-log"),
            Some(ControlRequest::ReopenLog)
        );
        assert_eq!(ControlRequest::parse("reboot"), None);
        assert_eq!(answer_line(&Ok(())), "ok\n");
        assert_eq!(
            answer_line(&Err("open /x:\nENOENT".into())),
            "error: open /x: ENOENT\n"
        );
    }

    #[test]
    fn a_fake_shim_answers() {
        let dir = tempfile::tempdir().unwrap();
        let listener = unix_socket::bind(&dir.path().join(CONTROL_SOCKET)).unwrap();
        let server = std::thread::spawn(move || {
            for answer in ["ok\n", "error: disk full\n"] {
                let (stream, _) = listener.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).unwrap();
                assert_eq!(line, "reopen-log\n");
                (&stream).write_all(answer.as_bytes()).unwrap();
            }
        });
        reopen_log(dir.path(), Duration::from_secs(10)).unwrap();
        let error = reopen_log(dir.path(), Duration::from_secs(10)).unwrap_err();
        assert!(error.to_string().contains("disk full"), "{error}");
        server.join().unwrap();
    }

    #[test]
    fn no_shim_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = reopen_log(dir.path(), Duration::from_secs(1)).unwrap_err();
        assert!(error.to_string().contains("is the shim running"), "{error}");
    }
}
