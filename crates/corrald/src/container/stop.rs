//! StopContainer: the stop signal, SIGKILL after the grace period; and how a container's init
//! is signalled (shared with RemoveContainer and the undo of a failed create).

use std::time::Duration;

use super::record::{ContainerRecord, ContainerState};
use super::refresh::refreshed;
use super::ContainerEnv;
use crate::error::{during, CriError, CriResult};

/// How long a container gets after SIGKILL before StopContainer reports failure.
pub(super) const KILL_WAIT: Duration = Duration::from_secs(10);

/// StopContainer.
pub(super) fn stop(env: &ContainerEnv, id: &str, timeout_secs: i64) -> CriResult<()> {
    let record = refreshed(env, id)?;
    if !matches!(
        record.state,
        ContainerState::Created | ContainerState::Running
    ) {
        return Ok(());
    }
    let runtime = env.runtime(&record.runtime_handler)?;
    let dir = env.container_dir(id);
    if timeout_secs > 0 {
        let signal = corral_runtime::parse_signal(&record.stop_signal).unwrap_or(libc::SIGTERM);
        signal_container(env, &runtime, &record, signal, false)
            .map_err(during("StopContainer: send stop signal"))?;
        let grace = Duration::from_secs(u64::try_from(timeout_secs).unwrap_or(0));
        if env.host.wait_exited(&dir, record.shim, grace) {
            refreshed(env, id)?;
            return Ok(());
        }
        tracing::info!(container_id = %id, ?grace, "container did not stop in time; sending SIGKILL");
    }
    signal_container(env, &runtime, &record, libc::SIGKILL, true)
        .map_err(during("StopContainer: SIGKILL"))?;
    if !env.host.wait_exited(&dir, record.shim, KILL_WAIT) {
        return Err(CriError::Internal(format!(
            "StopContainer: container {id} still running {KILL_WAIT:?} after SIGKILL"
        )));
    }
    refreshed(env, id)?;
    Ok(())
}

/// Sends `signal` to the container's init (to all its processes with `all`): straight through
/// a pidfd when the process is proven to be the init (no `<runtime> kill` to start, see
/// [`corral_runtime::signal_init`]), else through the runtime.
pub(super) fn signal_container(
    env: &ContainerEnv,
    runtime: &corral_runtime::OciRuntime,
    record: &ContainerRecord,
    signal: i32,
    all: bool,
) -> corral_runtime::Result<()> {
    // A restored container not yet started is frozen (`runc pause`): a signal sent straight to
    // it would wait for a thaw, while the runtime's kill thaws it.
    if record.restored && record.state == ContainerState::Created {
        return env.host.kill(runtime, &record.id, signal, all);
    }
    let dir = env.container_dir(&record.id);
    match env
        .host
        .signal_init(&dir, &record.cgroup_relative, signal, all)
    {
        Ok(corral_runtime::Signalled::Sent) => Ok(()),
        // The init is gone; without `all` there is nothing left to signal.
        Ok(corral_runtime::Signalled::Gone) if !all => Ok(()),
        Ok(_) => env.host.kill(runtime, &record.id, signal, all),
        Err(error) => {
            tracing::debug!(container_id = %record.id, %error, "signalling the init directly failed; asking the runtime");
            env.host.kill(runtime, &record.id, signal, all)
        }
    }
}
