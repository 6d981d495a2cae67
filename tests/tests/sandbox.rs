//! RunPodSandbox and the sandbox lifecycle against a real corrald, real namespaces, cgroups
//! and CNI bridge.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use corral_e2e::cri::{pod_status as status, remove_pod as stop_and_remove, run_pod, Rt};
use corral_e2e::*;
use cri_proto::v1::*;
use serde_json::Value;
use tonic::Code;

const POD: i32 = NamespaceMode::Pod as i32;
const NODE: i32 = NamespaceMode::Node as i32;
const CONTAINER: i32 = NamespaceMode::Container as i32;

/// RuntimeConfig reports `driver` as the cgroup driver.
async fn assert_cgroup_driver(rt: &mut Rt, driver: CgroupDriver) {
    let rc = rt
        .runtime_config(RuntimeConfigRequest::default())
        .await
        .expect("RuntimeConfig")
        .into_inner();
    assert_eq!(rc.linux.expect("linux").cgroup_driver, driver as i32);
}

fn pause_pid(info: &Value) -> i32 {
    info["pid"].as_i64().expect("info.pid") as i32
}

/// Asserts that nothing of sandbox `id` (pause `pid`) remains on the host: process, mounts,
/// netns pin, files, cgroups (every directory whose path contains `cgroup_tag`).
fn assert_no_leftovers(daemon: &Daemon, id: &str, pid: i32, cgroup_tag: &str) {
    assert!(
        wait_for(Duration::from_secs(5), || !process_alive(pid)),
        "pause process {pid} still running"
    );
    assert!(
        mounts_containing(id).is_empty(),
        "mounts left: {:?}",
        mounts_containing(id)
    );
    assert!(
        !daemon.state().join("netns").join(id).exists(),
        "netns pin left"
    );
    assert!(
        !daemon.state().join("sandboxes").join(id).exists(),
        "sandbox dir left"
    );
    let cgroups = cgroup_dirs_containing(cgroup_tag);
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
}

/// Asserts that the daemon's network holds no veth and no IP allocation.
/// A refused RunPodSandbox left nothing: no pod listed, no sandbox directory or netns pin, no
/// mount, cgroup, veth or IP.
async fn assert_nothing_half_made(rt: &mut Rt, daemon: &Daemon, tag: &str) {
    let pods = cri::all_pods(rt).await;
    assert!(pods.is_empty(), "no half-made pod listed");
    for dir in ["sandboxes", "netns"] {
        let left = dir_entries(&daemon.state().join(dir));
        assert!(left.is_empty(), "nothing left in {dir}: {left:?}");
    }
    assert!(mounts_containing(&daemon.dir().to_string_lossy()).is_empty());
    assert!(cgroup_dirs_containing(&test_cgroup_root(tag)).is_empty());
    assert!(daemon.net.veths().is_empty(), "the veth was deleted");
    assert!(daemon.net.allocated_ips().is_empty(), "the IP was released");
}

/// Runs pod `name` and removes it again: proof that the name (or the network) works.
async fn run_and_remove(rt: &mut Rt, name: &str, tag: &str) {
    let config = pod_config(name, &unique_cgroup_parent(tag), (POD, CONTAINER, POD));
    let id = run_pod(rt, &config).await;
    stop_and_remove(rt, &id).await;
}

fn assert_network_empty(daemon: &Daemon) {
    assert!(
        daemon.net.veths().is_empty(),
        "veths left: {:?}",
        daemon.net.veths()
    );
    assert!(
        daemon.net.allocated_ips().is_empty(),
        "IP allocations left: {:?}",
        daemon.net.allocated_ips()
    );
}

#[tokio::test]
async fn default_pod_has_own_namespaces_network_and_cgroup() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    let mut rt = daemon.runtime().await;
    let tag = "dflt";
    let parent = unique_cgroup_parent(tag);
    let id = run_pod(&mut rt, &pod_config("web", &parent, (POD, CONTAINER, POD))).await;
    let (st, info) = status(&mut rt, &id).await;
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    let pid = pause_pid(&info);
    assert!(process_alive(pid));

    let me = std::process::id() as i32;
    for ns in ["net", "ipc", "uts"] {
        assert_ne!(
            ns_inode(pid, ns),
            ns_inode(me, ns),
            "{ns} namespace shared with host"
        );
        let reported = info["namespaces"][ns]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(
            reported,
            format!("{ns}:[{}]", ns_inode(pid, ns)),
            "status {ns}"
        );
    }
    // CONTAINER pid mode at pod level: the pause needs no pid namespace of its own.
    assert_eq!(ns_inode(pid, "pid"), ns_inode(me, "pid"));

    // The pod's loopback is up, so its containers can talk over 127.0.0.1.
    let lo = Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-n",
            "ip",
            "-o",
            "link",
            "show",
            "lo",
        ])
        .output()
        .unwrap();
    let lo = String::from_utf8_lossy(&lo.stdout);
    assert!(lo.contains("LOOPBACK,UP"), "lo is down in the pod: {lo}");

    let hostname = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-u", "hostname"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hostname.stdout).trim(), "web");

    let ip = st.network.unwrap().ip;
    assert!(
        ip.starts_with(&format!("{}.", daemon.net.prefix)),
        "pod IP {ip} not in {}",
        daemon.net.subnet()
    );
    let ping = Command::new("ping")
        .args(["-c", "1", "-W", "5", &ip])
        .output()
        .expect("ping (iputils-ping) installed");
    assert!(
        ping.status.success(),
        "ping {ip}: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // The pause sits in its own cgroup under the pod cgroup, in v1 and v2 hierarchies.
    let expected = format!("{parent}/{id}");
    assert_eq!(cgroup_of(pid, "memory").as_deref(), Some(expected.as_str()));
    assert_eq!(cgroup_of(pid, "pids").as_deref(), Some(expected.as_str()));
    assert!(std::path::Path::new(&format!("/sys/fs/cgroup/memory{parent}")).is_dir());

    // The pod's files.
    let dir = daemon.state().join("sandboxes").join(&id);
    assert_eq!(
        std::fs::read_to_string(dir.join("hostname"))
            .unwrap()
            .trim(),
        "web"
    );
    assert!(std::fs::read_to_string(dir.join("hosts"))
        .unwrap()
        .contains(&ip));
    assert!(
        mounts_containing(&format!("{id}/shm")).len() == 1,
        "shm tmpfs mounted"
    );

    stop_and_remove(&mut rt, &id).await;
    assert_no_leftovers(&daemon, &id, pid, &test_cgroup_root(tag));
    assert_network_empty(&daemon);
}

#[tokio::test]
async fn host_namespaces_and_shared_pid_namespace() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    let mut rt = daemon.runtime().await;
    let me = std::process::id() as i32;
    let tag = "host";
    let parent = unique_cgroup_parent(tag);

    let host = run_pod(
        &mut rt,
        &pod_config("hostnet", &parent, (NODE, CONTAINER, NODE)),
    )
    .await;
    let (_, info) = status(&mut rt, &host).await;
    let pid = pause_pid(&info);
    for ns in ["net", "ipc", "uts"] {
        assert_eq!(
            ns_inode(pid, ns),
            ns_inode(me, ns),
            "{ns} should be the host's"
        );
    }
    assert!(
        daemon.net.veths().is_empty(),
        "hostNetwork pod must not get a veth"
    );
    assert!(!daemon.state().join("netns").join(&host).exists());

    let shared = run_pod(
        &mut rt,
        &pod_config(
            "sharedpid",
            &parent.replace("podhost", "podhost2"),
            (POD, POD, POD),
        ),
    )
    .await;
    let (_, info2) = status(&mut rt, &shared).await;
    let pid2 = pause_pid(&info2);
    assert_ne!(ns_inode(pid2, "pid"), ns_inode(me, "pid"));
    let st = std::fs::read_to_string(format!("/proc/{pid2}/status")).unwrap();
    let nspid = st.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert_eq!(
        nspid.split_whitespace().last(),
        Some("1"),
        "pause is PID 1: {nspid}"
    );

    stop_and_remove(&mut rt, &host).await;
    stop_and_remove(&mut rt, &shared).await;
    assert_no_leftovers(&daemon, &host, pid, &format!("corral-e2e-{me}-{tag}"));
    assert_no_leftovers(&daemon, &shared, pid2, &format!("corral-e2e-{me}-{tag}"));
    assert_network_empty(&daemon);
}

#[tokio::test]
async fn sysctls_apply_inside_the_pod_only() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    let mut rt = daemon.runtime().await;
    let mut config = pod_config(
        "sysctl",
        &unique_cgroup_parent("sysctl"),
        (POD, CONTAINER, POD),
    );
    let linux = config.linux.as_mut().unwrap();
    linux
        .sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "77".into());
    linux.sysctls.insert("kernel.shmmni".into(), "1234".into());
    let id = run_pod(&mut rt, &config).await;
    let (_, info) = status(&mut rt, &id).await;
    let pid = pause_pid(&info).to_string();
    let inside = |ns: &str, file: &str| {
        let out = Command::new("nsenter")
            .args(["-t", &pid, ns, "cat", file])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        inside("-n", "/proc/sys/net/ipv4/ip_unprivileged_port_start"),
        "77"
    );
    assert_eq!(inside("-i", "/proc/sys/kernel/shmmni"), "1234");
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    assert_ne!(host.trim(), "77", "host sysctl changed");
    stop_and_remove(&mut rt, &id).await;
}

#[tokio::test]
async fn stop_is_idempotent_and_remove_of_unknown_succeeds() {
    require_root!();
    let mut daemon = Daemon::start(DaemonOptions::default());
    let mut rt = daemon.runtime().await;
    let tag = "idem";
    let id = run_pod(
        &mut rt,
        &pod_config("idem", &unique_cgroup_parent(tag), (POD, CONTAINER, POD)),
    )
    .await;
    let (_, info) = status(&mut rt, &id).await;
    let pid = pause_pid(&info);
    for _ in 0..2 {
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("StopPodSandbox twice");
    }
    let (st, info) = status(&mut rt, &id).await;
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    assert_eq!(info["processStatus"], "stopped");
    daemon.restart();
    let mut rt = daemon.runtime().await;
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .expect("StopPodSandbox after restart");
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .expect("RemovePodSandbox");
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .expect("RemovePodSandbox of a removed pod succeeds");
    assert_no_leftovers(&daemon, &id, pid, &test_cgroup_root(tag));
    assert_network_empty(&daemon);
    // The same name can be used again after removal.
    run_and_remove(&mut rt, "idem", tag).await;
}

#[tokio::test]
async fn ten_pods_survive_kill_9_of_corrald() {
    require_root!();
    let mut daemon = Daemon::start(DaemonOptions::default());
    let mut rt = daemon.runtime().await;
    let tag = "ten";
    let mut before = Vec::new();
    for i in 0..10 {
        let name = format!("p{i}");
        let parent = format!("{}{i}", unique_cgroup_parent(tag));
        let id = run_pod(&mut rt, &pod_config(&name, &parent, (POD, CONTAINER, POD))).await;
        let (st, info) = status(&mut rt, &id).await;
        before.push((id, st.network.unwrap().ip, pause_pid(&info)));
    }
    daemon.kill9_and_restart();
    let mut rt = daemon.runtime().await;
    let listed = rt
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                state: Some(PodSandboxStateValue {
                    state: PodSandboxState::SandboxReady as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(listed.len(), 10, "all ten pods READY after restart");
    for (id, ip, _) in &before {
        let (st, _) = status(&mut rt, id).await;
        assert_eq!(&st.network.unwrap().ip, ip, "same IP after restart");
    }
    // A pod name is still taken after the restart.
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config(
                "p0",
                &format!("{}0", unique_cgroup_parent(tag)),
                (POD, CONTAINER, POD),
            )),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    for (i, (id, _, pid)) in before.iter().enumerate() {
        stop_and_remove(&mut rt, id).await;
        // This pod's own cgroup is gone; the shared parent stays while other pods use it.
        assert_no_leftovers(
            &daemon,
            id,
            *pid,
            &format!("{}{i}", unique_cgroup_parent(tag)),
        );
    }
    let root = test_cgroup_root(tag);
    assert!(
        cgroup_dirs_containing(&root).is_empty(),
        "shared parent removed with the last pod"
    );
    assert_network_empty(&daemon);
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    let mut rt = daemon.runtime().await;
    let tag = "bad";
    let good = || pod_config("bad", &unique_cgroup_parent(tag), (POD, CONTAINER, POD));

    let expect = |r: Result<tonic::Response<RunPodSandboxResponse>, tonic::Status>,
                  code: Code,
                  needle: &str| {
        let err = r.expect_err("should fail");
        assert_eq!(err.code(), code, "{err:?}");
        assert!(
            err.message().contains(needle),
            "message {:?} should name {needle}",
            err.message()
        );
    };

    type Edit = Box<dyn Fn(&mut PodSandboxConfig)>;
    let sysctl = |key: &'static str| -> Edit {
        Box::new(move |c| {
            c.linux
                .as_mut()
                .unwrap()
                .sysctls
                .insert(key.into(), "1".into());
        })
    };
    // (runtime handler, change to a good config, expected code, what the message must name)
    let cases: Vec<(&str, Edit, Code, &str)> = vec![
        (
            "",
            Box::new(|c| c.metadata = None),
            Code::InvalidArgument,
            "metadata",
        ),
        (
            "",
            sysctl("kernel.no_such_thing"),
            Code::InvalidArgument,
            "kernel.no_such_thing",
        ),
        (
            "",
            sysctl("vm.swappiness"),
            Code::InvalidArgument,
            "vm.swappiness",
        ),
        (
            "",
            Box::new(|c| c.linux.as_mut().unwrap().cgroup_parent = "/kubepods/../../etc".into()),
            Code::InvalidArgument,
            "cgroup_parent",
        ),
        (
            "nosuch",
            Box::new(|_| {}),
            Code::InvalidArgument,
            "runtime_handler",
        ),
    ];
    for (handler, edit, code, needle) in cases {
        let mut config = good();
        edit(&mut config);
        let result = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: handler.into(),
            })
            .await;
        expect(result, code, needle);
    }

    let err = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: "0123456789abcdef".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("0123456789abcdef"));
    // Stop is idempotent: an unknown id has nothing to stop (CRI; critest v1.36 checks it).
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: "0123456789abcdef".into(),
    })
    .await
    .expect("StopPodSandbox of an unknown id");

    let id = run_pod(&mut rt, &good()).await;
    expect(
        rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(good()),
            runtime_handler: String::new(),
        })
        .await,
        Code::AlreadyExists,
        &id,
    );
    let mut next = good();
    next.metadata.as_mut().unwrap().attempt = 1;
    let id2 = run_pod(&mut rt, &next).await;
    stop_and_remove(&mut rt, &id).await;
    stop_and_remove(&mut rt, &id2).await;
    assert!(cgroup_dirs_containing(&test_cgroup_root(tag)).is_empty());
}

#[tokio::test]
async fn failed_run_undoes_everything() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    // A network whose second plugin does not exist: ADD fails after the bridge made a veth.
    let conf = daemon.dir().join("cni-conf/10-test.conflist");
    let mut list: Value = serde_json::from_str(&std::fs::read_to_string(&conf).unwrap()).unwrap();
    list["plugins"][1] = serde_json::json!({ "type": "no-such-plugin" });
    std::fs::write(&conf, list.to_string()).unwrap();
    let mut rt = daemon.runtime().await;
    let tag = "undo";
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config(
                "undo",
                &unique_cgroup_parent(tag),
                (POD, CONTAINER, POD),
            )),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("CNI"),
        "error names the step: {err:?}"
    );
    assert!(
        err.message().contains("no-such-plugin"),
        "error names the plugin: {err:?}"
    );
    assert_nothing_half_made(&mut rt, &daemon, tag).await;
    // The same pod works once the network is fixed.
    std::fs::write(&conf, daemon.net.conflist()).unwrap();
    run_and_remove(&mut rt, "undo", tag).await;
}

#[tokio::test]
async fn version_status_and_unimplemented() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions {
        with_cni: false,
        ..Default::default()
    });
    let mut rt = daemon.runtime().await;
    let v = rt
        .version(VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "corral");
    assert_eq!(v.runtime_api_version, "v1");
    let st = rt
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conds = st.status.unwrap().conditions;
    let net = conds.iter().find(|c| c.r#type == "NetworkReady").unwrap();
    assert!(!net.status);
    assert!(
        net.message.contains("cni-conf"),
        "reason names the dir: {}",
        net.message
    );
    assert!(conds.iter().any(|c| c.r#type == "RuntimeReady" && c.status));
    let config: Value = serde_json::from_str(&st.info["config"]).unwrap();
    assert_eq!(config["cgroup_driver"], "cgroupfs");
    assert_cgroup_driver(&mut rt, CgroupDriver::Cgroupfs).await;
    // No CNI config: a pod that needs a network is refused with the reason.
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config(
                "nonet",
                &unique_cgroup_parent("nonet"),
                (POD, CONTAINER, POD),
            )),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // Every CRI v1 RPC is served now (the metrics ones included).
    let descriptors = rt
        .list_metric_descriptors(ListMetricDescriptorsRequest::default())
        .await
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors;
    assert!(!descriptors.is_empty());
    rt.update_runtime_config(UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig {
            network_config: Some(NetworkConfig {
                pod_cidr: "10.244.0.0/16".into(),
            }),
        }),
    })
    .await
    .expect("UpdateRuntimeConfig");
}

#[tokio::test]
async fn list_filters_and_stream() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    let mut rt = daemon.runtime().await;
    let a = run_pod(
        &mut rt,
        &pod_config(
            "lista",
            &unique_cgroup_parent("lista"),
            (POD, CONTAINER, POD),
        ),
    )
    .await;
    let b = run_pod(
        &mut rt,
        &pod_config(
            "listb",
            &unique_cgroup_parent("listb"),
            (POD, CONTAINER, POD),
        ),
    )
    .await;
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: b.clone(),
    })
    .await
    .unwrap();
    let list = |filter: PodSandboxFilter| {
        let mut rt = rt.clone();
        async move {
            let mut ids: Vec<String> = rt
                .list_pod_sandbox(ListPodSandboxRequest {
                    filter: Some(filter),
                })
                .await
                .unwrap()
                .into_inner()
                .items
                .into_iter()
                .map(|p| p.id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(
        list(PodSandboxFilter {
            id: a[..8].into(),
            ..Default::default()
        })
        .await,
        vec![a.clone()]
    );
    assert_eq!(
        list(PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxNotready as i32
            }),
            ..Default::default()
        })
        .await,
        vec![b.clone()]
    );
    assert_eq!(
        list(PodSandboxFilter {
            label_selector: [("app".into(), "lista".into())].into(),
            ..Default::default()
        })
        .await,
        vec![a.clone()]
    );
    let mut stream = rt
        .stream_pod_sandboxes(StreamPodSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(msg) = stream.message().await.unwrap() {
        streamed.extend(msg.pod_sandboxes.into_iter().map(|p| p.id));
    }
    streamed.sort();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(streamed, both);
    // A unique id prefix works for status, as crictl users type it.
    let st = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: a[..12].into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.status.unwrap().id, a);
    stop_and_remove(&mut rt, &a).await;
    stop_and_remove(&mut rt, &b).await;
}

#[tokio::test]
async fn pod_resources_oom_score_and_port_mappings() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    let mut rt = daemon.runtime().await;
    let parent = unique_cgroup_parent("res");
    let mut config = pod_config("res", &parent, (POD, CONTAINER, POD));
    let linux = config.linux.as_mut().unwrap();
    linux.resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 256 << 20,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        ..Default::default()
    });
    linux.overhead = Some(LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        ..Default::default()
    });
    config.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 80,
        host_port: 38080,
        host_ip: String::new(),
    }];
    let id = run_pod(&mut rt, &config).await;
    let (_, info) = status(&mut rt, &id).await;
    let pid = pause_pid(&info);

    // Pod-level limits (resources + overhead) on the pod cgroup itself.
    let memory = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory{parent}/memory.limit_in_bytes"
    ))
    .unwrap();
    assert_eq!(memory.trim(), ((256u64 + 16) << 20).to_string());
    let quota =
        std::fs::read_to_string(format!("/sys/fs/cgroup/cpu{parent}/cpu.cfs_quota_us")).unwrap();
    assert_eq!(quota.trim(), "50000");

    // An in-place resize: UpdatePodSandboxResources sets the new pod-level limits.
    rt.update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: id.clone(),
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 512 << 20,
            cpu_quota: 80_000,
            cpu_period: 100_000,
            ..Default::default()
        }),
        overhead: Some(LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        }),
    })
    .await
    .expect("UpdatePodSandboxResources");
    let read = |file: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{file}")).unwrap();
    assert_eq!(
        read(&format!("memory{parent}/memory.limit_in_bytes")).trim(),
        ((512u64 + 16) << 20).to_string()
    );
    assert_eq!(
        read(&format!("cpu{parent}/cpu.cfs_quota_us")).trim(),
        "80000"
    );
    let err = rt
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: id.clone(),
            resources: None,
            overhead: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = rt
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "0123456789abcdef".into(),
            resources: Some(LinuxContainerResources::default()),
            overhead: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // -998, or clamped to what the runtime itself has when it may not lower it.
    let pause_adj: i32 = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let own_adj: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        pause_adj == -998 || pause_adj == own_adj,
        "pause oom_score_adj {pause_adj}, ours {own_adj}"
    );

    // The port mapping reached the portmap plugin: a DNAT rule for this sandbox and port.
    let nat = Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&nat.stdout);
    assert!(
        rules
            .lines()
            .any(|l| l.contains("38080") && l.contains("DNAT")),
        "no DNAT rule for hostPort 38080:\n{rules}"
    );
    stop_and_remove(&mut rt, &id).await;
    let nat = Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&nat.stdout).contains(&id[..12]),
        "portmap rules left"
    );
    assert_no_leftovers(&daemon, &id, pid, &test_cgroup_root("res"));
    assert_network_empty(&daemon);
}

#[tokio::test]
async fn systemd_cgroup_driver_names_slices_and_scopes() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions {
        cgroup_driver: "systemd",
        ..Default::default()
    });
    let mut rt = daemon.runtime().await;
    let tag = format!("corrale2e{}", std::process::id());
    let slice = format!("{tag}-podsd.slice");
    let id = run_pod(&mut rt, &pod_config("sd", &slice, (POD, CONTAINER, POD))).await;
    let (_, info) = status(&mut rt, &id).await;
    let pid = pause_pid(&info);
    let expected = format!("/{tag}.slice/{slice}/corral-{id}.scope");
    assert_eq!(cgroup_of(pid, "memory").as_deref(), Some(expected.as_str()));
    assert_cgroup_driver(&mut rt, CgroupDriver::Systemd).await;
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("sdbad", "/not/a/slice", (POD, CONTAINER, POD))),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("cgroup_parent"), "{}", err.message());
    stop_and_remove(&mut rt, &id).await;
    assert_no_leftovers(&daemon, &id, pid, &tag);
}

/// The pod's own work (cgroup, shm) runs while its CNI ADD does: when that work fails (here a
/// pod-level cpuset naming a CPU the node lacks), the ADD that succeeded beside it is undone
/// with everything else.
#[tokio::test]
async fn a_failure_beside_the_cni_add_undoes_the_network_too() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    let mut rt = daemon.runtime().await;
    let tag = "undo-beside-add";
    let mut config = pod_config(
        "undo-beside-add",
        &unique_cgroup_parent(tag),
        (POD, CONTAINER, POD),
    );
    if let Some(linux) = config.linux.as_mut() {
        linux.resources = Some(LinuxContainerResources {
            cpuset_cpus: "4095".into(),
            ..Default::default()
        });
    }
    let err = cri::try_run_pod(&mut rt, config).await.unwrap_err();
    assert!(
        err.message().contains("config.linux.resources"),
        "the error names the step: {err:?}"
    );
    assert_nothing_half_made(&mut rt, &daemon, tag).await;
}
