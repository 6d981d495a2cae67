//! The launcher: forks the shim, waits for its report on create, prints it and exits, so the shim
//! is nobody's child but its subreaper's.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use corral_process::detach::{self, describe_exit, PipeError};
use corral_runtime::LaunchReport;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use crate::args::ShimArgs;
use crate::shim;

/// How much longer than the create timeout the launcher waits for the shim's report.
const REPORT_SLACK: Duration = Duration::from_secs(60);

/// The most the shim writes on its report pipe.
const MAX_REPORT_LEN: usize = 64 * 1024;

/// Forks the shim and relays its report; the exit code tells success (0) or failure (1).
pub fn launch(args: &ShimArgs) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(&args.state_dir) {
        return print_report(&LaunchReport::ShimFailed(format!(
            "create {}: {e}",
            args.state_dir.display()
        )));
    }
    let (reader, writer) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(pipe) => pipe,
        Err(e) => return print_report(&LaunchReport::ShimFailed(format!("pipe2: {e}"))),
    };
    // SAFETY: the launcher is single-threaded (it never starts a thread), so the child may run
    // arbitrary code after fork.
    match unsafe { fork() } {
        Err(e) => print_report(&LaunchReport::ShimFailed(format!("fork: {e}"))),
        Ok(ForkResult::Child) => {
            drop(reader);
            shim::run(args, writer)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(writer);
            let report = wait_for_report(child, &reader, args);
            print_report(&report)
        }
    }
}

/// Prints the report line for corrald; 0 for a created container, 1 otherwise.
fn print_report(report: &LaunchReport) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let printed = stdout
        .write_all(report.to_line().as_bytes())
        .and_then(|()| stdout.flush());
    if let LaunchReport::ShimFailed(message) | LaunchReport::RuntimeFailed(message) = report {
        let _ = writeln!(std::io::stderr(), "corral-shim: error: {message}");
    }
    match (report, printed) {
        (LaunchReport::Created(_), Ok(())) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// Reads the shim's report; reaps the shim when it failed (it exits right after reporting).
fn wait_for_report(child: Pid, reader: &OwnedFd, args: &ShimArgs) -> LaunchReport {
    let deadline = Instant::now() + args.create_timeout + REPORT_SLACK;
    let text = match read_to_end(reader, deadline) {
        Ok(text) => text,
        Err(message) => {
            // The shim hangs: kill it and whatever it may have created.
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            let _ = args.runtime.delete(&args.id, true);
            return LaunchReport::ShimFailed(message);
        }
    };
    match LaunchReport::parse(&text) {
        Some(report @ LaunchReport::Created(_)) => report,
        Some(failure) => {
            let _ = waitpid(child, None);
            failure
        }
        None => {
            let status = waitpid(child, None)
                .map(describe_exit)
                .unwrap_or_else(|e| format!("waitpid failed: {e}"));
            LaunchReport::ShimFailed(format!(
                "the shim exited before reporting ({status}); see {}",
                args.state_dir
                    .join(corral_runtime::state_dir::SHIM_LOG)
                    .display()
            ))
        }
    }
}

/// Reads the pipe to end of file (the shim closes it once it has reported success, or exits).
/// A created-report line is enough: the shim keeps its end open a moment longer.
fn read_to_end(reader: &OwnedFd, deadline: Instant) -> Result<String, String> {
    match detach::read_report(reader.as_fd(), Some(deadline), MAX_REPORT_LEN, true) {
        Ok(text) => Ok(String::from_utf8_lossy(&text).into_owned()),
        Err(PipeError::TimedOut) => Err("the shim did not report within the create timeout".into()),
        Err(PipeError::TooLong(_)) => Err("the shim wrote an overlong report".into()),
        Err(PipeError::Read(e)) => Err(format!("read the report pipe: {e}")),
    }
}
