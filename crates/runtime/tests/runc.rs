//! Root tests with real runc, a busybox rootfs and the real corral-shim
//! (build it first: `cargo build -p corral-shim`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::io::Read;
use std::time::Duration;

use corral_runtime::attach::{AttachStreams, Frame};
use corral_runtime::state_dir::{ATTACH_SOCKET, CONTROL_SOCKET};
use corral_runtime::{
    read_container_pid, reopen_log, shim_alive, ExecIo, OciRuntime, RuntimeError,
};
use oci_spec::runtime::{LinuxMemoryBuilder, LinuxResourcesBuilder};
use support::{eventually, fixture, process, setup, Fixture, Options};

/// Joins consecutive entries of `stream` into lines: `P` entries continue, `F` ends a line.
fn lines_of(entries: &[(String, String, String)], stream: &str) -> Vec<(String, usize)> {
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut parts = 0;
    for (entry_stream, tag, text) in entries {
        if entry_stream != stream {
            continue;
        }
        assert!(text.len() <= 16 * 1024, "entry of {} bytes", text.len());
        current.push_str(text);
        parts += 1;
        if tag == "F" {
            lines.push((std::mem::take(&mut current), parts));
            parts = 0;
        }
    }
    lines
}

#[test]
fn output_is_logged_in_cri_format_and_the_exit_code_is_recorded() {
    let Some(mut fixture) = fixture(
        "output_is_logged_in_cri_format_and_the_exit_code_is_recorded",
        &Options::shell(
            "echo out; echo err >&2; head -c 40960 /dev/zero | tr '\\0' x; echo; \
             printf 'no newline'; exit 3",
        ),
    ) else {
        return;
    };
    let shim = fixture.launch().unwrap();
    assert_eq!(
        read_container_pid(fixture.state_dir()).unwrap(),
        Some(shim.container_pid)
    );
    let state = fixture.runtime.state(&fixture.id).unwrap().unwrap();
    assert_eq!(state.status, "created");
    assert_eq!(state.pid, shim.container_pid);
    assert!(shim_alive(fixture.state_dir()));
    assert!(shim.identity().is_alive());
    // Detached: its own session, and no longer the launcher's child but this subreaper's.
    assert_eq!(
        nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(shim.shim_pid)))
            .unwrap()
            .as_raw(),
        shim.shim_pid
    );
    let status = fs::read_to_string(format!("/proc/{}/status", shim.shim_pid)).unwrap();
    assert!(
        status.contains(&format!("\nPPid:\t{}\n", std::process::id())),
        "{status}"
    );

    // The caller that launched the shim is gone; the shim carries on alone.
    fixture.runtime.start(&fixture.id).unwrap();
    let exit = fixture.wait_exit();
    assert_eq!(exit.exit_code, 3);
    assert_eq!(exit.signal, None);
    assert!(!exit.oom_killed);
    assert!(exit.finished_at_ns > 0);
    assert!(!shim_alive(fixture.state_dir()));
    assert!(!fixture.state_dir().join(ATTACH_SOCKET).exists());
    assert!(!fixture.state_dir().join(CONTROL_SOCKET).exists());

    let entries = fixture.log_entries();
    let stdout = lines_of(&entries, "stdout");
    let stderr = lines_of(&entries, "stderr");
    assert_eq!(stderr, [("err".to_owned(), 1)]);
    assert_eq!(stdout[0], ("out".to_owned(), 1));
    let (long_line, parts) = &stdout[1];
    assert_eq!(long_line, &"x".repeat(40960));
    assert!(*parts >= 3, "a 40 KiB line in {parts} entries");
    assert_eq!(stdout.len(), 2);
    // Two pipes have no order between them: "err" may be read after all of stdout.
    let last = entries.iter().rev().find(|e| e.0 == "stdout").unwrap();
    assert_eq!((last.1.as_str(), last.2.as_str()), ("P", "no newline"));
    assert_eq!(
        fixture.runtime.state(&fixture.id).unwrap().unwrap().status,
        "stopped"
    );
}

#[test]
fn a_signalled_container_reports_128_plus_the_signal() {
    let Some(mut fixture) = fixture(
        "a_signalled_container_reports_128_plus_the_signal",
        &Options::command(&["sleep", "1000"]),
    ) else {
        return;
    };
    fixture.run();
    fixture.runtime.kill(&fixture.id, 9, false).unwrap();
    let exit = fixture.wait_exit();
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
    // Killing and deleting what is gone or unknown is not an error.
    fixture.runtime.kill(&fixture.id, 15, false).unwrap();
    fixture.runtime.kill(&fixture.id, 15, true).unwrap();
    fixture.runtime.delete(&fixture.id, false).unwrap();
    assert_eq!(fixture.runtime.state(&fixture.id).unwrap(), None);
    fixture.runtime.delete(&fixture.id, true).unwrap();
    fixture.runtime.kill(&fixture.id, 9, false).unwrap();
}

#[test]
fn a_failed_create_leaves_nothing_behind() {
    let Some(mut fixture) = fixture(
        "a_failed_create_leaves_nothing_behind",
        &Options::command(&["/bin/no-such-program"]),
    ) else {
        return;
    };
    let error = fixture.launch().unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(
            error,
            RuntimeError::Refused {
                command: "create",
                field: "config.command",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(message.contains(&fixture.id), "{message}");
    assert!(message.contains("no-such-program"), "{message}");
    assert_eq!(fixture.runtime.state(&fixture.id).unwrap(), None);
    assert!(!shim_alive(fixture.state_dir()));
    assert!(!fixture.state_dir().join(ATTACH_SOCKET).exists());
    assert!(!fixture.cgroup_dir("memory").exists());
}

#[test]
fn attach_echoes_stdin_and_stdin_once_closes_it() {
    let Some(mut fixture) = fixture(
        "attach_echoes_stdin_and_stdin_once_closes_it",
        &Options {
            stdin: true,
            stdin_once: true,
            ..Options::command(&["cat"])
        },
    ) else {
        return;
    };
    fixture.launch().unwrap();
    let streams = AttachStreams {
        stdin: true,
        stdout: true,
        stderr: true,
    };
    let (mut reader, mut writer) = fixture.attach(streams);
    // A second client that only watches stdout.
    let (mut watcher, _watcher_writer) = fixture.attach(AttachStreams {
        stdout: true,
        ..AttachStreams::default()
    });
    fixture.runtime.start(&fixture.id).unwrap();
    writer.send_stdin(b"hello\n").unwrap();
    assert_eq!(
        reader.next_frame().unwrap(),
        Some(Frame::Stdout(b"hello\n".to_vec()))
    );
    writer.send_stdin(b"second").unwrap();
    writer.close_stdin().unwrap();
    let rest = reader.read_to_exit().unwrap();
    assert_eq!(rest.stdout, b"second");
    assert_eq!(rest.exit_code, Some(0));
    let watched = watcher.read_to_exit().unwrap();
    assert_eq!(watched.stdout, b"hello\nsecond");
    assert_eq!(watched.exit_code, Some(0));
    assert_eq!(fixture.wait_exit().exit_code, 0);
    let entries = fixture.log_entries();
    assert_eq!(
        lines_of(&entries, "stdout"),
        [("hello".to_owned(), 1)],
        "{entries:?}"
    );
    assert_eq!(entries.last().unwrap().2, "second");
}

#[test]
fn detaching_the_first_stdin_client_closes_stdin_once() {
    let Some(mut fixture) = fixture(
        "detaching_the_first_stdin_client_closes_stdin_once",
        &Options {
            stdin: true,
            stdin_once: true,
            ..Options::shell("cat; echo stdin closed")
        },
    ) else {
        return;
    };
    fixture.run();
    let (reader, mut writer) = fixture.attach(AttachStreams {
        stdin: true,
        ..AttachStreams::default()
    });
    writer.send_stdin(b"bye\n").unwrap();
    drop((reader, writer));
    assert_eq!(fixture.wait_exit().exit_code, 0);
    let entries = fixture.log_entries();
    assert_eq!(
        lines_of(&entries, "stdout"),
        [("bye".to_owned(), 1), ("stdin closed".to_owned(), 1)],
        "{entries:?}"
    );
}

#[test]
fn a_terminal_container_is_resized_through_attach() {
    let Some(mut fixture) = fixture(
        "a_terminal_container_is_resized_through_attach",
        &Options {
            tty: true,
            stdin: true,
            // Socket paths beyond sockaddr_un's 107 bytes, console socket included.
            deep_state_dir: true,
            ..Options::shell("read line; stty size; echo \"got $line\"")
        },
    ) else {
        return;
    };
    assert!(fixture.state_dir().join(ATTACH_SOCKET).as_os_str().len() > 107);
    fixture.launch().unwrap();
    let (mut reader, mut writer) = fixture.attach(AttachStreams {
        stdin: true,
        stdout: true,
        stderr: true,
    });
    writer.resize(123, 45).unwrap();
    fixture.runtime.start(&fixture.id).unwrap();
    writer.send_stdin(b"go\n").unwrap();
    let transcript = reader.read_to_exit().unwrap();
    let output = String::from_utf8_lossy(&transcript.stdout);
    assert!(output.contains("45 123"), "{output:?}");
    assert!(output.contains("got go"), "{output:?}");
    assert!(transcript.stderr.is_empty());
    assert_eq!(transcript.exit_code, Some(0));
    assert_eq!(fixture.wait_exit().exit_code, 0);
    let logged: String = fixture
        .log_entries()
        .into_iter()
        .map(|(stream, _, text)| {
            assert_eq!(stream, "stdout", "a terminal has one stream");
            text
        })
        .collect();
    assert!(logged.contains("45 123"), "{logged:?}");
}

#[test]
fn reopen_log_continues_in_a_new_file() {
    let Some(mut fixture) = fixture(
        "reopen_log_continues_in_a_new_file",
        &Options {
            stdin: true,
            ..Options::shell("echo one; read x; echo two")
        },
    ) else {
        return;
    };
    fixture.run();
    eventually("the first line is logged", || {
        fixture
            .log_entries()
            .iter()
            .any(|(_, _, text)| text == "one")
    });
    let rotated = fixture.log_path().with_extension("log.1");
    fs::rename(fixture.log_path(), &rotated).unwrap();
    reopen_log(fixture.state_dir(), Duration::from_secs(10)).unwrap();
    assert!(fixture.log_path().exists());
    let (_reader, mut writer) = fixture.attach(AttachStreams {
        stdin: true,
        ..AttachStreams::default()
    });
    writer.send_stdin(b"\n").unwrap();
    assert_eq!(fixture.wait_exit().exit_code, 0);
    let old = support::parse_log(&fs::read_to_string(&rotated).unwrap());
    let new = fixture.log_entries();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].2, "one");
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].2, "two");
    // Once the shim is gone, asking is a clear error.
    assert!(reopen_log(fixture.state_dir(), Duration::from_secs(1)).is_err());
}

#[test]
fn exec_sync_collects_output_exit_codes_and_honours_timeouts() {
    let Some(mut fixture) = fixture(
        "exec_sync_collects_output_exit_codes_and_honours_timeouts",
        &Options::command(&["sleep", "1000"]),
    ) else {
        return;
    };
    fixture.run();
    let runtime = &fixture.runtime;
    let id = fixture.id.clone();

    let output = runtime
        .exec_sync(&id, &process(&["echo", "hello"]), None)
        .unwrap();
    assert_eq!(output.stdout, b"hello\n");
    assert!(output.stderr.is_empty());
    assert_eq!(output.exit_code, 0);
    assert!(!output.timed_out);

    let output = runtime
        .exec_sync(
            &id,
            &process(&["sh", "-c", "echo oops >&2; exit 7"]),
            Some(Duration::from_secs(60)),
        )
        .unwrap();
    assert_eq!(output.stderr, b"oops\n");
    assert_eq!(output.exit_code, 7);

    let output = runtime
        .exec_sync(
            &id,
            &process(&["sleep", "100"]),
            Some(Duration::from_millis(500)),
        )
        .unwrap();
    assert!(output.timed_out);
    assert_eq!(output.exit_code, 137);

    // A background child keeps the pipes open; the exec still returns once `sh` has exited.
    let output = runtime
        .exec_sync(&id, &process(&["sh", "-c", "sleep 100 & echo hi"]), None)
        .unwrap();
    assert_eq!(output.stdout, b"hi\n");
    assert_eq!(output.exit_code, 0);
    assert!(!output.timed_out);

    // More than fits in a pipe, all of it collected.
    let output = runtime
        .exec_sync(&id, &process(&["head", "-c", "1000000", "/dev/zero"]), None)
        .unwrap();
    assert_eq!(output.stdout.len(), 1_000_000);

    let error = runtime
        .exec_sync(&id, &process(&["/bin/no-such-program"]), None)
        .unwrap_err();
    assert!(
        matches!(
            error,
            RuntimeError::Refused {
                command: "exec",
                field: "cmd",
                ..
            }
        ),
        "{error:?}"
    );
    let error = runtime
        .exec_sync("no-such-container", &process(&["true"]), None)
        .unwrap_err();
    assert!(error.to_string().contains("no-such-container"), "{error}");

    runtime.kill(&id, 9, true).unwrap();
    assert_eq!(fixture.wait_exit().exit_code, 137);
}

#[test]
fn exec_with_a_terminal_reports_its_size_and_exit_code() {
    let Some(mut fixture) = fixture(
        "exec_with_a_terminal_reports_its_size_and_exit_code",
        &Options::command(&["sleep", "1000"]),
    ) else {
        return;
    };
    fixture.run();
    let mut exec = fixture.exec(
        &["sh", "-c", "stty size; exit 5"],
        ExecIo::Terminal {
            width: 91,
            height: 17,
        },
    );
    let mut terminal = exec.terminal.take().unwrap();
    let mut output = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match terminal.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => output.extend_from_slice(&buffer[..n]),
            // EIO: the runtime, the last holder of the terminal, has exited.
            Err(_) => break,
        }
    }
    assert_eq!(exec.wait().unwrap(), 5);
    let output = String::from_utf8_lossy(&output);
    assert!(output.contains("17 91"), "{output:?}");

    let mut exec = fixture.exec(
        &["sh", "-c", "read x; exit 4"],
        ExecIo::Pipes { stdin: true },
    );
    assert_eq!(exec.try_wait().unwrap(), None);
    std::io::Write::write_all(exec.stdin.as_mut().unwrap(), b"\n").unwrap();
    assert_eq!(exec.wait().unwrap(), 4);
    assert_eq!(exec.try_wait().unwrap(), Some(4));

    let mut exec = fixture.exec(&["sleep", "100"], ExecIo::Pipes { stdin: false });
    assert!(exec.pid() > 0);
    exec.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
    assert_eq!(exec.wait().unwrap(), 137);

    // A handle dropped early kills and reaps its process: no zombie is left.
    let exec = fixture.exec(&["sleep", "100"], ExecIo::Pipes { stdin: false });
    let pid = exec.pid();
    drop(exec);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn update_changes_the_memory_limit() {
    let Some(mut fixture) = fixture(
        "update_changes_the_memory_limit",
        &Options {
            memory_limit: Some(64 << 20),
            ..Options::command(&["sleep", "1000"])
        },
    ) else {
        return;
    };
    fixture.run();
    let limit_file = fixture.cgroup_dir("memory").join("memory.limit_in_bytes");
    let read_limit = || fs::read_to_string(&limit_file).unwrap().trim().to_owned();
    assert_eq!(read_limit(), (64u64 << 20).to_string());
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(32i64 << 20)
                .swap(32i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    fixture.runtime.update(&fixture.id, &resources).unwrap();
    assert_eq!(read_limit(), (32u64 << 20).to_string());
    let error = fixture
        .runtime
        .update("no-such-container", &resources)
        .unwrap_err();
    assert!(error.to_string().contains("no-such-container"), "{error}");
}

#[test]
fn an_oom_kill_is_recorded() {
    let Some(mut fixture) = fixture(
        "an_oom_kill_is_recorded",
        &Options {
            memory_limit: Some(16 << 20),
            // busybox tail keeps the whole (newline-free) input in memory.
            ..Options::command(&["tail", "/dev/zero"])
        },
    ) else {
        return;
    };
    fixture.run();
    let exit = fixture.wait_exit();
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.signal, Some(9));
}

#[test]
fn an_unusable_crun_is_reported_plainly() {
    let Some(host) = setup("an_unusable_crun_is_reported_plainly") else {
        return;
    };
    let Some(crun) = support::on_path("crun") else {
        eprintln!("skipping an_unusable_crun_is_reported_plainly: crun is not installed");
        return;
    };
    let mut fixture = Fixture::new(&host, &Options::command(&["true"]));
    let crun = OciRuntime {
        name: "crun".into(),
        binary: crun,
        ..fixture.runtime.clone()
    };
    crun.check_usable().unwrap();
    fixture.runtime = crun.clone();
    fixture.config.runtime = crun;
    let hybrid = fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .is_ok_and(|controllers| !controllers.trim().is_empty());
    match fixture.launch() {
        Err(RuntimeError::Unusable { runtime, message }) => {
            assert!(hybrid, "crun refused a host that is not hybrid: {message}");
            assert_eq!(runtime, "crun");
            assert!(
                message.contains("crun cannot run on this host's hybrid cgroup layout"),
                "{message}"
            );
        }
        Ok(_) => {
            assert!(!hybrid, "crun ran on a hybrid host");
            fixture.runtime.start(&fixture.id).unwrap();
            assert_eq!(fixture.wait_exit().exit_code, 0);
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}
