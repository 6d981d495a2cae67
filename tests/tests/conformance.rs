//! Behaviours critest v1.36 checks (cri-tools `pkg/validate/`), each tested here against a
//! real corrald, runc and kernel so that the project's own suite catches a regression before
//! critest does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use corral_e2e::cri::{self, container_env as env, security_context as security};
use corral_e2e::*;
use cri_proto::v1::*;
use tonic::Code;

const POD: i32 = NamespaceMode::Pod as i32;
const NODE: i32 = NamespaceMode::Node as i32;

/// kubelet sends no hostname for a hostNetwork pod: the pod's `/etc/hostname` is the node's.
#[tokio::test]
async fn host_network_pod_without_hostname_gets_the_nodes_hostname() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = env
        .pod_with("hostnet-noname", (NODE, POD, POD), |config| {
            config.hostname.clear();
        })
        .await;
    let node = nix::unistd::gethostname().unwrap();
    let node = node.to_string_lossy();
    let file = env
        .daemon
        .state()
        .join("sandboxes")
        .join(&pod_id)
        .join("hostname");
    assert_eq!(std::fs::read_to_string(file).unwrap(), format!("{node}\n"));

    let config = cri::container_config("c", &env.image, &["sleep", "1000"]);
    let c = cri::run(&mut env.rt, &pod_id, &pod, config).await;
    let inside = cri::exec_ok(&mut env.rt, &c, &["cat", "/etc/hostname"]).await;
    assert_eq!(inside.trim(), node);
    let uname = cri::exec_ok(&mut env.rt, &c, &["hostname"]).await;
    assert_eq!(uname.trim(), node);
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// A group without a user is refused for containers and pods alike, naming the field.
#[tokio::test]
async fn run_as_group_without_a_user_is_invalid() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let (pod_id, pod) = env.pod_with("group-only", (POD, POD, POD), |_| {}).await;
    let mut config = cri::container_config("c", &env.image, &["id"]);
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .run_as_group = Some(Int64Value { value: 1002 });
    let err = cri::try_create(&mut env.rt, &pod_id, &pod, config.clone())
        .await
        .expect_err("run_as_group without run_as_user must be refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("run_as_group"), "{err:?}");
    assert!(err.message().contains("run_as_user"), "{err:?}");
    // With a user (by id or by name) the same group is fine.
    let security = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .unwrap();
    security.run_as_username = "app".into();
    cri::create(&mut env.rt, &pod_id, &pod, config).await;

    let mut bad_pod = pod_config(
        "group-only-pod",
        &unique_cgroup_parent("group-only-pod"),
        (POD, POD, POD),
    );
    bad_pod
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .unwrap()
        .run_as_group = Some(Int64Value { value: 1002 });
    let err = cri::try_run_pod(&mut env.rt, bad_pod)
        .await
        .expect_err("a pod's run_as_group without run_as_user must be refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("run_as_group"), "{err:?}");
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// Stop and Remove of ids corral never had succeed: there is nothing to stop or reclaim.
#[tokio::test]
async fn stop_and_remove_of_unknown_ids_succeed() {
    require_root!();
    let daemon = Daemon::start(DaemonOptions::default());
    let mut rt = daemon.runtime().await;
    let unknown = "4b1c1d0a-6a4e-4c1e-9d1e-000000000000";
    cri::remove_pod(&mut rt, unknown).await;
    cri::stop(&mut rt, unknown, 0).await;
    rt.remove_container(RemoveContainerRequest {
        container_id: unknown.into(),
    })
    .await
    .expect("RemoveContainer of an unknown id");
    // Asking about an unknown id is still NotFound: only the idempotent verbs succeed.
    let err = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: unknown.into(),
            verbose: false,
        })
        .await
        .expect_err("PodSandboxStatus of an unknown id");
    assert_eq!(err.code(), Code::NotFound);
}

/// A temp dir with a tmpfs mounted on its `tmpfs/` (what critest's recursive read-only specs
/// mount), unmounted and removed when dropped.
struct DirWithSubmount {
    dir: tempfile::TempDir,
}

impl DirWithSubmount {
    fn new() -> DirWithSubmount {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("tmpfs");
        std::fs::create_dir(&sub).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &sub,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap();
        DirWithSubmount { dir }
    }

    fn volume(&self, readonly: bool, recursive: bool, propagation: MountPropagation) -> Mount {
        Mount {
            readonly,
            recursive_read_only: recursive,
            ..cri::mount(self.dir.path(), "/mnt", propagation)
        }
    }
}

impl Drop for DirWithSubmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(
            &self.dir.path().join("tmpfs"),
            nix::mount::MntFlags::MNT_DETACH,
        );
    }
}

/// Recursive read-only mounts: advertised for the default handler (also under the empty name
/// kubelet uses for pods without a RuntimeClass) exactly when runc lists `rro` and the kernel
/// has mount_setattr; then submounts are read-only too, and only readonly + private
/// propagation may ask for it.
#[tokio::test]
async fn recursive_read_only_mounts() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let status = cri::runtime_status(&mut env.rt).await;
    let rro = |name: &str| {
        status
            .runtime_handlers
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("handler {name:?} listed: {:?}", status.runtime_handlers))
            .features
            .as_ref()
            .unwrap()
            .recursive_read_only_mounts
    };
    let runc_lists_rro = std::process::Command::new("runc")
        .arg("features")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("\"rro\""));
    let kernel = kernel_at_least(5, 12);
    assert_eq!(rro("runc"), runc_lists_rro && kernel, "{status:?}");
    assert_eq!(rro(""), rro("runc"));

    let (pod_id, pod) = env
        .pod_with("rro", (POD, POD, POD), cri::privileged_pod)
        .await;
    let source = DirWithSubmount::new();
    let private = MountPropagation::PropagationPrivate;

    // Plain read-only: the volume is read-only, its submount is not.
    let mut config = cri::container_config("ro", &env.image, &["sleep", "1000"]);
    config.mounts = vec![source.volume(true, false, private)];
    let c = cri::run(&mut env.rt, &pod_id, &pod, config).await;
    cri::exec_ok(&mut env.rt, &c, &["touch", "/mnt/tmpfs/file"]).await;
    let (code, _, err) = cri::exec(&mut env.rt, &c, &["touch", "/mnt/top"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");

    let mut config = cri::container_config("rro", &env.image, &["sleep", "1000"]);
    config.mounts = vec![source.volume(true, true, private)];
    if rro("") {
        let c = cri::run(&mut env.rt, &pod_id, &pod, config).await;
        let (code, _, err) = cri::exec(&mut env.rt, &c, &["touch", "/mnt/tmpfs/foo"]).await;
        assert_ne!(code, 0, "the submount is writable");
        assert!(err.contains("Read-only file system"), "{err}");
    } else {
        let err = cri::try_create(&mut env.rt, &pod_id, &pod, config)
            .await
            .expect_err("rro on a host that cannot make it");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("recursive_read_only"), "{err:?}");
    }

    for (name, mount) in [
        ("rro-rw", source.volume(false, true, private)),
        (
            "rro-slave",
            source.volume(true, true, MountPropagation::PropagationHostToContainer),
        ),
        (
            "rro-shared",
            source.volume(true, true, MountPropagation::PropagationBidirectional),
        ),
    ] {
        let mut config = cri::container_config(name, &env.image, &["sleep", "1000"]);
        config.mounts = vec![mount];
        let err = cri::try_create(&mut env.rt, &pod_id, &pod, cri::privileged(config))
            .await
            .expect_err(name);
        if rro("") {
            assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        }
        assert!(
            err.message().contains("recursive_read_only"),
            "{name}: {err:?}"
        );
    }
    cri::remove_pod(&mut env.rt, &pod_id).await;
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = nix::sys::utsname::uname().unwrap();
    let release = release.release().to_string_lossy().into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// SupplementalGroupsPolicy: advertised; Merge adds the groups the image's /etc/group gives
/// the user, Strict only the configured ones; ContainerStatus.user is what the container's
/// process really has (the test image's user `app` is 1000:1000 and in group staff, 50).
#[tokio::test]
async fn supplemental_groups_policy_merge_and_strict() {
    require_root!();
    let Some(mut env) = env().await else { return };
    let status = cri::runtime_status(&mut env.rt).await;
    assert!(
        status
            .features
            .as_ref()
            .is_some_and(|f| f.supplemental_groups_policy),
        "{status:?}"
    );
    let (pod_id, pod) = env.pod_with("groups", (POD, POD, POD), |_| {}).await;
    for (policy, expected) in [
        (SupplementalGroupsPolicy::Merge, vec![50, 1000, 1234]),
        (SupplementalGroupsPolicy::Strict, vec![1000, 1234]),
    ] {
        let name = format!("{policy:?}").to_lowercase();
        let mut config = cri::container_config(&name, &env.image, &["sleep", "1000"]);
        let sc = security(&mut config);
        sc.run_as_user = Some(Int64Value { value: 1000 });
        sc.supplemental_groups = vec![1234];
        sc.supplemental_groups_policy = policy as i32;
        let c = cri::run(&mut env.rt, &pod_id, &pod, config).await;
        let (st, _) = cri::status(&mut env.rt, &c).await;
        let mut user = st.user.and_then(|u| u.linux).unwrap();
        user.supplemental_groups.sort_unstable();
        assert_eq!((user.uid, user.gid), (1000, 1000), "{name}");
        assert_eq!(user.supplemental_groups, expected, "{name}");
        let id = cri::exec_ok(&mut env.rt, &c, &["id", "-G"]).await;
        let mut groups: Vec<i64> = id.split_whitespace().map(|g| g.parse().unwrap()).collect();
        groups.sort_unstable();
        assert_eq!(groups, expected, "{name}: id -G");
    }
    cri::remove_pod(&mut env.rt, &pod_id).await;
}
