//! Root tests that really start `corral-pause` (build it first: `cargo build -p corral-pause`).

#![allow(clippy::unwrap_used)]

mod support;

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use corral_sandbox::{ns_inode, spawn_pause, PauseProcess, PauseSpec, SandboxError};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{eventually, read_in_namespace, read_trimmed, setup, status_field, RunningPause};

fn my_pid() -> i32 {
    i32::try_from(std::process::id()).unwrap()
}

#[test]
fn new_namespaces_differ_from_the_hosts_and_hold_the_hostname() {
    let Some(binary) = setup("new_namespaces_differ_from_the_hosts_and_hold_the_hostname") else {
        return;
    };
    let host_hostname = read_trimmed("/proc/sys/kernel/hostname");
    let pause = RunningPause::spawn(
        &binary,
        &PauseSpec {
            new_net: true,
            new_ipc: true,
            new_uts: true,
            hostname: Some("corral-test-pod".into()),
            ..PauseSpec::default()
        },
    );
    assert!(pause.is_alive());
    for ns in ["net", "ipc", "uts"] {
        assert_ne!(
            pause.ns_inode(ns).unwrap(),
            ns_inode(my_pid(), ns).unwrap(),
            "{ns}"
        );
    }
    for ns in ["pid", "mnt"] {
        assert_eq!(
            pause.ns_inode(ns).unwrap(),
            ns_inode(my_pid(), ns).unwrap(),
            "{ns}"
        );
    }
    let pod_hostname = read_in_namespace(
        &pause.ns_path("uts"),
        CloneFlags::CLONE_NEWUTS,
        "/proc/sys/kernel/hostname",
    );
    assert_eq!(pod_hostname, "corral-test-pod");
    assert_eq!(read_trimmed("/proc/sys/kernel/hostname"), host_hostname);

    // Set up as designed: its own session, unprivileged, no open files but /dev/null.
    assert_eq!(
        status_field(pause.pid, "Uid").unwrap(),
        "65535\t65535\t65535\t65535"
    );
    assert_eq!(
        status_field(pause.pid, "Gid").unwrap(),
        "65535\t65535\t65535\t65535"
    );
    assert_eq!(status_field(pause.pid, "Groups").unwrap(), "");
    let mut fds: Vec<_> = fs::read_dir(format!("/proc/{}/fd", pause.pid))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().into_string().unwrap(),
                fs::read_link(entry.path()).unwrap(),
            )
        })
        .collect();
    fds.sort();
    let null = Path::new("/dev/null").to_owned();
    assert_eq!(
        fds,
        [
            ("0".into(), null.clone()),
            ("1".into(), null.clone()),
            ("2".into(), null)
        ]
    );
    let stat = fs::read_to_string(format!("/proc/{}/stat", pause.pid)).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let session: i32 = after_name.split(' ').nth(3).unwrap().parse().unwrap();
    assert_eq!(session, pause.pid, "the pause leads its own session");
    assert_eq!(
        fs::read_link(format!("/proc/{}/cwd", pause.pid)).unwrap(),
        Path::new("/")
    );
}

#[test]
fn sysctls_apply_inside_the_pod_only() {
    let Some(binary) = setup("sysctls_apply_inside_the_pod_only") else {
        return;
    };
    let port_start = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
    let shmmax = "/proc/sys/kernel/shmmax";
    let host_port_start = read_trimmed(port_start);
    let host_shmmax = read_trimmed(shmmax);
    let pause = RunningPause::spawn(
        &binary,
        &PauseSpec {
            new_net: true,
            new_ipc: true,
            sysctls: vec![
                ("net.ipv4.ip_unprivileged_port_start".into(), "80".into()),
                ("kernel.shmmax".into(), "12345678".into()),
            ],
            ..PauseSpec::default()
        },
    );
    assert_eq!(
        read_in_namespace(&pause.ns_path("net"), CloneFlags::CLONE_NEWNET, port_start),
        "80"
    );
    assert_eq!(
        read_in_namespace(&pause.ns_path("ipc"), CloneFlags::CLONE_NEWIPC, shmmax),
        "12345678"
    );
    assert_eq!(read_trimmed(port_start), host_port_start);
    assert_eq!(read_trimmed(shmmax), host_shmmax);
}

#[test]
fn a_pid_namespace_makes_the_pause_pid_one_and_it_reaps_orphans() {
    let Some(binary) = setup("a_pid_namespace_makes_the_pause_pid_one_and_it_reaps_orphans") else {
        return;
    };
    let pause = RunningPause::spawn(
        &binary,
        &PauseSpec {
            new_pid: true,
            ..PauseSpec::default()
        },
    );
    assert_eq!(
        status_field(pause.pid, "NSpid").unwrap(),
        format!("{}\t1", pause.pid)
    );
    assert_ne!(
        pause.ns_inode("pid").unwrap(),
        ns_inode(my_pid(), "pid").unwrap()
    );

    // The outer shell joins the pod's PID namespace for its children; the inner shell, inside it,
    // starts `sleep` in the background and exits, orphaning it to the namespace's PID 1.
    let pid_namespace = File::open(pause.ns_path("pid")).unwrap();
    let mut outer = Command::new("/bin/sh");
    outer.args([
        "-c",
        "/bin/sh -c 'sleep 600 </dev/null >/dev/null 2>&1 &'; exit 0",
    ]);
    // SAFETY: setns is async-signal-safe; the closure only makes that one system call.
    unsafe {
        outer.pre_exec(move || {
            setns(&pid_namespace, CloneFlags::CLONE_NEWPID).map_err(std::io::Error::from)
        });
    }
    assert!(outer.status().unwrap().success());

    let orphan = children_of(pause.pid);
    assert_eq!(orphan.len(), 1, "children of the pause: {orphan:?}");
    let orphan = orphan[0];
    let nspid = status_field(orphan, "NSpid").unwrap();
    assert_eq!(nspid.split('\t').count(), 2, "orphan NSpid {nspid}");

    kill(Pid::from_raw(orphan), Signal::SIGKILL).unwrap();
    // A pause that did not reap would leave the orphan a zombie for good.
    eventually("the pause reaped the orphan", || {
        status_field(orphan, "PPid").as_deref() != Some(pause.pid.to_string().as_str())
    });
    assert!(pause.is_alive());
}

/// Processes whose parent is `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|candidate| status_field(*candidate, "PPid") == Some(pid.to_string()))
        .collect()
}

#[test]
fn stop_is_idempotent_and_reaps_the_pause() {
    let Some(binary) = setup("stop_is_idempotent_and_reaps_the_pause") else {
        return;
    };
    let pause = spawn_pause(
        &binary,
        &PauseSpec {
            new_net: true,
            new_pid: true,
            ..PauseSpec::default()
        },
    )
    .unwrap();
    assert!(pause.is_alive());
    pause.stop(Duration::from_secs(10)).unwrap();
    assert!(!pause.is_alive());
    assert_eq!(
        PauseProcess::from_pid(pause.pid)
            .unwrap()
            .map(|p| p.start_time),
        None,
        "the stopped pause was reaped"
    );
    pause.stop(Duration::from_secs(10)).unwrap();
    pause.stop(Duration::ZERO).unwrap();
}

#[test]
fn the_oom_score_adj_is_applied() {
    let Some(binary) = setup("the_oom_score_adj_is_applied") else {
        return;
    };
    // Raising the score needs no privilege, so this holds with or without CAP_SYS_RESOURCE.
    let pause = RunningPause::spawn(
        &binary,
        &PauseSpec {
            oom_score_adj: 500,
            ..PauseSpec::default()
        },
    );
    assert_eq!(
        read_trimmed(&format!("/proc/{}/oom_score_adj", pause.pid)),
        "500"
    );
}

/// The launcher run as `nobody`, with a copy of the binary that `nobody` may execute.
fn unprivileged_launcher(binary: &Path, dir: &Path, args: &[&str]) -> std::process::Output {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("corral-pause");
    fs::copy(binary, &copy).unwrap();
    // Until they exec, children forked by other test threads hold the copy's write descriptor
    // (close-on-exec), and exec of a file open for writing fails with ETXTBSY: retry.
    let mut attempts = 0;
    loop {
        let result = Command::new(&copy)
            .args(args)
            .uid(65534)
            .gid(65534)
            .current_dir("/")
            .output();
        match result {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result.unwrap(),
        }
    }
}

#[test]
fn without_cap_sys_resource_the_oom_score_adj_is_clamped() {
    let Some(binary) = setup("without_cap_sys_resource_the_oom_score_adj_is_clamped") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let inherited = read_trimmed("/proc/self/oom_score_adj");
    assert_ne!(inherited, "-998");
    let output = unprivileged_launcher(
        &binary,
        dir.path(),
        &[
            "--oom-score-adj",
            "-998",
            "--uid",
            "65534",
            "--gid",
            "65534",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let pid: i32 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("pid "))
        .unwrap()
        .parse()
        .unwrap();
    let pause = RunningPause(PauseProcess::from_pid(pid).unwrap().unwrap());
    assert_eq!(
        read_trimmed(&format!("/proc/{}/oom_score_adj", pause.pid)),
        inherited
    );
    assert_eq!(
        status_field(pause.pid, "Uid").unwrap(),
        "65534\t65534\t65534\t65534"
    );
}

#[test]
fn a_failed_privilege_drop_is_reported() {
    let Some(binary) = setup("a_failed_privilege_drop_is_reported") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let output = unprivileged_launcher(&binary, dir.path(), &["--uid", "0", "--gid", "0"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        stdout.starts_with("error: drop privileges: setresgid(0)"),
        "{stdout}"
    );
    assert!(!stdout.contains("pid "), "{stdout}");
}

#[test]
fn a_failed_setup_is_reported_and_leaves_no_pause() {
    let Some(binary) = setup("a_failed_setup_is_reported_and_leaves_no_pause") else {
        return;
    };
    let error = spawn_pause(
        &binary,
        &PauseSpec {
            new_net: true,
            sysctls: vec![("net.ipv4.corral_no_such_sysctl".into(), "1".into())],
            ..PauseSpec::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(&error, SandboxError::PauseFailed { message, .. }
            if message.contains("net.ipv4.corral_no_such_sysctl")),
        "{error}"
    );
    // A sysctl for a namespace that is not created would change the host: refused.
    let error = spawn_pause(
        &binary,
        &PauseSpec {
            sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
            ..PauseSpec::default()
        },
    )
    .unwrap_err();
    assert!(error.to_string().contains("needs --net"), "{error}");
}

#[test]
fn a_missing_launcher_is_reported() {
    let error = spawn_pause(
        Path::new("/nonexistent/corral-pause"),
        &PauseSpec::default(),
    )
    .unwrap_err();
    assert!(matches!(error, SandboxError::LaunchPause { .. }), "{error}");
}
