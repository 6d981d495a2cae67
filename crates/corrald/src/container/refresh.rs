//! A container's record as it is now: the store's copy, brought up to date with its shim's exit
//! file (an exit recorded since is taken over, a shim that died without one leaves exit 255).

use corral_store::CONTAINERS;
use cri_proto::v1::ContainerEventType;

use super::record::{ContainerRecord, ContainerState, ExitRecord};
use super::ContainerEnv;
use crate::error::{during, CriError, CriResult};

pub(super) fn load(env: &ContainerEnv, id: &str) -> CriResult<ContainerRecord> {
    env.store
        .get(CONTAINERS, id)?
        .ok_or_else(|| CriError::NotFound(format!("container {id} not found")))
}

pub(super) fn save(env: &ContainerEnv, record: &ContainerRecord) -> CriResult<()> {
    env.store.put(CONTAINERS, &record.id, record)?;
    Ok(())
}

/// Brings a record up to date with its shim: an exit recorded since is taken over; a shim that
/// died without recording one leaves the container exited with code 255.
pub(super) fn refresh(env: &ContainerEnv, record: ContainerRecord) -> CriResult<ContainerRecord> {
    Ok(refresh_shared(env, &record)?.unwrap_or(record))
}

/// [`refresh`] of a shared record: the updated record when the container has just been found
/// exited, `None` when `record` is still right (most lists copy nothing).
pub(super) fn refresh_shared(
    env: &ContainerEnv,
    record: &ContainerRecord,
) -> CriResult<Option<ContainerRecord>> {
    if !matches!(
        record.state,
        ContainerState::Created | ContainerState::Running
    ) {
        return Ok(None);
    }
    let dir = env.container_dir(&record.id);
    let exit = corral_runtime::read_exit(&dir).map_err(during("read container exit status"))?;
    let exit = match exit {
        Some(info) => Some(exit_record(&info)),
        None if !corral_runtime::shim_alive(&dir) => {
            // Read again: the shim may have written the file just before exiting.
            Some(match corral_runtime::read_exit(&dir).ok().flatten() {
                Some(info) => exit_record(&info),
                None => ExitRecord {
                    exit_code: 255,
                    finished_at: crate::ids::now_nanos(),
                    oom_killed: false,
                },
            })
        }
        None => None,
    };
    let Some(exit) = exit else {
        return Ok(None);
    };
    let mut record = record.clone();
    record.exit = Some(exit);
    record.state = ContainerState::Exited;
    save(env, &record)?;
    env.events.container(
        &record.id,
        &record.pod_sandbox_id,
        ContainerEventType::ContainerStoppedEvent,
    );
    Ok(Some(record))
}

/// What corrald keeps of a shim's exit file.
fn exit_record(info: &corral_runtime::ExitInfo) -> ExitRecord {
    ExitRecord {
        exit_code: info.exit_code,
        finished_at: info.finished_at_ns,
        oom_killed: info.oom_killed,
    }
}

/// The record of `id`, refreshed.
pub(crate) fn refreshed(env: &ContainerEnv, id: &str) -> CriResult<ContainerRecord> {
    refresh(env, load(env, id)?)
}
