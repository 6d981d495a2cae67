//! The network config of a conf dir, loaded once and again only after the directory changed:
//! an inotify watch on the directory (nix's inotify: a few syscalls, no extra crate) says when,
//! so a caller that asks on every request (CRI Status, RunPodSandbox) costs one non-blocking
//! read instead of reading and parsing every file of the directory.
//!
//! A change to the target of a symlinked config file is not seen (inotify watches the
//! directory's own entries); such a setup is picked up at the next change in the directory.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::config::{CniConfig, NetworkConfigList};
use crate::error::Result;

/// A cached [`CniConfig::load`] of one conf dir.
pub struct ConfigWatch {
    dir: PathBuf,
    state: Mutex<State>,
}

struct State {
    /// `None` while the directory cannot be watched (missing): every load then reads it.
    inotify: Option<Inotify>,
    /// The last successful load; `None` when there is none to trust.
    cached: Option<Option<NetworkConfigList>>,
}

impl ConfigWatch {
    /// Watches `dir` (which may not exist yet).
    pub fn new(dir: &Path) -> ConfigWatch {
        ConfigWatch {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                inotify: None,
                cached: None,
            }),
        }
    }

    /// The conf dir watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What [`CniConfig::load`] would return now; reads the directory only when it changed
    /// since the last load (or cannot be watched). Errors are not cached.
    pub fn load(&self) -> Result<Option<NetworkConfigList>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.inotify.is_none() {
            state.inotify = watch(&self.dir);
            state.cached = None;
        }
        if changed(&mut state.inotify) {
            state.cached = None;
        }
        if let Some(cached) = &state.cached {
            return Ok(cached.clone());
        }
        let loaded = CniConfig::load(&self.dir)?;
        if state.inotify.is_some() {
            state.cached = Some(loaded.clone());
        }
        Ok(loaded)
    }
}

/// An inotify watch on every change of `dir`'s entries; `None` when it cannot be made.
fn watch(dir: &Path) -> Option<Inotify> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    let flags = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF;
    inotify.add_watch(dir, flags).ok()?;
    Some(inotify)
}

/// Drains the watch's events: whether anything changed. A directory that went away (or an
/// unreadable watch) drops the watch, so the next load looks again.
fn changed(inotify: &mut Option<Inotify>) -> bool {
    let Some(watch) = inotify else {
        return true;
    };
    let mut changed = false;
    loop {
        match watch.read_events() {
            Ok(events) if events.is_empty() => return changed,
            Ok(events) => {
                changed = true;
                let gone = events.iter().any(|e| {
                    e.mask.intersects(
                        AddWatchFlags::IN_DELETE_SELF
                            | AddWatchFlags::IN_MOVE_SELF
                            | AddWatchFlags::IN_IGNORED,
                    )
                });
                if gone {
                    *inotify = None;
                    return true;
                }
            }
            Err(nix::errno::Errno::EAGAIN) => return changed,
            Err(_) => {
                *inotify = None;
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn conflist(name: &str) -> String {
        format!(r#"{{"cniVersion":"1.0.0","name":"{name}","plugins":[{{"type":"bridge"}}]}}"#)
    }

    #[test]
    fn reloads_after_a_change_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let watch = ConfigWatch::new(dir.path());
        assert_eq!(watch.load().unwrap(), None);

        std::fs::write(dir.path().join("10-a.conflist"), conflist("a")).unwrap();
        assert_eq!(watch.load().unwrap().unwrap().name(), "a");

        // Unchanged: the cache answers.
        assert_eq!(watch.load().unwrap().unwrap().name(), "a");

        std::fs::write(dir.path().join("10-a.conflist"), conflist("b")).unwrap();
        assert_eq!(watch.load().unwrap().unwrap().name(), "b");

        std::fs::remove_file(dir.path().join("10-a.conflist")).unwrap();
        assert_eq!(watch.load().unwrap(), None);
    }

    #[test]
    fn a_directory_made_later_is_watched_then() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("net.d");
        let watch = ConfigWatch::new(&dir);
        assert_eq!(watch.load().unwrap(), None);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("10-a.conflist"), conflist("a")).unwrap();
        assert_eq!(watch.load().unwrap().unwrap().name(), "a");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(watch.load().unwrap(), None);
    }
}
