//! Crash safety (issue 10, item 1): corrald killed with SIGKILL at any step of RunPodSandbox,
//! CreateContainer, StartContainer, StopPodSandbox, RemovePodSandbox and RemoveContainer, or at
//! a random moment of 30 concurrent pod lifecycles, leaves nothing behind once it is restarted
//! (and, for an interrupted stop or removal, the client's retry has finished the job): no
//! process, mount, netns pin, veth, IP allocation, cgroup, file or record of the victims, and
//! the pods and containers it had acknowledged are intact.
//!
//! The step tests use corrald's test-only crash points (`CORRAL_CRASH_AT=<step>`, see
//! `crates/corrald/src/crash.rs`); the random test kills it from outside.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_e2e::cri::{self, container_env, ContainerEnv};
use corral_e2e::*;
use cri_proto::v1::*;

const POD: i32 = NamespaceMode::Pod as i32;

/// Every crash point of corrald, as `corrald --crash-steps` lists them (`corrald/src/crash.rs`
/// is the one list).
fn steps() -> Vec<String> {
    let out = std::process::Command::new(built_binary("corrald"))
        .arg("--crash-steps")
        .output()
        .expect("run corrald --crash-steps");
    assert!(out.status.success(), "corrald --crash-steps: {out:?}");
    let steps: Vec<String> = String::from_utf8(out.stdout)
        .expect("step names are UTF-8")
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        steps.len() > 10 && steps.iter().all(|s| s.contains(':')),
        "corrald --crash-steps printed {steps:?}"
    );
    steps
}

/// A test's daemon and, on every way out of the test (an assertion, a corrald that would not
/// restart after a crash), the teardown of what its pods may have left: first the daemon's
/// own (it removes every pod it still answers for, and unmounts what lies under its
/// directory), then by force whatever remains: processes in the test's cgroups or naming the
/// daemon's directory (pauses, shims, containers), then the test's cgroup directories.
struct Harness {
    env: Option<ContainerEnv>,
    cgroup_tag: String,
}

impl Harness {
    fn env(&mut self) -> &mut ContainerEnv {
        self.env
            .as_mut()
            .expect("the harness holds its daemon until dropped")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let Some(env) = self.env.take() else {
            return;
        };
        let dir = env.daemon.dir().to_string_lossy().into_owned();
        drop(env);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut killed = BTreeSet::new();
        loop {
            // Those re-parented to this test process (a subreaper) are reaped here: a pause
            // that is its PID namespace's init does not finish exiting before the namespace's
            // other processes are reaped.
            for pid in &killed {
                let _ = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(*pid),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
            let left = processes_of(&dir, None, &self.cgroup_tag);
            if left.is_empty() || std::time::Instant::now() > deadline {
                break;
            }
            for process in left {
                if let Some(pid) = process.rsplit(' ').next().and_then(|p| p.parse().ok()) {
                    if killed.insert(pid) {
                        eprintln!("killing what the test left: {process}");
                    }
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        remove_cgroup_dirs(&self.cgroup_tag);
    }
}

/// The two tests below compare snapshots of processes re-parented to this test process, so
/// they must not run at once.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What of the host a daemon's pods can hold, restricted to that daemon and this test.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Host {
    /// `name pid` of pause and shim processes (children of the daemon or, re-parented, of this
    /// test process), of processes in the tests' cgroups, and of any naming the daemon's dir.
    processes: BTreeSet<String>,
    mounts: BTreeSet<String>,
    /// Entries of the daemon's per-pod and per-container directories.
    files: BTreeSet<String>,
    veths: BTreeSet<String>,
    ips: BTreeSet<String>,
    cgroups: BTreeSet<String>,
    pods: BTreeSet<String>,
    containers: BTreeSet<String>,
}

fn proc_text(pid: &str, file: &str) -> String {
    std::fs::read(format!("/proc/{pid}/{file}"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

fn processes(daemon: &Daemon, cgroup_tag: &str) -> BTreeSet<String> {
    processes_of(
        &daemon.dir().to_string_lossy(),
        Some(daemon.pid().to_string()),
        cgroup_tag,
    )
}

/// `name pid` of the processes of the daemon whose directory is `dir` (but the daemon, when
/// `daemon_pid` names it) and of this test; see [`Host::processes`].
fn processes_of(dir: &str, daemon_pid: Option<String>, cgroup_tag: &str) -> BTreeSet<String> {
    let me = std::process::id().to_string();
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid.parse::<u32>().is_err() || Some(&pid) == daemon_pid.as_ref() {
            continue;
        }
        let status = proc_text(&pid, "status");
        let name = status_field(&status, "Name:");
        let ppid = status_field(&status, "PPid:");
        if status_field(&status, "State:").starts_with('Z') {
            continue;
        }
        let ours = (["corral-pause", "corral-shim"].contains(&name.as_str())
            && (ppid == me || Some(&ppid) == daemon_pid.as_ref()))
            || proc_text(&pid, "cgroup").contains(cgroup_tag)
            || proc_text(&pid, "cmdline").contains(dir)
            || proc_text(&pid, "environ").contains(dir);
        if ours {
            found.insert(format!("{name} {pid}"));
        }
    }
    found
}

fn files(daemon: &Daemon) -> BTreeSet<String> {
    let state = daemon.state();
    let mut dirs = vec![
        state.join("netns"),
        state.join("userns"),
        state.join("sandboxes"),
        state.join("containers"),
        state.join("cni"),
        daemon.root().join("containers"),
    ];
    if let Ok(runtimes) = std::fs::read_dir(state.join("runtimes")) {
        dirs.extend(runtimes.flatten().map(|e| e.path()));
    }
    let mut found = BTreeSet::new();
    for dir in dirs {
        list_into(&dir, 2, &mut found);
    }
    every_path_under(&daemon.dir().join(VOLUMES), &mut found);
    found
}

/// Where the tests' containers have their volumes: the host directories under it do not
/// exist, so CreateContainer makes them (as kubelet expects) and must not leak them.
const VOLUMES: &str = "volumes";

/// Makes the daemon's [`VOLUMES`] directory (before the baseline: only what is under it is
/// each container's).
fn make_volumes_dir(daemon: &Daemon) {
    std::fs::create_dir_all(daemon.dir().join(VOLUMES)).unwrap();
}

/// A victim's container: a sleeper with a volume at `/data` whose host directory
/// (`<daemon dir>/volumes/<name>/data`) is missing.
fn volume_sleeper(env: &ContainerEnv, name: &str) -> ContainerConfig {
    let mut config = sleeper(&env.image);
    let host = env.daemon.dir().join(VOLUMES).join(name).join("data");
    config.mounts.push(cri::mount(
        &host,
        "/data",
        MountPropagation::PropagationPrivate,
    ));
    config
}

/// Every file and directory under `dir`, at any depth.
fn every_path_under(dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        out.insert(path.to_string_lossy().into_owned());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            every_path_under(&path, out);
        }
    }
}

fn list_into(dir: &Path, depth: usize, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() && depth > 1 {
            list_into(&path, depth - 1, out);
        } else {
            out.insert(path.to_string_lossy().into_owned());
        }
    }
}

async fn snapshot(daemon: &Daemon, rt: &mut cri::Rt, cgroup_tag: &str) -> Host {
    let dir = daemon.dir().to_string_lossy().into_owned();
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    let containers = rt
        .list_containers(ListContainersRequest::default())
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    Host {
        processes: processes(daemon, cgroup_tag),
        mounts: mounts_containing(&dir).into_iter().collect(),
        files: files(daemon),
        veths: daemon.net.veths().into_iter().collect(),
        ips: daemon.net.allocated_ips().into_iter().collect(),
        cgroups: cgroup_dirs_containing(cgroup_tag)
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        pods: pods.into_iter().map(|p| p.id).collect(),
        containers: containers.into_iter().map(|c| c.id).collect(),
    }
}

/// What differs between `before` and `now`, if anything.
fn differences(before: &Host, now: &Host) -> Option<String> {
    let diff = |name: &str, a: &BTreeSet<String>, b: &BTreeSet<String>| {
        let left: Vec<_> = b.difference(a).collect();
        let gone: Vec<_> = a.difference(b).collect();
        (!left.is_empty() || !gone.is_empty())
            .then(|| format!("{name}: left {left:?}, gone {gone:?}"))
    };
    let problems: Vec<String> = [
        diff("processes", &before.processes, &now.processes),
        diff("mounts", &before.mounts, &now.mounts),
        diff("files", &before.files, &now.files),
        diff("veths", &before.veths, &now.veths),
        diff("IPs", &before.ips, &now.ips),
        diff("cgroups", &before.cgroups, &now.cgroups),
        diff("pods", &before.pods, &now.pods),
        diff("containers", &before.containers, &now.containers),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!problems.is_empty()).then(|| problems.join("\n"))
}

/// Asserts that `now` is `before`, naming what differs.
fn assert_same(before: &Host, now: &Host, what: &str) {
    if let Some(problems) = differences(before, now) {
        panic!("{what}: the host is not as before:\n{problems}");
    }
}

/// A pod of this test: own network, PID and IPC namespaces, a cgroup parent under the tag.
fn pod(env: &ContainerEnv, name: &str, cgroup_tag: &str) -> PodSandboxConfig {
    let mut config = pod_config(
        name,
        &format!("/{cgroup_tag}-{name}/pod{name}"),
        (POD, POD, POD),
    );
    config.log_directory = env
        .daemon
        .dir()
        .join("logs")
        .join(name)
        .to_string_lossy()
        .into_owned();
    config
}

fn sleeper(image: &str) -> ContainerConfig {
    cri::container_config("c", image, &["sleep", "100000"])
}

async fn pod_containers(rt: &mut cri::Rt, pod_id: &str) -> Vec<Container> {
    rt.list_containers(ListContainersRequest {
        filter: Some(ContainerFilter {
            pod_sandbox_id: pod_id.into(),
            ..Default::default()
        }),
    })
    .await
    .expect("ListContainers")
    .into_inner()
    .containers
}

/// The acknowledged pod and container are as they were: listed, ready, running, same pause.
async fn check_intact(rt: &mut cri::Rt, pod_id: &str, container_id: &str, pause: i32, at: &str) {
    let status = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.into(),
            verbose: false,
        })
        .await
        .unwrap_or_else(|e| panic!("{at}: the acknowledged pod is gone: {e}"))
        .into_inner()
        .status
        .expect("status");
    assert_eq!(
        status.state,
        PodSandboxState::SandboxReady as i32,
        "{at}: the acknowledged pod is not ready"
    );
    assert_eq!(
        cri::pause_pid(rt, pod_id).await,
        pause,
        "{at}: pause changed"
    );
    let (st, _) = cri::status(rt, container_id).await;
    assert_eq!(
        st.state,
        ContainerState::ContainerRunning as i32,
        "{at}: the acknowledged container does not run"
    );
}

/// Kills corrald at each crash point in turn; after each restart the victim is gone (or gone
/// once the client retried the interrupted stop or removal) and the host is as before it.
#[tokio::test]
async fn a_crash_at_any_step_leaves_nothing_behind() {
    require_root!();
    let _serial = SERIAL.lock().await;
    let Some(env) = container_env().await else {
        return;
    };
    let tag = format!("corral-e2e-{}-crash", std::process::id());
    let mut harness = Harness {
        env: Some(env),
        cgroup_tag: tag.clone(),
    };
    let env = harness.env();
    make_volumes_dir(&env.daemon);
    // The acknowledged pod every crash must leave alone.
    let kept_config = pod(env, "kept", &tag);
    let kept = cri::run_pod(&mut env.rt, &kept_config).await;
    let kept_container = cri::run(&mut env.rt, &kept, &kept_config, sleeper(&env.image)).await;
    let kept_pause = cri::pause_pid(&mut env.rt, &kept).await;
    let mut baseline = snapshot(&env.daemon, &mut env.rt, &tag).await;
    // `CORRAL_CRASH_STEPS=a,b` runs only those steps.
    let only = std::env::var("CORRAL_CRASH_STEPS").unwrap_or_default();
    // Every step runs; the leaks of all of them are reported together at the end.
    let mut failed = Vec::new();

    for (n, step) in steps().iter().enumerate() {
        if !only.is_empty() && !only.split(',').any(|s| s == *step) {
            continue;
        }
        let mut problems = Vec::new();
        let (rpc, _) = step.split_once(':').unwrap();
        // What the victim RPC needs, made before the crash point is armed.
        let victim_config = pod(env, &format!("victim{n}"), &tag);
        let mut victim_pod = None;
        let mut victim_container = None;
        if rpc != "run_pod" {
            let id = cri::run_pod(&mut env.rt, &victim_config).await;
            if rpc != "create_container" {
                let container = volume_sleeper(env, &id);
                let c = cri::create(&mut env.rt, &id, &victim_config, container).await;
                if rpc != "start_container" {
                    env.rt
                        .start_container(StartContainerRequest {
                            container_id: c.clone(),
                        })
                        .await
                        .expect("StartContainer");
                }
                victim_container = Some(c);
            }
            victim_pod = Some(id);
        }
        let before_crash = snapshot(&env.daemon, &mut env.rt, &tag).await;

        env.daemon.set_env("CORRAL_CRASH_AT", Some(step.as_str()));
        env.daemon.restart();
        let mut rt = env.daemon.runtime().await;
        let pod_id = victim_pod.clone().unwrap_or_default();
        let container_id = victim_container.clone().unwrap_or_default();
        let answer = match rpc {
            "run_pod" => rt
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(victim_config.clone()),
                    runtime_handler: String::new(),
                })
                .await
                .map(|_| ()),
            "create_container" => cri::try_create(
                &mut rt,
                &pod_id,
                &victim_config,
                volume_sleeper(env, &pod_id),
            )
            .await
            .map(|_| ()),
            "start_container" => rt
                .start_container(StartContainerRequest {
                    container_id: container_id.clone(),
                })
                .await
                .map(|_| ()),
            "stop_pod" => rt
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod_id.clone(),
                })
                .await
                .map(|_| ()),
            "remove_pod" => rt
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod_id.clone(),
                })
                .await
                .map(|_| ()),
            "remove_container" => rt
                .remove_container(RemoveContainerRequest {
                    container_id: container_id.clone(),
                })
                .await
                .map(|_| ()),
            other => panic!("no RPC for {other}"),
        };
        assert!(answer.is_err(), "{step}: the RPC succeeded: {answer:?}");
        let exit = env.daemon.wait_exit(Duration::from_secs(60));
        assert!(
            exit.is_some_and(|s| std::os::unix::process::ExitStatusExt::signal(&s) == Some(9)),
            "{step}: corrald did not die at the crash point ({exit:?})"
        );
        env.daemon.set_env("CORRAL_CRASH_AT", None);
        env.daemon.start_again();
        env.rt = env.daemon.runtime().await;
        check_intact(&mut env.rt, &kept, &kept_container, kept_pause, step).await;

        // The interrupted RPC's object, as the client sees it after the restart.
        match rpc {
            // Never acknowledged: nothing of it may be left.
            "run_pod" | "create_container" => {
                let now = snapshot(&env.daemon, &mut env.rt, &tag).await;
                problems.extend(differences(&before_crash, &now));
            }
            // Unacknowledged: the client retries, which must succeed.
            "start_container" => {
                let retried = env
                    .rt
                    .start_container(StartContainerRequest {
                        container_id: container_id.clone(),
                    })
                    .await;
                if let Err(e) = retried {
                    problems.push(format!("StartContainer retried: {e}"));
                }
                let (st, _) = cri::status(&mut env.rt, &container_id).await;
                if st.state != ContainerState::ContainerRunning as i32 {
                    problems.push(format!("container is {:?} after the retry", st.state));
                }
            }
            "stop_pod" => {
                let retried = env
                    .rt
                    .stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: pod_id.clone(),
                    })
                    .await;
                if let Err(e) = retried {
                    problems.push(format!("StopPodSandbox retried: {e}"));
                }
            }
            "remove_container" => {
                let retried = env
                    .rt
                    .remove_container(RemoveContainerRequest {
                        container_id: container_id.clone(),
                    })
                    .await;
                if let Err(e) = retried {
                    problems.push(format!("RemoveContainer retried: {e}"));
                }
                if !pod_containers(&mut env.rt, &pod_id).await.is_empty() {
                    problems.push("the removed container is still listed".into());
                }
            }
            _ => {}
        }
        if victim_pod.is_some() {
            let stop = env
                .rt
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod_id.clone(),
                })
                .await;
            let remove = env
                .rt
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod_id.clone(),
                })
                .await;
            if let Err(e) = stop.and(remove) {
                problems.push(format!("stopping and removing the victim pod: {e}"));
            }
        }
        let now = snapshot(&env.daemon, &mut env.rt, &tag).await;
        problems.extend(differences(&baseline, &now));
        if problems.is_empty() {
            eprintln!("{step}: nothing left");
        } else {
            let report = format!("{step}:\n{}", problems.join("\n"));
            eprintln!("LEAK {report}");
            failed.push(report);
            // Judge the next steps on their own.
            baseline = now;
        }
    }
    assert!(failed.is_empty(), "leaks:\n{}", failed.join("\n"));

    cri::remove_pod(&mut env.rt, &kept).await;
    let empty = snapshot(&env.daemon, &mut env.rt, &tag).await;
    assert!(empty.pods.is_empty() && empty.processes.is_empty());
    assert!(empty.cgroups.is_empty(), "{:?}", empty.cgroups);
}

/// A small deterministic generator (xorshift64*), so that a failing run can be repeated with
/// its printed seed (`CORRAL_CRASH_SEED=<seed>`).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the client was told before the crash.
#[derive(Default)]
struct Acknowledged {
    pods: BTreeSet<String>,
    /// Containers by pod.
    containers: BTreeSet<(String, String)>,
    /// Pods whose StopPodSandbox was sent: an unanswered removal may have gone far.
    removing: BTreeSet<String>,
    removed: BTreeSet<String>,
    /// Every acknowledged RPC.
    answers: usize,
}

/// 30 concurrent pod lifecycles (run, create and start a container, and for every other pod
/// stop and remove it again), corrald SIGKILLed at a random moment and restarted: every
/// acknowledged pod is there and removable, no acknowledged removal is undone, and once all pods
/// are removed the host is exactly as before.
#[tokio::test]
async fn a_random_kill_during_concurrent_pod_lifecycles_leaks_nothing() {
    require_root!();
    let _serial = SERIAL.lock().await;
    let Some(env) = container_env().await else {
        return;
    };
    let seed = std::env::var("CORRAL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("seed {seed} (repeat with CORRAL_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let tag = format!("corral-e2e-{}-random", std::process::id());
    let mut harness = Harness {
        env: Some(env),
        cgroup_tag: tag.clone(),
    };
    let env = harness.env();
    make_volumes_dir(&env.daemon);
    let baseline = snapshot(&env.daemon, &mut env.rt, &tag).await;

    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let mut tasks = Vec::new();
    for i in 0..30 {
        let config = pod(env, &format!("p{i}"), &tag);
        let container = volume_sleeper(env, &format!("p{i}"));
        let mut rt = env.rt.clone();
        let acked = acked.clone();
        let remove = i % 2 == 0;
        tasks.push(tokio::spawn(async move {
            let id = rt
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(config.clone()),
                    runtime_handler: String::new(),
                })
                .await?
                .into_inner()
                .pod_sandbox_id;
            let answered = |f: &dyn Fn(&mut Acknowledged)| {
                let mut acked = acked.lock().unwrap();
                f(&mut acked);
                acked.answers += 1;
            };
            answered(&|a| {
                a.pods.insert(id.clone());
            });
            let c = cri::try_create(&mut rt, &id, &config, container).await?;
            answered(&|a| {
                a.containers.insert((id.clone(), c.clone()));
            });
            rt.start_container(StartContainerRequest { container_id: c })
                .await?;
            answered(&|_| {});
            if remove {
                acked.lock().unwrap().removing.insert(id.clone());
                rt.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await?;
                answered(&|_| {});
                rt.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await?;
                answered(&|a| {
                    a.removed.insert(id.clone());
                });
            }
            Ok::<(), tonic::Status>(())
        }));
    }
    // A random moment: once a random number of the 120 RPCs is answered, plus a random delay,
    // so that some pods are acknowledged and others are at any step of their lifecycle.
    let wanted = usize::try_from(rng.below(110)).unwrap();
    let delay = Duration::from_millis(rng.below(500));
    let started = std::time::Instant::now();
    while acked.lock().unwrap().answers < wanted && started.elapsed() < Duration::from_secs(180) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(delay).await;
    eprintln!(
        "killing corrald {:?} after the start, once {wanted} RPCs were answered, plus {delay:?}",
        started.elapsed()
    );
    env.daemon.kill9_and_restart();
    for task in tasks {
        let _ = task.await.unwrap();
    }
    env.rt = env.daemon.runtime().await;

    let (pods, containers, removing, removed) = {
        let acked = acked.lock().unwrap();
        (
            acked.pods.clone(),
            acked.containers.clone(),
            acked.removing.clone(),
            acked.removed.clone(),
        )
    };
    eprintln!(
        "{} pods acknowledged, {} of them removed, before the kill",
        pods.len(),
        removed.len()
    );
    let listed: BTreeSet<String> = env
        .rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect();
    for id in pods.difference(&removing) {
        assert!(
            listed.contains(id),
            "acknowledged pod {id} is gone (seed {seed})"
        );
    }
    for id in &removed {
        assert!(
            !listed.contains(id),
            "removed pod {id} is back (seed {seed})"
        );
    }
    for (pod, container) in containers.iter().filter(|(pod, _)| !removing.contains(pod)) {
        let listed = pod_containers(&mut env.rt, pod).await;
        assert!(
            listed.iter().any(|c| &c.id == container),
            "acknowledged container {container} of pod {pod} is gone (seed {seed})"
        );
    }
    for id in &listed {
        cri::remove_pod(&mut env.rt, id).await;
    }
    let now = snapshot(&env.daemon, &mut env.rt, &tag).await;
    assert_same(&baseline, &now, &format!("seed {seed}"));
}
