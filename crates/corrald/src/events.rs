//! GetContainerEvents: the life of containers and pod sandboxes as a stream, for kubelet's
//! evented PLEG and `crictl events`.
//!
//! The code that changes a container or sandbox says so through an [`EventSink`] (an unbounded
//! channel: sending never blocks and works from blocking threads). One publisher task reads the
//! changes in order, drops repeats (a container is stopped once, whichever path noticed it),
//! adds the pod's status and its containers' statuses as they are now, and broadcasts the event
//! on a bounded `tokio::sync::broadcast` channel. Every subscriber reads that channel at its own
//! pace: the runtime never waits for one. A subscriber that falls more than [`BUFFER`] events
//! behind has lost events; its stream ends with ResourceExhausted (and a warning in the log), so
//! that it re-subscribes and relists instead of silently missing a change.
//!
//! Exits are learned as they happen: [`ExitWatcher`] has an inotify watch on each live
//! container's state directory and wakes when the shim renames `exit.json` into place; the
//! container's record is then refreshed, which records the exit and emits STOPPED. At start-up
//! every created or running container is checked against its exit file after its watch is set,
//! so exits that happened while corrald was down become STOPPED events too. Those (and sandboxes
//! whose pause died meanwhile) are kept as a start-up backlog that each subscriber connecting in
//! the first [`BACKLOG_WINDOW`] receives first: nobody can be subscribed while corrald is down.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use cri_proto::v1::{ContainerEventResponse, ContainerEventType, PodSandboxStatus};
use futures::Stream;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use corral_process::Pidfd;

use crate::ids::lock;
use crate::live::LiveSet;
use crate::pod::{SandboxRecord, SandboxState};
use crate::Daemon;

/// How many events a subscriber may fall behind before it is dropped.
pub const BUFFER: usize = 1024;

/// How long after start-up a new subscriber still receives the exits found at start-up.
pub const BACKLOG_WINDOW: Duration = Duration::from_secs(120);

/// The name of the exit file the shim writes (renames into place) when the container ends.
const EXIT_FILE: &str = "exit.json";

/// One change to a container or sandbox, as the code that made it reports it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The container id, or the sandbox id for a sandbox's own events.
    pub id: String,
    /// The pod the container belongs to (the sandbox itself for its own events).
    pub pod_sandbox_id: String,
    /// What happened.
    pub kind: ContainerEventType,
    /// When, in nanoseconds since the epoch.
    pub at: i64,
    /// The pod's status taken before it went away (a removed sandbox has none to read later).
    pub pod_status: Option<PodSandboxStatus>,
}

/// Where containers and sandboxes report their changes. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct EventSink(mpsc::UnboundedSender<Change>);

impl EventSink {
    /// A sink and the receiving end the publisher reads.
    pub fn channel() -> (EventSink, mpsc::UnboundedReceiver<Change>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (EventSink(tx), rx)
    }

    /// A container of `pod_sandbox_id` changed.
    pub fn container(&self, id: &str, pod_sandbox_id: &str, kind: ContainerEventType) {
        self.send(Change {
            id: id.to_string(),
            pod_sandbox_id: pod_sandbox_id.to_string(),
            kind,
            at: crate::ids::now_nanos(),
            pod_status: None,
        });
    }

    /// A sandbox changed; `pod_status` is its status when it is about to be removed.
    pub fn sandbox(
        &self,
        id: &str,
        kind: ContainerEventType,
        pod_status: Option<PodSandboxStatus>,
    ) {
        self.send(Change {
            id: id.to_string(),
            pod_sandbox_id: id.to_string(),
            kind,
            at: crate::ids::now_nanos(),
            pod_status,
        });
    }

    fn send(&self, change: Change) {
        if self.0.send(change).is_err() {
            // Only at shutdown, when the publisher has gone.
            tracing::debug!("event publisher gone; change not published");
        }
    }
}

/// A server stream of events.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

/// The published events: subscribe for a stream.
pub struct Events {
    sender: broadcast::Sender<ContainerEventResponse>,
    started: Instant,
    backlog: Mutex<Vec<ContainerEventResponse>>,
}

impl Events {
    /// No events yet: [`start`] begins publishing.
    pub fn new() -> Events {
        Events {
            sender: broadcast::channel(BUFFER).0,
            started: Instant::now(),
            backlog: Mutex::new(Vec::new()),
        }
    }

    /// A new subscriber's stream: the start-up backlog (in the first [`BACKLOG_WINDOW`]), then
    /// every event from now on.
    pub fn subscribe(&self) -> EventStream {
        let receiver = self.sender.subscribe();
        let backlog = if self.started.elapsed() < BACKLOG_WINDOW {
            lock(&self.backlog).clone()
        } else {
            Vec::new()
        };
        let live = futures::stream::unfold(Some(receiver), |receiver| async move {
            let mut receiver = receiver?;
            match receiver.recv().await {
                Ok(event) => Some((Ok(event), Some(receiver))),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "GetContainerEvents subscriber fell {missed} events behind; dropping it"
                    );
                    Some((
                        Err(Status::resource_exhausted(format!(
                            "this subscriber fell behind and missed {missed} events \
                             (buffer {BUFFER}); subscribe again and relist"
                        ))),
                        None,
                    ))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        Box::pin(futures::StreamExt::chain(
            futures::stream::iter(backlog.into_iter().map(Ok)),
            live,
        ))
    }

    pub(crate) fn publish(&self, event: ContainerEventResponse) {
        // An error only means nobody listens now.
        let _ = self.sender.send(event);
    }
}

impl Default for Events {
    fn default() -> Events {
        Events::new()
    }
}

/// Starts publishing: sets up the exit watcher, checks every live container against its exit
/// file (the changes found, and those queued while the daemon started, become the start-up
/// backlog), then spawns the publisher task. Call before serving the CRI.
pub async fn start(
    daemon: &Arc<Daemon>,
    sink: EventSink,
    mut changes: mpsc::UnboundedReceiver<Change>,
) -> anyhow::Result<()> {
    let (exited_tx, exited_rx) = mpsc::unbounded_channel();
    let watcher = start_exit_watcher(exited_tx, daemon.containers.live());
    let mut publisher = Publisher {
        daemon: Arc::downgrade(daemon),
        watcher,
        sink,
        last: HashMap::new(),
    };
    watch_live(daemon, &publisher).await?;
    // Every live container checked for an exit in one pass over one read of the store: one
    // locked refresh after the other made a restarted corrald with hundreds of containers
    // take seconds to serve. Nothing else changes containers before the server starts.
    if let Err(e) = daemon.containers.records(None).await {
        tracing::warn!(error = %e, "checking containers for exits at start-up");
    }
    let backlog = publisher.startup_backlog(&mut changes).await;
    *lock(&daemon.events.backlog) = backlog;
    tokio::spawn(publisher.run(changes, exited_rx));
    Ok(())
}

/// The exit watcher, reporting container ids on `exited`. Without inotify (e.g. the instance
/// limit reached) the runtime still works: exits are then noticed when a container is next
/// read, and the events come later.
fn start_exit_watcher(
    exited: mpsc::UnboundedSender<String>,
    live: Arc<crate::live::LiveSet>,
) -> Option<Arc<ExitWatcher>> {
    match ExitWatcher::start(exited, live) {
        Ok(watcher) => Some(Arc::new(watcher)),
        Err(e) => {
            tracing::error!(error = %e, "cannot watch for container exits; STOPPED events come only when a container is next read");
            None
        }
    }
}

/// Watches the pause process of every ready pod, and the exit file and shim of every live
/// container.
async fn watch_live(daemon: &Daemon, publisher: &Publisher) -> anyhow::Result<()> {
    for sandbox in daemon.pods.records(None)? {
        if sandbox.state == SandboxState::Ready {
            watch_pause(&publisher.sink, &sandbox, &daemon.pods.live());
        }
    }
    let Some(watcher) = &publisher.watcher else {
        return Ok(());
    };
    let mut watched = Vec::new();
    for id in daemon.containers.live_ids()? {
        let dir = daemon.containers.state_dir(&id);
        if watcher.watch(&dir, &id) {
            watched.push((id, dir));
        }
    }
    // Their shims, in one blocking pass (a few small reads each).
    let checker = watcher.clone();
    let shims = tokio::task::spawn_blocking(move || {
        watched
            .into_iter()
            .filter_map(|(id, dir)| Some((checker.verify_shim(&dir, &id)?, id)))
            .collect::<Vec<_>>()
    })
    .await?;
    for (shim, id) in shims {
        watcher.wait_for_shim(shim, id);
    }
    Ok(())
}

/// Turns changes into events.
struct Publisher {
    daemon: Weak<Daemon>,
    watcher: Option<Arc<ExitWatcher>>,
    /// For the pause watchers' reports.
    sink: EventSink,
    /// The last event type published per id: repeats are dropped.
    last: HashMap<String, ContainerEventType>,
}

impl Publisher {
    /// The events of the changes queued so far: found at start-up, they are replayed to new
    /// subscribers for a while.
    async fn startup_backlog(
        &mut self,
        changes: &mut mpsc::UnboundedReceiver<Change>,
    ) -> Vec<ContainerEventResponse> {
        let mut backlog = Vec::new();
        while let Ok(change) = changes.try_recv() {
            if let Some(event) = self.event(change).await {
                backlog.push(event);
            }
        }
        if !backlog.is_empty() {
            tracing::info!(
                events = backlog.len(),
                "changes found at start-up are replayed to new event subscribers for {BACKLOG_WINDOW:?}"
            );
        }
        backlog
    }

    /// Publishes changes and refreshes exited containers until the daemon is gone.
    async fn run(
        mut self,
        mut changes: mpsc::UnboundedReceiver<Change>,
        mut exited: mpsc::UnboundedReceiver<String>,
    ) {
        // Closed from the start when there is no watcher; then only changes are read.
        let mut exits_open = self.watcher.is_some();
        loop {
            tokio::select! {
                change = changes.recv() => {
                    let Some(change) = change else { break };
                    let Some(daemon) = self.daemon.upgrade() else { break };
                    if let Some(event) = self.event(change).await {
                        daemon.events.publish(event);
                    }
                }
                id = exited.recv(), if exits_open => {
                    let Some(id) = id else {
                        exits_open = false;
                        continue;
                    };
                    let Some(daemon) = self.daemon.upgrade() else { break };
                    // Refreshing the record takes the container's lock and records the exit,
                    // which reports STOPPED; it runs apart so a busy container delays no other.
                    tokio::spawn(async move {
                        if let Err(e) = daemon.containers.record(&id).await {
                            tracing::debug!(container_id = %id, error = %e, "refreshing an exited container");
                        }
                    });
                }
            }
        }
    }

    async fn event(&mut self, change: Change) -> Option<ContainerEventResponse> {
        if self.last.get(&change.id) == Some(&change.kind) {
            return None;
        }
        let daemon = self.daemon.upgrade()?;
        let is_sandbox = change.id == change.pod_sandbox_id;
        if let (ContainerEventType::ContainerCreatedEvent, false, Some(watcher)) =
            (change.kind, is_sandbox, &self.watcher)
        {
            // Watch first, then look: an exit before the watch is seen by the refresh below.
            let dir = daemon.containers.state_dir(&change.id);
            if watcher.watch(&dir, &change.id) {
                let (checker, id) = (watcher.clone(), change.id.clone());
                let shim =
                    tokio::task::spawn_blocking(move || checker.verify_shim(&dir, &id)).await;
                if let Ok(Some(shim)) = shim {
                    watcher.wait_for_shim(shim, change.id.clone());
                }
            } else if dir.join(EXIT_FILE).exists() {
                watcher.notify(&change.id);
            }
        }
        if change.kind == ContainerEventType::ContainerStartedEvent && is_sandbox {
            if let Ok(sandbox) = daemon.pods.sandbox_async(&change.id).await {
                watch_pause(&self.sink, &sandbox, &daemon.pods.live());
            }
        }
        if change.kind == ContainerEventType::ContainerDeletedEvent {
            self.last.remove(&change.id);
        } else {
            self.last.insert(change.id.clone(), change.kind);
        }
        let pod_sandbox_status = match change.pod_status {
            Some(status) => Some(status),
            None => match daemon.pods.status(&change.pod_sandbox_id, false).await {
                Ok(response) => response.status,
                Err(e) => {
                    tracing::warn!(pod_id = %change.pod_sandbox_id, error = %e,
                        "no pod status for a {:?} event of {}", change.kind, change.id);
                    None
                }
            },
        };
        let containers_statuses = daemon
            .containers
            .statuses_in_pod(&change.pod_sandbox_id)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(pod_id = %change.pod_sandbox_id, error = %e, "container statuses for an event");
                Vec::new()
            });
        Some(ContainerEventResponse {
            container_id: change.id,
            container_event_type: change.kind as i32,
            created_at: change.at,
            pod_sandbox_status,
            containers_statuses,
        })
    }
}

/// Reports the sandbox STOPPED when its pause process exits, whoever ends it: a pidfd of the
/// pause (`pidfd_open`, Linux 5.3) becomes readable when it exits, and tokio waits on it. While
/// it waits, the pod is verified in `live` (its pause need not be looked at by lists).
fn watch_pause(sink: &EventSink, sandbox: &SandboxRecord, live: &Arc<LiveSet>) {
    let Some(pause) = sandbox.pause else { return };
    let pidfd = match corral_process::Pidfd::open(pause.pid) {
        Ok(Some(pidfd)) => pidfd,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(pod_id = %sandbox.id, pid = pause.pid, error = %e, "pidfd_open of the pause");
            return;
        }
    };
    let (sink, sandbox, live) = (sink.clone(), sandbox.clone(), live.clone());
    tokio::spawn(async move {
        // Opened after the pid was recorded: it may be another process by now (a /proc read,
        // so not on the worker).
        let (checked, marks) = (sandbox.clone(), live.clone());
        let alive = tokio::task::spawn_blocking(move || {
            // Verified only if still alive after the epoch is taken; alive either way is
            // what the watch needs (a pod left unverified is read the slow way).
            marks.verify_checked(&checked.id, pause.pid, || checked.pause_alive())
                || checked.pause_alive()
        })
        .await
        .unwrap_or(false);
        if alive {
            let waited = pidfd.exited().await;
            live.forget(&sandbox.id);
            if let Err(e) = waited {
                tracing::warn!(pod_id = %sandbox.id, error = %e, "cannot wait on the pause's pidfd");
                return;
            }
        }
        sink.sandbox(&sandbox.id, ContainerEventType::ContainerStoppedEvent, None);
    });
}

/// Wakes corrald when a container's shim records its exit: an inotify watch per live container
/// state directory, read by one thread (nix's inotify: no extra crate for a few syscalls), and
/// a pidfd per shim awaited on the reactor (a shim that dies without writing its exit). It
/// feeds [`LiveSet`]: a container both are watching and that has neither exited nor lost
/// its shim is verified, so that lists need not look at its files.
struct ExitWatcher {
    inotify: Arc<Inotify>,
    /// Watch descriptor → container id.
    watches: Arc<Mutex<HashMap<i32, String>>>,
    exited: mpsc::UnboundedSender<String>,
    live: Arc<LiveSet>,
}

impl ExitWatcher {
    fn start(
        exited: mpsc::UnboundedSender<String>,
        live: Arc<LiveSet>,
    ) -> anyhow::Result<ExitWatcher> {
        let inotify = Arc::new(
            Inotify::init(InitFlags::IN_CLOEXEC)
                .map_err(|e| anyhow::anyhow!("inotify_init for container exits: {e}"))?,
        );
        let watches: Arc<Mutex<HashMap<i32, String>>> = Arc::default();
        let (thread_inotify, thread_watches, thread_exited, thread_live) = (
            inotify.clone(),
            watches.clone(),
            exited.clone(),
            live.clone(),
        );
        std::thread::Builder::new()
            .name("exit-watcher".into())
            .spawn(move || {
                watch_loop(
                    &thread_inotify,
                    &thread_watches,
                    &thread_exited,
                    &thread_live,
                );
                // No more exits are seen: lists must look at every container again.
                thread_live.disable();
            })?;
        Ok(ExitWatcher {
            inotify,
            watches,
            exited,
            live,
        })
    }

    /// Watches a container's state directory for its exit file; whether the watch is set.
    fn watch(&self, dir: &Path, id: &str) -> bool {
        let flags =
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_ONLYDIR;
        match self.inotify.add_watch(dir, flags) {
            Ok(wd) => {
                lock(&self.watches).insert(wd.as_raw(), id.to_string());
                true
            }
            Err(e) => {
                tracing::warn!(
                    container_id = %id, dir = %dir.display(), error = %e,
                    "cannot watch for the container's exit; it is noticed at the next status read"
                );
                false
            }
        }
    }

    /// Treats `id` as exited (its exit file was there before the watch, or its shim died).
    fn notify(&self, id: &str) {
        self.live.forget(id);
        let _ = self.exited.send(id.to_string());
    }

    /// For a container whose state directory is watched: a pidfd on its shim, after which the
    /// container is verified if it has not exited. `None` (after notifying, so that the record
    /// is refreshed) when it has exited or its shim is gone. Blocks (small reads).
    fn verify_shim(&self, dir: &Path, id: &str) -> Option<Pidfd> {
        let shim = corral_runtime::state_dir::read_shim_pid(dir)
            .ok()
            .flatten()
            .and_then(|identity| Pidfd::open_identity(identity).ok().flatten());
        // Looked at after the watch and the pidfd: an exit from now on is signalled (a shim
        // that dies meanwhile makes the pidfd readable, and its wait then forgets the mark).
        let not_exited = || !dir.join(EXIT_FILE).exists();
        match shim {
            Some(pidfd) if self.live.verify_checked(id, pidfd.pid(), not_exited) => Some(pidfd),
            Some(pidfd) if not_exited() => {
                // Not verified (other objects kept changing): still watched, read the slow way.
                Some(pidfd)
            }
            _ => {
                self.notify(id);
                None
            }
        }
    }

    /// Waits on the reactor for the shim's exit; then the container is forgotten and refreshed
    /// (which records its exit, from the exit file or as lost).
    fn wait_for_shim(self: &Arc<Self>, shim: Pidfd, id: String) {
        let watcher = self.clone();
        tokio::spawn(async move {
            if let Err(e) = shim.exited().await {
                tracing::warn!(container_id = %id, error = %e, "cannot wait on the shim's pidfd");
            }
            watcher.notify(&id);
        });
    }
}

fn watch_loop(
    inotify: &Inotify,
    watches: &Mutex<HashMap<i32, String>>,
    exited: &mpsc::UnboundedSender<String>,
    live: &LiveSet,
) {
    loop {
        // Blocks until there are events: no polling.
        let events = match inotify.read_events() {
            Ok(events) => events,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, fd = ?inotify.as_fd(), "reading inotify events; container exits are now only noticed when read");
                return;
            }
        };
        for event in events {
            let wd = event.wd.as_raw();
            if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                // The directory went (container removed).
                if let Some(id) = lock(watches).remove(&wd) {
                    live.forget(&id);
                }
                continue;
            }
            if event.name.as_deref() != Some(std::ffi::OsStr::new(EXIT_FILE)) {
                continue;
            }
            let Some(id) = lock(watches).get(&wd).cloned() else {
                continue;
            };
            live.forget(&id);
            if exited.send(id).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn event(id: &str) -> ContainerEventResponse {
        ContainerEventResponse {
            container_id: id.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_blocks_nobody_and_is_dropped_with_a_clear_error() {
        let events = Events::new();
        let mut slow = events.subscribe();
        let mut fast = events.subscribe();
        for i in 0..BUFFER + 5 {
            events.publish(event(&i.to_string()));
            // The fast one keeps up.
            let got = fast.next().await.unwrap().unwrap();
            assert_eq!(got.container_id, i.to_string());
        }
        let error = slow.next().await.unwrap().unwrap_err();
        assert_eq!(error.code(), tonic::Code::ResourceExhausted);
        assert!(error.message().contains("subscribe again"), "{error}");
        assert!(slow.next().await.is_none(), "the slow stream ends");
    }

    #[tokio::test]
    async fn new_subscribers_get_the_start_up_backlog_first() {
        let events = Events::new();
        *lock(&events.backlog) = vec![event("while-down")];
        let mut stream = events.subscribe();
        events.publish(event("live"));
        assert_eq!(
            stream.next().await.unwrap().unwrap().container_id,
            "while-down"
        );
        assert_eq!(stream.next().await.unwrap().unwrap().container_id, "live");
    }

    #[test]
    fn the_watcher_sees_an_exit_file_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let live = Arc::new(LiveSet::default());
        let watcher = ExitWatcher::start(tx, live.clone()).unwrap();
        assert!(watcher.watch(dir.path(), "c1"));
        assert!(live.verify("c1", 42, live.epoch()));
        std::fs::write(dir.path().join("other"), "x").unwrap();
        std::fs::write(dir.path().join(".exit.json.tmp"), "{}").unwrap();
        std::fs::rename(
            dir.path().join(".exit.json.tmp"),
            dir.path().join(EXIT_FILE),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = loop {
            match rx.try_recv() {
                Ok(id) => break id,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("no exit notification: {e}"),
            }
        };
        assert_eq!(got, "c1");
        assert!(
            !live.is_verified("c1", 42),
            "the exit forgets the verified container"
        );
    }

    #[test]
    fn a_container_is_verified_with_its_shim_and_forgotten_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let live = Arc::new(LiveSet::default());
        let watcher = ExitWatcher::start(tx, live.clone()).unwrap();
        assert!(watcher.watch(dir.path(), "c1"));
        // This test process stands in for the shim.
        let me = corral_process::ProcessIdentity::current().unwrap();
        std::fs::write(dir.path().join("shim.pid"), me.to_line()).unwrap();
        let shim = watcher.verify_shim(dir.path(), "c1").unwrap();
        assert_eq!(shim.pid(), me.pid);
        assert!(live.is_verified("c1", me.pid));
        assert!(rx.try_recv().is_err(), "a live container is not refreshed");

        // An exit file already there: not verified, and refreshed.
        live.forget("c1");
        std::fs::write(dir.path().join(EXIT_FILE), "{}").unwrap();
        assert!(watcher.verify_shim(dir.path(), "c1").is_none());
        assert!(!live.is_verified("c1", me.pid));
        assert_eq!(rx.try_recv().unwrap(), "c1");

        // A shim that is gone (its start time is not the one recorded): the same.
        std::fs::remove_file(dir.path().join(EXIT_FILE)).unwrap();
        let gone = corral_process::ProcessIdentity {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        std::fs::write(dir.path().join("shim.pid"), gone.to_line()).unwrap();
        assert!(watcher.verify_shim(dir.path(), "c1").is_none());
        assert!(!live.is_verified("c1", me.pid));
    }
}
