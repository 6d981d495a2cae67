//! The steps of one RunPodSandbox, CreateContainer or StartContainer and how long each took:
//! every step runs in a tracing span of its own (`step`, with the step's name), and the steps'
//! start offsets and durations are logged once with the pod or container
//! (`phases=step@start+took,...`, milliseconds), which `corral-bench pods --phases` reads back
//! into tables. Steps may run on two threads at once (the CNI ADD overlaps the pod's own work),
//! so each carries its start as well as its length.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One finished step.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Step {
    name: &'static str,
    /// From the start of the RunPodSandbox to the start of the step.
    start: Duration,
    took: Duration,
}

/// The steps of one call, timed from its start.
#[derive(Debug)]
pub(crate) struct Phases {
    started: Instant,
    steps: Mutex<Vec<Step>>,
}

impl Phases {
    pub fn new() -> Phases {
        Phases {
            started: Instant::now(),
            steps: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` as the step `name`, in a span of its own under `parent`, and records its timing.
    pub fn step<T>(&self, parent: &tracing::Span, name: &'static str, f: impl FnOnce() -> T) -> T {
        let _span = tracing::debug_span!(parent: parent, "step", step = name).entered();
        let begun = Instant::now();
        let out = f();
        let step = Step {
            name,
            start: begun.duration_since(self.started),
            took: begun.elapsed(),
        };
        crate::ids::lock(&self.steps).push(step);
        out
    }

    /// Records `name`, a part of the step just run that another process timed (`took`), as
    /// ending now.
    pub fn record_ending_now(&self, name: &'static str, took: Duration) {
        let start = self.started.elapsed().saturating_sub(took);
        crate::ids::lock(&self.steps).push(Step { name, start, took });
    }

    /// `step@start+took,...` in milliseconds, in the order the steps started.
    pub fn summary(&self) -> String {
        let mut steps = crate::ids::lock(&self.steps).clone();
        steps.sort_by_key(|s| s.start);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        steps
            .iter()
            .map(|s| format!("{}@{:.2}+{:.2}", s.name, ms(s.start), ms(s.took)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_listed_in_the_order_they_started() {
        let phases = Phases::new();
        let span = tracing::Span::none();
        let answer = phases.step(&span, "first", || 42);
        assert_eq!(answer, 42);
        std::thread::scope(|s| {
            s.spawn(|| phases.step(&span, "second", || ()));
        });
        let summary = phases.summary();
        let names: Vec<&str> = summary
            .split(',')
            .filter_map(|s| s.split('@').next())
            .collect();
        assert_eq!(names, ["first", "second"]);
        assert!(
            summary
                .split(',')
                .all(|s| s.contains('@') && s.contains('+')),
            "{summary}"
        );
    }
}
