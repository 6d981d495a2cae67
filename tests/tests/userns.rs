//! Pods with their own user namespace (`userns_options` mode POD), against a real corrald,
//! runc, kernel and overlay rootfs: the mapping seen inside, root's files through idmapped
//! mounts (rootfs, volumes, the pod's files, /dev/shm), writes landing as the host's root on
//! disk, the refusals, and nothing left after removal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use corral_e2e::cri::{self, container_env, Rt};
use corral_e2e::*;
use cri_proto::v1::*;
use nix::mount::MsFlags;
use tonic::Code;

const POD: i32 = NamespaceMode::Pod as i32;
const NODE: i32 = NamespaceMode::Node as i32;

/// The host ids the test pods' ranges start at: away from real users and other tests.
const HOST_ID: u32 = 300_000;
const LENGTH: u32 = 65536;

fn mapping(container_id: u32, host_id: u32, length: u32) -> IdMapping {
    IdMapping {
        container_id,
        host_id,
        length,
    }
}

/// Sets the pod's `userns_options`.
fn with_userns(config: &mut PodSandboxConfig, userns: UserNamespace) {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default)
        .userns_options = Some(userns);
}

fn pod_mode(uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> UserNamespace {
    UserNamespace {
        mode: POD,
        uids,
        gids,
    }
}

fn default_mode() -> UserNamespace {
    let map = vec![mapping(0, HOST_ID, LENGTH)];
    pod_mode(map.clone(), map)
}

/// Whether the default handler advertises user namespaces; prints why the test stops if not.
async fn handler_supports_userns(rt: &mut Rt) -> bool {
    let status = rt
        .status(StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let runc = status
        .runtime_handlers
        .iter()
        .find(|h| h.name == "runc")
        .expect("the runc handler is listed");
    let supported = runc.features.as_ref().is_some_and(|f| f.user_namespaces);
    if !supported {
        eprintln!(
            "skipped: runc here cannot run user-namespaced pods (kernel < 6.3 or runc < 1.1)"
        );
    }
    supported
}

/// A container running `sleep 1000`, with `mounts`.
fn sleeper(image: &str, name: &str, mounts: Vec<Mount>) -> ContainerConfig {
    let mut config = cri::container_config(name, image, &["sleep", "1000"]);
    config.mounts = mounts;
    config
}

fn host_uid(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .uid()
}

/// The `Uid:` line of `/proc/PID/status`: real, effective, saved, fs.
fn status_uids(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn root_in_a_user_namespaced_pod_is_a_host_id_and_its_files_are_usable() {
    require_root!();
    let Some(mut env) = container_env().await else {
        return;
    };
    if !handler_supports_userns(&mut env.rt).await {
        // Where the handler cannot, such a pod is refused up front, saying why.
        let mut config = pod_config("userns", &unique_cgroup_parent("userns"), (POD, POD, POD));
        with_userns(&mut config, default_mode());
        let err = cri::try_run_pod(&mut env.rt, config).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("\"runc\""), "{}", err.message());
        return;
    }
    let (pod_id, pod) = env
        .pod_with("userns", (POD, POD, POD), |c| {
            with_userns(c, default_mode())
        })
        .await;
    let pause = cri::pause_pid(&mut env.rt, &pod_id).await;
    let status = env
        .rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .unwrap();
    let options = status.linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(
        options.userns_options,
        Some(default_mode()),
        "the status echoes the mode"
    );
    let pin = env.daemon.state().join("userns").join(&pod_id);
    assert_eq!(
        std::fs::metadata(&pin).unwrap().ino(),
        ns_inode(pause, "user"),
        "the pod's user namespace is pinned"
    );

    // A volume with a file of the host's root, and an empty directory like an emptyDir.
    let volume = env.daemon.dir().join("volume");
    std::fs::create_dir(&volume).unwrap();
    std::fs::write(volume.join("host-file"), "from the host\n").unwrap();
    let empty_dir = env.daemon.dir().join("empty-dir");
    std::fs::create_dir(&empty_dir).unwrap();
    // Read-only volumes, one on a nosuid,nodev,noexec tmpfs as kubelet's secrets are.
    let secret = env.daemon.dir().join("secret");
    std::fs::create_dir(&secret).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &secret,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=1m"),
    )
    .unwrap();
    std::fs::write(secret.join("token"), "s3cret").unwrap();
    let read_only = |host: &Path, container: &str| Mount {
        readonly: true,
        ..cri::mount(host, container, MountPropagation::PropagationPrivate)
    };
    let mounts = vec![
        cri::mount(&volume, "/volume", MountPropagation::PropagationPrivate),
        cri::mount(&empty_dir, "/scratch", MountPropagation::PropagationPrivate),
        read_only(&secret, "/secret"),
        read_only(&volume, "/volume-ro"),
    ];

    // The runtime cannot reach a rootfs below a directory only root may search: refused
    // before anything is made, naming the directory.
    let searchable = std::fs::metadata(env.daemon.dir()).unwrap().permissions();
    std::fs::set_permissions(env.daemon.dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let refused = cri::try_create(
        &mut env.rt,
        &pod_id,
        &pod,
        sleeper(&env.image, "early", vec![]),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused
            .message()
            .contains(&env.daemon.dir().display().to_string()),
        "{}",
        refused.message()
    );
    let containers_dir = env.daemon.state().join("containers");
    assert_eq!(
        std::fs::read_dir(&containers_dir).map_or(0, |d| d.count()),
        0,
        "a refused container leaves nothing"
    );
    std::fs::set_permissions(env.daemon.dir(), searchable).unwrap();

    // A volume on a filesystem that cannot be idmapped (sysfs): refused, and the rootfs and the
    // idmapped copies made before it are undone.
    let sysfs = vec![cri::mount(
        Path::new("/sys/kernel"),
        "/host-sys",
        MountPropagation::PropagationPrivate,
    )];
    let refused = cri::try_create(
        &mut env.rt,
        &pod_id,
        &pod,
        sleeper(&env.image, "sysfs", sysfs),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("/host-sys"),
        "{}",
        refused.message()
    );
    assert_eq!(std::fs::read_dir(&containers_dir).unwrap().count(), 0);
    assert!(mounts_containing(&containers_dir.to_string_lossy()).is_empty());

    let id = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        sleeper(&env.image, "app", mounts),
    )
    .await;
    let pid = cri::pid(&mut env.rt, &id).await;
    assert_eq!(
        ns_inode(pid, "user"),
        ns_inode(pause, "user"),
        "joins the pod's"
    );
    assert_eq!(ns_inode(pid, "net"), ns_inode(pause, "net"));

    let uid_map = cri::exec_ok(&mut env.rt, &id, &["cat", "/proc/self/uid_map"]).await;
    assert_eq!(
        uid_map.split_whitespace().collect::<Vec<_>>(),
        ["0", "300000", "65536"],
        "{uid_map:?}"
    );
    let gid_map = cri::exec_ok(&mut env.rt, &id, &["cat", "/proc/self/gid_map"]).await;
    assert_eq!(gid_map.split_whitespace().nth(1), Some("300000"));
    assert_eq!(
        cri::exec_ok(&mut env.rt, &id, &["id", "-u"]).await.trim(),
        "0"
    );
    assert_eq!(
        status_uids(pid),
        "300000 300000 300000 300000",
        "root is the mapped host id"
    );

    // Root's files are root's inside: the image, the volume, the pod's files and /dev/shm.
    let owners = cri::exec_ok(
        &mut env.rt,
        &id,
        &[
            "stat",
            "-c",
            "%u:%g",
            "/etc/passwd",
            "/bin/busybox",
            "/volume/host-file",
            "/scratch",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/etc/hostname",
            "/dev/shm",
            "/secret/token",
        ],
    )
    .await;
    assert!(
        owners.lines().all(|line| line == "0:0") && owners.lines().count() == 9,
        "{owners}"
    );
    assert_eq!(
        cri::exec_ok(&mut env.rt, &id, &["cat", "/secret/token"]).await,
        "s3cret"
    );
    for read_only in ["/secret/new", "/volume-ro/new"] {
        let (code, _, err) = cri::exec(&mut env.rt, &id, &["touch", read_only]).await;
        assert_ne!(code, 0, "{read_only} is writable");
        assert!(err.contains("Read-only file system"), "{read_only}: {err}");
    }
    assert_eq!(
        cri::exec_ok(&mut env.rt, &id, &["cat", "/volume/host-file"]).await,
        "from the host\n"
    );

    // Writes: the rootfs, the volumes, the pod's files and /dev/shm, as root inside.
    cri::exec_ok(
        &mut env.rt,
        &id,
        &[
            "sh",
            "-c",
            "set -e; echo r > /root/written; mkdir /new-dir; echo v > /volume/written; \
             echo s > /scratch/written; echo '10.1.2.3 extra' >> /etc/hosts; \
             echo m > /dev/shm/written; chown 1000:1000 /scratch/written",
        ],
    )
    .await;
    assert_eq!(
        cri::exec_ok(
            &mut env.rt,
            &id,
            &["stat", "-c", "%u", "/root/written", "/new-dir"]
        )
        .await,
        "0\n0\n"
    );
    // On the host's disk they are the host's root's (and 1000 is 1000): the idmapped mounts
    // map the ids back, no chown involved.
    assert_eq!(host_uid(&volume.join("written")), 0);
    assert_eq!(host_uid(&empty_dir.join("written")), 1000);
    assert_eq!(
        std::fs::read_to_string(volume.join("written")).unwrap(),
        "v\n"
    );
    let hosts = env
        .daemon
        .state()
        .join("sandboxes")
        .join(&pod_id)
        .join("hosts");
    assert!(std::fs::read_to_string(&hosts)
        .unwrap()
        .contains("10.1.2.3 extra"));
    assert_eq!(host_uid(&hosts), 0);

    // The CRI log of a user-namespaced container, created by a restarted corrald.
    env.daemon.restart();
    env.rt = env.daemon.runtime().await;
    let logger = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        cri::container_config("logger", &env.image, &["sh", "-c", "echo logged; id -u"]),
    )
    .await;
    let st = cri::wait_exited(&mut env.rt, &logger, Duration::from_secs(20)).await;
    assert_eq!(st.exit_code, 0);
    let lines: Vec<String> = cri::log_lines(Path::new(&st.log_path))
        .into_iter()
        .map(|(_, _, text)| text)
        .collect();
    assert_eq!(lines, ["logged", "0"]);

    // Removing a container takes its idmapped mounts; removing the pod takes the pin.
    let state = env.daemon.state().to_string_lossy().into_owned();
    let container_dir = containers_dir.join(&id);
    cri::stop(&mut env.rt, &id, 0).await;
    env.rt
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("RemoveContainer");
    assert!(!container_dir.exists());
    assert!(
        mounts_containing(&container_dir.to_string_lossy()).is_empty(),
        "{:?}",
        mounts_containing(&state)
    );
    assert!(volume.join("host-file").exists(), "the volume's files stay");
    cri::remove_pod(&mut env.rt, &pod_id).await;
    assert!(
        mounts_containing(&state).is_empty(),
        "{:?}",
        mounts_containing(&state)
    );
    assert!(!pin.exists(), "userns pin left");
    assert!(wait_for(Duration::from_secs(10), || !process_alive(pause)));
}

#[tokio::test]
async fn user_namespace_options_corral_cannot_honour_are_refused() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    let mut rt = daemon.runtime().await;
    let two = vec![
        mapping(0, HOST_ID, LENGTH),
        mapping(0, HOST_ID + LENGTH, LENGTH),
    ];
    let from_one = vec![mapping(1, HOST_ID, LENGTH)];
    let container = UserNamespace {
        mode: NamespaceMode::Container as i32,
        ..Default::default()
    };
    let target = UserNamespace {
        mode: NamespaceMode::Target as i32,
        ..Default::default()
    };
    // (pod name, userns_options, network mode, what the refusal names)
    let cases = [
        (
            "two-maps",
            pod_mode(two.clone(), two),
            POD,
            "userns_options.uids",
        ),
        (
            "root-unmapped",
            pod_mode(from_one.clone(), from_one),
            POD,
            "container id 0",
        ),
        (
            "container",
            container,
            POD,
            "userns_options.mode: CONTAINER",
        ),
        ("target", target, POD, "userns_options.mode: TARGET"),
        (
            "host-net",
            default_mode(),
            NODE,
            "namespace_options.network is NODE",
        ),
    ];
    for (name, userns, network, expected) in cases {
        let mut config = pod_config(name, &unique_cgroup_parent(name), (network, POD, POD));
        with_userns(&mut config, userns);
        let err = cri::try_run_pod(&mut rt, config).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(
            err.message().contains(expected),
            "{name}: {}",
            err.message()
        );
    }
    let pods = cri::all_pods(&mut rt).await;
    assert!(pods.is_empty(), "a refused pod leaves no sandbox: {pods:?}");
    assert!(mounts_containing(&daemon.state().to_string_lossy()).is_empty());
}

#[tokio::test]
async fn node_mode_keeps_the_hosts_user_namespace() {
    require_root!();
    let Some(mut env) = container_env().await else {
        return;
    };
    let node = UserNamespace {
        mode: NODE,
        ..Default::default()
    };
    let (pod_id, pod) = env
        .pod_with("userns-node", (POD, POD, POD), |c| with_userns(c, node))
        .await;
    let id = cri::run(
        &mut env.rt,
        &pod_id,
        &pod,
        sleeper(&env.image, "app", vec![]),
    )
    .await;
    let pid = cri::pid(&mut env.rt, &id).await;
    assert_eq!(
        ns_inode(pid, "user"),
        ns_inode(std::process::id() as i32, "user")
    );
    let uid_map = cri::exec_ok(&mut env.rt, &id, &["cat", "/proc/self/uid_map"]).await;
    let host_map = std::fs::read_to_string("/proc/self/uid_map").unwrap();
    assert_eq!(
        uid_map.split_whitespace().collect::<Vec<_>>(),
        host_map.split_whitespace().collect::<Vec<_>>()
    );
    assert!(!env.daemon.state().join("userns").join(&pod_id).exists());
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

#[tokio::test]
async fn a_handler_that_cannot_run_user_namespaces_says_so_and_refuses_such_pods() {
    require_root!();
    // `true --version` prints no runc version: this handler is not offered user namespaces.
    let daemon = Daemon::start(DaemonOptions {
        extra_config_toml: "[runtimes.runc]\npath = \"/bin/true\"\n".into(),
        ..DaemonOptions::default()
    });
    let mut rt = daemon.runtime().await;
    assert!(!handler_supports_userns(&mut rt).await);
    let mut config = pod_config(
        "no-userns",
        &unique_cgroup_parent("no-userns"),
        (POD, POD, POD),
    );
    with_userns(&mut config, default_mode());
    let err = cri::try_run_pod(&mut rt, config).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        // (Why: "not runc" here; on an old kernel, the kernel.)
        err.message()
            .contains("handler \"runc\" cannot run pods with user namespaces"),
        "{}",
        err.message()
    );
    let pods = cri::all_pods(&mut rt).await;
    assert!(pods.is_empty(), "{pods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_a_user_namespaced_pod() {
    use corral_streaming::client::{PortForwarder, Protocol};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    require_root!();
    let Some(mut env) = container_env().await else {
        return;
    };
    if !handler_supports_userns(&mut env.rt).await {
        return;
    }
    let (pod_id, pod) = env
        .pod_with("userns-fwd", (POD, POD, POD), |c| {
            with_userns(c, default_mode())
        })
        .await;
    let echo = cri::container_config(
        "echo",
        &env.image,
        &["nc", "-ll", "-p", "8080", "-e", "cat"],
    );
    let echo_id = cri::run(&mut env.rt, &pod_id, &pod, echo).await;
    assert!(
        listens_on_8080(&mut env.rt, &echo_id).await,
        "the echo server did not listen"
    );
    // corrald enters the pod's network namespace, owned by the pod's user namespace.
    let url = env
        .rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod_id.clone(),
            port: vec![8080],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let forwarder = PortForwarder::connect(&url, Protocol::Spdy, &[8080])
        .await
        .expect("connect");
    let mut stream = forwarder.open(8080).await.expect("open 8080");
    stream
        .write_all(b"through the pod's namespaces\n")
        .await
        .unwrap();
    let mut echoed = vec![0u8; 29];
    tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut echoed))
        .await
        .expect("the echo in time")
        .unwrap();
    assert_eq!(echoed, b"through the pod's namespaces\n");
    drop(stream);
    forwarder.close().await;
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// Whether the container `id` lists a TCP listener on 8080 within 20 s (polled with ExecSync).
async fn listens_on_8080(rt: &mut Rt, id: &str) -> bool {
    for _ in 0..200 {
        if cri::exec(rt, id, &["netstat", "-ltn"])
            .await
            .1
            .contains(":8080 ")
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
