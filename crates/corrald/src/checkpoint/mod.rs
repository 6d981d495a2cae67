//! CheckpointContainer, and the checks restoring a container from a checkpoint needs.
//!
//! A running container is checkpointed with `runc checkpoint --leave-running` through CRIU (the
//! `criu_path` setting); the images, the container's metadata and spec and its writable layer's
//! changes are packed into the archive at the request's `location` (see [`archive`] for the
//! layout). The container goes on running. CreateContainer restores from such an archive when
//! its image is the archive's path (`container/create.rs`).
//!
//! Whether CRIU can work on this host is asked once per daemon (`criu check`). Where it cannot
//! — no CRIU, or a kernel the installed CRIU does not support (Debian 12's CRIU 3.17 fails on
//! recent kernels' vDSO) — the answer is FailedPrecondition naming the CRIU version, the kernel
//! and CRIU's own error.

pub mod archive;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use cri_proto::v1::CheckpointContainerRequest;

use crate::container::{ContainerEnv, ContainerState};
use crate::error::{CriError, CriResult};
use crate::Daemon;

/// Why CRIU cannot checkpoint on this host, or `None` when `criu check` passes.
static CRIU_UNAVAILABLE: OnceLock<Option<String>> = OnceLock::new();

/// At most this many of CRIU's error lines go into an answer.
const MAX_CRIU_LINES: usize = 3;

/// CheckpointContainer.
pub async fn checkpoint(
    daemon: &Daemon,
    request: CheckpointContainerRequest,
) -> Result<(), tonic::Status> {
    let location = check_location(&request.location)?;
    let timeout = check_timeout(request.timeout)?;
    let criu = daemon.config.criu_path.clone();
    daemon
        .containers
        .with_container(&request.container_id, move |env, id| {
            checkpoint_blocking(env, id, &location, &criu, timeout)
        })
        .await?;
    Ok(())
}

/// The archive path of a request: absolute, in an existing directory, not a directory itself.
fn check_location(location: &str) -> CriResult<PathBuf> {
    let invalid = |m: String| Err(CriError::InvalidArgument(m));
    if location.is_empty() {
        return invalid(
            "location: give the path of the checkpoint archive to write (/path/to/checkpoint.tar)"
                .into(),
        );
    }
    let path = PathBuf::from(location);
    let shown = crate::error::shown(location);
    if !path.is_absolute() || path.file_name().is_none() {
        return invalid(format!(
            "location: {shown} is not an absolute file path; give one such as /path/to/checkpoint.tar"
        ));
    }
    if path.is_dir() {
        return invalid(format!(
            "location: {shown} is a directory; give the path of the archive file to write"
        ));
    }
    match path.parent() {
        Some(parent) if parent.is_dir() => Ok(path),
        _ => invalid(format!(
            "location: the directory of {shown} does not exist; create it first"
        )),
    }
}

/// How long the runtime may take to checkpoint: the request's seconds, 0 for the runtime
/// commands' default.
fn check_timeout(seconds: i64) -> CriResult<Duration> {
    match u64::try_from(seconds) {
        Ok(0) => Ok(corral_runtime::COMMAND_TIMEOUT),
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => Err(CriError::InvalidArgument(format!(
            "timeout: {seconds} is negative; give seconds, or 0 for the default ({}s)",
            corral_runtime::COMMAND_TIMEOUT.as_secs()
        ))),
    }
}

fn checkpoint_blocking(
    env: &ContainerEnv,
    id: &str,
    location: &Path,
    criu: &Path,
    timeout: Duration,
) -> CriResult<()> {
    let record = crate::container::refreshed(env, id)?;
    if record.state != ContainerState::Running {
        return Err(CriError::FailedPrecondition(format!(
            "container {id} is not running; only a running container can be checkpointed"
        )));
    }
    if record.config.tty {
        return Err(CriError::FailedPrecondition(format!(
            "container {id} has a terminal (tty); corral checkpoints only containers without one"
        )));
    }
    if let Some(reason) = criu_unavailable(criu) {
        return Err(CriError::FailedPrecondition(format!(
            "CheckpointContainer: CRIU cannot checkpoint on this host: {reason}"
        )));
    }
    let runtime = env.runtime(&record.runtime_handler)?;
    let dir = env.container_dir(id);
    let scratch = tempfile::Builder::new()
        .prefix("checkpoint-")
        .tempdir_in(&dir)
        .map_err(|e| CriError::internal("CheckpointContainer: scratch directory", e))?;
    let images = scratch.path().join(archive::CHECKPOINT_DIR);
    let work = scratch.path().join("work");
    if let Err(e) = runtime.checkpoint(id, criu, &images, &work, true, timeout) {
        return Err(CriError::Internal(format!(
            "CheckpointContainer: {e}{}",
            criu_log_errors(&work.join(archive::DUMP_LOG))
        )));
    }
    let upper = env
        .images
        .container_dir(id)
        .map_err(|e| CriError::internal("CheckpointContainer: writable layer", e))?
        .join("upper");
    let image_name = record.image_name.clone();
    let config = archive::ConfigDump {
        id: record.id.clone(),
        name: record
            .config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        rootfs_image: image_name.clone(),
        rootfs_image_ref: record.image_id.clone(),
        rootfs_image_name: image_name,
        runtime: record.runtime_handler.clone(),
        created_time: rfc3339(record.created_at),
        checkpointed_time: rfc3339(crate::ids::now_nanos()),
        corral_container_config: Some(record.config.clone()),
    };
    let parts = archive::Parts {
        config: &config,
        spec: &dir.join("config.json"),
        images: &images,
        work: &work,
        upper: &upper,
    };
    archive::write(location, &parts, scratch.path())
        .map_err(|e| CriError::internal("CheckpointContainer: write the archive", e))?;
    tracing::info!(container_id = %id, location = %location.display(), "container checkpointed");
    Ok(())
}

/// Nanoseconds since the epoch as RFC 3339.
fn rfc3339(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos).to_rfc3339()
}

/// CRIU's error lines in a log, as "; CRIU: ..." (empty without any).
pub(crate) fn criu_log_errors(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error") && !l.contains("RLIMIT_NOFILE"))
        .take(MAX_CRIU_LINES)
        .collect();
    if errors.is_empty() {
        String::new()
    } else {
        format!("; CRIU: {}", errors.join("; "))
    }
}

/// Why CRIU (the binary `criu`) cannot work on this host, or `None`; asked once per daemon.
/// Blocking.
pub(crate) fn criu_unavailable(criu: &Path) -> Option<String> {
    CRIU_UNAVAILABLE.get_or_init(|| check_criu(criu)).clone()
}

/// Runs `criu --version` and `criu check`; the reason CRIU cannot work, or `None`.
fn check_criu(criu: &Path) -> Option<String> {
    let version = match Command::new(criu).arg("--version").output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .unwrap_or("unknown")
            .trim()
            .to_string(),
        Err(e) => {
            return Some(format!(
                "{} is not installed or not on PATH ({e}); install CRIU (Debian's `criu` \
                 package, or scripts/install-criu.sh for kernels newer than Debian 12's) and \
                 set criu_path",
                criu.display()
            ))
        }
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let out = match Command::new(criu).arg("check").output() {
        Ok(out) => out,
        Err(e) => return Some(format!("running `{} check` failed: {e}", criu.display())),
    };
    if out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error") || l.contains("Warn"))
        .take(MAX_CRIU_LINES)
        .collect();
    Some(format!(
        "`criu check` (CRIU {version}) fails on kernel {kernel}: {}; a CRIU that supports this \
         kernel is needed (CRIU 4.x for kernels newer than 6.1: scripts/install-criu.sh \
         installs Debian 13's; point criu_path at it)",
        if errors.is_empty() {
            text.trim().to_string()
        } else {
            errors.join("; ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(location: &str) -> String {
        match check_location(location) {
            Err(CriError::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument for {location:?}, got {other:?}"),
        }
    }

    #[test]
    fn timeouts_are_seconds_with_zero_for_the_default() {
        assert_eq!(check_timeout(0).ok(), Some(corral_runtime::COMMAND_TIMEOUT));
        assert_eq!(check_timeout(7).ok(), Some(Duration::from_secs(7)));
        match check_timeout(-1) {
            Err(CriError::InvalidArgument(m)) => assert!(m.starts_with("timeout:"), "{m}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn locations_must_be_absolute_files_in_existing_directories() {
        assert!(refusal("").starts_with("location:"));
        assert!(refusal("ckpt.tar").contains("absolute"));
        assert!(refusal("/").contains("absolute"));
        assert!(refusal("/tmp").contains("directory"));
        assert!(refusal("/nonexistent-dir/ckpt.tar").contains("does not exist"));
        assert_eq!(
            check_location("/tmp/ckpt.tar").ok(),
            Some(PathBuf::from("/tmp/ckpt.tar"))
        );
    }
}
