//! Races kubelet can cause (issue 10, item 2): container RPCs against their pod's
//! StopPodSandbox and RemovePodSandbox, two RunPodSandbox with one name, ReopenContainerLog and
//! ExecSync during a stop. Each pair runs concurrently against a real corrald; whatever order
//! they land in, the end state is consistent (no running container in a stopped pod) and
//! nothing is left after the pod is removed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use corral_e2e::cri::{self, container_env, ContainerEnv};
use corral_e2e::*;
use cri_proto::v1::*;
use tokio::task::JoinHandle;
use tonic::Code;

const POD: i32 = NamespaceMode::Pod as i32;
const NODE: i32 = NamespaceMode::Node as i32;
const ROUNDS: usize = 4;

async fn pod_containers(rt: &mut cri::Rt, pod_id: &str) -> Vec<Container> {
    rt.list_containers(ListContainersRequest {
        filter: Some(ContainerFilter {
            pod_sandbox_id: pod_id.into(),
            ..Default::default()
        }),
    })
    .await
    .unwrap()
    .into_inner()
    .containers
}

/// StopPodSandbox of `pod_id`, running concurrently on a clone of the client.
fn spawn_stop_pod(
    rt: &cri::Rt,
    pod_id: &str,
) -> JoinHandle<Result<tonic::Response<StopPodSandboxResponse>, tonic::Status>> {
    let mut rt = rt.clone();
    let pod_sandbox_id = pod_id.to_owned();
    tokio::spawn(async move {
        rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id })
            .await
    })
}

/// After the pod is stopped none of its containers runs; after it is removed nothing of it is
/// left in the state directories or the mount table.
async fn check_stopped_then_remove(env: &mut ContainerEnv, pod_id: &str, what: &str) {
    env.rt
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.into(),
        })
        .await
        .unwrap();
    for c in pod_containers(&mut env.rt, pod_id).await {
        assert_ne!(
            c.state,
            ContainerState::ContainerRunning as i32,
            "{what}: container {} runs in a stopped pod",
            c.id
        );
    }
    cri::remove_pod(&mut env.rt, pod_id).await;
    assert!(
        pod_containers(&mut env.rt, pod_id).await.is_empty(),
        "{what}"
    );
}

fn check_host_clean(env: &ContainerEnv) {
    assert!(dir_entries(&env.daemon.state().join("containers")).is_empty());
    assert!(dir_entries(&env.daemon.root().join("containers")).is_empty());
    assert!(dir_entries(&env.daemon.state().join("sandboxes")).is_empty());
    let state = env.daemon.state().to_string_lossy().into_owned();
    assert!(mounts_containing(&state).is_empty(), "mounts left");
}

#[tokio::test]
async fn container_rpcs_race_their_pods_stop_and_remove() {
    require_root!();
    let Some(mut env) = container_env().await else {
        return;
    };
    let parent = unique_cgroup_parent("races");
    let image = env.image.clone();
    for round in 0..ROUNDS {
        // CreateContainer + StartContainer against StopPodSandbox.
        let mut config = pod_config(&format!("race-stop-{round}"), &parent, (NODE, POD, POD));
        config.log_directory = env.daemon.dir().join("logs").to_string_lossy().into_owned();
        let pod_id = cri::run_pod(&mut env.rt, &config).await;
        let mut rt = env.rt.clone();
        let (pod, cfg) = (
            config.clone(),
            cri::container_config("c", &image, &["sleep", "60"]),
        );
        let pid = pod_id.clone();
        let create = tokio::spawn(async move {
            let id = cri::try_create(&mut rt, &pid, &pod, cfg).await?;
            rt.start_container(StartContainerRequest { container_id: id })
                .await
                .map(|_| ())
        });
        let stop = spawn_stop_pod(&env.rt, &pod_id);
        if let Err(status) = create.await.unwrap() {
            // Landing after the stop, the create is refused as the pod is not ready.
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        }
        stop.await.unwrap().unwrap();
        check_stopped_then_remove(&mut env, &pod_id, "create vs stop").await;

        // Stop and remove of a running container against RemovePodSandbox.
        let pod_id = cri::run_pod(&mut env.rt, &config).await;
        let cfg = cri::container_config("c", &image, &["sleep", "60"]);
        let id = cri::run(&mut env.rt, &pod_id, &config, cfg).await;
        let mut rt = env.rt.clone();
        let cid = id.clone();
        let stop_rm = tokio::spawn(async move {
            let _ = rt
                .stop_container(StopContainerRequest {
                    container_id: cid.clone(),
                    timeout: 0,
                })
                .await;
            let _ = rt
                .remove_container(RemoveContainerRequest { container_id: cid })
                .await;
        });
        let mut rt = env.rt.clone();
        let pid = pod_id.clone();
        let remove = tokio::spawn(async move {
            rt.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pid,
            })
            .await
        });
        stop_rm.await.unwrap();
        remove.await.unwrap().unwrap();
        assert!(pod_containers(&mut env.rt, &pod_id).await.is_empty());

        // ReopenContainerLog and ExecSync during StopPodSandbox.
        let pod_id = cri::run_pod(&mut env.rt, &config).await;
        let cfg = cri::container_config("c", &image, &["sleep", "60"]);
        let id = cri::run(&mut env.rt, &pod_id, &config, cfg).await;
        let mut rt = env.rt.clone();
        let cid = id.clone();
        let side = tokio::spawn(async move {
            let _ = rt
                .reopen_container_log(ReopenContainerLogRequest {
                    container_id: cid.clone(),
                })
                .await;
            let _ = rt
                .exec_sync(ExecSyncRequest {
                    container_id: cid,
                    cmd: vec!["true".into()],
                    timeout: 10,
                })
                .await;
        });
        let stop = spawn_stop_pod(&env.rt, &pod_id);
        side.await.unwrap();
        stop.await.unwrap().unwrap();
        check_stopped_then_remove(&mut env, &pod_id, "reopen/exec vs stop").await;
    }
    check_host_clean(&env);
    remove_cgroup_dirs(&test_cgroup_root("races"));
}

#[tokio::test]
async fn two_run_pod_sandbox_with_one_name_make_one_pod() {
    require_root!();
    let Some(mut env) = container_env().await else {
        return;
    };
    let parent = unique_cgroup_parent("samename");
    for round in 0..ROUNDS {
        let config = pod_config(&format!("same-{round}"), &parent, (NODE, POD, POD));
        let runs: Vec<_> = (0..2)
            .map(|_| {
                let mut rt = env.rt.clone();
                let config = config.clone();
                tokio::spawn(async move { cri::try_run_pod(&mut rt, config).await })
            })
            .collect();
        let mut ok = Vec::new();
        for run in runs {
            match run.await.unwrap() {
                Ok(id) => ok.push(id),
                Err(status) => assert_eq!(status.code(), Code::AlreadyExists, "{status:?}"),
            }
        }
        assert_eq!(ok.len(), 1, "round {round}: {ok:?}");
        let pods = cri::all_pods(&mut env.rt).await;
        assert_eq!(pods.len(), 1);
        cri::remove_pod(&mut env.rt, &ok[0]).await;
    }
    check_host_clean(&env);
    remove_cgroup_dirs(&test_cgroup_root("samename"));
}
