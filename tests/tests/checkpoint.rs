//! CheckpointContainer and restore (CreateContainer from a checkpoint archive) against a real
//! corrald, runc and CRIU. CRIU is the one `CORRAL_CRIU` names (`.ci/run` installs one that
//! works on recent kernels with scripts/install-criu.sh), else `criu` on PATH. Where CRIU cannot
//! work on the host, CheckpointContainer answers FailedPrecondition naming why, and the test
//! stops there, printing the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use corral_e2e::cri::{self, container_env_with};
use corral_e2e::{corralctl_ok, corralctl_run, DaemonOptions};
use cri_proto::v1::*;
use tonic::Code;

const POD: i32 = NamespaceMode::Pod as i32;
const CONTAINER: i32 = NamespaceMode::Container as i32;

/// Counts in a shell variable, writing each value to /tmp/count and stdout; leaves a file
/// behind first.
const COUNTER: &str =
    "echo kept > /greeting; i=0; while true; do i=$((i+1)); echo $i > /tmp/count; echo $i; sleep 1; done";

fn options() -> DaemonOptions {
    let extra_config_toml = match std::env::var("CORRAL_CRIU") {
        Ok(path) if !path.is_empty() => format!("criu_path = {path:?}\n"),
        _ => String::new(),
    };
    DaemonOptions {
        extra_config_toml,
        ..Default::default()
    }
}

async fn count(rt: &mut cri::Rt, id: &str) -> u64 {
    let out = cri::exec_ok(rt, id, &["cat", "/tmp/count"]).await;
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("/tmp/count holds {out:?}"))
}

/// Waits until the counter in `id` has reached at least `at_least`; returns what it read.
async fn wait_count(rt: &mut cri::Rt, id: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = count(rt, id).await;
        if n >= at_least {
            return n;
        }
        assert!(Instant::now() < deadline, "counter stuck at {n}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_checkpointed_container_runs_on_and_restores_with_its_memory_and_files() {
    round_trip("ckpt", (POD, CONTAINER, POD)).await;
}

#[tokio::test]
async fn a_container_in_the_pods_pid_namespace_is_restored_into_the_new_pods() {
    round_trip("ckpt-pidns", (POD, POD, POD)).await;
}

/// Checkpoints the running container `id` into `archive`; `false` (after checking that the
/// refusal left the container running and no archive) where CRIU cannot work on this host.
async fn checkpoint_unless_criu_cannot(
    rt: &mut cri::Rt,
    id: &str,
    archive: &std::path::Path,
) -> bool {
    let answer = rt
        .checkpoint_container(CheckpointContainerRequest {
            container_id: id.to_string(),
            location: archive.to_string_lossy().into_owned(),
            timeout: 0,
        })
        .await;
    if let Err(status) = &answer {
        if status.code() == Code::FailedPrecondition && status.message().contains("CRIU") {
            eprintln!(
                "skipped: checkpoint/restore cannot run here: {}",
                status.message()
            );
            let (after, _) = cri::status(rt, id).await;
            assert_eq!(
                after.state,
                ContainerState::ContainerRunning as i32,
                "a refused checkpoint leaves the container running"
            );
            assert!(!archive.exists(), "no archive left behind");
            return false;
        }
    }
    answer.expect("CheckpointContainer");
    true
}

/// Checkpoints a counter in a pod whose namespace modes are `modes` (network, pid, ipc) and
/// restores it into a second such pod.
async fn round_trip(name: &str, modes: (i32, i32, i32)) {
    let Some(mut env) = container_env_with(options()).await else {
        return;
    };
    let (pod_id, pod) = env.pod_with(name, modes, |_| {}).await;
    let cfg = cri::container_config("counter", &env.image, &["sh", "-c", COUNTER]);
    let id = cri::run(&mut env.rt, &pod_id, &pod, cfg).await;

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

    let before = wait_count(&mut env.rt, &id, 3).await;
    let archive = env.daemon.dir().join("checkpoint.tar");
    if !checkpoint_unless_criu_cannot(&mut env.rt, &id, &archive).await {
        cri::remove_pod(&mut env.rt, &pod_id).await;
        return;
    }

    // The archive has CRI-O's layout.
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&archive)
        .output()
        .expect("tar -tf");
    let listing = String::from_utf8_lossy(&listing.stdout);
    for entry in [
        "config.dump",
        "spec.dump",
        "rootfs-diff.tar",
        "deleted.files",
    ] {
        assert!(
            listing.lines().any(|l| l == entry),
            "{entry} missing: {listing}"
        );
    }
    assert!(
        listing.lines().any(|l| l.starts_with("checkpoint/")),
        "no CRIU images: {listing}"
    );

    // The checkpointed container runs on.
    let (after, _) = cri::status(&mut env.rt, &id).await;
    assert_eq!(after.state, ContainerState::ContainerRunning as i32);
    wait_count(&mut env.rt, &id, before + 2).await;

    // Restored into another pod, from the archive given as the image.
    let (pod2_id, pod2) = env
        .pod_with(&format!("{name}-restored"), modes, |_| {})
        .await;
    let mut restore =
        cri::container_config("counter-restored", &archive.to_string_lossy(), &["ignored"]);
    restore.command.clear();
    let restored = cri::create(&mut env.rt, &pod2_id, &pod2, restore).await;
    let (created, _) = cri::status(&mut env.rt, &restored).await;
    assert_eq!(created.state, ContainerState::ContainerCreated as i32);
    assert_eq!(
        created.metadata.as_ref().map(|m| m.name.as_str()),
        Some("counter-restored")
    );
    env.rt
        .start_container(StartContainerRequest {
            container_id: restored.clone(),
        })
        .await
        .expect("StartContainer of the restored container");
    let (running, _) = cri::status(&mut env.rt, &restored).await;
    assert_eq!(running.state, ContainerState::ContainerRunning as i32);

    // Its memory: the shell's counter goes on from where it was (a new shell would count from
    // 1, and `before` is at least 3).
    let first = count(&mut env.rt, &restored).await;
    let next = wait_count(&mut env.rt, &restored, first + 1).await;
    assert!(
        next > before,
        "the restored counter is at {next}, below {before} it had reached before the checkpoint"
    );
    // Its files.
    let greeting = cri::exec_ok(&mut env.rt, &restored, &["cat", "/greeting"]).await;
    assert_eq!(greeting.trim(), "kept");
    // Its stdout goes to the new container's log.
    let log = std::path::Path::new(&pod2.log_directory).join("counter-restored.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logged: Vec<u64> = cri::log_lines(&log)
            .iter()
            .filter_map(|(_, _, text)| text.trim().parse().ok())
            .collect();
        if logged.iter().any(|n| *n > before) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restored counter logged nothing to {}: {logged:?}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // It lives in the new pod's network, IPC and UTS namespaces.
    let ns = |pid: i32, kind: &str| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    let restored_pid = cri::pid(&mut env.rt, &restored).await;
    let pause2 = cri::pause_pid(&mut env.rt, &pod2_id).await;
    let shared: &[&str] = if modes.1 == POD {
        &["net", "ipc", "uts", "pid"]
    } else {
        &["net", "ipc", "uts"]
    };
    for kind in shared {
        assert_eq!(ns(restored_pid, kind), ns(pause2, kind), "{kind} namespace");
    }

    // corralctl (crictl's verb) checkpoints it in turn, by an id prefix.
    let again_archive = env.daemon.dir().join("checkpoint-again.tar");
    let export = format!("--export={}", again_archive.display());
    let printed = corralctl_ok(corralctl_run(
        &env.daemon,
        &["checkpoint", &export, &restored[..12]],
    ));
    assert_eq!(printed.trim(), restored);
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&again_archive)
        .output()
        .expect("tar -tf");
    assert!(
        String::from_utf8_lossy(&listing.stdout)
            .lines()
            .any(|l| l == "config.dump"),
        "the corralctl checkpoint wrote no archive"
    );

    // Its shim watches it as any container's init: a stop is seen as its exit.
    env.rt
        .stop_container(StopContainerRequest {
            container_id: restored.clone(),
            timeout: 1,
        })
        .await
        .expect("StopContainer of the restored container");
    let (stopped, _) = cri::status(&mut env.rt, &restored).await;
    assert_eq!(stopped.state, ContainerState::ContainerExited as i32);
    if modes.1 == POD {
        // Nothing of it is left in the pod's PID namespace (its `sleep` would run on there,
        // holding the pids a restore needs back).
        let left: Vec<String> = processes_sharing_pid_namespace_with(pause2)
            .into_iter()
            .filter(|pid| *pid != pause2)
            .map(|pid| format!("{pid} {}", comm(pid)))
            .collect();
        assert!(left.is_empty(), "left after StopContainer: {left:?}");
    }

    // The archive restores again; a restored container that never started (held paused) is
    // removed like any other.
    let again_cfg =
        cri::container_config(&format!("{name}-again"), &archive.to_string_lossy(), &[]);
    let again = cri::create(&mut env.rt, &pod2_id, &pod2, again_cfg).await;
    env.rt
        .remove_container(RemoveContainerRequest {
            container_id: again.clone(),
        })
        .await
        .expect("RemoveContainer of a restored container never started");
    let gone = env
        .rt
        .container_status(ContainerStatusRequest {
            container_id: again,
            verbose: false,
        })
        .await
        .expect_err("removed");
    assert_eq!(gone.code(), Code::NotFound);

    cri::remove_pod(&mut env.rt, &pod2_id).await;
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// The host pids of the processes in `pid`'s PID namespace.
fn processes_sharing_pid_namespace_with(pid: i32) -> Vec<i32> {
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let wanted = ns(&pid.to_string());
    assert!(wanted.is_some(), "process {pid} is gone");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| ns(&p.to_string()) == wanted)
        .collect()
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// CRIU restores processes with their pids: into a PID namespace where the checkpointed
/// container's pids are taken (here by the container itself, still running in its pod) the
/// restore is refused up front, naming them, and leaves nothing behind.
#[tokio::test]
async fn a_restore_whose_pids_are_taken_in_the_pods_pid_namespace_is_refused() {
    let Some(mut env) = container_env_with(options()).await else {
        return;
    };
    let (pod_id, pod) = env.pod_with("ckpt-taken", (POD, POD, POD), |_| {}).await;
    let cfg = cri::container_config("counter", &env.image, &["sh", "-c", COUNTER]);
    let id = cri::run(&mut env.rt, &pod_id, &pod, cfg).await;
    wait_count(&mut env.rt, &id, 1).await;
    let archive = env.daemon.dir().join("checkpoint.tar");
    if !checkpoint_unless_criu_cannot(&mut env.rt, &id, &archive).await {
        cri::remove_pod(&mut env.rt, &pod_id).await;
        return;
    }

    let again = cri::container_config("counter-again", &archive.to_string_lossy(), &[]);
    let err = cri::try_create(&mut env.rt, &pod_id, &pod, again)
        .await
        .expect_err("the checkpointed pids are taken in the pod");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let message = err.message();
    assert!(message.starts_with("config.image.image:"), "{message}");
    // The shell was pid 2 (after the pause), and it still is.
    assert!(message.contains("2 (pid of sh, host pid"), "{message}");
    assert!(message.contains("a new pod"), "{message}");

    let listed = env
        .rt
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    let ids: Vec<&str> = listed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [id.as_str()], "the refused restore left a container");
    let (running, _) = cri::status(&mut env.rt, &id).await;
    assert_eq!(running.state, ContainerState::ContainerRunning as i32);
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

#[tokio::test]
async fn restoring_from_a_file_that_is_no_checkpoint_is_refused() {
    let Some(mut env) = container_env_with(options()).await else {
        return;
    };
    let (pod_id, pod) = env
        .pod_with("ckpt-bad", (POD, CONTAINER, POD), |_| {})
        .await;
    let bogus = env.daemon.dir().join("bogus.tar");
    std::fs::write(&bogus, b"not an archive").unwrap();
    let cfg = cri::container_config("c", &bogus.to_string_lossy(), &["true"]);
    let err = cri::try_create(&mut env.rt, &pod_id, &pod, cfg)
        .await
        .expect_err("a file that is no archive");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("config.image.image"), "{err}");
    assert!(
        err.message().contains("not a usable checkpoint archive"),
        "{err}"
    );
    cri::remove_pod(&mut env.rt, &pod_id).await;
}
