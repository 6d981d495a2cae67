//! A CRI client corral did not write: Python `grpcio` (grpc-core) with default channel options,
//! which sends the socket path as HTTP/2 `:authority`, runs a pod's lifecycle against corrald
//! (`tests/grpcio/cri_client.py`), with a container in it when the test registry is installed,
//! and decodes corrald's list responses (whose items corrald encoded ahead of time).
//!
//! The Python interpreter with `grpcio` and `grpcio-tools` is `$CORRAL_GRPCIO_PYTHON` (`.ci/run`
//! installs them into a venv and `scripts/test.sh` points there). Without it the test fails
//! under `CI=true` and is skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use corral_e2e::*;

/// Where `.ci/run` installs grpcio when the variable is not set.
const DEFAULT_PYTHON: &str = "/var/cache/corral-ci/grpcio-venv/bin/python";

fn grpcio_python() -> Option<PathBuf> {
    let python = std::env::var_os("CORRAL_GRPCIO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PYTHON));
    if python.exists() {
        return Some(python);
    }
    let message = format!(
        "{} is missing: install grpcio >= 1.57 and grpcio-tools in a venv (as .ci/run does) and set CORRAL_GRPCIO_PYTHON",
        python.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("skipped: {message}");
    None
}

#[tokio::test]
async fn grpcio_runs_a_pod_lifecycle_with_the_socket_path_as_authority() {
    require_root!();
    let Some(python) = grpcio_python() else {
        return;
    };
    let daemon = Daemon::start(DaemonOptions::default());
    // The registry stays up until the end; without it the client runs no container.
    let registry = corral_e2e::cri::busybox_registry();
    let image = match &registry {
        Some((_, image)) => {
            corral_e2e::cri::pull(&mut daemon.images().await, image).await;
            Some(image.clone())
        }
        None => None,
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let parent = unique_cgroup_parent("grpcio");
    let socket = daemon.socket();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(root.join("grpcio/cri_client.py"))
            .arg(&socket)
            .arg(root.join("../proto"))
            .arg(&parent)
            .args(image)
            .output()
            .expect("run the grpcio client")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpcio client failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "Version: corral v1",
        "RunPodSandbox: ",
        "PodSandboxStatus: SANDBOX_READY",
        "ListPodSandbox: SANDBOX_READY",
        "StreamPodSandboxes: 1 pod(s)",
        "StopPodSandbox: ok",
        "RemovePodSandbox: ok",
        "GetContainerEvents: CREATED STARTED STOPPED DELETED",
    ] {
        assert!(stdout.contains(step), "{step:?} missing from:\n{stdout}");
    }
    if registry.is_some() {
        assert!(
            stdout.contains("ListContainers: CONTAINER_RUNNING"),
            "ListContainers missing from:\n{stdout}"
        );
    }
    remove_cgroup_dirs(&test_cgroup_root("grpcio"));
}
