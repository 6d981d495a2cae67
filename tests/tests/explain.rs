//! `corralctl explain` and `corralctl explain-mount` against a real corrald, runc and kernel:
//! every prediction the explanation makes is checked against reality by mounting a tmpfs
//! afterwards (on the host or in a container) and looking where it shows up.
//!
//! This host's `/` is private, so each test makes its own shared (or slave, or private) tmpfs
//! under a temp dir and unmounts everything below it when done, passed or not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use corral_e2e::cri::{
    self, container_env as env, privileged_pod, with_namespaces, ContainerEnv as Env,
};
use corral_e2e::volume::{
    is_host_mount_point, mount_inside, mount_tmpfs_with_marker as mount_tmpfs, set_propagation,
    TmpfsVolume as Volume,
};
use corral_e2e::*;
use corral_e2e::{corralctl_ok as ok, corralctl_run as ctl};
use cri_proto::v1::*;
use nix::mount::MsFlags;
use serde_json::Value;
use tonic::Code;

const POD: i32 = NamespaceMode::Pod as i32;
const CONTAINER: i32 = NamespaceMode::Container as i32;
const NODE: i32 = NamespaceMode::Node as i32;

use MountPropagation::{
    PropagationBidirectional as BIDIRECTIONAL, PropagationHostToContainer as HOST_TO_CONTAINER,
    PropagationPrivate as PRIVATE,
};

/// `corralctl explain POD --json`, parsed.
fn explain(daemon: &Daemon, pod: &str) -> Value {
    serde_json::from_str(&ok(ctl(daemon, &["explain", pod, "--json"]))).unwrap()
}

/// The explanation of the mount at `container_path` of container `name`.
fn mount_of<'a>(explanation: &'a Value, name: &str, container_path: &str) -> &'a Value {
    let container = explanation["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {explanation:#}"));
    container["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["container_path"] == container_path)
        .unwrap_or_else(|| panic!("no mount {container_path} in {container:#}"))
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v:#}"))
}

/// Whether `file` can be read in container `id`, and its content.
async fn read_inside(env: &mut Env, id: &str, file: &str) -> Option<String> {
    let (code, out, _) = cri::exec(&mut env.rt, id, &["cat", file]).await;
    (code == 0).then_some(out)
}

/// Checks what container `id` reads at `file`: `Some(content)`, or `None` when it cannot.
async fn assert_reads(env: &mut Env, id: &str, file: &str, expected: Option<&str>) {
    assert_eq!(
        read_inside(env, id, file).await.as_deref(),
        expected,
        "{file} in {id}"
    );
}

/// The explanation of the pod's namespace of `kind` (`net`, `pid`, …).
fn namespace_of<'a>(explanation: &'a Value, kind: &str) -> &'a Value {
    explanation["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} namespace in {explanation:#}"))
}

/// A `sleep` container named `name` with one volume.
fn with_volume(
    env: &Env,
    name: &str,
    source: &Path,
    at: &str,
    propagation: MountPropagation,
) -> ContainerConfig {
    let mut config = cri::container_config(name, &env.image, &["sleep", "1000"]);
    config.mounts = vec![cri::mount(source, at, propagation)];
    config
}

/// The log-collector story: PRIVATE (None) from an rshared /var/log-like source. The
/// explanation says later host mounts will not arrive and names HOST_TO_CONTAINER; a tmpfs
/// mounted on the host afterwards indeed does not arrive. The human tree fits 100 columns.
#[tokio::test]
async fn private_from_an_rshared_source_predicts_nothing_arrives() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let logs = Volume::shared();
    let (pod_id, pod) = env
        .pod_with("log-collector", (POD, CONTAINER, POD), |_| {})
        .await;
    let config = with_volume(&env, "collector", logs.path(), "/var/log/host", PRIVATE);
    let c = cri::run(&mut env.rt, &pod_id, &pod, config).await;

    let e = explain(&env.daemon, &pod_id);
    let m = mount_of(&e, "collector", "/var/log/host");
    assert_eq!(m["requested"], "PRIVATE");
    assert_eq!(m["effective"], "private");
    assert_eq!(m["host_mount"], logs.path_str().as_str());
    assert_eq!(m["host_mount_propagation"], "shared");
    assert_eq!(m["receives_host_mounts"], false);
    assert_eq!(m["reaches_host"], false);
    assert!(text(m, "reason").contains("no master"), "{m:#}");
    assert!(text(m, "fix").contains("HOST_TO_CONTAINER"), "{m:#}");

    // Reality: a disk mounted under the source afterwards stays on the host.
    mount_tmpfs(&logs.path().join("disk2"), "late");
    assert_eq!(
        read_inside(&mut env, &c, "/var/log/host/disk2/marker").await,
        None,
        "the host's later mount reached the PRIVATE volume"
    );

    // The rest of the explanation: identity, namespaces held by the pause, files, security.
    assert_eq!(e["pod"]["id"], pod_id.as_str());
    assert_eq!(e["pod"]["name"], "log-collector");
    assert_eq!(e["pod"]["state"], "SANDBOX_READY");
    let pause = cri::pause_pid(&mut env.rt, &pod_id).await;
    let pid = cri::pid(&mut env.rt, &c).await;
    let net = namespace_of(&e, "net");
    assert_eq!(net["owner"], "pod");
    assert_eq!(net["holder_pid"], pause);
    assert_eq!(net["inode"], ns_inode(pid, "net"));
    assert!(text(net, "pinned_at").ends_with(&pod_id), "{net:#}");
    assert_eq!(net["members"], serde_json::json!(["pause", "collector"]));
    let mnt = e["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "mnt" && n["members"] == serde_json::json!(["collector"]))
        .expect("the container's own mount namespace");
    assert_eq!(mnt["owner"], "container");
    let hosts = e["pod_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["container_path"] == "/etc/hosts")
        .unwrap();
    assert_eq!(hosts["mounted_in"], serde_json::json!(["collector"]));
    let container = &e["containers"][0];
    assert_eq!(container["pid"], pid);
    assert_eq!(container["rootfs"]["type"], "overlay");
    assert!(container["rootfs"]["layers"].as_u64().unwrap() >= 1);
    // No seccomp profile was asked for, so the CRI's default (Unconfined) is what /proc shows.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let seccomp = status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(str::trim);
    let expected = match seccomp {
        Some("0") => "disabled",
        Some("1") => "strict",
        _ => "filter",
    };
    assert_eq!(container["security"]["seccomp"], expected);
    assert!(!container["security"]["capabilities"]
        .as_array()
        .unwrap()
        .contains(&"CAP_SYS_ADMIN".into()));
    let adj: i64 = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(container["oom_score_adj"], adj);

    // The tree a person reads: the same facts, at most 100 columns.
    let tree = ok(ctl(&env.daemon, &["explain", "e2e/log-collector"]));
    eprintln!("{tree}");
    for line in tree.lines() {
        assert!(
            line.chars().count() <= 100,
            "wider than 100 columns: {line}"
        );
    }
    assert!(tree.contains("/var/log/host <- "), "{tree}");
    assert!(
        tree.contains("fix: use PROPAGATION_HOST_TO_CONTAINER"),
        "{tree}"
    );
    // inspectp (a verbose PodSandboxStatus, as crictl asks) carries the same explanation.
    let inspect: Value =
        serde_json::from_str(&ok(ctl(&env.daemon, &["inspectp", &pod_id]))).unwrap();
    assert_eq!(
        inspect["explain"]["pod"]["id"],
        pod_id.as_str(),
        "{inspect:#}"
    );
    assert_eq!(
        mount_of(&inspect["explain"], "collector", "/var/log/host")["receives_host_mounts"],
        false
    );
    let one = ok(ctl(
        &env.daemon,
        &["explain", &pod_id[..8], "-c", "collector"],
    ));
    assert!(one.contains("collector (id "), "{one}");
    let none = ctl(
        &env.daemon,
        &["explain", &pod_id[..8], "--container", "nope"],
    );
    assert!(!none.status.success());
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("collector"),
        "{stderr}"
    );
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// HOST_TO_CONTAINER from an rshared source: host mounts arrive, the container's stay inside.
#[tokio::test]
async fn host_to_container_from_an_rshared_source_receives_and_does_not_reach() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let volume = Volume::shared();
    let (pod_id, pod) = env
        .pod_with("h2c", (POD, CONTAINER, POD), privileged_pod)
        .await;
    let config = cri::privileged(with_volume(
        &env,
        "c",
        volume.path(),
        "/vol",
        HOST_TO_CONTAINER,
    ));
    let c = cri::run(&mut env.rt, &pod_id, &pod, config).await;

    let e = explain(&env.daemon, &pod_id);
    let m = mount_of(&e, "c", "/vol");
    assert_eq!(m["effective"], "slave");
    assert_eq!(m["receives_host_mounts"], true);
    assert_eq!(m["reaches_host"], false);
    assert_eq!(m["fix"], Value::Null);

    mount_tmpfs(&volume.path().join("late"), "from-host");
    assert_reads(&mut env, &c, "/vol/late/marker", Some("from-host")).await;
    cri::exec_ok(
        &mut env.rt,
        &c,
        &[
            "sh",
            "-c",
            "mkdir -p /vol/inside && mount -t tmpfs none /vol/inside",
        ],
    )
    .await;
    assert!(!is_host_mount_point(&volume.path().join("inside")));

    // A mount the container makes over its own volume covers it: the explanation says so,
    // and the host's mount is no longer visible there.
    cri::exec_ok(&mut env.rt, &c, &["mount", "-t", "tmpfs", "cover", "/vol"]).await;
    let e = explain(&env.daemon, &pod_id);
    let covered = text(mount_of(&e, "c", "/vol"), "covered_by");
    assert!(covered.starts_with("/vol (tmpfs cover)"), "{covered}");
    assert_reads(&mut env, &c, "/vol/late/marker", None).await;
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// HOST_TO_CONTAINER from an rslave source whose master is shared: the explanation says mounts
/// made in the master's peer group arrive and a mount made on the slave itself does not, and
/// that is what happens.
#[tokio::test]
async fn host_to_container_from_an_rslave_source_follows_its_master() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let origin = Volume::shared();
    let mirror = Volume::slave_of(&origin);
    let (pod_id, pod) = env.pod_with("rslave", (POD, CONTAINER, POD), |_| {}).await;
    let config = with_volume(&env, "c", mirror.path(), "/vol", HOST_TO_CONTAINER);
    let c = cri::run(&mut env.rt, &pod_id, &pod, config).await;

    let e = explain(&env.daemon, &pod_id);
    let m = mount_of(&e, "c", "/vol");
    assert_eq!(m["host_mount"], mirror.path_str().as_str());
    assert_eq!(m["host_mount_propagation"], "slave");
    assert_eq!(m["effective"], "slave");
    assert_eq!(m["receives_host_mounts"], true);
    let reason = text(m, "reason");
    assert!(reason.contains(&origin.path_str()), "{reason}");
    assert!(reason.contains("does not"), "{reason}");

    mount_tmpfs(&origin.path().join("from-master"), "master");
    assert_reads(&mut env, &c, "/vol/from-master/marker", Some("master")).await;
    mount_tmpfs(&mirror.path().join("on-slave"), "slave");
    assert_reads(&mut env, &c, "/vol/on-slave/marker", None).await;
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// A private sub-mount below a shared source: the explanation lists it as stopping
/// propagation; a mount below it never arrives while one beside it does.
#[tokio::test]
async fn a_private_sub_mount_stops_propagation_below_it() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let volume = Volume::shared();
    let archive = volume.path().join("archive");
    mount_tmpfs(&archive, "archive");
    set_propagation(&archive, MsFlags::MS_PRIVATE);
    let (pod_id, pod) = env
        .pod_with("submount", (POD, CONTAINER, POD), |_| {})
        .await;
    let config = with_volume(&env, "c", volume.path(), "/vol", HOST_TO_CONTAINER);
    let c = cri::run(&mut env.rt, &pod_id, &pod, config).await;

    let e = explain(&env.daemon, &pod_id);
    let m = mount_of(&e, "c", "/vol");
    assert_eq!(m["receives_host_mounts"], true);
    let subs = m["sub_mounts"].as_array().unwrap();
    assert_eq!(subs.len(), 1, "{m:#}");
    assert_eq!(subs[0]["host_path"], archive.to_string_lossy().as_ref());
    assert_eq!(subs[0]["propagation"], "private");
    assert_eq!(subs[0]["receives_host_mounts"], false);
    assert!(text(&subs[0], "reason").contains("stops propagation"));

    mount_tmpfs(&archive.join("deep"), "deep");
    assert_reads(&mut env, &c, "/vol/archive/deep/marker", None).await;
    mount_tmpfs(&volume.path().join("beside"), "beside");
    assert_reads(&mut env, &c, "/vol/beside/marker", Some("beside")).await;
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// BIDIRECTIONAL in a privileged container: the explanation says its mounts reach the host
/// and the HostToContainer sibling but not the Private one; a tmpfs mounted inside shows up
/// exactly there.
#[tokio::test]
async fn bidirectional_reaches_the_host_and_a_host_to_container_sibling_only() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let volume = Volume::shared();
    let (pod_id, pod) = env
        .pod_with("bidi", (POD, CONTAINER, POD), privileged_pod)
        .await;
    let writer = cri::privileged(with_volume(
        &env,
        "writer",
        volume.path(),
        "/vol",
        BIDIRECTIONAL,
    ));
    let writer = cri::run(&mut env.rt, &pod_id, &pod, writer).await;
    let follower = with_volume(&env, "follower", volume.path(), "/data", HOST_TO_CONTAINER);
    let follower = cri::run(&mut env.rt, &pod_id, &pod, follower).await;
    let loner = with_volume(&env, "loner", volume.path(), "/data", PRIVATE);
    let loner = cri::run(&mut env.rt, &pod_id, &pod, loner).await;

    let e = explain(&env.daemon, &pod_id);
    let m = mount_of(&e, "writer", "/vol");
    assert_eq!(m["effective"], "shared");
    assert_eq!(m["receives_host_mounts"], true);
    assert_eq!(m["reaches_host"], true);
    let sees = |name: &str| {
        m["siblings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["container"] == name)
            .unwrap_or_else(|| panic!("no sibling {name}: {m:#}"))["receives"]
            .clone()
    };
    assert_eq!(sees("follower"), true);
    assert_eq!(sees("loner"), false);

    mount_inside(&mut env.rt, &writer, "/vol/inner", "w").await;
    assert!(is_host_mount_point(&volume.path().join("inner")));
    assert_reads(&mut env, &follower, "/data/inner/marker", Some("w\n")).await;
    assert_reads(&mut env, &loner, "/data/inner/marker", None).await;
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// `explain-mount` on a private source: not accepted, the reason names the private mount, the
/// fix names make-rshared — and CreateContainer indeed refuses it with the same words. On a
/// shared source it is accepted and CreateContainer accepts it.
#[tokio::test]
async fn explain_mount_and_create_container_agree() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let private = Volume::private();
    let source = private.path().join("logs");
    let source = source.to_string_lossy();
    let answer: Value = serde_json::from_str(&ok(ctl(
        &env.daemon,
        &[
            "explain-mount",
            &source,
            "--propagation",
            "HOST_TO_CONTAINER",
            "--json",
        ],
    )))
    .unwrap();
    assert_eq!(answer["accepted"], false);
    assert_eq!(answer["receives_host_mounts"], false);
    assert_eq!(answer["reaches_host"], false);
    assert_eq!(answer["host_mount"], private.path_str().as_str());
    assert_eq!(answer["host_mount_propagation"], "private");
    let reason = text(&answer, "reason");
    assert!(
        reason.contains(&format!("{} is private", private.path_str())),
        "{reason}"
    );
    let fix = text(&answer, "fix");
    assert!(
        fix.contains(&format!("mount --make-rshared {}", private.path_str())),
        "{fix}"
    );

    let refused = ok(ctl(
        &env.daemon,
        &["explain-mount", &source, "--propagation", "HostToContainer"],
    ));
    eprintln!("{refused}");
    assert!(refused.contains("REFUSED by CreateContainer"), "{refused}");
    assert!(
        refused.contains("fix: run `mount --make-rshared"),
        "{refused}"
    );
    let (pod_id, pod) = env
        .pod_with("preflight", (POD, CONTAINER, POD), |_| {})
        .await;
    let config = with_volume(
        &env,
        "c",
        &private.path().join("logs"),
        "/logs",
        HOST_TO_CONTAINER,
    );
    let err = cri::try_create(&mut env.rt, &pod_id, &pod, config)
        .await
        .expect_err("HOST_TO_CONTAINER from a private source");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains(reason), "{}", err.message());
    assert!(err.message().contains(fix), "{}", err.message());

    let shared = Volume::shared();
    let tree = ok(ctl(
        &env.daemon,
        &[
            "explain-mount",
            &shared.path_str(),
            "--propagation",
            "HostToContainer",
        ],
    ));
    assert!(tree.contains("accepted by CreateContainer"), "{tree}");
    let config = with_volume(&env, "ok", shared.path(), "/logs", HOST_TO_CONTAINER);
    cri::try_create(&mut env.rt, &pod_id, &pod, config)
        .await
        .expect("explain-mount said it would be accepted");

    let bad = ctl(
        &env.daemon,
        &["explain-mount", "relative", "--propagation", "PRIVATE"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("InvalidArgument"));
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// shareProcessNamespace: the explanation says the pause is PID 1 of one PID namespace held
/// by the pause with both containers in it; inside, PID 1 is indeed corral-pause.
#[tokio::test]
async fn a_shared_pid_namespace_names_the_pause_as_pid_1() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = env.pod_with("sharedpid", (POD, POD, POD), |_| {}).await;
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let config = with_namespaces(
            cri::container_config(name, &env.image, &["sleep", "1000"]),
            (POD, POD, POD),
        );
        ids.push(cri::run(&mut env.rt, &pod_id, &pod, config).await);
    }
    let pause = cri::pause_pid(&mut env.rt, &pod_id).await;

    let e = explain(&env.daemon, &pod_id);
    assert_eq!(e["process_namespace"]["mode"], "POD");
    assert!(text(&e["process_namespace"], "pid1").contains(&format!("host pid {pause}")));
    let pid_ns: Vec<&Value> = e["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] == "pid")
        .collect();
    assert_eq!(pid_ns.len(), 1, "{pid_ns:#?}");
    assert_eq!(pid_ns[0]["owner"], "pod");
    assert_eq!(pid_ns[0]["holder_pid"], pause);
    assert_eq!(pid_ns[0]["inode"], ns_inode(pause, "pid"));
    assert_eq!(pid_ns[0]["members"], serde_json::json!(["pause", "a", "b"]));

    for id in &ids {
        let comm = cri::exec_ok(&mut env.rt, id, &["cat", "/proc/1/comm"]).await;
        assert_eq!(comm.trim(), "corral-pause");
    }
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// hostNetwork: the explanation lists the host's network namespace, owned by the host, with
/// the pause and the container in it, which is what /proc says.
#[tokio::test]
async fn a_host_network_pod_is_in_the_hosts_network_namespace() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = env
        .pod_with("hostnet", (NODE, CONTAINER, POD), |_| {})
        .await;
    let config = with_namespaces(
        cri::container_config("c", &env.image, &["sleep", "1000"]),
        (NODE, CONTAINER, POD),
    );
    let c = cri::run(&mut env.rt, &pod_id, &pod, config).await;
    let pid = cri::pid(&mut env.rt, &c).await;
    let me = std::process::id() as i32;

    let e = explain(&env.daemon, &pod_id);
    assert_eq!(e["host_namespaces"], serde_json::json!(["net"]));
    let net = namespace_of(&e, "net");
    assert_eq!(net["owner"], "host");
    assert_eq!(net["pinned_at"], Value::Null);
    assert_eq!(net["members"], serde_json::json!(["pause", "c"]));
    assert_eq!(net["inode"], ns_inode(me, "net"));
    assert_eq!(ns_inode(pid, "net"), ns_inode(me, "net"));
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// Nested cgroups: the container's cgroup sits below the pod's, with the memory limit the
/// container asked for, as the cgroup files and /proc/PID/cgroup say.
#[tokio::test]
async fn nested_cgroups_show_the_memory_limit() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = env.pod_with("cgtree", (POD, CONTAINER, POD), |_| {}).await;
    let mut config = cri::container_config("c", &env.image, &["sleep", "1000"]);
    config.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    });
    let c = cri::run(&mut env.rt, &pod_id, &pod, config).await;
    let pid = cri::pid(&mut env.rt, &c).await;

    let e = explain(&env.daemon, &pod_id);
    let cgroups = &e["cgroups"];
    assert_eq!(cgroups["driver"], "cgroupfs");
    let pod_path = text(cgroups, "pod");
    let tree = cgroups["tree"].as_array().unwrap();
    let node = |name: &str| {
        tree.iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("no cgroup {name}: {cgroups:#}"))
    };
    assert_eq!(node("pod")["path"], pod_path);
    let container = node("c");
    let path = text(container, "path");
    assert!(
        path.starts_with(&format!("{pod_path}/")),
        "{path} not below {pod_path}"
    );
    assert_eq!(container["limits"]["memory_bytes"], 64u64 << 20);
    assert!(node("pause")["path"]
        .as_str()
        .unwrap()
        .starts_with(pod_path));

    // Reality: the process is in that cgroup, and the kernel enforces that limit.
    let memory = if Path::new("/sys/fs/cgroup/memory").is_dir() {
        assert_eq!(cgroup_of(pid, "memory").as_deref(), Some(path));
        PathBuf::from("/sys/fs/cgroup/memory")
            .join(path.trim_start_matches('/'))
            .join("memory.limit_in_bytes")
    } else {
        PathBuf::from("/sys/fs/cgroup")
            .join(path.trim_start_matches('/'))
            .join("memory.max")
    };
    let limit = std::fs::read_to_string(&memory).unwrap();
    assert_eq!(
        limit.trim(),
        (64u64 << 20).to_string(),
        "{}",
        memory.display()
    );
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// The pod's sysctls: the explanation reads them inside the pod's namespaces, where nsenter
/// finds the same values, while the host keeps its own.
#[tokio::test]
async fn sysctls_are_read_inside_the_pod() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, _) = env
        .pod_with("sysctls", (POD, CONTAINER, POD), |config| {
            let sysctls = &mut config.linux.get_or_insert_with(Default::default).sysctls;
            sysctls.insert("net.ipv4.ip_unprivileged_port_start".into(), "77".into());
            sysctls.insert("kernel.shmmni".into(), "1234".into());
        })
        .await;
    let pause = cri::pause_pid(&mut env.rt, &pod_id).await.to_string();

    let e = explain(&env.daemon, &pod_id);
    let live = |name: &str| {
        e["sysctls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no sysctl {name}: {e:#}"))["live"]
            .clone()
    };
    let inside = |ns: &str, file: &str| {
        let out = Command::new("nsenter")
            .args(["-t", &pause, ns, "cat", file])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let port_start = inside("-n", "/proc/sys/net/ipv4/ip_unprivileged_port_start");
    assert_eq!(port_start, "77");
    assert_eq!(
        live("net.ipv4.ip_unprivileged_port_start"),
        port_start.as_str()
    );
    assert_eq!(
        live("kernel.shmmni"),
        inside("-i", "/proc/sys/kernel/shmmni").as_str()
    );
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    assert_ne!(host.trim(), "77");
    cri::remove_pod(&mut env.rt, &pod_id).await;
}
