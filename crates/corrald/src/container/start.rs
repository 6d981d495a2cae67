//! StartContainer: `<runtime> start` (or `resume` of a restored container), recorded running.

use cri_proto::v1::ContainerEventType;

use super::record::ContainerState;
use super::refresh::{refreshed, save};
use super::ContainerEnv;
use crate::error::{during, CriError, CriResult};
use crate::phases::Phases;

/// StartContainer.
pub(super) fn start(env: &ContainerEnv, id: &str) -> CriResult<()> {
    let phases = Phases::new();
    let span = tracing::Span::current();
    let mut record = phases.step(&span, "refresh", || refreshed(env, id))?;
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
    phases.step(&span, "runtime_start", || -> CriResult<()> {
        if record.restored {
            env.host
                .resume(&runtime, id)
                .map_err(during("StartContainer: resume the restored container"))?;
        } else if let Err(e) = env.host.start(&runtime, id) {
            // A start a killed daemon made but never recorded: the runtime has it running.
            if !env.host.is_running(&runtime, id) {
                return Err(during("StartContainer: OCI runtime start")(e));
            }
            tracing::info!(container_id = %id, "container was started before a restart; recording it");
        }
        Ok(())
    })?;
    crate::crash::point("start_container:started");
    record.state = ContainerState::Running;
    record.started_at = started_at;
    phases.step(&span, "record_running", || save(env, &record))?;
    tracing::info!(
        container_id = %id,
        pod_id = %record.pod_sandbox_id,
        phases = %phases.summary(),
        "container started"
    );
    env.events.container(
        id,
        &record.pod_sandbox_id,
        ContainerEventType::ContainerStartedEvent,
    );
    Ok(())
}
