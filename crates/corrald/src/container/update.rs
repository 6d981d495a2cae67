//! UpdateContainerResources and ReopenContainerLog.

use std::collections::HashMap;
use std::time::Duration;

use cri_proto::v1::LinuxContainerResources;

use super::record::{ContainerRecord, ContainerState};
use super::refresh::{refreshed, save};
use super::ContainerEnv;
use crate::error::{during, CriError, CriResult};

/// UpdateContainerResources.
pub(super) fn update(
    env: &ContainerEnv,
    id: &str,
    resources: &LinuxContainerResources,
) -> CriResult<()> {
    let mut record = refreshed(env, id)?;
    if !matches!(
        record.state,
        ContainerState::Created | ContainerState::Running
    ) {
        return Err(CriError::FailedPrecondition(format!(
            "container {id} is not running; resources can only be updated on a created or running container"
        )));
    }
    let mut oci = corral_oci::linux_resources(resources)
        .map_err(|e| CriError::InvalidArgument(format!("linux: {e}")))?;
    if let Some(pod_cgroup) = record.cgroup_relative.parent() {
        let host = corral_cgroups::child_limits(&env.cgroup_layout, pod_cgroup);
        corral_oci::drop_unenforceable(&mut oci, &host)
            .map_err(|e| CriError::InvalidArgument(format!("linux: {e}")))?;
    }
    if let Some(dir) = env
        .cgroup_layout
        .unified()
        .filter(|_| env.cgroup_layout.mode() == corral_cgroups::CgroupMode::V2)
        .map(|h| h.dir(&record.cgroup_relative))
    {
        corral_oci::hugepage_limits_to_unified(&mut oci, |size| {
            dir.join(format!("hugetlb.{size}.rsvd.max")).exists()
        });
    }
    env.runtime(&record.runtime_handler)?
        .update(id, &oci)
        .map_err(during("UpdateContainerResources: OCI runtime update"))?;
    io_weight_to_systemd(env, &record, &resources.unified)?;
    record.resources = Some(resources.clone());
    save(env, &record)
}

/// With systemd managing the container's scope, a `unified` `io.weight` also becomes the
/// scope's `IOWeight`, so that systemd keeps it instead of resetting it on its next reload
/// (see [`corral_cgroups::systemd::io_weight_property`]).
pub(super) fn io_weight_to_systemd(
    env: &ContainerEnv,
    record: &ContainerRecord,
    unified: &HashMap<String, String>,
) -> CriResult<()> {
    use corral_cgroups::systemd::{io_weight_property, SystemdBus, UnitManager, IO_WEIGHT_FILE};
    if !env.systemd_cgroup || env.cgroup_layout.mode() != corral_cgroups::CgroupMode::V2 {
        return Ok(());
    }
    let Some(property) = io_weight_property(unified.get(IO_WEIGHT_FILE).map(String::as_str)) else {
        return Ok(());
    };
    let Some(scope) = record.cgroup_relative.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    SystemdBus::connect()
        .and_then(|bus| bus.set_unit_properties(scope, &[property]))
        .map_err(|e| CriError::internal(&format!("set IOWeight of {scope}"), e))
}

/// ReopenContainerLog.
pub(super) fn reopen_log(env: &ContainerEnv, id: &str) -> CriResult<()> {
    let record = refreshed(env, id)?;
    if record.state != ContainerState::Running {
        return Err(CriError::FailedPrecondition(format!(
            "container {id} is not running; there is no log to reopen"
        )));
    }
    corral_runtime::reopen_log(&env.container_dir(id), Duration::from_secs(5))
        .map_err(during("ReopenContainerLog"))
}
