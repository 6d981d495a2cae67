//! The shim's main loop, from `create` to the container's exit: one thread polling the
//! container's output, its stdin, the attach and control sockets, and SIGCHLD (through a
//! signalfd). Nothing blocks, so a slow client never holds up logging.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corral_runtime::control::ControlRequest;
use corral_runtime::ExitInfo;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::connections::{AttachConnection, ClientEvent, ControlConnection};
use crate::create::ContainerIo;
use crate::cri_log::{CriLog, Stream};
use crate::diag::diag;

/// Once the container has exited, output is read until its pipes close or stay silent this long.
const DRAIN_IDLE: Duration = Duration::from_millis(200);

/// Once the container has exited, output is read for this long at the most (something outside
/// its PID namespace may hold the pipes open forever).
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// How long the exit frame may take to reach attach clients.
const EXIT_NOTICE_LIMIT: Duration = Duration::from_secs(2);

/// Container stdin waiting beyond this stops the shim from reading more from attach clients.
const STDIN_BACKLOG_LIMIT: usize = 1 << 20;

/// The terminal's end-of-file character (^D), sent to "close" a terminal's input.
const TERMINAL_EOF: u8 = 0x04;

/// How the container's init ended, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitExit {
    pub code: i32,
    pub signal: Option<i32>,
    pub finished_at_ns: i64,
}

impl InitExit {
    pub fn into_exit_info(self, oom_killed: bool) -> ExitInfo {
        match self.signal {
            Some(signal) => ExitInfo::signaled(signal, self.finished_at_ns, oom_killed),
            None => ExitInfo::exited(self.code, self.finished_at_ns, oom_killed),
        }
    }
}

/// One source of container output.
struct OutputSource {
    file: Option<File>,
    stream: Stream,
}

/// The container's stdin and what waits to be written to it.
struct StdinSink {
    file: File,
    pending: Vec<u8>,
    /// Close it once `pending` is written (a terminal gets ^D instead).
    close_when_written: bool,
    terminal: bool,
}

/// Everything the main loop watches.
pub struct Supervisor {
    container_pid: i32,
    container_pidfd: Option<OwnedFd>,
    sources: Vec<OutputSource>,
    stdin: Option<StdinSink>,
    terminal: Option<File>,
    stdin_once: bool,
    log: CriLog,
    log_failing: bool,
    signals: SignalFd,
    attach_listener: UnixListener,
    clients: Vec<AttachConnection>,
    control_listener: UnixListener,
    controls: Vec<ControlConnection>,
    exit: Option<InitExit>,
    drain_idle_until: Instant,
    drain_until: Instant,
}

/// What a polled descriptor belongs to.
#[derive(Debug, Clone, Copy)]
enum Token {
    Signals,
    ContainerExit,
    Output(usize),
    Stdin,
    AttachListener,
    Client(usize),
    ControlListener,
    Control(usize),
}

/// The container and the sockets the supervisor takes over.
pub struct SupervisorParts {
    pub container_pid: i32,
    pub io: ContainerIo,
    /// Attach clients may write to the container's stdin (always a pipe without a terminal).
    pub stdin: bool,
    pub stdin_once: bool,
    pub log: CriLog,
    pub signals: SignalFd,
    pub attach_listener: UnixListener,
    pub control_listener: UnixListener,
}

impl Supervisor {
    pub fn new(parts: SupervisorParts) -> io::Result<Supervisor> {
        let mut sources = Vec::new();
        let mut stdin = None;
        let mut terminal = None;
        match parts.io {
            ContainerIo::Pipes {
                stdout,
                stderr,
                stdin: stdin_pipe,
            } => {
                sources.push(OutputSource {
                    file: Some(nonblocking(stdout)?),
                    stream: Stream::Stdout,
                });
                sources.push(OutputSource {
                    file: Some(nonblocking(stderr)?),
                    stream: Stream::Stderr,
                });
                if let Some(pipe) = stdin_pipe {
                    stdin = Some(StdinSink {
                        file: nonblocking(pipe)?,
                        pending: Vec::new(),
                        close_when_written: false,
                        terminal: false,
                    });
                }
            }
            ContainerIo::Terminal { master } => {
                let master = nonblocking(master)?;
                if parts.stdin {
                    stdin = Some(StdinSink {
                        file: master.try_clone()?,
                        pending: Vec::new(),
                        close_when_written: false,
                        terminal: true,
                    });
                }
                terminal = Some(master.try_clone()?);
                sources.push(OutputSource {
                    file: Some(master),
                    stream: Stream::Stdout,
                });
            }
        }
        parts.attach_listener.set_nonblocking(true)?;
        parts.control_listener.set_nonblocking(true)?;
        let container_pidfd = match corral_process::pidfd::open(parts.container_pid) {
            Ok(fd) => Some(fd),
            Err(error) => {
                diag!(
                    "pidfd_open({}): {error}; relying on SIGCHLD",
                    parts.container_pid
                );
                None
            }
        };
        let now = Instant::now();
        Ok(Supervisor {
            container_pid: parts.container_pid,
            container_pidfd,
            sources,
            stdin,
            terminal,
            stdin_once: parts.stdin_once,
            log: parts.log,
            log_failing: false,
            signals: parts.signals,
            attach_listener: parts.attach_listener,
            clients: Vec::new(),
            control_listener: parts.control_listener,
            controls: Vec::new(),
            exit: None,
            drain_idle_until: now,
            drain_until: now,
        })
    }

    /// Runs until the container has exited and its output is drained; then returns its exit.
    /// `on_init_exit` runs once, as soon as the init has exited (before the drain, so that
    /// processes it kills stop holding the output pipes). The caller writes `exit.json` and
    /// calls [`Supervisor::notify_exit`].
    pub fn run(&mut self, on_init_exit: impl FnOnce()) -> InitExit {
        self.reap_children();
        let mut on_init_exit = Some(on_init_exit);
        loop {
            if let Some(exit) = self.exit {
                if let Some(on_init_exit) = on_init_exit.take() {
                    on_init_exit();
                    // Their last output is read before the drain ends.
                    self.drain_idle_until = Instant::now() + DRAIN_IDLE;
                }
                let drained = self.sources.iter().all(|source| source.file.is_none());
                let now = Instant::now();
                if drained || now >= self.drain_idle_until || now >= self.drain_until {
                    return exit;
                }
            }
            self.poll_once();
        }
    }

    /// Waits once for what is ready and serves it.
    fn poll_once(&mut self) {
        let timeout = self.poll_timeout();
        let (mut fds, tokens) = self.watched();
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return,
            Err(errno) => {
                diag!("poll: {errno}");
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
        }
        let events: Vec<(Token, PollFlags)> = tokens
            .into_iter()
            .zip(
                fds.iter()
                    .map(|fd| fd.revents().unwrap_or(PollFlags::empty())),
            )
            .filter(|(_, revents)| !revents.is_empty())
            .collect();
        drop(fds);

        for (token, revents) in events {
            self.handle(token, revents);
        }
        self.release_detached_clients();
        self.write_stdin();
        self.clients.retain(|client| !client.closed);
        self.controls.retain(|control| !control.closed);
    }

    /// No limit while the container runs; once it has exited, until its output counts as
    /// drained.
    fn poll_timeout(&self) -> PollTimeout {
        match self.exit {
            Some(_) => {
                let until = self.drain_idle_until.min(self.drain_until);
                PollTimeout::try_from(until.saturating_duration_since(Instant::now()))
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        }
    }

    /// The descriptors to poll, each with what it is. Clients are not read while stdin has a
    /// backlog.
    fn watched(&self) -> (Vec<PollFd<'_>>, Vec<Token>) {
        let stdin_backlogged = self
            .stdin
            .as_ref()
            .is_some_and(|sink| sink.pending.len() > STDIN_BACKLOG_LIMIT);
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        let mut tokens = Vec::new();
        let mut watch = |fd, flags, token| {
            fds.push(PollFd::new(fd, flags));
            tokens.push(token);
        };
        watch(self.signals.as_fd(), PollFlags::POLLIN, Token::Signals);
        if self.exit.is_none() {
            if let Some(pidfd) = &self.container_pidfd {
                watch(pidfd.as_fd(), PollFlags::POLLIN, Token::ContainerExit);
            }
        }
        for (index, source) in self.sources.iter().enumerate() {
            if let Some(file) = &source.file {
                watch(file.as_fd(), PollFlags::POLLIN, Token::Output(index));
            }
        }
        if let Some(sink) = &self.stdin {
            if !sink.pending.is_empty() {
                watch(sink.file.as_fd(), PollFlags::POLLOUT, Token::Stdin);
            }
        }
        watch(
            self.attach_listener.as_fd(),
            PollFlags::POLLIN,
            Token::AttachListener,
        );
        for (index, client) in self.clients.iter().enumerate() {
            let mut flags = PollFlags::empty();
            if !client.read_closed && !stdin_backlogged {
                flags |= PollFlags::POLLIN;
            }
            if client.has_outgoing() {
                flags |= PollFlags::POLLOUT;
            }
            watch(client.stream().as_fd(), flags, Token::Client(index));
        }
        watch(
            self.control_listener.as_fd(),
            PollFlags::POLLIN,
            Token::ControlListener,
        );
        for (index, control) in self.controls.iter().enumerate() {
            watch(
                control.stream().as_fd(),
                PollFlags::POLLIN,
                Token::Control(index),
            );
        }
        (fds, tokens)
    }

    fn handle(&mut self, token: Token, revents: PollFlags) {
        match token {
            Token::Signals => {
                while let Ok(Some(_)) = self.signals.read_signal() {}
                self.reap_children();
            }
            Token::ContainerExit => self.reap_container(),
            Token::Output(index) => self.read_output(index),
            Token::Stdin => {}
            Token::AttachListener => self.accept_clients(),
            Token::Client(index) => self.serve_client(index, revents),
            Token::ControlListener => self.accept_controls(),
            Token::Control(index) => self.serve_control(index),
        }
    }

    /// Reaps every exited child (the runtime's leftovers, re-parented orphans and the container's
    /// init), recording the init's status.
    fn reap_children(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => self.note_status(status),
                Err(Errno::EINTR) => {}
                Err(errno) => {
                    diag!("waitpid: {errno}");
                    return;
                }
            }
        }
    }

    /// The init's pidfd became readable: it exited. It is normally our child (we are the
    /// subreaper), so waitpid gives its status.
    fn reap_container(&mut self) {
        if self.exit.is_some() {
            return;
        }
        let pid = Pid::from_raw(self.container_pid);
        loop {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return,
                Ok(status) => return self.note_status(status),
                Err(Errno::EINTR) => {}
                Err(errno) => {
                    // Not our child after all: its status cannot be known.
                    diag!("container init {pid} exited but cannot be waited for ({errno}); exit code unknown");
                    self.record_exit(255, None);
                    return;
                }
            }
        }
    }

    fn note_status(&mut self, status: WaitStatus) {
        match status {
            WaitStatus::Exited(pid, code) if pid.as_raw() == self.container_pid => {
                self.record_exit(code, None);
            }
            WaitStatus::Signaled(pid, signal, _) if pid.as_raw() == self.container_pid => {
                self.record_exit(128 + signal as i32, Some(signal as i32));
            }
            _ => {}
        }
    }

    fn record_exit(&mut self, code: i32, signal: Option<i32>) {
        if self.exit.is_some() {
            return;
        }
        let finished_at_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|since| i64::try_from(since.as_nanos()).ok())
            .unwrap_or(0);
        diag!(
            "container init {} exited: code {code}, signal {signal:?}",
            self.container_pid
        );
        self.exit = Some(InitExit {
            code,
            signal,
            finished_at_ns,
        });
        self.container_pidfd = None;
        let now = Instant::now();
        self.drain_idle_until = now + DRAIN_IDLE;
        self.drain_until = now + DRAIN_LIMIT;
    }

    /// Reads one chunk of output, logs it and passes it to the attached clients.
    fn read_output(&mut self, index: usize) {
        let source = &mut self.sources[index];
        let stream = source.stream;
        let Some(file) = &mut source.file else { return };
        let mut buffer = vec![0u8; 65536];
        let n = match file.read(&mut buffer) {
            Ok(0) => {
                source.file = None;
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return
            }
            Err(e) => {
                // EIO: every holder of the terminal's other side closed it.
                if e.raw_os_error() != Some(libc::EIO) {
                    diag!("read container {}: {e}", stream.name());
                }
                source.file = None;
                return;
            }
        };
        let data = &buffer[..n];
        match self.log.write(stream, data) {
            Ok(()) if self.log_failing => {
                diag!("writing {} works again", self.log.path().display());
                self.log_failing = false;
            }
            Ok(()) => {}
            Err(e) if !self.log_failing => {
                diag!(
                    "write {}: {e}; output is lost until it works again",
                    self.log.path().display()
                );
                self.log_failing = true;
            }
            Err(_) => {}
        }
        for client in &mut self.clients {
            client.queue_output(stream, data);
            client.flush();
        }
        if self.exit.is_some() {
            self.drain_idle_until = Instant::now() + DRAIN_IDLE;
        }
    }

    /// Writes pending stdin; closes it once asked to and everything is written.
    fn write_stdin(&mut self) {
        let Some(sink) = &mut self.stdin else { return };
        while !sink.pending.is_empty() {
            match sink.file.write(&sink.pending) {
                Ok(n) => {
                    sink.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.raw_os_error() != Some(libc::EPIPE) {
                        diag!("write container stdin: {e}");
                    }
                    self.stdin = None;
                    return;
                }
            }
        }
        if sink.close_when_written {
            diag!("closing the container's stdin");
            self.stdin = None;
        }
    }

    /// Asks for the container's stdin to be closed once what is pending has been written.
    fn close_stdin(&mut self) {
        if let Some(sink) = &mut self.stdin {
            if !sink.close_when_written {
                if sink.terminal {
                    sink.pending.push(TERMINAL_EOF);
                }
                sink.close_when_written = true;
            }
        }
    }

    fn accept_clients(&mut self) {
        loop {
            match self.attach_listener.accept() {
                Ok((stream, _)) => match AttachConnection::new(stream) {
                    Ok(client) => self.clients.push(client),
                    Err(e) => diag!("set up attach client: {e}"),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    diag!("accept attach client: {e}");
                    return;
                }
            }
        }
    }

    fn serve_client(&mut self, index: usize, revents: PollFlags) {
        let hung_up = revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR);
        if revents.contains(PollFlags::POLLIN) || hung_up {
            let events = self.clients[index].read_events();
            for event in events {
                self.apply_client_event(index, event);
            }
        }
        if revents.contains(PollFlags::POLLOUT) {
            self.clients[index].flush();
        }
        let client = &mut self.clients[index];
        if hung_up && client.read_closed {
            client.closed = true;
        }
    }

    /// With `stdin_once`, the container's stdin is closed once a client that attached with stdin
    /// stops sending (detaches or ends its input).
    fn release_detached_clients(&mut self) {
        let mut release = false;
        for client in &mut self.clients {
            if (client.read_closed || client.closed) && !client.stdin_released {
                client.stdin_released = true;
                release |= client.wants_stdin();
            }
        }
        if release && self.stdin_once {
            self.close_stdin();
        }
    }

    fn apply_client_event(&mut self, index: usize, event: ClientEvent) {
        match event {
            ClientEvent::Stdin(data) => {
                if self.clients[index].wants_stdin() {
                    if let Some(sink) = &mut self.stdin {
                        if !sink.close_when_written {
                            sink.pending.extend_from_slice(&data);
                        }
                    }
                }
            }
            ClientEvent::Resize { width, height } => {
                if let Some(terminal) = &self.terminal {
                    if let Err(e) = corral_runtime::set_window_size(terminal.as_fd(), width, height)
                    {
                        diag!("resize terminal to {width}x{height}: {e}");
                    }
                }
            }
            ClientEvent::StdinClose => {
                if self.clients[index].wants_stdin() && self.stdin_once {
                    self.close_stdin();
                }
            }
        }
    }

    fn accept_controls(&mut self) {
        loop {
            match self.control_listener.accept() {
                Ok((stream, _)) => match ControlConnection::new(stream) {
                    Ok(control) => self.controls.push(control),
                    Err(e) => diag!("set up control connection: {e}"),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    diag!("accept control connection: {e}");
                    return;
                }
            }
        }
    }

    fn serve_control(&mut self, index: usize) {
        let Some(request) = self.controls[index].read_request() else {
            return;
        };
        let outcome = match request {
            // Between two reads of output: nothing is lost and nothing written twice.
            ControlRequest::ReopenLog => self
                .log
                .reopen()
                .map_err(|e| format!("reopen {}: {e}", self.log.path().display())),
        };
        if let Err(message) = &outcome {
            diag!("{message}");
        }
        self.controls[index].answer(&outcome);
    }

    /// Sends the exit frame to every attached client and waits (briefly) until they have it.
    pub fn notify_exit(&mut self, exit_code: i32) {
        for client in &mut self.clients {
            client.queue_exit(exit_code);
            client.flush();
        }
        let deadline = Instant::now() + EXIT_NOTICE_LIMIT;
        loop {
            self.clients
                .retain(|client| !client.closed && client.has_outgoing());
            let remaining = deadline.saturating_duration_since(Instant::now());
            if self.clients.is_empty() || remaining.is_zero() {
                break;
            }
            let mut fds: Vec<PollFd<'_>> = self
                .clients
                .iter()
                .map(|client| PollFd::new(client.stream().as_fd(), PollFlags::POLLOUT))
                .collect();
            let _ = poll(
                &mut fds,
                PollTimeout::try_from(remaining).unwrap_or(PollTimeout::MAX),
            );
            drop(fds);
            for client in &mut self.clients {
                client.flush();
            }
        }
        self.clients.clear();
    }
}

fn nonblocking(file: File) -> io::Result<File> {
    let flags = fcntl(file.as_fd(), FcntlArg::F_GETFL)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(file.as_fd(), FcntlArg::F_SETFL(flags))?;
    Ok(file)
}
