//! What the container lifecycle asks of the host, behind one trait so that CreateContainer,
//! StartContainer, StopContainer, RemoveContainer, UpdateContainerResources, ReopenContainerLog
//! and ExecSync (their checks, records and undo) run in unit tests without root: the overlay
//! rootfs mount, the shim, and the OCI runtime's commands.
//!
//! Each method is one host operation and returns its library's own error, so the handlers map
//! errors exactly as they did when they called the libraries directly. [`HostContainers`] is
//! the real one; the fake is in `crate::testing`. Container cgroups are only removed (plain
//! directory removals under the layout's mount points), so they need no trait.

use std::path::Path;
use std::time::{Duration, Instant};

use corral_image::ImageStore;
use corral_process::Pidfd;
use corral_runtime::{ExecOutput, ExitInfo, OciRuntime, ShimConfig, ShimProcess, Signalled};

pub(crate) use super::record::ShimRef;

/// How often the exit file is looked for once the container's init has exited.
const EXIT_FILE_POLL: Duration = Duration::from_millis(5);

/// The rootfs mount, the shim and the OCI runtime, as the container handlers use them.
pub(crate) trait ContainerHost: Send + Sync {
    /// Mounts image `image`'s overlay rootfs for container `id` at `target` (its layers
    /// leased in `images`).
    fn mount_rootfs(
        &self,
        images: &ImageStore,
        image: &str,
        id: &str,
        target: &Path,
    ) -> corral_image::Result<()>;
    /// Unmounts it; a path that is not mounted is fine.
    fn unmount_rootfs(&self, images: &ImageStore, target: &Path) -> corral_image::Result<()>;
    /// Launches the shim, which creates (or restores) the container through the runtime.
    fn launch_shim(&self, config: &ShimConfig) -> corral_runtime::Result<ShimProcess>;
    /// The shim's exit file in the state directory `dir`, if written.
    fn read_exit(&self, dir: &Path) -> corral_runtime::Result<Option<ExitInfo>>;
    /// Whether the shim of the state directory `dir` runs.
    fn shim_alive(&self, dir: &Path) -> bool;
    /// Waits up to `timeout` until the shim has recorded the exit or is gone; whether it has.
    fn wait_exited(&self, dir: &Path, shim: Option<ShimRef>, timeout: Duration) -> bool;
    /// Waits (a few seconds at most) for the shim to finish after its container died, and
    /// reaps it.
    fn wait_shim_gone(&self, dir: &Path, shim: Option<ShimRef>);
    /// Signals the container's init straight through a pidfd when it is proven to be the init.
    fn signal_init(
        &self,
        dir: &Path,
        cgroup: &Path,
        signal: i32,
        all: bool,
    ) -> corral_runtime::Result<Signalled>;
    /// Asks the shim to reopen the container's log.
    fn reopen_log(&self, dir: &Path) -> corral_runtime::Result<()>;
    /// `<runtime> start`.
    fn start(&self, runtime: &OciRuntime, id: &str) -> corral_runtime::Result<()>;
    /// `<runtime> resume` (a restored container).
    fn resume(&self, runtime: &OciRuntime, id: &str) -> corral_runtime::Result<()>;
    /// `<runtime> pause` (a restored container, until it is started).
    fn pause(&self, runtime: &OciRuntime, id: &str) -> corral_runtime::Result<()>;
    /// Whether `<runtime> state` says the container runs.
    fn is_running(&self, runtime: &OciRuntime, id: &str) -> bool;
    /// `<runtime> kill`.
    fn kill(
        &self,
        runtime: &OciRuntime,
        id: &str,
        signal: i32,
        all: bool,
    ) -> corral_runtime::Result<()>;
    /// `<runtime> delete --force`.
    fn delete(&self, runtime: &OciRuntime, id: &str) -> corral_runtime::Result<()>;
    /// `<runtime> update`.
    fn update(
        &self,
        runtime: &OciRuntime,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> corral_runtime::Result<()>;
    /// `<runtime> exec`, waited for, its output collected.
    fn exec_sync(
        &self,
        runtime: &OciRuntime,
        id: &str,
        process: &oci_spec::runtime::Process,
        timeout: Option<Duration>,
    ) -> corral_runtime::Result<ExecOutput>;
}

/// The host's overlay mounts, `corral-shim` and OCI runtime.
pub(crate) struct HostContainers;

/// How long the shim gets to finish (drain logs, write its exit file) after the container died.
const SHIM_EXIT_WAIT: Duration = Duration::from_secs(5);

impl ContainerHost for HostContainers {
    fn mount_rootfs(
        &self,
        images: &ImageStore,
        image: &str,
        id: &str,
        target: &Path,
    ) -> corral_image::Result<()> {
        images.mount_rootfs(image, id, target).map(|_| ())
    }

    fn unmount_rootfs(&self, images: &ImageStore, target: &Path) -> corral_image::Result<()> {
        images.unmount_rootfs(target)
    }

    fn launch_shim(&self, config: &ShimConfig) -> corral_runtime::Result<ShimProcess> {
        corral_runtime::launch_shim(config)
    }

    fn read_exit(&self, dir: &Path) -> corral_runtime::Result<Option<ExitInfo>> {
        corral_runtime::read_exit(dir)
    }

    fn shim_alive(&self, dir: &Path) -> bool {
        corral_runtime::shim_alive(dir)
    }

    /// Sleeps on pidfds of the container's init and of the shim; only the moment between the
    /// init's exit and the shim's writing of the exit file (which follows at once) is polled.
    fn wait_exited(&self, dir: &Path, shim: Option<ShimRef>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let recorded = || {
            corral_runtime::read_exit(dir).ok().flatten().is_some()
                || !corral_runtime::shim_alive(dir)
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

    fn wait_shim_gone(&self, dir: &Path, shim: Option<ShimRef>) {
        if let Some(shim) = shim {
            if let Ok(Some(pidfd)) = Pidfd::open_identity(shim.identity()) {
                let _ = pidfd.wait_for_exit(SHIM_EXIT_WAIT);
            }
            if let Err(e) = corral_sandbox::reap_if_child(shim.pid) {
                tracing::debug!(pid = shim.pid, error = %e, "reaping shim");
            }
        } else {
            // A shim a killed daemon launched but never recorded: no identity to wait on.
            let deadline = Instant::now() + SHIM_EXIT_WAIT;
            while corral_runtime::shim_alive(dir) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn signal_init(
        &self,
        dir: &Path,
        cgroup: &Path,
        signal: i32,
        all: bool,
    ) -> corral_runtime::Result<Signalled> {
        corral_runtime::signal_init(dir, cgroup, signal, all)
    }

    fn reopen_log(&self, dir: &Path) -> corral_runtime::Result<()> {
        corral_runtime::reopen_log(dir, Duration::from_secs(5))
    }

    fn start(&self, runtime: &OciRuntime, id: &str) -> corral_runtime::Result<()> {
        runtime.start(id)
    }

    fn resume(&self, runtime: &OciRuntime, id: &str) -> corral_runtime::Result<()> {
        runtime.resume(id)
    }

    fn pause(&self, runtime: &OciRuntime, id: &str) -> corral_runtime::Result<()> {
        runtime.pause(id)
    }

    fn is_running(&self, runtime: &OciRuntime, id: &str) -> bool {
        matches!(runtime.state(id), Ok(Some(state)) if state.status == "running")
    }

    fn kill(
        &self,
        runtime: &OciRuntime,
        id: &str,
        signal: i32,
        all: bool,
    ) -> corral_runtime::Result<()> {
        runtime.kill(id, signal, all)
    }

    fn delete(&self, runtime: &OciRuntime, id: &str) -> corral_runtime::Result<()> {
        runtime.delete(id, true)
    }

    fn update(
        &self,
        runtime: &OciRuntime,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> corral_runtime::Result<()> {
        runtime.update(id, resources)
    }

    fn exec_sync(
        &self,
        runtime: &OciRuntime,
        id: &str,
        process: &oci_spec::runtime::Process,
        timeout: Option<Duration>,
    ) -> corral_runtime::Result<ExecOutput> {
        runtime.exec_sync(id, process, timeout)
    }
}
