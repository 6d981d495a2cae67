//! `/proc/PID/stat`.

use std::fs;
use std::io;

use crate::error::{ProcessError, Result};

/// What `/proc/PID/stat` says about a process (the fields corral uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStat {
    /// Field 2: the command name (at most 15 bytes; may hold spaces and parentheses).
    pub comm: String,
    /// Field 3: `R`, `S`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// Field 4: the parent's pid.
    pub ppid: i32,
    /// Field 6: the session id (equal to the pid for a session leader).
    pub session: i32,
    /// Field 22: when the process started, in clock ticks after boot.
    pub start_time: u64,
}

impl ProcessStat {
    /// Whether the process has exited (a zombie not yet reaped, or dead).
    pub fn has_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Reads `/proc/PID/stat`; `None` when there is no such process.
pub fn read_stat(pid: i32) -> Result<Option<ProcessStat>> {
    let error = |source| ProcessError::Stat { pid, source };
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => parse_stat(&text).map(Some).ok_or_else(|| {
            error(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected contents {text:?}"),
            ))
        }),
        // A process that exits while its file is read gives ESRCH.
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            Ok(None)
        }
        Err(e) => Err(error(e)),
    }
}

/// Parses a `/proc/PID/stat` line. The command name (field 2) may hold spaces and parentheses,
/// so it runs to the *last* `)` and the other fields are counted from there.
pub fn parse_stat(text: &str) -> Option<ProcessStat> {
    let (head, rest) = text.rsplit_once(')')?;
    let (_, comm) = head.split_once('(')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let session = fields.nth(1)?.parse().ok()?;
    // `fields` now stands at field 7; field 22 is 15 further.
    let start_time = fields.nth(15)?.parse().ok()?;
    Some(ProcessStat {
        comm: comm.to_owned(),
        state,
        ppid,
        session,
        start_time,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A line with every field up to 22 (start time 8071).
    fn line(comm: &str, state: char) -> String {
        format!(
            "4242 ({comm}) {state} 100 4242 4241 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 8071 0 0"
        )
    }

    #[test]
    fn parses_the_fields_corral_uses() {
        let stat = parse_stat(&line("corral-pause", 'S')).unwrap();
        assert_eq!(
            stat,
            ProcessStat {
                comm: "corral-pause".into(),
                state: 'S',
                ppid: 100,
                session: 4241,
                start_time: 8071,
            }
        );
        assert!(!stat.has_exited());
        assert!(parse_stat(&line("x", 'Z')).unwrap().has_exited());
    }

    #[test]
    fn a_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = parse_stat(&line("a) b (c", 'R')).unwrap();
        assert_eq!(stat.comm, "a) b (c");
        assert_eq!((stat.state, stat.ppid, stat.start_time), ('R', 100, 8071));
    }

    #[test]
    fn short_or_garbled_lines_are_refused() {
        for text in ["", "4242 (x) S 1 2", "4242 x S", "4242 (x) S nope 1 2 3"] {
            assert_eq!(parse_stat(text), None, "{text:?}");
        }
    }

    #[test]
    fn reads_this_process_and_no_such_process() {
        let me = read_stat(std::process::id() as i32).unwrap().unwrap();
        assert!(!me.has_exited());
        assert!(me.start_time > 0);
        // The highest pid Linux allows is 2^22; this one cannot exist.
        assert_eq!(read_stat(i32::MAX).unwrap(), None);
    }
}
