//! GetContainerEvents against a real corrald: the events of a container's and a pod's life in
//! order with the pod's statuses, an exit without StopContainer noticed as it happens, exits
//! while corrald was down reported after its restart, a shim killed before it could record the
//! exit, several subscribers, and a subscriber that never reads holding up nobody.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use corral_e2e::cri::{self, container_env as env, ContainerEnv as Env, Rt};
use cri_proto::v1::*;
use tonic::Streaming;

const POD: i32 = NamespaceMode::Pod as i32;
const CONTAINER: i32 = NamespaceMode::Container as i32;

const CREATED: i32 = ContainerEventType::ContainerCreatedEvent as i32;
const STARTED: i32 = ContainerEventType::ContainerStartedEvent as i32;
const STOPPED: i32 = ContainerEventType::ContainerStoppedEvent as i32;
const DELETED: i32 = ContainerEventType::ContainerDeletedEvent as i32;

/// Generous: the machine is shared and noisy. The latency itself is measured by corral-bench.
const WAIT: Duration = Duration::from_secs(20);

async fn subscribe(rt: &mut Rt) -> Streaming<ContainerEventResponse> {
    rt.get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner()
}

/// The next event about `id` (others are skipped), or a panic after [`WAIT`].
async fn next_of(
    events: &mut Streaming<ContainerEventResponse>,
    id: &str,
) -> ContainerEventResponse {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.message())
            .await
            .unwrap_or_else(|_| panic!("no event about {id} within {WAIT:?}"))
            .expect("event stream")
            .expect("event stream ended");
        if event.container_id == id {
            return event;
        }
    }
}

fn kind(t: i32) -> String {
    format!("{:?}", ContainerEventType::try_from(t))
}

async fn expect(
    events: &mut Streaming<ContainerEventResponse>,
    id: &str,
    want: i32,
) -> ContainerEventResponse {
    let event = next_of(events, id).await;
    assert_eq!(
        kind(event.container_event_type),
        kind(want),
        "event of {id}: {event:?}"
    );
    assert!(event.created_at > 0, "created_at set: {event:?}");
    event
}

fn container_state(event: &ContainerEventResponse, id: &str) -> Option<i32> {
    event
        .containers_statuses
        .iter()
        .find(|s| s.id == id)
        .map(|s| s.state)
}

async fn pod(env: &mut Env, name: &str) -> (String, PodSandboxConfig) {
    env.pod_with(name, (POD, CONTAINER, POD), |_| {}).await
}

#[tokio::test]
async fn a_pods_and_a_containers_life_in_order_with_the_pods_statuses() {
    let Some(mut env) = env().await else { return };
    let mut events = subscribe(&mut env.rt).await;
    let (pod_id, config) = pod(&mut env, "ev-life").await;

    let created = expect(&mut events, &pod_id, CREATED).await;
    let status = created.pod_sandbox_status.as_ref().expect("pod status");
    assert_eq!(status.id, pod_id);
    assert_eq!(status.metadata.as_ref().unwrap().name, "ev-life");
    assert!(!status.metadata.as_ref().unwrap().uid.is_empty());
    expect(&mut events, &pod_id, STARTED).await;

    let cfg = cri::container_config("sleeper", &env.image, &["sleep", "3600"]);
    let id = cri::run(&mut env.rt, &pod_id, &config, cfg).await;
    let created = expect(&mut events, &id, CREATED).await;
    assert_eq!(created.pod_sandbox_status.as_ref().unwrap().id, pod_id);
    assert!(
        container_state(&created, &id).is_some(),
        "the pod's container statuses include the new container: {created:?}"
    );
    let started = expect(&mut events, &id, STARTED).await;
    assert_eq!(
        container_state(&started, &id),
        Some(ContainerState::ContainerRunning as i32)
    );

    cri::stop(&mut env.rt, &id, 0).await;
    let stopped = expect(&mut events, &id, STOPPED).await;
    assert_eq!(
        container_state(&stopped, &id),
        Some(ContainerState::ContainerExited as i32)
    );
    env.rt
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("RemoveContainer");
    let deleted = expect(&mut events, &id, DELETED).await;
    assert_eq!(container_state(&deleted, &id), None, "gone from the pod");

    env.rt
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .expect("StopPodSandbox");
    let stopped = expect(&mut events, &pod_id, STOPPED).await;
    assert_eq!(
        stopped.pod_sandbox_status.as_ref().unwrap().state,
        PodSandboxState::SandboxNotready as i32
    );
    env.rt
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .expect("RemovePodSandbox");
    let deleted = expect(&mut events, &pod_id, DELETED).await;
    assert_eq!(
        deleted.pod_sandbox_status.as_ref().expect("last status").id,
        pod_id,
        "a removed pod's event carries its last status"
    );
}

#[tokio::test]
async fn an_exit_without_stop_container_is_reported_as_it_happens() {
    let Some(mut env) = env().await else { return };
    let (pod_id, config) = pod(&mut env, "ev-exit").await;
    let mut events = subscribe(&mut env.rt).await;
    let cfg = cri::container_config("short", &env.image, &["sh", "-c", "sleep 1; exit 3"]);
    let id = cri::run(&mut env.rt, &pod_id, &config, cfg).await;
    expect(&mut events, &id, CREATED).await;
    expect(&mut events, &id, STARTED).await;
    // Nobody asks for the container's status: only the exit watcher can tell.
    let stopped = expect(&mut events, &id, STOPPED).await;
    let status = stopped
        .containers_statuses
        .iter()
        .find(|s| s.id == id)
        .expect("status of the exited container");
    assert_eq!(status.exit_code, 3);
    assert_eq!(status.state, ContainerState::ContainerExited as i32);
    let noticed_after_ms = (stopped.created_at - status.finished_at) / 1_000_000;
    eprintln!("exit noticed {noticed_after_ms} ms after the shim recorded it");
    assert!(stopped.created_at >= status.finished_at);
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

#[tokio::test]
async fn exits_while_corrald_was_down_are_reported_after_its_restart() {
    let Some(mut env) = env().await else { return };
    let (pod_id, config) = pod(&mut env, "ev-down").await;
    // Ends when told to (a file appears in its root), so that it ends while corrald is down.
    let cfg = cri::container_config(
        "ender",
        &env.image,
        &["sh", "-c", "until [ -e /go ]; do sleep 0.1; done; exit 7"],
    );
    let ender = cri::run(&mut env.rt, &pod_id, &config, cfg).await;
    let cfg = cri::container_config("stayer", &env.image, &["sleep", "3600"]);
    let stayer = cri::run(&mut env.rt, &pod_id, &config, cfg).await;

    env.daemon.stop();
    let rootfs = env
        .daemon
        .state()
        .join("containers")
        .join(&ender)
        .join("rootfs");
    std::fs::write(rootfs.join("go"), "").expect("tell the container to end");
    let exit_file = env
        .daemon
        .state()
        .join("containers")
        .join(&ender)
        .join("exit.json");
    assert!(
        corral_e2e::wait_for(WAIT, || exit_file.exists()),
        "the container ended while corrald was down"
    );
    env.daemon.start_again();
    env.rt = env.daemon.runtime().await;

    let mut events = subscribe(&mut env.rt).await;
    let stopped = expect(&mut events, &ender, STOPPED).await;
    let status = stopped
        .containers_statuses
        .iter()
        .find(|s| s.id == ender)
        .expect("status of the exited container");
    assert_eq!(status.exit_code, 7);
    // The restarted daemon watches the running one too.
    cri::stop(&mut env.rt, &stayer, 0).await;
    expect(&mut events, &stayer, STOPPED).await;
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// SIGKILLs the shim of container `id`, which then cannot write the container's exit.
fn kill_shim(env: &Env, id: &str) {
    let pid_file = env
        .daemon
        .state()
        .join("containers")
        .join(id)
        .join("shim.pid");
    let text = std::fs::read_to_string(&pid_file).expect("the shim's pid file");
    let pid: i32 = text
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a pid in shim.pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the shim");
}

/// ListContainers' state of `id`.
async fn listed_state(rt: &mut Rt, id: &str) -> i32 {
    rt.list_containers(ListContainersRequest::default())
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
        .iter()
        .find(|c| c.id == id)
        .map(|c| c.state)
        .expect("the container is listed")
}

#[tokio::test]
async fn a_shim_that_dies_without_the_exit_is_reported_as_it_happens_and_listed_exited() {
    let Some(mut env) = env().await else { return };
    let (pod_id, config) = pod(&mut env, "ev-shim").await;
    let cfg = cri::container_config("before", &env.image, &["sleep", "3600"]);
    let before = cri::run(&mut env.rt, &pod_id, &config, cfg).await;
    let cfg = cri::container_config("after", &env.image, &["sleep", "3600"]);
    let after = cri::run(&mut env.rt, &pod_id, &config, cfg).await;
    let mut events = subscribe(&mut env.rt).await;
    // Listed running first: corrald may answer the next lists from what it knows.
    assert_eq!(
        listed_state(&mut env.rt, &before).await,
        ContainerState::ContainerRunning as i32
    );
    kill_shim(&env, &before);
    // Nobody lists: only corrald's watch on the shim can tell.
    let stopped = expect(&mut events, &before, STOPPED).await;
    assert_eq!(
        container_state(&stopped, &before),
        Some(ContainerState::ContainerExited as i32)
    );
    assert_eq!(
        listed_state(&mut env.rt, &before).await,
        ContainerState::ContainerExited as i32
    );

    // A restarted corrald watches the shims it finds.
    env.daemon.restart();
    env.rt = env.daemon.runtime().await;
    let mut events = subscribe(&mut env.rt).await;
    assert_eq!(
        listed_state(&mut env.rt, &after).await,
        ContainerState::ContainerRunning as i32
    );
    kill_shim(&env, &after);
    expect(&mut events, &after, STOPPED).await;
    assert_eq!(
        listed_state(&mut env.rt, &after).await,
        ContainerState::ContainerExited as i32
    );
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

#[tokio::test]
async fn every_subscriber_gets_every_event_and_one_that_never_reads_blocks_nobody() {
    let Some(mut env) = env().await else { return };
    let (pod_id, config) = pod(&mut env, "ev-many").await;
    // Subscribed and never read, on its own connection with tiny HTTP/2 windows: after the
    // first event or so corrald can send it nothing more, and must not wait for it.
    let mut idle_rt = Rt::new(tiny_window_channel(env.daemon.socket()).await);
    let _idle = subscribe(&mut idle_rt).await;
    let mut first = subscribe(&mut env.rt).await;
    let mut second = subscribe(&mut env.rt).await;
    for i in 0..6 {
        let cfg = cri::container_config(&format!("c{i}"), &env.image, &["sleep", "3600"]);
        let id = cri::run(&mut env.rt, &pod_id, &config, cfg).await;
        env.rt
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("RemoveContainer");
        for events in [&mut first, &mut second] {
            for want in [CREATED, STARTED, STOPPED, DELETED] {
                expect(events, &id, want).await;
            }
        }
    }
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// A channel to corrald whose HTTP/2 flow-control windows hold about one event.
async fn tiny_window_channel(path: std::path::PathBuf) -> tonic::transport::Channel {
    let endpoint = corral_e2e::unix_endpoint()
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024));
    corral_e2e::connect_unix_with(endpoint, path).await
}

#[tokio::test]
async fn a_pause_that_dies_on_its_own_stops_its_pod() {
    let Some(mut env) = env().await else { return };
    // Subscribed first: the pod's CREATED and STARTED are published after RunPodSandbox
    // returns and could otherwise reach a later subscriber before its STOPPED.
    let mut events = subscribe(&mut env.rt).await;
    let (pod_id, _) = pod(&mut env, "ev-pause").await;
    expect(&mut events, &pod_id, CREATED).await;
    expect(&mut events, &pod_id, STARTED).await;
    let pause = cri::pause_pid(&mut env.rt, &pod_id).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pause),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the pause");
    // Nobody calls StopPodSandbox: the pause's pidfd tells corrald.
    let stopped = expect(&mut events, &pod_id, STOPPED).await;
    assert_eq!(
        stopped.pod_sandbox_status.as_ref().unwrap().state,
        PodSandboxState::SandboxNotready as i32
    );
    cri::remove_pod(&mut env.rt, &pod_id).await;
}
