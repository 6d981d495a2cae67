//! Which containers and pods are known to be still alive without looking at their files or
//! `/proc`: ListContainers, ListPodSandbox and the stats calls skip the exit-file and shim
//! checks of verified containers and the pause check of verified pods. kubelet relists every
//! second; three small file reads per container (exit file, shim pid file, the shim's `/proc`
//! stat) and one `/proc` read per pod were most of what a list of 500 of each cost.
//!
//! The watchers of [`crate::events`] verify and forget. A container is verified once both of
//! its exit signals are watched — the inotify watch on its state directory (the shim renames
//! `exit.json` into place) and a pidfd on its shim (a shim that dies without writing the file)
//! — and, after that, its exit file is absent and its shim alive; a pod once a pidfd on its
//! pause is held and the pause is still the one recorded. Any exit signal *forgets* the object
//! again, as does a container's state directory going away; a forgotten object is checked the
//! slow way until it is verified anew (which, for one that has ended, is never).
//!
//! A verification races with the signals: an exit may land between the check and the mark.
//! Every forget bumps an epoch; a verification only counts when no forget happened since it
//! took the epoch, so a mark can never outlive the exit it missed. When a watcher itself stops,
//! [`LiveSet::disable`] turns the set off for good and every list checks again.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ids::lock;

/// How often [`LiveSet::verify_checked`] tries when other objects are forgotten meanwhile.
const VERIFY_ATTEMPTS: usize = 4;

/// The verified containers (by their shim) or pods (by their pause).
#[derive(Debug, Default)]
pub struct LiveSet {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Container or pod id → the pid of the shim or pause it was verified with.
    verified: HashMap<String, i32>,
    /// Bumped by every forget.
    epoch: u64,
    /// Set when the exit signals can no longer be trusted to arrive.
    disabled: bool,
}

impl LiveSet {
    /// Taken before a verification's checks; handed to [`LiveSet::verify`].
    pub fn epoch(&self) -> u64 {
        lock(&self.inner).epoch
    }

    /// Marks `id` (watched through the process `pid`: its shim or pause) as verified, if
    /// nothing was forgotten since `epoch` was taken; returns whether it was marked.
    pub fn verify(&self, id: &str, pid: i32, epoch: u64) -> bool {
        let mut inner = lock(&self.inner);
        if inner.disabled || inner.epoch != epoch {
            return false;
        }
        inner.verified.insert(id.to_string(), pid);
        true
    }

    /// Verifies `id` (watched through `pid`) if `still_alive` says so: the check runs after the
    /// epoch is taken and is repeated (a few times) when a forget of any object landed
    /// meanwhile, so that churn elsewhere does not leave `id` unverified for good. Returns
    /// whether `id` was marked.
    pub fn verify_checked(&self, id: &str, pid: i32, still_alive: impl Fn() -> bool) -> bool {
        for _ in 0..VERIFY_ATTEMPTS {
            let epoch = self.epoch();
            if !still_alive() {
                return false;
            }
            if self.verify(id, pid, epoch) {
                return true;
            }
            if lock(&self.inner).disabled {
                return false;
            }
        }
        false
    }

    /// Whether `id`, whose record names the process `pid`, is verified: no exit signal since,
    /// so its recorded state stands.
    pub fn is_verified(&self, id: &str, pid: i32) -> bool {
        let inner = lock(&self.inner);
        !inner.disabled && inner.verified.get(id) == Some(&pid)
    }

    /// [`LiveSet::is_verified`] of many objects under one lock, in order: `None` (no process
    /// recorded) is not verified. A list asks for every record at once; a lock and a lookup
    /// per record were a sixth of what it cost.
    pub fn verified_among<'a>(
        &self,
        objects: impl IntoIterator<Item = Option<(&'a str, i32)>>,
    ) -> Vec<bool> {
        let inner = lock(&self.inner);
        objects
            .into_iter()
            .map(|object| {
                object.is_some_and(|(id, pid)| {
                    !inner.disabled && inner.verified.get(id) == Some(&pid)
                })
            })
            .collect()
    }

    /// `id` exited, its shim or pause died or its state directory went: check it again when
    /// read.
    pub fn forget(&self, id: &str) {
        let mut inner = lock(&self.inner);
        inner.verified.remove(id);
        inner.epoch = inner.epoch.wrapping_add(1);
    }

    /// The exit signals stopped: nothing is verified any more, ever.
    pub fn disable(&self) {
        let mut inner = lock(&self.inner);
        inner.disabled = true;
        inner.verified.clear();
        inner.epoch = inner.epoch.wrapping_add(1);
    }

    /// How many objects are verified.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.inner).verified.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_container_is_trusted_only_with_its_own_shim() {
        let live = LiveSet::default();
        assert!(!live.is_verified("c1", 10));
        assert!(live.verify("c1", 10, live.epoch()));
        assert!(live.is_verified("c1", 10));
        // The record names another shim (the container was restored or recreated).
        assert!(!live.is_verified("c1", 11));
        assert!(!live.is_verified("c2", 10));
    }

    #[test]
    fn an_exit_or_shim_death_forgets_the_container() {
        let live = LiveSet::default();
        live.verify("c1", 10, live.epoch());
        live.verify("c2", 20, live.epoch());
        live.forget("c1");
        assert!(!live.is_verified("c1", 10));
        assert!(
            live.is_verified("c2", 20),
            "only the exited one is forgotten"
        );
        assert_eq!(live.len(), 1);
    }

    #[test]
    fn a_verification_that_raced_with_a_forget_does_not_count() {
        let live = LiveSet::default();
        let epoch = live.epoch();
        // The exit landed after the checks found none, before the mark.
        live.forget("c1");
        assert!(!live.verify("c1", 10, epoch));
        assert!(!live.is_verified("c1", 10));
        // A verification started after it counts.
        assert!(live.verify("c1", 10, live.epoch()));
        assert!(live.is_verified("c1", 10));
    }

    #[test]
    fn a_checked_verification_retries_after_a_forget_elsewhere_and_rechecks() {
        let live = LiveSet::default();
        let checks = std::cell::Cell::new(0);
        // Another container exits during the first check: the second attempt counts.
        let verified = live.verify_checked("c1", 10, || {
            checks.set(checks.get() + 1);
            if checks.get() == 1 {
                live.forget("other");
            }
            true
        });
        assert!(verified);
        assert_eq!(checks.get(), 2);
        assert!(live.is_verified("c1", 10));
        // A check that finds the object gone marks nothing.
        assert!(!live.verify_checked("c2", 20, || false));
        assert!(!live.is_verified("c2", 20));
        // Forgets on every attempt: given up, not marked.
        assert!(!live.verify_checked("c3", 30, || {
            live.forget("other");
            true
        }));
        assert!(!live.is_verified("c3", 30));
    }

    #[test]
    fn a_removed_and_recreated_id_must_be_verified_again() {
        let live = LiveSet::default();
        live.verify("c1", 10, live.epoch());
        // Its state directory went (RemoveContainer).
        live.forget("c1");
        assert!(!live.is_verified("c1", 10), "even with the same shim pid");
    }

    #[test]
    fn many_are_answered_at_once_like_one_by_one() {
        let live = LiveSet::default();
        live.verify("c1", 10, live.epoch());
        live.verify("c2", 20, live.epoch());
        let asked = [
            Some(("c1", 10)),
            None,
            Some(("c2", 21)),
            Some(("c3", 30)),
            Some(("c2", 20)),
        ];
        let one_by_one: Vec<bool> = asked
            .iter()
            .map(|o| o.is_some_and(|(id, pid)| live.is_verified(id, pid)))
            .collect();
        assert_eq!(live.verified_among(asked), one_by_one);
        assert_eq!(one_by_one, [true, false, false, false, true]);
        live.disable();
        assert_eq!(live.verified_among([Some(("c1", 10))]), [false]);
    }

    #[test]
    fn a_disabled_set_trusts_nothing() {
        let live = LiveSet::default();
        live.verify("c1", 10, live.epoch());
        live.disable();
        assert!(!live.is_verified("c1", 10));
        assert!(!live.verify("c2", 20, live.epoch()));
        assert_eq!(live.len(), 0);
    }
}
