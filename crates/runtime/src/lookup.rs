//! Names that the runtime resolves for its callers: a container's stop signal as an image or a
//! CRI config spells it, and a runtime binary named in the configuration.

use std::path::{Path, PathBuf};
use std::str::FromStr;

/// `SIGTERM`, `TERM`, `sigterm`, `15` → the signal number; `None` for no such signal.
pub fn parse_signal(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return Some(n);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&full)
        .ok()
        .map(|s| s as i32)
}

/// An absolute path for a runtime binary: as given when it has a `/` (if it exists), else the
/// first file of that name in a `PATH` directory.
pub fn on_path(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() > 1 {
        return binary.exists().then(|| binary.to_path_buf());
    }
    find_in(&std::env::var_os("PATH")?.to_string_lossy(), binary)
}

fn find_in(path_var: &str, binary: &Path) -> Option<PathBuf> {
    path_var
        .split(':')
        .map(|dir| Path::new(dir).join(binary))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("sigquit"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("NOPE"), None);
    }

    #[test]
    fn binaries_by_path_or_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let runc = dir.path().join("runc");
        std::fs::write(&runc, "").unwrap();
        assert_eq!(on_path(&runc), Some(runc.clone()));
        assert_eq!(on_path(&dir.path().join("crun")), None);
        let path_var = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(find_in(&path_var, Path::new("runc")), Some(runc));
        assert_eq!(find_in(&path_var, Path::new("crun")), None);
    }
}
