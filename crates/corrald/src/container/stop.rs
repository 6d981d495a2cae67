//! StopContainer: the stop signal, SIGKILL after the grace period, and the wait for the shim to
//! record the exit (shared with RemoveContainer and the undo of a failed create).

use std::path::Path;
use std::time::{Duration, Instant};

use corral_process::Pidfd;

use super::record::{ContainerRecord, ContainerState, ShimRef};
use super::refresh::refreshed;
use super::ContainerEnv;
use crate::error::{during, CriError, CriResult};

/// How long a container gets after SIGKILL before StopContainer reports failure.
pub(super) const KILL_WAIT: Duration = Duration::from_secs(10);
/// How often the exit file is looked for once the container's init has exited.
const EXIT_FILE_POLL: Duration = Duration::from_millis(5);

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
        if wait_exited(&dir, record.shim, grace) {
            refreshed(env, id)?;
            return Ok(());
        }
        tracing::info!(container_id = %id, ?grace, "container did not stop in time; sending SIGKILL");
    }
    signal_container(env, &runtime, &record, libc::SIGKILL, true)
        .map_err(during("StopContainer: SIGKILL"))?;
    if !wait_exited(&dir, record.shim, KILL_WAIT) {
        return Err(CriError::Internal(format!(
            "StopContainer: container {id} still running {KILL_WAIT:?} after SIGKILL"
        )));
    }
    refreshed(env, id)?;
    Ok(())
}

/// Waits until the shim has recorded the exit or is gone. Sleeps on pidfds of the container's
/// init and of the shim; only the moment between the init's exit and the shim's writing of the
/// exit file (which follows at once) is polled.
pub(super) fn wait_exited(dir: &Path, shim: Option<ShimRef>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let recorded = || {
        corral_runtime::read_exit(dir).ok().flatten().is_some() || !corral_runtime::shim_alive(dir)
    };
    if recorded() {
        return true;
    }
    if let Some(shim) = shim {
        let pidfds: Vec<Pidfd> = [
            Pidfd::open(shim.container_pid),
            Pidfd::open_identity(shim.identity()),
        ]
        .into_iter()
        .filter_map(|pidfd| pidfd.ok().flatten())
        .collect();
        let pidfds: Vec<&Pidfd> = pidfds.iter().collect();
        if let Err(e) = corral_process::pidfd::wait_for_any(&pidfds, timeout) {
            tracing::debug!(error = %e, "waiting on the container's pidfds");
        }
    }
    loop {
        if recorded() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(EXIT_FILE_POLL);
    }
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
        return runtime.kill(&record.id, signal, all);
    }
    let dir = env.container_dir(&record.id);
    match corral_runtime::signal_init(&dir, &record.cgroup_relative, signal, all) {
        Ok(corral_runtime::Signalled::Sent) => Ok(()),
        // The init is gone; without `all` there is nothing left to signal.
        Ok(corral_runtime::Signalled::Gone) if !all => Ok(()),
        Ok(_) => runtime.kill(&record.id, signal, all),
        Err(error) => {
            tracing::debug!(container_id = %record.id, %error, "signalling the init directly failed; asking the runtime");
            runtime.kill(&record.id, signal, all)
        }
    }
}
