//! A process named by pid and start time.

use crate::error::Result;
use crate::stat::read_stat;

/// A process identified by pid *and* start time, so that a reused pid is never taken for it.
/// Both fields can be stored and the value rebuilt after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessIdentity {
    /// The pid, in the reader's PID namespace.
    pub pid: i32,
    /// Field 22 of `/proc/PID/stat`: clock ticks after boot when the process started.
    pub start_time: u64,
}

impl ProcessIdentity {
    /// The process now running as `pid`; `None` if there is none.
    pub fn of_pid(pid: i32) -> Result<Option<ProcessIdentity>> {
        Ok(read_stat(pid)?.map(|stat| ProcessIdentity {
            pid,
            start_time: stat.start_time,
        }))
    }

    /// This process.
    pub fn current() -> Result<ProcessIdentity> {
        let pid = nix::unistd::getpid().as_raw();
        Ok(ProcessIdentity::of_pid(pid)?.unwrap_or(ProcessIdentity { pid, start_time: 0 }))
    }

    /// Whether the process still runs: same pid, same start time, not a zombie. `Ok(false)` when
    /// it is gone; an error only when `/proc` cannot be read.
    pub fn check_alive(&self) -> Result<bool> {
        Ok(read_stat(self.pid)?
            .is_some_and(|stat| stat.start_time == self.start_time && !stat.has_exited()))
    }

    /// [`ProcessIdentity::check_alive`], taking an unreadable `/proc` for a gone process.
    pub fn is_alive(&self) -> bool {
        self.check_alive().unwrap_or(false)
    }

    /// `PID START_TIME\n`.
    pub fn to_line(&self) -> String {
        format!("{} {}\n", self.pid, self.start_time)
    }

    /// Parses [`ProcessIdentity::to_line`]'s format.
    pub fn parse(text: &str) -> Option<ProcessIdentity> {
        let mut words = text.split_whitespace();
        let pid = words.next()?.parse().ok().filter(|pid| *pid > 0)?;
        let start_time = words.next()?.parse().ok()?;
        words
            .next()
            .is_none()
            .then_some(ProcessIdentity { pid, start_time })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn line_round_trip_and_refusals() {
        let identity = ProcessIdentity {
            pid: 42,
            start_time: 8071,
        };
        assert_eq!(ProcessIdentity::parse(&identity.to_line()), Some(identity));
        for bad in ["", "42", "0 1", "-3 1", "42 x", "42 1 2"] {
            assert_eq!(ProcessIdentity::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn this_process_is_alive_and_a_stale_start_time_is_not() {
        let me = ProcessIdentity::current().unwrap();
        assert!(me.is_alive());
        let reused = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!reused.is_alive());
    }
}
