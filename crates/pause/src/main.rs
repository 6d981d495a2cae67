//! `corral-pause`: the process that holds a pod's namespaces.
//!
//! corrald runs this binary as a *launcher*. The launcher unshares the requested namespaces, sets the
//! hostname and sysctls, and forks the long-lived pause process (which becomes PID 1 when a PID
//! namespace was asked for), then exits, so the pause is not corrald's child.
//!
//! Protocol on stdout, read to end of file by the caller: `pid <PID>\nready\n` and exit status 0 once
//! the pause is fully set up, or `error: <what failed>\n` and a non-zero exit status.

mod args;
mod launcher;
mod pause;

use std::io::Write;
use std::process::ExitCode;

use args::PauseArgs;

fn main() -> ExitCode {
    let args = match PauseArgs::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(error) => return fail(&error.to_string(), 2),
    };
    if args.help {
        println!("{}", args::USAGE);
        return ExitCode::SUCCESS;
    }
    let pid = match launcher::launch(&args) {
        Ok(pid) => pid,
        Err(error) => return fail(&error, 1),
    };
    let mut stdout = std::io::stdout().lock();
    match write!(stdout, "pid {pid}\nready\n").and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Nobody learns the pause's pid, so nobody would ever stop it.
            launcher::abandon(pid);
            fail(&format!("report pid {pid}: {error}"), 1)
        }
    }
}

/// Reports a failure on stdout (for the caller) and stderr (for a person).
fn fail(message: &str, code: u8) -> ExitCode {
    let _ = writeln!(std::io::stdout(), "error: {message}");
    let _ = writeln!(std::io::stderr(), "corral-pause: error: {message}");
    ExitCode::from(code)
}
