//! ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats and the Stream
//! variants against a real corrald: CPU and memory from the cgroups, the writable layer, the
//! pod's network and processes, and the filters kubelet uses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use corral_e2e::cri::{self, Rt};
use corral_e2e::*;
use cri_proto::v1::*;
use tonic::Code;

use corral_e2e::cri::{container_env as env, ContainerEnv as Env};

const POD: i32 = NamespaceMode::Pod as i32;
const CONTAINER: i32 = NamespaceMode::Container as i32;

/// A pod on the CNI network with its own pid namespace per container.
async fn pod(env: &mut Env, name: &str) -> (String, PodSandboxConfig) {
    env.pod_with(name, (POD, CONTAINER, POD), |_| {}).await
}

async fn container_stats(rt: &mut Rt, filter: ContainerStatsFilter) -> Vec<ContainerStats> {
    rt.list_container_stats(ListContainerStatsRequest {
        filter: Some(filter),
    })
    .await
    .expect("ListContainerStats")
    .into_inner()
    .stats
}

async fn pod_stats(rt: &mut Rt, filter: PodSandboxStatsFilter) -> Vec<PodSandboxStats> {
    rt.list_pod_sandbox_stats(ListPodSandboxStatsRequest {
        filter: Some(filter),
    })
    .await
    .expect("ListPodSandboxStats")
    .into_inner()
    .stats
}

fn of_pod(pod_id: &str) -> ContainerStatsFilter {
    ContainerStatsFilter {
        pod_sandbox_id: pod_id.into(),
        ..Default::default()
    }
}

fn find<'a>(stats: &'a [ContainerStats], id: &str) -> &'a ContainerStats {
    stats
        .iter()
        .find(|s| s.attributes.as_ref().unwrap().id == id)
        .unwrap_or_else(|| panic!("no stats of {id} in {stats:?}"))
}

fn ids(stats: &[ContainerStats]) -> Vec<String> {
    let mut ids: Vec<String> = stats
        .iter()
        .map(|s| s.attributes.as_ref().unwrap().id.clone())
        .collect();
    ids.sort();
    ids
}

fn cpu_ns(stats: &ContainerStats) -> u64 {
    stats
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .expect("usage_core_nano_seconds")
        .value
}

fn nano_cores(stats: &ContainerStats) -> u64 {
    stats
        .cpu
        .as_ref()
        .and_then(|c| c.usage_nano_cores.as_ref())
        .expect("usage_nano_cores")
        .value
}

fn working_set(memory: Option<&MemoryUsage>) -> u64 {
    memory
        .and_then(|m| m.working_set_bytes.as_ref())
        .expect("working_set_bytes")
        .value
}

fn layer_bytes(stats: &ContainerStats) -> u64 {
    stats
        .writable_layer
        .as_ref()
        .and_then(|l| l.used_bytes.as_ref())
        .expect("writable layer used_bytes")
        .value
}

#[tokio::test]
async fn containers_and_pods_report_cpu_memory_disk_and_network() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = pod(&mut env, "stats").await;
    let spin = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config("spin", &env.image, &["sh", "-c", "while :; do :; done"]),
    )
    .await;
    let hold = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config(
            "hold",
            &env.image,
            &[
                "sh",
                "-c",
                "x=$(head -c 20000000 /dev/zero | tr '\\0' a); touch /tmp/held; while :; do sleep 1000; done",
            ],
        ),
    )
    .await;
    let done = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config("done", &env.image, &["true"]),
    )
    .await;
    cri::wait_exited(&mut env.rt, &done, Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while cri::exec(&mut env.rt, &hold, &["test", "-e", "/tmp/held"])
        .await
        .0
        != 0
    {
        assert!(Instant::now() < deadline, "hold never filled its memory");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Only the running containers are listed, each with CPU, memory and its writable layer.
    let first = container_stats(&mut env.rt, of_pod(&pod_id)).await;
    let mut running = vec![spin.clone(), hold.clone()];
    running.sort();
    assert_eq!(ids(&first), running);
    let spin_first = find(&first, &spin);
    assert!(cpu_ns(spin_first) > 0, "{spin_first:?}");
    let attributes = spin_first.attributes.as_ref().unwrap();
    assert_eq!(attributes.metadata.as_ref().unwrap().name, "spin");
    assert_eq!(attributes.labels.get("container").unwrap(), "spin");
    let hold_first = find(&first, &hold);
    let held = working_set(hold_first.memory.as_ref());
    assert!(held >= 18_000_000, "hold's working set is {held}");
    let layer = hold_first.writable_layer.as_ref().unwrap();
    assert!(
        layer.fs_id.as_ref().unwrap().mountpoint.contains(&hold),
        "{layer:?}"
    );

    // CPU time grows, and the second sample has a rate.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = container_stats(&mut env.rt, of_pod(&pod_id)).await;
    let spin_second = find(&second, &spin);
    assert!(
        cpu_ns(spin_second) > cpu_ns(spin_first),
        "{spin_first:?} then {spin_second:?}"
    );
    assert!(nano_cores(spin_second) > 0, "{spin_second:?}");

    // Writing a file grows the writable layer.
    let before = layer_bytes(find(&second, &hold));
    cri::exec_ok(
        &mut env.rt,
        &hold,
        &["dd", "if=/dev/zero", "of=/written", "bs=1M", "count=8"],
    )
    .await;
    let one = env
        .rt
        .container_stats(ContainerStatsRequest {
            container_id: hold[..12].into(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(one.attributes.as_ref().unwrap().id, hold);
    let after = layer_bytes(&one);
    assert!(after >= before + 8_000_000, "{before} then {after}");

    // Filters: id prefix, pod, labels.
    let by_id = container_stats(
        &mut env.rt,
        ContainerStatsFilter {
            id: spin[..12].into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&by_id), [spin.as_str()]);
    let by_label = container_stats(
        &mut env.rt,
        ContainerStatsFilter {
            pod_sandbox_id: pod_id.clone(),
            label_selector: [("container".to_string(), "hold".to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&by_label), [hold.as_str()]);
    let other_pod = container_stats(&mut env.rt, of_pod(&"f".repeat(64))).await;
    assert!(other_pod.is_empty(), "{other_pod:?}");

    // The stream carries the same list.
    let mut stream = env
        .rt
        .stream_container_stats(StreamContainerStatsRequest {
            filter: Some(of_pod(&pod_id)),
        })
        .await
        .expect("StreamContainerStats")
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(batch) = stream
        .message()
        .await
        .expect("StreamContainerStats message")
    {
        streamed.extend(batch.container_stats);
    }
    assert_eq!(ids(&streamed), running);

    // The pod: its cgroup's CPU and memory, its network, its processes and its containers.
    let pods = pod_stats(
        &mut env.rt,
        PodSandboxStatsFilter {
            id: pod_id[..12].into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(pods.len(), 1, "{pods:?}");
    let attributes = pods[0].attributes.as_ref().unwrap();
    assert_eq!(attributes.id, pod_id);
    assert_eq!(attributes.metadata.as_ref().unwrap().name, "stats");
    let linux = pods[0].linux.as_ref().expect("linux pod stats");
    let pod_cpu = linux
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .expect("pod cpu")
        .value;
    assert!(
        pod_cpu >= cpu_ns(spin_second),
        "pod {pod_cpu}, spin {spin_second:?}"
    );
    let pod_memory = working_set(linux.memory.as_ref());
    assert!(pod_memory >= 18_000_000, "pod working set {pod_memory}");
    let network = linux.network.as_ref().expect("pod network");
    let eth0 = network
        .default_interface
        .as_ref()
        .expect("default interface");
    assert_eq!(eth0.name, "eth0");
    assert!(
        eth0.rx_bytes.is_some() && eth0.tx_bytes.is_some(),
        "{eth0:?}"
    );
    assert!(network.interfaces.iter().any(|i| i.name == "eth0"));
    assert!(network.interfaces.iter().all(|i| i.name != "lo"));
    let processes = linux
        .process
        .as_ref()
        .and_then(|p| p.process_count.as_ref())
        .expect("process count")
        .value;
    assert!(processes >= 3, "pause, spin and hold: {processes}");
    let mut pod_containers: Vec<String> = linux
        .containers
        .iter()
        .map(|c| c.attributes.as_ref().unwrap().id.clone())
        .collect();
    pod_containers.sort();
    assert_eq!(pod_containers, running);

    let one_pod = env
        .rt
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(one_pod.attributes.unwrap().id, pod_id);

    let by_label = pod_stats(
        &mut env.rt,
        PodSandboxStatsFilter {
            label_selector: [("app".to_string(), "stats".to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_label.len(), 1);
    let no_match = pod_stats(
        &mut env.rt,
        PodSandboxStatsFilter {
            label_selector: [("app".to_string(), "other".to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    assert!(no_match.is_empty(), "{no_match:?}");
    let mut stream = env
        .rt
        .stream_pod_sandbox_stats(StreamPodSandboxStatsRequest { filter: None })
        .await
        .expect("StreamPodSandboxStats")
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(batch) = stream
        .message()
        .await
        .expect("StreamPodSandboxStats message")
    {
        streamed.extend(batch.pod_sandbox_stats);
    }
    assert_eq!(streamed.len(), 1);

    // Unknown ids.
    let err = env
        .rt
        .container_stats(ContainerStatsRequest {
            container_id: "0".repeat(64),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = env
        .rt
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: "0".repeat(64),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // A stopped pod is no longer listed.
    env.rt
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .expect("StopPodSandbox");
    let after_stop = pod_stats(&mut env.rt, PodSandboxStatsFilter::default()).await;
    assert!(after_stop.is_empty(), "{after_stop:?}");
    assert!(container_stats(&mut env.rt, of_pod(&pod_id))
        .await
        .is_empty());
    cri::remove_pod(&mut env.rt, &pod_id).await;
}
