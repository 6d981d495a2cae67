//! Old kubelets (1.20–1.25) speak `runtime.v1alpha2`: the same handlers answer under that name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use corral_e2e::v1alpha2::image_service_client::ImageServiceClient as OldImages;
use corral_e2e::v1alpha2::runtime_service_client::RuntimeServiceClient as OldRuntime;
use corral_e2e::v1alpha2::*;
use corral_e2e::*;
use tonic::Code;

fn old_pod_config(name: &str, parent: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "old".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: parent.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn old_api_serves_the_same_sandboxes() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    let mut old = OldRuntime::new(daemon.channel().await);
    let mut new = daemon.runtime().await;

    let v = old
        .version(VersionRequest {
            version: "0.1.0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_api_version, "v1alpha2");
    assert_eq!(v.runtime_name, "corral");
    let v1 = new
        .version(cri_proto::v1::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v1.runtime_api_version, "v1");

    let id = old
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(old_pod_config("oldpod", &unique_cgroup_parent("old"))),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox over v1alpha2")
        .into_inner()
        .pod_sandbox_id;
    let old_status = old
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let new_status = new
        .pod_sandbox_status(cri_proto::v1::PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(old_status.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(
        old_status.network.unwrap().ip,
        new_status.network.unwrap().ip
    );
    assert_eq!(old_status.metadata.unwrap().name, "oldpod");
    let listed = old
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(
        listed.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );

    old.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .unwrap();
    old.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .unwrap();
    assert!(new
        .list_pod_sandbox(cri_proto::v1::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
        .is_empty());

    // The image service answers under the old name too.
    let mut images = OldImages::new(daemon.channel().await);
    images
        .list_images(ListImagesRequest::default())
        .await
        .expect("ListImages over v1alpha2");
}

/// A raw gRPC call to a path, with an empty request body; returns the status.
async fn call_path(daemon: &Daemon, path: &'static str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(daemon.channel().await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<VersionRequest, VersionResponse>::default();
    grpc.unary(
        tonic::Request::new(VersionRequest::default()),
        http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
    .map(|_| tonic::Status::ok(""))
    .unwrap_or_else(|s| s)
}

#[tokio::test]
async fn v1_only_rpcs_are_not_offered_under_the_old_name() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    let st = call_path(
        &daemon,
        "/runtime.v1alpha2.RuntimeService/ListMetricDescriptors",
    )
    .await;
    assert_eq!(st.code(), Code::Unimplemented);
    let st = call_path(&daemon, "/runtime.v1alpha2.RuntimeService/Version").await;
    assert_eq!(st.code(), Code::Ok);
}

#[tokio::test]
async fn old_api_can_be_turned_off() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions {
        extra_config_toml: "disable_v1alpha2 = true".into(),
        ..Default::default()
    });
    let st = call_path(&daemon, "/runtime.v1alpha2.RuntimeService/Version").await;
    assert_eq!(st.code(), Code::Unimplemented, "{st:?}");
    let st = call_path(&daemon, "/runtime.v1.RuntimeService/Version").await;
    assert_eq!(st.code(), Code::Ok);
}
