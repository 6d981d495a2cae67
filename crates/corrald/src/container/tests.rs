//! CreateContainer, StartContainer, StopContainer, RemoveContainer, UpdateContainerResources,
//! ReopenContainerLog, ExecSync and Exec through the real handlers on a fake host (see
//! `crate::testing`): refusals, and failures undone.
#![allow(clippy::unwrap_used)]

use cri_proto::v1::runtime_service_server::RuntimeService;
use cri_proto::v1::{
    AttachRequest, CheckpointContainerRequest, Container, ContainerConfig, ContainerFilter,
    ContainerMetadata, ContainerState, ContainerStateValue, ContainerStatsRequest,
    ContainerStatusRequest, CreateContainerRequest, ExecRequest, ExecSyncRequest, ImageSpec,
    LinuxContainerResources, ListContainersRequest, ListContainersResponse, PodSandboxConfig,
    PodSandboxMetadata, RemoveContainerRequest, RemovePodSandboxRequest, ReopenContainerLogRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
    UpdateContainerResourcesRequest,
};
use tonic::{Code, Request, Status};

use crate::testing::{assert_undone_after, TestDaemon, IMAGE_ID};

/// Each host operation of CreateContainer and the one that undoes it.
const UNDO: &[(&str, &str)] = &[
    ("mount_rootfs", "unmount_rootfs"),
    ("launch_shim", "delete"),
];

/// A daemon with one ready pod; its id.
async fn daemon_with_pod() -> (TestDaemon, String) {
    let t = TestDaemon::new().await;
    let pod = t
        .service
        .run_pod_sandbox(Request::new(RunPodSandboxRequest {
            config: Some(pod_config()),
            runtime_handler: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    t.host.clear();
    (t, pod)
}

fn pod_config() -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web".into(),
            namespace: "default".into(),
            uid: "uid-web".into(),
            attempt: 0,
        }),
        log_directory: "/var/log/pods/web".into(),
        ..Default::default()
    }
}

fn container(name: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE_ID.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sleep".into(), "1000".into()],
        ..Default::default()
    }
}

async fn create(t: &TestDaemon, pod: &str, config: ContainerConfig) -> Result<String, Status> {
    t.service
        .create_container(Request::new(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(pod_config()),
        }))
        .await
        .map(|r| r.into_inner().container_id)
}

async fn start(t: &TestDaemon, id: &str) -> Result<(), Status> {
    t.service
        .start_container(Request::new(StartContainerRequest {
            container_id: id.into(),
        }))
        .await
        .map(|_| ())
}

async fn stop(t: &TestDaemon, id: &str, timeout: i64) -> Result<(), Status> {
    t.service
        .stop_container(Request::new(StopContainerRequest {
            container_id: id.into(),
            timeout,
        }))
        .await
        .map(|_| ())
}

async fn remove(t: &TestDaemon, id: &str) -> Result<(), Status> {
    t.service
        .remove_container(Request::new(RemoveContainerRequest {
            container_id: id.into(),
        }))
        .await
        .map(|_| ())
}

async fn state(t: &TestDaemon, id: &str) -> cri_proto::v1::ContainerState {
    let status = t
        .service
        .container_status(Request::new(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        }))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    cri_proto::v1::ContainerState::try_from(status.state).unwrap()
}

async fn exec_sync(t: &TestDaemon, id: &str, cmd: &[&str]) -> Result<Vec<u8>, Status> {
    t.service
        .exec_sync(Request::new(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|c| c.to_string()).collect(),
            timeout: 0,
        }))
        .await
        .map(|r| r.into_inner().stdout)
}

/// No container record, state directory or image lease is left.
fn assert_no_container_left(t: &TestDaemon) {
    assert_eq!(t.container_records(), Vec::<String>::new());
    assert_eq!(t.state_entries("containers"), Vec::<String>::new());
    // The image store's per-container directory (upper, work) goes with the lease.
    let leased = std::fs::read_dir(t.dir.path().join("root/images/containers"))
        .unwrap()
        .count();
    assert_eq!(leased, 0, "image store container directories left");
}

#[tokio::test]
async fn a_container_is_created_started_stopped_and_removed_without_leaving_anything() {
    let (t, pod) = daemon_with_pod().await;
    let id = create(&t, &pod, container("app")).await.unwrap();
    assert_eq!(t.host.calls(), ["mount_rootfs", "launch_shim"]);
    assert_eq!(
        state(&t, &id).await,
        cri_proto::v1::ContainerState::ContainerCreated
    );
    assert_eq!(t.state_entries("containers"), vec![id.clone()]);

    start(&t, &id).await.unwrap();
    assert_eq!(
        state(&t, &id).await,
        cri_proto::v1::ContainerState::ContainerRunning
    );
    // Starting a running container again is fine.
    start(&t, &id).await.unwrap();

    t.host.clear();
    stop(&t, &id, 10).await.unwrap();
    assert_eq!(t.host.calls(), ["kill_stop_signal"]);
    assert_eq!(
        state(&t, &id).await,
        cri_proto::v1::ContainerState::ContainerExited
    );
    // Stopping an exited container does nothing.
    stop(&t, &id, 10).await.unwrap();
    assert_eq!(t.host.calls(), ["kill_stop_signal"]);

    remove(&t, &id).await.unwrap();
    assert_eq!(
        t.host.calls(),
        ["kill_stop_signal", "delete", "unmount_rootfs"]
    );
    assert_no_container_left(&t);
    // Stop and remove of a removed container succeed (CRI asks it).
    stop(&t, &id, 10).await.unwrap();
    remove(&t, &id).await.unwrap();
}

#[tokio::test]
async fn a_failure_at_each_step_of_create_container_is_undone() {
    for step in ["mount_rootfs", "launch_shim"] {
        let (t, pod) = daemon_with_pod().await;
        t.host.fail(step);
        let err = create(&t, &pod, container("app")).await.unwrap_err();
        assert_undone_after(&t, "CreateContainer", step, &err, UNDO);
        if step == "launch_shim" {
            // The shim had started: the runtime's container is deleted too.
            let calls = t.host.calls();
            assert!(calls.iter().any(|c| c == "delete"), "{calls:?}");
        }
        assert_no_container_left(&t);
        // The name is free again.
        t.host.heal();
        let id = create(&t, &pod, container("app")).await.unwrap();
        remove(&t, &id).await.unwrap();
        assert_no_container_left(&t);
    }
}

#[tokio::test]
async fn a_create_whose_undo_fails_is_finished_at_start_up() {
    let (t, pod) = daemon_with_pod().await;
    t.host.fail("launch_shim");
    t.host.fail("unmount_rootfs");
    let err = create(&t, &pod, container("app")).await.unwrap_err();
    assert!(
        err.message().contains("injected failure"),
        "{}",
        err.message()
    );
    // Kept as Creating for start-up to finish; not listed, its name still taken.
    assert_eq!(t.container_records().len(), 1);
    let listed = t.daemon.containers.list(None).await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    t.host.heal();
    let env = t.daemon.containers.env.clone();
    let names = tokio::task::spawn_blocking(move || super::reconcile::reconcile(&env))
        .await
        .unwrap()
        .unwrap();
    assert!(names.is_empty(), "{names:?}");
    assert!(t.host.calls().ends_with(&["unmount_rootfs".to_owned()]));
    assert_no_container_left(&t);
}

#[tokio::test]
async fn create_container_refusals_make_nothing() {
    let (t, pod) = daemon_with_pod().await;
    let mut unnamed = container("app");
    unnamed.metadata = None;
    let mut missing_image = container("app");
    missing_image.image.as_mut().unwrap().image = "docker.io/library/nothere:1".into();
    let mut bad_log = container("app");
    bad_log.log_path = "../../etc/cron.d/x".into();
    for (config, code, what) in [
        (unnamed, Code::InvalidArgument, "config.metadata"),
        (missing_image, Code::NotFound, "pull it first"),
        (bad_log, Code::InvalidArgument, "config.log_path"),
    ] {
        let err = create(&t, &pod, config).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(what), "{}", err.message());
    }
    let err = create(&t, "0000", container("app")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(t.host.calls(), Vec::<String>::new());
    assert_no_container_left(&t);

    let first = create(&t, &pod, container("app")).await.unwrap();
    let err = create(&t, &pod, container("app")).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains(&first), "{}", err.message());

    // A stopped pod takes no new container.
    t.service
        .stop_pod_sandbox(Request::new(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }))
        .await
        .unwrap();
    let err = create(&t, &pod, container("other")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not ready"), "{}", err.message());
}

#[tokio::test]
async fn a_failed_start_leaves_the_container_created() {
    let (t, pod) = daemon_with_pod().await;
    let id = create(&t, &pod, container("app")).await.unwrap();
    t.host.fail("start");
    let err = start(&t, &id).await.unwrap_err();
    assert!(
        err.message().contains("StartContainer: OCI runtime start"),
        "{}",
        err.message()
    );
    assert_eq!(
        state(&t, &id).await,
        cri_proto::v1::ContainerState::ContainerCreated
    );
    t.host.heal();
    start(&t, &id).await.unwrap();
    stop(&t, &id, 0).await.unwrap();
    let err = start(&t, &id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = start(&t, "0000").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

#[tokio::test]
async fn stop_kills_a_container_that_ignores_its_stop_signal_and_reports_a_failed_kill() {
    let (t, pod) = daemon_with_pod().await;
    let id = create(&t, &pod, container("app")).await.unwrap();
    start(&t, &id).await.unwrap();
    t.host.ignore_stop_signal();
    t.host.fail("kill_sigkill");
    t.host.clear();
    let err = stop(&t, &id, 1).await.unwrap_err();
    assert!(
        err.message().contains("StopContainer: SIGKILL"),
        "{}",
        err.message()
    );
    assert_eq!(
        state(&t, &id).await,
        cri_proto::v1::ContainerState::ContainerRunning
    );
    t.host.heal();
    t.host.clear();
    stop(&t, &id, 1).await.unwrap();
    assert_eq!(t.host.calls(), ["kill_stop_signal", "kill_sigkill"]);
    assert_eq!(
        state(&t, &id).await,
        cri_proto::v1::ContainerState::ContainerExited
    );
}

#[tokio::test]
async fn a_failed_remove_keeps_the_record_for_a_retry() {
    let (t, pod) = daemon_with_pod().await;
    let id = create(&t, &pod, container("app")).await.unwrap();
    start(&t, &id).await.unwrap();
    t.host.fail("delete");
    let err = remove(&t, &id).await.unwrap_err();
    assert!(
        err.message().contains("OCI runtime delete"),
        "{}",
        err.message()
    );
    assert_eq!(t.container_records(), vec![id.clone()]);
    t.host.heal();
    remove(&t, &id).await.unwrap();
    assert_no_container_left(&t);
}

fn not_running<T: std::fmt::Debug>(result: Result<T, Status>) {
    let err = result.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not running"), "{}", err.message());
}

#[tokio::test]
async fn exec_update_and_log_reopening_need_a_running_container() {
    let (t, pod) = daemon_with_pod().await;
    let id = create(&t, &pod, container("app")).await.unwrap();
    not_running(exec_sync(&t, &id, &["true"]).await);
    let exec = |cmd: &[&str]| ExecRequest {
        container_id: id.clone(),
        cmd: cmd.iter().map(|c| c.to_string()).collect(),
        stdout: true,
        ..Default::default()
    };
    not_running(
        t.service
            .exec(Request::new(exec(&["sh"])))
            .await
            .map(|_| ()),
    );
    not_running(
        t.service
            .reopen_container_log(Request::new(ReopenContainerLogRequest {
                container_id: id.clone(),
            }))
            .await
            .map(|_| ()),
    );
    start(&t, &id).await.unwrap();
    let err = exec_sync(&t, &id, &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = t.service.exec(Request::new(exec(&[]))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(
        exec_sync(&t, &id, &["echo", "hi"]).await.unwrap(),
        b"echo hi"
    );
    let url = t.service.exec(Request::new(exec(&["sh"]))).await.unwrap();
    assert!(url.into_inner().url.starts_with("http://127.0.0.1:"));
    t.host.fail("exec_sync");
    let err = exec_sync(&t, &id, &["true"]).await.unwrap_err();
    assert!(err.message().contains("ExecSync"), "{}", err.message());

    t.host.fail("update");
    let update = UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(LinuxContainerResources {
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = t
        .service
        .update_container_resources(Request::new(update.clone()))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("OCI runtime update"),
        "{}",
        err.message()
    );
    t.host.heal();
    t.service
        .update_container_resources(Request::new(update))
        .await
        .unwrap();
}

#[tokio::test]
async fn stopping_and_removing_the_pod_stops_and_removes_its_containers() {
    let (t, pod) = daemon_with_pod().await;
    let id = create(&t, &pod, container("app")).await.unwrap();
    start(&t, &id).await.unwrap();
    t.service
        .stop_pod_sandbox(Request::new(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }))
        .await
        .unwrap();
    assert_eq!(
        state(&t, &id).await,
        cri_proto::v1::ContainerState::ContainerExited
    );
    t.service
        .remove_pod_sandbox(Request::new(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }))
        .await
        .unwrap();
    assert_no_container_left(&t);
    assert_eq!(t.sandbox_records(), Vec::<String>::new());
    assert_eq!(t.cgroup_dirs(), Vec::<std::path::PathBuf>::new());
}

#[tokio::test]
async fn attach_stats_and_checkpoint_refuse_unknown_and_not_running_containers() {
    let (t, pod) = daemon_with_pod().await;
    let id = create(&t, &pod, container("app")).await.unwrap();
    let attach = |id: &str| AttachRequest {
        container_id: id.into(),
        stdout: true,
        ..Default::default()
    };
    let unknown = "0123456789ab";
    let err = t
        .service
        .attach(Request::new(attach(unknown)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = t
        .service
        .container_stats(Request::new(ContainerStatsRequest {
            container_id: unknown.into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = t
        .service
        .checkpoint_container(Request::new(CheckpointContainerRequest {
            container_id: unknown.into(),
            location: t.dir.path().join("c.tar").to_string_lossy().into_owned(),
            timeout: 0,
        }))
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::NotFound | Code::FailedPrecondition),
        "{err:?}"
    );
    // No stream asked for, then a container that is not running.
    let err = t
        .service
        .attach(Request::new(AttachRequest {
            container_id: id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    not_running(
        t.service
            .attach(Request::new(attach(&id)))
            .await
            .map(|_| ()),
    );
    start(&t, &id).await.unwrap();
    let url = t.service.attach(Request::new(attach(&id))).await.unwrap();
    assert!(url.into_inner().url.starts_with("http://127.0.0.1:"));
    assert_eq!(t.host.calls(), ["mount_rootfs", "launch_shim", "start"]);
}

/// ListContainers through the handler, its response as a client decodes it.
async fn list(t: &TestDaemon, filter: Option<ContainerFilter>) -> Vec<Container> {
    let response = t
        .service
        .list_containers(Request::new(ListContainersRequest { filter }))
        .await
        .unwrap()
        .into_inner();
    let wire = prost::Message::encode_to_vec(&response);
    let decoded: ListContainersResponse = prost::Message::decode(wire.as_slice()).unwrap();
    decoded.containers
}

/// The (id, state) of each listed container.
async fn states(t: &TestDaemon, filter: Option<ContainerFilter>) -> Vec<(String, i32)> {
    list(t, filter)
        .await
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect()
}

fn running_filter() -> Option<ContainerFilter> {
    Some(ContainerFilter {
        state: Some(ContainerStateValue {
            state: ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    })
}

#[tokio::test]
async fn listed_containers_follow_writes_exits_and_filters() {
    const CREATED: i32 = ContainerState::ContainerCreated as i32;
    const RUNNING: i32 = ContainerState::ContainerRunning as i32;
    const EXITED: i32 = ContainerState::ContainerExited as i32;
    let (t, pod) = daemon_with_pod().await;
    let mut labelled = container("app");
    labelled.labels.insert("tier".into(), "front".into());
    let app = create(&t, &pod, labelled).await.unwrap();
    let side = create(&t, &pod, container("side")).await.unwrap();
    let sorted = |mut v: Vec<(String, i32)>| {
        v.sort();
        v
    };
    assert_eq!(
        states(&t, None).await,
        sorted(vec![(app.clone(), CREATED), (side.clone(), CREATED)])
    );
    // The pre-encoded items are the views the decoded list (StreamContainers) has.
    assert_eq!(
        list(&t, None).await,
        t.daemon.containers.list(None).await.unwrap()
    );

    // A write (StartContainer) changes that container's item in the next list.
    start(&t, &app).await.unwrap();
    assert_eq!(states(&t, running_filter()).await, [(app.clone(), RUNNING)]);
    let item = list(&t, running_filter()).await.remove(0);
    assert_eq!(item.metadata.unwrap().name, "app");
    assert_eq!(item.pod_sandbox_id, pod);
    assert_eq!(item.labels["tier"], "front");

    // Filters apply to the records, as before.
    let by_label = Some(ContainerFilter {
        label_selector: [("tier".to_string(), "front".to_string())].into(),
        ..Default::default()
    });
    assert_eq!(states(&t, by_label).await, [(app.clone(), RUNNING)]);
    let by_id = Some(ContainerFilter {
        id: side[..12].to_string(),
        ..Default::default()
    });
    assert_eq!(states(&t, by_id).await, [(side.clone(), CREATED)]);
    let by_pod = Some(ContainerFilter {
        pod_sandbox_id: pod[..12].to_string(),
        ..Default::default()
    });
    assert_eq!(states(&t, by_pod).await.len(), 2);

    // Verified by the watcher: as recorded, its files unread, until the watcher forgets it.
    let shim = t
        .daemon
        .containers
        .record(&app)
        .await
        .unwrap()
        .shim
        .unwrap();
    let live = t.daemon.containers.live();
    assert!(live.verify(&app, shim.pid, live.epoch()));
    t.host.exit(&app, 3);
    assert_eq!(states(&t, running_filter()).await, [(app.clone(), RUNNING)]);
    live.forget(&app);
    // Unverified, its exit file is read: the item comes from the refreshed record, not from
    // the views of the snapshot (which still say running; the refresh's write makes the next
    // snapshot).
    assert_eq!(
        states(&t, None).await,
        sorted(vec![(app.clone(), EXITED), (side.clone(), CREATED)])
    );
    assert_eq!(states(&t, running_filter()).await, []);

    // A container still being made is not listed.
    let mut creating = t.daemon.containers.record(&side).await.unwrap();
    creating.id = "e".repeat(64);
    creating.state = super::ContainerState::Creating;
    t.daemon
        .store
        .put(corral_store::CONTAINERS, &creating.id, &creating)
        .unwrap();
    assert_eq!(states(&t, None).await.len(), 2);
    assert_eq!(t.daemon.containers.records(None).await.unwrap().len(), 2);
}
