//! The process plumbing corrald, corral-pause and corral-shim share:
//!
//! - [`stat`]: `/proc/PID/stat` (state, parent, session, start time), parsed by hand: five
//!   fields of one line do not warrant `procfs` in the two small binaries.
//! - [`ProcessIdentity`]: a process named by pid *and* start time, so that a reused pid is never
//!   taken for it.
//! - [`pidfd`]: pidfds (Linux 5.3): open, signal, wait with a timeout, reap; with the `tokio`
//!   feature, await the exit on the reactor instead of polling or pinning a thread.
//! - [`detach`]: what a launcher and the daemon it forks do to stand alone (close inherited
//!   descriptors, point stdio elsewhere, read the child's one-line report from a pipe), and
//!   [`ArgError`] for their hand-parsed command lines.
//!
//! Everything here but [`pidfd::Pidfd::exited`] blocks the calling thread (briefly, except the
//! waits with a timeout); async callers use `spawn_blocking` for those.

pub mod detach;
mod error;
pub mod identity;
pub mod pidfd;
pub mod stat;

pub use detach::ArgError;
pub use error::{ProcessError, Result};
pub use identity::ProcessIdentity;
pub use pidfd::Pidfd;
pub use stat::{read_stat, ProcessStat};
