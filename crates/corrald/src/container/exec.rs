//! ExecSync, and the process of an exec (shared with the streaming server's Exec).

use std::time::Duration;

use cri_proto::v1::ExecSyncResponse;

use super::record::ContainerState;
use super::refresh::refreshed;
use super::ContainerEnv;
use crate::error::{during, CriError, CriResult};

/// ExecSync: the command run in the container with the container's own process settings.
pub(super) fn exec_sync(
    env: &ContainerEnv,
    id: &str,
    cmd: Vec<String>,
    timeout_secs: i64,
) -> CriResult<ExecSyncResponse> {
    if cmd.is_empty() {
        return Err(CriError::InvalidArgument("cmd: must not be empty".into()));
    }
    let record = refreshed(env, id)?;
    if record.state != ContainerState::Running {
        return Err(CriError::FailedPrecondition(format!(
            "container {id} is not running; exec needs a running container"
        )));
    }
    let process = exec_process(env, id, cmd, false)?;
    let timeout = (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs.unsigned_abs()));
    let out = env
        .runtime(&record.runtime_handler)?
        .exec_sync(id, &process, timeout)
        .map_err(during("ExecSync"))?;
    if out.timed_out {
        return Err(CriError::DeadlineExceeded(format!(
            "command {:?} timed out after {timeout_secs}s",
            process.args().clone().unwrap_or_default()
        )));
    }
    Ok(ExecSyncResponse {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code: out.exit_code,
    })
}

/// The process of an exec: the container's own (user, env, cwd, capabilities) with `cmd`.
pub(crate) fn exec_process(
    env: &ContainerEnv,
    id: &str,
    cmd: Vec<String>,
    tty: bool,
) -> CriResult<oci_spec::runtime::Process> {
    let path = env.container_dir(id).join("config.json");
    let spec = oci_spec::runtime::Spec::load(&path)
        .map_err(|e| CriError::internal(&format!("read {}", path.display()), e))?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(cmd));
    process.set_terminal(Some(tty));
    Ok(process)
}
