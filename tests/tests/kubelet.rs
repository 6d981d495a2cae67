//! A real kubelet (v1.20.2, CRI `runtime.v1alpha2`) drives a private corrald: static pods with
//! shared volumes, HostToContainer propagation, limits, probes, restarts, logs, stats and
//! removal, checked through kubelet's read-only API and through the runtime.
//!
//! kubelet comes from `scripts/build-kubelet.sh` (`$CORRAL_KUBELET`, set by `scripts/test.sh`).
//! Without it the suite fails under `CI=true` and is skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use corral_e2e::cri::{exec, Rt};
use corral_e2e::kubelet::{kubelet_binary, HostState, Kubelet};
use corral_e2e::*;
use cri_proto::v1::*;
use serde_json::{json, Value};

const NODE: &str = "corral-e2e-node";

/// Polls `check` every second until it returns `Some`, for at most `timeout`.
async fn poll<T>(
    timeout: Duration,
    what: &str,
    kubelet: &Kubelet,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; kubelet log (tail):\n{}",
            kubelet.log_tail()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn container_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

/// A container of the pod `pod` (kubelet's labels) as the runtime lists it.
async fn runtime_container(rt: &mut Rt, pod: &str, name: &str) -> Container {
    let listed = rt
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerRunning.into(),
                }),
                label_selector: [
                    (
                        "io.kubernetes.pod.name".to_string(),
                        format!("{pod}-{NODE}"),
                    ),
                    ("io.kubernetes.container.name".to_string(), name.to_string()),
                ]
                .into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1, "running {pod}/{name}: {listed:?}");
    listed.into_iter().next().unwrap()
}

fn web_pod(image: &str, host_dir: &Path) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "volumes": [
                {"name": "shared", "emptyDir": {}},
                {"name": "host", "hostPath": {"path": host_dir, "type": "Directory"}}
            ],
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "command": ["sh", "-c", "echo hello > /shared/hello; touch /tmp/ready; exec sleep 3600"],
                    "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                    "volumeMounts": [
                        {"name": "shared", "mountPath": "/shared"},
                        {"name": "host", "mountPath": "/host", "mountPropagation": "HostToContainer"}
                    ],
                    "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1},
                    "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 2}
                },
                {
                    "name": "side",
                    "image": image,
                    "command": ["sh", "-c", "exec sleep 3600"],
                    "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]
                }
            ]
        }
    })
}

/// `exits` ends with code 3 after a second; `unhealthy` fails its liveness probe after a few
/// seconds and exits 7 on the SIGTERM kubelet then sends.
fn crashy_pod(image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "crashy", "namespace": "default"},
        "spec": {
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "exits",
                    "image": image,
                    "command": ["sh", "-c", "echo exits-run-$(cat /proc/sys/kernel/random/uuid); sleep 1; exit 3"]
                },
                {
                    "name": "unhealthy",
                    "image": image,
                    "command": ["sh", "-c", "trap 'exit 7' TERM; touch /tmp/alive; (sleep 4; rm /tmp/alive) & while true; do sleep 1; done"],
                    "livenessProbe": {
                        "exec": {"command": ["cat", "/tmp/alive"]},
                        "periodSeconds": 1,
                        "failureThreshold": 1
                    }
                }
            ]
        }
    })
}

/// Every path under `dir`, for failure messages.
fn list_tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            out.push(entry.path().display().to_string());
            out.extend(list_tree(&entry.path()));
        }
    }
    out
}

/// Makes `dir` a mount point of its own with shared propagation (`/` is private on some hosts),
/// as a hostPath with HostToContainer propagation needs.
fn make_shared_mount(dir: &Path) {
    use nix::mount::{mount, MsFlags};
    std::fs::create_dir_all(dir).unwrap();
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).expect("bind mount");
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .expect("make shared");
}

#[tokio::test]
async fn kubelet_runs_static_pods_through_corrald() {
    require_root!();
    let Some(binary) = kubelet_binary() else {
        return;
    };
    if let Some(reason) = registry::skip_reason() {
        // The CI installs the registry; a missing one fails there like a missing kubelet.
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
        eprintln!("skipped: {reason}");
        return;
    }
    let host = HostState::save();
    let registry = registry::Registry::start();
    let image = images::push_busybox(&registry, "e2e/busybox", "1", images::default_config());
    let daemon = Daemon::start(DaemonOptions::default());
    let mut rt = daemon.runtime().await;
    let host_dir = daemon.dir().join("hostshare");
    make_shared_mount(&host_dir);
    let kubelet_dir = daemon.dir().join("kubelet");
    let kubelet = Kubelet::start(&binary, &daemon.socket(), &kubelet_dir);
    let manifests = kubelet.manifests();
    std::fs::write(
        manifests.join("web.json"),
        web_pod(&image, &host_dir).to_string(),
    )
    .unwrap();
    std::fs::write(
        manifests.join("crashy.json"),
        crashy_pod(&image).to_string(),
    )
    .unwrap();

    // The two-container pod runs with both containers ready.
    let web = poll(
        Duration::from_secs(180),
        "web Running and ready",
        &kubelet,
        || {
            let pod = kubelet.pod("web")?;
            let ready = ["main", "side"]
                .iter()
                .all(|c| container_status(&pod, c).is_some_and(|s| s["ready"] == true));
            (pod["status"]["phase"] == "Running" && ready).then_some(pod)
        },
    )
    .await;
    let web_uid = web["metadata"]["uid"].as_str().unwrap().to_string();
    let main = runtime_container(&mut rt, "web", "main").await;
    let side = runtime_container(&mut rt, "web", "side").await;
    let web_sandbox = main.pod_sandbox_id.clone();

    // emptyDir: what one container wrote, the other reads.
    let (code, out, _) = exec(&mut rt, &side.id, &["cat", "/shared/hello"]).await;
    assert_eq!((code, out.trim()), (0, "hello"));
    // HostToContainer: a mount made on the host after the start is seen inside.
    let late = host_dir.join("late");
    std::fs::create_dir_all(&late).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &late,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    std::fs::write(late.join("file"), "from the host").unwrap();
    let (code, out, err) = exec(&mut rt, &main.id, &["cat", "/host/late/file"]).await;
    assert_eq!((code, out.as_str()), (0, "from the host"), "{err}");
    // Limits in the container's own cgroup, nested in kubelet's pod cgroup.
    let pid = corral_e2e::cri::pid(&mut rt, &main.id).await;
    let cpu = cgroup_of(pid, "cpu").expect("cpu cgroup");
    assert!(
        cpu.contains(&format!("pod{web_uid}")) && cpu.ends_with(&main.id),
        "{cpu}"
    );
    let quota =
        std::fs::read_to_string(format!("/sys/fs/cgroup/cpu{cpu}/cpu.cfs_quota_us")).unwrap();
    assert_eq!(quota.trim(), "50000");
    let memory = cgroup_of(pid, "memory").expect("memory cgroup");
    let limit = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory{memory}/memory.limit_in_bytes"
    ))
    .unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());

    // Restarts: by restartPolicy after an exit, and after a failed liveness probe, each with
    // the previous run's exit code.
    let crashy = poll(
        Duration::from_secs(180),
        "crashy's containers restarted",
        &kubelet,
        || {
            let pod = kubelet.pod("crashy")?;
            let restarted = |name: &str, code: i64| {
                container_status(&pod, name).is_some_and(|s| {
                    s["restartCount"].as_i64() >= Some(1)
                        && s["lastState"]["terminated"]["exitCode"].as_i64() == Some(code)
                })
            };
            (restarted("exits", 3) && restarted("unhealthy", 7)).then_some(pod)
        },
    )
    .await;
    let crashy_uid = crashy["metadata"]["uid"].as_str().unwrap().to_string();
    let unhealthy = container_status(&crashy, "unhealthy").unwrap();
    assert_eq!(
        unhealthy["lastState"]["terminated"]["reason"], "Error",
        "{unhealthy}"
    );
    // Both runs of `exits` are in its logs (`<restart count>.log`; kubelet keeps the last two).
    let log_dir = Path::new("/var/log/pods")
        .join(format!("default_crashy-{NODE}_{crashy_uid}"))
        .join("exits");
    let runs = poll(
        Duration::from_secs(60),
        "two logs of exits",
        &kubelet,
        || {
            let runs: Vec<String> = std::fs::read_dir(&log_dir)
                .ok()?
                .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
                .filter(|text| text.contains("exits-run-"))
                .collect();
            if runs.len() < 2 {
                eprintln!("logs so far: {:?}", list_tree(Path::new("/var/log/pods")));
            }
            (runs.len() >= 2).then_some(runs)
        },
    )
    .await;
    assert_ne!(runs[0], runs[1]);

    // kubelet's stats for the pod and its containers.
    poll(
        Duration::from_secs(120),
        "web in /stats/summary",
        &kubelet,
        || {
            let summary = kubelet.get_json("/stats/summary")?;
            let pod = summary["pods"]
                .as_array()?
                .iter()
                .find(|p| p["podRef"]["uid"] == web_uid.as_str())?
                .clone();
            let has_usage = |v: &Value| {
                v["cpu"]["usageCoreNanoSeconds"].as_u64().is_some()
                    && v["memory"]["workingSetBytes"].as_u64().is_some()
            };
            let containers = pod["containers"].as_array()?;
            let both = ["main", "side"].iter().all(|name| {
                containers
                    .iter()
                    .any(|c| c["name"] == *name && has_usage(c))
            });
            (has_usage(&pod) && both).then_some(())
        },
    )
    .await;

    // Deleting the manifests stops the pods; kubelet's GC (every minute) removes them.
    let pids = [corral_e2e::cri::pause_pid(&mut rt, &web_sandbox).await, pid];
    std::fs::remove_file(manifests.join("web.json")).unwrap();
    std::fs::remove_file(manifests.join("crashy.json")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let left = cri::all_pods(&mut rt).await;
        if left.is_empty() && kubelet.pod("web").is_none() && kubelet.pod("crashy").is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pods not removed: {left:?}; kubelet log (tail):\n{}",
            kubelet.log_tail()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for pid in pids {
        assert!(!process_alive(pid), "process {pid} still runs");
    }
    for id in [&web_sandbox, &main.id, &side.id] {
        assert!(
            mounts_containing(id).is_empty(),
            "{:?}",
            mounts_containing(id)
        );
    }
    let state = daemon.state().display().to_string();
    let pins: Vec<String> = mounts_containing(&state)
        .into_iter()
        .filter(|m| m.contains("netns"))
        .collect();
    assert!(pins.is_empty(), "netns pins left: {pins:?}");
    assert!(daemon.net.veths().is_empty(), "{:?}", daemon.net.veths());
    let removed = wait_for(Duration::from_secs(30), || {
        cgroup_dirs_containing(&web_uid).is_empty()
            && cgroup_dirs_containing(&crashy_uid).is_empty()
    });
    assert!(removed, "{:?}", cgroup_dirs_containing(&web_uid));

    drop(kubelet);
    unmount_under(&host_dir);
    drop(daemon);
    drop(registry);
    drop(host);
}
