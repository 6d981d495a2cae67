//! Streaming limits (issue 10, item 5) against a real corrald: a container takes at most
//! `max_streams_per_container` exec/attach sessions at once, and a session without input or
//! output for `stream_idle_timeout` is closed and its process killed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use corral_e2e::cri::{self, ContainerEnv};
use corral_e2e::*;
use corral_streaming::client::{self, Protocol};
use corral_streaming::{StreamIo, StreamingError};
use cri_proto::v1::*;

const POD: i32 = NamespaceMode::Pod as i32;
const NODE: i32 = NamespaceMode::Node as i32;

async fn exec_url(env: &mut ContainerEnv, id: &str, cmd: &[&str]) -> String {
    env.rt
        .exec(ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

/// Whether `ps` in the container shows `needle`.
async fn runs(env: &mut ContainerEnv, id: &str, needle: &str) -> bool {
    let out = env
        .rt
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["ps".into(), "-o".into(), "args".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    String::from_utf8_lossy(&out.stdout).contains(needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_capped_per_container_and_closed_when_idle() {
    require_root!();
    let Some((registry, image)) = cri::busybox_registry() else {
        return;
    };
    let daemon = Daemon::start(DaemonOptions {
        extra_config_toml: "max_streams_per_container = 1\nstream_idle_timeout = 3\n".into(),
        ..DaemonOptions::default()
    });
    cri::pull(&mut daemon.images().await, &image).await;
    let rt = daemon.runtime().await;
    let mut env = ContainerEnv {
        daemon,
        registry,
        image,
        rt,
    };
    let parent = unique_cgroup_parent("streamlimits");
    let (pod_id, pod) = env
        .pod_with("streamlimits", (NODE, POD, POD), |c| {
            c.linux.as_mut().unwrap().cgroup_parent = parent.clone();
        })
        .await;
    let config = cri::container_config("sleeper", &env.image, &["sleep", "100000"]);
    let id = cri::run(&mut env.rt, &pod_id, &pod, config).await;

    // A silent session holds the container's only slot...
    let url = exec_url(&mut env, &id, &["sleep", "1234"]).await;
    let held = tokio::spawn(async move {
        client::exec(&url, Protocol::WebSocket, false, StreamIo::default()).await
    });
    assert!(
        wait_for_async(&mut env, &id, "sleep 1234", true).await,
        "the first session's process never started"
    );
    // ...so a second one is refused, naming the limit.
    let url = exec_url(&mut env, &id, &["echo", "hi"]).await;
    let second = client::exec(&url, Protocol::WebSocket, false, StreamIo::default()).await;
    assert!(
        matches!(&second, Err(StreamingError::RemoteCommand { message })
            if message.contains("max_streams_per_container")),
        "{second:?}"
    );

    // The silent session is closed once idle, and its process killed.
    let ended = tokio::time::timeout(Duration::from_secs(60), held)
        .await
        .expect("the idle session was not closed")
        .unwrap();
    assert!(
        matches!(&ended, Err(StreamingError::RemoteCommand { message })
            if message.contains("stream_idle_timeout")),
        "{ended:?}"
    );
    assert!(
        wait_for_async(&mut env, &id, "sleep 1234", false).await,
        "the idle session's process still runs"
    );

    // The slot is free again.
    let url = exec_url(&mut env, &id, &["true"]).await;
    let code = client::exec(&url, Protocol::WebSocket, false, StreamIo::default()).await;
    assert!(matches!(code, Ok(0)), "{code:?}");

    cri::remove_pod(&mut env.rt, &pod_id).await;
    remove_cgroup_dirs(&test_cgroup_root("streamlimits"));
}

/// Polls `ps` until `needle` runs (or no longer runs); deadline guard only.
async fn wait_for_async(env: &mut ContainerEnv, id: &str, needle: &str, want: bool) -> bool {
    for _ in 0..300 {
        if runs(env, id, needle).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
