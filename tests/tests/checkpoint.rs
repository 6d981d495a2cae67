//! CheckpointContainer against a real corrald: the request is checked, and where CRIU cannot
//! work on the host the answer is FailedPrecondition naming why (the test then stops there,
//! printing the reason).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use corral_e2e::cri::{self, container_env as env};
use cri_proto::v1::*;
use tonic::Code;

const POD: i32 = NamespaceMode::Pod as i32;
const CONTAINER: i32 = NamespaceMode::Container as i32;

#[tokio::test]
async fn checkpoint_is_checked_and_refused_clearly_where_criu_cannot_work() {
    let Some(mut env) = env().await else { return };
    let (pod_id, config) = env.pod_with("ckpt", (POD, CONTAINER, POD), |_| {}).await;
    let cfg = cri::container_config(
        "counter",
        &env.image,
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i; sleep 1; done",
        ],
    );
    let id = cri::run(&mut env.rt, &pod_id, &config, cfg).await;

    let no_location = env
        .rt
        .checkpoint_container(CheckpointContainerRequest {
            container_id: id.clone(),
            location: String::new(),
            timeout: 0,
        })
        .await
        .expect_err("a checkpoint needs a location");
    assert_eq!(no_location.code(), Code::InvalidArgument);
    assert!(no_location.message().contains("location"), "{no_location}");

    let archive = env.daemon.dir().join("checkpoint.tar");
    let answer = env
        .rt
        .checkpoint_container(CheckpointContainerRequest {
            container_id: id.clone(),
            location: archive.to_string_lossy().into_owned(),
            timeout: 0,
        })
        .await;
    match answer {
        Err(status) if status.code() == Code::FailedPrecondition => {
            assert!(status.message().contains("CRIU"), "{status}");
            eprintln!(
                "skipped: checkpoint/restore cannot run here: {}",
                status.message()
            );
            let (after, _) = cri::status(&mut env.rt, &id).await;
            assert_eq!(
                after.state,
                ContainerState::ContainerRunning as i32,
                "a refused checkpoint leaves the container running"
            );
            assert!(!archive.exists(), "no archive left behind");
        }
        other => panic!("CRIU works on this host but corral cannot checkpoint yet: {other:?}"),
    }
    cri::remove_pod(&mut env.rt, &pod_id).await;
}
