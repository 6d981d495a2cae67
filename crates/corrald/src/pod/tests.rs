//! RunPodSandbox, StopPodSandbox and RemovePodSandbox through the real handlers on a fake host
//! (see `crate::testing`): refusals, and a failure at every host step undone.
#![allow(clippy::unwrap_used)]

use corral_store::SANDBOXES;
use cri_proto::v1::runtime_service_server::RuntimeService;
use cri_proto::v1::{
    LinuxContainerResources, LinuxPodSandboxConfig, ListPodSandboxRequest, ListPodSandboxResponse,
    PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata, PodSandboxState,
    PodSandboxStateValue, PodSandboxStatusRequest, PortForwardRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StopPodSandboxRequest,
};
use tonic::{Code, Request};

use super::record::PauseRef;
use super::SandboxState;

use crate::testing::{assert_undone_after, TestDaemon};

/// Each host operation of RunPodSandbox and the one that undoes it.
const UNDO: &[(&str, &str)] = &[
    ("spawn_pause", "stop_pause"),
    ("pin_netns", "unpin_netns"),
    ("cni_add", "cni_del"),
    ("cgroup_add_process", "cgroup_remove_leaf"),
    ("mount_shm", "unmount_shm"),
    ("pin_userns", "unpin_userns"),
];

/// A pod with a CPU and memory limit (so that every step of RunPodSandbox runs).
fn pod(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        linux: Some(LinuxPodSandboxConfig {
            resources: Some(LinuxContainerResources {
                cpu_quota: 50_000,
                cpu_period: 100_000,
                memory_limit_in_bytes: 256 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// [`pod`] with a user namespace of its own (so that the user namespace pin is made too).
fn pod_with_userns(name: &str) -> PodSandboxConfig {
    let mut config = pod(name);
    let mapping = |host_id| cri_proto::v1::IdMapping {
        host_id,
        container_id: 0,
        length: 65536,
    };
    config
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default)
        .userns_options = Some(cri_proto::v1::UserNamespace {
        mode: cri_proto::v1::NamespaceMode::Pod as i32,
        uids: vec![mapping(100_000)],
        gids: vec![mapping(100_000)],
    });
    config
}

async fn run(t: &TestDaemon, config: PodSandboxConfig) -> Result<String, tonic::Status> {
    t.service
        .run_pod_sandbox(Request::new(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        }))
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

async fn stop(t: &TestDaemon, id: &str) -> Result<(), tonic::Status> {
    t.service
        .stop_pod_sandbox(Request::new(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .await
        .map(|_| ())
}

async fn remove(t: &TestDaemon, id: &str) -> Result<(), tonic::Status> {
    t.service
        .remove_pod_sandbox(Request::new(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .await
        .map(|_| ())
}

/// Nothing of any pod is left: no record, no state, no cgroup directory.
fn assert_nothing_left(t: &TestDaemon) {
    assert_eq!(t.sandbox_records(), Vec::<String>::new());
    assert_eq!(t.state_entries("sandboxes"), Vec::<String>::new());
    assert_eq!(t.cgroup_dirs(), Vec::<std::path::PathBuf>::new());
}

#[tokio::test]
async fn a_pod_runs_stops_and_is_removed_without_leaving_anything() {
    let t = TestDaemon::new().await;
    let id = run(&t, pod("web")).await.unwrap();
    // The CNI ADD runs beside the cgroup and shm steps: compare without order.
    let mut calls = t.host.calls();
    calls.sort();
    assert_eq!(
        calls,
        [
            "cgroup_add_process",
            "cgroup_apply",
            "cgroup_create",
            "cni_add",
            "mount_shm",
            "pin_netns",
            "spawn_pause",
        ]
    );
    assert_eq!(t.sandbox_records(), vec![id.clone()]);
    assert_eq!(t.state_entries("sandboxes"), vec![id.clone()]);
    assert!(!t.cgroup_dirs().is_empty(), "the pod cgroup is made");
    let status = t
        .service
        .pod_sandbox_status(Request::new(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        }))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(
        status.state,
        cri_proto::v1::PodSandboxState::SandboxReady as i32
    );
    assert_eq!(status.network.map(|n| n.ip), Some("10.88.0.2".to_owned()));

    t.host.clear();
    stop(&t, &id).await.unwrap();
    let stopped = t.host.calls();
    for undo in ["stop_pause", "cni_del", "unmount_shm", "unpin_netns"] {
        assert!(
            stopped.iter().any(|c| c == undo),
            "{undo} not in {stopped:?}"
        );
    }
    remove(&t, &id).await.unwrap();
    assert!(t.host.calls().iter().any(|c| c == "cgroup_remove_leaf"));
    assert_nothing_left(&t);
    // Stop and remove of a removed pod succeed (CRI asks it).
    stop(&t, &id).await.unwrap();
    remove(&t, &id).await.unwrap();
}

#[tokio::test]
async fn a_failure_at_each_step_of_run_pod_sandbox_is_undone() {
    for step in [
        "spawn_pause",
        "pin_netns",
        "cni_add",
        "cgroup_create",
        "cgroup_apply",
        "cgroup_add_process",
        "pin_userns",
        "mount_shm",
    ] {
        let t = TestDaemon::new().await;
        t.host.fail(step);
        let err = run(&t, pod_with_userns("web")).await.unwrap_err();
        assert_undone_after(&t, "RunPodSandbox", step, &err, UNDO);
        assert_nothing_left(&t);
        // The name is free again: the same pod runs once the host works.
        t.host.heal();
        let id = run(&t, pod_with_userns("web")).await.unwrap();
        remove(&t, &id).await.unwrap();
        assert_nothing_left(&t);
    }
}

#[tokio::test]
async fn a_failed_undo_keeps_the_record_for_a_retry() {
    let t = TestDaemon::new().await;
    t.host.fail("cgroup_add_process");
    t.host.fail("cni_del");
    let err = run(&t, pod("web")).await.unwrap_err();
    assert!(err.message().contains("pod cgroup"), "{}", err.message());
    // The half-made pod stays recorded (as Creating, for start-up to finish), not listed.
    assert_eq!(t.sandbox_records().len(), 1);
    let listed = t.daemon.pods.list(None).await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    // Start-up reconciliation finishes the undo once the host works again.
    t.host.heal();
    let env = t.daemon.pods.env.clone();
    tokio::task::spawn_blocking(move || super::teardown::reconcile(&env))
        .await
        .unwrap()
        .unwrap();
    assert_nothing_left(&t);
}

#[tokio::test]
async fn refusals_make_nothing() {
    let t = TestDaemon::new().await;
    let mut unnamed = pod("web");
    unnamed.metadata.as_mut().unwrap().name.clear();
    let mut bad_cgroup = pod("web");
    bad_cgroup.linux.as_mut().unwrap().cgroup_parent = "relative/x".into();
    for (config, code, field) in [
        (unnamed, Code::InvalidArgument, "config.metadata.name"),
        (
            bad_cgroup,
            Code::InvalidArgument,
            "config.linux.cgroup_parent",
        ),
    ] {
        let err = run(&t, config).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(field), "{}", err.message());
    }
    let err = t
        .service
        .run_pod_sandbox(Request::new(RunPodSandboxRequest {
            config: None,
            runtime_handler: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = t
        .service
        .run_pod_sandbox(Request::new(RunPodSandboxRequest {
            config: Some(pod("web")),
            runtime_handler: "kata".into(),
        }))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("runtime_handler"),
        "{}",
        err.message()
    );
    assert_eq!(t.host.calls(), Vec::<String>::new());
    assert_nothing_left(&t);
}

#[tokio::test]
async fn a_pod_without_a_network_config_is_refused_and_a_host_network_pod_runs() {
    let t = TestDaemon::without_network().await;
    let err = run(&t, pod("web")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("pod network is not ready"),
        "{}",
        err.message()
    );
    assert_eq!(t.host.calls(), Vec::<String>::new());
    let mut host_network = pod("web");
    host_network
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default)
        .network = cri_proto::v1::NamespaceMode::Node as i32;
    let id = run(&t, host_network).await.unwrap();
    let calls = t.host.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.contains("netns") || c.contains("cni")),
        "{calls:?}"
    );
    remove(&t, &id).await.unwrap();
    assert_nothing_left(&t);
}

#[tokio::test]
async fn a_second_pod_with_the_same_name_is_refused_until_the_first_is_removed() {
    let t = TestDaemon::new().await;
    let first = run(&t, pod("web")).await.unwrap();
    let err = run(&t, pod("web")).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains(&first), "{}", err.message());
    remove(&t, &first).await.unwrap();
    let second = run(&t, pod("web")).await.unwrap();
    assert_ne!(first, second);
    remove(&t, &second).await.unwrap();
    assert_nothing_left(&t);
}

#[tokio::test]
async fn a_failed_stop_or_remove_is_finished_by_a_retry() {
    let t = TestDaemon::new().await;
    let id = run(&t, pod("web")).await.unwrap();
    t.host.fail("cni_del");
    let err = stop(&t, &id).await.unwrap_err();
    assert!(err.message().contains("CNI DEL"), "{}", err.message());
    // The pod is recorded not ready, its network still named for the retry.
    let record = t.daemon.pods.sandbox(&id).unwrap();
    assert_eq!(record.state, super::SandboxState::NotReady);
    assert!(record.cni_network.is_some());
    t.host.heal();
    t.host.clear();
    stop(&t, &id).await.unwrap();
    assert!(t.host.calls().iter().any(|c| c == "cni_del"));

    t.host.fail("cgroup_remove_leaf");
    let err = remove(&t, &id).await.unwrap_err();
    assert!(err.message().contains("pause cgroup"), "{}", err.message());
    assert_eq!(t.sandbox_records(), vec![id.clone()]);
    t.host.heal();
    remove(&t, &id).await.unwrap();
    assert_nothing_left(&t);
}

#[tokio::test]
async fn update_pod_sandbox_resources_refuses_nothing_to_apply_and_reports_a_failed_write() {
    let t = TestDaemon::new().await;
    let id = run(&t, pod("web")).await.unwrap();
    let update = |resources: Option<LinuxContainerResources>| {
        t.service.update_pod_sandbox_resources(Request::new(
            cri_proto::v1::UpdatePodSandboxResourcesRequest {
                pod_sandbox_id: id.clone(),
                overhead: None,
                resources,
            },
        ))
    };
    let err = update(None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("resources"), "{}", err.message());
    let limits = LinuxContainerResources {
        memory_limit_in_bytes: 512 << 20,
        ..Default::default()
    };
    t.host.fail("cgroup_apply");
    let err = update(Some(limits.clone())).await.unwrap_err();
    assert!(
        err.message()
            .starts_with("UpdatePodSandboxResources: apply resources to the pod cgroup"),
        "{}",
        err.message()
    );
    t.host.heal();
    update(Some(limits)).await.unwrap();
    assert!(t.host.calls().ends_with(&["cgroup_apply".to_owned()]));
}

#[tokio::test]
async fn port_forward_needs_a_ready_pod_and_tcp_ports() {
    let t = TestDaemon::new().await;
    let forward = |id: &str, port: i32| PortForwardRequest {
        pod_sandbox_id: id.into(),
        port: vec![port],
    };
    let err = t
        .service
        .port_forward(Request::new(forward("0123456789ab", 80)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let id = run(&t, pod("web")).await.unwrap();
    for bad in [0, 65536, -1] {
        let err = t
            .service
            .port_forward(Request::new(forward(&id, bad)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
        assert!(err.message().contains("port"), "{}", err.message());
    }
    let url = t
        .service
        .port_forward(Request::new(forward(&id, 80)))
        .await
        .unwrap();
    assert!(url.into_inner().url.starts_with("http://127.0.0.1:"));
    // Stopped: refused by its state, whether or not its pause is gone yet (the fake's never is).
    stop(&t, &id).await.unwrap();
    let err = t
        .service
        .port_forward(Request::new(forward(&id, 80)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not ready"), "{}", err.message());
    remove(&t, &id).await.unwrap();
    assert_nothing_left(&t);
}

/// ListPodSandbox through the handler, its response as a client decodes it.
async fn list(t: &TestDaemon, filter: Option<PodSandboxFilter>) -> Vec<PodSandbox> {
    let response = t
        .service
        .list_pod_sandbox(Request::new(ListPodSandboxRequest { filter }))
        .await
        .unwrap()
        .into_inner();
    let wire = prost::Message::encode_to_vec(&response);
    let decoded: ListPodSandboxResponse = prost::Message::decode(wire.as_slice()).unwrap();
    decoded.items
}

/// The (id, state) of each listed pod.
async fn states(t: &TestDaemon, filter: Option<PodSandboxFilter>) -> Vec<(String, i32)> {
    list(t, filter)
        .await
        .into_iter()
        .map(|p| (p.id, p.state))
        .collect()
}

fn state_filter(state: PodSandboxState) -> Option<PodSandboxFilter> {
    Some(PodSandboxFilter {
        state: Some(PodSandboxStateValue {
            state: state as i32,
        }),
        ..Default::default()
    })
}

#[tokio::test]
async fn listed_pods_follow_writes_pause_deaths_and_filters() {
    const READY: i32 = PodSandboxState::SandboxReady as i32;
    const NOT_READY: i32 = PodSandboxState::SandboxNotready as i32;
    let t = TestDaemon::new().await;
    let mut labelled = pod("web");
    labelled.labels.insert("tier".into(), "front".into());
    let web = run(&t, labelled).await.unwrap();
    let db = run(&t, pod("db")).await.unwrap();
    let mut both = vec![(web.clone(), READY), (db.clone(), READY)];
    both.sort();
    assert_eq!(states(&t, None).await, both);
    // The pre-encoded items are the views the decoded list (StreamPodSandboxes) has.
    assert_eq!(
        list(&t, None).await,
        t.daemon.pods.list(None).await.unwrap()
    );
    let web_item = list(&t, None)
        .await
        .into_iter()
        .find(|p| p.id == web)
        .unwrap();
    assert_eq!(web_item.metadata.unwrap().name, "web");
    assert_eq!(web_item.labels["tier"], "front");

    // Filters apply to the records, as before.
    let by_label = Some(PodSandboxFilter {
        label_selector: [("tier".to_string(), "front".to_string())].into(),
        ..Default::default()
    });
    assert_eq!(states(&t, by_label).await, [(web.clone(), READY)]);
    let by_id = Some(PodSandboxFilter {
        id: db[..12].to_string(),
        ..Default::default()
    });
    assert_eq!(states(&t, by_id).await, [(db.clone(), READY)]);
    assert_eq!(
        states(&t, state_filter(PodSandboxState::SandboxNotready)).await,
        []
    );

    // A write (StopPodSandbox) changes that pod's item in the next list.
    stop(&t, &db).await.unwrap();
    assert_eq!(
        states(&t, state_filter(PodSandboxState::SandboxNotready)).await,
        [(db.clone(), NOT_READY)]
    );

    // A pause that dies, with no write since: the same snapshot's other variant.
    let mut child = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let identity = corral_process::ProcessIdentity::of_pid(pid)
        .unwrap()
        .unwrap();
    let mut record = t.daemon.pods.sandbox(&web).unwrap();
    record.pause = Some(PauseRef {
        pid,
        start_time: identity.start_time,
    });
    t.daemon.store.put(SANDBOXES, &web, &record).unwrap();
    assert_eq!(
        states(&t, state_filter(PodSandboxState::SandboxReady)).await,
        [(web.clone(), READY)]
    );
    // Verified by the watcher: trusted without a look at /proc, even after the pause died,
    // until the watcher forgets it.
    let live = t.daemon.pods.live();
    assert!(live.verify(&web, pid, live.epoch()));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        states(&t, state_filter(PodSandboxState::SandboxReady)).await,
        [(web.clone(), READY)]
    );
    live.forget(&web);
    both = vec![(web.clone(), NOT_READY), (db.clone(), NOT_READY)];
    both.sort();
    assert_eq!(states(&t, None).await, both);
    assert_eq!(
        states(&t, state_filter(PodSandboxState::SandboxReady)).await,
        []
    );

    // A sandbox still being made is not listed.
    let mut creating = record.clone();
    creating.id = "f".repeat(64);
    creating.state = SandboxState::Creating;
    t.daemon
        .store
        .put(SANDBOXES, &creating.id, &creating)
        .unwrap();
    assert_eq!(states(&t, None).await, both);
    assert_eq!(t.daemon.pods.records(None).unwrap().len(), 2);
}
