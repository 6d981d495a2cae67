//! CheckpointContainer: the request is checked, then whether CRIU can work on this host
//! (`criu check`, run once per daemon). Where it cannot — no `criu` installed, or a kernel the
//! installed CRIU does not support (Debian 12's CRIU 3.17 fails on recent kernels' vDSO) — the
//! answer is FailedPrecondition naming the CRIU version, the kernel and CRIU's own error.
//!
//! Writing the checkpoint archive itself (`runc checkpoint` images, config, spec and the
//! writable layer's changes in CRI-O's layout) is not built yet: on a host where CRIU works the
//! answer says so.

use std::process::Command;
use std::sync::OnceLock;

use cri_proto::v1::CheckpointContainerRequest;

use crate::container::ContainerState;
use crate::error::CriError;
use crate::Daemon;

/// Why CRIU cannot checkpoint on this host, or `None` when `criu check` passes.
static CRIU_UNAVAILABLE: OnceLock<Option<String>> = OnceLock::new();

/// At most this many of CRIU's error lines go into the answer.
const MAX_CRIU_LINES: usize = 3;

/// CheckpointContainer.
pub async fn checkpoint(
    daemon: &Daemon,
    request: CheckpointContainerRequest,
) -> Result<(), tonic::Status> {
    if request.location.is_empty() {
        return Err(CriError::InvalidArgument(
            "location: give the path of the checkpoint archive to write (/path/to/checkpoint.tar)"
                .into(),
        )
        .into());
    }
    let record = daemon.containers.record(&request.container_id).await?;
    if record.state != ContainerState::Running {
        return Err(CriError::FailedPrecondition(format!(
            "container {} is not running; only a running container can be checkpointed",
            record.id
        ))
        .into());
    }
    let unavailable = match CRIU_UNAVAILABLE.get() {
        Some(reason) => reason.clone(),
        None => {
            let reason = tokio::task::spawn_blocking(criu_unavailable)
                .await
                .map_err(|e| tonic::Status::from(CriError::internal("criu check task", e)))?;
            CRIU_UNAVAILABLE.get_or_init(|| reason).clone()
        }
    };
    match unavailable {
        Some(reason) => Err(tonic::Status::failed_precondition(format!(
            "CheckpointContainer: CRIU cannot checkpoint on this host: {reason}"
        ))),
        None => Err(tonic::Status::unimplemented(
            "CheckpointContainer: CRIU works on this host, but corral does not write checkpoint \
             archives yet",
        )),
    }
}

/// Runs `criu --version` and `criu check`; the reason CRIU cannot work, or `None`.
fn criu_unavailable() -> Option<String> {
    let version = match Command::new("criu").arg("--version").output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .unwrap_or("unknown")
            .trim()
            .to_string(),
        Err(e) => {
            return Some(format!(
                "criu is not installed or not on PATH ({e}); install Debian's `criu` package"
            ))
        }
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let out = match Command::new("criu").arg("check").output() {
        Ok(out) => out,
        Err(e) => return Some(format!("running `criu check` failed: {e}")),
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
        "`criu check` (CRIU {version}) fails on kernel {kernel}: {}",
        if errors.is_empty() {
            text.trim().to_string()
        } else {
            errors.join("; ")
        }
    ))
}
