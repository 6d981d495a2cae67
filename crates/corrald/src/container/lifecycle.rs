//! Start, stop, remove, update, exec, log reopening of containers, the undo of a failed create,
//! and the start-up reconciliation. Blocking code: runs on `spawn_blocking` threads.
//!
//! A `Creating` record may not name everything its CreateContainer made (a crash between making
//! a resource and recording it), so its teardown also looks where the id says things would be:
//! a shim launch still under way (its processes name the container directory in their
//! arguments) is let finish, then the runtime's container, the shim, the rootfs mount and the
//! container cgroup go whether recorded or not. At start-up, container directories with no
//! record at all are removed the same way.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use corral_process::Pidfd;
use corral_store::CONTAINERS;
use cri_proto::v1::{ContainerEventType, ExecSyncResponse, LinuxContainerResources};

use super::record::{ContainerRecord, ContainerState, ExitRecord, ProcessUser, ShimRef};
use super::ContainerEnv;
use crate::error::{during, CriError, CriResult, FirstError};

/// How long a container gets after SIGKILL before StopContainer reports failure.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long the shim gets to finish (drain logs, write its exit file) after the container died.
const SHIM_EXIT_WAIT: Duration = Duration::from_secs(5);
/// How often the exit file is looked for once the container's init has exited.
const EXIT_FILE_POLL: Duration = Duration::from_millis(5);

fn load(env: &ContainerEnv, id: &str) -> CriResult<ContainerRecord> {
    env.store
        .get(CONTAINERS, id)?
        .ok_or_else(|| CriError::NotFound(format!("container {id} not found")))
}

fn save(env: &ContainerEnv, record: &ContainerRecord) -> CriResult<()> {
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
                    finished_at: crate::pod::now_nanos(),
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
    let started_at = crate::pod::now_nanos();
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
fn wait_exited(dir: &Path, shim: Option<ShimRef>, timeout: Duration) -> bool {
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
fn signal_container(
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

/// RemoveContainer: returns the name key when there was a container.
pub(super) fn remove(env: &ContainerEnv, id: &str) -> CriResult<Option<String>> {
    let Some(mut record) = env.store.get::<ContainerRecord>(CONTAINERS, id)? else {
        return Ok(None);
    };
    let key = record.name_key();
    if let Err(e) = destroy(env, &mut record) {
        save(env, &record)?;
        return Err(e);
    }
    crate::crash::point("remove_container:destroyed");
    env.store.delete(CONTAINERS, id)?;
    if matches!(
        record.state,
        ContainerState::Created | ContainerState::Running
    ) {
        // Killed by the removal: it stopped, then went.
        env.events.container(
            id,
            &record.pod_sandbox_id,
            ContainerEventType::ContainerStoppedEvent,
        );
    }
    env.events.container(
        id,
        &record.pod_sandbox_id,
        ContainerEventType::ContainerDeletedEvent,
    );
    Ok(Some(key))
}

/// Frees everything a container holds: process, runtime state, shim, rootfs, mount sources it
/// created, cgroup, directory. Every step is tried; the first error is returned.
pub(super) fn destroy(env: &ContainerEnv, record: &mut ContainerRecord) -> CriResult<()> {
    let mut errors = FirstError::default();
    let dir = env.container_dir(&record.id);
    let unrecorded = record.state == ContainerState::Creating;
    if unrecorded && record.shim.is_none() {
        settle_launch(&dir);
    }
    let launched = record.shim.is_some()
        || (unrecorded && dir.join(corral_runtime::state_dir::SHIM_PID_FILE).exists());
    if launched {
        match env.runtime(&record.runtime_handler) {
            Ok(runtime) => {
                if corral_runtime::shim_alive(&dir) {
                    errors.note(
                        signal_container(env, &runtime, record, libc::SIGKILL, true)
                            .map_err(|e| CriError::internal("kill container", e)),
                    );
                    if !wait_exited(&dir, record.shim, KILL_WAIT) {
                        errors.note(Err(CriError::Internal(format!(
                            "container {} still running after SIGKILL",
                            record.id
                        ))));
                    }
                }
                errors.note(
                    runtime
                        .delete(&record.id, true)
                        .map_err(|e| CriError::internal("OCI runtime delete", e)),
                );
            }
            Err(e) => errors.note(Err(e)),
        }
        if let Some(shim) = record.shim {
            if let Ok(Some(pidfd)) = Pidfd::open_identity(shim.identity()) {
                let _ = pidfd.wait_for_exit(SHIM_EXIT_WAIT);
            }
            if let Err(e) = corral_sandbox::reap_if_child(shim.pid) {
                tracing::debug!(pid = shim.pid, error = %e, "reaping shim");
            }
        } else {
            // A shim a killed daemon launched but never recorded: no identity to wait on.
            let deadline = Instant::now() + SHIM_EXIT_WAIT;
            while corral_runtime::shim_alive(&dir) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    if unrecorded {
        errors.note(kill_naming(&dir));
    }
    crate::crash::point("remove_container:killed");
    if record.rootfs_mounted || unrecorded {
        match env.images.unmount_rootfs(&dir.join("rootfs")) {
            Ok(()) => record.rootfs_mounted = false,
            Err(e) => errors.note(Err(CriError::internal("unmount container rootfs", e))),
        }
    }
    crate::crash::point("remove_container:rootfs_unmounted");
    // Idmapped copies of the mount sources (pods with a user namespace).
    errors.note(crate::userns::unmount_staged(
        &dir.join(crate::userns::STAGING_DIR),
    ));
    errors.note(
        env.images
            .remove_rootfs(&record.id)
            .map_err(|e| CriError::internal("remove container rootfs layers", e)),
    );
    // Sources made for missing host paths go again, if still empty.
    for source in record.created_sources.drain(..).rev() {
        let _ = std::fs::remove_dir(&source);
    }
    if record.cgroup_relative.as_os_str().is_empty() && unrecorded {
        record.cgroup_relative = derived_cgroup(env, record).unwrap_or_default();
    }
    if !record.cgroup_relative.as_os_str().is_empty() {
        let dirs: Vec<_> = env
            .cgroup_layout
            .hierarchies()
            .iter()
            .map(|h| h.dir(&record.cgroup_relative))
            .collect();
        errors.note(
            corral_cgroups::remove_unused_dirs(dirs)
                .map(|_| ())
                .map_err(|e| CriError::internal("remove container cgroup", e)),
        );
    }
    if errors.is_ok() {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.note(Err(CriError::internal(
                &format!("remove container directory {}", dir.display()),
                e,
            ))),
        }
    }
    errors.into_result()
}

/// How long a shim launch a killed daemon left under way may take to finish.
const LAUNCH_SETTLE: Duration = Duration::from_secs(30);

/// Waits until a shim launch no record names has finished: the runtime created the container
/// (`container.pid` written) or every process naming the container directory is gone.
fn settle_launch(dir: &Path) {
    let deadline = Instant::now() + LAUNCH_SETTLE;
    loop {
        if dir
            .join(corral_runtime::state_dir::CONTAINER_PID_FILE)
            .exists()
        {
            return;
        }
        match corral_sandbox::find::naming(dir) {
            Ok(found) if found.is_empty() => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot look for the shim");
                return;
            }
        }
        if Instant::now() >= deadline {
            tracing::warn!(dir = %dir.display(), "a shim launch did not finish; killing it");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILLs what still names the container directory (a shim or runtime call no record
/// names).
fn kill_naming(dir: &Path) -> CriResult<()> {
    let found = corral_sandbox::find::naming(dir)
        .map_err(|e| CriError::internal("look for the shim", e))?;
    let mut errors = FirstError::default();
    for process in found {
        tracing::info!(pid = process.process.pid, dir = %dir.display(), "killing a process of a container no record names");
        errors.note(
            process
                .process
                .stop(Duration::ZERO)
                .map_err(|e| CriError::internal("kill shim", e)),
        );
        if let Err(e) = corral_sandbox::reap_if_child(process.process.pid) {
            tracing::debug!(pid = process.process.pid, error = %e, "reaping shim");
        }
    }
    errors.into_result()
}

/// The container's cgroup from its pod's: `<pod cgroup>/<id>` (what CreateContainer gives the
/// runtime), for a record that never got it.
fn derived_cgroup(env: &ContainerEnv, record: &ContainerRecord) -> Option<std::path::PathBuf> {
    let sandbox: crate::pod::SandboxRecord = env
        .store
        .get(corral_store::SANDBOXES, &record.pod_sandbox_id)
        .ok()??;
    let child = sandbox.pod_cgroup?.child(&record.id).ok()?;
    Some(child.relative_path)
}

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

/// Start-up: undoes containers a crashed daemon left half-made and returns the name index.
pub(super) fn reconcile(env: &ContainerEnv) -> anyhow::Result<HashMap<String, String>> {
    let (half_made, whole): (Vec<_>, Vec<_>) = env
        .store
        .list::<ContainerRecord>(CONTAINERS)?
        .into_iter()
        .partition(|(_, record)| record.state == ContainerState::Creating);
    let mut names: HashMap<String, String> = whole
        .into_iter()
        .map(|(id, record)| (record.name_key(), id))
        .collect();
    let undone = crate::crash::undo_side_by_side(half_made, |id, record| {
        tracing::warn!(container_id = %id, "undoing a container left half-made by an earlier corrald");
        destroy(env, record)
    });
    for (id, record, result) in undone {
        match result {
            Ok(()) => {
                env.store.delete(CONTAINERS, &id)?;
            }
            Err(e) => {
                tracing::error!(container_id = %id, error = %e, "could not undo half-made container");
                env.store.put(CONTAINERS, &id, &record)?;
                names.insert(record.name_key(), id);
            }
        }
    }
    sweep_orphans(env, &names.values().cloned().collect());
    Ok(names)
}

/// Start-up: removes container directories (and what is in them: shim, runtime state, rootfs
/// mount, idmapped views) under ids that have no record, as a `Creating` container's.
fn sweep_orphans(env: &ContainerEnv, known: &std::collections::HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(env.config.state.join("containers")) else {
        return;
    };
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if known.contains(&id) {
            continue;
        }
        tracing::info!(container_id = %id, "removing a container no record names");
        let mut record = orphan_record(env, &id);
        if let Err(e) = destroy(env, &mut record) {
            tracing::warn!(container_id = %id, error = %e, "removing an orphaned container");
        }
    }
}

/// A `Creating` record naming nothing but the id, so that [`destroy`] looks for everything.
fn orphan_record(env: &ContainerEnv, id: &str) -> ContainerRecord {
    ContainerRecord {
        id: id.to_owned(),
        pod_sandbox_id: String::new(),
        config: Default::default(),
        image_name: String::new(),
        image_id: String::new(),
        runtime_handler: String::new(),
        created_at: 0,
        started_at: 0,
        state: ContainerState::Creating,
        shim: None,
        exit: None,
        log_path: env.container_dir(id).join("container.log"),
        cgroups_path: String::new(),
        cgroup_relative: std::path::PathBuf::new(),
        rootfs_mounted: true,
        created_sources: Vec::new(),
        resources: None,
        user: ProcessUser::default(),
        stop_signal: String::new(),
        restored: false,
    }
}
