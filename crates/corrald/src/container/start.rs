//! StartContainer: `<runtime> start` (or `resume` of a restored container), recorded running.

use cri_proto::v1::ContainerEventType;

use super::record::ContainerState;
use super::refresh::{refreshed, save};
use super::ContainerEnv;
use crate::error::{during, CriError, CriResult};

/// StartContainer.
pub(super) fn start(env: &ContainerEnv, id: &str) -> CriResult<()> {
    let mut record = refreshed(env, id)?;
    match record.state {
        ContainerState::Created => {}
        ContainerState::Running => return Ok(()),
        other => {
            return Err(CriError::FailedPrecondition(format!(
                "container {id} is {other:?}, only a created container can be started"
            )))
        }
    }
    // Taken before the runtime starts the process: a container that exits at once has its
    // exit (and finished_at) recorded by the shim before `start` returns here.
    let started_at = crate::ids::now_nanos();
    let runtime = env.runtime(&record.runtime_handler)?;
    if record.restored {
        runtime
            .resume(id)
            .map_err(during("StartContainer: resume the restored container"))?;
    } else if let Err(e) = runtime.start(id) {
        // A start a killed daemon made but never recorded: the runtime has it running.
        let running = matches!(runtime.state(id), Ok(Some(state)) if state.status == "running");
        if !running {
            return Err(during("StartContainer: OCI runtime start")(e));
        }
        tracing::info!(container_id = %id, "container was started before a restart; recording it");
    }
    crate::crash::point("start_container:started");
    record.state = ContainerState::Running;
    record.started_at = started_at;
    save(env, &record)?;
    env.events.container(
        id,
        &record.pod_sandbox_id,
        ContainerEventType::ContainerStartedEvent,
    );
    Ok(())
}
