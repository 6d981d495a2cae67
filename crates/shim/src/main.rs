//! `corral-shim`: one per container, as conmon is for CRI-O.
//!
//! corrald runs this binary as a *launcher* with the flags of `corral_runtime::ShimConfig`. The
//! launcher forks the shim proper and exits once the shim reports on `<runtime> create`, printing
//! one line (`corral_runtime::LaunchReport`). The shim starts its own session, becomes the
//! child subreaper of the container, holds its stdio (pipes, or a terminal's master received on a
//! console socket), writes its CRI log, serves attach clients and control requests, reaps it,
//! records its exit in `exit.json` and exits. It never talks to corrald, so corrald may restart at
//! any time. The files of the state directory are described in `corral_runtime`'s docs; the
//! shim's own diagnostics go to `shim.log` there.

mod args;
mod connections;
mod create;
mod cri_log;
mod diag;
mod launcher;
mod leftovers;
mod oom;
mod shim;
mod supervisor;
mod warm;

use std::process::ExitCode;

use args::ShimArgs;
use corral_runtime::LaunchReport;

fn main() -> ExitCode {
    let args = match ShimArgs::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(error) => {
            println!(
                "{}",
                LaunchReport::ShimFailed(error.to_string())
                    .to_line()
                    .trim_end()
            );
            eprintln!("corral-shim: {error}\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    if args.help {
        println!("{}", args::USAGE);
        return ExitCode::SUCCESS;
    }
    launcher::launch(&args)
}
