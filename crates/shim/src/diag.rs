//! The shim's own diagnostics: lines on its stderr, which is `shim.log` in the state directory.

use std::fmt;
use std::io::Write;
use std::time::SystemTime;

use crate::cri_log::rfc3339_nano;

/// Writes one diagnostic line: `<timestamp> corral-shim[<pid>]: <message>`.
pub fn write(message: fmt::Arguments<'_>) {
    // Nothing is left to tell if even the diagnostics cannot be written.
    let _ = writeln!(
        std::io::stderr(),
        "{} corral-shim[{}]: {message}",
        rfc3339_nano(SystemTime::now()),
        std::process::id()
    );
}

/// Writes a diagnostic line to `shim.log`, `format!`-style.
macro_rules! diag {
    ($($arg:tt)*) => {
        $crate::diag::write(format_args!($($arg)*))
    };
}

pub(crate) use diag;
