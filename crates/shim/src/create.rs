//! Running `<runtime> create` with the container's stdio: pipes, or a terminal whose master the
//! runtime sends over a console socket.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use corral_runtime::state_dir::{CONSOLE_SOCKET, CONTAINER_PID_FILE, RUNTIME_LOG};
use corral_runtime::unix_socket::{receive_fd, SocketPath};
use corral_runtime::{read_container_pid, runtime_message};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::pipe2;

use crate::args::ShimArgs;

/// Where, in the state directory, CRIU writes its work files (`restore.log`) during a restore.
const RESTORE_WORK_DIR: &str = "restore-work";

/// The shim's side of the container's stdio.
#[derive(Debug)]
pub enum ContainerIo {
    /// Without a terminal: the read ends of stdout and stderr, and the write end of stdin.
    Pipes {
        stdout: File,
        stderr: File,
        stdin: Option<File>,
    },
    /// With a terminal: its master (output from it, input to it).
    Terminal { master: File },
}

/// A container the runtime has created (its init waits for `start`).
#[derive(Debug)]
pub struct CreatedContainer {
    pub pid: i32,
    pub io: ContainerIo,
    /// How long `<runtime> create` (or `restore`) took.
    pub runtime_took: Duration,
}

/// Why create failed.
#[derive(Debug)]
pub enum CreateError {
    /// The runtime refused; what it said.
    Runtime(String),
    /// The shim could not do its part.
    Shim(String),
}

/// Runs `<runtime> create` and returns the created container with the shim's ends of its stdio.
pub fn create_container(args: &ShimArgs) -> Result<CreatedContainer, CreateError> {
    let state_dir = &args.state_dir;
    let pid_file = state_dir.join(CONTAINER_PID_FILE);
    let log_file = state_dir.join(RUNTIME_LOG);
    for stale in [&pid_file, &log_file] {
        remove_if_present(stale).map_err(CreateError::Shim)?;
    }
    if args.tty && args.restore.is_some() {
        return Err(CreateError::Shim(
            "a container with a terminal cannot be restored from a checkpoint".into(),
        ));
    }
    let began = Instant::now();
    let io = if args.tty {
        create_with_terminal(args, &pid_file, &log_file)?
    } else {
        create_with_pipes(args, &pid_file, &log_file)?
    };
    let pid = read_container_pid(state_dir)
        .map_err(|e| CreateError::Shim(e.to_string()))?
        .ok_or_else(|| {
            CreateError::Runtime(format!(
                "the runtime reported success but wrote no {CONTAINER_PID_FILE}"
            ))
        })?;
    Ok(CreatedContainer {
        pid,
        io,
        runtime_took: began.elapsed(),
    })
}

fn create_with_pipes(
    args: &ShimArgs,
    pid_file: &Path,
    log_file: &Path,
) -> Result<ContainerIo, CreateError> {
    let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(|e| CreateError::Shim(format!("pipe2: {e}")));
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    let (stdin_read, stdin_write) = if args.stdin {
        let (read, write) = pipe()?;
        (Stdio::from(read), Some(write))
    } else {
        (Stdio::null(), None)
    };
    // A restored container takes these pipes as the stdio it had pipes for when checkpointed.
    let mut command = match &args.restore {
        Some(restore) => args.runtime.restore_command(
            &args.id,
            &args.bundle,
            pid_file,
            log_file,
            &restore.criu,
            &restore.images,
            &args.state_dir.join(RESTORE_WORK_DIR),
        ),
        None => args
            .runtime
            .create_command(&args.id, &args.bundle, pid_file, log_file, None),
    };
    command
        .stdin(stdin_read)
        .stdout(Stdio::from(stdout_write))
        .stderr(Stdio::from(stderr_write));
    // The container's ends of the pipes live in `command` until it is dropped: drop it right after
    // the spawn, so that end of file on stdout means the container (not the shim) closed it.
    let child = spawn(command, args)?;
    let mut stderr = File::from(stderr_read);
    // A restored container runs during the restore: its output is the container's to log.
    let (status, mut drained) = if args.restore.is_none() {
        wait_draining(child, args, &stderr)?
    } else {
        (
            wait_for_runtime(child, args, None, || Ok(false))?,
            Vec::new(),
        )
    };
    if !status.success() {
        let mut said = runtime_said(log_file);
        if said.is_empty() {
            drained.extend(read_available(&mut stderr));
            said = runtime_message(&drained);
        }
        return Err(CreateError::Runtime(failure_message(said, status)));
    }
    Ok(ContainerIo::Pipes {
        stdout: File::from(stdout_read),
        stderr,
        stdin: stdin_write.map(File::from),
    })
}

fn create_with_terminal(
    args: &ShimArgs,
    pid_file: &Path,
    log_file: &Path,
) -> Result<ContainerIo, CreateError> {
    let socket_path = args.state_dir.join(CONSOLE_SOCKET);
    remove_if_present(&socket_path).map_err(CreateError::Shim)?;
    let shown = socket_path.display().to_string();
    let shim_error = |what: &'static str| {
        let shown = shown.clone();
        move |e: io::Error| CreateError::Shim(format!("{what} {shown}: {e}"))
    };
    // The runtime connects through this path; for a long state directory it is a
    // /proc/<shim pid>/fd/... path, which works for the runtime (a child) too.
    let reachable = SocketPath::new(&socket_path).map_err(shim_error("console socket"))?;
    let listener = UnixListener::bind(reachable.path()).map_err(shim_error("bind"))?;
    listener
        .set_nonblocking(true)
        .map_err(shim_error("set non-blocking"))?;
    // The runtime's own messages go to its log; its stderr is appended there too.
    let runtime_stderr = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log_file)
        .map_err(|e| CreateError::Shim(format!("open {}: {e}", log_file.display())))?;
    let mut command = args.runtime.create_command(
        &args.id,
        &args.bundle,
        pid_file,
        log_file,
        Some(reachable.path()),
    );
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(runtime_stderr));
    let child = spawn(command, args)?;

    let mut master = None;
    // Woken by the runtime connecting (the listener is readable) and by its exit.
    let status = wait_for_runtime(child, args, Some(listener.as_fd()), || {
        if master.is_none() {
            master = accept_master(&listener).map_err(CreateError::Shim)?;
        }
        Ok(master.is_none())
    })?;
    if master.is_none() {
        master = accept_master(&listener).map_err(CreateError::Shim)?;
    }
    drop(listener);
    let _ = std::fs::remove_file(&socket_path);
    if !status.success() {
        return Err(CreateError::Runtime(failure_message(
            runtime_said(log_file),
            status,
        )));
    }
    let master = master.ok_or_else(|| {
        CreateError::Runtime("the runtime created the container but sent no terminal".into())
    })?;
    Ok(ContainerIo::Terminal { master })
}

/// Accepts a pending connection on the console socket and receives the pty master from it.
fn accept_master(listener: &UnixListener) -> Result<Option<File>, String> {
    match listener.accept() {
        Ok((stream, _)) => receive_fd(&stream)
            .map(|fd| Some(File::from(fd)))
            .map_err(|e| format!("receive the terminal from the runtime: {e}")),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(format!("accept on the console socket: {e}")),
    }
}

fn spawn(mut command: Command, args: &ShimArgs) -> Result<Child, CreateError> {
    let result = command.spawn();
    drop(command);
    result.map_err(|e| {
        CreateError::Shim(format!("run {} create: {e}", args.runtime.binary.display()))
    })
}

/// How often the runtime's exit is looked for where no pidfd tells it (kernels before 5.3).
const EXIT_POLL_WITHOUT_PIDFD: Duration = Duration::from_millis(5);

/// Waits for the runtime `child`, killing it after the create timeout. Meanwhile `on_readable`
/// runs whenever `also` is readable, until it hangs up or `on_readable` answers that nothing
/// more is wanted from it (`false`), and the shim keeps the cgroup migration lock warm for the
/// runtime's move of the container into its cgroups (see `warm.rs`). The exit wakes the wait
/// at once through a pidfd on the child (it cannot be reaped, nor its pid reused, before
/// `try_wait` here): a poll interval would add its average to every CreateContainer.
fn wait_for_runtime(
    mut child: Child,
    args: &ShimArgs,
    mut also: Option<std::os::fd::BorrowedFd<'_>>,
    mut on_readable: impl FnMut() -> Result<bool, CreateError>,
) -> Result<ExitStatus, CreateError> {
    let deadline = Instant::now() + args.create_timeout;
    let mut warmer = crate::warm::Warmer::new(args.warm_cgroup_procs.as_deref());
    let pidfd = i32::try_from(child.id())
        .ok()
        .and_then(|pid| corral_process::Pidfd::open(pid).ok().flatten());
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => return Err(CreateError::Shim(format!("wait for the runtime: {e}"))),
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(timeout_error(args));
        }
        let mut wait = match &pidfd {
            Some(_) => remaining,
            None => remaining.min(EXIT_POLL_WITHOUT_PIDFD),
        };
        if let Some(next_move) = warmer.tick() {
            wait = wait.min(next_move);
        }
        let mut fds: Vec<PollFd<'_>> = pidfd
            .iter()
            .map(|p| PollFd::new(p.as_fd(), PollFlags::POLLIN))
            .chain(also.map(|fd| PollFd::new(fd, PollFlags::POLLIN)))
            .collect();
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
        if poll(&mut fds, timeout).is_err() {
            continue;
        }
        let Some(revents) = fds
            .last()
            .filter(|_| also.is_some())
            .and_then(|fd| fd.revents())
        else {
            continue;
        };
        if revents.contains(PollFlags::POLLIN) {
            if !on_readable()? {
                also = None;
            }
        } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            // Nothing more will come: polled again, it would wake every time.
            also = None;
        }
    }
}

/// How much of what `<runtime> create` writes to the container's stderr is kept.
const MAX_DRAINED: usize = 64 * 1024;

/// [`wait_for_runtime`], reading meanwhile what the runtime writes to the container's stderr
/// pipe (its error too, as runc writes it to both its log and stderr; the first
/// [`MAX_DRAINED`] bytes are kept): an error echoing a long argument can be more than a pipe
/// holds, and the runtime would block writing it. The container's own process runs only from
/// `start`, so none of its output is taken.
fn wait_draining(
    child: Child,
    args: &ShimArgs,
    stderr: &File,
) -> Result<(ExitStatus, Vec<u8>), CreateError> {
    let mut drained = Vec::new();
    let mut buffer = [0u8; 4096];
    let status = wait_for_runtime(child, args, Some(stderr.as_fd()), || {
        // Readable: this read returns what is there without blocking; 0 is the end.
        match nix::unistd::read(stderr, &mut buffer) {
            Ok(0) => Ok(false),
            Ok(n) => {
                let keep = n.min(MAX_DRAINED.saturating_sub(drained.len()));
                drained.extend_from_slice(&buffer[..keep]);
                Ok(true)
            }
            Err(e) => Ok(matches!(
                e,
                nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN
            )),
        }
    })?;
    Ok((status, drained))
}

fn timeout_error(args: &ShimArgs) -> CreateError {
    CreateError::Runtime(format!(
        "create did not finish within {:?} and was killed",
        args.create_timeout
    ))
}

/// What the runtime wrote to its log, as one line.
fn runtime_said(log_file: &Path) -> String {
    std::fs::read(log_file)
        .map(|log| runtime_message(&log))
        .unwrap_or_default()
}

fn failure_message(said: String, status: ExitStatus) -> String {
    if said.is_empty() {
        format!("exited with {status} and said nothing")
    } else {
        said
    }
}

/// Reads whatever is in a pipe now, without waiting for more.
fn read_available(pipe: &mut File) -> Vec<u8> {
    corral_process::detach::read_available(pipe, 65536)
}

fn remove_if_present(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("remove stale {}: {e}", path.display())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(timeout_secs: &str) -> ShimArgs {
        let minimal = crate::args::tests::MINIMAL.into_iter();
        ShimArgs::parse(minimal.chain(["--create-timeout", timeout_secs])).unwrap()
    }

    fn sh(script: &str, stderr: Stdio) -> Child {
        Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    #[test]
    fn the_runtimes_exit_status_and_what_it_wrote_to_stderr_are_returned() {
        let (read, write) = pipe2(OFlag::O_CLOEXEC).unwrap();
        // Writes more than a pipe holds: the wait must drain while the runtime runs.
        let child = sh(
            "head -c 100000 /dev/zero | tr '\\0' x >&2; exit 3",
            Stdio::from(write),
        );
        let stderr = File::from(read);
        let (status, drained) = wait_draining(child, &args("60"), &stderr).unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(drained.len(), MAX_DRAINED);
        assert!(drained.iter().all(|b| *b == b'x'));
    }

    #[test]
    fn a_runtime_that_closes_its_stderr_early_is_still_waited_for() {
        let (read, write) = pipe2(OFlag::O_CLOEXEC).unwrap();
        let child = sh("exec 2>&-; sleep 0.3; exit 4", Stdio::from(write));
        let stderr = File::from(read);
        let mut woken = 0;
        let status = wait_for_runtime(child, &args("60"), Some(stderr.as_fd()), || {
            woken += 1;
            Ok(true)
        })
        .unwrap();
        assert_eq!(status.code(), Some(4));
        // The hang-up is seen once and not polled again (it would wake the loop every time).
        assert_eq!(woken, 0);
    }

    #[test]
    fn a_runtime_past_the_create_timeout_is_killed() {
        let child = sh("sleep 30", Stdio::null());
        let pid = child.id();
        let err = wait_for_runtime(child, &args("1"), None, || Ok(false)).unwrap_err();
        assert!(
            matches!(&err, CreateError::Runtime(m) if m.contains("did not finish within")),
            "{err:?}"
        );
        // Killed and reaped: the pid names no process of ours any more.
        let gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |stat| !stat.contains("(sleep)"));
        assert!(gone);
    }
}
