//! Containers in pods: the pod experiments of issue 4, against a real corrald, runc, overlay
//! rootfs from a local registry, CNI bridge and cgroups.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_e2e::cri::{
    self, privileged_pod, security_context as security, with_namespaces, with_resources, Rt,
};
use corral_e2e::volume::{is_host_mount_point, mount_inside, TmpfsVolume};
use corral_e2e::*;
use cri_proto::v1::*;
use tonic::Code;

const POD: i32 = NamespaceMode::Pod as i32;
const CONTAINER: i32 = NamespaceMode::Container as i32;
const NODE: i32 = NamespaceMode::Node as i32;

use corral_e2e::cri::{container_env as env, ContainerEnv as Env};

async fn pod(env: &mut Env, name: &str, modes: (i32, i32, i32)) -> (String, PodSandboxConfig) {
    env.pod_with(name, modes, |_| {}).await
}

#[tokio::test]
async fn a_container_runs_logs_and_exits() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = pod(&mut env, "basic", (POD, CONTAINER, POD)).await;
    let config = cri::container_config(
        "hello",
        &env.image,
        &[
            "sh",
            "-c",
            "echo out-line; echo err-line >&2; echo $FROM_IMAGE; exit 3",
        ],
    );
    let id = cri::run(&mut env.rt, &pod_id, &pod, config).await;
    let st = cri::wait_exited(&mut env.rt, &id, Duration::from_secs(20)).await;
    assert_eq!(st.exit_code, 3);
    assert_eq!(st.reason, "Error");
    assert!(st.finished_at >= st.started_at && st.started_at >= st.created_at);
    let log = std::path::PathBuf::from(&st.log_path);
    assert!(log.starts_with(env.daemon.dir().join("logs")));
    let lines = cri::log_lines(&log);
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "out-line".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "F".into(), "err-line".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "yes".into())),
        "{lines:?}"
    );

    let sleeper = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config("sleeper", &env.image, &["sleep", "1000"]),
    )
    .await;
    let (code, out, _) = cri::exec(
        &mut env.rt,
        &sleeper,
        &["sh", "-c", "echo from-exec; exit 7"],
    )
    .await;
    assert_eq!((code, out.trim()), (7, "from-exec"));
    let listed = env
        .rt
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 2);
    cri::stop(&mut env.rt, &sleeper, 2).await;
    let st = cri::wait_exited(&mut env.rt, &sleeper, Duration::from_secs(10)).await;
    assert_ne!(st.exit_code, 0);
    cri::remove_pod(&mut env.rt, &pod_id).await;
    let left = cri::all_containers(&mut env.rt).await;
    assert!(left.is_empty(), "RemovePodSandbox removes its containers");
    assert!(
        mounts_containing(&env.daemon.state().to_string_lossy()).is_empty(),
        "mounts left"
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers of the pod experiments.

/// Two containers in the pod: `a` listening on TCP 8080 (`nc`), `b` sleeping; returns their ids.
async fn listener_and_sleeper(
    env: &mut Env,
    pod_id: &str,
    pod: &PodSandboxConfig,
    image: &str,
    modes: (i32, i32, i32),
) -> (String, String) {
    let listener = cri::container_config(
        "a",
        image,
        &["sh", "-c", "sleep 1000 | nc -l -p 8080; sleep 1000"],
    );
    let a = cri::run(&mut env.rt, pod_id, pod, with_namespaces(listener, modes)).await;
    let sleeper = cri::container_config("b", image, &["sleep", "1000"]);
    let b = cri::run(&mut env.rt, pod_id, pod, with_namespaces(sleeper, modes)).await;
    (a, b)
}

/// Nanoseconds since the epoch of an RFC 3339 timestamp with up to nine fraction digits
/// (`2024-05-01T12:34:56.123456789Z` or `...+02:00`); `None` when it is not one.
fn rfc3339_nanos(ts: &str) -> Option<i128> {
    fn number(s: &str, len: usize) -> Option<i128> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    }
    let (date, time) = ts.split_once('T')?;
    let mut ymd = date.split('-');
    let (year, month, day) = (
        number(ymd.next()?, 4)?,
        number(ymd.next()?, 2)?,
        number(ymd.next()?, 2)?,
    );
    if ymd.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, offset_secs) = if let Some(clock) = time.strip_suffix('Z') {
        (clock, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (clock, offset) = time.split_at(at);
        let (hours, minutes) = offset[1..].split_once(':')?;
        let secs = number(hours, 2)? * 3600 + number(minutes, 2)? * 60;
        (clock, if offset.starts_with('-') { -secs } else { secs })
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<i128>().ok()? * 10i128.pow(9 - fraction.len() as u32)
    };
    let mut parts = hms.split(':');
    let (h, m, s) = (
        number(parts.next()?, 2)?,
        number(parts.next()?, 2)?,
        number(parts.next()?, 2)?,
    );
    if parts.next().is_some() || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (the "days from civil" algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + m * 60 + s - offset_secs) * 1_000_000_000 + nanos)
}

#[test]
fn rfc3339_timestamps_parse() {
    assert_eq!(rfc3339_nanos("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        rfc3339_nanos("2000-03-01T00:00:01.5Z"),
        Some((951_868_800 + 1) * 1_000_000_000 + 500_000_000)
    );
    assert_eq!(
        rfc3339_nanos("2000-03-01T02:00:00.000000001+02:00"),
        Some(951_868_800 * 1_000_000_000 + 1)
    );
    assert_eq!(rfc3339_nanos("2000-03-01 00:00:00Z"), None);
    assert_eq!(rfc3339_nanos("2000-03-01T00:00:00"), None);
    assert_eq!(rfc3339_nanos("2000-03-01T00:00:00.1234567890Z"), None);
}

/// The raw lines of a CRI log file.
fn raw_log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Whether a CRI log file holds a full (`F`) line `text` on `stream`.
fn log_has(path: &Path, stream: &str, text: &str) -> bool {
    cri::log_lines(path).contains(&(stream.into(), "F".into(), text.into()))
}

/// The numbers of the `seq-N` lines of a CRI log file, in order.
fn seq_numbers(path: &Path) -> Vec<u64> {
    cri::log_lines(path)
        .iter()
        .filter_map(|(_, _, text)| text.strip_prefix("seq-")?.parse().ok())
        .collect()
}

/// A field of `/proc/PID/status` (`Uid:`, `Gid:`, `Groups:`) as numbers.
fn proc_status_ids(pid: i32, field: &str) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no {field}"))
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

/// A file of a v1 cgroup controller for a cgroup path as `/proc/PID/cgroup` shows it.
fn cgroup_file(controller: &str, cgroup: &str, file: &str) -> String {
    let path = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(cgroup.trim_start_matches('/'))
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

const MIB: i64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// The pod experiments.

#[tokio::test]
async fn two_containers_share_the_pods_net_ipc_uts_but_not_mnt_and_pid() {
    require_root!();
    let Some(mut env) = env().await else { return };
    // perl holds shmget/shmwrite/shmread (busybox has no SysV IPC applet).
    let mut perl_config = images::default_config();
    perl_config["Env"] = serde_json::json!(["PATH=/bin:/usr/bin"]);
    let perl_image = images::push_busybox_with_layers(
        &env.registry,
        "e2e/perl",
        "1",
        perl_config,
        vec![images::host_binaries_layer(&["/usr/bin/perl"])],
    );
    cri::pull(&mut env.daemon.images().await, &perl_image).await;
    let (pod_id, pod) = pod(&mut env, "twins", (POD, CONTAINER, POD)).await;
    let pause = cri::pause_pid(&mut env.rt, &pod_id).await;
    let modes = (POD, CONTAINER, POD);
    let (a, b) = listener_and_sleeper(&mut env, &pod_id, &pod, &perl_image, modes).await;
    let (pid_a, pid_b) = (
        cri::pid(&mut env.rt, &a).await,
        cri::pid(&mut env.rt, &b).await,
    );
    let me = std::process::id() as i32;

    for ns in ["net", "ipc", "uts"] {
        assert_eq!(
            ns_inode(pid_a, ns),
            ns_inode(pause, ns),
            "a's {ns} namespace"
        );
        assert_eq!(
            ns_inode(pid_b, ns),
            ns_inode(pause, ns),
            "b's {ns} namespace"
        );
        assert_ne!(
            ns_inode(pause, ns),
            ns_inode(me, ns),
            "the pod's {ns} is the host's"
        );
    }
    for ns in ["mnt", "pid"] {
        assert_ne!(
            ns_inode(pid_a, ns),
            ns_inode(pid_b, ns),
            "{ns} namespace shared"
        );
        assert_ne!(
            ns_inode(pid_a, ns),
            ns_inode(pause, ns),
            "a in the pause's {ns}"
        );
        assert_ne!(
            ns_inode(pid_a, ns),
            ns_inode(me, ns),
            "a in the host's {ns}"
        );
    }
    // Own PID namespaces: each container is PID 1 of its own.
    for id in [&a, &b] {
        let comm = cri::exec_ok(&mut env.rt, id, &["cat", "/proc/1/comm"]).await;
        assert_ne!(comm.trim(), "corral-pause");
    }
    // The pod's UTS namespace: both see the pod's hostname.
    for id in [&a, &b] {
        let name = cri::exec_ok(&mut env.rt, id, &["hostname"]).await;
        assert_eq!(name.trim(), "twins");
    }

    // IPC: a creates a SysV shared memory segment and writes into it, b reads it back.
    const KEY: u32 = 0x636f_7272;
    let shmid = cri::exec_ok(
        &mut env.rt,
        &a,
        &[
            "perl",
            "-e",
            &format!(
                "my $id = shmget({KEY}, 4096, 01600) // die \"shmget: $!\"; \
                 shmwrite($id, 'written-by-a', 0, 12) || die \"shmwrite: $!\"; print $id"
            ),
        ],
    )
    .await;
    let read = cri::exec_ok(
        &mut env.rt,
        &b,
        &[
            "perl",
            "-e",
            &format!(
                "my $id = shmget({KEY}, 0, 0) // die \"shmget: $!\"; \
                 shmread($id, my $buf, 0, 12) || die \"shmread: $!\"; print \"$id $buf\""
            ),
        ],
    )
    .await;
    assert_eq!(read, format!("{} written-by-a", shmid.trim()));
    let host_keys = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    assert!(
        !host_keys
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&KEY.to_string())),
        "the pod's segment is visible in the host's IPC namespace"
    );
    // And POSIX shared memory through the pod's /dev/shm.
    cri::exec_ok(
        &mut env.rt,
        &a,
        &["sh", "-c", "echo posix-shm > /dev/shm/note"],
    )
    .await;
    let note = cri::exec_ok(&mut env.rt, &b, &["cat", "/dev/shm/note"]).await;
    assert_eq!(note.trim(), "posix-shm");

    // The pod's network namespace: b sees the socket a listens on.
    assert!(
        wait_listening(&mut env.rt, &b, 8080).await,
        "b does not see a's listening socket"
    );
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// Whether `port` shows up as a listening TCP socket in `netstat -ltn` run in container `id`,
/// within 10 s.
async fn wait_listening(rt: &mut Rt, id: &str, port: u16) -> bool {
    let needle = format!(":{port} ");
    for _ in 0..100 {
        let (_, out, _) = cri::exec(rt, id, &["netstat", "-ltn"]).await;
        if out.lines().any(|l| l.contains(&needle)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn containers_in_a_pod_talk_over_localhost() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = pod(&mut env, "talk", (POD, CONTAINER, POD)).await;
    let modes = (POD, CONTAINER, POD);
    let image = env.image.clone();
    let (a, b) = listener_and_sleeper(&mut env, &pod_id, &pod, &image, modes).await;
    // IFF_UP (0x1) of the pod's lo.
    let flags = cri::exec_ok(&mut env.rt, &b, &["cat", "/sys/class/net/lo/flags"]).await;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "the pod's lo is down (flags {flags:#x})");
    assert!(
        wait_listening(&mut env.rt, &b, 8080).await,
        "b does not see a's listening socket"
    );
    cri::exec_ok(
        &mut env.rt,
        &b,
        &["sh", "-c", "echo hello-from-b | nc -w 5 127.0.0.1 8080"],
    )
    .await;
    let (st, _) = cri::status(&mut env.rt, &a).await;
    let log = PathBuf::from(st.log_path);
    assert!(
        wait_for(Duration::from_secs(10), || log_has(
            &log,
            "stdout",
            "hello-from-b"
        )),
        "a did not receive b's message: {:?}",
        cri::log_lines(&log)
    );
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

#[tokio::test]
async fn pid_pod_containers_see_each_other_and_the_pause_as_pid_1() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = pod(&mut env, "pidpod", (POD, POD, POD)).await;
    let pause = cri::pause_pid(&mut env.rt, &pod_id).await;
    let a = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        with_namespaces(
            cri::container_config("a", &env.image, &["sleep", "1001"]),
            (POD, POD, POD),
        ),
    )
    .await;
    let b = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        with_namespaces(
            cri::container_config("b", &env.image, &["sleep", "1002"]),
            (POD, POD, POD),
        ),
    )
    .await;
    let (pid_a, pid_b) = (
        cri::pid(&mut env.rt, &a).await,
        cri::pid(&mut env.rt, &b).await,
    );
    assert_eq!(ns_inode(pid_a, "pid"), ns_inode(pause, "pid"));
    assert_eq!(ns_inode(pid_b, "pid"), ns_inode(pause, "pid"));
    assert_ne!(
        ns_inode(pause, "pid"),
        ns_inode(std::process::id() as i32, "pid")
    );

    for (me, other) in [(&a, "sleep 1002"), (&b, "sleep 1001")] {
        let comm = cri::exec_ok(&mut env.rt, me, &["cat", "/proc/1/comm"]).await;
        assert_eq!(comm.trim(), "corral-pause", "PID 1 seen from {me}");
        let ps = cri::exec_ok(&mut env.rt, me, &["ps", "-o", "pid,args"]).await;
        assert!(ps.contains(other), "{me} does not see {other}:\n{ps}");
        assert!(
            ps.lines().any(|l| l.split_whitespace().next() == Some("1")),
            "{me} sees no PID 1:\n{ps}"
        );
    }
    // b's pid as the pod's namespace numbers it (last NSpid field) is a process a sees.
    let status_b = std::fs::read_to_string(format!("/proc/{pid_b}/status")).unwrap();
    let nspid_b = status_b
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .to_string();
    let cmdline = cri::exec_ok(
        &mut env.rt,
        &a,
        &["cat", &format!("/proc/{nspid_b}/cmdline")],
    )
    .await;
    assert_eq!(cmdline, "sleep\u{0}1002\u{0}");
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

#[tokio::test]
async fn host_network_container_sees_the_hosts_interfaces() {
    require_root!();
    let Some(mut env) = env().await else { return };
    // A pod on the daemon's CNI network: makes the bridge and a veth on the host.
    let (cni_pod, _) = pod(&mut env, "oncni", (POD, CONTAINER, POD)).await;
    let veths = env.daemon.net.veths();
    assert!(!veths.is_empty(), "the CNI pod has no veth on the host");
    let (pod_id, pod) = pod(&mut env, "hostnet", (NODE, CONTAINER, POD)).await;
    let c = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        with_namespaces(
            cri::container_config("c", &env.image, &["sleep", "1000"]),
            (NODE, CONTAINER, POD),
        ),
    )
    .await;
    let pid = cri::pid(&mut env.rt, &c).await;
    let me = std::process::id() as i32;
    assert_eq!(ns_inode(pid, "net"), ns_inode(me, "net"));
    assert_eq!(ns_inode(pid, "uts"), ns_inode(me, "uts"));
    let dev = cri::exec_ok(&mut env.rt, &c, &["cat", "/proc/net/dev"]).await;
    let names: Vec<&str> = dev
        .lines()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .collect();
    assert!(names.contains(&env.daemon.net.bridge.as_str()), "{names:?}");
    for veth in &veths {
        assert!(
            names.contains(&veth.as_str()),
            "{veth} missing from {names:?}"
        );
    }
    let host_name = nix::unistd::gethostname().unwrap();
    let name = cri::exec_ok(&mut env.rt, &c, &["hostname"]).await;
    assert_eq!(name.trim(), host_name.to_string_lossy());
    cri::remove_pod(&mut env.rt, &pod_id).await;
    cri::remove_pod(&mut env.rt, &cni_pod).await;
}

#[tokio::test]
async fn private_propagation_isolates_mounts_both_ways() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let volume = TmpfsVolume::shared();
    let (pod_id, pod) = env
        .pod_with("private", (POD, CONTAINER, POD), privileged_pod)
        .await;
    let config = volume.container(&env.image, "c", MountPropagation::PropagationPrivate, true);
    let c = cri::run(&mut env.rt, &pod_id, &pod, config).await;
    std::fs::write(volume.path().join("before"), "seen").unwrap();
    assert_eq!(
        cri::exec_ok(&mut env.rt, &c, &["cat", "/vol/before"]).await,
        "seen",
        "the volume itself is shared"
    );

    // Host → container: a mount made on the host after the start does not reach the container.
    volume.host_mount("late", "from-host");
    let (code, out, _) = cri::exec(&mut env.rt, &c, &["cat", "/vol/late/marker"]).await;
    assert_ne!(code, 0, "the host's new mount is visible inside: {out:?}");
    let inside = cri::exec_ok(&mut env.rt, &c, &["cat", "/proc/self/mountinfo"]).await;
    assert!(!inside.contains("/vol/late"), "{inside}");

    // Container → host: a mount made inside does not reach the host.
    mount_inside(&mut env.rt, &c, "/vol/inside", "from-inside").await;
    assert_eq!(
        cri::exec_ok(&mut env.rt, &c, &["cat", "/vol/inside/marker"]).await,
        "from-inside\n"
    );
    let on_host = volume.path().join("inside");
    assert!(
        on_host.is_dir(),
        "mkdir on the shared volume reaches the host"
    );
    assert!(
        !is_host_mount_point(&on_host),
        "the inside mount reached the host"
    );
    assert!(!on_host.join("marker").exists());
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

#[tokio::test]
async fn host_to_container_propagation_shows_the_hosts_new_mounts() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let volume = TmpfsVolume::shared();
    let (pod_id, pod) = pod(&mut env, "h2c", (POD, CONTAINER, POD)).await;
    let config = volume.container(
        &env.image,
        "c",
        MountPropagation::PropagationHostToContainer,
        false,
    );
    let c = cri::run(&mut env.rt, &pod_id, &pod, config).await;
    let (st, _) = cri::status(&mut env.rt, &c).await;
    assert_eq!(
        st.mounts[0].propagation,
        MountPropagation::PropagationHostToContainer as i32
    );

    volume.host_mount("late", "from-host");
    assert_eq!(
        cri::exec_ok(&mut env.rt, &c, &["cat", "/vol/late/marker"]).await,
        "from-host"
    );
    let inside = cri::exec_ok(&mut env.rt, &c, &["cat", "/proc/self/mountinfo"]).await;
    assert!(
        inside
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/vol/late")),
        "{inside}"
    );
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

#[tokio::test]
async fn bidirectional_propagation_shares_a_containers_mount_with_host_and_other_pods() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let volume = TmpfsVolume::shared();
    let (pod1, pod1_config) = env
        .pod_with("bidi", (POD, CONTAINER, POD), privileged_pod)
        .await;
    let config = volume.container(
        &env.image,
        "c",
        MountPropagation::PropagationBidirectional,
        true,
    );
    let c1 = cri::run(&mut env.rt, &pod1, &pod1_config, config).await;
    let (pod2, pod2_config) = pod(&mut env, "watcher", (POD, CONTAINER, POD)).await;
    let config = volume.container(
        &env.image,
        "w",
        MountPropagation::PropagationHostToContainer,
        false,
    );
    let c2 = cri::run(&mut env.rt, &pod2, &pod2_config, config).await;

    mount_inside(&mut env.rt, &c1, "/vol/inner", "from-c1").await;
    let on_host = volume.path().join("inner");
    assert!(
        is_host_mount_point(&on_host),
        "the container's mount is not on the host: {:?}",
        mounts_containing(&volume.path().to_string_lossy())
    );
    assert_eq!(
        std::fs::read_to_string(on_host.join("marker")).unwrap(),
        "from-c1\n"
    );
    assert_eq!(
        cri::exec_ok(&mut env.rt, &c2, &["cat", "/vol/inner/marker"]).await,
        "from-c1\n",
        "the other pod's container does not see the mount"
    );
    cri::remove_pod(&mut env.rt, &pod2).await;
    cri::remove_pod(&mut env.rt, &pod1).await;
}

#[tokio::test]
async fn bidirectional_propagation_is_refused_unprivileged_and_from_a_private_source() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let shared = TmpfsVolume::shared();
    let private = TmpfsVolume::private();

    let (pod_id, pod) = pod(&mut env, "refuse", (POD, CONTAINER, POD)).await;
    let config = shared.container(
        &env.image,
        "c",
        MountPropagation::PropagationBidirectional,
        false,
    );
    let err = cri::create_refused(
        &mut env.rt,
        &pod_id,
        &pod,
        config,
        Code::InvalidArgument,
        "BIDIRECTIONAL in an unprivileged container",
    )
    .await;
    let message = err.message();
    assert!(message.contains("/vol"), "{message}");
    assert!(
        message.contains(&*shared.path().to_string_lossy()),
        "{message}"
    );
    assert!(message.contains("privileged"), "{message}");

    let (priv_id, priv_pod) = env
        .pod_with("refusepriv", (POD, CONTAINER, POD), privileged_pod)
        .await;
    let config = private.container(
        &env.image,
        "c",
        MountPropagation::PropagationBidirectional,
        true,
    );
    let err = cri::create_refused(
        &mut env.rt,
        &priv_id,
        &priv_pod,
        config,
        Code::InvalidArgument,
        "BIDIRECTIONAL from a private source",
    )
    .await;
    let message = err.message();
    let source = private.path().to_string_lossy().into_owned();
    assert!(message.contains("/vol"), "{message}");
    assert!(message.contains("PROPAGATION_BIDIRECTIONAL"), "{message}");
    assert!(message.contains("private"), "{message}");
    assert!(
        message.contains(&format!("mount --make-rshared {source}")),
        "{message}"
    );

    // Nothing of the refused containers is left.
    let left = cri::all_containers(&mut env.rt).await;
    assert!(left.is_empty(), "{left:?}");
    let containers_dir = env.daemon.state().join("containers");
    assert!(mounts_containing(&containers_dir.to_string_lossy()).is_empty());
    let dirs: Vec<_> = std::fs::read_dir(&containers_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(dirs.is_empty(), "container directories left: {dirs:?}");
    cri::remove_pod(&mut env.rt, &pod_id).await;
    cri::remove_pod(&mut env.rt, &priv_id).await;
}

#[tokio::test]
async fn container_cgroup_nests_under_the_pod_with_limits_oom_and_updates() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = pod(&mut env, "cg", (POD, CONTAINER, POD)).await;
    let parent = unique_cgroup_parent("cg");
    let pause = cri::pause_pid(&mut env.rt, &pod_id).await;
    let limited = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        with_resources(
            cri::container_config("limited", &env.image, &["sleep", "1000"]),
            LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 64 * MIB,
                ..Default::default()
            },
        ),
    )
    .await;
    let pid = cri::pid(&mut env.rt, &limited).await;

    let memory = cgroup_of(pid, "memory").unwrap();
    let cpu = cgroup_of(pid, "cpu").unwrap();
    assert_eq!(
        memory,
        format!("{parent}/{limited}"),
        "container's memory cgroup"
    );
    assert_eq!(cpu, memory, "container's cpu cgroup");
    let pause_memory = cgroup_of(pause, "memory").unwrap();
    assert_eq!(
        Path::new(&pause_memory).parent(),
        Some(Path::new(&parent)),
        "the pause is not beside the container in the pod cgroup"
    );
    assert!(parent.starts_with(&format!("/corral-e2e-{}-cg/", std::process::id())));
    assert!(cgroup_file("memory", &memory, "cgroup.procs")
        .lines()
        .any(|l| l == pid.to_string()));
    assert_eq!(
        cgroup_file("memory", &memory, "memory.limit_in_bytes"),
        (64 * MIB).to_string()
    );
    assert_eq!(cgroup_file("cpu", &cpu, "cpu.cfs_quota_us"), "50000");
    assert_eq!(cgroup_file("cpu", &cpu, "cpu.cfs_period_us"), "100000");
    assert_eq!(cgroup_file("cpu", &cpu, "cpu.shares"), "512");

    // UpdateContainerResources: read back from the cgroup and from ContainerStatus.
    let updated = LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 20_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 128 * MIB,
        ..Default::default()
    };
    env.rt
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: limited.clone(),
            linux: Some(updated.clone()),
            ..Default::default()
        })
        .await
        .expect("UpdateContainerResources");
    assert_eq!(
        cgroup_file("memory", &memory, "memory.limit_in_bytes"),
        (128 * MIB).to_string()
    );
    assert_eq!(cgroup_file("cpu", &cpu, "cpu.cfs_quota_us"), "20000");
    let (st, _) = cri::status(&mut env.rt, &limited).await;
    let reported = st.resources.and_then(|r| r.linux).unwrap();
    assert_eq!(reported.memory_limit_in_bytes, 128 * MIB);
    assert_eq!(reported.cpu_quota, 20_000);

    // A container that needs more memory than its limit is OOM-killed and reported so.
    let hog = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        with_resources(
            cri::container_config(
                "hog",
                &env.image,
                &["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
            ),
            LinuxContainerResources {
                memory_limit_in_bytes: 32 * MIB,
                ..Default::default()
            },
        ),
    )
    .await;
    let st = cri::wait_exited(&mut env.rt, &hog, Duration::from_secs(30)).await;
    assert_eq!(st.reason, "OOMKilled", "{st:?}");
    assert_eq!(st.exit_code, 128 + libc::SIGKILL, "{st:?}");
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

#[tokio::test]
async fn logs_are_cri_formatted_split_and_survive_reopening() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = pod(&mut env, "logs", (POD, CONTAINER, POD)).await;
    let before = i128::from(cri_now_nanos()) - 1_000_000_000;
    let script = "echo to-stdout; echo to-stderr >&2; \
                  head -c 40960 /dev/zero | tr '\\000' x; echo; \
                  i=0; while [ $i -lt 100000 ]; do echo seq-$i; i=$((i+1)); sleep 0.02; done";
    let c = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config("talker", &env.image, &["sh", "-c", script]),
    )
    .await;
    let (st, _) = cri::status(&mut env.rt, &c).await;
    let log = PathBuf::from(&st.log_path);
    assert!(
        wait_for(Duration::from_secs(20), || seq_numbers(&log).len() >= 20),
        "no seq lines: {:?}",
        raw_log_lines(&log)
    );

    // Every line: `<RFC3339Nano> <stdout|stderr> <P|F> <text>`, timestamps in order and now.
    let after = i128::from(cri_now_nanos()) + 1_000_000_000;
    let mut last = 0;
    for line in raw_log_lines(&log) {
        let mut parts = line.splitn(4, ' ');
        let ts = parts.next().unwrap();
        let nanos = rfc3339_nanos(ts).unwrap_or_else(|| panic!("bad timestamp in {line:?}"));
        assert!(
            (before..=after).contains(&nanos) && nanos >= last,
            "timestamp out of place: {line:?}"
        );
        last = nanos;
        assert!(
            matches!(parts.next(), Some("stdout" | "stderr")),
            "{line:?}"
        );
        assert!(matches!(parts.next(), Some("P" | "F")), "{line:?}");
        assert!(parts.next().is_some(), "{line:?}");
    }
    let lines = cri::log_lines(&log);
    assert!(log_has(&log, "stdout", "to-stdout"), "{lines:?}");
    assert!(log_has(&log, "stderr", "to-stderr"), "{lines:?}");

    // The 40 KiB line: P parts of at most 16 KiB, then an F part; together the line. (Lines
    // of the two streams may interleave: stderr's line can land between stdout's parts.)
    let stdout: Vec<_> = lines
        .iter()
        .filter(|(stream, _, _)| stream == "stdout")
        .collect();
    let start = stdout
        .iter()
        .position(|(_, _, text)| text.starts_with("xxxx"))
        .expect("the long line");
    let end = start
        + stdout[start..]
            .iter()
            .position(|(_, tag, _)| tag == "F")
            .expect("the long line's final part");
    let parts = &stdout[start..=end];
    assert!(parts.len() >= 3, "40 KiB in {} parts", parts.len());
    assert!(parts[..parts.len() - 1]
        .iter()
        .all(|(_, tag, text)| tag == "P" && text.len() <= 16 * 1024));
    let joined: String = parts.iter().map(|(_, _, text)| text.as_str()).collect();
    assert_eq!(joined, "x".repeat(40 * 1024));

    // ReopenContainerLog after a rotation by rename: a new file, later lines in it, none lost.
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    env.rt
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: c.clone(),
        })
        .await
        .expect("ReopenContainerLog");
    assert!(log.exists(), "ReopenContainerLog made no new file");
    assert!(
        wait_for(Duration::from_secs(20), || seq_numbers(&log).len() >= 20),
        "no lines in the new file: {:?}",
        raw_log_lines(&log)
    );
    cri::stop(&mut env.rt, &c, 0).await;
    cri::wait_exited(&mut env.rt, &c, Duration::from_secs(10)).await;
    let old = seq_numbers(&rotated);
    let new = seq_numbers(&log);
    let all: Vec<u64> = old.iter().chain(&new).copied().collect();
    let expected: Vec<u64> = (0..all.len() as u64).collect();
    assert_eq!(all, expected, "lines lost or repeated across the reopening");
    assert!(!old.is_empty() && !new.is_empty());
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// Now in nanoseconds since the epoch.
fn cri_now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

#[tokio::test]
async fn exit_while_the_daemon_is_stopped_is_reported_after_it_restarts() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = pod(&mut env, "restart", (POD, CONTAINER, POD)).await;
    // The container ends when the test creates /tmp/go in its rootfs (the overlay mount on
    // the host), so that it ends exactly while the daemon is down.
    let c = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config(
            "late",
            &env.image,
            &[
                "sh",
                "-c",
                "echo early; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo late; exit 4",
            ],
        ),
    )
    .await;
    let (st, info) = cri::status(&mut env.rt, &c).await;
    let (pid, shim) = cri::pids(&mut env.rt, &c).await;
    let log = PathBuf::from(&st.log_path);
    let bundle = PathBuf::from(info["bundle"].as_str().unwrap());

    env.daemon.stop();
    assert!(process_alive(pid), "the container died with the daemon");
    assert!(process_alive(shim), "the shim died with the daemon");
    std::fs::write(bundle.join("rootfs/tmp/go"), "").unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || !process_alive(pid)),
        "the container did not exit"
    );
    assert!(
        wait_for(Duration::from_secs(10), || !process_alive(shim)),
        "the shim did not exit after its container"
    );
    env.daemon.start_again();
    env.rt = env.daemon.runtime().await;

    let st = cri::wait_exited(&mut env.rt, &c, Duration::from_secs(10)).await;
    assert_eq!(st.exit_code, 4, "{st:?}");
    assert_eq!(st.reason, "Error");
    assert!(st.finished_at > st.started_at, "{st:?}");
    assert!(
        log_has(&log, "stdout", "early"),
        "{:?}",
        cri::log_lines(&log)
    );
    assert!(
        log_has(&log, "stdout", "late"),
        "{:?}",
        cri::log_lines(&log)
    );
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

#[tokio::test]
async fn users_come_from_run_as_user_run_as_username_and_the_image() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let mut app_config = images::default_config();
    app_config["User"] = "app".into();
    let app_image = images::push_busybox(&env.registry, "e2e/busybox-app", "1", app_config);
    cri::pull(&mut env.daemon.images().await, &app_image).await;
    let (pod_id, pod) = pod(&mut env, "users", (POD, CONTAINER, POD)).await;

    let mut by_uid = cri::container_config("byuid", &env.image, &["sleep", "1000"]);
    security(&mut by_uid).run_as_user = Some(Int64Value { value: 1000 });
    let mut by_name = cri::container_config("byname", &env.image, &["sleep", "1000"]);
    security(&mut by_name).run_as_username = "app".into();
    let from_image = cri::container_config("fromimage", &app_image, &["sleep", "1000"]);
    let as_root = cri::container_config("root", &env.image, &["sleep", "1000"]);

    // (config, uid, gid, supplemental groups that must be there)
    let cases: [(ContainerConfig, u32, u32, &[u32]); 4] = [
        (by_uid, 1000, 1000, &[]),
        (by_name, 1000, 1000, &[50]),
        (from_image, 1000, 1000, &[50]),
        (as_root, 0, 0, &[]),
    ];
    for (config, uid, gid, groups) in cases {
        let name = config.metadata.as_ref().unwrap().name.clone();
        let c = cri::run(&mut env.rt, &pod_id, &pod, config).await;
        let pid = cri::pid(&mut env.rt, &c).await;
        assert_eq!(proc_status_ids(pid, "Uid:"), [uid; 4], "{name}: Uid");
        assert_eq!(proc_status_ids(pid, "Gid:"), [gid; 4], "{name}: Gid");
        let kernel_groups = proc_status_ids(pid, "Groups:");
        for g in groups {
            assert!(
                kernel_groups.contains(g),
                "{name}: groups {kernel_groups:?}"
            );
        }
        let id_u = cri::exec_ok(&mut env.rt, &c, &["id", "-u"]).await;
        assert_eq!(id_u.trim(), uid.to_string(), "{name}: id -u");
        let id_g = cri::exec_ok(&mut env.rt, &c, &["id", "-G"]).await;
        for g in groups {
            assert!(
                id_g.split_whitespace().any(|x| x == g.to_string()),
                "{name}: id -G {id_g}"
            );
        }
        let (st, _) = cri::status(&mut env.rt, &c).await;
        let user = st.user.and_then(|u| u.linux).unwrap();
        assert_eq!(
            (user.uid, user.gid),
            (i64::from(uid), i64::from(gid)),
            "{name}"
        );
        for g in groups {
            assert!(
                user.supplemental_groups.contains(&i64::from(*g)),
                "{name}: {user:?}"
            );
        }
    }
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

#[tokio::test]
async fn removing_the_pod_leaves_no_mount_cgroup_process_or_file() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let host_dir = tempfile::tempdir().unwrap();
    let (pod_id, pod) = pod(&mut env, "gone", (POD, CONTAINER, POD)).await;
    let pause = cri::pause_pid(&mut env.rt, &pod_id).await;
    let mut running = cri::container_config("running", &env.image, &["sleep", "1000"]);
    running.mounts = vec![cri::mount(
        host_dir.path(),
        "/data",
        MountPropagation::PropagationPrivate,
    )];
    let running = cri::run(&mut env.rt, &pod_id, &pod, running).await;
    let exited = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config("exited", &env.image, &["true"]),
    )
    .await;
    let created = cri::create(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config("created", &env.image, &["sleep", "1000"]),
    )
    .await;
    cri::wait_exited(&mut env.rt, &exited, Duration::from_secs(10)).await;
    let ids = [running.clone(), exited.clone(), created.clone()];
    let mut pids = vec![pause];
    for id in &ids {
        let (pid, shim) = cri::pids(&mut env.rt, id).await;
        pids.push(pid);
        pids.push(shim);
    }
    // What must go: check that it is there first.
    let state = env.daemon.state();
    let image_containers = env.daemon.root().join("containers");
    for id in &ids {
        assert!(
            !mounts_containing(id).is_empty(),
            "{id} has no rootfs mount"
        );
        assert!(state.join("containers").join(id).is_dir());
        assert!(image_containers.join(id).is_dir());
    }
    assert!(!cgroup_dirs_containing(&running).is_empty());
    assert!(!cgroup_dirs_containing(&created).is_empty());
    let running_pid = cri::pid(&mut env.rt, &running).await;
    assert!(process_alive(running_pid));

    cri::remove_pod(&mut env.rt, &pod_id).await;

    for pid in pids {
        assert!(
            wait_for(Duration::from_secs(5), || !process_alive(pid)),
            "process {pid} still alive"
        );
    }
    let state_mounts = mounts_containing(&state.to_string_lossy());
    assert!(state_mounts.is_empty(), "mounts left: {state_mounts:?}");
    assert!(mounts_containing(&pod_id).is_empty());
    assert!(cgroup_dirs_containing(&pod_id).is_empty());
    for id in &ids {
        assert!(mounts_containing(id).is_empty(), "{id}: mounts left");
        let cgroups = cgroup_dirs_containing(id);
        assert!(cgroups.is_empty(), "{id}: cgroups left {cgroups:?}");
        assert!(
            !state.join("containers").join(id).exists(),
            "{id}: bundle left"
        );
        assert!(
            !image_containers.join(id).exists(),
            "{id}: rootfs layers left"
        );
    }
    assert!(
        mounts_containing(&host_dir.path().to_string_lossy()).is_empty(),
        "the volume's bind mount is left on the host"
    );
    let listed = cri::all_containers(&mut env.rt).await;
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn bad_requests_get_the_right_codes() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = pod(&mut env, "bad", (POD, CONTAINER, POD)).await;

    let missing = format!("{}/e2e/never-pulled:1", env.registry.host);
    let err = cri::create_refused(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config("nopull", &missing, &["true"]),
        Code::NotFound,
        "an image that was not pulled",
    )
    .await;
    assert!(err.message().contains(&missing), "{}", err.message());

    cri::create_refused(
        &mut env.rt,
        &"0".repeat(64),
        &pod,
        cri::container_config("nopod", &env.image, &["true"]),
        Code::NotFound,
        "an unknown pod",
    )
    .await;

    let first = cri::create(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config("twice", &env.image, &["true"]),
    )
    .await;
    let err = cri::create_refused(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config("twice", &env.image, &["true"]),
        Code::AlreadyExists,
        "the same name twice",
    )
    .await;
    assert!(err.message().contains(&first), "{}", err.message());

    env.rt
        .start_container(StartContainerRequest {
            container_id: first.clone(),
        })
        .await
        .expect("StartContainer");
    cri::wait_exited(&mut env.rt, &first, Duration::from_secs(10)).await;
    let err = env
        .rt
        .exec_sync(ExecSyncRequest {
            container_id: first.clone(),
            cmd: vec!["true".into()],
            timeout: 5,
        })
        .await
        .expect_err("exec into a stopped container");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

#[tokio::test]
async fn exec_sync_honours_timeouts_and_background_children() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = pod(&mut env, "execs", (POD, CONTAINER, POD)).await;
    let id = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config("sleeper", &env.image, &["sleep", "1000"]),
    )
    .await;
    // A background child that keeps the output pipe open does not hold the call.
    let started = std::time::Instant::now();
    let (code, out, _) = cri::exec(&mut env.rt, &id, &["sh", "-c", "sleep 100 & echo hi"]).await;
    assert_eq!((code, out.trim()), (0, "hi"));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "ExecSync waited for the background child"
    );
    // The timeout is honoured and reported as DeadlineExceeded.
    let err = env
        .rt
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["sleep".into(), "30".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    // Large output comes back whole.
    let (code, out, _) = cri::exec(
        &mut env.rt,
        &id,
        &["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"],
    )
    .await;
    assert_eq!((code, out.len()), (0, 3_000_000));
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

#[tokio::test]
async fn crun_handler_runs_or_says_plainly_why_not() {
    require_root!();
    if !std::path::Path::new("/usr/bin/crun").exists() {
        eprintln!("skipped: crun is not installed");
        return;
    }
    let Some((_registry, image)) = cri::busybox_registry() else {
        return;
    };
    let daemon = Daemon::start(DaemonOptions {
        extra_config_toml: "[runtimes.crun]\npath = \"/usr/bin/crun\"\n".into(),
        ..Default::default()
    });
    let mut imgs = daemon.images().await;
    cri::pull(&mut imgs, &image).await;
    let mut rt = daemon.runtime().await;
    let mut config = pod_config(
        "crunpod",
        &unique_cgroup_parent("crun"),
        (POD, CONTAINER, POD),
    );
    config.log_directory = daemon.dir().join("logs").to_string_lossy().into_owned();
    let pod_id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "crun".into(),
        })
        .await
        .expect("RunPodSandbox with the crun handler")
        .into_inner()
        .pod_sandbox_id;
    let hybrid = std::path::Path::new("/sys/fs/cgroup/unified").is_dir();
    match cri::try_create(
        &mut rt,
        &pod_id,
        &config,
        cri::container_config("c", &image, &["sh", "-c", "echo via-crun"]),
    )
    .await
    {
        Ok(id) => {
            rt.start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("StartContainer with crun");
            let st = cri::wait_exited(&mut rt, &id, Duration::from_secs(20)).await;
            assert_eq!(st.exit_code, 0);
        }
        Err(status) => {
            // Debian 12's crun refuses hybrid cgroup hosts; the error must say so plainly.
            assert!(hybrid, "crun failed on a non-hybrid host: {status:?}");
            assert!(
                status.message().contains("crun") && status.message().contains("hybrid"),
                "unclear error: {}",
                status.message()
            );
            // Nothing of the failed container is left.
            let left = cri::all_containers(&mut rt).await;
            assert!(left.is_empty(), "{left:?}");
            assert!(
                mounts_containing(&daemon.state().join("containers").to_string_lossy()).is_empty()
            );
        }
    }
    cri::remove_pod(&mut rt, &pod_id).await;
}
